//! The cross-request entity cache (the port), what is cached for how long, and under which
//! keys (an event's stale keys, `DomainEvent::stale_keys` in `events`, are built from them).
//!
//! Loaders read through it: hits skip the upstream, misses are fetched in one batch and
//! stored. Only entities read by id are cached (customers, products, orders, parcel
//! tracking); lists and anything about cases and tasks are always read live. When an event
//! says an entity changed, every replica deletes its entry before handing the event to its
//! subscriptions, so a subscription (or the next query) reads the change, never the stale
//! copy. The cache is an optimization: its failures are logged and count as misses.
//!
//! Stale-if-error: an entry is kept [`Cache::stale_if_error`] past its TTL. Past the TTL it
//! is a miss, but when the upstream then fails (or its breaker is open), the stale copy is
//! served instead of an error, and the response says so: `extensions.stale` lists each
//! entity served stale, with its type, id and age ([`StaleRead`]). An entry is never served
//! after an event made it stale (the event deletes it). Entities are cached by id, never per
//! user, and the resolvers authorize whatever they read, fresh or stale, so a stale copy is
//! shown to exactly whom the fresh one would be.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A key-value store with expiry (Redis, or memory for one instance).
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// How long entries are kept past their TTL, to be served if their upstream fails.
    fn stale_if_error(&self) -> Duration {
        Duration::ZERO
    }
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

    /// The key of one entity. (`v2`: entries are [`Entry`]s, stamped with when they were
    /// stored.)
    pub(crate) fn key(self, id: &str) -> String {
        let kind = match self {
            Cached::Customer => "customer",
            Cached::Product => "product",
            Cached::Order => "order",
            Cached::Tracking => "tracking",
        };
        format!("entity:v2:{kind}:{id}")
    }

    /// The GraphQL type of what is cached, for `extensions.stale`.
    pub(crate) fn type_name(self) -> &'static str {
        match self {
            Cached::Customer => "Customer",
            Cached::Product => "Product",
            Cached::Order => "Order",
            Cached::Tracking => "Shipment",
        }
    }
}

/// A cached value and when it was stored (milliseconds since the Unix epoch).
#[derive(Serialize, Deserialize)]
pub(crate) struct Entry<V> {
    pub(crate) at: u64,
    pub(crate) v: V,
}

/// Now, as [`Entry::at`] counts.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One entity a request was served from a stale copy because its upstream failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleRead {
    /// Its GraphQL type (`Order`).
    pub type_name: &'static str,
    /// Its id.
    pub id: String,
    /// How long ago its copy was fetched.
    pub age: Duration,
}

/// The stale reads of one request.
#[derive(Debug, Default)]
pub(crate) struct StaleLog(Mutex<Vec<StaleRead>>);

impl StaleLog {
    pub(crate) fn note(&self, read: StaleRead) {
        let mut reads = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !reads.contains(&read) {
            reads.push(read);
        }
    }

    /// The reads noted so far, forgotten here.
    pub(crate) fn take(&self) -> Vec<StaleRead> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
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
