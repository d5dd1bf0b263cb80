// Apollo Client in Node, as an app uses it: runs HomeScreenDeferred against Switchyard over
// HTTP (Apollo's own multipart reader, `deferSpec=20220824`) and prints, as one JSON line per
// result Apollo Client hands the app, when it came and what it held. Run by tests/api/defer.rs.
//
// Usage: node home-screen-deferred.mjs <graphql url> <bearer token> <operation file>
import { readFileSync } from "node:fs";
import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client/core/index.js";

const [url, token, file] = process.argv.slice(2);
if (!url || !token || !file) {
  console.error("usage: node home-screen-deferred.mjs <url> <token> <operation file>");
  process.exit(2);
}
const client = new ApolloClient({
  link: new HttpLink({ uri: url, headers: { authorization: `Bearer ${token}` } }),
  cache: new InMemoryCache(),
});
const started = performance.now();
const watched = client.watchQuery({ query: gql(readFileSync(file, "utf8")) });
const done = new Promise((resolve, reject) => {
  const subscription = watched.subscribe({
    next(result) {
      const edges = result.data?.me?.orders?.edges ?? [];
      const shipments = edges.map((e) => e.node.shipment).filter((s) => s);
      console.log(
        JSON.stringify({
          at_ms: Math.round(performance.now() - started),
          loading: result.loading,
          networkStatus: result.networkStatus,
          errors: result.errors?.map((e) => e.message) ?? [],
          customer: result.data?.me?.id ?? null,
          shipments: shipments.length,
          tracked: shipments.filter((s) => typeof s.status === "string" && s.events?.length > 0)
            .length,
        }),
      );
      if (shipments.length > 0 && shipments.every((s) => typeof s.status === "string")) {
        subscription.unsubscribe();
        resolve();
      }
    },
    error(e) {
      reject(e);
    },
  });
});
const timeout = setTimeout(() => {
  console.error("no complete result within 15 s");
  process.exit(1);
}, 15000);
try {
  await done;
  clearTimeout(timeout);
} catch (e) {
  console.error(`Apollo Client failed: ${e.message}`);
  process.exit(1);
}
