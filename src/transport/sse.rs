//! Subscriptions (and queries and mutations) over Server-Sent Events: `/graphql/stream`, the
//! "distinct connections mode" of
//! [GraphQL over SSE](https://github.com/enisdenjo/graphql-sse/blob/master/PROTOCOL.md): one
//! HTTP request, one operation, one event stream.
//!
//! - `POST /graphql/stream` with a JSON body (`query`, `variables`, `operationName`), or
//!   `GET /graphql/stream?query=...&variables=...&operationName=...` (no mutations: `405`).
//! - `Authorization: Bearer <jwt>` is required: `401` with `extensions.code`
//!   `UNAUTHENTICATED` without a valid token.
//! - Before the stream starts, a request that cannot be run is answered in JSON, as GraphQL
//!   over HTTP does: `400` for a body or query string that is not a GraphQL request, for a
//!   document that does not parse, or that has no operation of the requested name; `406`
//!   when the client does not accept `text/event-stream`; `415` for a POST that is not JSON;
//!   `503` beyond `subscriptions.max_connections`.
//! - Then `200 text/event-stream`: `event: next` with `data: <result>` per result, then
//!   `event: complete`. A document that parses but does not validate (an unknown field, say)
//!   is reported in the stream, as the protocol requires: one `next` with `errors` (each with
//!   `extensions.code`), then `complete`.
//! - A `:` comment line every `keepalive_ms` of silence keeps proxies from closing the stream.
//! - The stream ends with `complete` when the operation ends, when the token's `exp` passes
//!   and when the server shuts down. The client ends a subscription by closing the request.
//!
//! # Tasks, channels, and what happens when a client is slow
//! The response body is the connection's one writer: it is fed by a bounded
//! `tokio::sync::mpsc` queue of `subscriptions.send_buffer` events, and hyper pulls from it as
//! fast as the client reads. One task polls the operation's result stream and
//! `send().await`s each result into the queue. When the client reads slower than events come,
//! the queue fills and the task stops polling, so the subscription's hub receiver falls
//! behind and, past `events.hub_capacity`, the subscription yields one `SUBSCRIPTION_LAGGED`
//! error and completes. The hub and every other client carry on. A client that closes the
//! request closes the queue, and the task ends at once, dropping the subscription.

use std::convert::Infallible;
use std::time::Duration;

use async_graphql::parser::types::OperationType;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};

use super::AppState;
use super::graphql::{bearer, request_error};
use super::ws::common::{
    self, CLOSE_GRACE, ConnectionLog, ConnectionSlot, Operation, Outcome, Refusal,
};
use crate::auth::Session;

const EVENT_STREAM: &str = "text/event-stream";

/// `GET|POST /graphql/stream`.
pub(super) async fn handler(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    match prepare(&state, &method, &headers, query.as_deref(), &body).await {
        Ok((request, session)) => match ConnectionSlot::acquire(&state) {
            Some(slot) => stream(&state, request, session, slot),
            None => common::too_many_connections(),
        },
        Err(refused) => refused.into_response(),
    }
}

/// Why a request gets no event stream: answered as GraphQL over HTTP would, in JSON.
#[derive(Debug)]
struct Refused {
    status: StatusCode,
    code: &'static str,
    message: String,
    header: Option<(header::HeaderName, &'static str)>,
}

impl Refused {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            header: None,
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn unauthenticated(message: &str) -> Self {
        Self {
            header: Some((header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")),
            ..Self::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = request_error(self.status, self.code, self.message);
        if let Some((name, value)) = self.header {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        response
    }
}

/// The request to run and who runs it, or why not.
async fn prepare(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Result<(async_graphql::Request, Session), Refused> {
    accepts_event_stream(headers)?;
    let session = authenticate(state, headers).await?;
    let operation = if method == Method::GET {
        from_query_string(query.unwrap_or(""))?
    } else {
        from_body(headers, body)?
    };
    if operation.is_empty() {
        return Err(Refused::bad_request("BAD_REQUEST", "`query` is missing"));
    }
    let mut request = operation.into_request();
    if operation_type(&mut request)? == OperationType::Mutation && method == Method::GET {
        return Err(Refused {
            header: Some((header::ALLOW, "POST")),
            ..Refused::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "mutations must be sent with POST",
            )
        });
    }
    Ok((request, session))
}

/// `406` unless the client takes an event stream (no `Accept` at all is fine).
fn accepts_event_stream(headers: &HeaderMap) -> Result<(), Refused> {
    let Some(accept) = headers.get(header::ACCEPT) else {
        return Ok(());
    };
    let accept = accept.to_str().unwrap_or("");
    let takes = accept.split(',').any(|range| {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = parts.any(|p| p.trim().replace(' ', "") == "q=0");
        !refused && matches!(media.as_str(), EVENT_STREAM | "text/*" | "*/*")
    });
    if takes {
        Ok(())
    } else {
        Err(Refused::new(
            StatusCode::NOT_ACCEPTABLE,
            "NOT_ACCEPTABLE",
            "this endpoint answers with an event stream: accept text/event-stream",
        ))
    }
}

/// The session of the request's bearer token: `401` without a valid one.
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Session, Refused> {
    let token = match bearer(headers) {
        Ok(Some(token)) => token,
        Ok(None) => {
            return Err(Refused::unauthenticated(
                "subscriptions need a signed-in user: send `Authorization: Bearer <token>`",
            ));
        }
        Err(why) => return Err(Refused::unauthenticated(why)),
    };
    common::authenticate(state, token)
        .await
        .map_err(|refusal| match refusal {
            Refusal::Invalid(why) => Refused::unauthenticated(&why),
            Refusal::Expired => Refused::unauthenticated("invalid token: the token has expired"),
            Refusal::Unavailable => Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "AUTH_UNAVAILABLE",
                "the identity provider's keys are unavailable",
            ),
        })
}

/// The operation of `?query=...&variables=<JSON>&operationName=...&extensions=<JSON>`.
fn from_query_string(query: &str) -> Result<Operation, Refused> {
    let mut fields = Map::new();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let value = match key.as_ref() {
            "query" | "operationName" => Value::String(value.into_owned()),
            "variables" | "extensions" => serde_json::from_str(&value).map_err(|e| {
                Refused::bad_request("BAD_REQUEST", format!("`{key}` is not JSON: {e}"))
            })?,
            _ => continue,
        };
        fields.insert(key.into_owned(), value);
    }
    serde_json::from_value(Value::Object(fields))
        .map_err(|e| Refused::bad_request("BAD_REQUEST", format!("not a GraphQL request: {e}")))
}

/// The operation of a JSON body.
fn from_body(headers: &HeaderMap, body: &[u8]) -> Result<Operation, Refused> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(Refused::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the GraphQL request as `Content-Type: application/json`",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        Refused::bad_request(
            "BAD_REQUEST",
            format!("not a GraphQL request (`query`, `variables`, `operationName`): {e}"),
        )
    })
}

/// The type of the operation to run: `400` when the document does not parse or has no
/// operation of that name. (Validation happens in the stream, as the protocol wants.)
fn operation_type(request: &mut async_graphql::Request) -> Result<OperationType, Refused> {
    let name = request.operation_name.clone();
    let document = request
        .parsed_query()
        .map_err(|e| Refused::bad_request("GRAPHQL_VALIDATION_FAILED", e.message))?;
    let mut operations = document.operations.iter();
    let operation = match &name {
        Some(name) => operations.find(|(n, _)| n.is_some_and(|n| n.as_str() == name)),
        None if document.operations.iter().count() == 1 => operations.next(),
        None => {
            return Err(Refused::bad_request(
                "GRAPHQL_VALIDATION_FAILED",
                "the document has several operations: name one with `operationName`",
            ));
        }
    };
    let (_, operation) = operation.ok_or_else(|| {
        Refused::bad_request(
            "GRAPHQL_VALIDATION_FAILED",
            format!(
                "the document has no operation named {:?}",
                name.unwrap_or_default()
            ),
        )
    })?;
    Ok(operation.node.ty)
}

/// Starts the operation and answers its event stream.
fn stream(
    state: &AppState,
    request: async_graphql::Request,
    session: Session,
    slot: ConnectionSlot,
) -> Response {
    let (events, queue) = mpsc::channel(state.subscriptions.send_buffer.max(1));
    let pump = Pump {
        results: common::execute(state, request, &session),
        events,
        expiry: common::expiry(&session),
        shutdown: state.shutdown.clone(),
        log: ConnectionLog::open("sse", Some(&session.viewer.user_id)),
        slot,
    };
    tokio::spawn(pump.run());
    let body = futures::stream::unfold(queue, |mut queue| async move {
        let event = queue.recv().await?;
        Some((Ok::<_, Infallible>(event), queue))
    });
    let mut response = match state.subscriptions.keepalive_ms {
        0 => Sse::new(body).into_response(),
        ms => Sse::new(body)
            .keep_alive(KeepAlive::new().interval(Duration::from_millis(ms)))
            .into_response(),
    };
    // Tell buffering proxies (nginx) to pass events on as they come.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Completed,
    ClientGone,
    Expired,
    Shutdown,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Completed => "the operation completed",
            End::ClientGone => "the client went away",
            End::Expired => "the token expired",
            End::Shutdown => "the server is shutting down",
        }
    }
}

/// The task that moves one operation's results into its event queue.
struct Pump {
    results: BoxStream<'static, async_graphql::Response>,
    events: mpsc::Sender<Event>,
    expiry: tokio::time::Instant,
    shutdown: watch::Receiver<bool>,
    log: ConnectionLog,
    /// Held for as long as the stream is open.
    slot: ConnectionSlot,
}

impl Pump {
    async fn run(mut self) {
        let end = tokio::select! {
            biased;
            () = self.events.closed() => End::ClientGone,
            () = common::shutting_down(&mut self.shutdown) => End::Shutdown,
            () = tokio::time::sleep_until(self.expiry) => End::Expired,
            end = forward(&mut self.results, &self.events) => end,
        };
        // Stop the operation (its hub receiver, its loaders) before saying goodbye.
        drop(self.results);
        if end != End::ClientGone {
            let complete = Event::default().event("complete");
            let _ = tokio::time::timeout(CLOSE_GRACE, self.events.send(complete)).await;
        }
        self.log.closed(None, end.as_str());
        drop(self.slot);
    }
}

/// Each result as a `next` event, waiting while the queue is full.
async fn forward(
    results: &mut BoxStream<'static, async_graphql::Response>,
    events: &mpsc::Sender<Event>,
) -> End {
    let mut first = true;
    while let Some(response) = results.next().await {
        let data = match Outcome::of(&response, first) {
            Outcome::RequestError(errors) => serde_json::json!({ "errors": errors }),
            Outcome::Result(result) => result,
        };
        first = false;
        let next = Event::default().event("next").data(data.to_string());
        if events.send(next).await.is_err() {
            return End::ClientGone;
        }
    }
    End::Completed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn takes_clients_that_accept_an_event_stream() {
        assert!(accepts_event_stream(&HeaderMap::new()).is_ok());
        assert!(accepts_event_stream(&accept("text/event-stream")).is_ok());
        assert!(accepts_event_stream(&accept("application/json, */*;q=0.5")).is_ok());
        let refused = accepts_event_stream(&accept("application/json")).unwrap_err();
        assert_eq!(refused.status, StatusCode::NOT_ACCEPTABLE);
        assert!(accepts_event_stream(&accept("text/event-stream;q=0")).is_err());
    }

    #[test]
    fn reads_get_requests() {
        let operation = from_query_string(
            "query=query%20Me%20%7B%20me%20%7B%20id%20%7D%20%7D&operationName=Me&variables=%7B%22a%22%3A1%7D",
        )
        .unwrap();
        let request = operation.into_request();
        assert_eq!(request.query, "query Me { me { id } }");
        assert_eq!(request.operation_name.as_deref(), Some("Me"));
        let refused = from_query_string("query=%7Ba%7D&variables=nope").unwrap_err();
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn finds_the_operation_type() {
        let kind = |query: &str, name: Option<&str>| {
            let mut request = async_graphql::Request::new(query);
            request.operation_name = name.map(str::to_owned);
            operation_type(&mut request).map_err(|r| r.status)
        };
        let doc = "query A { me { id } } mutation B { cancelOrder(id: \"x\") { id } }";
        assert_eq!(kind(doc, Some("A")), Ok(OperationType::Query));
        assert_eq!(kind(doc, Some("B")), Ok(OperationType::Mutation));
        assert_eq!(kind(doc, Some("C")), Err(StatusCode::BAD_REQUEST));
        assert_eq!(kind(doc, None), Err(StatusCode::BAD_REQUEST));
        assert_eq!(
            kind("subscription { taskAssigned { id } }", None),
            Ok(OperationType::Subscription)
        );
        assert_eq!(kind("{ me {", None), Err(StatusCode::BAD_REQUEST));
    }
}
