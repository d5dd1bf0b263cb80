//! The W3C trace context (`traceparent`, `tracestate`) in and out, while spans are exported.
//!
//! A request's span takes the app's trace as its parent, so what the app, Switchyard and the
//! upstreams did for one tap is one trace; every upstream call gets a span of its own, whose
//! context it carries to the upstream in `traceparent`, so the upstream's own spans and logs
//! hang under it. Without an OTLP endpoint nothing here reads or writes a header: a span then
//! has no trace id to pass on (only the exporting layer gives it one), and giving every
//! request one just for the headers would cost every request that layer's bookkeeping.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use reqwest::Method;
use reqwest::header::HeaderMap;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Whether spans are exported (set once at start): one relaxed load per use.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Turns propagation on (the exporting layer is installed).
pub(super) fn enable() {
    EXPORTING.store(true, Ordering::Relaxed);
}

fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Makes `span` (a request's) a child of the app's trace, when the request carries a
/// `traceparent` (an invalid one is ignored: the request starts a trace of its own).
pub(crate) fn adopt_remote_parent(span: &Span, headers: &axum::http::HeaderMap) {
    if !exporting() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let _ = span.set_parent(parent);
}

/// The span of one upstream call (a `DEBUG` span: nothing unless spans are exported or the
/// log filter asks for it), with its trace context written into the call's `headers`.
pub(crate) fn upstream_call(
    upstream: &'static str,
    method: &Method,
    route: &'static str,
    headers: &mut HeaderMap,
) -> Span {
    let span = tracing::debug_span!(
        "upstream",
        otel.kind = "client",
        otel.name = Empty,
        otel.status_code = Empty,
        upstream,
        http.request.method = %method,
        url.template = route,
        http.response.status_code = Empty,
        error.type = Empty,
    );
    if exporting() && !span.is_disabled() {
        span.record("otel.name", format!("{method} {route}"));
        TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
    }
    span
}

/// Records how the call of `span` ended: `status` is the status code, or `timeout`,
/// `connect`, `failed` (as the upstream metrics label it). A 5xx or no answer is an error.
pub(crate) fn finish_upstream_call(span: &Span, status: &str) {
    if span.is_disabled() {
        return;
    }
    let code = status.parse::<u16>().ok();
    if let Some(code) = code {
        span.record("http.response.status_code", code);
    }
    if code.is_none_or(|c| c >= 500) {
        span.record("error.type", status);
        span.record("otel.status_code", "error");
    }
}
