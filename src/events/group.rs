//! Handling each event once across every replica, where subscriptions handle it on every
//! replica: a consumer group on the event stream (the notification rules run this way).
//!
//! [`consume`] runs a [`Handler`]:
//! - with Redis, as a consumer of the group `group` on each partition's stream (created at
//!   the stream's end when it does not exist, so only events from then on are handled): each
//!   replica runs one consumer per partition, on a connection of its own, so the partitions'
//!   entries are shared out among the replicas. A consumer reads new entries with
//!   `XREADGROUP`, handles each and `XACK`s it only when the handler succeeded; an entry
//!   whose handler failed, or whose replica died before acking, stays pending and is taken
//!   over by any replica's consumer of that partition (`XAUTOCLAIM`) once it has been idle
//!   for [`CLAIM_IDLE`]. At least once: a replica that dies after handling and before acking has
//!   the entry handled again, so handlers are idempotent (the notification rules make the
//!   same notification ids from the same event).
//!   When Redis comes back empty (restarted without persistence), the group is created
//!   again, from the start of the new stream, on reconnecting.
//! - with the memory bus (one instance), from the bus's queue for the group (which makes
//!   publishing wait rather than drop an event, see `memory`): every event once, in order; a
//!   failed handler is retried with backoff (100 ms doubling to 5 s) for up to
//!   [`MEMORY_RETRY_FOR`], then the event is logged as lost.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Value;
use resolvers::events::DomainEvent;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::EventBus;
use super::connection::{Connection, Target};
use super::partition::Partitions;
use super::redis::{Backoff, connect_reader, entry_list, stopped, stream_entries};
use crate::config::EventsConfig;

/// How long an entry stays pending before another replica takes it over.
pub(crate) const CLAIM_IDLE: Duration = Duration::from_secs(30);
/// Entries read (or claimed) at once.
const BATCH: usize = 64;
/// Longest a read blocks, so that claims are looked at now and then.
const BLOCK_MS: u64 = 2_000;

/// How long the memory path retries an event whose handler fails.
const MEMORY_RETRY_FOR: Duration = Duration::from_secs(300);

/// What runs once per event.
#[async_trait]
pub(crate) trait Handler: Send + Sync + 'static {
    /// Handles one event; an error leaves it to be handled again.
    async fn handle(&self, event: &DomainEvent) -> anyhow::Result<()>;
}

/// Starts handling every event once (across replicas with Redis) with `handler`, as the
/// consumer group `group`, until `shutdown`.
pub(crate) async fn consume(
    config: &EventsConfig,
    group: &str,
    bus: &dyn EventBus,
    handler: Arc<dyn Handler>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let Some(url) = &config.redis_url else {
        let events = bus
            .join_group()
            .ok_or_else(|| anyhow::anyhow!("the memory bus has no group queues"))?;
        return Ok(tokio::spawn(from_queue(events, handler, shutdown)));
    };
    let target = Arc::new(Target::of(config, url.expose())?);
    let partitions = Partitions::new(&config.stream_key, config.partitions, config.cluster);
    let name = consumer_name();
    let mut consumers = Vec::with_capacity(partitions.count());
    for index in 0..partitions.count() {
        let stream_key = partitions.stream(index);
        let mut connection = connect_reader(&target).await?;
        // At first start, only the events from now on.
        create_group(&mut connection, &stream_key, group, "$").await?;
        let consumer = Consumer {
            target: Arc::clone(&target),
            stream_key,
            group: group.to_owned(),
            name: name.clone(),
            handler: Arc::clone(&handler),
            shutdown: shutdown.clone(),
        };
        consumers.push(tokio::spawn(consumer.run(Some(connection))));
    }
    tracing::info!(group, consumer = %name, partitions = partitions.count(), "handling events once per group");
    let group = group.to_owned();
    Ok(tokio::spawn(async move {
        for consumer in consumers {
            if let Err(error) = consumer.await {
                tracing::error!(%error, %group, "an event group consumer ended abnormally");
            }
        }
    }))
}

/// A consumer name unique to this process.
fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "switchyard".to_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{host}-{}-{nanos:x}", std::process::id())
}

/// `XGROUP CREATE <stream> <group> <from> MKSTREAM`; a group that exists is fine.
async fn create_group(
    connection: &mut Connection,
    stream_key: &str,
    group: &str,
    from: &str,
) -> anyhow::Result<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream_key)
        .arg(group)
        .arg(from)
        .arg("MKSTREAM")
        .query_async(connection)
        .await;
    match created {
        Err(e) if e.code() != Some("BUSYGROUP") => {
            Err(anyhow::anyhow!("creating the consumer group {group}: {e}"))
        }
        _ => Ok(()),
    }
}

/// The memory path: each event of the group's queue in turn, retried while its handler
/// fails (see the module docs).
async fn from_queue(
    mut events: mpsc::Receiver<Arc<DomainEvent>>,
    handler: Arc<dyn Handler>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            event = events.recv() => event,
        };
        let Some(event) = event else { break };
        let started = tokio::time::Instant::now();
        let mut backoff = Backoff::default();
        loop {
            let Err(error) = handler.handle(&event).await else {
                break;
            };
            if started.elapsed() >= MEMORY_RETRY_FOR {
                tracing::error!(%error, event = %event.id, "handling an event failed for 5 minutes: given up, it is lost");
                break;
            }
            let delay = backoff.next_delay();
            tracing::warn!(%error, event = %event.id, retry_in_ms = delay.as_millis() as u64, "handling an event failed; it will be retried");
            tokio::select! {
                biased;
                () = stopped(&mut shutdown) => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// One replica's consumer of the group on one partition's stream.
struct Consumer {
    /// Where to reconnect to.
    target: Arc<Target>,
    stream_key: String,
    group: String,
    name: String,
    handler: Arc<dyn Handler>,
    shutdown: watch::Receiver<bool>,
}

impl Consumer {
    async fn run(mut self, mut connection: Option<Connection>) {
        let mut backoff = Backoff::default();
        loop {
            let open = match connection.as_mut() {
                Some(open) => open,
                None => match self.reconnect().await {
                    Ok(reconnected) => connection.insert(reconnected),
                    Err(error) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(%error, group = %self.group, "event group cannot reach Redis");
                        if !self.pause(delay).await {
                            break;
                        }
                        continue;
                    }
                },
            };
            let mut shutdown = self.shutdown.clone();
            let round = async {
                let claimed = self.claim(open).await?;
                let read = if claimed.is_empty() {
                    self.read(open).await?
                } else {
                    claimed
                };
                for entry in read {
                    let handled = match entry.decode() {
                        Ok(event) => match self.handler.handle(&event).await {
                            Ok(()) => true,
                            Err(e) => {
                                tracing::warn!(error = %e, event = %event.id, group = %self.group, "handling an event failed; it will be retried");
                                false
                            }
                        },
                        // Cannot ever be handled: acknowledged so it is not claimed forever.
                        Err(reason) => {
                            tracing::warn!(%reason, entry = %entry.id, "skipping an entry that does not decode");
                            true
                        }
                    };
                    if handled {
                        let _: () = redis::cmd("XACK")
                            .arg(&self.stream_key)
                            .arg(&self.group)
                            .arg(&entry.id)
                            .query_async(open)
                            .await?;
                    }
                }
                Ok::<_, anyhow::Error>(())
            };
            let result = tokio::select! {
                biased;
                () = stopped(&mut shutdown) => break,
                result = round => result,
            };
            match result {
                Ok(()) => backoff.reset(),
                Err(error) => {
                    connection = None;
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, group = %self.group, "event group read failed, reconnecting");
                    if !self.pause(delay).await {
                        break;
                    }
                }
            }
        }
        tracing::info!(group = %self.group, "event group consumer stopped");
    }

    /// A new connection, and the group created again if Redis lost it (restarted empty):
    /// from the start of the stream, which then holds only events from after the loss.
    async fn reconnect(&self) -> anyhow::Result<Connection> {
        let mut connection = connect_reader(&self.target).await?;
        create_group(&mut connection, &self.stream_key, &self.group, "0").await?;
        Ok(connection)
    }

    /// Entries of other consumers pending for longer than [`CLAIM_IDLE`], now ours.
    async fn claim(&self, connection: &mut Connection) -> anyhow::Result<Vec<super::redis::Entry>> {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream_key)
            .arg(&self.group)
            .arg(&self.name)
            .arg(CLAIM_IDLE.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(BATCH)
            .query_async(connection)
            .await?;
        // [next cursor, entries, deleted ids]
        let Value::Array(parts) = reply else {
            return Ok(Vec::new());
        };
        match parts.into_iter().nth(1) {
            Some(entries) => Ok(entry_list(entries)?),
            None => Ok(Vec::new()),
        }
    }

    /// New entries for this consumer.
    async fn read(&self, connection: &mut Connection) -> anyhow::Result<Vec<super::redis::Entry>> {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS")
            .arg(&self.stream_key)
            .arg(">")
            .query_async(connection)
            .await?;
        Ok(stream_entries(reply)?)
    }

    async fn pause(&mut self, delay: Duration) -> bool {
        tokio::select! {
            biased;
            () = stopped(&mut self.shutdown) => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}
