// `window.__switchyardPlayground`: a small scripting API over the playground, for
// browser tests and the curious. Components fill in the methods once mounted.

const api = {};

if (typeof window !== 'undefined') window.__switchyardPlayground = api;

/** Adds (or replaces) methods on the API object. */
export function expose(methods) {
  Object.assign(api, methods);
}

/** Resolves once `check()` is truthy (polled every 50 ms); rejects after `timeoutMs`. */
export async function until(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
