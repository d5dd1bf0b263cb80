//! GraphQL over HTTP, as the GraphQL-over-HTTP spec says.
//!
//! - `POST /graphql` with `Content-Type: application/json` (415 otherwise), one operation per
//!   request (batches are refused with 400); bodies over `server.max_body_bytes` are 413.
//! - `GET /graphql?query=...&variables=...&operationName=...` for queries; a mutation over GET
//!   is 405 with `Allow: POST`.
//! - The answer is `application/graphql-response+json` unless the client accepts only
//!   `application/json` (406 when it accepts neither). With `application/graphql-response+json`,
//!   a request error (unparsable or invalid document, unknown operation, a missing variable:
//!   no `data`) is 400; with `application/json` it is 200, as the spec says for legacy clients.
//! - A bearer token that does not validate is 401 with `WWW-Authenticate`, before anything
//!   runs; no token at all runs anonymously, and fields that need a user answer
//!   `UNAUTHENTICATED`.
//! - Past `server.request_timeout_ms` the operation is stopped: 504.
//!
//! Everything between reading the request and writing the result is the pipeline's.

use std::time::Instant;

use async_graphql::parser::types::OperationType;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::{GRAPHQL_RESPONSE, TransportError};
use super::pipeline;
use super::request::{GraphQlRequest, bearer, negotiate};
use super::shape::Outcome;

/// What `/graphql` answers with, in order of preference.
const MEDIA_TYPES: [&str; 2] = [GRAPHQL_RESPONSE, "application/json"];

/// `GET /graphql`.
pub(super) async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let request = GraphQlRequest::from_query_string(query.as_deref().unwrap_or(""));
    answer(&state, Method::GET, &headers, request).await
}

/// `POST /graphql`.
pub(super) async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request = GraphQlRequest::from_body(&headers, body, state.max_body_bytes);
    answer(&state, Method::POST, &headers, request).await
}

async fn answer(
    state: &AppState,
    method: Method,
    headers: &HeaderMap,
    request: Result<GraphQlRequest, TransportError>,
) -> Response {
    let Some(media) = negotiate(headers, &MEDIA_TYPES) else {
        return TransportError::NotAcceptable(
            "application/graphql-response+json or application/json",
        )
        .into_response();
    };
    match run(state, method, headers, request).await {
        Ok(outcome) => {
            let status = match &outcome {
                Outcome::RequestError(_) if media == GRAPHQL_RESPONSE => StatusCode::BAD_REQUEST,
                _ => StatusCode::OK,
            };
            (
                status,
                [(header::CONTENT_TYPE, HeaderValue::from_static(media))],
                outcome.to_json(),
            )
                .into_response()
        }
        Err(e) if e.is_request_error() && media != GRAPHQL_RESPONSE => {
            e.response_with(StatusCode::OK, media)
        }
        Err(e) => e.response_with(e.status(), media),
    }
}

async fn run(
    state: &AppState,
    method: Method,
    headers: &HeaderMap,
    request: Result<GraphQlRequest, TransportError>,
) -> Result<Outcome, TransportError> {
    let prepared = pipeline::prepare(request?)?;
    match prepared.kind() {
        OperationType::Subscription => {
            return Err(TransportError::BadRequest(
                "subscriptions run over websockets (/graphql/ws) or Server-Sent Events \
                 (/graphql/stream)"
                    .into(),
            ));
        }
        OperationType::Mutation if method == Method::GET => {
            return Err(TransportError::MethodNotAllowed);
        }
        _ => {}
    }
    let token = bearer(headers)?;
    let operation = prepared.name().map(str::to_owned);
    let started = Instant::now();
    // The deadline covers authentication too: a slow identity provider is a slow request.
    let work = async {
        let viewer = match token {
            Some(token) => Some(state.auth.authenticate(token).await?.viewer),
            None => None,
        };
        let user = viewer.as_ref().map(|v| v.user_id.clone());
        Ok::<_, TransportError>((prepared.execute(state, viewer).await, user))
    };
    let Ok(done) = tokio::time::timeout(state.request_timeout, work).await else {
        tracing::warn!(
            ?operation,
            timeout_ms = state.request_timeout.as_millis() as u64,
            "request timed out"
        );
        return Err(TransportError::Timeout);
    };
    let (outcome, user) = done?;
    tracing::info!(
        ?operation,
        user = user.as_deref(),
        errors = outcome.error_count(),
        ms = started.elapsed().as_millis() as u64,
        "graphql request"
    );
    Ok(outcome)
}
