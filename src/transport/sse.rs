//! Subscriptions over Server-Sent Events (being written).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// `GET|POST /graphql/stream`.
pub(super) async fn handler() -> Response {
    StatusCode::NOT_IMPLEMENTED.into_response()
}
