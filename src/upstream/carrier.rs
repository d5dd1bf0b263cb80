//! The parcel carrier's tracking API (a third party): one parcel per call, rate limited.
//!
//! `X-Api-Key` auth; `GET /v1/trackings/{trackingNumber}` (the number percent-encoded as one
//! path segment); 404 is an unknown parcel (`None`). The carrier rate limits with 429 and
//! `Retry-After: <seconds>`: a wait of at most `max_retry_after_secs` is waited out once and the
//! call repeated; a longer one, or a second 429, is `RateLimited`. The concurrency budget of the
//! policy bounds the fan-out of the tracking loader, since there is no bulk read.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, RETRY_AFTER};
use resolvers::ports::Source;
use resolvers::ports::{Carrier, UpstreamResult};
use resolvers::ports::{UpstreamError, UpstreamErrorKind};
use resolvers::records::{ShipmentStatus, TrackingEventRecord, TrackingRecord};
use serde::Deserialize;
use url::Url;

use super::http::{Answer, UpstreamHttp, check_base_url, endpoint};
use crate::config::{CarrierConfig, Secret};

/// The carrier's client.
pub(crate) struct CarrierClient {
    pub(super) http: UpstreamHttp,
    base: Url,
    /// Sent as `X-Api-Key`.
    api_key: Secret,
    /// Longest `Retry-After` waited out (once) before a 429 is given up on.
    max_retry_after: Duration,
}

impl std::fmt::Debug for CarrierClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CarrierClient")
            .field("base", &self.base.as_str())
            .field("max_retry_after", &self.max_retry_after)
            .finish_non_exhaustive()
    }
}

impl CarrierClient {
    /// A client for the carrier at `config.url`.
    pub(super) fn new(config: &CarrierConfig) -> anyhow::Result<Self> {
        check_base_url("upstreams.carrier.url", &config.url)?;
        Ok(Self {
            http: UpstreamHttp::new(Source::Carrier, &config.policy)?,
            base: config.url.clone(),
            api_key: config.api_key.clone(),
            max_retry_after: Duration::from_secs(config.max_retry_after_secs),
        })
    }

    async fn fetch(&self, url: &Url) -> UpstreamResult<Answer> {
        let request = self
            .http
            .client()
            .get(url.clone())
            .header("x-api-key", self.api_key.expose())
            .header(ACCEPT, "application/json");
        self.http
            .send("/v1/trackings/{trackingNumber}", request)
            .await
    }
}

#[async_trait::async_trait]
impl Carrier for CarrierClient {
    async fn track(&self, tracking_number: &str) -> UpstreamResult<Option<TrackingRecord>> {
        if tracking_number.trim().is_empty() {
            return Ok(None);
        }
        let url = endpoint(&self.base, &["v1", "trackings", tracking_number]);
        let mut answer = self.fetch(&url).await?;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            let wait = retry_after(&answer);
            match wait.filter(|wait| *wait <= self.max_retry_after) {
                Some(wait) => {
                    tracing::debug!(
                        upstream = "carrier",
                        wait_ms = wait.as_millis() as u64,
                        "rate limited; waiting as asked"
                    );
                    tokio::time::sleep(wait).await;
                    answer = self.fetch(&url).await?;
                }
                None => return Err(rate_limited(wait)),
            }
        }
        match answer.status {
            StatusCode::OK => {
                let tracking: TrackingJson = answer.json()?;
                tracking_record(tracking)
                    .map(Some)
                    .map_err(|why| answer.malformed(why))
            }
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::TOO_MANY_REQUESTS => Err(rate_limited(retry_after(&answer))),
            // 401 (our key refused), 400 (a number the carrier calls malformed), ...
            _ => Err(answer.unexpected()),
        }
    }
}

/// `Retry-After` in seconds (the carrier does not send HTTP dates).
fn retry_after(answer: &Answer) -> Option<Duration> {
    answer
        .header(RETRY_AFTER.as_str())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn rate_limited(wait: Option<Duration>) -> UpstreamError {
    let detail = match wait {
        Some(wait) => format!("carrier answered 429, Retry-After {} s", wait.as_secs()),
        None => "carrier answered 429 without a usable Retry-After".to_owned(),
    };
    UpstreamError {
        source: Source::Carrier,
        kind: UpstreamErrorKind::RateLimited { detail },
    }
}

// ----- wire types (the carrier's JSON) --------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TrackingJson {
    tracking_number: String,
    carrier: String,
    status: ShipmentStatus,
    estimated_delivery: Option<DateTime<Utc>>,
    events: Vec<EventJson>,
}

#[derive(Deserialize)]
struct EventJson {
    timestamp: DateTime<Utc>,
    location: String,
    status: ShipmentStatus,
    description: String,
}

fn tracking_record(t: TrackingJson) -> Result<TrackingRecord, String> {
    if t.tracking_number.trim().is_empty() {
        return Err("trackingNumber is empty".to_owned());
    }
    Ok(TrackingRecord {
        tracking_number: t.tracking_number,
        carrier: t.carrier,
        status: t.status,
        estimated_delivery: t.estimated_delivery,
        events: t
            .events
            .into_iter()
            .map(|e| TrackingEventRecord {
                timestamp: e.timestamp,
                location: e.location,
                status: e.status,
                description: e.description,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_parses_and_rejects_unknown_statuses() {
        let json = serde_json::json!({
            "trackingNumber": "PC100000001", "carrier": "PARCELCO", "status": "IN_TRANSIT",
            "estimatedDelivery": "2024-05-03T18:00:00Z",
            "events": [{"timestamp": "2024-05-02T14:00:00Z", "location": "Hub, Paris, FR",
                        "status": "IN_TRANSIT", "description": "Arrived at sorting hub"}]
        });
        let record = tracking_record(serde_json::from_value(json.clone()).unwrap()).unwrap();
        assert_eq!(record.status, ShipmentStatus::InTransit);
        assert_eq!(record.events.len(), 1);

        let mut lost = json;
        lost["status"] = "LOST".into();
        assert!(serde_json::from_value::<TrackingJson>(lost).is_err());
    }
}
