//! Logs and traces.
//!
//! Logs: structured, to stderr (stdout stays free for what a command prints, e.g.
//! `switchyard sandbox > sandbox.toml`), JSON in production, colours only on a terminal.
//! `RUST_LOG` overrides the configured filter. Every line logged while a request is handled
//! carries the request's span (`request_id`, `method`, `path`, `transport`, `operation`; in
//! JSON as `span` and `spans`), whatever the filter lets through otherwise.
//!
//! Traces (`[telemetry] otlp_endpoint`): the spans of requests (`request`), of the loaders'
//! batches of bulk reads (`batch`) and of upstream calls (`upstream`) go to an OpenTelemetry
//! collector over OTLP/HTTP (`otlp`), and the W3C trace context (`traceparent`, `tracestate`)
//! is taken from the apps' requests and passed on to every upstream call (`context`). Without
//! an endpoint none of that runs: the `batch` and `upstream` spans are `DEBUG` spans that the
//! log filter leaves out, so they cost a request nothing, and no header is read or written.
//!
//! # Layout
//! - `otlp`: the tracer provider: a batch exporter posting protobuf over our own reqwest
//!   client, flushed by [`Telemetry::shutdown`].
//! - `context`: the trace context in and out: `traceparent` from an app's request, to an
//!   upstream's, and the span of one upstream call.

mod context;
mod otlp;

use std::io::IsTerminal;

use tracing::Level;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat, TelemetryConfig};

pub(crate) use context::{adopt_remote_parent, finish_upstream_call, upstream_call};

/// Name of the span every request is handled in (`transport`).
pub(crate) const REQUEST_SPAN: &str = "request";
/// Where that span is made.
const REQUEST_SPAN_TARGET: &str = "switchyard::transport";

/// What runs for traces; [`Telemetry::shutdown`] flushes the spans not exported yet.
#[must_use = "spans are only flushed by Telemetry::shutdown"]
pub struct Telemetry {
    /// The exporting tracer provider; `None` without an OTLP endpoint (or when a subscriber
    /// was installed before, as tests do).
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still waiting and stops the exporter (waits for at most the
    /// exporter's timeout). Call it once the server stopped.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The batch processor's thread is told to export and waited for, blocking; its
        // export runs on this runtime (see `otlp`), so the wait must not hold a worker.
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("exporting the last spans failed: {e}"),
            Err(e) => eprintln!("exporting the last spans failed: {e}"),
        }
    }
}

/// Installs the global subscriber once (later calls are ignored, so tests may call it freely):
/// logs only.
pub fn init(config: &LogConfig) {
    let _ = install(config, None);
}

/// Installs the global subscriber: logs, and with `telemetry.otlp_endpoint` the export of
/// spans. Must run inside the tokio runtime (the exporter sends on it).
pub fn start(log: &LogConfig, telemetry: &TelemetryConfig) -> anyhow::Result<Telemetry> {
    let provider = match &telemetry.otlp_endpoint {
        Some(endpoint) => Some(otlp::provider(endpoint, &telemetry.service_name)?),
        None => None,
    };
    let installed = install(log, provider.clone());
    if installed && provider.is_some() {
        context::enable();
        if let Some(endpoint) = &telemetry.otlp_endpoint {
            tracing::info!(%endpoint, "exporting traces over OTLP/HTTP");
        }
    }
    Ok(Telemetry {
        provider: provider.filter(|_| installed),
    })
}

/// The subscriber: the log lines (filtered by `RUST_LOG` or `log.filter`), and with a
/// `provider` the spans for it. Returns whether it was installed (not: one was already).
fn install(
    config: &LogConfig,
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
) -> bool {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // The request span is in every log line of its request, even under a filter (`warn`)
    // that would leave an `INFO` span out.
    let request_span = filter_fn(|meta| {
        meta.is_span() && meta.name() == REQUEST_SPAN && meta.target() == REQUEST_SPAN_TARGET
    })
    .with_max_level_hint(Level::INFO);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match config.format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
        LogFormat::Pretty => fmt.boxed(),
    };
    let traces = provider.map(|provider| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("switchyard"))
            .with_filter(filter_fn(otlp::exported))
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter.or(request_span)))
        .with(traces)
        .try_init()
        .is_ok()
}
