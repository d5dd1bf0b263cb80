//! The sandbox's webhooks out: every change to the world, posted to the receiver the way the
//! real upstream would post it.
//!
//! With [`SandboxWebhooks`] configured, [`start`] subscribes to the world's
//! [`SandboxChange`]s and turns each into the payload of the upstream that owns it (shapes in
//! `docs/upstreams.md`, "Webhooks"):
//!
//! | change | source | payload |
//! |---|---|---|
//! | `OrderStatusChanged` | `backend` | `order.status_changed` |
//! | `ProductChanged` | `backend` | `product.updated` |
//! | `ShipmentScanned` | `carrier` | `tracking.updated` |
//! | `CaseChanged`, `CaseCommentAdded` | `crm` | Change Data Capture event, as a relay forwards it |
//! | `TaskChanged`, `ProcessChanged` | `process` | KIE event listener JSON |
//!
//! Each change gets its own event id when it is mapped (unique per sandbox run, so a restarted
//! sandbox never reuses one), and the same body is sent on every retry. Like real senders:
//! - each delivery is `POST <url>/<source>`, signed per attempt (`X-Webhook-Timestamp`,
//!   `X-Webhook-Signature: v1=...`, see [`sign`]) with the source's secret;
//! - deliveries of one source go out in order, one at a time; sources are independent;
//! - a connection error, a timeout or any non-2xx answer is retried after 100 ms, doubling up
//!   to 5 s, for at most 10 attempts; then the delivery is logged as an error and dropped;
//! - each source has a bounded queue ([`QUEUE_CAPACITY`]); when it is full (the receiver has
//!   been down for long), new deliveries are dropped with an error log. Mapping and queueing
//!   never wait, so no world mutation is ever slowed by a receiver.
//!
//! On shutdown, queued and retrying deliveries are abandoned.

use std::fmt;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use aws_lc_rs::hmac;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use super::Upstream;
use super::data::SplitMix64;
use super::world::{
    CARRIER_NAME, CURRENCY, RETURN_PROCESS_ID, RETURNS_CONTAINER, SandboxChange,
    integration_user_id,
};

/// Dev secret the sandbox signs the backend's webhooks with, unless configured otherwise.
pub const DEV_BACKEND_WEBHOOK_SECRET: &str = "sandbox-webhook-backend";
/// Dev secret of the CRM's webhooks.
pub const DEV_CRM_WEBHOOK_SECRET: &str = "sandbox-webhook-crm";
/// Dev secret of the process server's webhooks.
pub const DEV_PROCESS_WEBHOOK_SECRET: &str = "sandbox-webhook-process";
/// Dev secret of the carrier's webhooks.
pub const DEV_CARRIER_WEBHOOK_SECRET: &str = "sandbox-webhook-carrier";

/// The header with the unix time (seconds) the delivery was signed at.
const TIMESTAMP_HEADER: &str = "x-webhook-timestamp";
/// The header with the `v1=<hex>` signature.
const SIGNATURE_HEADER: &str = "x-webhook-signature";

/// Deliveries one source may have waiting before new ones are dropped.
pub(crate) const QUEUE_CAPACITY: usize = 1024;
/// Attempts per delivery, the first included.
const MAX_ATTEMPTS: u32 = 10;
/// Wait before the first retry; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The upstreams that post webhooks, in queue order.
const SOURCES: [Upstream; 4] = [
    Upstream::Backend,
    Upstream::Crm,
    Upstream::Process,
    Upstream::Carrier,
];

/// Where the sandbox posts its webhooks, and the secrets it signs them with (dev values by
/// default: the `DEV_*_WEBHOOK_SECRET` constants).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxWebhooks {
    /// Base URL; each source posts to `<url>/<source>`, e.g.
    /// `http://127.0.0.1:4000/webhooks` -> `http://127.0.0.1:4000/webhooks/backend`.
    pub url: String,
    /// Secret of the backend's webhooks (default [`DEV_BACKEND_WEBHOOK_SECRET`]).
    #[serde(default = "dev_backend")]
    pub backend_secret: String,
    /// Secret of the CRM's webhooks (default [`DEV_CRM_WEBHOOK_SECRET`]).
    #[serde(default = "dev_crm")]
    pub crm_secret: String,
    /// Secret of the process server's webhooks (default [`DEV_PROCESS_WEBHOOK_SECRET`]).
    #[serde(default = "dev_process")]
    pub process_secret: String,
    /// Secret of the carrier's webhooks (default [`DEV_CARRIER_WEBHOOK_SECRET`]).
    #[serde(default = "dev_carrier")]
    pub carrier_secret: String,
}

fn dev_backend() -> String {
    DEV_BACKEND_WEBHOOK_SECRET.to_owned()
}
fn dev_crm() -> String {
    DEV_CRM_WEBHOOK_SECRET.to_owned()
}
fn dev_process() -> String {
    DEV_PROCESS_WEBHOOK_SECRET.to_owned()
}
fn dev_carrier() -> String {
    DEV_CARRIER_WEBHOOK_SECRET.to_owned()
}

impl SandboxWebhooks {
    /// Posting to `url` with the dev secrets.
    pub fn dev(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            backend_secret: dev_backend(),
            crm_secret: dev_crm(),
            process_secret: dev_process(),
            carrier_secret: dev_carrier(),
        }
    }

    /// The secret one source signs with; `None` for the OIDC issuer and the push providers,
    /// which post nothing.
    pub(crate) fn secret(&self, source: Upstream) -> Option<&str> {
        match source {
            Upstream::Backend => Some(&self.backend_secret),
            Upstream::Crm => Some(&self.crm_secret),
            Upstream::Process => Some(&self.process_secret),
            Upstream::Carrier => Some(&self.carrier_secret),
            Upstream::Oidc
            | Upstream::Fcm
            | Upstream::Apns
            | Upstream::WebPush
            | Upstream::Smtp => None,
        }
    }

    /// Where one source posts: `<url>/<source>`.
    pub(crate) fn endpoint(&self, source: Upstream) -> String {
        format!("{}/{}", self.url.trim_end_matches('/'), source.name())
    }

    pub(super) fn validate(&self) -> anyhow::Result<()> {
        let url = url::Url::parse(&self.url)
            .with_context(|| format!("sandbox.webhooks.url `{}` is not a URL", self.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("sandbox.webhooks.url must be http or https");
        }
        for source in SOURCES {
            if self.secret(source).is_none_or(str::is_empty) {
                bail!("sandbox.webhooks.{}_secret is empty", source.name());
            }
        }
        Ok(())
    }
}

impl fmt::Debug for SandboxWebhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxWebhooks")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// One webhook to send: the same body on every attempt.
#[derive(Debug)]
struct Delivery {
    event_id: String,
    body: Vec<u8>,
}

/// Starts the dispatcher (changes -> queues) and one sender per source. `changes` must be
/// subscribed before the first mutation that should be posted.
pub(super) fn start(
    config: &SandboxWebhooks,
    changes: broadcast::Receiver<SandboxChange>,
    shutdown: &watch::Sender<bool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    config.validate()?;
    let client = reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .connect_timeout(Duration::from_secs(2))
        .user_agent("switchyard-sandbox-webhooks/1")
        .build()
        .context("building the sandbox's webhook client")?;
    let mut tasks = Vec::with_capacity(SOURCES.len() + 1);
    let mut queues = Vec::with_capacity(SOURCES.len());
    for source in SOURCES {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        queues.push((source, sender));
        let sender = Sender {
            source,
            endpoint: config.endpoint(source),
            secret: config.secret(source).unwrap_or_default().to_owned(),
            client: client.clone(),
        };
        tasks.push(tokio::spawn(sender.run(receiver, shutdown.subscribe())));
    }
    tasks.push(tokio::spawn(dispatch(
        changes,
        queues,
        Payloads::new(),
        shutdown.subscribe(),
    )));
    Ok(tasks)
}

/// Maps each change to its payload and queues it for its source, never waiting.
async fn dispatch(
    mut changes: broadcast::Receiver<SandboxChange>,
    queues: Vec<(Upstream, mpsc::Sender<Delivery>)>,
    mut payloads: Payloads,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let change = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            change = changes.recv() => change,
        };
        let change = match change {
            Ok(change) => change,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::error!(
                    missed,
                    "sandbox webhooks fell behind the world: changes not posted"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let (source, event_id, payload) = payloads.map(&change, Utc::now());
        let Some((_, queue)) = queues.iter().find(|(s, _)| *s == source) else {
            continue;
        };
        let delivery = Delivery {
            event_id,
            body: payload.to_string().into_bytes(),
        };
        if let Err(error) = queue.try_send(delivery) {
            let (reason, delivery) = match error {
                mpsc::error::TrySendError::Full(d) => ("queue full", d),
                mpsc::error::TrySendError::Closed(d) => ("sender stopped", d),
            };
            tracing::error!(
                source = source.name(),
                event_id = %delivery.event_id,
                reason,
                "sandbox webhook dropped"
            );
        }
    }
}

/// Sends one source's deliveries, in order.
struct Sender {
    source: Upstream,
    endpoint: String,
    secret: String,
    client: reqwest::Client,
}

impl Sender {
    async fn run(self, mut queue: mpsc::Receiver<Delivery>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let delivery = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                delivery = queue.recv() => delivery,
            };
            let Some(delivery) = delivery else { return };
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                () = self.deliver(&delivery) => {}
            }
        }
    }

    /// Tries until a 2xx or [`MAX_ATTEMPTS`], backing off in between.
    async fn deliver(&self, delivery: &Delivery) {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=MAX_ATTEMPTS {
            let failure = match self.attempt(delivery).await {
                Ok(()) => {
                    tracing::debug!(
                        source = self.source.name(),
                        event_id = %delivery.event_id,
                        attempt,
                        "sandbox webhook delivered"
                    );
                    return;
                }
                Err(failure) => failure,
            };
            if attempt == MAX_ATTEMPTS {
                tracing::error!(
                    source = self.source.name(),
                    event_id = %delivery.event_id,
                    attempts = attempt,
                    %failure,
                    "sandbox webhook dropped after the last attempt"
                );
                return;
            }
            tracing::warn!(
                source = self.source.name(),
                event_id = %delivery.event_id,
                attempt,
                %failure,
                retry_in = ?backoff,
                "sandbox webhook failed, retrying"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn attempt(&self, delivery: &Delivery) -> Result<(), String> {
        let timestamp = Utc::now().timestamp();
        let signature = sign(self.secret.as_bytes(), timestamp, &delivery.body);
        let response = self
            .client
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(delivery.body.clone())
            .send()
            .await
            .map_err(|error| format!("request failed: {error}"))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    }
}

/// The `X-Webhook-Signature` value of `body` signed at `timestamp` (unix seconds, the value of
/// `X-Webhook-Timestamp`) with `secret`: `v1=` and the lowercase hex HMAC-SHA256 of
/// `"<timestamp>.<raw body>"`.
///
/// This is the contract with the receiver (Switchyard's webhook ingestion), not shared code:
/// each side implements it on its own and pins the same test vector.
fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let mut header = String::from("v1=");
    for byte in context.sign().as_ref() {
        let _ = write!(header, "{byte:02x}");
    }
    header
}

/// Builds each upstream's payload for a change, with a fresh event id.
struct Payloads {
    /// Distinguishes this sandbox run's ids from any earlier run's.
    run: u64,
    /// Changes mapped so far.
    sequence: u64,
    /// The CRM channel's replay id.
    replay_id: u64,
}

impl Payloads {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        Self::with_run(SplitMix64::new(nanos).next_u64())
    }

    fn with_run(run: u64) -> Self {
        Self {
            run,
            sequence: 0,
            replay_id: 0,
        }
    }

    /// A UUID-shaped (version 4 layout) id, unique per run and change.
    fn uuid(&mut self) -> String {
        self.sequence += 1;
        let (run, seq) = (self.run, self.sequence);
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            run >> 32,
            (run >> 16) & 0xffff,
            run & 0xfff,
            0x8000 | ((seq >> 48) & 0x3fff),
            seq & 0xffff_ffff_ffff
        )
    }

    /// The source, the upstream's event id and the payload of a change.
    fn map(&mut self, change: &SandboxChange, now: DateTime<Utc>) -> (Upstream, String, Value) {
        let rfc3339 = now.to_rfc3339_opts(SecondsFormat::Millis, true);
        let millis = now.timestamp_millis();
        match change {
            SandboxChange::OrderStatusChanged {
                order_id,
                customer_id,
                status,
            } => {
                let id = format!("evt_{}", self.uuid().replace('-', ""));
                let payload = json!({
                    "id": id, "type": "order.status_changed", "occurredAt": rfc3339,
                    "data": {"orderId": order_id, "customerId": customer_id, "status": status},
                });
                (Upstream::Backend, id, payload)
            }
            SandboxChange::ProductChanged {
                product_id,
                name,
                price_minor,
                in_stock,
                previous_price_minor,
                previous_in_stock,
            } => {
                let id = format!("evt_{}", self.uuid().replace('-', ""));
                let payload = json!({
                    "id": id, "type": "product.updated", "occurredAt": rfc3339,
                    "data": {
                        "productId": product_id, "name": name,
                        "price": {"minorUnits": price_minor, "currency": CURRENCY},
                        "inStock": in_stock,
                        "previous": {
                            "price": {"minorUnits": previous_price_minor, "currency": CURRENCY},
                            "inStock": previous_in_stock,
                        },
                    },
                });
                (Upstream::Backend, id, payload)
            }
            SandboxChange::ShipmentScanned {
                tracking_number,
                order_id,
                customer_id,
                status,
                location,
                description,
            } => {
                let id = format!("whk_{}", self.uuid().replace('-', ""));
                let mut data = json!({
                    "tracking_number": tracking_number, "carrier": CARRIER_NAME,
                    "status": status, "location": location, "description": description,
                    "reference": order_id,
                });
                if !customer_id.is_empty() {
                    data["customer_reference"] = json!(customer_id);
                }
                let payload = json!({
                    "id": id, "event": "tracking.updated", "created_at": rfc3339, "data": data,
                });
                (Upstream::Carrier, id, payload)
            }
            SandboxChange::CaseChanged {
                case_id,
                case_number,
                customer_id,
                status,
                created,
            } => {
                let (change_type, changed) = if *created {
                    ("CREATE", json!([]))
                } else {
                    ("UPDATE", json!(["Status", "LastModifiedDate"]))
                };
                let mut fields = json!({
                    "Status": status, "LastModifiedDate": rfc3339, "CaseNumber": case_number,
                });
                if let Some(customer_id) = customer_id {
                    fields["Customer_Id__c"] = json!(customer_id);
                }
                self.cdc("Case", change_type, case_id, changed, fields, millis)
            }
            SandboxChange::CaseCommentAdded {
                case_id,
                comment_id,
                case_number,
                customer_id,
                published,
            } => {
                let mut fields = json!({
                    "ParentId": case_id, "IsPublished": published, "CaseNumber": case_number,
                    "CreatedDate": rfc3339,
                });
                if let Some(customer_id) = customer_id {
                    fields["Customer_Id__c"] = json!(customer_id);
                }
                self.cdc(
                    "CaseComment",
                    "CREATE",
                    comment_id,
                    json!([]),
                    fields,
                    millis,
                )
            }
            SandboxChange::TaskChanged {
                event,
                task_id,
                process_instance_id,
                task_name,
                status,
                actual_owner,
                potential_owners,
                customer_id,
                order_id,
            } => {
                let id = self.uuid();
                let payload = json!({
                    "eventId": id, "type": event.as_str(), "timestamp": millis,
                    "containerId": RETURNS_CONTAINER, "processId": RETURN_PROCESS_ID,
                    "processInstanceId": process_instance_id, "taskId": task_id,
                    "taskName": task_name, "taskStatus": status, "actualOwner": actual_owner,
                    "potentialOwners": potential_owners,
                    "processVariables": {"customerId": customer_id, "orderId": order_id},
                });
                (Upstream::Process, id, payload)
            }
            SandboxChange::ProcessChanged {
                process_instance_id,
                customer_id,
                order_id,
                state,
                outcome,
            } => {
                let id = self.uuid();
                let kind = if *state == 1 {
                    "ProcessStarted"
                } else {
                    "ProcessCompleted"
                };
                let mut variables = json!({"customerId": customer_id, "orderId": order_id});
                if let Some(outcome) = outcome {
                    variables["outcome"] = json!(outcome);
                }
                let payload = json!({
                    "eventId": id, "type": kind, "timestamp": millis,
                    "containerId": RETURNS_CONTAINER, "processId": RETURN_PROCESS_ID,
                    "processInstanceId": process_instance_id, "processInstanceState": state,
                    "potentialOwners": [], "processVariables": variables,
                });
                (Upstream::Process, id, payload)
            }
        }
    }

    /// A Change Data Capture event as the Pub/Sub relay forwards it.
    fn cdc(
        &mut self,
        entity: &str,
        change_type: &str,
        record_id: &str,
        changed_fields: Value,
        mut fields: Value,
        commit_millis: i64,
    ) -> (Upstream, String, Value) {
        self.replay_id += 1;
        let id = self.uuid();
        let transaction_key = self.uuid();
        fields["ChangeEventHeader"] = json!({
            "entityName": entity, "changeType": change_type,
            "changeOrigin": "com/salesforce/api/rest/60.0", "transactionKey": transaction_key,
            "sequenceNumber": 1, "commitTimestamp": commit_millis,
            "commitNumber": self.replay_id, "commitUser": integration_user_id(),
            "recordIds": [record_id], "changedFields": changed_fields,
            "nulledFields": [], "diffFields": [],
        });
        let schema = match entity {
            "Case" => "CaseChangeEvent-v60",
            _ => "CaseCommentChangeEvent-v60",
        };
        let payload = json!({
            "schema": schema,
            "event": {"replayId": self.replay_id, "EventUuid": id},
            "payload": fields,
        });
        (Upstream::Crm, id, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::super::world::TaskEvent;
    use super::*;

    fn at() -> DateTime<Utc> {
        "2026-01-01T10:00:00Z".parse().unwrap()
    }

    /// The contract's example (`docs/upstreams.md`, "Signing"); Switchyard's webhook
    /// verifier (`src/ingest/signature.rs`), which shares no code with this crate, pins the
    /// same one.
    #[test]
    fn signs_the_timestamp_and_the_raw_body() {
        // printf '1767225600.{"id":"evt_1"}' | openssl dgst -sha256 -hmac whsec-test
        assert_eq!(
            sign(b"whsec-test", 1_767_225_600, br#"{"id":"evt_1"}"#),
            "v1=47fde13e33c77f7070054ef39f95d6d71ae1c43b0d080834cd232657892f7923"
        );
    }

    #[test]
    fn ids_are_unique_per_change_and_per_run() {
        let mut a = Payloads::with_run(0x0123_4567_89ab_cdef);
        assert_eq!(a.uuid(), "01234567-89ab-4def-8000-000000000001");
        assert_eq!(a.uuid(), "01234567-89ab-4def-8000-000000000002");
        let mut b = Payloads::with_run(0xfedc_ba98_7654_3210);
        assert_eq!(b.uuid(), "fedcba98-7654-4210-8000-000000000001");
    }

    #[test]
    fn each_change_goes_to_its_upstream_in_its_shape() {
        let mut payloads = Payloads::with_run(1);
        let (source, id, order) = payloads.map(
            &SandboxChange::OrderStatusChanged {
                order_id: "ord-000123".into(),
                customer_id: "cust-0001".into(),
                status: "SHIPPED".into(),
            },
            at(),
        );
        assert_eq!(
            (source, id.as_str()),
            (Upstream::Backend, "evt_00000000000040018000000000000001")
        );
        assert_eq!(
            order,
            json!({"id": id, "type": "order.status_changed", "occurredAt": "2026-01-01T10:00:00.000Z",
                   "data": {"orderId": "ord-000123", "customerId": "cust-0001", "status": "SHIPPED"}})
        );

        let (source, id, comment) = payloads.map(
            &SandboxChange::CaseCommentAdded {
                case_id: "500000000000001AAA".into(),
                comment_id: "00a000000000009AAA".into(),
                case_number: "00001001".into(),
                customer_id: Some("cust-0001".into()),
                published: false,
            },
            at(),
        );
        assert_eq!(source, Upstream::Crm);
        assert_eq!(comment["event"], json!({"replayId": 1, "EventUuid": id}));
        assert_eq!(comment["payload"]["ParentId"], "500000000000001AAA");
        assert_eq!(comment["payload"]["IsPublished"], false);
        let header = &comment["payload"]["ChangeEventHeader"];
        assert_eq!(header["entityName"], "CaseComment");
        assert_eq!(header["changeType"], "CREATE");
        assert_eq!(header["recordIds"], json!(["00a000000000009AAA"]));
        assert_eq!(header["commitTimestamp"], 1_767_261_600_000_i64);

        let (source, _, task) = payloads.map(
            &SandboxChange::TaskChanged {
                event: TaskEvent::Claimed,
                task_id: 4,
                process_instance_id: 3,
                task_name: "ApproveReturn".into(),
                status: "Reserved".into(),
                actual_owner: Some("agent-01".into()),
                potential_owners: vec!["agents".into()],
                customer_id: "cust-0002".into(),
                order_id: "ord-000002".into(),
            },
            at(),
        );
        assert_eq!(source, Upstream::Process);
        assert_eq!(task["type"], "TaskClaimed");
        assert_eq!(task["potentialOwners"], json!(["agents"]));
        assert_eq!(task["actualOwner"], "agent-01");
        assert_eq!(
            task["processVariables"],
            json!({"customerId": "cust-0002", "orderId": "ord-000002"})
        );

        let (source, _, parcel) = payloads.map(
            &SandboxChange::ShipmentScanned {
                tracking_number: "PC100000123".into(),
                order_id: "ord-000123".into(),
                customer_id: String::new(),
                status: "IN_TRANSIT".into(),
                location: "Hub, Paris, FR".into(),
                description: "Arrived at sorting hub".into(),
            },
            at(),
        );
        assert_eq!(source, Upstream::Carrier);
        assert_eq!(parcel["data"]["reference"], "ord-000123");
        assert_eq!(parcel["data"].get("customer_reference"), None);
    }

    #[test]
    fn config_is_checked() {
        assert!(
            SandboxWebhooks::dev("http://127.0.0.1:4000/webhooks")
                .validate()
                .is_ok()
        );
        assert_eq!(
            SandboxWebhooks::dev("ftp://x")
                .validate()
                .unwrap_err()
                .to_string(),
            "sandbox.webhooks.url must be http or https"
        );
        let mut empty = SandboxWebhooks::dev("http://x/webhooks");
        empty.crm_secret.clear();
        assert_eq!(
            empty.validate().unwrap_err().to_string(),
            "sandbox.webhooks.crm_secret is empty"
        );
        assert_eq!(
            SandboxWebhooks::dev("http://x/webhooks/").endpoint(Upstream::Carrier),
            "http://x/webhooks/carrier"
        );
        assert_eq!(
            format!("{:?}", SandboxWebhooks::dev("http://x")),
            "SandboxWebhooks { url: \"http://x\", .. }"
        );
    }
}
