//! Prometheus metrics: recorded through the `metrics` facade where things happen, rendered
//! in the Prometheus text format at `GET /metrics`.
//!
//! | series | labels | what |
//! |---|---|---|
//! | `switchyard_graphql_request_duration_seconds` (histogram) | `transport`, `operation`, `type` | queries and mutations, from parsed to answered |
//! | `switchyard_graphql_errors_total` | `code` | every GraphQL error answered, by `extensions.code` |
//! | `switchyard_upstream_request_duration_seconds` (histogram) | `source`, `status` | every upstream try (`status` is the HTTP status, or `timeout` / `connect` / `failed`) |
//! | `switchyard_upstream_refused_total` | `source`, `reason` (`breaker` / `queue` / `deadline`) | calls not sent: the breaker was open, no room in the concurrency budget within `queue_timeout_ms`, or no time left before the request's deadline |
//! | `switchyard_upstream_deduplicated_total` | `source` | reads not sent because an identical one was in flight (its answer was shared) |
//! | `switchyard_upstream_breaker_open` (gauge) | `source` | 1 while the upstream's circuit breaker is open or half-open |
//! | `switchyard_cache_requests_total` | `result` (`hit` / `miss`) | entity cache lookups |
//! | `switchyard_cache_stale_served_total` | `entity` | entities served from a stale copy because their upstream failed |
//! | `switchyard_live_connections` (gauge) | | open websocket and SSE connections |
//! | `switchyard_subscriptions_total` | `transport` | subscriptions started |
//! | `switchyard_subscriptions_active` (gauge) | `transport` | subscriptions running now (a view shared by several connections runs once: `transport::views`) |
//! | `switchyard_hub_subscriptions` (gauge) | | subscriptions registered at this server's event hub (read from the hub) |
//! | `switchyard_shared_views` (gauge) | | subscription views running on this server, each shared by its connections (read from the views) |
//! | `switchyard_webhooks_total` | `source`, `outcome` | webhooks received (`accepted`, `refused`) |
//! | `switchyard_events_total` | | events this replica read off the bus |
//! | `switchyard_events_delivered_total` | | event results resolved for subscribers (one per subscription an event reached; a view shared by several connections counts once) |
//! | `switchyard_rate_limited_total` | `by` (`ip` / `user`) | operations refused by the rate limits |
//! | `switchyard_notifications_total` | `channel`, `outcome` | pushes settled by the outbox (`delivered`, `gone`, `retrying`, `dead_lettered`) |
//!
//! Label values clients choose are bounded: operation names are cut to 64 characters, and
//! past [`MAX_OPERATIONS`] distinct names further ones count as `other`, so a client sending
//! random names cannot grow the series without end.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock, PoisonError};

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Most distinct operation names given series of their own.
pub(crate) const MAX_OPERATIONS: usize = 500;
/// Longest operation name kept in a label.
const MAX_OPERATION_CHARS: usize = 64;
/// Histogram buckets, in seconds: 1 ms to 10 s.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's recorder, installed on first use (one per process: tests run several
/// servers in one, and they share it).
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // `set_buckets` refuses only an empty list; histograms would then be summaries.
        let builder = PrometheusBuilder::new();
        let builder = match builder.set_buckets(&BUCKETS) {
            Ok(with_buckets) => with_buckets,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: histogram buckets refused");
                PrometheusBuilder::new()
            }
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed: /metrics stays empty");
        }
        describe();
        handle
    })
}

/// Installs the recorder (call at start-up, so series recorded before the first scrape are
/// kept).
pub(crate) fn install() {
    handle();
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        "switchyard_graphql_request_duration_seconds",
        Unit::Seconds,
        "GraphQL queries and mutations, from parsed to answered"
    );
    describe_counter!(
        "switchyard_graphql_errors_total",
        "GraphQL errors answered, by extensions.code"
    );
    describe_histogram!(
        "switchyard_upstream_request_duration_seconds",
        Unit::Seconds,
        "Upstream HTTP tries, by source and status"
    );
    describe_counter!(
        "switchyard_upstream_refused_total",
        "Upstream calls not sent: breaker open, no room in the budget in time, or no time left"
    );
    describe_counter!(
        "switchyard_upstream_deduplicated_total",
        "Upstream reads not sent: an identical one in flight answered them"
    );
    describe_counter!(
        "switchyard_cache_stale_served_total",
        "Entities served from a stale copy because their upstream failed"
    );
    describe_gauge!(
        "switchyard_subscriptions_active",
        "Subscriptions running now"
    );
    describe_counter!(
        "switchyard_events_delivered_total",
        "Event results sent to subscribers"
    );
    describe_counter!("switchyard_cache_requests_total", "Entity cache lookups");
    describe_gauge!(
        "switchyard_live_connections",
        "Open websocket and SSE connections"
    );
    describe_counter!("switchyard_subscriptions_total", "Subscriptions started");
    describe_counter!("switchyard_webhooks_total", "Webhooks received");
    describe_counter!(
        "switchyard_rate_limited_total",
        "Operations refused by the rate limits"
    );
    describe_counter!("switchyard_events_total", "Events read off the bus");
    describe_counter!(
        "switchyard_notifications_total",
        "Pushes settled by the outbox, by channel and outcome"
    );
}

/// What `/metrics` reads from this server itself rather than from the recorder (which the
/// servers of one process share), so that it is always this server's.
pub(crate) struct Own<'a> {
    /// The upstreams whose breaker is open or half-open.
    pub(crate) open: &'a [&'a str],
    /// Subscriptions registered at the event hub.
    pub(crate) hub_subscriptions: usize,
    /// Shared subscription views running.
    pub(crate) shared_views: usize,
}

/// `GET /metrics`: the recorded series, then this server's own state ([`Own`]): its circuit
/// breakers, its hub's subscriptions and its shared views.
pub(crate) fn scrape(own: Own<'_>) -> Response {
    let open = own.open;
    let handle = handle();
    handle.run_upkeep();
    let mut text = handle.render();
    text.push_str(
        "# HELP switchyard_upstream_breaker_open 1 while the upstream's circuit breaker is open \
         or half-open\n# TYPE switchyard_upstream_breaker_open gauge\n",
    );
    for source in ["backend", "crm", "process", "carrier"] {
        let value = u8::from(open.contains(&source));
        text.push_str(&format!(
            "switchyard_upstream_breaker_open{{source=\"{source}\"}} {value}\n"
        ));
    }
    text.push_str(&format!(
        "# HELP switchyard_hub_subscriptions Subscriptions registered at the event hub\n\
         # TYPE switchyard_hub_subscriptions gauge\nswitchyard_hub_subscriptions {}\n\
         # HELP switchyard_shared_views Subscription views running, each shared by its connections\n\
         # TYPE switchyard_shared_views gauge\nswitchyard_shared_views {}\n",
        own.hub_subscriptions, own.shared_views
    ));
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// The label of an operation name: cut to 64 characters, `other` past [`MAX_OPERATIONS`]
/// distinct names, `anonymous` for none.
pub(crate) fn operation_label(name: Option<&str>) -> String {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return "anonymous".to_owned();
    };
    let name: String = name.chars().take(MAX_OPERATION_CHARS).collect();
    let mut seen = SEEN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if seen.contains(&name) {
        return name;
    }
    if seen.len() >= MAX_OPERATIONS {
        return "other".to_owned();
    }
    seen.insert(name.clone());
    name
}

/// Counts one answered GraphQL error by its code.
pub(crate) fn graphql_error(code: &str) {
    metrics::counter!("switchyard_graphql_errors_total", "code" => code.to_owned()).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_are_bounded() {
        assert_eq!(operation_label(None), "anonymous");
        assert_eq!(operation_label(Some("")), "anonymous");
        assert_eq!(operation_label(Some(&"x".repeat(100))).len(), 64);
        for i in 0..MAX_OPERATIONS + 10 {
            operation_label(Some(&format!("Op{i}")));
        }
        assert_eq!(operation_label(Some("NeverSeenBefore")), "other");
        assert_eq!(operation_label(Some("Op0")), "Op0");
    }
}
