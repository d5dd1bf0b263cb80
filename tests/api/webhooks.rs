//! Webhooks over real HTTP, both ways:
//! - the sandbox posts a signed webhook for every change of its world, in the owning upstream's
//!   shape, retrying until the receiver answers 2xx (checked by a small receiver in this file
//!   that verifies signatures on its own);
//! - Switchyard's `POST /webhooks/{source}` verifies, normalizes and answers as documented;
//! - the simulator moves the sandbox on its own, and its webhooks are accepted by a real
//!   Switchyard.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sandbox::{
    DEV_BACKEND_WEBHOOK_SECRET, DEV_CARRIER_WEBHOOK_SECRET, DEV_CRM_WEBHOOK_SECRET,
    DEV_PROCESS_WEBHOOK_SECRET, Sandbox, SandboxConfig, SandboxWebhooks,
};
use serde_json::{Value, json};
use switchyard::Config;
use switchyard::config::Secret;
use tokio::sync::{mpsc, oneshot};

use crate::support::{TestApp, sign_webhook};

/// Longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(20);

// ----- a webhook receiver that checks signatures itself ------------------------------------

/// One webhook as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    source: String,
    body: Value,
    /// The signature verified with the source's dev secret (computed here, independently).
    signature_valid: bool,
    /// What the receiver answered.
    answered: u16,
    /// The body of the answer (Switchyard's, when forwarding).
    answer: Value,
}

struct ReceiverState {
    /// Statuses to answer before answering 200 (e.g. `[500, 500]`).
    script: Mutex<VecDeque<u16>>,
    /// When set, deliveries are forwarded to this Switchyard and its answer is returned.
    forward_to: Mutex<Option<String>>,
    received: mpsc::UnboundedSender<Received>,
    http: reqwest::Client,
}

/// A receiver on `127.0.0.1:0`; webhooks to `<url>/<source>`.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
    received: mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    async fn start() -> Receiver {
        let (sender, received) = mpsc::unbounded_channel();
        let state = Arc::new(ReceiverState {
            script: Mutex::new(VecDeque::new()),
            forward_to: Mutex::new(None),
            received: sender,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        });
        let app = Router::new()
            .route("/hooks/{source}", axum::routing::post(receive))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url,
            state,
            received,
        }
    }

    fn answer_first(&self, statuses: &[u16]) {
        self.state.script.lock().unwrap().extend(statuses);
    }

    fn forward_to(&self, base: &str) {
        *self.state.forward_to.lock().unwrap() = Some(base.to_owned());
    }

    /// The next webhook, or a failed test after [`WAIT`].
    async fn next(&mut self) -> Received {
        tokio::time::timeout(WAIT, self.received.recv())
            .await
            .expect("a webhook within the wait")
            .expect("the receiver runs")
    }

    /// Nothing more arrives within `quiet`.
    async fn assert_quiet(&mut self, quiet: Duration) {
        if let Ok(Some(extra)) = tokio::time::timeout(quiet, self.received.recv()).await {
            panic!("unexpected webhook: {extra:?}");
        }
    }
}

fn dev_secret(source: &str) -> &'static str {
    match source {
        "backend" => DEV_BACKEND_WEBHOOK_SECRET,
        "crm" => DEV_CRM_WEBHOOK_SECRET,
        "process" => DEV_PROCESS_WEBHOOK_SECRET,
        "carrier" => DEV_CARRIER_WEBHOOK_SECRET,
        other => panic!("webhook from an unknown source {other}"),
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let timestamp = header("x-webhook-timestamp");
    let signature = header("x-webhook-signature");
    let fresh = timestamp
        .parse::<i64>()
        .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() <= 5);
    let signature_valid = fresh
        && header("content-type") == "application/json"
        && signature
            .split(',')
            .any(|s| s.trim() == sign_webhook(dev_secret(&source), &timestamp, &body));

    let scripted = state.script.lock().unwrap().pop_front();
    let forward_to = state.forward_to.lock().unwrap().clone();
    let (answered, answer) = match (scripted, forward_to) {
        (Some(status), _) => (status, json!({"scripted": status})),
        (None, None) => (200, json!({"ok": true})),
        (None, Some(base)) => {
            let response = state
                .http
                .post(format!("{base}/webhooks/{source}"))
                .header("content-type", "application/json")
                .header("x-webhook-timestamp", &timestamp)
                .header("x-webhook-signature", &signature)
                .body(body.clone())
                .send()
                .await
                .expect("Switchyard answers");
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
    };
    let _ = state.received.send(Received {
        source,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        signature_valid,
        answered,
        answer: answer.clone(),
    });
    let status = StatusCode::from_u16(answered).unwrap();
    (status, axum::Json(answer)).into_response()
}

// ----- helpers -------------------------------------------------------------------------

const BACKEND_TOKEN: &str = "sandbox-backend-token";

fn quiet() -> SandboxConfig {
    SandboxConfig {
        simulator_interval_ms: 0,
        ..SandboxConfig::default()
    }
}

async fn sandbox_posting_to(receiver: &Receiver, simulator_interval_ms: u64) -> Sandbox {
    Sandbox::start(SandboxConfig {
        simulator_interval_ms,
        webhooks: Some(SandboxWebhooks::dev(&receiver.url)),
        ..SandboxConfig::default()
    })
    .await
    .expect("the sandbox starts")
}

async fn backend_post(sandbox: &Sandbox, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", sandbox.urls().backend))
        .bearer_auth(BACKEND_TOKEN)
        .json(&body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the sandbox backend answers");
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn place_order(sandbox: &Sandbox) -> String {
    let (status, order) = backend_post(
        sandbox,
        "/orders",
        json!({"customerId": "cust-0001", "lines": [{"productId": "prod-0001", "quantity": 1}]}),
    )
    .await;
    assert_eq!(status, 201, "{order}");
    order["id"].as_str().unwrap().to_owned()
}

/// Checks a backend webhook's body, and returns its event id.
fn assert_order_webhook(received: &Received, order_id: &str, status: &str) -> String {
    assert_eq!(received.source, "backend");
    assert!(received.signature_valid, "{received:?}");
    let body = &received.body;
    let id = body["id"].as_str().expect("an id").to_owned();
    assert!(id.starts_with("evt_") && id.len() == 36, "{id}");
    assert_eq!(body["type"], "order.status_changed");
    let occurred: chrono::DateTime<chrono::Utc> = body["occurredAt"]
        .as_str()
        .expect("occurredAt")
        .parse()
        .expect("RFC 3339");
    let age = chrono::Utc::now() - occurred;
    assert!(
        age >= chrono::Duration::zero() && age < chrono::Duration::seconds(10),
        "{age}"
    );
    assert_eq!(
        body["data"],
        json!({"orderId": order_id, "customerId": "cust-0001", "status": status})
    );
    assert_eq!(body.as_object().unwrap().len(), 4, "{body}");
    id
}

// ----- the sandbox posts -----------------------------------------------------------------

#[tokio::test]
async fn each_order_change_in_the_sandbox_is_posted_signed_and_in_order() {
    let mut receiver = Receiver::start().await;
    let sandbox = sandbox_posting_to(&receiver, 0).await;

    let order_id = place_order(&sandbox).await;
    assert_eq!(order_id, "ord-020001");
    let placed = assert_order_webhook(&receiver.next().await, "ord-020001", "CONFIRMED");

    let (status, cancelled) = backend_post(&sandbox, "/orders/ord-020001/cancel", json!({})).await;
    assert_eq!((status, &cancelled["status"]), (200, &json!("CANCELLED")));
    let cancelled = assert_order_webhook(&receiver.next().await, "ord-020001", "CANCELLED");
    assert_ne!(placed, cancelled, "every change has its own event id");

    // A refused change changes nothing and posts nothing.
    let (status, _) = backend_post(&sandbox, "/orders/ord-020001/cancel", json!({})).await;
    assert_eq!(status, 409);
    receiver.assert_quiet(Duration::from_millis(300)).await;
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_event_until_it_answers_2xx() {
    let mut receiver = Receiver::start().await;
    receiver.answer_first(&[500, 500]);
    let sandbox = sandbox_posting_to(&receiver, 0).await;

    let started = Instant::now();
    let order_id = place_order(&sandbox).await;
    let attempts = [
        receiver.next().await,
        receiver.next().await,
        receiver.next().await,
    ];
    let elapsed = started.elapsed();
    assert_eq!(
        attempts.iter().map(|a| a.answered).collect::<Vec<_>>(),
        [500, 500, 200]
    );
    let ids: Vec<String> = attempts
        .iter()
        .map(|a| assert_order_webhook(a, &order_id, "CONFIRMED"))
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[1], ids[2]);
    assert!(
        attempts.iter().all(|a| a.body == attempts[0].body),
        "the same body every time"
    );
    // Backoff: 100 ms, then 200 ms.
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");

    // The next change follows, once.
    backend_post(&sandbox, &format!("/orders/{order_id}/cancel"), json!({})).await;
    let next = receiver.next().await;
    let next_id = assert_order_webhook(&next, &order_id, "CANCELLED");
    assert_ne!(next_id, ids[0]);
    receiver.assert_quiet(Duration::from_millis(300)).await;
    sandbox.shutdown().await;
}

// ----- Switchyard receives -----------------------------------------------------------------

/// Switchyard over a quiet sandbox, with every source's webhooks enabled (dev secrets).
async fn app_with_webhooks() -> TestApp {
    TestApp::spawn_with(quiet(), |config| {
        set_dev_webhook_secrets(config);
    })
    .await
}

fn set_dev_webhook_secrets(config: &mut Config) {
    config.webhooks.backend_secret = Some(Secret::new(DEV_BACKEND_WEBHOOK_SECRET));
    config.webhooks.crm_secret = Some(Secret::new(DEV_CRM_WEBHOOK_SECRET));
    config.webhooks.process_secret = Some(Secret::new(DEV_PROCESS_WEBHOOK_SECRET));
    config.webhooks.carrier_secret = Some(Secret::new(DEV_CARRIER_WEBHOOK_SECRET));
}

/// POSTs `body` to `/webhooks/{source}`, signed at `timestamp` with `secret`.
async fn deliver(
    app: &TestApp,
    source: &str,
    secret: &str,
    timestamp: i64,
    body: &str,
) -> (u16, Value) {
    let timestamp = timestamp.to_string();
    let response = app
        .http
        .post(app.url(&format!("/webhooks/{source}")))
        .header("content-type", "application/json")
        .header("x-webhook-timestamp", &timestamp)
        .header(
            "x-webhook-signature",
            sign_webhook(secret, &timestamp, body.as_bytes()),
        )
        .body(body.to_owned())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("Switchyard answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn refused(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

const ORDER_SHIPPED: &str = r#"{"id":"evt_test_0001","type":"order.status_changed","occurredAt":"2026-01-01T10:00:00Z","data":{"orderId":"ord-000123","customerId":"cust-0001","status":"SHIPPED"}}"#;

#[tokio::test]
async fn switchyard_accepts_a_signed_webhook_once_and_absorbs_the_redelivery() {
    let app = app_with_webhooks().await;
    let secret = DEV_BACKEND_WEBHOOK_SECRET;
    assert_eq!(
        deliver(&app, "backend", secret, now(), ORDER_SHIPPED).await,
        (
            202,
            json!({"accepted": true, "duplicate": false, "eventId": "backend:evt_test_0001"})
        )
    );
    // The sender did not get (or lost) the answer and delivers again, signed anew.
    assert_eq!(
        deliver(&app, "backend", secret, now(), ORDER_SHIPPED).await,
        (
            200,
            json!({"accepted": true, "duplicate": true, "eventId": "backend:evt_test_0001"})
        )
    );
    app.stop().await;
}

#[tokio::test]
async fn switchyard_takes_each_upstreams_shape() {
    let app = app_with_webhooks().await;
    let ms = chrono::Utc::now().timestamp_millis();
    let deliveries = [
        (
            "carrier",
            json!({"id": "whk_test_1", "event": "tracking.updated", "created_at": "2026-01-01T10:00:00Z",
                   "data": {"tracking_number": "PC100016201", "carrier": "PARCELCO",
                            "status": "OUT_FOR_DELIVERY", "location": "London, GB",
                            "description": "Out for delivery", "reference": "ord-016201",
                            "customer_reference": "cust-0001"}}),
            "carrier:whk_test_1",
        ),
        (
            "crm",
            json!({"schema": "CaseChangeEvent-v60",
                   "event": {"replayId": 7, "EventUuid": "6f0c1d8e-2b1a-4c57-9e7a-0d3f5b2a9c11"},
                   "payload": {"ChangeEventHeader": {"entityName": "Case", "changeType": "UPDATE",
                                                     "recordIds": ["500000000000001AAA"],
                                                     "commitTimestamp": ms,
                                                     "transactionKey": "t-1",
                                                     "changedFields": ["Status"]},
                               "Status": "Closed", "CaseNumber": "00001001",
                               "Customer_Id__c": "cust-0001"}}),
            "crm:6f0c1d8e-2b1a-4c57-9e7a-0d3f5b2a9c11",
        ),
        (
            "process",
            json!({"eventId": "3d1f6a2e-8c4b-4f0a-9b7e-5a2c1d0e9f33", "type": "TaskClaimed",
                   "timestamp": ms, "containerId": "returns", "processId": "returns.ReturnRequest",
                   "processInstanceId": 3, "taskId": 3, "taskName": "ApproveReturn",
                   "taskStatus": "Reserved", "actualOwner": "agent-01",
                   "potentialOwners": ["agents"],
                   "processVariables": {"customerId": "cust-0002", "orderId": "ord-000002"}}),
            "process:3d1f6a2e-8c4b-4f0a-9b7e-5a2c1d0e9f33",
        ),
    ];
    for (source, body, event_id) in deliveries {
        assert_eq!(
            deliver(&app, source, dev_secret(source), now(), &body.to_string()).await,
            (
                202,
                json!({"accepted": true, "duplicate": false, "eventId": event_id})
            ),
            "{source}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn switchyard_refuses_what_it_cannot_trust_or_read() {
    let app = app_with_webhooks().await;
    let secret = DEV_BACKEND_WEBHOOK_SECRET;

    // Signed with another secret.
    assert_eq!(
        deliver(&app, "backend", "not-the-secret", now(), ORDER_SHIPPED).await,
        (
            401,
            refused(
                "BAD_SIGNATURE",
                "no v1 signature matches: sign \"<timestamp>.<raw body>\" with HMAC-SHA256 and the shared secret"
            )
        )
    );
    // No signature at all.
    let response = app
        .http
        .post(app.url("/webhooks/backend"))
        .body(ORDER_SHIPPED)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        refused("BAD_SIGNATURE", "missing X-Webhook-Timestamp header")
    );
    // Authentic, but signed six minutes ago: a replay.
    let old = now() - 360;
    let (status, body) = deliver(&app, "backend", secret, old, ORDER_SHIPPED).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "STALE_TIMESTAMP");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("stale timestamp: signed at {old}, 36"))
            && message.ends_with(" s away from now; at most 300 s is accepted"),
        "{message}"
    );
    // Unknown source.
    assert_eq!(
        deliver(&app, "erp", secret, now(), ORDER_SHIPPED).await,
        (
            404,
            refused(
                "UNKNOWN_SOURCE",
                "no webhook source `erp` is enabled here (sources: backend, crm, process, carrier; each needs a signing secret configured)"
            )
        )
    );
    // Not JSON.
    assert_eq!(
        deliver(&app, "backend", secret, now(), r#"{"id":"#).await,
        (
            400,
            refused(
                "MALFORMED_EVENT",
                "the body is not valid JSON: EOF while parsing a value at line 1 column 6"
            )
        )
    );
    // JSON, but missing what is needed.
    let no_status = ORDER_SHIPPED.replace(r#","status":"SHIPPED""#, "");
    assert_eq!(
        deliver(&app, "backend", secret, now(), &no_status).await,
        (
            400,
            refused("MALFORMED_EVENT", "data: missing field `status`")
        )
    );
    // A type we do not take.
    let refund = ORDER_SHIPPED.replace("order.status_changed", "order.refunded");
    assert_eq!(
        deliver(&app, "backend", secret, now(), &refund).await,
        (
            400,
            refused(
                "UNSUPPORTED_EVENT",
                "unsupported event type `order.refunded`; supported: order.status_changed, product.updated"
            )
        )
    );
    // Too large.
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(64 * 1024));
    assert_eq!(
        deliver(&app, "backend", secret, now(), &big).await,
        (
            413,
            refused(
                "PAYLOAD_TOO_LARGE",
                "a webhook body may be at most 65536 bytes"
            )
        )
    );
    app.stop().await;
}

#[tokio::test]
async fn a_source_without_a_secret_is_off() {
    // The harness configures every source's secret; take the backend's away.
    let app = TestApp::spawn_with(quiet(), |config| {
        config.webhooks.backend_secret = None;
        config.webhooks.crm_secret = Some(Secret::new(DEV_CRM_WEBHOOK_SECRET));
    })
    .await;
    let (status, body) = deliver(
        &app,
        "backend",
        DEV_BACKEND_WEBHOOK_SECRET,
        now(),
        ORDER_SHIPPED,
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("UNKNOWN_SOURCE"))
    );
    app.stop().await;
}

// ----- the simulator -----------------------------------------------------------------------

#[tokio::test]
async fn the_simulator_moves_the_world_and_a_quiet_sandbox_stays_still() {
    assert_eq!(SandboxConfig::default().simulator_interval_ms, 4000);

    let moving = Sandbox::start(SandboxConfig {
        simulator_interval_ms: 10,
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let mut changes = moving.changes();
    for _ in 0..10 {
        tokio::time::timeout(WAIT, changes.recv())
            .await
            .expect("a change within the wait")
            .expect("the channel is open");
    }
    moving.shutdown().await;

    let still = Sandbox::start(quiet()).await.unwrap();
    let mut changes = still.changes();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        changes.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Empty)
    ));
    still.shutdown().await;
}

/// The sandbox's simulator posts to a real Switchyard (through the checking receiver), which
/// accepts what every upstream sends.
#[tokio::test]
async fn switchyard_accepts_every_webhook_the_simulated_sandbox_posts() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut receiver = Receiver::start().await;
    let sandbox = sandbox_posting_to(&receiver, 20).await;
    let (upstreams, auth) = switchyard::embedded::sandbox_wiring(&sandbox).unwrap();
    let mut config = Config {
        upstreams,
        auth,
        ..Config::default()
    };
    set_dev_webhook_secrets(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(switchyard::run(listener, config, async {
        let _ = stopped.await;
    }));
    receiver.forward_to(&base);

    let mut sources = BTreeSet::new();
    let mut seen = 0;
    while sources.len() < 4 {
        let received = receiver.next().await;
        seen += 1;
        assert!(received.signature_valid, "{received:?}");
        let upstream_id = match received.source.as_str() {
            "backend" | "carrier" => &received.body["id"],
            "crm" => &received.body["event"]["EventUuid"],
            "process" => &received.body["eventId"],
            other => panic!("webhook from {other}"),
        };
        let event_id = format!("{}:{}", received.source, upstream_id.as_str().unwrap());
        assert_eq!(
            (received.answered, &received.answer),
            (
                202,
                &json!({"accepted": true, "duplicate": false, "eventId": event_id})
            ),
            "{received:?}"
        );
        sources.insert(received.source);
        assert!(seen < 1000, "only {sources:?} after {seen} webhooks");
    }
    assert_eq!(
        sources.into_iter().collect::<Vec<_>>(),
        ["backend", "carrier", "crm", "process"]
    );
    sandbox.shutdown().await;
    let _ = stop.send(());
    tokio::time::timeout(WAIT, server)
        .await
        .expect("Switchyard stops")
        .unwrap()
        .unwrap();
}
