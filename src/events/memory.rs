//! The in-memory event bus, for a single instance: dedups by event id and delivers straight
//! to the hub, and to the queue of each handler that must see every event (the notification
//! rules, [`EventBus::join_group`]).
//!
//! The hub is a broadcast channel that drops what a slow subscriber has not read; a group's
//! queue is bounded and loses nothing: publishing waits for room in it, and past
//! [`GROUP_WAIT`] refuses the event (`Unavailable`: the webhook answers 503 and its sender
//! retries later), before it is marked seen, so the retry is taken.
//!
//! Ids are remembered for `dedup_ttl_secs`, and at most `stream_max_len` of them (the same
//! bound the Redis stream keeps entries), so memory stays bounded whatever the event rate:
//! beyond it the oldest ids are forgotten first. Since every id lives for the same TTL,
//! insertion order is expiry order and a queue of ids finds the expired ones without a
//! scan.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;
use tokio::sync::Mutex;

use async_trait::async_trait;
use resolvers::events::{DomainEvent, EventHub};
use tokio::time::Instant;

use super::changelog::MemoryLog;
use super::{BusError, EventBus};
use crate::config::EventsConfig;

/// Events a group's queue holds before publishing waits.
const GROUP_QUEUE: usize = 4096;
/// Longest publishing waits for room in a group's queue before it refuses the event.
pub(crate) const GROUP_WAIT: Duration = Duration::from_secs(5);

/// The bus of a lone instance.
pub(crate) struct MemoryBus {
    /// The ids seen recently. One lock around the check, the insert and the delivery makes
    /// the order events were accepted in the order the hub sees them, as with a stream.
    seen: Mutex<SeenIds>,
    /// This instance's fan-out: accepted events go straight there.
    hub: EventHub,
    /// Events handed to the hub, shared with [`super::Events::delivered`].
    delivered: Arc<AtomicU64>,
    /// The queues of the groups that joined: every accepted event goes to each.
    groups: std::sync::Mutex<Vec<tokio::sync::mpsc::Sender<Arc<DomainEvent>>>>,
    /// The last `stream_max_len` accepted events, for delta sync (shared with
    /// [`super::Events::log`]).
    log: Arc<MemoryLog>,
}

/// Recently seen event ids, with expiry and a size bound.
pub(crate) struct SeenIds {
    /// Each remembered id, and when it will be forgotten: the duplicate check.
    expires: HashMap<Arc<str>, Instant>,
    /// The same ids, oldest first (which is soonest to expire, as the TTL is fixed): what
    /// pruning pops from.
    order: VecDeque<(Instant, Arc<str>)>,
    /// How long an id is remembered.
    ttl: Duration,
    /// Most ids remembered at once; the oldest go first beyond it.
    capacity: usize,
}

impl MemoryBus {
    /// A bus delivering to `hub`, remembering ids as `config` says.
    pub(crate) fn new(
        config: &EventsConfig,
        hub: EventHub,
        delivered: Arc<AtomicU64>,
        log: Arc<MemoryLog>,
    ) -> Self {
        Self {
            seen: Mutex::new(SeenIds::new(
                Duration::from_secs(config.dedup_ttl_secs),
                config.stream_max_len,
            )),
            hub,
            delivered,
            groups: std::sync::Mutex::default(),
            log,
        }
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, event: &DomainEvent) -> Result<bool, BusError> {
        // Held across the delivery, so the hub sees events in the order they were accepted.
        let mut seen = self.seen.lock().await;
        if seen.contains(&event.id, Instant::now()) {
            tracing::debug!(event_id = %event.id, "duplicate event absorbed");
            return Ok(false);
        }
        // Room in every group's queue first: an event no group can take is not accepted.
        let groups = self
            .groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut permits = Vec::with_capacity(groups.len());
        for group in &groups {
            match tokio::time::timeout(GROUP_WAIT, group.reserve()).await {
                Ok(Ok(permit)) => permits.push(permit),
                // The group stopped (shutdown): nothing to hand it.
                Ok(Err(_)) => {}
                Err(_) => {
                    tracing::warn!(event_id = %event.id, "an event handler is behind: event refused, to be sent again");
                    return Err(BusError::Unavailable(
                        "the notification rules are behind: send the event again later".into(),
                    ));
                }
            }
        }
        seen.insert(&event.id, Instant::now());
        self.log.append(event);
        let event = Arc::new(event.clone());
        self.hub.deliver(event.clone()).await;
        for permit in permits {
            permit.send(event.clone());
        }
        self.delivered.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    fn join_group(&self) -> Option<tokio::sync::mpsc::Receiver<Arc<DomainEvent>>> {
        let (tx, rx) = tokio::sync::mpsc::channel(GROUP_QUEUE);
        self.groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(tx);
        Some(rx)
    }
}

impl SeenIds {
    /// Remembers ids for `ttl`, at most `capacity` of them (at least one).
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            expires: HashMap::new(),
            order: VecDeque::new(),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// Remembers `id` as seen at `now`; `false` when it was already remembered.
    pub(crate) fn insert(&mut self, id: &str, now: Instant) -> bool {
        self.prune(now);
        if self.expires.contains_key(id) {
            return false;
        }
        while self.order.len() >= self.capacity {
            self.forget_oldest();
        }
        let id: Arc<str> = Arc::from(id);
        let expiry = now + self.ttl;
        self.expires.insert(Arc::clone(&id), expiry);
        self.order.push_back((expiry, id));
        true
    }

    /// Whether `id` is remembered at `now`.
    pub(crate) fn contains(&mut self, id: &str, now: Instant) -> bool {
        self.prune(now);
        self.expires.contains_key(id)
    }

    /// How many ids are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.order.len()
    }

    /// Forgets the ids whose time is up.
    fn prune(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(expiry, _)| *expiry <= now) {
            self.forget_oldest();
        }
    }

    /// Forgets the oldest id. Every remembered id is in the queue exactly once (an id is
    /// only inserted again after it was forgotten), so the map and the queue stay in step.
    fn forget_oldest(&mut self) {
        if let Some((_, id)) = self.order.pop_front() {
            self.expires.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_ids_until_their_ttl_is_up() {
        let start = Instant::now();
        let mut seen = SeenIds::new(Duration::from_secs(10), 100);
        assert!(seen.insert("a", start));
        assert!(!seen.insert("a", start + Duration::from_secs(9)));
        assert!(seen.insert("b", start + Duration::from_secs(5)));
        // "a" expires at 10 s, "b" at 15 s.
        assert!(seen.insert("a", start + Duration::from_secs(10)));
        assert!(!seen.insert("b", start + Duration::from_secs(14)));
        assert_eq!(seen.len(), 2);
        assert!(seen.insert("c", start + Duration::from_secs(30)));
        assert_eq!(seen.len(), 1, "expired ids are pruned");
    }

    #[test]
    fn forgets_the_oldest_ids_beyond_its_capacity() {
        let now = Instant::now();
        let mut seen = SeenIds::new(Duration::from_secs(3600), 3);
        for id in ["a", "b", "c", "d"] {
            assert!(seen.insert(id, now));
        }
        assert_eq!(seen.len(), 3);
        assert!(!seen.insert("b", now));
        assert!(!seen.insert("d", now));
        assert!(seen.insert("a", now), "the oldest id was forgotten");
        assert_eq!(seen.len(), 3);
        assert_eq!(seen.expires.len(), 3);
    }
}
