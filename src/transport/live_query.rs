//! `@live` queries over websockets and SSE: the query's result, then a new one whenever an
//! event touches an entity its last run read, sent only when it differs from the last sent.
//!
//! - **What a run read** is what its loaders loaded ([`RequestLoaders::read`]), as events
//!   name entities ([`Key`]: customers, orders, cases, products, task audiences), with the
//!   viewer's own customer and audience always (a new order or a new task names no entity a
//!   run read before). The query listens on the hub under those keys, so an event about
//!   anything else never wakes it.
//! - **Bounded re-runs.** After an event the query waits `subscriptions.live_coalesce_ms`
//!   (50 ms) for the rest of its burst (an order that ships sends its order and parcel events together), then runs once.
//!   One run at a time: events that arrive during a run make one more run after it.
//! - **Fresh reads, once per entity.** Each run has fresh loaders and reads through the
//!   entity cache, from which the hub deleted what the event changed before handing it over;
//!   concurrent misses of one entry are one upstream call (the cache's single-flight), so a
//!   changed order is read once however many live queries show it.
//! - Each run is bounded by `server.request_timeout_ms` as a query is (a `TIMEOUT` error in
//!   that result); a run with errors is sent as it is and the query keeps listening, under
//!   what the runs before it read too (what failed was not read). A document that does not
//!   validate gets its errors once, and the query ends. A query that
//!   lagged behind the hub runs again (nothing it missed matters once it has read afresh).
//! - A live query's `@defer`s are ignored: every result is whole.

use std::collections::HashSet;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};
use resolvers::events::{HubSubscription, Key, RecvError};
use resolvers::{RequestLoaders, Viewer};

use super::AppState;
use super::shape::Outcome;

/// Runs the query once with the loaders it is given: its result.
pub(crate) type Run = Box<dyn FnMut(&RequestLoaders) -> BoxFuture<'static, Outcome> + Send>;

/// The results of a live query for `viewer`, each run by `run`: its first, then each that
/// differs from the last sent, until the client stops it.
pub(crate) fn stream(run: Run, state: AppState, viewer: &Viewer) -> BoxStream<'static, Outcome> {
    metrics::counter!("switchyard_live_queries_total").increment(1);
    let own: HashSet<Key> = viewer.own_keys().into_iter().collect();
    let listening = state.hub.subscribe_to(own.iter().cloned().collect());
    let live = Live {
        first: true,
        ended: false,
        run,
        state,
        own,
        keys: HashSet::new(),
        listening,
        last: None,
        due: false,
    };
    stream::unfold(live, |mut live| async move {
        let outcome = live.next().await?;
        Some((outcome, live))
    })
    .boxed()
}

/// A live query between two results.
struct Live {
    /// No result sent yet.
    first: bool,
    /// The document does not validate: its one result (the errors) was sent.
    ended: bool,
    run: Run,
    state: AppState,
    /// The viewer's own keys, always listened under.
    own: HashSet<Key>,
    /// What the last run read (with `own`): what `listening` is registered under.
    keys: HashSet<Key>,
    listening: HubSubscription,
    /// The last result sent.
    last: Option<String>,
    /// An event came while the last run ran: run again without waiting for another.
    due: bool,
}

impl Live {
    /// The next result that differs from the last sent; `None` once the hub is closing.
    async fn next(&mut self) -> Option<Outcome> {
        loop {
            if self.ended {
                return None;
            }
            if self.first {
                // The first run: nothing to wait for.
                self.first = false;
                let outcome = self.run().await;
                return Some(self.remember(outcome));
            }
            if !self.due {
                match self.listening.recv().await {
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return None,
                }
                let coalesce = self.state.subscriptions.live_coalesce_ms;
                tokio::time::sleep(Duration::from_millis(coalesce)).await;
            }
            self.due = false;
            while let Some(Ok(_)) = self.listening.recv().now_or_never() {}
            metrics::counter!("switchyard_live_query_runs_total").increment(1);
            let outcome = self.run().await;
            if !self.unchanged(&outcome) {
                return Some(self.remember(outcome));
            }
        }
    }

    /// Runs the query with fresh loaders, then listens under what it read.
    async fn run(&mut self) -> Outcome {
        let loaders = RequestLoaders::new(&self.state.ports);
        let outcome = (self.run)(&loaders).await;
        let mut read = loaders.read();
        read.extend(self.own.iter().cloned());
        match &outcome {
            // It will never run: the document does not validate.
            Outcome::RequestError(_) => self.ended = true,
            // What failed was not read: keep listening under what the last run read too,
            // so the query runs again when it changes.
            Outcome::Executed { errors, .. } if *errors > 0 => {
                read.extend(self.keys.iter().cloned());
            }
            Outcome::Executed { .. } => {}
        }
        // An event already queued came during the run, which may have read before it.
        let pending = self.listening.recv().now_or_never();
        self.due = matches!(pending, Some(Ok(_) | Err(RecvError::Lagged(_))));
        if read != self.keys || matches!(pending, Some(Err(RecvError::Lagged(_)))) {
            self.listening = self.state.hub.subscribe_to(read.iter().cloned().collect());
            self.keys = read;
        }
        outcome
    }

    fn unchanged(&self, outcome: &Outcome) -> bool {
        match (outcome, &self.last) {
            (Outcome::Executed { json, .. }, Some(last)) => json == last,
            _ => false,
        }
    }

    fn remember(&mut self, outcome: Outcome) -> Outcome {
        if let Outcome::Executed { json, .. } = &outcome {
            self.last = Some(json.clone());
        }
        outcome
    }
}
