//! The in-memory event bus, for a single instance: dedups by event id and delivers straight
//! to the hub.
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

use super::{BusError, EventBus};
use crate::config::EventsConfig;

/// The bus of a lone instance.
pub(crate) struct MemoryBus {
    /// The ids seen recently. One lock around the check, the insert and the delivery makes
    /// the order events were accepted in the order the hub sees them, as with a stream.
    seen: Mutex<SeenIds>,
    /// This instance's fan-out: accepted events go straight there.
    hub: EventHub,
    /// Events handed to the hub, shared with [`super::Events::delivered`].
    delivered: Arc<AtomicU64>,
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
    pub(crate) fn new(config: &EventsConfig, hub: EventHub, delivered: Arc<AtomicU64>) -> Self {
        Self {
            seen: Mutex::new(SeenIds::new(
                Duration::from_secs(config.dedup_ttl_secs),
                config.stream_max_len,
            )),
            hub,
            delivered,
        }
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, event: &DomainEvent) -> Result<bool, BusError> {
        // Held across the delivery, so the hub sees events in the order they were accepted.
        let mut seen = self.seen.lock().await;
        if !seen.insert(&event.id, Instant::now()) {
            tracing::debug!(event_id = %event.id, "duplicate event absorbed");
            return Ok(false);
        }
        self.hub.deliver(Arc::new(event.clone())).await;
        self.delivered.fetch_add(1, Ordering::Relaxed);
        Ok(true)
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
