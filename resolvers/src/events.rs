//! Domain events: what happened upstream, in one normalized shape, and where they enter the
//! graph.
//!
//! Webhooks from each upstream are verified and normalized into a [`DomainEvent`] by the
//! server, appended to its event bus (Redis Streams across replicas, memory for one
//! instance), read back by every replica, and handed to that replica's [`EventHub`], which
//! hands each to the subscriptions registered under its keys; each picks what concerns its
//! subscriber.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cache::{Cache, Cached};
use crate::ids::{CaseId, CustomerId, OrderId, ProductId};
use crate::ports::Source;
use crate::queue::Queue;
pub use crate::queue::RecvError;

/// What kind of thing happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    /// An order was placed or changed status.
    OrderUpdated,
    /// The carrier scanned a parcel.
    ShipmentUpdated,
    /// A support case was opened or changed status.
    CaseUpdated,
    /// Someone commented on a support case.
    CaseCommentAdded,
    /// A process task was created, claimed or completed.
    TaskUpdated,
    /// A process instance started or ended.
    ProcessUpdated,
    /// A product's price or stock changed.
    ProductUpdated,
}

/// Where it happened: the ids an event is about (only those that apply are set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub order_id: Option<OrderId>,
    pub case_id: Option<CaseId>,
    pub tracking_number: Option<String>,
    pub task_id: Option<i64>,
    pub process_instance_id: Option<i64>,
    #[serde(default)]
    pub product_id: Option<ProductId>,
}

/// One thing that happened upstream, normalized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainEvent {
    /// Unique per event, stable across redeliveries (`<source>:<upstream event id>`): the key
    /// duplicates are absorbed by.
    pub id: String,
    pub kind: EventKind,
    /// Which upstream said so.
    pub source: Source,
    /// The customer it concerns, when there is one.
    pub customer_id: Option<CustomerId>,
    pub subject: Subject,
    /// When it happened upstream.
    pub occurred_at: DateTime<Utc>,
    /// Users and groups a task event is for (potential owners and the actual owner).
    #[serde(default)]
    pub audience: Vec<String>,
    /// A short human-readable summary for feeds and push notifications.
    pub summary: String,
    /// What the upstream said, as it said it (the verified webhook body): for rules that need
    /// a source's specifics (e.g. notification rules). Never sent to clients as is.
    #[serde(default)]
    pub payload: serde_json::Value,
}

impl DomainEvent {
    /// The entity cache entries this event makes stale (the hub deletes them before anyone
    /// reads the event).
    pub(crate) fn stale_keys(&self) -> Vec<String> {
        let s = &self.subject;
        let mut keys = Vec::new();
        if matches!(
            self.kind,
            EventKind::OrderUpdated | EventKind::ShipmentUpdated
        ) {
            keys.extend(s.order_id.iter().map(|id| Cached::Order.key(id.as_str())));
        }
        if self.kind == EventKind::ShipmentUpdated {
            keys.extend(s.tracking_number.iter().map(|n| Cached::Tracking.key(n)));
        }
        if self.kind == EventKind::ProductUpdated {
            keys.extend(
                s.product_id
                    .iter()
                    .map(|id| Cached::Product.key(id.as_str())),
            );
        }
        keys
    }
}

/// What a subscription listens under, and an event is found by: each event is handed only to
/// the subscriptions registered under one of its [`DomainEvent::keys`] (and to those that take
/// every event). A key only narrows who is asked: each subscription still checks every event it
/// gets as it always did (kind, subject, who may see it), so the index decides nothing about
/// authorization.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// The customer an event concerns (`customer_id`).
    Customer(CustomerId),
    /// The order it is about (`subject.order_id`).
    Order(OrderId),
    /// The support case it is about (`subject.case_id`).
    Case(CaseId),
    /// A user or group of its `audience` (task events).
    Audience(String),
    /// The product it is about (`subject.product_id`).
    Product(ProductId),
}

impl DomainEvent {
    /// The keys this event is found by (see [`Key`]).
    pub fn keys(&self) -> Vec<Key> {
        let mut keys = Vec::with_capacity(4 + self.audience.len());
        keys.extend(self.customer_id.clone().map(Key::Customer));
        keys.extend(self.subject.order_id.clone().map(Key::Order));
        keys.extend(self.subject.case_id.clone().map(Key::Case));
        keys.extend(self.audience.iter().cloned().map(Key::Audience));
        keys.extend(self.subject.product_id.clone().map(Key::Product));
        keys
    }
}

/// Where an event enters this replica: it first deletes the cache entries the event makes
/// stale, then hands the event to the subscriptions of this replica it concerns, so nothing
/// resolved for the event can read the stale copy.
///
/// Subscriptions register under the [`Key`]s they can match ([`EventHub::subscribe_to`]), so
/// an event wakes only the subscriptions under its keys, not every subscription of the
/// replica. Each subscription has a bounded [`Queue`] of `capacity` events: handing an event
/// over never waits, so a slow subscription can neither slow the bus reader nor other
/// subscriptions; one that falls more than `capacity` events behind is told so and ended (see
/// the subscription root). Dropping a [`HubSubscription`] takes it out of the index.
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<Hub>,
}

struct Hub {
    /// How many events each subscription's queue keeps.
    capacity: usize,
    /// The entity cache that events invalidate.
    cache: Arc<dyn Cache>,
    /// A std mutex: held to add, remove or hand out to subscriptions, never across an await.
    index: Mutex<Index>,
}

/// The subscriptions of this replica, by key.
#[derive(Default)]
struct Index {
    /// Tells subscriptions apart (to take the right one out).
    last_id: u64,
    by_key: HashMap<Key, Vec<Registered>>,
    /// Those that take every event.
    everything: Vec<Registered>,
    /// How many subscriptions are registered (each once, whatever its number of keys).
    count: usize,
}

struct Registered {
    id: u64,
    queue: Arc<Queue<Arc<DomainEvent>>>,
}

impl Hub {
    fn index(&self) -> MutexGuard<'_, Index> {
        // Every change to the index is one insert or remove: poisoning leaves it consistent.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl EventHub {
    /// A hub keeping up to `capacity` events for each subscriber that lags, invalidating
    /// `cache`.
    pub fn new(capacity: usize, cache: Arc<dyn Cache>) -> Self {
        Self {
            inner: Arc::new(Hub {
                capacity,
                cache,
                index: Mutex::default(),
            }),
        }
    }

    /// Invalidates what the event makes stale, then hands it to every current subscription
    /// of this replica registered under one of its keys (once each), and to those that take
    /// every event.
    pub async fn deliver(&self, event: Arc<DomainEvent>) {
        metrics::counter!("switchyard_events_total").increment(1);
        let stale = event.stale_keys();
        if !stale.is_empty() {
            self.inner.cache.delete(&stale).await;
        }
        let keys = event.keys();
        let index = self.inner.index();
        let mut reached: Vec<&Registered> = index.everything.iter().collect();
        for key in &keys {
            reached.extend(index.by_key.get(key).into_iter().flatten());
        }
        // A subscription under two of the event's keys gets it once.
        reached.sort_unstable_by_key(|r| r.id);
        reached.dedup_by_key(|r| r.id);
        for registered in reached {
            // `false`: it lagged, and learns so from its queue; it leaves when it ends.
            registered.queue.push(event.clone());
        }
    }

    /// Events from now on that have one of `keys` (see [`Key`]).
    pub fn subscribe_to(&self, keys: Vec<Key>) -> HubSubscription {
        self.register(Some(keys))
    }

    /// Every event from now on.
    pub fn subscribe(&self) -> HubSubscription {
        self.register(None)
    }

    fn register(&self, keys: Option<Vec<Key>>) -> HubSubscription {
        let queue = Arc::new(Queue::new(self.inner.capacity));
        let mut index = self.inner.index();
        index.last_id += 1;
        let id = index.last_id;
        let registered = || Registered {
            id,
            queue: queue.clone(),
        };
        match &keys {
            Some(keys) => {
                for key in keys {
                    index
                        .by_key
                        .entry(key.clone())
                        .or_default()
                        .push(registered());
                }
            }
            None => index.everything.push(registered()),
        }
        index.count += 1;
        drop(index);
        HubSubscription {
            hub: self.inner.clone(),
            id,
            keys,
            queue,
        }
    }

    /// How many subscriptions are registered now (each once): for `/metrics`, and to see that
    /// none is left behind.
    pub fn subscriptions(&self) -> usize {
        self.inner.index().count
    }
}

/// A subscription to the hub: its events, in order. Dropping it unsubscribes.
pub struct HubSubscription {
    hub: Arc<Hub>,
    id: u64,
    /// `None`: every event.
    keys: Option<Vec<Key>>,
    queue: Arc<Queue<Arc<DomainEvent>>>,
}

impl HubSubscription {
    /// The next event; [`RecvError::Lagged`] once this subscription fell more than the hub's
    /// capacity behind (it should end: what it missed is gone).
    pub async fn recv(&self) -> Result<Arc<DomainEvent>, RecvError> {
        self.queue.recv().await
    }
}

impl Drop for HubSubscription {
    fn drop(&mut self) {
        let mut index = self.hub.index();
        let id = self.id;
        match &self.keys {
            Some(keys) => {
                for key in keys {
                    if let Some(registered) = index.by_key.get_mut(key) {
                        registered.retain(|r| r.id != id);
                        if registered.is_empty() {
                            index.by_key.remove(key);
                        }
                    }
                }
            }
            None => index.everything.retain(|r| r.id != id),
        }
        index.count -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::NoCache;

    fn hub(capacity: usize) -> EventHub {
        EventHub::new(capacity, Arc::new(NoCache))
    }

    fn event(id: &str, customer: &str, order: &str, audience: &[&str]) -> Arc<DomainEvent> {
        Arc::new(DomainEvent {
            id: id.to_owned(),
            kind: EventKind::OrderUpdated,
            source: Source::Backend,
            customer_id: Some(CustomerId::from_upstream(customer)),
            subject: Subject {
                order_id: Some(OrderId::from_upstream(order)),
                ..Subject::default()
            },
            occurred_at: Utc::now(),
            audience: audience.iter().map(|a| (*a).to_owned()).collect(),
            summary: String::new(),
            payload: serde_json::Value::Null,
        })
    }

    fn customer(id: &str) -> Key {
        Key::Customer(CustomerId::from_upstream(id))
    }

    /// The ids of the events waiting for `subscription`, without waiting.
    async fn waiting(subscription: &HubSubscription) -> Vec<String> {
        let mut ids = Vec::new();
        while !subscription.queue.is_empty() {
            ids.push(subscription.recv().await.unwrap().id.clone());
        }
        ids
    }

    #[tokio::test]
    async fn an_event_reaches_only_the_subscriptions_under_its_keys_once_each() {
        let hub = hub(16);
        let ada = hub.subscribe_to(vec![customer("cust-0001")]);
        let bob = hub.subscribe_to(vec![customer("cust-0002")]);
        let order = hub.subscribe_to(vec![Key::Order(OrderId::from_upstream("ord-1"))]);
        // An agent's tasks: under their own name and their group's.
        let agent = hub.subscribe_to(vec![
            Key::Audience("agent-01".into()),
            Key::Audience("agents".into()),
        ]);
        let everything = hub.subscribe();

        hub.deliver(event("e1", "cust-0001", "ord-1", &[])).await;
        hub.deliver(event("e2", "cust-0002", "ord-2", &["agents", "agent-01"]))
            .await;

        assert_eq!(waiting(&ada).await, ["e1"]);
        assert_eq!(waiting(&bob).await, ["e2"]);
        assert_eq!(waiting(&order).await, ["e1"]);
        assert_eq!(waiting(&agent).await, ["e2"], "once, under two of its keys");
        assert_eq!(waiting(&everything).await, ["e1", "e2"]);
    }

    #[tokio::test]
    async fn dropping_a_subscription_takes_it_out_of_the_index() {
        let hub = hub(16);
        for round in 0..100 {
            let a = hub.subscribe_to(vec![customer("cust-0001"), Key::Audience("x".into())]);
            let b = hub.subscribe_to(vec![customer("cust-0001")]);
            let all = hub.subscribe();
            assert_eq!(hub.subscriptions(), 3);
            hub.deliver(event(&format!("e{round}"), "cust-0001", "ord-1", &["x"]))
                .await;
            drop((a, b, all));
            assert_eq!(hub.subscriptions(), 0);
        }
        let index = hub.inner.index();
        assert!(index.by_key.is_empty() && index.everything.is_empty());
    }

    #[tokio::test]
    async fn a_subscription_that_falls_behind_is_told_and_others_are_not() {
        let hub = hub(2);
        let slow = hub.subscribe_to(vec![customer("cust-0001")]);
        let reading = hub.subscribe_to(vec![customer("cust-0001")]);
        for n in 0..3 {
            hub.deliver(event(&format!("e{n}"), "cust-0001", "ord-1", &[]))
                .await;
            assert_eq!(reading.recv().await.unwrap().id, format!("e{n}"));
        }
        assert_eq!(slow.recv().await.unwrap_err(), RecvError::Lagged(3));
    }
}
