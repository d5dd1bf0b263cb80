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
//!   document that does not parse, is over a limit, has no operation of the requested name
//!   or lacks a required variable; `406`
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
//! fast as the client reads. One task polls the operation's result stream (a subscription's
//! comes from its shared view, `transport::views`) and `send().await`s each result into the
//! queue. When the client reads slower than events come, the queue fills and the task stops
//! reading, so its results pile up in its own queue at the view and, past
//! `subscriptions.send_buffer` of them, the subscription yields one `SUBSCRIPTION_LAGGED`
//! error and completes. The hub and every other client carry on. A client that closes the
//! request closes the queue, and the task ends at once, dropping the subscription.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use super::rate_limit::Peer;
use async_graphql::parser::types::OperationType;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::{mpsc, watch};
use tracing::Instrument as _;

use super::AppState;
use super::error::TransportError;
use super::live::{self, CLOSE_GRACE, ConnectionLog, ConnectionSlot};
use super::pipeline::{self, Prepared};
use super::request::{GraphQlRequest, bearer, client_name, negotiate};
use super::shape::Outcome;
use super::views::ViewKey;
use crate::auth::Session;

const EVENT_STREAM: &str = "text/event-stream";

/// `GET|POST /graphql/stream`.
pub(super) async fn handler(
    State(state): State<AppState>,
    peer: Peer,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(e) = state.rate_limits.client(&headers, peer, 1).await {
        return e.into_response();
    }
    match prepare(&state, &method, &headers, query.as_deref(), body).await {
        Ok((prepared, view, session, slot)) => stream(&state, prepared, view, session, slot),
        Err(refused) => refused.into_response(),
    }
}

/// The operation to run, its view, who runs it and their connection slot, or why not
/// (answered in JSON, as GraphQL over HTTP would).
async fn prepare(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Prepared, ViewKey, Session, ConnectionSlot), TransportError> {
    if negotiate(headers, &[EVENT_STREAM], EVENT_STREAM).is_none() {
        return Err(TransportError::NotAcceptable(
            "text/event-stream: this endpoint answers with an event stream",
        ));
    }
    let session = authenticate(state, headers).await?;
    state.rate_limits.user(&session.viewer.user_id, 1).await?;
    let request = if method == Method::GET {
        GraphQlRequest::from_query_string(query.unwrap_or(""))?
    } else {
        GraphQlRequest::from_body(headers, body, state.max_body_bytes)?
    };
    let view = ViewKey::of("sse", &request, &session.viewer);
    let prepared = pipeline::prepare(state, "sse", client_name(headers), request).await?;
    if prepared.kind() == OperationType::Mutation && method == Method::GET {
        return Err(TransportError::MethodNotAllowed);
    }
    let slot = ConnectionSlot::acquire(state)?;
    Ok((prepared, view, session, slot))
}

/// The session of the request's bearer token: `401` without a valid one.
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Session, TransportError> {
    let token = bearer(headers)?.ok_or_else(|| {
        TransportError::Unauthenticated(
            "subscriptions need a signed-in user: send `Authorization: Bearer <token>`".into(),
        )
    })?;
    Ok(live::authenticate(state, token).await?)
}

/// Starts the operation and answers its event stream.
fn stream(
    state: &AppState,
    prepared: Prepared,
    view: ViewKey,
    session: Session,
    slot: ConnectionSlot,
) -> Response {
    let (events, queue) = mpsc::channel(state.subscriptions.send_buffer.max(1));
    let pump = Pump {
        expiry: live::expiry(&session),
        log: ConnectionLog::open("sse", Some(&session.viewer.user_id)),
        results: state.views.stream(state, view, prepared, session.viewer),
        events,
        shutdown: state.shutdown.clone(),
        slot,
    };
    tokio::spawn(pump.run().in_current_span());
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
    results: BoxStream<'static, Arc<Outcome>>,
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
            () = live::shutting_down(&mut self.shutdown) => End::Shutdown,
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
    results: &mut BoxStream<'static, Arc<Outcome>>,
    events: &mpsc::Sender<Event>,
) -> End {
    while let Some(outcome) = results.next().await {
        let next = Event::default()
            .event("next")
            .data(Arc::unwrap_or_clone(outcome).into_json());
        if events.send(next).await.is_err() {
            return End::ClientGone;
        }
    }
    End::Completed
}
