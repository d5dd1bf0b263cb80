//! Switchyard: a GraphQL backend-for-frontend. This crate is the server around the graph
//! (the `resolvers` crate): configuration, transport, auth, upstream adapters, and with the
//! `sandbox` feature (on by default) the embedded sandbox (the `sandbox` crate).
//!
//! # Layout
//! - [`app`]: startup; [`app::run`] is the seam shared by `main`, tests and benchmarks.
//! - [`check_operations`]: `switchyard check-operations`, the breaking-change check of the
//!   apps' persisted query manifests against the schema.
//! - [`config`]: typed configuration from a TOML file and `SWITCHYARD_*` variables.
//! - `embedded` (feature `sandbox`): all the server has for the embedded sandbox: its startup,
//!   the config that points at it, the demo sign-in.
//! - `serve`: the HTTP server loop, with connection limits (slow headers, connection count).
//! - [`transport`]: HTTP routes: GraphQL over HTTP, websockets, SSE, the playground, health.
//! - [`events`]: the event bus (Redis Streams or memory) and this replica's reader.
//! - [`ingest`]: webhooks from the upstreams: verified, normalized, published on the bus.
//! - [`cache`]: the entity cache's adapters (memory or Redis).
//! - [`auth`]: bearer token (OIDC JWT) validation against the provider's JWKS.
//! - [`upstream`]: adapters that implement the graph's ports over HTTP, one per upstream.
//! - [`push`]: the push providers' clients (FCM, APNs, Web Push, e-mail) behind one
//!   `Channel` interface the push outbox calls.
//! - [`notify`]: notifications; `notify::outbox` is the push outbox (a Redis stream with a
//!   consumer group, or memory) that sends each job through `push` until a provider answered.
//! - [`telemetry`]: structured logs, and traces over OTLP with the W3C trace context;
//!   `metrics`: the Prometheus series and `GET /metrics`.

pub mod app;
pub(crate) mod auth;
pub(crate) mod cache;
pub mod check_operations;
pub mod config;
#[cfg(feature = "sandbox")]
pub mod embedded;
pub mod events;
pub(crate) mod ingest;
pub(crate) mod metrics;
pub mod notify;
pub mod push;
pub(crate) mod serve;
pub mod telemetry;
pub(crate) mod transport;
pub mod upstream;

pub use app::run;
pub use config::Config;
