//! `GET /healthz` (alive: the process answers) and `GET /readyz` (ready to take traffic),
//! with a JSON body saying what is degraded.
//!
//! Ready means: the identity provider's keys are loaded (fetched now if they are not yet),
//! and the backend's circuit breaker is closed (without the backend no screen works). An
//! open breaker on the CRM, the process server or the carrier is reported as degraded but
//! keeps the replica ready: the graph answers without them, with those fields `null` and
//! `UPSTREAM_UNAVAILABLE`. A configured Redis that does not answer `PING` within a second is
//! degraded too, not unready: queries go on without it (cache misses, documents registered
//! again), webhooks are refused with 503 so their senders deliver them again, and it is used
//! again when it answers. Every replica shares that Redis, so failing them all would turn a
//! degraded service into none. Not ready is 503, so that a load balancer or Kubernetes sends
//! traffic to other replicas.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::AppState;
use crate::config::{Config, Secret};
use crate::upstream::UpstreamHealth;

/// Longest a Redis `PING` may take.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// The upstream the graph cannot answer without.
const REQUIRED_UPSTREAM: &str = "backend";

/// What readiness checks, built once at start-up.
pub(crate) struct Readiness {
    upstreams: UpstreamHealth,
    /// Each distinct Redis URL of the config, with the features using it.
    redis: Vec<(String, redis::Client)>,
}

impl Readiness {
    pub(crate) fn new(config: &Config, upstreams: UpstreamHealth) -> anyhow::Result<Self> {
        let urls: [(&str, &Option<Secret>); 6] = [
            ("events", &config.events.redis_url),
            ("cache", &config.cache.redis_url),
            ("notifications", &config.notifications.redis_url),
            ("outbox", &config.outbox.redis_url),
            ("persisted_queries", &config.persisted_queries.redis_url),
            ("rate_limit", &config.rate_limit.redis_url),
        ];
        let mut redis: Vec<(String, String, redis::Client)> = Vec::new();
        for (feature, url) in urls {
            let Some(url) = url else { continue };
            match redis.iter_mut().find(|(known, _, _)| known == url.expose()) {
                Some((_, features, _)) => {
                    features.push(',');
                    features.push_str(feature);
                }
                None => redis.push((
                    url.expose().to_owned(),
                    feature.to_owned(),
                    redis::Client::open(url.expose())?,
                )),
            }
        }
        Ok(Self {
            upstreams,
            redis: redis
                .into_iter()
                .map(|(_, features, client)| (features, client))
                .collect(),
        })
    }
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    crate::metrics::scrape(crate::metrics::Own {
        open: &state.readiness.upstreams.open(),
        hub_subscriptions: state.hub.subscriptions(),
        shared_views: state.views.len(),
    })
}

/// `GET /readyz`.
pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    let readiness = &state.readiness;
    let mut ready = true;
    let mut degraded = Vec::new();

    let keys = state.auth.keys_ready().await;
    if !keys {
        ready = false;
        degraded.push("identity_provider".to_owned());
    }

    let mut redis = Map::new();
    for (features, client) in &readiness.redis {
        let answer = tokio::time::timeout(PING_TIMEOUT, async {
            let mut connection = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        })
        .await;
        let status = match answer {
            Ok(Ok(_)) => "ok".to_owned(),
            Ok(Err(e)) => format!("unreachable: {e}"),
            Err(_) => format!("no answer within {} ms", PING_TIMEOUT.as_millis()),
        };
        if status != "ok" {
            tracing::warn!(features = %features, %status, "readiness: Redis is degraded");
            degraded.push(format!("redis({features})"));
        }
        redis.insert(features.clone(), Value::String(status));
    }

    let open = readiness.upstreams.open();
    let mut breakers = Map::new();
    for source in ["backend", "crm", "process", "carrier"] {
        let is_open = open.contains(&source);
        if is_open {
            degraded.push(format!("upstream({source})"));
            if source == REQUIRED_UPSTREAM {
                ready = false;
            }
        }
        breakers.insert(
            source.to_owned(),
            Value::String(if is_open { "open" } else { "closed" }.to_owned()),
        );
    }

    let body = json!({
        "ready": ready,
        "degraded": degraded,
        "checks": {
            "identity_provider": if keys { "keys loaded" } else { "keys not loaded" },
            "redis": redis,
            "breakers": breakers,
        },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
