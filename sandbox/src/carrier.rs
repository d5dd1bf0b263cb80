//! The parcel carrier's tracking API (ParcelCo), a typical third party.
//!
//! One parcel per request (`GET /v1/trackings/{trackingNumber}`), an `X-Api-Key` header, and a
//! rate limit: a token bucket that holds one second's worth of requests
//! (`carrier_rate_per_sec`) and refills continuously; an empty bucket answers 429
//! `{"error":"rate_limited"}` with `Retry-After` in whole seconds. Only requests with a valid
//! key take from the bucket. Errors are `{"error","message"?}`.

use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tokio::time::Instant;

use super::SandboxConfig;
use super::world::{CARRIER_NAME, Parcel, SharedWorld};

/// Longest tracking number the carrier accepts.
const MAX_TRACKING_NUMBER_CHARS: usize = 40;

/// A token bucket: `capacity` tokens, refilled at `rate` per second.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn new(rate_per_sec: u32) -> Self {
        let rate = f64::from(rate_per_sec);
        Self {
            rate,
            capacity: rate.max(1.0),
            tokens: rate.max(1.0),
            refilled: Instant::now(),
        }
    }

    /// Takes a token, or says how many whole seconds until one is there.
    fn take(&mut self, now: Instant) -> Result<(), u64> {
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - self.tokens) / self.rate;
        Err((wait.ceil() as u64).max(1))
    }
}

struct CarrierState {
    world: SharedWorld,
    api_key: String,
    /// `None` when the rate is 0 (unlimited). A plain mutex: a take is a few float operations.
    bucket: Option<Mutex<TokenBucket>>,
}

/// The carrier's routes, behind its API key and rate limit.
pub(crate) fn router(world: SharedWorld, config: &SandboxConfig) -> Router {
    let state = Arc::new(CarrierState {
        world,
        api_key: config.carrier_api_key.clone(),
        bucket: (config.carrier_rate_per_sec > 0)
            .then(|| Mutex::new(TokenBucket::new(config.carrier_rate_per_sec))),
    });
    Router::new()
        .route("/v1/trackings/{tracking_number}", get(tracking))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            key_and_rate_limit,
        ))
        .fallback(|| async {
            carrier_error(
                StatusCode::NOT_FOUND,
                "not_found",
                Some("no such endpoint".to_owned()),
            )
        })
        .with_state(state)
}

fn carrier_error(status: StatusCode, error: &str, message: Option<String>) -> Response {
    let body = match message {
        Some(message) => serde_json::json!({"error": error, "message": message}),
        None => serde_json::json!({"error": error}),
    };
    (status, Json(body)).into_response()
}

async fn key_and_rate_limit(
    State(state): State<Arc<CarrierState>>,
    request: Request,
    next: Next,
) -> Response {
    let key = request
        .headers()
        .get("x-api-key")
        .and_then(|value| value.to_str().ok());
    if key != Some(state.api_key.as_str()) {
        return carrier_error(StatusCode::UNAUTHORIZED, "invalid_api_key", None);
    }
    if let Some(bucket) = &state.bucket {
        let taken = bucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(Instant::now());
        if let Err(retry_after) = taken {
            let mut response = carrier_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", None);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            return response;
        }
    }
    next.run(request).await
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TrackingJson<'a> {
    tracking_number: &'a str,
    carrier: &'static str,
    status: &'static str,
    estimated_delivery: Option<String>,
    events: Vec<EventJson<'a>>,
}

#[derive(Serialize)]
struct EventJson<'a> {
    timestamp: String,
    location: &'a str,
    status: &'static str,
    description: &'a str,
}

fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl<'a> From<&'a Parcel> for TrackingJson<'a> {
    fn from(parcel: &'a Parcel) -> Self {
        Self {
            tracking_number: &parcel.tracking_number,
            carrier: CARRIER_NAME,
            status: parcel.status.as_str(),
            estimated_delivery: parcel.estimated_delivery.map(timestamp),
            events: parcel
                .events
                .iter()
                .rev()
                .map(|event| EventJson {
                    timestamp: timestamp(event.timestamp),
                    location: &event.location,
                    status: event.status.as_str(),
                    description: &event.description,
                })
                .collect(),
        }
    }
}

/// `GET /v1/trackings/{trackingNumber}`: the parcel and its scans, newest first.
async fn tracking(
    State(state): State<Arc<CarrierState>>,
    Path(tracking_number): Path<String>,
) -> Response {
    let well_formed = !tracking_number.is_empty()
        && tracking_number.len() <= MAX_TRACKING_NUMBER_CHARS
        && tracking_number.bytes().all(|b| b.is_ascii_alphanumeric());
    if !well_formed {
        return carrier_error(
            StatusCode::BAD_REQUEST,
            "invalid_tracking_number",
            Some(format!(
                "a tracking number is 1 to {MAX_TRACKING_NUMBER_CHARS} letters and digits"
            )),
        );
    }
    let world = state.world.read();
    match world.parcels.get(&tracking_number.to_ascii_uppercase()) {
        Some(parcel) => Json(TrackingJson::from(parcel)).into_response(),
        None => carrier_error(
            StatusCode::NOT_FOUND,
            "not_found",
            Some(format!("no parcel with tracking number {tracking_number}")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_bucket_holds_one_second_and_refills() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(2);
        assert_eq!(bucket.take(start), Ok(()));
        assert_eq!(bucket.take(start), Ok(()));
        assert_eq!(bucket.take(start), Err(1));
        assert_eq!(bucket.take(start + Duration::from_millis(500)), Ok(()));
        assert_eq!(bucket.take(start + Duration::from_millis(500)), Err(1));
    }

    #[test]
    fn a_slow_rate_asks_for_a_longer_wait() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1);
        assert_eq!(bucket.take(start), Ok(()));
        assert_eq!(bucket.take(start), Err(1));
        let mut fractional = TokenBucket {
            rate: 0.25,
            capacity: 1.0,
            tokens: 0.0,
            refilled: start,
        };
        assert_eq!(fractional.take(start), Err(4));
    }
}
