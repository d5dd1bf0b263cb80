//! Domain events: what happened upstream, in one normalized shape, and where they enter the
//! graph.
//!
//! Webhooks from each upstream are verified and normalized into a [`DomainEvent`] by the
//! server, appended to its event bus (Redis Streams across replicas, memory for one
//! instance), read back by every replica, and handed to that replica's [`EventHub`], from
//! which subscriptions pick what concerns their subscriber.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::cache::{Cache, Cached};
use crate::ids::{CaseId, CustomerId, OrderId, ProductId};
use crate::ports::Source;

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

/// Where an event enters this replica: it first deletes the cache entries the event makes
/// stale, then fans the event out to this replica's subscriptions, so nothing resolved for
/// the event can read the stale copy.
///
/// The fan-out is a broadcast channel: publishing never waits for a subscriber, so a slow
/// subscription can neither slow the bus reader nor other subscriptions; one that falls more
/// than the channel's capacity behind is told so and ended (see the subscription root).
#[derive(Clone)]
pub struct EventHub {
    /// Every subscription holds a receiver.
    sender: broadcast::Sender<Arc<DomainEvent>>,
    /// The entity cache that events invalidate.
    cache: Arc<dyn Cache>,
}

impl EventHub {
    /// A hub keeping up to `capacity` events for subscribers that lag, invalidating `cache`.
    pub fn new(capacity: usize, cache: Arc<dyn Cache>) -> Self {
        Self {
            sender: broadcast::channel(capacity).0,
            cache,
        }
    }

    /// Invalidates what the event makes stale, then hands it to every current subscription
    /// of this replica.
    pub async fn deliver(&self, event: Arc<DomainEvent>) {
        metrics::counter!("switchyard_events_total").increment(1);
        let stale = event.stale_keys();
        if !stale.is_empty() {
            self.cache.delete(&stale).await;
        }
        // No receivers is fine: nobody is subscribed on this replica.
        let _ = self.sender.send(event);
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<DomainEvent>> {
        self.sender.subscribe()
    }
}
