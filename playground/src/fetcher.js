// The GraphQL fetcher: HTTP to /graphql, subscriptions over the
// graphql-transport-ws protocol at /graphql/ws, both on the page's own origin.
import { createGraphiQLFetcher } from '@graphiql/toolkit';

/** Endpoint URLs derived from `location`, so the page works on any host and port. */
export function endpoints(loc = window.location) {
  const ws = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return {
    url: `${loc.origin}/graphql`,
    subscriptionUrl: `${ws}//${loc.host}/graphql/ws`,
  };
}

/**
 * Spells an `authorization` header (any case) as `Authorization`, so that the
 * websocket `connection_init` payload always carries `{"Authorization": "Bearer ..."}`.
 */
function normalizeHeaders(headers) {
  if (!headers || typeof headers !== 'object') return headers;
  const out = {};
  for (const [key, value] of Object.entries(headers)) {
    out[key.toLowerCase() === 'authorization' ? 'Authorization' : key] = value;
  }
  return out;
}

/**
 * Creates the GraphiQL fetcher. The headers of the header editor go with every
 * HTTP request; for a subscription, @graphiql/toolkit opens a graphql-ws client
 * whose `connectionParams` are `wsConnectionParams` merged with those same
 * headers, so the bearer set in the header editor reaches `connection_init`.
 */
export function createFetcher() {
  const fetcher = createGraphiQLFetcher({ ...endpoints(), wsConnectionParams: {} });
  return (params, opts) => fetcher(params, opts ? { ...opts, headers: normalizeHeaders(opts.headers) } : opts);
}
