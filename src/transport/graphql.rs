//! GraphQL over HTTP, as the GraphQL-over-HTTP spec says.
//!
//! - `POST /graphql` with `Content-Type: application/json` (415 otherwise), one operation per
//!   request (batches are refused with 400).
//! - `GET /graphql?query=...&variables=...&operationName=...` for queries; a mutation over GET
//!   is 405 with `Allow: POST`.
//! - The answer is `application/graphql-response+json` unless the client accepts only
//!   `application/json` (406 when it accepts neither). With `application/graphql-response+json`,
//!   a request error (unparsable or invalid document, unknown operation: no `data`) is 400;
//!   with `application/json` it is 200, as the spec says for legacy clients.
//! - A bearer token that does not validate is 401 with `WWW-Authenticate`, before anything
//!   runs; no token at all runs anonymously, and fields that need a user answer
//!   `UNAUTHENTICATED`.
//! - Every error carries `extensions.code`.

use std::time::Instant;

use async_graphql::parser::types::OperationType;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ws::common::add_missing_codes;
use super::{AppState, document};
use crate::auth::AuthError;

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

/// Which media type the answer is in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MediaType {
    GraphQlResponse,
    Json,
}

impl MediaType {
    fn as_str(self) -> &'static str {
        match self {
            MediaType::GraphQlResponse => GRAPHQL_RESPONSE,
            MediaType::Json => JSON,
        }
    }

    /// Picks from the `Accept` header: `application/graphql-response+json` preferred.
    fn negotiate(headers: &HeaderMap) -> Option<MediaType> {
        let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
            return Some(MediaType::GraphQlResponse);
        };
        let mut json = false;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let refused = parts.any(|p| p.trim().replace(' ', "") == "q=0");
            if refused {
                continue;
            }
            match media.as_str() {
                GRAPHQL_RESPONSE | "*/*" | "application/*" => {
                    return Some(MediaType::GraphQlResponse);
                }
                JSON => json = true,
                _ => {}
            }
        }
        json.then_some(MediaType::Json)
    }
}

/// An error answered before the operation runs, in the GraphQL response shape.
pub(crate) fn request_error(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
) -> Response {
    let body = json!({"errors": [{"message": message.into(), "extensions": {"code": code}}]});
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(GRAPHQL_RESPONSE),
        )],
        body.to_string(),
    )
        .into_response()
}

/// `GET /graphql`.
pub(super) async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let request = match async_graphql::http::parse_query_string(&query) {
        // async-graphql reads `operation_name`; the GraphQL-over-HTTP spec says `operationName`.
        Ok(r) => match url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "operationName")
        {
            Some((_, name)) => r.operation_name(name.into_owned()),
            None => r,
        },
        Err(e) => {
            return request_error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                format!("could not read the query string: {e}"),
            );
        }
    };
    execute(state, Method::GET, headers, request).await
}

/// `POST /graphql`.
pub(super) async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case(JSON) {
        return request_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the GraphQL request as `Content-Type: application/json`",
        );
    }
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return request_error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                format!("the body is not valid JSON: {e}"),
            );
        }
    };
    if value.is_array() {
        return request_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "batched requests are not supported: send one operation per request",
        );
    }
    let request = match serde_json::from_value::<async_graphql::Request>(value) {
        Ok(r) => r,
        Err(e) => {
            return request_error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                format!("not a GraphQL request (`query`, `variables`, `operationName`): {e}"),
            );
        }
    };
    execute(state, Method::POST, headers, request).await
}

async fn execute(
    state: AppState,
    method: Method,
    headers: HeaderMap,
    mut request: async_graphql::Request,
) -> Response {
    let Some(media) = MediaType::negotiate(&headers) else {
        return request_error(
            StatusCode::NOT_ACCEPTABLE,
            "NOT_ACCEPTABLE",
            "accept application/graphql-response+json or application/json",
        );
    };
    if request.query.trim().is_empty() {
        return request_error(StatusCode::BAD_REQUEST, "BAD_REQUEST", "`query` is missing");
    }
    // Parsed once: the request keeps the document for execution, we keep a copy to classify
    // the operation and to order its result.
    let parsed = request.parsed_query().ok().cloned();
    let op = parsed.as_ref().and_then(|doc| {
        Some((
            doc,
            document::operation(doc, request.operation_name.as_deref())?,
        ))
    });
    let read_only = op.is_none_or(|(_, op)| op.ty == OperationType::Query);
    let introspection = op.is_some_and(|(doc, op)| document::is_introspection_only(doc, op));
    if introspection && op.is_some_and(|(doc, op)| document::introspection_too_nested(doc, op)) {
        return request_error(
            StatusCode::BAD_REQUEST,
            "GRAPHQL_VALIDATION_FAILED",
            "introspection nests `fields`, `inputFields`, `interfaces` or `possibleTypes` too deeply",
        );
    }
    // A document that does not parse reaches execution, which reports the syntax error.
    if method == Method::GET && !read_only {
        let mut response = request_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "mutations must be sent with POST",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let viewer = match bearer(&headers) {
        Ok(None) => None,
        Ok(Some(token)) => match state.auth.authenticate(token).await {
            Ok(session) => Some(session.viewer),
            Err(e) => return auth_failure(&e),
        },
        Err(message) => return auth_failure(&AuthError::InvalidToken(message.to_owned())),
    };
    let operation = request.operation_name.clone();
    let user = viewer.as_ref().map(|v| v.user_id.clone());
    let request = resolvers::request_data(request, &state.ports, viewer);
    let started = Instant::now();
    let schema = if introspection {
        &state.introspection_schema
    } else {
        &state.schema
    };
    let executed = tokio::time::timeout(state.request_timeout, schema.execute(request)).await;
    let Ok(mut response) = executed else {
        tracing::warn!(
            ?operation,
            timeout_ms = state.request_timeout.as_millis() as u64,
            "request timed out"
        );
        return request_error(
            StatusCode::GATEWAY_TIMEOUT,
            "TIMEOUT",
            "the request took too long and was stopped",
        );
    };
    if let Some((doc, op)) = op {
        document::in_query_order(&mut response.data, doc, op);
    }
    // A request error (the document did not parse or validate) has no data and no error with
    // a path; an execution error that nulled the whole result still has a path.
    let request_failed = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    tracing::info!(
        ?operation,
        user = user.as_deref(),
        errors = response.errors.len(),
        ms = started.elapsed().as_millis() as u64,
        "graphql request"
    );
    let mut body = match serde_json::to_value(&response) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "could not serialize a response");
            return request_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "internal error",
            );
        }
    };
    if request_failed && let Some(obj) = body.as_object_mut() {
        obj.remove("data");
    }
    if let Some(errors) = body.get_mut("errors") {
        let default = if request_failed {
            "GRAPHQL_VALIDATION_FAILED"
        } else {
            "INTERNAL"
        };
        add_missing_codes(errors, default);
    }
    let status = if request_failed && media == MediaType::GraphQlResponse {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(media.as_str()),
        )],
        body.to_string(),
    )
        .into_response()
}

/// The bearer token, if any; `Err` for an `Authorization` header that is not a bearer token.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<Option<&str>, &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| "the Authorization header is not text")?;
    bearer_value(value).map(Some)
}

/// The token of an `Authorization` value (`Bearer <token>`), as headers and websocket
/// `connection_init` payloads carry it.
pub(crate) fn bearer_value(value: &str) -> Result<&str, &'static str> {
    let (scheme, token) = value
        .split_once(' ')
        .ok_or("use `Authorization: Bearer <token>`")?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err("use `Authorization: Bearer <token>`");
    }
    Ok(token.trim())
}

fn auth_failure(error: &AuthError) -> Response {
    let (status, challenge) = match error {
        AuthError::InvalidToken(_) => (StatusCode::UNAUTHORIZED, "Bearer error=\"invalid_token\""),
        AuthError::KeysUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "Bearer"),
    };
    let code = match error {
        AuthError::InvalidToken(_) => "UNAUTHENTICATED",
        AuthError::KeysUnavailable => "AUTH_UNAVAILABLE",
    };
    let mut response = request_error(status, code, error.to_string());
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn negotiates_the_media_type() {
        assert!(MediaType::negotiate(&HeaderMap::new()) == Some(MediaType::GraphQlResponse));
        assert!(MediaType::negotiate(&accept("application/json")) == Some(MediaType::Json));
        assert!(
            MediaType::negotiate(&accept(
                "application/graphql-response+json, application/json;q=0.9"
            )) == Some(MediaType::GraphQlResponse)
        );
        assert!(MediaType::negotiate(&accept("*/*")) == Some(MediaType::GraphQlResponse));
        assert!(MediaType::negotiate(&accept("text/html")).is_none());
    }

    #[test]
    fn finds_operations_by_name() {
        let doc = async_graphql::parser::parse_query(
            "query A { me { id } } mutation B { cancelOrder(id: \"x\") { id } }",
        )
        .unwrap();
        assert_eq!(
            document::operation(&doc, Some("A")).unwrap().ty,
            OperationType::Query
        );
        assert_eq!(
            document::operation(&doc, Some("B")).unwrap().ty,
            OperationType::Mutation
        );
        assert!(document::operation(&doc, Some("C")).is_none());
    }
}
