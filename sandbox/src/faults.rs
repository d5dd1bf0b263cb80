//! Request counting, latency and fault injection: one middleware in front of every upstream.
//!
//! Each upstream router gets [`layer`] with its own [`Faults`]: the middleware counts the request
//! under `"METHOD /route/template"` (and keeps the last `traceparent` it saw) (axum's [`MatchedPath`], so `/orders/{id}` rather than one
//! entry per order; `"METHOD (unmatched)"` for paths no route matches), waits the configured
//! latency, then, drawing from a PRNG seeded from the sandbox seed, may answer 503 in the
//! upstream's own error shape (`error_rate`), stall for 120 s before answering (`timeout_rate`:
//! the client's timeout fires first), or answer 200 with the real answer's JSON cut in half
//! (`malformed_rate`). [`control_routes`] serve `GET`/`DELETE /_sandbox/requests` and
//! `GET`/`PUT /_sandbox/faults` (the knobs as JSON, `{"latency_ms", "error_rate",
//! "timeout_rate", "malformed_rate"}`: a `PUT` applies from the next request on, so a test or
//! a demo can make an upstream fail and recover), outside the layer: they are never counted,
//! delayed or faulted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::sync::watch;

use super::data::SplitMix64;
use super::{Upstream, UpstreamKnobs};

/// How long a request picked for a timeout stalls before it is answered.
const STALL: Duration = Duration::from_secs(120);

/// Request counts of one upstream, keyed by `"METHOD /route/template"`, and the trace
/// context of its last traced request.
#[derive(Debug, Default)]
pub(crate) struct RequestCounter(Mutex<BTreeMap<String, u64>>, Mutex<Option<String>>);

impl RequestCounter {
    /// Keeps the `traceparent` a request came with (tests check what a caller propagates).
    fn trace(&self, traceparent: &HeaderValue) {
        *self.1.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(String::from_utf8_lossy(traceparent.as_bytes()).into_owned());
    }

    pub(crate) fn last_traceparent(&self) -> Option<String> {
        self.1
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn count(&self, key: String) {
        *self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn reset(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        *self.1.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// The fault settings and counters of one upstream.
#[derive(Debug)]
pub(crate) struct Faults {
    upstream: Upstream,
    /// A plain mutex: copied out on every request, swapped by `PUT /_sandbox/faults`.
    knobs: Mutex<UpstreamKnobs>,
    counter: Arc<RequestCounter>,
    /// A plain mutex around a PRNG: a draw takes nanoseconds and is never held across `.await`.
    rng: Mutex<SplitMix64>,
    /// Ends stalls early when the sandbox shuts down, so shutdown does not wait 120 s.
    shutdown: watch::Receiver<bool>,
}

impl Faults {
    pub(crate) fn new(
        upstream: Upstream,
        knobs: UpstreamKnobs,
        seed: u64,
        counter: Arc<RequestCounter>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        // A different stream per upstream, so one upstream's traffic does not shift another's.
        let stream = seed ^ (0xFA17_0000_0000_0000 | upstream as u64);
        Self {
            upstream,
            knobs: Mutex::new(knobs),
            counter,
            rng: Mutex::new(SplitMix64::new(stream)),
            shutdown,
        }
    }

    /// The knobs it applies.
    pub(crate) fn knobs(&self) -> UpstreamKnobs {
        *self.knobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies other knobs from now on; refuses rates outside 0..=1.
    pub(crate) fn set_knobs(&self, knobs: UpstreamKnobs) -> anyhow::Result<()> {
        knobs.validate(self.upstream)?;
        *self.knobs.lock().unwrap_or_else(PoisonError::into_inner) = knobs;
        Ok(())
    }

    /// Counts one request (or, for the SMTP sink, one command) under `key`.
    pub(crate) fn count(&self, key: String) {
        self.counter.count(key);
    }

    /// Stalls as a request picked for a timeout does: 120 s, or until the sandbox stops.
    pub(crate) async fn stall(&self) {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(STALL) => {}
            _ = shutdown.changed() => {}
        }
    }

    /// Draws the three fault dice for one request: (error, timeout, malformed).
    pub(crate) fn roll(&self) -> (bool, bool, bool) {
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        let knobs = self.knobs();
        // Always three draws, so the sequence does not depend on which knobs are set.
        let (error, timeout, malformed) = (rng.unit(), rng.unit(), rng.unit());
        (
            error < knobs.error_rate,
            timeout < knobs.timeout_rate,
            malformed < knobs.malformed_rate,
        )
    }
}

/// Wraps `router` (whose routes are all added) in the counting and fault middleware.
pub(crate) fn layer(router: Router, faults: Arc<Faults>) -> Router {
    router.layer(middleware::from_fn_with_state(faults, fault_middleware))
}

async fn fault_middleware(
    State(faults): State<Arc<Faults>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path().contains("/_sandbox/") {
        return next.run(request).await;
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("(unmatched)", MatchedPath::as_str);
    faults
        .counter
        .count(format!("{} {route}", request.method()));
    if let Some(traceparent) = request.headers().get("traceparent") {
        faults.counter.trace(traceparent);
    }

    let latency_ms = faults.knobs().latency_ms;
    if latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(latency_ms)).await;
    }
    let (error, timeout, malformed) = faults.roll();
    if error {
        return unavailable(faults.upstream);
    }
    if timeout {
        faults.stall().await;
    }
    let response = next.run(request).await;
    if malformed {
        return truncate(response).await;
    }
    response
}

/// A 503 in the upstream's own error shape.
fn unavailable(upstream: Upstream) -> Response {
    let message = "The service is temporarily unavailable (sandbox fault injection).";
    let status = StatusCode::SERVICE_UNAVAILABLE;
    match upstream {
        Upstream::Backend => (
            status,
            Json(json!({"error": {"code": "UNAVAILABLE", "message": message}})),
        )
            .into_response(),
        Upstream::Crm => (
            status,
            Json(json!([{"message": message, "errorCode": "SERVER_UNAVAILABLE"}])),
        )
            .into_response(),
        Upstream::Process => (status, Json(json!(message))).into_response(),
        Upstream::Carrier => (
            status,
            Json(json!({"error": "service_unavailable", "message": message})),
        )
            .into_response(),
        Upstream::Oidc => (
            status,
            Json(json!({"error": "temporarily_unavailable", "error_description": message})),
        )
            .into_response(),
        Upstream::Fcm => {
            crate::push::fcm::google_error(status, "UNAVAILABLE", message, Some("UNAVAILABLE"))
        }
        Upstream::Apns => crate::push::apns::reason(status, "ServiceUnavailable", "00000000-0000-0000-0000-000000000000"),
        Upstream::WebPush => (
            status,
            Json(json!({"code": 503, "errno": 201, "error": "Service Unavailable", "message": message})),
        )
            .into_response(),
        // Not an HTTP server: the sink answers `421` itself (see `push::smtp`).
        Upstream::Smtp => (status, message).into_response(),
    }
}

/// The real answer's body cut in half, as 200 JSON: a connection dropped mid-answer, seen by a
/// client that trusts the status line.
async fn truncate(response: Response) -> Response {
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let half = body.slice(..body.len() / 2);
    // A short answer cut in half may still be valid JSON (`42` -> `4`) or nothing at all.
    let cut = if half.is_empty() || serde_json::from_slice::<serde::de::IgnoredAny>(&half).is_ok() {
        Bytes::from_static(b"{\"")
    } else {
        half
    };
    let mut response = Response::new(Body::from(cut));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `GET /_sandbox/requests` (the counts) and `DELETE /_sandbox/requests` (reset), under `prefix`
/// (empty for the server root).
pub(crate) fn control_routes(prefix: &str, faults: Arc<Faults>) -> Router {
    let (read, reset) = (Arc::clone(&faults), Arc::clone(&faults));
    let (show, set) = (Arc::clone(&faults), faults);
    Router::new()
        .route(
            &format!("{prefix}/_sandbox/requests"),
            get(move || async move { Json(read.counter.snapshot()) }).delete(move || async move {
                reset.counter.reset();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            &format!("{prefix}/_sandbox/faults"),
            get(move || async move { Json(show.knobs()) }).put(
                move |body: Result<Json<UpstreamKnobs>, JsonRejection>| async move {
                    let knobs = match body {
                        Ok(Json(knobs)) => knobs,
                        Err(e) => {
                            let error = json!({"error": e.body_text()});
                            return (StatusCode::BAD_REQUEST, Json(error)).into_response();
                        }
                    };
                    match set.set_knobs(knobs) {
                        Ok(()) => Json(set.knobs()).into_response(),
                        Err(e) => {
                            let error = json!({"error": e.to_string()});
                            (StatusCode::BAD_REQUEST, Json(error)).into_response()
                        }
                    }
                },
            ),
        )
}
