//! The transports: routes, and the state every handler shares.
//!
//! Every GraphQL operation takes one path, whichever transport carries it: the transport
//! reads the request (`request`), the pipeline fills in persisted queries (`persisted`),
//! bounds, parses and runs it (`pipeline`, with `limits` and `document`), and its results are shaped as the spec says (`shape`); what the
//! transport itself refuses is one enum of errors with their codes (`error`). A query with
//! `@defer` is planned (`defer`) and delivered in parts (`incremental`): over HTTP as
//! `multipart/mixed` (`multipart`), over websockets and SSE as several `next` messages. Websockets and
//! SSE share their connection bookkeeping (`live`) and their subscriptions' shared views
//! (`views`: one run for the connections that would get the same results). Each event of a
//! subscription is bounded by the request timeout (`event_deadline`), as every operation is
//! (`deadline`). A `@live` query over
//! websockets or SSE runs again when an event touches what it read (`live_query`).
//!
//! | route | what |
//! |---|---|
//! | `POST /graphql`, `GET /graphql` | GraphQL over HTTP ([`http`]) |
//! | `GET /playground/` | the playground ([`playground`]) |
//! | `GET /dev/users`, `POST /dev/token` | demo sign-in: not here, added only with the embedded sandbox (`crate::embedded`) |
//! | `GET /graphql/ws` | subscriptions over websockets: graphql-transport-ws and the legacy graphql-ws ([`ws`]) |
//! | `POST /graphql/stream`, `GET /graphql/stream` | subscriptions over Server-Sent Events ([`sse`]) |
//! | `POST /webhooks/{source}` | signed webhooks from the upstreams ([`crate::ingest`]) |
//! | `GET /healthz` | liveness: the process answers |
//! | `GET /readyz` | readiness, with what is degraded ([`health`]) |
//! | `GET /metrics` | Prometheus metrics ([`crate::metrics`]) |
//! | `GET /` | redirects to the playground |

mod deadline;
mod defer;
mod document;
mod error;
mod event_deadline;
mod health;
#[cfg(test)]
mod hostile;
mod http;
mod incremental;
mod limits;
mod live;
mod live_query;
mod multipart;
mod parsed;
mod persisted;
mod pipeline;
pub(crate) mod playground;
mod rate_limit;
mod request;
mod shape;
mod sse;
mod views;
mod ws;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::response::Redirect;
use axum::routing::get;
use resolvers::{AppSchema, Ports};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::Authenticator;
use crate::config::SubscriptionsConfig;

pub(crate) use event_deadline::EventDeadlines;
pub(crate) use health::Readiness;
pub(crate) use limits::{check_parsed, check_text};
pub(crate) use persisted::{
    ManifestOperation, PersistedQueries, manifest_json, manifest_operations, sha256_hex,
};
pub(crate) use rate_limit::RateLimits;
pub(crate) use shape::Types;
pub(crate) use views::Views;

pub(crate) use error::TransportError;

/// What every handler shares (cheap to clone: all `Arc`s inside).
#[derive(Clone)]
pub(crate) struct AppState {
    /// The executable schema.
    pub(crate) schema: AppSchema,
    /// The same schema without the data depth limit, for introspection-only documents
    /// (bounded by their own rule instead, see `document`).
    pub(crate) introspection_schema: AppSchema,
    /// The same schema with the bound on each event (`event_deadline`), for subscriptions.
    pub(crate) subscription_schema: AppSchema,
    /// The schema's types, to shape results by (null semantics).
    pub(crate) types: Arc<Types>,
    /// The upstream ports, for per-request loaders.
    pub(crate) ports: Ports,
    /// Bearer token validation.
    pub(crate) auth: Authenticator,
    /// Longest a GraphQL request may run.
    pub(crate) request_timeout: Duration,
    /// Parsed documents, by their text.
    pub(crate) parsed: Arc<parsed::ParsedDocuments>,
    /// The documents of automatic persisted queries, by hash.
    pub(crate) persisted: Arc<PersistedQueries>,
    /// Rate limits per client IP and per user.
    pub(crate) rate_limits: Arc<RateLimits>,
    /// What `GET /readyz` checks.
    pub(crate) readiness: Arc<Readiness>,
    /// Largest request body taken (`server.max_body_bytes`).
    pub(crate) max_body_bytes: usize,
    /// Most operations in one batch (`server.max_batch_size`).
    pub(crate) max_batch_size: usize,
    /// Largest serialized result of one operation or event (`server.max_response_bytes`).
    pub(crate) max_response_bytes: usize,
    /// Longest a request body may take to arrive (`server.body_read_timeout_ms`).
    pub(crate) body_read_timeout: Duration,
    /// Whether `__schema` and `__type` are answered (`server.introspection`).
    pub(crate) introspection_enabled: bool,
    /// Whether `_entities` and `_service` are answered (`server.federation`).
    pub(crate) federation_enabled: bool,
    /// Refuse GETs that were not preflighted (`server.csrf_prevention`).
    pub(crate) csrf_prevention: bool,
    /// Origins whose web apps may call from the browser (`server.cors_allow_origins`).
    pub(crate) cors_allow_origins: Vec<String>,
    /// Webhook reception (verification, normalization, publishing).
    pub(crate) webhooks: Arc<crate::ingest::Webhooks>,
    /// Limits and timeouts of websocket and SSE subscriptions.
    pub(crate) subscriptions: SubscriptionsConfig,
    /// This replica's event hub (its subscriptions are counted in `/metrics`).
    pub(crate) hub: resolvers::events::EventHub,
    /// The subscriptions running now, each shared by the connections of its view.
    pub(crate) views: Arc<Views>,
    /// Open websocket and SSE connections on this instance (for `max_connections`).
    pub(crate) open_connections: Arc<AtomicUsize>,
    /// Turns `true` when the server starts shutting down: long-lived connections close then.
    pub(crate) shutdown: tokio::sync::watch::Receiver<bool>,
}

/// The webhook route takes only what it needs.
impl axum::extract::FromRef<AppState> for Arc<crate::ingest::Webhooks> {
    fn from_ref(state: &AppState) -> Self {
        state.webhooks.clone()
    }
}

/// CORS for the browser apps of `origins` (`*`: any): `GET` and `POST` with the headers
/// GraphQL clients send, and the answer cached by the browser for 10 minutes. Bearer tokens
/// travel in a header, so no credentials (cookies) are allowed. No origins: no CORS headers,
/// so only pages of the server's own origin (the playground) may call from a browser.
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return CorsLayer::new();
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("x-apollo-operation-name"),
            HeaderName::from_static("apollo-require-preflight"),
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("tracestate"),
        ])
        .max_age(Duration::from_secs(600))
}

/// Forgets a client's `x-request-id` that is not a sane id (at most 128 letters, digits,
/// `.`, `_`, `-`), so that a new one is made: what goes into logs and answers stays short and
/// plain.
async fn drop_odd_request_id(mut request: Request<axum::body::Body>) -> Request<axum::body::Body> {
    let sane = |v: &axum::http::HeaderValue| {
        let bytes = v.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 128
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    if request
        .headers()
        .get("x-request-id")
        .is_some_and(|v| !sane(v))
    {
        request.headers_mut().remove("x-request-id");
    }
    request
}

/// The span a request is handled in: its id, method and path; its transport (`http`, `ws`,
/// `sse`) and operation once known (`pipeline`); the app's trace as its parent.
fn request_span(request: &Request<axum::body::Body>) -> tracing::Span {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let span = tracing::info_span!(
        crate::telemetry::REQUEST_SPAN,
        otel.kind = "server",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %id,
        transport = tracing::field::Empty,
        operation = tracing::field::Empty,
    );
    crate::telemetry::adopt_remote_parent(&span, request.headers());
    span
}

/// Gives the request's body `server.body_read_timeout_ms` from now to arrive in full (408
/// past it).
async fn body_due(
    axum::extract::State(timeout): axum::extract::State<Duration>,
    request: axum::extract::Request,
) -> axum::extract::Request {
    request.map(|body| axum::body::Body::new(request::BodyWithDeadline::new(body, timeout)))
}

/// All routes.
pub(crate) fn router(state: AppState, playground_enabled: bool) -> Router {
    let max_body_bytes = state.max_body_bytes;
    let body_read_timeout = state.body_read_timeout;
    let cors = cors(&state.cors_allow_origins);
    let mut router = Router::new()
        .route("/graphql", get(http::get).post(http::post))
        .route("/graphql/ws", get(ws::handler))
        .route("/graphql/stream", get(sse::handler).post(sse::handler))
        .route(
            "/webhooks/{source}",
            axum::routing::post(crate::ingest::receive),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(health::metrics));
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
        // Every answer is in the GraphQL error shape with a code, even for a wrong route or
        // method (axum's own are empty).
        .fallback(|| async { TransportError::NoSuchRoute })
        .method_not_allowed_fallback(|| async { TransportError::WrongMethod })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::map_request_with_state(
            body_read_timeout,
            body_due,
        ))
        .layer(cors)
        // Every request has an id (the client's `x-request-id` when it sends a sane one):
        // in every log line of the request (the span) and in the answer's headers. The span
        // is the request's in the exported traces too, a child of the app's `traceparent`.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(axum::middleware::map_request(drop_odd_request_id))
        .with_state(state)
}
