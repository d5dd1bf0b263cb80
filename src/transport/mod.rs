//! The HTTP transport: routes, and the state every handler shares.
//!
//! | route | what |
//! |---|---|
//! | `POST /graphql`, `GET /graphql` | GraphQL over HTTP ([`graphql`]) |
//! | `GET /playground/` | the playground ([`playground`]) |
//! | `GET /dev/users`, `POST /dev/token` | demo sign-in: not here, added only with the embedded sandbox (`crate::embedded`) |
//! | `GET /graphql/ws` | subscriptions over websockets: graphql-transport-ws and the legacy graphql-ws ([`ws`]) |
//! | `POST /graphql/stream`, `GET /graphql/stream` | subscriptions over Server-Sent Events ([`sse`]) |
//! | `POST /webhooks/{source}` | signed webhooks from the upstreams ([`crate::ingest`]) |
//! | `GET /healthz` | liveness: the process answers |
//! | `GET /` | redirects to the playground |

mod document;
mod graphql;
pub mod playground;
mod sse;
mod ws;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::Redirect;
use axum::routing::get;
use resolvers::{AppSchema, Ports};
use tower_http::trace::TraceLayer;

use crate::auth::Authenticator;
use crate::config::SubscriptionsConfig;

/// What every handler shares (cheap to clone: all `Arc`s inside).
#[derive(Clone)]
pub struct AppState {
    /// The executable schema.
    pub schema: AppSchema,
    /// The same schema without the data depth limit, for introspection-only documents
    /// (bounded by their own rule instead, see `document`).
    pub introspection_schema: AppSchema,
    /// The upstream ports, for per-request loaders.
    pub ports: Ports,
    /// Bearer token validation.
    pub auth: Authenticator,
    /// Longest a GraphQL request may run.
    pub request_timeout: Duration,
    /// Webhook reception (verification, normalization, publishing).
    pub webhooks: Arc<crate::ingest::Webhooks>,
    /// This replica's fan-out of events to its subscriptions (also in the schema's data).
    pub hub: resolvers::events::EventHub,
    /// Limits and timeouts of websocket and SSE subscriptions.
    pub subscriptions: SubscriptionsConfig,
    /// Open websocket and SSE connections on this instance (for `max_connections`).
    pub open_connections: Arc<AtomicUsize>,
    /// Turns `true` when the server starts shutting down: long-lived connections close then.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// All routes.
pub fn router(state: AppState, max_body_bytes: usize, playground_enabled: bool) -> Router {
    let mut router = Router::new()
        .route("/graphql", get(graphql::get).post(graphql::post))
        .route("/graphql/ws", get(ws::handler))
        .route("/graphql/stream", get(sse::handler).post(sse::handler))
        .route(
            "/webhooks/{source}",
            axum::routing::post(crate::ingest::receive),
        )
        .route("/healthz", get(|| async { "ok" }));
    if playground_enabled {
        router = router
            .route("/", get(|| async { Redirect::temporary("/playground/") }))
            .route(
                "/playground",
                get(|| async { Redirect::permanent("/playground/") }),
            )
            .route("/playground/", get(playground::index))
            .route("/playground/operations.json", get(playground::operations))
            .route("/playground/{*path}", get(playground::file));
    }
    router
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
