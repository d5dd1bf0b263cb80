// Loads the example operations (./operations.json, next to index.html) and turns
// them into GraphiQL default tabs.

const FALLBACK_QUERY = `# Welcome to the Switchyard playground.
#
# The example operations (operations.json) could not be loaded, so this tab
# starts empty. Write an operation here and run it with Ctrl-Enter (or the
# play button). The Docs button on the left shows the schema, and Ctrl-Space
# completes field names.
#
# A signed-in request needs a bearer token in the Headers editor below:
#
#   { "Authorization": "Bearer <token>" }
#
# (On a development server, the "Sign in" button at the top fills it in.)

query Welcome {
  __typename
}
`;

/** The single tab shown when operations.json cannot be loaded. */
export const FALLBACK_TABS = [{ query: FALLBACK_QUERY }];

/** Turns the `variables` of an operation (absent, a JSON string or an object) into editor text. */
function variablesText(variables) {
  if (variables === undefined || variables === null) return undefined;
  if (typeof variables === 'string') return variables.trim() === '' ? undefined : variables;
  return JSON.stringify(variables, null, 2);
}

/** Converts the parsed operations.json into GraphiQL `defaultTabs`; throws if it has none. */
export function toTabs(operations) {
  if (!Array.isArray(operations)) throw new Error('operations.json is not a JSON array');
  const tabs = operations
    .filter((op) => op && typeof op.query === 'string' && op.query.trim() !== '')
    .map((op) => {
      const tab = { query: op.query };
      const variables = variablesText(op.variables);
      if (variables !== undefined) tab.variables = variables;
      return tab;
    });
  if (tabs.length === 0) throw new Error('operations.json holds no operation');
  return tabs;
}

/**
 * Fetches ./operations.json. Resolves to `{ tabs, loaded }`: the example tabs and
 * true, or the fallback tab and false (with a console warning) if it failed.
 */
export async function loadOperations() {
  const url = new URL('operations.json', document.baseURI);
  try {
    const response = await fetch(url, { headers: { accept: 'application/json' } });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    return { tabs: toTabs(await response.json()), loaded: true };
  } catch (error) {
    console.warn(`Switchyard playground: cannot load ${url.pathname}: ${error.message}`);
    return { tabs: FALLBACK_TABS, loaded: false };
  }
}
