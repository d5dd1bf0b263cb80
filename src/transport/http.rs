//! GraphQL over HTTP, as the GraphQL-over-HTTP spec says.
//!
//! - `POST /graphql` with `Content-Type: application/json` (415 otherwise); bodies over
//!   `server.max_body_bytes` are 413. A batch (an array of requests, as Apollo's
//!   `BatchHttpLink` sends) of at most `server.max_batch_size` operations is answered with an
//!   array of results in the same order; its operations share one viewer and one set of
//!   loaders, so the batch makes one upstream read where its operations would make one each.
//! - `GET /graphql?query=...&variables=...&operationName=...` for queries; a mutation over GET
//!   is 405 with `Allow: POST`. CSRF prevention, as Apollo's (`server.csrf_prevention`): a GET
//!   a browser could send cross-site without a preflight (no content type but a form's, no
//!   `x-apollo-operation-name` or `apollo-require-preflight` header) is refused with 400
//!   `CSRF_PREVENTION`; a POST must be `application/json`, which browsers always preflight
//!   cross-site.
//! - The answer is `application/graphql-response+json` when the `Accept` header names it,
//!   `application/json` when it names that, or only `*/*`, or is absent (406 when it accepts
//!   neither). With `application/graphql-response+json`,
//!   a request error (unparsable or invalid document, unknown operation, a missing variable:
//!   no `data`) is 400; with `application/json` it is 200, as the spec says for legacy clients.
//! - A bearer token that does not validate is 401 with `WWW-Authenticate`, before anything
//!   runs; no token at all runs anonymously, and fields that need a user answer
//!   `UNAUTHENTICATED`.
//! - Past `server.request_timeout_ms` the operation is stopped: 504.
//! - A query with `@defer` from a client that accepts `multipart/mixed` (Apollo Client) is
//!   answered incrementally (`multipart`, `incremental`): the first part as soon as what is
//!   not deferred is done, then the deferred fragments. Any other client gets one whole
//!   result, the same as without `@defer`; so does a batch, and a mutation.
//!
//! Everything between reading the request and writing the result is the pipeline's.

use std::time::Instant;

use async_graphql::parser::types::OperationType;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use futures::stream::BoxStream;
use resolvers::{RequestLoaders, Viewer};

use super::deadline::by_deadline;
use super::error::{GRAPHQL_RESPONSE, TransportError};
use super::pipeline::{self, Prepared};
use super::rate_limit::Peer;
use super::request::{Body, GraphQlRequest, bearer, client_name, idempotency_key, negotiate};
use super::shape::Outcome;
use super::{AppState, multipart};

/// What `/graphql` answers with, in order of preference.
const MEDIA_TYPES: [&str; 2] = [GRAPHQL_RESPONSE, "application/json"];

/// `GET /graphql`.
pub(super) async fn get(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if state.csrf_prevention && !preflighted(&headers) {
        return answer(&state, Method::GET, &headers, Err(TransportError::Csrf)).await;
    }
    if let Err(e) = state.rate_limits.client(&headers, peer, 1).await {
        return answer(&state, Method::GET, &headers, Err(e)).await;
    }
    let request = GraphQlRequest::from_query_string(query.as_deref().unwrap_or(""));
    answer(&state, Method::GET, &headers, request).await
}

/// The headers that make a browser preflight a request (Apollo's), besides a content type.
const PREFLIGHT_HEADERS: [&str; 2] = ["x-apollo-operation-name", "apollo-require-preflight"];

/// Whether a browser would have asked first (a CORS preflight) before sending a request with
/// these headers: it has a content type that is not one of the three a form may send, a
/// non-empty [`PREFLIGHT_HEADERS`] header, or a bearer token (only a script sets one, and a
/// script's `authorization` header is preflighted; a browser adds `Basic` credentials of its
/// own, never `Bearer`). Apollo Client sends `content-type` on GETs too, Apollo iOS and
/// Kotlin send `x-apollo-operation-name`, urql's GETs carry the app's bearer token.
fn preflighted(headers: &HeaderMap) -> bool {
    let simple = [
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "text/plain",
    ];
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if content_type.is_some_and(|media| !media.is_empty() && !simple.contains(&media.as_str())) {
        return true;
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().get(..7))
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"bearer "));
    bearer
        || PREFLIGHT_HEADERS
            .iter()
            .any(|name| headers.get(*name).is_some_and(|v| !v.is_empty()))
}

/// `POST /graphql`: one operation, or a batch (an array body).
pub(super) async fn post(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = GraphQlRequest::read_body(&headers, body, state.max_body_bytes);
    let operations = match &body {
        Ok(Body::Batch(requests)) => requests.len(),
        _ => 1,
    };
    if let Err(e) = state.rate_limits.client(&headers, peer, operations).await {
        return answer(&state, Method::POST, &headers, Err(e)).await;
    }
    match body {
        Ok(Body::Batch(requests)) => answer_batch(&state, &headers, requests).await,
        Ok(Body::One(mut request)) => {
            request.idempotency_key = idempotency_key(&headers, None);
            answer(&state, Method::POST, &headers, Ok(request)).await
        }
        Err(e) => answer(&state, Method::POST, &headers, Err(e)).await,
    }
}

/// The media type to answer with, or the 406 error.
fn media(headers: &HeaderMap) -> Result<&'static str, TransportError> {
    negotiate(headers, &MEDIA_TYPES, "application/json").ok_or(TransportError::NotAcceptable(
        "application/graphql-response+json or application/json",
    ))
}

async fn answer(
    state: &AppState,
    method: Method,
    headers: &HeaderMap,
    request: Result<GraphQlRequest, TransportError>,
) -> Response {
    let media = match media(headers) {
        Ok(media) => media,
        Err(refused) => return refused.into_response(),
    };
    match run(state, method, headers, request).await {
        Ok(Answer::Parts(payloads)) => multipart::response(payloads),
        Ok(Answer::One(outcome)) => {
            let status = match &outcome {
                Outcome::RequestError(_) if media == GRAPHQL_RESPONSE => StatusCode::BAD_REQUEST,
                _ => StatusCode::OK,
            };
            json_response(status, media, outcome.into_json())
        }
        Err(e) if e.is_request_error() && media != GRAPHQL_RESPONSE => {
            e.response_with(StatusCode::OK, media)
        }
        Err(e) => e.response_with(e.status(), media),
    }
}

fn json_response(status: StatusCode, media: &'static str, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(media))],
        body,
    )
        .into_response()
}

/// A query or mutation that may run over HTTP with `method`, prepared.
async fn prepare(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    request: Result<GraphQlRequest, TransportError>,
) -> Result<Prepared, TransportError> {
    let prepared = pipeline::prepare(state, "http", client_name(headers), request?).await?;
    match prepared.kind() {
        OperationType::Subscription => Err(TransportError::BadRequest(
            "subscriptions run over websockets (/graphql/ws) or Server-Sent Events \
             (/graphql/stream)"
                .into(),
        )),
        OperationType::Mutation if method == Method::GET => Err(TransportError::MethodNotAllowed),
        _ => Ok(prepared),
    }
}

/// Who calls, under the request's deadline: a slow identity provider is a slow request.
/// Counts its `n` operations against the user's rate limit.
async fn viewer(
    state: &AppState,
    token: Option<&str>,
    n: usize,
) -> Result<Option<Viewer>, TransportError> {
    let Some(token) = token else {
        return Ok(None);
    };
    let viewer = state.auth.authenticate(token).await?.viewer;
    state.rate_limits.user(&viewer.user_id, n as u64).await?;
    Ok(Some(viewer))
}

/// Runs `work` under `server.request_timeout_ms`, the deadline of its upstream calls too.
async fn within_deadline<T>(
    state: &AppState,
    operation: Option<&str>,
    work: impl Future<Output = Result<T, TransportError>>,
) -> Result<T, TransportError> {
    let deadline = tokio::time::Instant::now() + state.request_timeout;
    by_deadline(state, deadline, operation, work).await?
}

/// What one operation is answered with.
enum Answer {
    /// One result.
    One(Outcome),
    /// Incremental results (`multipart`), the first of them a result.
    Parts(BoxStream<'static, Outcome>),
}

async fn run(
    state: &AppState,
    method: Method,
    headers: &HeaderMap,
    request: Result<GraphQlRequest, TransportError>,
) -> Result<Answer, TransportError> {
    let prepared = prepare(state, &method, headers, request).await?;
    let token = bearer(headers)?;
    if prepared.defers() && multipart::accepted(headers) {
        return run_incremental(state, prepared, token).await;
    }
    let operation = prepared.name().map(str::to_owned);
    let started = Instant::now();
    let (outcome, user) = within_deadline(state, operation.as_deref(), async {
        let viewer = viewer(state, token, 1).await?;
        let user = viewer.as_ref().map(|v| v.user_id.clone());
        let loaders = RequestLoaders::new(&state.ports);
        Ok((prepared.execute(state, viewer, &loaders).await, user))
    })
    .await?;
    tracing::info!(
        ?operation,
        user = user.as_deref(),
        errors = outcome.error_count(),
        ms = started.elapsed().as_millis() as u64,
        "graphql request"
    );
    Ok(Answer::One(outcome))
}

/// Runs a query with deferred fragments: its payloads, once the first is known to be a
/// result (a request error is answered as one JSON result, with its status). The whole
/// stream keeps the request's deadline.
async fn run_incremental(
    state: &AppState,
    prepared: Prepared,
    token: Option<&str>,
) -> Result<Answer, TransportError> {
    let deadline = tokio::time::Instant::now() + state.request_timeout;
    let operation = prepared.name().map(str::to_owned);
    let viewer = by_deadline(
        state,
        deadline,
        operation.as_deref(),
        viewer(state, token, 1),
    )
    .await??;
    let user = viewer.as_ref().map(|v| v.user_id.clone());
    let started = Instant::now();
    let loaders = RequestLoaders::new(&state.ports);
    let mut payloads = prepared.incremental(state, viewer, loaders, deadline);
    match payloads.next().await {
        Some(Outcome::Executed { json, errors }) => {
            tracing::info!(
                ?operation,
                user = user.as_deref(),
                errors,
                ms = started.elapsed().as_millis() as u64,
                "graphql request: first part sent, deferred parts follow"
            );
            let first = Outcome::Executed { json, errors };
            Ok(Answer::Parts(
                futures::stream::once(async { first })
                    .chain(payloads)
                    .boxed(),
            ))
        }
        Some(request_error) => Ok(Answer::One(request_error)),
        None => Err(TransportError::Internal),
    }
}

/// A batch: an array of results in the order of the requests, each a result or a request
/// error of its own, with status 200; what refuses the whole batch (its size, the token, the
/// deadline) is answered as for one request.
async fn answer_batch(
    state: &AppState,
    headers: &HeaderMap,
    requests: Vec<Result<GraphQlRequest, TransportError>>,
) -> Response {
    let media = match media(headers) {
        Ok(media) => media,
        Err(refused) => return refused.into_response(),
    };
    match run_batch(state, headers, requests).await {
        Ok((results, mutations)) => {
            // The whole answer is bounded as one result is: past `max_response_bytes`, the
            // later results become `RESPONSE_TOO_LARGE` (16 large results are not 16 times
            // the bound).
            // A mutation's result is always sent: what it did must be known.
            let mut total = 0usize;
            let items: Vec<String> = results
                .into_iter()
                .zip(mutations)
                .map(|(result, mutation)| {
                    let item = match result {
                        Ok(outcome) => outcome.into_json(),
                        Err(e) => e.to_errors_json(),
                    };
                    total = total.saturating_add(item.len());
                    if total > state.max_response_bytes && !mutation {
                        let too_large = TransportError::ResponseTooLarge(state.max_response_bytes);
                        return too_large.to_errors_json();
                    }
                    item
                })
                .collect();
            json_response(StatusCode::OK, media, format!("[{}]", items.join(",")))
        }
        Err(e) => e.response_with(e.status(), media),
    }
}

/// Runs a batch's operations with one viewer and one set of loaders, so that their upstream
/// reads batch together: queries at once, and in order when a mutation is among them (a
/// later operation may read what an earlier one wrote: the loaders start afresh after each
/// mutation).
async fn run_batch(
    state: &AppState,
    headers: &HeaderMap,
    requests: Vec<Result<GraphQlRequest, TransportError>>,
) -> Result<(Vec<Result<Outcome, TransportError>>, Vec<bool>), TransportError> {
    if requests.is_empty() {
        return Err(TransportError::BadRequest(
            "the batch is empty: send at least one operation".into(),
        ));
    }
    if requests.len() > state.max_batch_size {
        return Err(TransportError::Limit {
            code: "MAX_BATCH_SIZE_LIMIT",
            message: format!(
                "a batch may hold at most {} operations (server.max_batch_size); this one \
                 holds {}",
                state.max_batch_size,
                requests.len()
            ),
        });
    }
    let token = bearer(headers)?;
    let size = requests.len();
    let mut prepared = Vec::with_capacity(size);
    for (index, mut request) in requests.into_iter().enumerate() {
        if let Ok(request) = &mut request {
            request.idempotency_key = idempotency_key(headers, Some(index));
        }
        prepared.push(prepare(state, &Method::POST, headers, request).await);
    }
    let started = Instant::now();
    let mutations: Vec<bool> = prepared
        .iter()
        .map(|p| {
            p.as_ref()
                .is_ok_and(|p| p.kind() == OperationType::Mutation)
        })
        .collect();
    let in_order = mutations.contains(&true);
    // One deadline for the batch, kept by each operation: one past it gets its own `TIMEOUT`
    // and the others keep their results (a mutation that ran is never answered as a 504).
    let deadline = tokio::time::Instant::now() + state.request_timeout;
    let viewer = tokio::time::timeout_at(deadline, viewer(state, token, size))
        .await
        .map_err(|_| TransportError::Timeout)??;
    let mut loaders = RequestLoaders::new(&state.ports);
    let run = |prepared: Result<Prepared, TransportError>, loaders: &RequestLoaders| {
        let (viewer, loaders) = (viewer.clone(), loaders.clone());
        async move {
            let prepared = prepared?;
            // (An operation that resolves without waiting is not stopped by a timer: past
            // the deadline, the next one does not start.)
            if tokio::time::Instant::now() >= deadline {
                return Err(TransportError::Timeout);
            }
            let label = prepared.label().to_owned();
            let work = prepared.execute(state, viewer, &loaders);
            by_deadline(state, deadline, Some(&label), work).await
        }
    };
    let results = if in_order {
        let mut results = Vec::with_capacity(size);
        for prepared in prepared {
            let wrote = prepared
                .as_ref()
                .is_ok_and(|p| p.kind() == OperationType::Mutation);
            results.push(run(prepared, &loaders).await);
            if wrote {
                // What the loaders read before the write may be stale now.
                loaders = RequestLoaders::new(&state.ports);
            }
        }
        results
    } else {
        // One wave of loads across the operations (see `resolvers::Batched`).
        let all = futures::future::join_all(prepared.into_iter().map(|p| run(p, &loaders)));
        resolvers::Batched::new(all).await
    };
    tracing::info!(
        operations = size,
        ms = started.elapsed().as_millis() as u64,
        "graphql batch"
    );
    Ok((results, mutations))
}
