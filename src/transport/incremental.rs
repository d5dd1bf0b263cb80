//! Incremental delivery of an operation with `@defer`, in the payloads of Apollo's
//! `deferSpec=20220824` (the GraphQL incremental-delivery RFC as graphql-js 17.0.0-alpha.2
//! shipped it, which Apollo Client reads by default):
//!
//! ```json
//! {"data": {...}, "errors": [...], "hasNext": true}
//! {"incremental": [{"data": {...}, "path": ["me", "orders", "edges", 0, "node"], "label": "x",
//!                   "errors": [...]}], "hasNext": true}
//! {"hasNext": false}
//! ```
//!
//! The initial document and every part document of the plan (`defer`) run at once, with the
//! request's loaders, inside one `resolvers::Batched`, so their loads leave together and
//! nothing is loaded twice. The initial payload goes first, as soon as its document is
//! done; each deferred fragment's items go as soon as it is done and the fragment it is
//! inside (if any) has gone. Items ready together share one payload (never the initial one:
//! Apollo Client reads `incremental` only in the payloads after it); the last payload says
//! `hasNext: false` (alone when nothing is left to send).
//!
//! Each item is the object at its path in its part's result, shaped as a whole result is
//! (`shape`: null semantics, query order, codes), with the errors under its path. A non-null
//! field of the fragment that failed makes the item's `data` `null` (the RFC's defer
//! boundary). Objects on the path that are `null` (an order not shipped yet) get no item.
//!
//! The whole operation keeps the request's bounds: its deadline (`server.request_timeout_ms`
//! from the start), and `server.max_response_bytes` for all its payloads together. Past
//! either, the stream ends with one last payload, `{"incremental": [{"path": [], "data": {},
//! "errors": [<TIMEOUT or RESPONSE_TOO_LARGE>]}], "hasNext": false}`: an item that adds no
//! data (Apollo Client merges it as nothing) and carries the error (or, when the initial
//! payload itself is too large, that payload is `data: null` with the error and
//! `hasNext: false`). The work runs in a task of its own that stops when its reader goes
//! away (the client closed the connection or the subscription).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Name, PathSegment, ServerError, Value};
use futures::stream::{BoxStream, FuturesUnordered};
use futures::{FutureExt as _, StreamExt as _};
use resolvers::{AppSchema, Batched, RequestLoaders, Viewer};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::defer::{Deferred, Plan};
use super::error::TransportError;
use super::shape::{self, Json, Outcome, Types};
use super::{AppState, document};

/// What one operation's incremental run needs, besides its documents.
pub(crate) struct Run {
    pub(crate) schema: AppSchema,
    pub(crate) plan: Plan,
    pub(crate) deferred: Vec<Deferred>,
    /// The document as parsed (with `@defer`): what results are shaped by.
    pub(crate) document: Arc<ExecutableDocument>,
    /// The request's text, operation name and variables, for each document's request.
    pub(crate) query: String,
    pub(crate) operation: Option<String>,
    pub(crate) variables: async_graphql::Variables,
    pub(crate) viewer: Option<Viewer>,
    pub(crate) loaders: RequestLoaders,
    pub(crate) deadline: tokio::time::Instant,
}

/// The payloads of `run`, as they come (a request error, if the document does not validate,
/// is the one and only item). The work stops when the stream is dropped.
pub(crate) fn stream(state: &AppState, run: Run) -> BoxStream<'static, Outcome> {
    // At most one payload per part, the initial one and a last one: sending never waits.
    let (payloads, received) = mpsc::channel(run.deferred.len() + 2);
    let state = state.clone();
    let task = async move {
        let deadline = run.deadline;
        let label = run.operation.clone();
        let closed = payloads.clone();
        let work = deliver(&state, run, &payloads);
        tokio::select! {
            () = closed.closed() => {}
            done = super::deadline::by_deadline(&state, deadline, label.as_deref(), work) => {
                if done.is_err() {
                    let last = abort(&TransportError::Timeout, usize::MAX);
                    let _ = payloads.send(last).await;
                }
            }
        }
    };
    tokio::spawn(task.in_current_span());
    futures::stream::unfold(received, |mut received| async move {
        let payload = received.recv().await?;
        Some((payload, received))
    })
    .boxed()
}

/// Runs every document of the plan and sends the payloads in order.
async fn deliver(state: &AppState, run: Run, payloads: &mpsc::Sender<Outcome>) {
    let Run {
        schema,
        plan,
        deferred,
        document,
        query,
        operation,
        variables,
        viewer,
        loaders,
        ..
    } = run;
    let execute = |doc: ExecutableDocument| {
        let mut request = async_graphql::Request::new(query.clone()).variables(variables.clone());
        if let Some(name) = &operation {
            request = request.operation_name(name.clone());
        }
        request.set_parsed_query(doc);
        let request = resolvers::request_data(request, &loaders, viewer.clone());
        let schema = schema.clone();
        async move { schema.execute(request).await }
    };
    let runs = FuturesUnordered::new();
    runs.push(execute(plan.initial).map(|r| (None, r)).boxed());
    for (i, part) in plan.parts.into_iter().enumerate() {
        runs.push(execute(part).map(move |r| (Some(i), r)).boxed());
    }
    let mut order = Order {
        state,
        document: &document,
        operation: operation.as_deref(),
        deferred: &deferred,
        loaders: &loaders,
        initial_sent: false,
        delivered: vec![false; deferred.len()],
        done: Vec::new(),
        left: deferred.len(),
        budget: state.max_response_bytes,
    };
    // Unstaged: the first part never waits for reads of the deferred parts.
    let mut runs = Batched::unstaged(runs);
    while let Some((which, response)) = runs.next().await {
        let (ready, finished) = match which {
            None => order.initial(response),
            Some(i) => {
                let (ready, finished) = order.part(i, response);
                (ready.into_iter().collect(), finished)
            }
        };
        for payload in ready {
            if payloads.send(payload).await.is_err() {
                return;
            }
        }
        if finished {
            return;
        }
    }
}

/// The order payloads go in, and what is left of the operation's bounds.
struct Order<'a> {
    state: &'a AppState,
    document: &'a ExecutableDocument,
    operation: Option<&'a str>,
    deferred: &'a [Deferred],
    loaders: &'a RequestLoaders,
    initial_sent: bool,
    /// Which deferred fragments have gone.
    delivered: Vec<bool>,
    /// Done, waiting for the fragment they are inside: index and items.
    done: Vec<(usize, Vec<Item>)>,
    /// Deferred fragments not delivered yet.
    left: usize,
    /// Bytes the payloads may still take (`server.max_response_bytes`).
    budget: usize,
}

impl Order<'_> {
    fn types(&self) -> &Types {
        &self.state.types
    }

    /// The initial payload (or the request error), then what was waiting for it; `true`
    /// when nothing more is to be sent.
    fn initial(&mut self, mut response: async_graphql::Response) -> (Vec<Outcome>, bool) {
        super::shape::mark_stale(&mut response, self.loaders.take_stale());
        let Ok(operation) = document::operation(self.document, self.operation) else {
            return (vec![abort(&TransportError::Internal, usize::MAX)], true);
        };
        let shaped = match shape::result(response, self.document, operation, self.types(), true) {
            Ok(shaped) => shaped,
            Err(errors) => return (vec![Outcome::RequestError(errors)], true),
        };
        let payload = Payload {
            data: Some(&shaped.data),
            errors: &shaped.errors,
            incremental: Vec::new(),
            has_next: true,
            extensions: &shaped.extensions,
        };
        let Some(first) = self.bounded(&payload, shaped.errors.len()) else {
            let too_large = TransportError::ResponseTooLarge(self.state.max_response_bytes);
            let payload = Payload {
                data: Some(&Value::Null),
                errors: &[too_large.to_server_error()],
                incremental: Vec::new(),
                has_next: false,
                extensions: &BTreeMap::new(),
            };
            let last = self.bounded(&payload, 1);
            return (
                vec![last.unwrap_or_else(|| abort(&too_large, usize::MAX))],
                true,
            );
        };
        self.initial_sent = true;
        // Parts done before the initial payload go right after it.
        let (next, finished) = self.ready();
        (std::iter::once(first).chain(next).collect(), finished)
    }

    /// Deferred fragment `i` is done: its payload, if it can go now.
    fn part(&mut self, i: usize, response: async_graphql::Response) -> (Option<Outcome>, bool) {
        let items = self.items(i, response);
        self.done.push((i, items));
        if !self.initial_sent {
            return (None, false);
        }
        self.ready()
    }

    /// The payload of every done fragment whose parent has gone (and of those inside them);
    /// `true` when that was the last.
    fn ready(&mut self) -> (Option<Outcome>, bool) {
        let mut items = Vec::new();
        let mut sent = 0;
        loop {
            let delivered = &self.delivered;
            let Some(at) = self.done.iter().position(|(i, _)| {
                self.deferred[*i]
                    .parent
                    .is_none_or(|parent| delivered[parent])
            }) else {
                break;
            };
            let (i, mut ready) = self.done.swap_remove(at);
            self.delivered[i] = true;
            items.append(&mut ready);
            sent += 1;
        }
        self.left -= sent;
        let finished = self.left == 0;
        if sent == 0 || (items.is_empty() && !finished) {
            return (None, finished);
        }
        let errors = items.iter().map(|item| item.errors.len()).sum();
        let payload = Payload {
            data: None,
            errors: &[],
            incremental: items,
            has_next: !finished,
            extensions: &BTreeMap::new(),
        };
        match self.bounded(&payload, errors) {
            Some(outcome) => (Some(outcome), finished),
            None => {
                let too_large = TransportError::ResponseTooLarge(self.state.max_response_bytes);
                (Some(abort(&too_large, usize::MAX)), true)
            }
        }
    }

    /// The items of deferred fragment `i` from its part's result.
    fn items(&self, i: usize, mut response: async_graphql::Response) -> Vec<Item> {
        let deferred = &self.deferred[i];
        let mut paths = Vec::new();
        item_paths(
            &response.data,
            &deferred.keys,
            &response.errors,
            &mut Vec::new(),
            &mut paths,
        );
        let stale = self.loaders.take_stale();
        super::shape::mark_stale(&mut response, stale);
        let Ok(operation) = document::operation(self.document, self.operation) else {
            return Vec::new();
        };
        let shaped = match shape::result(response, self.document, operation, self.types(), false) {
            Ok(shaped) => shaped,
            // Only a first result can be a request error.
            Err(errors) => async_graphql::Response::from_errors(errors),
        };
        let mut data = shaped.data;
        paths
            .into_iter()
            .map(|path| {
                let errors = shaped
                    .errors
                    .iter()
                    .filter(|e| e.path.starts_with(&path))
                    .cloned()
                    .collect();
                let data = match take_at(&mut data, &path) {
                    object @ Value::Object(_) => object,
                    _ => Value::Null,
                };
                Item {
                    data,
                    path,
                    label: deferred.label.clone(),
                    errors,
                }
            })
            .collect()
    }

    /// `payload` as an outcome within what is left of the byte budget, or `None` past it.
    fn bounded(&mut self, payload: &Payload<'_>, errors: usize) -> Option<Outcome> {
        match shape::bounded_json(payload, self.budget) {
            Ok(json) => {
                self.budget -= json.len();
                Some(Outcome::Executed { json, errors })
            }
            Err(Json::TooLarge) => {
                tracing::warn!(
                    operation = self.operation,
                    max_bytes = self.state.max_response_bytes,
                    "incremental results over server.max_response_bytes: the stream ends"
                );
                None
            }
            Err(Json::Failed) => Some(abort(&TransportError::Internal, usize::MAX)),
        }
    }
}

/// The paths of the objects at `keys` under `data` (`at` is where `data` is), one per list
/// item on the way. An object that async-graphql made `null` because every field of it failed
/// is one too (its errors go there); other `null`s have no item.
fn item_paths(
    data: &Value,
    keys: &[Name],
    errors: &[ServerError],
    at: &mut Vec<PathSegment>,
    paths: &mut Vec<Vec<PathSegment>>,
) {
    match data {
        Value::List(items) => {
            for (i, item) in items.iter().enumerate() {
                at.push(PathSegment::Index(i));
                item_paths(item, keys, errors, at, paths);
                at.pop();
            }
        }
        Value::Object(fields) => match keys.split_first() {
            None => paths.push(at.clone()),
            Some((key, rest)) => {
                if let Some(inner) = fields.get(key) {
                    at.push(PathSegment::Field(key.to_string()));
                    item_paths(inner, rest, errors, at, paths);
                    at.pop();
                }
            }
        },
        Value::Null if keys.is_empty() && errors.iter().any(|e| e.path.starts_with(at)) => {
            paths.push(at.clone());
        }
        _ => {}
    }
}

/// Takes the value at `path` out of `data` (`null` when there is none).
fn take_at(data: &mut Value, path: &[PathSegment]) -> Value {
    let mut value = data;
    for segment in path {
        let inner = match (segment, value) {
            (PathSegment::Field(key), Value::Object(fields)) => fields.get_mut(key.as_str()),
            (PathSegment::Index(i), Value::List(items)) => items.get_mut(*i),
            _ => None,
        };
        match inner {
            Some(inner) => value = inner,
            None => return Value::Null,
        }
    }
    std::mem::take(value)
}

/// The last payload when the operation cannot go on: an item adding nothing, with the error.
fn abort(error: &TransportError, max_bytes: usize) -> Outcome {
    let payload = Payload {
        data: None,
        errors: &[],
        incremental: vec![Item {
            data: Value::Object(Default::default()),
            path: Vec::new(),
            label: None,
            errors: vec![error.to_server_error()],
        }],
        has_next: false,
        extensions: &BTreeMap::new(),
    };
    let json = shape::bounded_json(&payload, max_bytes).unwrap_or_else(|_| {
        r#"{"incremental":[{"data":{},"path":[],"errors":[{"message":"internal error","extensions":{"code":"INTERNAL"}}]}],"hasNext":false}"#.to_owned()
    });
    Outcome::Executed { json, errors: 1 }
}

/// One payload of the stream.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Value>,
    #[serde(skip_serializing_if = "no_errors")]
    errors: &'a [ServerError],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    incremental: Vec<Item>,
    has_next: bool,
    #[serde(skip_serializing_if = "no_extensions")]
    extensions: &'a BTreeMap<String, Value>,
}

fn no_errors(errors: &&[ServerError]) -> bool {
    errors.is_empty()
}

fn no_extensions(extensions: &&BTreeMap<String, Value>) -> bool {
    extensions.is_empty()
}

/// One deferred fragment's data at one path.
#[derive(serde::Serialize)]
struct Item {
    data: Value,
    path: Vec<PathSegment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<ServerError>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn paths(data: serde_json::Value, keys: &[&str]) -> Vec<String> {
        let data = Value::from_json(data).unwrap();
        let keys: Vec<Name> = keys.iter().map(Name::new).collect();
        let mut out = Vec::new();
        item_paths(&data, &keys, &[], &mut Vec::new(), &mut out);
        out.iter()
            .map(|p| serde_json::to_string(p).unwrap())
            .collect()
    }

    #[test]
    fn a_fragment_inside_lists_has_one_item_per_object() {
        let data = json!({"me": {"orders": {"edges": [
            {"node": {"shipment": {"carrier": "DHL"}}},
            {"node": {"shipment": null}},
            {"node": {"shipment": {"carrier": "UPS"}}},
        ]}}});
        assert_eq!(
            paths(data, &["me", "orders", "edges", "node", "shipment"]),
            [
                r#"["me","orders","edges",0,"node","shipment"]"#,
                r#"["me","orders","edges",2,"node","shipment"]"#,
            ]
        );
        assert_eq!(paths(json!({"me": null}), &["me"]), Vec::<String>::new());
    }
}
