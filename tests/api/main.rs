//! The integration tests, in one binary (one link, one copy of the support code): each
//! module starts the real server on `127.0.0.1:0` against a private sandbox (and, where it
//! needs one, a private `redis-server` and a headless Chromium), and talks to it with real
//! HTTP, websocket and SSE clients, as apps do.
//!
//! - `support`: the harness: [`support::TestApp`], the websocket and SSE clients, an OIDC
//!   issuer of the tests' own, a private Redis, a browser driver.
//! - `http`: GraphQL over HTTP (methods, media types, status codes, limits, null semantics).
//! - `persisted`: automatic persisted queries (Apollo's protocol), memory and Redis.
//! - `auth`: bearer tokens against the identity provider.
//! - `graph`, `mutations`: what the schema answers, and the upstream calls it costs.
//! - `idempotency`: mutations replayed with a key write once (Redis, two replicas);
//!   conflicts answer typed errors with the current state.
//! - `defer`: `@defer` over HTTP multipart, websockets and SSE; Apollo Client in Node.
//! - `subscriptions`: graphql-transport-ws, the legacy protocol and SSE, with live events.
//! - `live`: `@live` queries over websockets and SSE, re-run by the events that touch them.
//! - `webhooks`, `events`, `replicas`: the event path, on one replica and across several.
//! - `cluster`: the event bus partitioned over a private three-node Redis Cluster, at the bus
//!   and with two replicas.
//! - `fanout`: events to exactly the subscriptions they concern, shared views, nothing left
//!   at the hub after disconnects.
//! - `upstream`: the adapters against the sandbox's upstreams, through the graph's ports.
//! - `push`: the push channels (FCM, APNs, Web Push, e-mail) against the sandbox's providers.
//! - `outbox`: the push outbox (memory and Redis) sending through them: retries, dead
//!   letters, several replicas, a dead replica's jobs, a lost Redis connection.
//! - `resilience`: failing upstreams: partial data, circuit breakers, `/readyz`, `/metrics`.
//! - `schema`: the checked-in SDL is the code's.
//! - `check_operations`: `switchyard check-operations`, the breaking-change check, run as CI
//!   runs it.
//! - `traces`: spans exported over OTLP with the app's `traceparent`, propagated to the
//!   upstreams; the request id in every log line.
//! - `playground`: the playground in headless Chromium.
//! - `sync`: delta sync for apps that were offline, on the memory bus and on Redis.

mod support;

mod auth;
mod check_operations;
mod cluster;
mod defer;
mod events;
mod fanout;
mod graph;
mod http;
mod idempotency;
mod live;
mod mutations;
mod notifications;
mod outbox;
mod persisted;
mod playground;
mod push;
mod replicas;
mod resilience;
mod schema;
mod subscriptions;
mod sync;
mod traces;
mod upstream;
mod webhooks;
