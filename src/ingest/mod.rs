//! Webhooks in: verified, normalized into domain events, published on the event bus
//! (being written).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use resolvers::events::EventBus;

use crate::config::WebhooksConfig;
use crate::transport::AppState;

/// Receives the upstreams' webhooks.
pub struct Webhooks {
    /// Where accepted events go.
    #[allow(dead_code)]
    bus: Arc<dyn EventBus>,
}

impl Webhooks {
    /// Webhook reception with these secrets, publishing to `bus`.
    pub fn new(_config: &WebhooksConfig, bus: Arc<dyn EventBus>) -> anyhow::Result<Self> {
        Ok(Self { bus })
    }
}

/// `POST /webhooks/{source}`.
pub async fn receive(
    State(_state): State<AppState>,
    Path(_source): Path<String>,
    _headers: HeaderMap,
    _body: Bytes,
) -> Response {
    StatusCode::NOT_IMPLEMENTED.into_response()
}
