//! Handling each event once across every replica, where subscriptions handle it on every
//! replica: a consumer group on the event stream (the notification rules run this way).
//!
//! [`consume`] runs a [`Handler`]:
//! - with Redis, as a consumer of the group `group` on the event stream (created at the
//!   stream's end when it does not exist, so only events from then on are handled): each
//!   replica reads new entries with `XREADGROUP`, handles each and `XACK`s it only when the
//!   handler succeeded; an entry whose handler failed, or whose replica died before acking,
//!   stays pending and is taken over by any replica (`XAUTOCLAIM`) once it has been idle for
//!   [`CLAIM_IDLE`]. At least once: a replica that dies after handling and before acking has
//!   the entry handled again, so handlers are idempotent (the notification rules make the
//!   same notification ids from the same event).
//! - with the memory bus (one instance), from the hub: every event once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{Client, Value};
use resolvers::events::{DomainEvent, EventHub};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::redis::{Backoff, connect_reader, entry_list, stopped, stream_entries};
use crate::config::EventsConfig;

/// How long an entry stays pending before another replica takes it over.
pub(crate) const CLAIM_IDLE: Duration = Duration::from_secs(30);
/// Entries read (or claimed) at once.
const BATCH: usize = 64;
/// Longest a read blocks, so that claims are looked at now and then.
const BLOCK_MS: u64 = 2_000;

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
    hub: &EventHub,
    handler: Arc<dyn Handler>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let Some(url) = &config.redis_url else {
        let events = hub.subscribe();
        return Ok(tokio::spawn(from_hub(events, handler, shutdown)));
    };
    let client = Client::open(url.expose())
        .map_err(|e| anyhow::anyhow!("events.redis_url is not a usable Redis URL: {e}"))?;
    let mut connection = connect_reader(&client).await?;
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&config.stream_key)
        .arg(group)
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut connection)
        .await;
    if let Err(e) = created
        && e.code() != Some("BUSYGROUP")
    {
        return Err(anyhow::anyhow!("creating the consumer group {group}: {e}"));
    }
    let consumer = Consumer {
        client,
        stream_key: config.stream_key.clone(),
        group: group.to_owned(),
        name: consumer_name(),
        handler,
        shutdown,
    };
    tracing::info!(group, consumer = %consumer.name, "handling events once per group");
    Ok(tokio::spawn(consumer.run(Some(connection))))
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

async fn from_hub(
    mut events: broadcast::Receiver<Arc<DomainEvent>>,
    handler: Arc<dyn Handler>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            event = events.recv() => event,
        };
        match event {
            Ok(event) => {
                if let Err(e) = handler.handle(&event).await {
                    tracing::warn!(error = %e, event = %event.id, "handling an event failed");
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::error!(missed, "the event handler fell behind and missed events");
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
}

struct Consumer {
    client: Client,
    stream_key: String,
    group: String,
    name: String,
    handler: Arc<dyn Handler>,
    shutdown: watch::Receiver<bool>,
}

impl Consumer {
    async fn run(mut self, mut connection: Option<redis::aio::MultiplexedConnection>) {
        let mut backoff = Backoff::default();
        loop {
            let open = match connection.as_mut() {
                Some(open) => open,
                None => match connect_reader(&self.client).await {
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

    /// Entries of other consumers pending for longer than [`CLAIM_IDLE`], now ours.
    async fn claim(
        &self,
        connection: &mut redis::aio::MultiplexedConnection,
    ) -> anyhow::Result<Vec<super::redis::Entry>> {
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
    async fn read(
        &self,
        connection: &mut redis::aio::MultiplexedConnection,
    ) -> anyhow::Result<Vec<super::redis::Entry>> {
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
