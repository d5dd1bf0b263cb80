//! Traces and request ids: the `switchyard` binary (telemetry is process-wide) over a
//! sandbox of the test's own, exporting to an OTLP/HTTP collector of the test's own (an axum
//! server that keeps every `POST /v1/traces` body and decodes it as OTLP protobuf).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use sandbox::{Sandbox, SandboxConfig, Upstream, UpstreamKnobs};
use serde_json::{Value, json};

use crate::support::WAIT;

/// The app's trace: what its `traceparent` says.
const APP_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const APP_SPAN_ID: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP collector: keeps the spans of every export it receives.
struct Collector {
    endpoint: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Collector {
    async fn start() -> Collector {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let kept = Arc::clone(&spans);
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: Bytes| async move {
                    assert_eq!(headers["content-type"], "application/x-protobuf");
                    let export =
                        ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
                    let mut kept = kept.lock().unwrap();
                    for resource in export.resource_spans {
                        let service = resource
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|a| a.key == "service.name")
                            .and_then(|a| a.value.clone()?.value);
                        assert_eq!(service, Some(AnyValue::StringValue("bff-test".into())));
                        for scope in resource.scope_spans {
                            kept.extend(scope.spans);
                        }
                    }
                    axum::http::StatusCode::OK
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Collector { endpoint, spans }
    }

    /// The spans received so far of the trace `trace_id`.
    fn trace(&self, trace_id: &[u8]) -> Vec<Span> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

/// A string or integer attribute of a span, as text.
fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .clone()?
        .value?;
    match value {
        AnyValue::StringValue(s) => Some(s),
        AnyValue::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// The server as its own process over `sandbox`, with `env` on top; its stderr (the log
/// lines) is read when it exits.
struct Process {
    base: String,
    child: tokio::process::Child,
}

async fn spawn_server(sandbox: &Sandbox, name: &str, env: &[(&str, &str)]) -> Process {
    let dir = std::env::temp_dir().join(format!("switchyard-traces-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(
        &file,
        switchyard::embedded::sandbox_summary(sandbox).unwrap(),
    )
    .unwrap();
    let port = crate::support::redis::free_port();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command
        .arg("--config")
        .arg(&file)
        .env("SWITCHYARD_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("SWITCHYARD_LOG__FORMAT", "json")
        .env("SWITCHYARD_LOG__FILTER", "warn")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + WAIT;
    while !http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(std::time::Instant::now() < deadline, "{name} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Process { base, child }
}

impl Process {
    /// Stops it as an orchestrator does (SIGTERM), and answers what it logged.
    async fn stop(self) -> String {
        let pid = self.child.id().expect("a running server").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let output = tokio::time::timeout(WAIT, self.child.wait_with_output())
            .await
            .expect("the server stops within the timeout")
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stderr).unwrap()
    }

    async fn post(&self, token: &str, query: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .post(format!("{}/graphql", self.base))
            .bearer_auth(token)
            .json(&json!({ "query": query }));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }
}

async fn sandbox() -> Sandbox {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Sandbox::start(SandboxConfig {
        simulator_interval_ms: 0,
        ..SandboxConfig::default()
    })
    .await
    .unwrap()
}

const PRODUCT: &str = "query Shelf { products(ids: [\"prod-0001\"]) { id name } }";

/// An app's `traceparent` makes the request a part of the app's trace: the collector gets
/// the request's span under the app's span, the loader's batch and the upstream call under
/// it, all flushed when the server stops; the backend gets a `traceparent` of that trace
/// whose parent is the upstream call's span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_trace_goes_through_switchyard_to_the_upstreams_and_the_collector() {
    let collector = Collector::start().await;
    let sandbox = sandbox().await;
    let server = spawn_server(
        &sandbox,
        "traced",
        &[
            ("SWITCHYARD_TELEMETRY__OTLP_ENDPOINT", &collector.endpoint),
            ("SWITCHYARD_TELEMETRY__SERVICE_NAME", "bff-test"),
        ],
    )
    .await;
    let token = crate::support::issuer_token(&sandbox, "cust-0001").await;

    let traceparent = format!("00-{APP_TRACE_ID}-{APP_SPAN_ID}-01");
    let answer = server
        .post(
            &token,
            PRODUCT,
            &[("traceparent", &traceparent), ("tracestate", "app=tap-42")],
        )
        .await;
    assert_eq!(answer.status(), 200);
    let request_id = answer.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["data"]["products"][0]["id"], "prod-0001", "{body}");

    // The backend saw the app's trace, under a span of Switchyard's (not the app's).
    let propagated = sandbox
        .last_traceparent(Upstream::Backend)
        .expect("the backend got a traceparent");
    let parts: Vec<&str> = propagated.split('-').collect();
    assert_eq!(parts.len(), 4, "{propagated}");
    assert_eq!(parts[1], APP_TRACE_ID, "{propagated}");
    assert_ne!(parts[2], APP_SPAN_ID, "{propagated}");
    assert_eq!(parts[3], "01", "sampled: {propagated}");

    // Stopping flushes what the batch exporter still holds (its delay is seconds).
    server.stop().await;
    let trace = collector.trace(&hex::decode(APP_TRACE_ID).unwrap());
    let named = |name: &str| {
        trace
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no `{name}` span in {trace:#?}"))
    };
    let request = named("request");
    assert_eq!(request.parent_span_id, hex::decode(APP_SPAN_ID).unwrap());
    assert_eq!(request.trace_state, "app=tap-42");
    assert_eq!(
        attribute(request, "request_id").as_deref(),
        Some(request_id.as_str())
    );
    assert_eq!(attribute(request, "transport").as_deref(), Some("http"));
    assert_eq!(attribute(request, "operation").as_deref(), Some("Shelf"));
    let batch = named("batch");
    assert_eq!(batch.parent_span_id, request.span_id);
    assert_eq!(attribute(batch, "loader").as_deref(), Some("ProductLoader"));
    assert_eq!(attribute(batch, "keys").as_deref(), Some("1"));
    let call = named("GET /products");
    assert_eq!(call.parent_span_id, batch.span_id);
    assert_eq!(attribute(call, "upstream").as_deref(), Some("backend"));
    assert_eq!(
        attribute(call, "url.template").as_deref(),
        Some("/products")
    );
    assert_eq!(
        attribute(call, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        hex::encode(&call.span_id),
        parts[2],
        "the backend's parent is the call"
    );
    sandbox.shutdown().await;
}

/// Every log line of a request carries its request id, the ones its loaders' batches log in
/// their own tasks too, under a filter (`warn`) that leaves the request's `INFO` span out.
/// Without an OTLP endpoint, nothing is propagated to the upstreams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_of_a_request_carries_its_id() {
    let sandbox = sandbox().await;
    let server = spawn_server(&sandbox, "logged", &[]).await;
    let token = crate::support::issuer_token(&sandbox, "cust-0001").await;
    sandbox
        .set_faults(Upstream::Backend, UpstreamKnobs::failing(1.0))
        .unwrap();

    let traceparent = format!("00-{APP_TRACE_ID}-{APP_SPAN_ID}-01");
    let answer = server
        .post(
            &token,
            PRODUCT,
            &[("x-request-id", "tap-7f3a"), ("traceparent", &traceparent)],
        )
        .await;
    assert_eq!(answer.headers()["x-request-id"], "tap-7f3a");
    let body: Value = answer.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "UPSTREAM_UNAVAILABLE",
        "{body}"
    );
    assert_eq!(sandbox.last_traceparent(Upstream::Backend), None);

    let logs = server.stop().await;
    let failures: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == "upstream call failed")
        .collect();
    assert!(!failures.is_empty(), "no upstream failure logged:\n{logs}");
    for line in &failures {
        assert_eq!(line["span"]["request_id"], "tap-7f3a", "{line}");
        assert_eq!(line["span"]["operation"], "Shelf", "{line}");
        assert_eq!(line["spans"][0]["name"], "request", "{line}");
    }
    sandbox.shutdown().await;
}
