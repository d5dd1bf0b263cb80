//! The cross-request entity cache (the port), what is cached for how long, and under which
//! keys (an event's stale keys, `DomainEvent::stale_keys` in `events`, are built from them).
//!
//! Loaders read through it: hits skip the upstream, misses are fetched in one batch and
//! stored. Only entities read by id are cached (customers, products, orders, parcel
//! tracking); lists and anything about cases and tasks are always read live. When an event
//! says an entity changed, every replica deletes its entry before handing the event to its
//! subscriptions, so a subscription (or the next query) reads the change, never the stale
//! copy. The cache is an optimization: its failures are logged and count as misses.

use std::time::Duration;

use async_trait::async_trait;

/// A key-value store with expiry (Redis, or memory for one instance).
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// The values stored under `keys`, `None` for misses, in the same order.
    async fn get_many(&self, keys: &[String]) -> Vec<Option<Vec<u8>>>;
    /// Stores values that expire after `ttl`.
    async fn put_many(&self, entries: Vec<(String, Vec<u8>)>, ttl: Duration);
    /// Deletes entries (missing ones are fine).
    async fn delete(&self, keys: &[String]);
}

/// What is cached, and for how long (the one place holding these limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cached {
    /// Customers by id: names and addresses rarely change.
    Customer,
    /// Products by id: the catalogue.
    Product,
    /// Orders by id: change with status events (invalidated then).
    Order,
    /// Parcel tracking: the carrier is rate limited; scans arrive as events.
    Tracking,
}

impl Cached {
    /// How long an entry lives when no event removes it first.
    pub(crate) fn ttl(self) -> Duration {
        match self {
            Cached::Customer => Duration::from_secs(60),
            Cached::Product => Duration::from_secs(300),
            Cached::Order => Duration::from_secs(30),
            Cached::Tracking => Duration::from_secs(60),
        }
    }

    /// The key of one entity.
    pub(crate) fn key(self, id: &str) -> String {
        let kind = match self {
            Cached::Customer => "customer",
            Cached::Product => "product",
            Cached::Order => "order",
            Cached::Tracking => "tracking",
        };
        format!("entity:v1:{kind}:{id}")
    }
}

/// A cache that stores nothing: every read misses.
pub struct NoCache;

#[async_trait]
impl Cache for NoCache {
    async fn get_many(&self, keys: &[String]) -> Vec<Option<Vec<u8>>> {
        vec![None; keys.len()]
    }

    async fn put_many(&self, _entries: Vec<(String, Vec<u8>)>, _ttl: Duration) {}

    async fn delete(&self, _keys: &[String]) {}
}
