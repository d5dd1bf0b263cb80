//! Subscriptions over websockets (being written).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// `GET /graphql/ws`.
pub(super) async fn handler() -> Response {
    StatusCode::NOT_IMPLEMENTED.into_response()
}
