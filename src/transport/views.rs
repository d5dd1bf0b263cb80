//! Shared views: one subscription run for all the live connections that would get the same
//! results, so that an event is resolved once for them, not once per connection.
//!
//! Two subscriptions are the same view when they would be the same execution: the same
//! transport (it labels the metrics), the same document, operation name, variables and
//! extensions, byte for byte as the client sent them, and the same [`Viewer`] (user id, name
//! and role: everything the resolvers authorize by; a request carries no other per-caller
//! data). Their results are then equal by construction, so sharing them hands nobody anything
//! they would not have got themselves: it is one caller's own subscription, opened twice (a
//! phone and a browser, two tabs). Anything that differs (another user, another variable, a
//! reordered variables object) is another view. Only the subscriptions that read nothing for
//! their subscriber as they start are shared ([`resolvers::SHAREABLE_SUBSCRIPTIONS`]: the
//! feeds); one that reads and authorizes its object as it starts (`orderUpdated`, …) runs for
//! each subscriber, as does a document sent by its persisted query's hash alone. Every
//! subscriber still goes through the whole pipeline itself (persisted queries, trusted
//! documents, limits, rate limits) before it joins; a joiner gets the results produced from
//! then on, as a fresh subscription would.
//!
//! A view runs in a task of its own, in the span of the subscriber that started it. It never
//! waits for its subscribers: each has a bounded [`Queue`] of `subscriptions.send_buffer`
//! results (as many as its connection's own queue holds: results can be large, and a client
//! that reads nothing should pin no more of them than that), and one that falls further
//! behind (its client reads too slowly) gets one `SUBSCRIPTION_LAGGED` error and ends, while
//! the others go on. (The view itself falls behind the hub, and is told so, past
//! `events.hub_capacity` events.) When the view's results end (a request error, a lag at the
//! hub), each subscriber reads what it has and completes; when its last subscriber leaves,
//! the view is stopped (its hub subscription and loaders dropped).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_graphql::ServerError;
use futures::StreamExt;
use futures::stream::BoxStream;
use resolvers::Viewer;
use resolvers::queue::{Queue, RecvError};
use serde_json::Value;
use tokio::task::AbortHandle;
use tracing::Instrument as _;

use super::AppState;
use super::pipeline::Prepared;
use super::request::GraphQlRequest;
use super::shape::Outcome;
use async_graphql::parser::types::{DocumentOperations, OperationType, Selection};

/// What makes two subscriptions the same view (see the module docs).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct ViewKey {
    transport: &'static str,
    query: String,
    operation_name: Option<String>,
    /// The variables and extensions as sent (serialized: JSON objects do not hash).
    variables: String,
    extensions: String,
    viewer: Viewer,
}

impl ViewKey {
    /// The view of `request` run by `viewer` over `transport` (taken before the pipeline
    /// consumes the request).
    pub(crate) fn of(transport: &'static str, request: &GraphQlRequest, viewer: &Viewer) -> Self {
        let json = |map: &Option<serde_json::Map<String, Value>>| match map {
            Some(map) => Value::Object(map.clone()).to_string(),
            None => String::new(),
        };
        Self {
            transport,
            query: request.query.clone(),
            operation_name: request.operation_name.clone(),
            variables: json(&request.variables),
            extensions: json(&request.extensions),
            viewer: viewer.clone(),
        }
    }
}

/// The running views of this server.
pub(crate) struct Views {
    /// Results each subscriber may fall behind by (`subscriptions.send_buffer`).
    capacity: usize,
    /// A std mutex: held to join, leave or end a view, never across an await. Taken before a
    /// view's own lock, never after it.
    running: Mutex<HashMap<Arc<ViewKey>, Arc<View>>>,
}

/// One shared view: its subscribers, and the task that runs it.
struct View {
    key: Arc<ViewKey>,
    /// A std mutex, held to add, remove or hand a result to subscribers.
    subscribers: Mutex<Subscribers>,
}

#[derive(Default)]
struct Subscribers {
    last_id: u64,
    queues: Vec<(u64, Arc<Queue<Arc<Outcome>>>)>,
    /// The view's task (set as it starts, under the views' lock).
    task: Option<AbortHandle>,
}

impl View {
    fn subscribers(&self) -> MutexGuard<'_, Subscribers> {
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Views {
    /// No views yet; subscribers may fall `capacity` results behind.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            running: Mutex::default(),
        }
    }

    fn running(&self) -> MutexGuard<'_, HashMap<Arc<ViewKey>, Arc<View>>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Nobody joins `view` any more.
    fn forget(&self, view: &Arc<View>) {
        remove(&mut self.running(), view);
    }

    /// How many views run now.
    pub(crate) fn len(&self) -> usize {
        self.running().len()
    }

    /// The results of `prepared` for `viewer`: a subscription joins the running view of
    /// `key` (or starts it); a query or mutation runs on its own.
    pub(crate) fn stream(
        self: &Arc<Self>,
        state: &AppState,
        key: ViewKey,
        prepared: Prepared,
        viewer: Viewer,
    ) -> BoxStream<'static, Arc<Outcome>> {
        if prepared.kind() != OperationType::Subscription || !shareable(&key) {
            return prepared.stream(state, viewer).map(Arc::new).boxed();
        }
        let mut running = self.running();
        let (view, starting) = match running.get(&key) {
            Some(view) => (view.clone(), None),
            None => {
                let key = Arc::new(key);
                let view = Arc::new(View {
                    key: key.clone(),
                    subscribers: Mutex::default(),
                });
                running.insert(key, view.clone());
                (view, Some(prepared.stream(state, viewer)))
            }
        };
        let queue = Arc::new(Queue::new(self.capacity));
        let id = {
            let mut subscribers = view.subscribers();
            subscribers.last_id += 1;
            let id = subscribers.last_id;
            subscribers.queues.push((id, queue.clone()));
            id
        };
        // Started once its first subscriber is in, so it misses no result.
        if let Some(results) = starting {
            let task = tokio::spawn(run(self.clone(), view.clone(), results).in_current_span());
            view.subscribers().task = Some(task.abort_handle());
        }
        drop(running);
        let subscriber = Subscriber {
            views: self.clone(),
            view,
            id,
            queue,
        };
        futures::stream::unfold(Some(subscriber), |state| async move {
            let subscriber = state?;
            match subscriber.queue.recv().await {
                Ok(outcome) => Some((outcome, Some(subscriber))),
                // This subscriber read too slowly: it says so and ends (leaving the view).
                Err(RecvError::Lagged(missed)) => Some((Arc::new(lagged(missed)), None)),
                Err(RecvError::Closed) => None,
            }
        })
        .boxed()
    }
}

/// Whether the subscription of `key` may be shared: its operation (which the pipeline has
/// checked: the document parses, within the limits) selects only fields of
/// [`resolvers::SHAREABLE_SUBSCRIPTIONS`], directly (no fragments).
fn shareable(key: &ViewKey) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(&key.query) else {
        return false;
    };
    let operation = match (&document.operations, &key.operation_name) {
        (DocumentOperations::Single(operation), _) => operation,
        (DocumentOperations::Multiple(operations), Some(name)) => {
            match operations.iter().find(|(n, _)| n.as_str() == name) {
                Some((_, operation)) => operation,
                None => return false,
            }
        }
        (DocumentOperations::Multiple(_), None) => return false,
    };
    operation
        .node
        .selection_set
        .node
        .items
        .iter()
        .all(|item| match &item.node {
            Selection::Field(field) => {
                let name = field.node.name.node.as_str();
                name == "__typename" || resolvers::SHAREABLE_SUBSCRIPTIONS.contains(&name)
            }
            Selection::FragmentSpread(_) | Selection::InlineFragment(_) => false,
        })
}

/// A view's task: each result, once, to every subscriber's queue; then the view is over.
async fn run(views: Arc<Views>, view: Arc<View>, mut results: BoxStream<'static, Outcome>) {
    while let Some(outcome) = results.next().await {
        if matches!(outcome, Outcome::RequestError(_)) {
            // Nothing comes after a request error: whoever subscribes from now on starts a
            // view of their own (and is told the same), rather than joining one that ends.
            views.forget(&view);
        }
        let outcome = Arc::new(outcome);
        for (_, queue) in &view.subscribers().queues {
            // `false`: that subscriber lagged, learns so from its queue, and leaves.
            queue.push(outcome.clone());
        }
    }
    views.forget(&view);
    let mut subscribers = view.subscribers();
    subscribers.task = None;
    for (_, queue) in &subscribers.queues {
        queue.close();
    }
}

/// One subscriber of a view; dropping it (its connection or operation ended) leaves the view,
/// and stops the view if it was the last.
struct Subscriber {
    views: Arc<Views>,
    view: Arc<View>,
    id: u64,
    queue: Arc<Queue<Arc<Outcome>>>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let mut running = self.views.running();
        let mut subscribers = self.view.subscribers();
        subscribers.queues.retain(|(id, _)| *id != self.id);
        if !subscribers.queues.is_empty() {
            return;
        }
        if let Some(task) = subscribers.task.take() {
            task.abort();
        }
        remove(&mut running, &self.view);
    }
}

/// Takes `view` out of the running ones (unless a newer view of its key took its place).
fn remove(running: &mut HashMap<Arc<ViewKey>, Arc<View>>, view: &Arc<View>) {
    if running
        .get(&view.key)
        .is_some_and(|current| Arc::ptr_eq(current, view))
    {
        running.remove(&view.key);
    }
}

/// The result that tells a subscriber it fell `missed` results behind.
fn lagged(missed: u64) -> Outcome {
    let error = async_graphql::Error::from(resolvers::lagged(missed));
    let mut server_error = ServerError::new(error.message, None);
    server_error.extensions = error.extensions;
    Outcome::executed(
        &async_graphql::Response::from_errors(vec![server_error]),
        usize::MAX,
        None,
    )
}
