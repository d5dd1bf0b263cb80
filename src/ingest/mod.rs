//! Webhooks in: `POST /webhooks/{source}` from the upstreams, verified, normalized into one
//! [`DomainEvent`] each, and published on the event bus.
//!
//! # One delivery, step by step
//! 1. `source` must be `backend`, `crm`, `process` or `carrier` **and** have a secret in
//!    [`WebhooksConfig`]; otherwise 404 `UNKNOWN_SOURCE` (a source without a secret is off).
//! 2. The body may be at most [`MAX_BODY_BYTES`] (64 KiB): 413 `PAYLOAD_TOO_LARGE`.
//! 3. The signature ([`signature`]) must match: 401 `BAD_SIGNATURE`; an authentic delivery
//!    signed more than `tolerance_secs` away from now is 401 `STALE_TIMESTAMP` (replay
//!    protection; also what a sender with a skewed clock sees).
//! 4. The body is parsed in the source's own shape (`backend`, `crm`, `process`, `carrier`
//!    modules; `docs/upstreams.md`, "Webhooks"): 400 `MALFORMED_EVENT` when it does not parse
//!    or lacks what is needed, 400 `UNSUPPORTED_EVENT` for an event type we do not take. The
//!    message says what is wrong, so the sender can fix it.
//! 5. The event is published. Only after the bus accepted it is the answer 2xx: 202
//!    `{"accepted":true,"duplicate":false,"eventId":..}`, or 200 with `"duplicate":true` when
//!    the bus already had that event id (a redelivery). A bus failure is 503 `UNAVAILABLE`
//!    with `Retry-After`: the sender retries, and nothing acknowledged is ever lost.
//!
//! Every rejection is `{"error":{"code","message"}}`. Event ids are
//! `<source>:<the upstream's own event id>`, so a redelivery has the same id and the bus
//! absorbs it. Each delivery is logged (source, event id, kind, outcome); secrets and bodies
//! never are.

mod backend;
mod carrier;
mod crm;
mod process;
pub(crate) mod signature;

use std::fmt;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeZone, Utc};
use futures::StreamExt;
use resolvers::error::GraphError;
use resolvers::events::DomainEvent;
use resolvers::ports::Source;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::config::{Secret, WebhooksConfig};
use crate::events::EventBus;
use signature::SignatureError;

/// Largest webhook body accepted.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// What a 503 asks the sender to wait before retrying, in seconds.
const RETRY_AFTER_SECS: &str = "5";

/// Longest upstream event id accepted.
const MAX_EVENT_ID_LEN: usize = 128;

/// Longest status or name echoed into a summary.
const MAX_LABEL_LEN: usize = 64;

/// Most potential owners a task event may name.
const MAX_OWNERS: usize = 100;

/// Parses a verified body in `source`'s shape; the body itself becomes the event's payload.
fn normalize(source: Source, body: &[u8]) -> Result<DomainEvent, EventError> {
    let mut event = match source {
        Source::Backend => backend::normalize(body),
        Source::Crm => crm::normalize(body),
        Source::Process => process::normalize(body),
        Source::Carrier => carrier::normalize(body),
    }?;
    event.payload = serde_json::from_slice(body).unwrap_or_default();
    Ok(event)
}

/// Why a verified body does not make an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EventError {
    /// Not JSON, or not the documented shape: a field missing, of the wrong type, invalid.
    #[error("{0}")]
    Malformed(String),
    /// A well-formed event of a type Switchyard does not take.
    #[error("{0}")]
    Unsupported(String),
}

/// Why a delivery was refused.
#[derive(Debug)]
enum Rejection {
    UnknownSource(String),
    TooLarge,
    Signature(SignatureError),
    Event(EventError),
    Unavailable,
    /// The body did not arrive in full (too slow, or the connection broke): nothing was
    /// accepted, and the sender should send it again.
    Unreadable,
}

impl Rejection {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Rejection::UnknownSource(_) => (StatusCode::NOT_FOUND, "UNKNOWN_SOURCE"),
            Rejection::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            Rejection::Signature(SignatureError::Stale { .. }) => {
                (StatusCode::UNAUTHORIZED, "STALE_TIMESTAMP")
            }
            Rejection::Signature(_) => (StatusCode::UNAUTHORIZED, "BAD_SIGNATURE"),
            Rejection::Event(EventError::Malformed(_)) => {
                (StatusCode::BAD_REQUEST, "MALFORMED_EVENT")
            }
            Rejection::Event(EventError::Unsupported(_)) => {
                (StatusCode::BAD_REQUEST, "UNSUPPORTED_EVENT")
            }
            Rejection::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            Rejection::Unreadable => (StatusCode::REQUEST_TIMEOUT, "REQUEST_TIMEOUT"),
        }
    }

    fn message(&self) -> String {
        match self {
            Rejection::UnknownSource(name) => format!(
                "no webhook source `{}` is enabled here (sources: backend, crm, process, carrier; \
                 each needs a signing secret configured)",
                clip(name)
            ),
            Rejection::TooLarge => {
                format!("a webhook body may be at most {MAX_BODY_BYTES} bytes")
            }
            Rejection::Signature(error) => error.to_string(),
            Rejection::Event(error) => error.to_string(),
            Rejection::Unavailable => {
                "the event bus is unavailable; nothing was accepted, retry later".to_owned()
            }
            Rejection::Unreadable => {
                "the body did not arrive in full; nothing was accepted, send it again".to_owned()
            }
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = Json(json!({"error": {"code": code, "message": self.message()}}));
        let mut response = (status, body).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// Receives the upstreams' webhooks.
pub(crate) struct Webhooks {
    /// Where accepted events go.
    bus: Arc<dyn EventBus>,
    /// The signing secret of each source, in [`Source::ALL`] order; `None`: the source is off.
    secrets: [Option<Secret>; 4],
    /// How far a signature's timestamp may be from now, in seconds.
    tolerance_secs: u64,
}

impl fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhooks")
            .field("enabled", &self.enabled())
            .field("tolerance_secs", &self.tolerance_secs)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Webhook reception with these secrets, publishing to `bus`.
    ///
    /// Fails on a zero tolerance (nothing would ever verify) or an empty secret.
    pub(crate) fn new(config: &WebhooksConfig, bus: Arc<dyn EventBus>) -> anyhow::Result<Self> {
        if config.tolerance_secs == 0 {
            anyhow::bail!("webhooks.tolerance_secs must be at least 1");
        }
        let secrets = [
            config.backend_secret.clone(),
            config.crm_secret.clone(),
            config.process_secret.clone(),
            config.carrier_secret.clone(),
        ];
        for (source, secret) in Source::ALL.iter().zip(&secrets) {
            if secret.as_ref().is_some_and(|s| s.expose().is_empty()) {
                anyhow::bail!("webhooks.{source}_secret is empty");
            }
        }
        let webhooks = Self {
            bus,
            secrets,
            tolerance_secs: config.tolerance_secs,
        };
        tracing::info!(
            enabled = ?webhooks.enabled(),
            tolerance_secs = config.tolerance_secs,
            "webhook sources"
        );
        Ok(webhooks)
    }

    /// The sources that have a secret.
    fn enabled(&self) -> Vec<&'static str> {
        Source::ALL
            .iter()
            .zip(&self.secrets)
            .filter(|(_, secret)| secret.is_some())
            .map(|(source, _)| source.as_str())
            .collect()
    }

    fn secret(&self, source: Source) -> Option<&Secret> {
        let index = Source::ALL.iter().position(|s| *s == source)?;
        self.secrets[index].as_ref()
    }

    /// Handles one delivery; see the module docs for the steps and answers.
    pub(crate) async fn handle(&self, source: &str, headers: &HeaderMap, body: Body) -> Response {
        let label = Source::parse(source).map_or("unknown", |s| s.as_str());
        match self.accept(source, headers, body).await {
            Ok(response) => {
                metrics::counter!("switchyard_webhooks_total", "source" => label, "outcome" => "accepted")
                    .increment(1);
                response
            }
            Err((source, rejection)) => {
                metrics::counter!("switchyard_webhooks_total", "source" => label, "outcome" => "refused")
                    .increment(1);
                let (status, code) = rejection.status_and_code();
                tracing::warn!(
                    source = %clip(source),
                    status = status.as_u16(),
                    code,
                    reason = %rejection.message(),
                    "webhook refused"
                );
                rejection.into_response()
            }
        }
    }

    async fn accept<'a>(
        &self,
        name: &'a str,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Response, (&'a str, Rejection)> {
        let reject = |rejection| (name, rejection);
        let (source, secret) = Source::parse(name)
            .and_then(|source| Some((source, self.secret(source)?)))
            .ok_or_else(|| reject(Rejection::UnknownSource(name.to_owned())))?;
        let body = read_limited(headers, body).await.map_err(reject)?;
        let header_text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        signature::verify(
            secret.expose().as_bytes(),
            header_text(signature::TIMESTAMP_HEADER),
            header_text(signature::SIGNATURE_HEADER),
            &body,
            Utc::now().timestamp(),
            self.tolerance_secs,
        )
        .map_err(|e| reject(Rejection::Signature(e)))?;
        let event = normalize(source, &body).map_err(|e| reject(Rejection::Event(e)))?;

        let outcome = self.bus.publish(&event).await;
        let (status, duplicate) = match outcome {
            Ok(true) => (StatusCode::ACCEPTED, false),
            Ok(false) => (StatusCode::OK, true),
            Err(error) => {
                tracing::error!(
                    %source,
                    event_id = %event.id,
                    kind = ?event.kind,
                    %error,
                    "webhook not accepted: publishing failed"
                );
                return Err(reject(Rejection::Unavailable));
            }
        };
        tracing::info!(
            %source,
            event_id = %event.id,
            kind = ?event.kind,
            outcome = if duplicate { "duplicate" } else { "accepted" },
            "webhook received"
        );
        let body = json!({"accepted": true, "duplicate": duplicate, "eventId": event.id});
        Ok((status, Json(body)).into_response())
    }
}

/// `POST /webhooks/{source}`.
pub(crate) async fn receive(
    State(webhooks): State<Arc<Webhooks>>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    webhooks.handle(&source, &headers, body).await
}

/// The body, refusing more than [`MAX_BODY_BYTES`] (by `Content-Length` before reading, and
/// while reading for chunked bodies).
async fn read_limited(headers: &HeaderMap, body: Body) -> Result<Vec<u8>, Rejection> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(Rejection::TooLarge);
    }
    let mut bytes = Vec::with_capacity(declared.map_or(1024, |l| l as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| Rejection::Unreadable)?;
        if bytes.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(Rejection::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

// ----- helpers shared by the sources' parsers ---------------------------------------------

/// The body as a JSON object.
fn parse_object(body: &[u8]) -> Result<Value, EventError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| EventError::Malformed(format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(EventError::Malformed(
            "the body must be a JSON object".into(),
        ));
    }
    Ok(value)
}

/// A string field that says which event this is (`type`, `event`), before the rest is read.
fn discriminator<'a>(value: &'a Value, path: &[&str]) -> Result<&'a str, EventError> {
    path.iter()
        .try_fold(value, |value, key| value.get(key))
        .and_then(Value::as_str)
        .ok_or_else(|| EventError::Malformed(format!("missing string field `{}`", path.join("."))))
}

/// Reads `value` (the part at `context`, `""` for the whole body) into a typed shape.
fn decode<T: DeserializeOwned>(value: Value, context: &str) -> Result<T, EventError> {
    serde_json::from_value(value).map_err(|e| {
        EventError::Malformed(if context.is_empty() {
            e.to_string()
        } else {
            format!("{context}: {e}")
        })
    })
}

/// The event id `<source>:<upstream id>`; the upstream id must be 1 to 128 characters of
/// letters, digits and `-_.:`.
fn event_id(source: Source, field: &str, raw: &str) -> Result<String, EventError> {
    let valid = !raw.is_empty()
        && raw.len() <= MAX_EVENT_ID_LEN
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if !valid {
        return Err(EventError::Malformed(format!(
            "`{field}` must be 1 to {MAX_EVENT_ID_LEN} letters, digits, `-`, `_`, `.` or `:`"
        )));
    }
    Ok(format!("{source}:{raw}"))
}

/// An id checked like every id at Switchyard's edge (`resolvers::ids`).
fn checked_id<T>(
    field: &str,
    raw: &str,
    parse: impl Fn(&str) -> Result<T, GraphError>,
) -> Result<T, EventError> {
    parse(raw).map_err(|_| {
        EventError::Malformed(format!(
            "`{field}` is not a valid id: `{}` (letters, digits, `-`, `_`, at most 64)",
            clip(raw)
        ))
    })
}

/// A status, name or user id that goes into a summary or an audience: 1 to 64 letters,
/// digits, spaces and `_-.@:`.
fn label<'a>(field: &str, raw: &'a str) -> Result<&'a str, EventError> {
    let valid = !raw.trim().is_empty()
        && raw.len() <= MAX_LABEL_LEN
        && raw
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | ':' | ' '));
    if valid {
        Ok(raw)
    } else {
        Err(EventError::Malformed(format!(
            "`{field}` must be 1 to {MAX_LABEL_LEN} letters, digits, spaces or `_-.@:`"
        )))
    }
}

/// A time given in epoch milliseconds.
fn from_millis(field: &str, millis: i64) -> Result<DateTime<Utc>, EventError> {
    Utc.timestamp_millis_opt(millis)
        .single()
        .ok_or_else(|| EventError::Malformed(format!("`{field}` is not a valid epoch time in ms")))
}

/// Names the supported types in an `UNSUPPORTED_EVENT` message.
fn unsupported(what: &str, value: &str, supported: &[&str]) -> EventError {
    EventError::Unsupported(format!(
        "unsupported {what} `{}`; supported: {}",
        clip(value),
        supported.join(", ")
    ))
}

/// Keeps echoed input short.
fn clip(text: &str) -> String {
    const MAX: usize = 64;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        text.chars().take(MAX).chain(['…']).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use crate::events::BusError;
    use async_trait::async_trait;

    use super::*;

    /// A bus that remembers ids (dedup) and can be switched off.
    #[derive(Default)]
    struct FakeBus {
        seen: Mutex<Vec<String>>,
        down: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl EventBus for FakeBus {
        async fn publish(&self, event: &DomainEvent) -> Result<bool, BusError> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(BusError::Unavailable("test".into()));
            }
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.contains(&event.id) {
                return Ok(false);
            }
            seen.push(event.id.clone());
            Ok(true)
        }
    }

    const SECRET: &str = "backend-test-secret";

    fn webhooks(bus: Arc<FakeBus>) -> Webhooks {
        let config = WebhooksConfig {
            backend_secret: Some(Secret::new(SECRET)),
            ..WebhooksConfig::default()
        };
        Webhooks::new(&config, bus).unwrap()
    }

    fn signed(body: &str, at: i64) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            signature::TIMESTAMP_HEADER,
            HeaderValue::from_str(&at.to_string()).unwrap(),
        );
        headers.insert(
            signature::SIGNATURE_HEADER,
            HeaderValue::from_str(&signature::sign(SECRET.as_bytes(), at, body.as_bytes()))
                .unwrap(),
        );
        headers
    }

    async fn call(
        webhooks: &Webhooks,
        source: &str,
        headers: HeaderMap,
        body: &str,
    ) -> (u16, Value) {
        let response = webhooks
            .handle(source, &headers, Body::from(body.to_owned()))
            .await;
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    const ORDER: &str = r#"{"id":"evt_1","type":"order.status_changed","occurredAt":"2026-01-01T10:00:00Z","data":{"orderId":"ord-000123","customerId":"cust-0001","status":"SHIPPED"}}"#;

    #[tokio::test]
    async fn accepts_then_absorbs_a_redelivery() {
        let bus = Arc::new(FakeBus::default());
        let webhooks = webhooks(bus.clone());
        let now = Utc::now().timestamp();
        let first = call(&webhooks, "backend", signed(ORDER, now), ORDER).await;
        assert_eq!(
            first,
            (
                202,
                json!({"accepted": true, "duplicate": false, "eventId": "backend:evt_1"})
            )
        );
        let again = call(&webhooks, "backend", signed(ORDER, now + 1), ORDER).await;
        assert_eq!(
            again,
            (
                200,
                json!({"accepted": true, "duplicate": true, "eventId": "backend:evt_1"})
            )
        );
        assert_eq!(*bus.seen.lock().unwrap(), ["backend:evt_1"]);
    }

    #[tokio::test]
    async fn refuses_with_the_documented_codes() {
        let bus = Arc::new(FakeBus::default());
        let webhooks = webhooks(bus.clone());
        let now = Utc::now().timestamp();
        let code = |answer: (u16, Value)| {
            (
                answer.0,
                answer.1["error"]["code"].as_str().unwrap_or("").to_owned(),
            )
        };

        // A source without a secret is off.
        let answer = call(&webhooks, "crm", signed(ORDER, now), ORDER).await;
        assert_eq!(code(answer), (404, "UNKNOWN_SOURCE".into()));
        let answer = call(&webhooks, "erp", signed(ORDER, now), ORDER).await;
        assert_eq!(code(answer), (404, "UNKNOWN_SOURCE".into()));

        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_BODY_BYTES));
        let answer = call(&webhooks, "backend", signed(&big, now), &big).await;
        assert_eq!(code(answer), (413, "PAYLOAD_TOO_LARGE".into()));

        let answer = call(&webhooks, "backend", HeaderMap::new(), ORDER).await;
        assert_eq!(code(answer), (401, "BAD_SIGNATURE".into()));
        let tampered = ORDER.replace("SHIPPED", "DELIVERED");
        let answer = call(&webhooks, "backend", signed(ORDER, now), &tampered).await;
        assert_eq!(code(answer), (401, "BAD_SIGNATURE".into()));
        let answer = call(&webhooks, "backend", signed(ORDER, now - 301), ORDER).await;
        assert_eq!(code(answer), (401, "STALE_TIMESTAMP".into()));

        let answer = call(&webhooks, "backend", signed("{", now), "{").await;
        assert_eq!(code(answer), (400, "MALFORMED_EVENT".into()));
        let other = ORDER.replace("order.status_changed", "customer.updated");
        let answer = call(&webhooks, "backend", signed(&other, now), &other).await;
        assert_eq!(code(answer.clone()), (400, "UNSUPPORTED_EVENT".into()));
        assert_eq!(
            answer.1["error"]["message"],
            "unsupported event type `customer.updated`; supported: order.status_changed, product.updated"
        );
        assert!(bus.seen.lock().unwrap().is_empty());

        bus.down.store(true, std::sync::atomic::Ordering::SeqCst);
        let response = webhooks
            .handle("backend", &signed(ORDER, now), Body::from(ORDER))
            .await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    }

    #[test]
    fn refuses_a_config_that_can_never_verify() {
        let bus: Arc<dyn EventBus> = Arc::new(FakeBus::default());
        let zero = WebhooksConfig {
            tolerance_secs: 0,
            ..WebhooksConfig::default()
        };
        assert_eq!(
            Webhooks::new(&zero, bus.clone()).unwrap_err().to_string(),
            "webhooks.tolerance_secs must be at least 1"
        );
        let empty = WebhooksConfig {
            crm_secret: Some(Secret::new("")),
            ..WebhooksConfig::default()
        };
        assert_eq!(
            Webhooks::new(&empty, bus).unwrap_err().to_string(),
            "webhooks.crm_secret is empty"
        );
    }

    #[test]
    fn helpers_check_what_reaches_the_bus() {
        assert_eq!(
            event_id(Source::Crm, "EventUuid", "a-1.b:c_2"),
            Ok("crm:a-1.b:c_2".into())
        );
        assert!(event_id(Source::Crm, "EventUuid", "").is_err());
        assert!(event_id(Source::Crm, "EventUuid", "a b").is_err());
        assert!(event_id(Source::Crm, "EventUuid", &"a".repeat(129)).is_err());
        assert_eq!(label("status", "OUT_FOR_DELIVERY"), Ok("OUT_FOR_DELIVERY"));
        assert!(label("status", "<script>").is_err());
        assert!(label("status", " ").is_err());
        assert_eq!(
            from_millis("timestamp", 1_767_225_600_000)
                .unwrap()
                .to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        assert_eq!(clip(&"é".repeat(70)).chars().count(), 65);
    }
}
