//! The event bus: carries [`DomainEvent`]s from ingestion to every replica's [`EventHub`].
//!
//! Webhooks are verified and normalized by `ingest`, which publishes each event through
//! [`Events::bus`]. Every replica reads the bus back and hands each event to its own hub,
//! from which subscriptions, cache invalidation and notification rules pick what concerns
//! them. Publishers never deliver to their own hub directly: the bus is the one path, so
//! every replica (the publishing one included) sees the same events in the same order.
//!
//! # Layout
//! - [`start`] picks the backend from [`EventsConfig`]: Redis when `redis_url` is set,
//!   memory otherwise, and returns an [`Events`] handle (the bus, a delivery counter, the
//!   reader task).
//! - `memory`: one instance only. Publishing dedups by id and hands the event straight to
//!   the hub; there is no reader.
//! - `changelog`: the bus read back from a position ([`Events::log`], for delta sync): the
//!   Redis streams themselves, or the memory bus's last `stream_max_len` events.
//! - `redis`: Redis streams shared by all replicas, `partitions` of them (one by default),
//!   on one Redis node or a Redis Cluster (`connection`). An event goes to the stream of its
//!   customer (`partition`: a stable hash of the customer id; events without one go to the
//!   first). Publishing runs one Lua script that marks the id as seen (`<stream>:seen:<id>`,
//!   expiring after `dedup_ttl_secs`) and appends the event (`XADD <stream> MAXLEN ~
//!   <stream_max_len>`) in one atomic step; each replica has a reader task per partition
//!   following its stream with `XREAD BLOCK` on a connection of its own, delivering what it
//!   reads to the hub.
//!
//! # Guarantees
//! - **Durable before acknowledged.** [`EventBus::publish`] returns `Ok` only once the event
//!   is on the bus: for Redis, once Redis has acknowledged the script that appended it to the
//!   stream; for memory, once it is handed to the hub.
//! - **Duplicates absorbed.** A second publish of an event id within `dedup_ttl_secs` of the
//!   first returns `Ok(false)` and delivers nothing. With Redis this holds across replicas,
//!   and the seen-marker and the stream entry are written by one script, so a failure can
//!   never mark an event seen without storing it (the marker is removed if the append fails).
//!   A publish that failed (e.g. timed out) may therefore be retried safely.
//! - **Every replica, every event, once, in order per customer.** Each replica's readers
//!   deliver every event appended after its [`start`] returned to its hub exactly once, in
//!   the order of its stream, so one customer's events in the order Redis accepted them,
//!   including across lost Redis connections: each reader remembers the id of the last entry
//!   it handled, backs off (100 ms doubling to 5 s), reconnects and resumes after that id,
//!   so events appended while it was cut off arrive after it reconnects, none twice. With
//!   one partition that is one order for all events, the same on every replica.
//! - **A bad entry never stops the reader.** An entry that does not decode as a
//!   [`DomainEvent`] is logged and skipped.
//! - **Prompt shutdown.** The reader stops as soon as the shutdown signal turns `true` (or
//!   its sender is dropped), also in the middle of a blocked read; [`Events::join`] waits
//!   for it.
//!
//! # Not guaranteed
//! - **History.** A replica starts after the stream's last entry at the time of [`start`];
//!   events from before are not replayed to its hub, and nothing is replayed after a restart.
//!   (What the streams still hold can be read back from a position through [`Events::log`],
//!   which delta sync does; the memory bus's ring is lost with the process.)
//! - **Unbounded retention.** Each stream keeps roughly `stream_max_len` entries. A replica
//!   cut off for longer than it takes to append that many misses the trimmed ones; after
//!   reconnecting, the reader logs a warning when the stream was trimmed past its position.
//! - **Durability beyond Redis.** "Acknowledged by Redis" means in Redis' memory. Surviving a
//!   Redis crash depends on its persistence (`appendonly`, `appendfsync`), and a failover
//!   to an asynchronously replicated replica can lose the latest events and seen-markers.
//! - **Dedup beyond the TTL, or by content.** Ids are remembered for `dedup_ttl_secs` (the
//!   memory bus also forgets the oldest beyond `stream_max_len` ids); two different events
//!   with the same id count as one, the first wins (with partitions: when they are of the
//!   same customer; a redelivery is, being the same event).
//! - **Order by time of occurrence.** Order is the order Redis accepted the appends, not
//!   `occurred_at`.
//! - **Delivery to each subscription.** The hub gives each subscription a bounded queue: a
//!   subscription more than `hub_capacity` events behind is told it lagged (see
//!   [`EventHub`]).
//! - **One order across partitions.** Events of different partitions (customers) are
//!   delivered in whatever order their readers get to them, which may differ from replica
//!   to replica. Changing `partitions` moves customers between streams: their events from
//!   before and after the change are not ordered with each other.
//! - **Redis Cluster for the rest.** `cluster = true` covers this bus and its consumer
//!   groups; the push outbox, the cache and the other stores still need one Redis endpoint.
//!   The Redis user needs `EVAL`, `SET`, `DEL`, `XADD`, `XREAD`, `XREVRANGE` and `XINFO`
//!   (and, on a cluster, `CLUSTER SLOTS`).
//! - **The memory bus across processes.** It serves one instance, and forgets everything
//!   when it stops.

mod changelog;
mod connection;
pub(crate) mod group;
pub(crate) mod memory;
mod partition;
mod redis;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::bail;
use async_trait::async_trait;
use resolvers::events::{DomainEvent, EventHub};
use resolvers::sync::ChangeLog;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::EventsConfig;

/// The durable, shared log of events (Redis Streams or memory behind it), where ingestion
/// publishes.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Appends an event durably. `Ok(false)` when an event with the same id was already
    /// accepted (a duplicate delivery), which is not an error.
    async fn publish(&self, event: &DomainEvent) -> Result<bool, BusError>;

    /// A queue of every event accepted from now on, for a handler that must see each one
    /// (the memory bus: see `memory`). `None` where consumer groups do this (Redis).
    fn join_group(&self) -> Option<tokio::sync::mpsc::Receiver<Arc<DomainEvent>>> {
        None
    }
}

/// Why the bus refused an event.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus's store could not be reached; the event was not accepted.
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
}

/// The running event bus of this replica: where to publish, and this replica's reader.
pub struct Events {
    /// Where events are published (ingestion holds a clone); Redis or memory behind it.
    pub bus: Arc<dyn EventBus>,
    /// The same events read back from a position: delta sync's change log.
    pub log: Arc<dyn ChangeLog>,
    /// Events handed to this replica's hub so far, shared with the reader (or the memory
    /// bus) that counts them; read by [`Events::delivered`] for tests and metrics.
    delivered: Arc<AtomicU64>,
    /// The tasks following the Redis streams, one per partition; none with the memory bus,
    /// which delivers as it publishes. Kept so that [`Events::join`] can wait for them at
    /// shutdown.
    readers: Vec<JoinHandle<()>>,
}

/// Starts the event bus described by `config`, delivering to `hub`.
///
/// With `redis_url` set, connects to Redis (an error if it cannot be reached, naming the
/// address but never the credentials), notes where each partition's stream ends now, and
/// spawns the readers; every event published after this returns reaches `hub`. Without it,
/// starts the in-memory bus. The readers stop when `shutdown` turns `true` or its sender is
/// dropped.
pub async fn start(
    config: &EventsConfig,
    hub: EventHub,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Events> {
    validate(config)?;
    let delivered = Arc::new(AtomicU64::new(0));
    match &config.redis_url {
        None => {
            tracing::info!("event bus: in memory (one instance only)");
            let log = Arc::new(changelog::MemoryLog::new(config.stream_max_len));
            let bus = memory::MemoryBus::new(config, hub, Arc::clone(&delivered), Arc::clone(&log));
            Ok(Events {
                bus: Arc::new(bus),
                log,
                delivered,
                readers: Vec::new(),
            })
        }
        Some(url) => {
            let started =
                self::redis::start(config, url.expose(), hub, shutdown, Arc::clone(&delivered))
                    .await?;
            Ok(Events {
                bus: started.bus,
                log: started.log,
                delivered,
                readers: started.readers,
            })
        }
    }
}

/// Most partitions: each costs every replica a reader task and its connections (on a
/// cluster, one to each primary), and every consumer group as many again.
const MAX_PARTITIONS: usize = 256;

/// Rejects settings under which the guarantees above could not hold.
fn validate(config: &EventsConfig) -> anyhow::Result<()> {
    if config.dedup_ttl_secs == 0 {
        bail!("events.dedup_ttl_secs must be at least 1 (0 would disable duplicate detection)");
    }
    if config.stream_max_len == 0 {
        bail!("events.stream_max_len must be at least 1");
    }
    if config.stream_key.is_empty() {
        bail!("events.stream_key must not be empty");
    }
    if !(1..=MAX_PARTITIONS).contains(&config.partitions) {
        bail!(
            "events.partitions must be between 1 and {MAX_PARTITIONS} (each partition is a \
             reader with connections of its own on every replica)"
        );
    }
    if config.cluster && config.redis_url.is_none() {
        bail!("events.cluster needs events.redis_url: a node of the cluster");
    }
    if !config.cluster && !config.cluster_nodes.is_empty() {
        bail!("events.cluster_nodes needs events.cluster = true");
    }
    Ok(())
}

impl Events {
    /// How many events this replica has handed to its hub (not counting skipped entries).
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Waits for the readers to stop; call after the shutdown signal turned `true`. Returns
    /// at once with the memory bus.
    pub async fn join(self) {
        for reader in self.readers {
            if let Err(error) = reader.await {
                tracing::error!(%error, "an event stream reader ended abnormally");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn refusal(config: EventsConfig) -> String {
        validate(&config).expect_err("refused").to_string()
    }

    #[test]
    fn partitions_and_cluster_settings_are_checked() {
        assert!(validate(&EventsConfig::default()).is_ok());
        for partitions in [0, MAX_PARTITIONS + 1] {
            let message = refusal(EventsConfig {
                partitions,
                ..EventsConfig::default()
            });
            assert!(
                message.starts_with("events.partitions must be between 1 and 256"),
                "{message}"
            );
        }
        assert_eq!(
            refusal(EventsConfig {
                cluster: true,
                ..EventsConfig::default()
            }),
            "events.cluster needs events.redis_url: a node of the cluster"
        );
        assert_eq!(
            refusal(EventsConfig {
                redis_url: Some(Secret::new("redis://10.0.0.1:6379")),
                cluster_nodes: vec![Secret::new("redis://10.0.0.2:6379")],
                ..EventsConfig::default()
            }),
            "events.cluster_nodes needs events.cluster = true"
        );
        assert!(
            validate(&EventsConfig {
                redis_url: Some(Secret::new("redis://10.0.0.1:6379")),
                cluster: true,
                cluster_nodes: vec![Secret::new("redis://10.0.0.2:6379")],
                partitions: MAX_PARTITIONS,
                ..EventsConfig::default()
            })
            .is_ok()
        );
    }
}
