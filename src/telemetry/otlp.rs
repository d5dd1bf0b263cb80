//! The export of spans to an OpenTelemetry collector: OTLP over HTTP with protobuf bodies
//! (`POST <otlp_endpoint>/v1/traces`), through a batch processor (spans wait in a queue and
//! leave in batches every few seconds, on the processor's own thread, never on a request's
//! path).
//!
//! The HTTP/protobuf exporter is used rather than gRPC: it needs only prost beside what the
//! server already has, where tonic would bring a second HTTP/2 client stack. Its requests go
//! out through a reqwest client of ours (the one TLS stack of the server, aws-lc-rs), not
//! opentelemetry-otlp's own (a blocking reqwest with its own TLS choice): the batch
//! processor's thread hands each export to the tokio runtime and waits for its answer.

use std::time::Duration;

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::{Level, Metadata};
use url::Url;

/// Longest one export may take (the collector is slow or gone: the batch is dropped).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The tracer provider that sends spans to the collector at `endpoint`, as `service`.
///
/// Every request is traced, unless the app's `traceparent` says its trace is not sampled
/// (parent-based sampling: a trace is kept or dropped whole).
pub(super) fn provider(endpoint: &Url, service: &str) -> anyhow::Result<SdkTracerProvider> {
    let traces = format!("{}/v1/traces", endpoint.as_str().trim_end_matches('/'));
    let http = reqwest::Client::builder()
        .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
        .timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| anyhow::anyhow!("building the OTLP client: {e}"))?;
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| anyhow::anyhow!("the OTLP exporter needs the tokio runtime: {e}"))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(OnRuntime { http, runtime })
        .with_endpoint(traces)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| anyhow::anyhow!("telemetry.otlp_endpoint: {e}"))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build())
}

/// What the exporting layer sees: Switchyard's own spans, the `DEBUG` ones (loader batches,
/// upstream calls) too, and warnings and errors from anywhere, as events of their span.
pub(super) fn exported(meta: &Metadata<'_>) -> bool {
    if meta.is_span() {
        let ours =
            meta.target().starts_with("switchyard") || meta.target().starts_with("resolvers");
        ours && *meta.level() <= Level::DEBUG
    } else {
        *meta.level() <= Level::WARN
    }
}

/// The exporter's HTTP client: ours, driven by the tokio runtime. The batch processor calls
/// it from its own thread (with a plain executor, no reactor), so each request is spawned
/// on the runtime and its answer awaited.
#[derive(Debug)]
struct OnRuntime {
    /// Its own client (own pool and timeout), apart from every upstream's.
    http: reqwest::Client,
    /// The server's runtime, which drives the client's connections.
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let http = self.http.clone();
        let exchange = self.runtime.spawn(async move {
            let response = http.execute(request).await?;
            let status = response.status();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        });
        let (status, body) = exchange.await??;
        Ok(Response::builder().status(status).body(body)?)
    }
}
