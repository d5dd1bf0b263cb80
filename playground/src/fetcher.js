// The GraphQL fetcher: HTTP to /graphql, subscriptions and `@live` queries over the
// graphql-transport-ws protocol at /graphql/ws, both on the page's own origin.
import { createGraphiQLFetcher } from '@graphiql/toolkit';
import { Kind } from 'graphql';
import { createClient } from 'graphql-ws';

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
  return (params, opts) => {
    const headers = normalizeHeaders(opts?.headers);
    if (isLive(opts?.documentAST, params.operationName)) return liveResults(params, headers);
    return fetcher(params, opts ? { ...opts, headers } : opts);
  };
}

/** Whether the operation to run is a query marked `@live`. */
export function isLive(documentAST, operationName) {
  const operations = (documentAST?.definitions ?? []).filter(
    (d) => d.kind === Kind.OPERATION_DEFINITION,
  );
  const operation = operationName
    ? operations.find((o) => o.name?.value === operationName)
    : operations.length === 1 ? operations[0] : undefined;
  return operation?.operation === 'query'
    && (operation.directives ?? []).some((d) => d.name.value === 'live');
}

/**
 * A `@live` query's results over a websocket of its own: the first, then each new one the
 * server sends, until GraphiQL stops it (the websocket is closed then).
 */
function liveResults(params, headers) {
  const client = createClient({ url: endpoints().subscriptionUrl, connectionParams: headers ?? {} });
  const results = client.iterate(params);
  return {
    [Symbol.asyncIterator]() {
      return {
        next: () => results.next(),
        async return() {
          await results.return?.();
          await client.dispose();
          return { done: true, value: undefined };
        },
      };
    },
  };
}
