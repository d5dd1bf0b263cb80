//! What the two live transports share: the websockets of [`super`] and the Server-Sent Events
//! of `transport::sse`.
//!
//! - [`ConnectionSlot`]: the one place that counts open long-lived connections against
//!   `subscriptions.max_connections`.
//! - [`authenticate`]: a bearer token to a [`Session`] that has not expired yet.
//! - [`Operation`]: the GraphQL request a `subscribe`/`start` message or an SSE request carries.
//! - [`execute`]: runs it with fresh per-request data (loaders, viewer) for this one operation.
//! - [`Outcome`]: how the first result of an operation is reported: as a request error (the
//!   document did not parse or validate; nothing ran) or as an execution result, with an
//!   `extensions.code` on every error, as over HTTP.
//! - [`ConnectionLog`]: the open/close log lines (transport, user, duration, why it ended).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::auth::{AuthError, Session};
use crate::transport::graphql::request_error;
use crate::transport::{AppState, document};

/// Longest we wait for a `complete` or a close frame to be taken by a client while closing.
pub(in crate::transport) const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Seconds a client is asked to wait (`Retry-After`) when the instance is full.
const RETRY_AFTER_SECS: &str = "5";

/// Longest a session is timed: a token that claims to last longer is timed out after this
/// (and the client reconnects), which keeps deadlines far from any timer's range limit.
const LONGEST_SESSION: Duration = Duration::from_secs(7 * 24 * 3600);

/// One open websocket or SSE connection, counted in `AppState::open_connections` while it
/// lives (the count drops when the slot is dropped, however the connection ends).
pub(in crate::transport) struct ConnectionSlot {
    open: Arc<AtomicUsize>,
}

impl ConnectionSlot {
    /// A slot, or `None` when `max_connections` are open already.
    pub(in crate::transport) fn acquire(state: &AppState) -> Option<Self> {
        let max = state.subscriptions.max_connections;
        state
            .open_connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()?;
        Some(Self {
            open: state.open_connections.clone(),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `503` for a connection beyond `max_connections`.
pub(in crate::transport) fn too_many_connections() -> Response {
    let mut response = request_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "TOO_MANY_CONNECTIONS",
        "this instance has as many live connections as it takes: retry later",
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECS),
    );
    response
}

/// Why a token was not taken.
#[derive(Debug)]
pub(in crate::transport) enum Refusal {
    /// Malformed, forged, for someone else, or not a bearer token (the message says which;
    /// it is safe to show the client).
    Invalid(String),
    /// Valid, but its `exp` has passed.
    Expired,
    /// The identity provider's keys could not be read: not the client's fault.
    Unavailable,
}

/// The session of a bearer token that has not expired yet.
pub(in crate::transport) async fn authenticate(
    state: &AppState,
    token: &str,
) -> Result<Session, Refusal> {
    let session = state.auth.authenticate(token).await.map_err(|e| match e {
        AuthError::InvalidToken(_) => Refusal::Invalid(e.to_string()),
        AuthError::KeysUnavailable => Refusal::Unavailable,
    })?;
    // The validator tolerates some clock skew on `exp`; a live connection ends at `exp` itself.
    if time_left(&session).is_zero() {
        return Err(Refusal::Expired);
    }
    Ok(session)
}

/// How long the session's token is still valid.
fn time_left(session: &Session) -> Duration {
    session
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default()
}

/// When a connection of this session must end (the token's `exp`), on tokio's clock.
pub(in crate::transport) fn expiry(session: &Session) -> tokio::time::Instant {
    tokio::time::Instant::now() + time_left(session).min(LONGEST_SESSION)
}

/// Completes when the server starts shutting down (or is gone).
pub(in crate::transport) async fn shutting_down(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: the server is not running any more either.
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

/// A GraphQL request as a `subscribe` message's payload or an SSE request carries it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(in crate::transport) struct Operation {
    query: String,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<Map<String, Value>>,
    /// Passed on to the request (persisted queries and the like read it).
    #[serde(default)]
    extensions: Option<Map<String, Value>>,
}

impl Operation {
    /// Whether the document is empty (no `query` text at all).
    pub(in crate::transport) fn is_empty(&self) -> bool {
        self.query.trim().is_empty()
    }

    /// The request to execute.
    pub(in crate::transport) fn into_request(self) -> async_graphql::Request {
        let mut request = async_graphql::Request::new(self.query);
        if let Some(name) = self.operation_name {
            request = request.operation_name(name);
        }
        if let Some(variables) = self.variables {
            request = request.variables(async_graphql::Variables::from_json(Value::Object(
                variables,
            )));
        }
        if let Some(extensions) = self.extensions {
            // Any JSON object is a map of GraphQL values.
            request.extensions =
                serde_json::from_value(Value::Object(extensions)).unwrap_or_default();
        }
        request
    }
}

/// Runs one operation (a subscription, or a query or mutation: one result) for the session's
/// viewer, with data of its own: fresh loaders, never shared with another operation.
pub(in crate::transport) fn execute(
    state: &AppState,
    mut request: async_graphql::Request,
    session: &Session,
) -> BoxStream<'static, async_graphql::Response> {
    // Parsed once (or already, by the transport): execution takes the request's document, we
    // keep a copy to order each result.
    let doc = request.parsed_query().ok().cloned();
    let operation_name = request.operation_name.clone();
    let request = resolvers::request_data(request, &state.ports, Some(session.viewer.clone()));
    state
        .schema
        .execute_stream(request)
        .map(move |mut response| {
            if let Some(doc) = &doc
                && let Some(op) = document::operation(doc, operation_name.as_deref())
            {
                document::in_query_order(&mut response.data, doc, op);
            }
            response
        })
        .boxed()
}

/// How one result of an operation is reported.
pub(in crate::transport) enum Outcome {
    /// The document did not parse or validate, or names no runnable operation: nothing ran.
    /// The errors, each with `extensions.code`.
    RequestError(Value),
    /// An execution result (`data`, maybe `errors`), each error with `extensions.code`.
    Result(Value),
}

impl Outcome {
    /// Classifies an operation's result; only its first result can be a request error.
    pub(in crate::transport) fn of(response: &async_graphql::Response, first: bool) -> Outcome {
        if first && is_request_error(response) {
            let mut errors = serde_json::to_value(&response.errors).unwrap_or_else(|_| json!([]));
            add_missing_codes(&mut errors, "GRAPHQL_VALIDATION_FAILED");
            return Outcome::RequestError(errors);
        }
        let mut result = serde_json::to_value(response).unwrap_or_else(|e| {
            tracing::error!(error = %e, "could not serialize a result");
            json!({"data": null, "errors": [{"message": "internal error"}]})
        });
        if let Some(errors) = result.get_mut("errors") {
            add_missing_codes(errors, "INTERNAL");
        }
        Outcome::Result(result)
    }
}

/// A request error has no data and no error with a path; an execution error that nulled the
/// whole result still has a path (the same rule as GraphQL over HTTP).
fn is_request_error(response: &async_graphql::Response) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

/// One GraphQL error with a code, for errors the transport raises itself.
pub(in crate::transport) fn error(code: &str, message: impl Into<String>) -> Value {
    json!({"message": message.into(), "extensions": {"code": code}})
}

/// Gives every error of an `errors` array an `extensions.code`: async-graphql's own errors
/// (parse, validation, limits) come without one. Coercion errors (a value of the wrong type)
/// are `BAD_USER_INPUT`, any other uncoded error gets `default`. The same rule as over HTTP.
pub(in crate::transport) fn add_missing_codes(errors: &mut Value, default: &'static str) {
    let Some(errors) = errors.as_array_mut() else {
        return;
    };
    for error in errors.iter_mut().filter_map(Value::as_object_mut) {
        let message = error.get("message").and_then(Value::as_str).unwrap_or("");
        let code = if message.starts_with("Invalid value for argument")
            || message.starts_with("Failed to parse")
        {
            "BAD_USER_INPUT"
        } else {
            default
        };
        let extensions = error.entry("extensions").or_insert_with(|| json!({}));
        if let Some(extensions) = extensions.as_object_mut() {
            extensions.entry("code").or_insert_with(|| json!(code));
        }
    }
}

/// The log lines of one live connection: opened, and closed with how long it lived and why.
pub(in crate::transport) struct ConnectionLog {
    protocol: &'static str,
    user: Option<String>,
    opened: Instant,
}

impl ConnectionLog {
    /// Logs the opening.
    pub(in crate::transport) fn open(protocol: &'static str, user: Option<&str>) -> Self {
        tracing::info!(protocol, user, "live connection opened");
        Self {
            protocol,
            user: user.map(str::to_owned),
            opened: Instant::now(),
        }
    }

    /// Who is connected, once known.
    pub(in crate::transport) fn signed_in(&mut self, user: &str) {
        tracing::debug!(protocol = self.protocol, user, "live connection signed in");
        self.user = Some(user.to_owned());
    }

    /// Logs the end.
    pub(in crate::transport) fn closed(self, code: Option<u16>, reason: &str) {
        tracing::info!(
            protocol = self.protocol,
            user = self.user.as_deref(),
            duration_ms = self.opened.elapsed().as_millis() as u64,
            code,
            reason,
            "live connection closed"
        );
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::{PathSegment, Response, ServerError};

    use super::*;

    fn codes(errors: &Value) -> Vec<&str> {
        errors
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["extensions"]["code"].as_str())
            .collect()
    }

    #[test]
    fn a_first_result_without_data_or_paths_is_a_request_error() {
        let response = Response::from_errors(vec![ServerError::new("Unknown field \"x\"", None)]);
        let Outcome::RequestError(errors) = Outcome::of(&response, true) else {
            panic!("expected a request error");
        };
        assert_eq!(codes(&errors), ["GRAPHQL_VALIDATION_FAILED"]);
        // Later results are always execution results.
        assert!(matches!(Outcome::of(&response, false), Outcome::Result(_)));
    }

    #[test]
    fn an_error_with_a_path_is_an_execution_result() {
        let mut error = ServerError::new("no order ord-1", None);
        error.path = vec![PathSegment::Field("orderUpdated".into())];
        let Outcome::Result(result) = Outcome::of(&Response::from_errors(vec![error]), true) else {
            panic!("expected an execution result");
        };
        assert_eq!(result["data"], Value::Null);
        assert_eq!(codes(&result["errors"]), ["INTERNAL"]);
    }

    #[test]
    fn coercion_errors_are_bad_user_input_and_codes_are_kept() {
        let mut errors = json!([
            {"message": "Invalid value for argument \"id\""},
            {"message": "x", "extensions": {"code": "FORBIDDEN"}},
        ]);
        add_missing_codes(&mut errors, "INTERNAL");
        assert_eq!(codes(&errors), ["BAD_USER_INPUT", "FORBIDDEN"]);
    }

    #[test]
    fn operations_take_nullable_fields() {
        let operation: Operation = serde_json::from_value(json!({
            "query": "{ me { id } }", "operationName": null, "variables": null, "extensions": null
        }))
        .unwrap();
        assert!(!operation.is_empty());
        let request = operation.into_request();
        assert_eq!(request.operation_name, None);
        let operation: Operation = serde_json::from_value(json!({
            "query": "{ a }", "extensions": {"persistedQuery": {"version": 1}}
        }))
        .unwrap();
        let request = operation.into_request();
        assert!(request.extensions.0.contains_key("persistedQuery"));
        assert!(serde_json::from_value::<Operation>(json!({"query": 1})).is_err());
        assert!(
            serde_json::from_value::<Operation>(json!({"query": "{a}", "variables": []})).is_err()
        );
    }
}
