// Reading and writing the Authorization header in the header editor's JSON.

/** Parses the header editor's text into a plain object; `{}` if empty or not a JSON object. */
export function parseHeaders(text) {
  if (!text || text.trim() === '') return {};
  try {
    const value = JSON.parse(text);
    return value && typeof value === 'object' && !Array.isArray(value) ? value : {};
  } catch {
    return {};
  }
}

/** The Authorization header (any case) in the header editor's text, or undefined. */
export function authorizationOf(text) {
  const headers = parseHeaders(text);
  const key = Object.keys(headers).find((k) => k.toLowerCase() === 'authorization');
  return key === undefined ? undefined : headers[key];
}

/**
 * Returns the header editor text with `Authorization` set to `value`, keeping the
 * other headers, as pretty JSON: `{"Authorization": "Bearer ..."}` for an empty editor.
 */
export function withAuthorization(text, value) {
  const headers = {};
  for (const [key, v] of Object.entries(parseHeaders(text))) {
    if (key.toLowerCase() !== 'authorization') headers[key] = v;
  }
  return JSON.stringify({ Authorization: value, ...headers }, null, 2);
}
