//! The Redis Streams event bus: streams shared by every replica, on one Redis node or a Redis
//! Cluster.
//!
//! **Partitions.** The bus is `[events] partitions` streams (see `partition` for their key
//! names): an event goes to the stream of its customer, so one customer's events keep their
//! order, and the streams spread over a cluster's nodes. With one partition on one node it is
//! a single stream named `stream_key`, as it always was.
//!
//! **Publishing** runs one Lua script on the shared publishing connection (see
//! `connection`): `SET <stream>:seen:<id> 1 NX EX <dedup_ttl_secs>` and, only when that
//! marker is new, `XADD <stream> MAXLEN ~ <stream_max_len> * event <json>`, where `<stream>`
//! is the event's partition. A script runs atomically, so no other publish sees the marker
//! without the entry, and when the append fails the script removes the marker again, so a
//! failure never makes a retry look like a duplicate. The marker and the stream share a hash
//! tag, hence a cluster slot, as a script's keys must. The script is sent with `EVAL` every
//! time: it is a few hundred bytes, Redis caches its compiled form, and there is no script
//! cache to lose after a Redis restart or failover.
//!
//! **Reading** is one task per partition per replica, each on a connection of its own (an
//! `XREAD BLOCK` would hold up every publish queued behind it on a shared multiplexed
//! connection; and a read of several streams must have them in one cluster slot). At start
//! each notes the id of its stream's newest entry (`XREVRANGE + - COUNT 1`; not `$`, which
//! would be resolved only when the first read reaches Redis, and again on every reconnect,
//! losing what was appended in between). It then loops
//! `XREAD COUNT 256 BLOCK 5000 STREAMS <stream> <last id>`, hands each decoded event to
//! the hub and remembers the id of each entry it handled. On any error it drops the
//! connection, logs a warning, waits (100 ms doubling to 5 s), reconnects and resumes after
//! the remembered id. A read that gets no answer within the block time plus a grace period
//! counts as a lost connection too, so a half-open TCP connection cannot stall it. Entry ids
//! are time-based and increase, so resuming "after the last id" also holds when Redis
//! restarted empty in the meantime (as long as its clock does not go back).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use redis::{RedisError, Value};
use resolvers::events::{DomainEvent, EventHub};
use resolvers::sync::ChangeLog;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::changelog::RedisLog;
use super::connection::{Connection, Target};
use super::partition::Partitions;
use super::{BusError, EventBus};
use crate::config::EventsConfig;

/// How long one `XREAD` waits for new entries before it returns empty and is sent again.
const READ_BLOCK_MS: u64 = 5_000;
/// Most entries one `XREAD` returns; a replica catching up reads in batches of this size.
const READ_COUNT: usize = 256;
/// How much longer than the block time a read may take before its connection counts as
/// dead.
const READ_GRACE: Duration = Duration::from_secs(5);
/// Longest a publish may take, reconnecting included, before it fails as unavailable (it
/// may still have been appended then; a retry is absorbed as a duplicate).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// First wait after a failed read or reconnect; it doubles with each failure in a row.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between reconnect attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The stream entry field holding the event's JSON (also named in [`PUBLISH_SCRIPT`]).
const EVENT_FIELD: &str = "event";
/// Where the stream starts: the id before any entry.
pub(super) const STREAM_START: &str = "0-0";

/// Publishes one event at most once per id within the TTL, atomically.
///
/// `KEYS[1]` is the event's seen-marker, `KEYS[2]` the stream; `ARGV[1]` the marker's TTL in
/// seconds, `ARGV[2]` the stream's approximate maximum length, `ARGV[3]` the event's JSON.
/// Returns the new entry's id, or nil when the id was seen already.
const PUBLISH_SCRIPT: &str = r"
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return false
end
local appended = redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[3])
if type(appended) == 'table' and appended.err then
  redis.call('DEL', KEYS[1])
end
return appended
";

/// What [`start`] hands to [`super::Events`].
pub(crate) struct Started {
    /// The publishing side.
    pub(crate) bus: Arc<dyn EventBus>,
    /// The reader tasks, one per partition, for [`super::Events::join`].
    pub(crate) readers: Vec<JoinHandle<()>>,
    /// The streams read back, for delta sync.
    pub(crate) log: Arc<dyn ChangeLog>,
}

/// Connects to Redis at `url` (a node, or a cluster's seed), notes where each partition's
/// stream ends, and spawns a reader per partition.
///
/// Fails when the URL is unusable or Redis cannot be reached; the error names the address,
/// never the credentials.
pub(crate) async fn start(
    config: &EventsConfig,
    url: &str,
    hub: EventHub,
    shutdown: watch::Receiver<bool>,
    delivered: Arc<AtomicU64>,
) -> anyhow::Result<Started> {
    let target = Arc::new(Target::of(config, url)?);
    let address = target.address(url);
    let unreachable = || format!("cannot reach Redis at {address} (events.redis_url)");
    let partitions = Partitions::new(&config.stream_key, config.partitions, config.cluster);

    let mut readers = Vec::with_capacity(partitions.count());
    for index in 0..partitions.count() {
        let stream_key = partitions.stream(index);
        let mut connection = connect_reader(&target).await.with_context(unreachable)?;
        let last_id = newest_entry_id(&mut connection, &stream_key)
            .await
            .with_context(|| {
                format!("cannot read the event stream {stream_key:?} from Redis at {address}")
            })?
            .unwrap_or_else(|| STREAM_START.to_owned());
        let reader = Reader {
            target: Arc::clone(&target),
            stream_key,
            last_id,
            hub: hub.clone(),
            delivered: Arc::clone(&delivered),
            shutdown: shutdown.clone(),
        };
        readers.push((reader, connection));
    }
    let publisher = target
        .publisher(PUBLISH_TIMEOUT)
        .await
        .with_context(unreachable)?;
    tracing::info!(
        redis = %address,
        cluster = config.cluster,
        stream = %partitions.stream(0),
        partitions = partitions.count(),
        "event bus: Redis streams"
    );

    let log = Arc::new(RedisLog {
        connection: publisher.clone(),
        partitions: partitions.clone(),
    });
    let bus = RedisBus {
        connection: publisher,
        partitions,
        dedup_ttl_secs: config.dedup_ttl_secs,
        max_len: config.stream_max_len,
    };
    Ok(Started {
        bus: Arc::new(bus),
        log,
        readers: readers
            .into_iter()
            .map(|(reader, connection)| tokio::spawn(reader.run(connection)))
            .collect(),
    })
}

/// The publishing side of the Redis bus.
struct RedisBus {
    /// Shared by every publish of this replica; reconnects by itself after a lost
    /// connection (the publish that saw the loss fails, later ones go through).
    connection: Connection,
    /// The streams events are appended to, and which one each event goes to.
    partitions: Partitions,
    /// How long a seen-marker lives: the dedup window.
    dedup_ttl_secs: u64,
    /// The stream's approximate length bound (`MAXLEN ~`).
    max_len: usize,
}

#[async_trait]
impl EventBus for RedisBus {
    async fn publish(&self, event: &DomainEvent) -> Result<bool, BusError> {
        let json = serde_json::to_string(event)
            .map_err(|error| unavailable(event, format!("the event cannot be encoded: {error}")))?;
        let partition = self.partitions.of(event);
        let mut script = redis::cmd("EVAL");
        script
            .arg(PUBLISH_SCRIPT)
            .arg(2)
            .arg(format!(
                "{}{}",
                self.partitions.seen_prefix(partition),
                event.id
            ))
            .arg(self.partitions.stream(partition))
            .arg(self.dedup_ttl_secs)
            .arg(self.max_len)
            .arg(json);
        let mut connection = self.connection.clone();
        // The bound covers the whole call: while Redis is unreachable the connection manager
        // is still retrying its reconnect, which a response timeout alone would not cut short.
        let answer = tokio::time::timeout(PUBLISH_TIMEOUT, script.query_async(&mut connection));
        let appended: Option<String> = match answer.await {
            Ok(Ok(appended)) => appended,
            Ok(Err(error)) => return Err(unavailable(event, format!("Redis: {error}"))),
            Err(_) => {
                return Err(unavailable(
                    event,
                    format!("no answer from Redis within {PUBLISH_TIMEOUT:?}"),
                ));
            }
        };
        match appended {
            Some(entry_id) => {
                tracing::debug!(event_id = %event.id, %entry_id, partition, "event published");
                Ok(true)
            }
            None => {
                tracing::debug!(event_id = %event.id, "duplicate event absorbed");
                Ok(false)
            }
        }
    }
}

/// Logs why a publish failed, and says so to the publisher.
fn unavailable(event: &DomainEvent, reason: String) -> BusError {
    tracing::warn!(event_id = %event.id, %reason, "publishing an event to Redis failed");
    BusError::Unavailable(reason)
}

/// This replica's follower of one partition's stream.
struct Reader {
    /// Where to reconnect to.
    target: Arc<Target>,
    /// The stream followed.
    stream_key: String,
    /// The id of the last entry handled (delivered or skipped): reads, and reads after a
    /// reconnect, resume after it, which is what makes delivery exactly-once and in order.
    last_id: String,
    /// This replica's fan-out.
    hub: EventHub,
    /// Events handed to the hub, shared with [`super::Events::delivered`].
    delivered: Arc<AtomicU64>,
    /// Turns `true` at shutdown; also interrupts a blocked read.
    shutdown: watch::Receiver<bool>,
}

impl Reader {
    /// Follows the stream until shutdown, starting on `connection`.
    async fn run(mut self, connection: Connection) {
        let mut connection = Some(connection);
        let mut backoff = Backoff::default();
        loop {
            let open = match connection.as_mut() {
                Some(open) => open,
                None => {
                    let attempt = tokio::select! {
                        biased;
                        () = stopped(&mut self.shutdown) => break,
                        attempt = connect_reader(&self.target) => attempt,
                    };
                    match attempt {
                        Ok(mut reconnected) => {
                            tracing::info!(
                                stream = %self.stream_key,
                                after = %self.last_id,
                                "event stream reader reconnected to Redis, resuming"
                            );
                            self.warn_if_entries_were_lost(&mut reconnected).await;
                            connection.insert(reconnected)
                        }
                        Err(error) => {
                            let delay = backoff.next_delay();
                            tracing::warn!(
                                %error,
                                retry_in_ms = delay.as_millis(),
                                "event stream reader cannot reconnect to Redis"
                            );
                            if !self.pause(delay).await {
                                break;
                            }
                            continue;
                        }
                    }
                }
            };
            let read = xread(&self.stream_key, &self.last_id);
            let reply = tokio::select! {
                biased;
                () = stopped(&mut self.shutdown) => break,
                reply = read.query_async::<Value>(open) => reply,
            };
            match reply.map_err(ReadError::from).and_then(stream_entries) {
                Ok(entries) => {
                    backoff.reset();
                    self.deliver(entries).await;
                }
                Err(error) => {
                    connection = None;
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        %error,
                        stream = %self.stream_key,
                        after = %self.last_id,
                        retry_in_ms = delay.as_millis(),
                        "reading the event stream failed, reconnecting"
                    );
                    if !self.pause(delay).await {
                        break;
                    }
                }
            }
        }
        tracing::info!(stream = %self.stream_key, "event stream reader stopped");
    }

    /// Hands the events of `entries` to the hub in order; skips those that do not decode.
    async fn deliver(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            match entry.decode() {
                Ok(event) => {
                    self.hub.deliver(Arc::new(event)).await;
                    self.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Err(reason) => tracing::warn!(
                    stream = %self.stream_key,
                    entry_id = %entry.id,
                    %reason,
                    "skipping an event stream entry that does not decode"
                ),
            }
            self.last_id = entry.id;
        }
    }

    /// Waits `delay`; `false` when shutdown came first.
    async fn pause(&mut self, delay: Duration) -> bool {
        tokio::select! {
            biased;
            () = stopped(&mut self.shutdown) => false,
            () = tokio::time::sleep(delay) => true,
        }
    }

    /// After a reconnect: warns when the stream was trimmed past the last entry this replica
    /// handled, so that entries appended after it may have been trimmed too before it could
    /// read them. (Redis keeps no record of what trimming removed, hence "may".) Best
    /// effort: says nothing when the stream cannot be inspected, or before the first entry.
    async fn warn_if_entries_were_lost(&self, connection: &mut Connection) {
        if self.last_id == STREAM_START {
            return;
        }
        let info = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&self.stream_key)
            .query_async::<Value>(connection)
            .await;
        let Some(first) = info
            .ok()
            .and_then(|info| field(info, "first-entry"))
            .and_then(|first| entry(first).ok())
        else {
            return;
        };
        if stream_id_after(&first.id, &self.last_id) {
            tracing::warn!(
                stream = %self.stream_key,
                after = %self.last_id,
                first_entry = %first.id,
                "the event stream was trimmed past this replica's position while it was cut \
                 off: events appended in between may be lost for its subscribers \
                 (events.stream_max_len bounds the stream)"
            );
        }
    }
}

/// Completes when shutdown is signalled, or when its sender is gone (nobody could signal
/// it any more).
pub(super) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// A connection for one reader alone, whose reads may block for [`READ_BLOCK_MS`].
pub(super) async fn connect_reader(target: &Target) -> redis::RedisResult<Connection> {
    target
        .reader(Duration::from_millis(READ_BLOCK_MS) + READ_GRACE)
        .await
}

/// The id of the stream's newest entry; `None` when it is empty or does not exist yet.
async fn newest_entry_id(
    connection: &mut Connection,
    stream_key: &str,
) -> Result<Option<String>, ReadError> {
    let reply: Value = redis::cmd("XREVRANGE")
        .arg(stream_key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(connection)
        .await?;
    Ok(entry_list(reply)?.into_iter().next().map(|entry| entry.id))
}

/// `XREAD COUNT .. BLOCK .. STREAMS <stream_key> <after>`.
fn xread(stream_key: &str, after: &str) -> redis::Cmd {
    let mut command = redis::cmd("XREAD");
    command
        .arg("COUNT")
        .arg(READ_COUNT)
        .arg("BLOCK")
        .arg(READ_BLOCK_MS)
        .arg("STREAMS")
        .arg(stream_key)
        .arg(after);
    command
}

/// Why a read failed: either way the reader reconnects.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    /// Redis could not be reached, timed out, or refused the command.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// The reply was not shaped like a stream read.
    #[error("unexpected reply from Redis: {0}")]
    Malformed(&'static str),
}

/// One stream entry as read.
pub(super) struct Entry {
    /// The entry's id (`<ms>-<seq>`).
    pub(super) id: String,
    /// The value of its `event` field, when it has one.
    event: Option<Vec<u8>>,
}

impl Entry {
    /// The event the entry carries.
    pub(super) fn decode(&self) -> Result<DomainEvent, String> {
        let json = self
            .event
            .as_deref()
            .ok_or_else(|| format!("no `{EVENT_FIELD}` field"))?;
        serde_json::from_slice(json).map_err(|error| error.to_string())
    }
}

/// The entries of an `XREAD` reply: nil when the block timed out, else an array of
/// `[key, entries]` pairs (RESP2) or a map from key to entries (RESP3).
pub(super) fn stream_entries(reply: Value) -> Result<Vec<Entry>, ReadError> {
    let per_stream: Vec<Value> = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| match stream {
                Value::Array(pair) if pair.len() == 2 => pair
                    .into_iter()
                    .nth(1)
                    .ok_or(ReadError::Malformed("a stream without its entries")),
                _ => Err(ReadError::Malformed(
                    "a stream that is not a [key, entries] pair",
                )),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ReadError::Malformed(
                "a read that is neither nil, an array nor a map",
            ));
        }
    };
    let mut entries = Vec::new();
    for list in per_stream {
        entries.extend(entry_list(list)?);
    }
    Ok(entries)
}

/// A list of entries, as `XREAD` (per stream) and `XRANGE`/`XREVRANGE` answer them.
pub(super) fn entry_list(value: Value) -> Result<Vec<Entry>, ReadError> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Array(entries) => entries.into_iter().map(entry).collect(),
        _ => Err(ReadError::Malformed("entries that are not an array")),
    }
}

/// One `[id, [field, value, ...]]` entry. Only a missing id is an error: odd fields make an
/// entry that does not decode, which the reader skips.
fn entry(value: Value) -> Result<Entry, ReadError> {
    let Value::Array(parts) = value else {
        return Err(ReadError::Malformed("an entry that is not an array"));
    };
    let mut parts = parts.into_iter();
    let id = parts
        .next()
        .and_then(into_text)
        .ok_or(ReadError::Malformed("an entry without an id"))?;
    let event = parts
        .next()
        .and_then(|fields| field(fields, EVENT_FIELD))
        .and_then(into_bytes);
    Ok(Entry { id, event })
}

/// The value of field `name` in a flat `[name, value, ...]` array (RESP2) or a map (RESP3).
pub(super) fn field(fields: Value, name: &str) -> Option<Value> {
    match fields {
        Value::Map(pairs) => pairs
            .into_iter()
            .find(|(key, _)| is_text(key, name))
            .map(|(_, value)| value),
        Value::Array(flat) => {
            let mut flat = flat.into_iter();
            while let (Some(key), Some(value)) = (flat.next(), flat.next()) {
                if is_text(&key, name) {
                    return Some(value);
                }
            }
            None
        }
        _ => None,
    }
}

/// Whether a reply value is the string `expected`.
fn is_text(value: &Value, expected: &str) -> bool {
    match value {
        Value::BulkString(bytes) => bytes == expected.as_bytes(),
        Value::SimpleString(text) | Value::VerbatimString { text, .. } => text == expected,
        _ => false,
    }
}

/// A reply value as a string, when it is a UTF-8 string.
fn into_text(value: Value) -> Option<String> {
    into_bytes(value).and_then(|bytes| String::from_utf8(bytes).ok())
}

/// A reply value as bytes, when it is a string.
fn into_bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) | Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        _ => None,
    }
}

/// Whether stream id `a` comes after `b` (`false` when either is not an id).
pub(super) fn stream_id_after(a: &str, b: &str) -> bool {
    fn parse(id: &str) -> Option<(u64, u64)> {
        let (ms, seq) = id.split_once('-')?;
        Some((ms.parse().ok()?, seq.parse().ok()?))
    }
    matches!((parse(a), parse(b)), (Some(a), Some(b)) if a > b)
}

/// The reader's wait between failures: 100 ms, doubling up to 5 s, reset by a good read.
pub(super) struct Backoff {
    /// The next wait.
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: BACKOFF_FIRST,
        }
    }
}

impl Backoff {
    /// The wait before the next attempt; the one after it is twice as long.
    pub(super) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(BACKOFF_MAX);
        delay
    }

    /// Back to the first wait, after a success.
    pub(super) fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn backoff_doubles_up_to_five_seconds_and_resets() {
        let mut backoff = Backoff::default();
        let waits: Vec<u128> = (0..8).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn reads_resp2_and_resp3_replies() {
        let entries = || {
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("event"), bulk("{}")]),
                ]),
                Value::Array(vec![
                    bulk("1-1"),
                    Value::Array(vec![bulk("other"), bulk("x")]),
                ]),
            ])
        };
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("s"), entries()])]);
        let resp3 = Value::Map(vec![(bulk("s"), entries())]);
        for reply in [resp2, resp3] {
            let read = stream_entries(reply).expect("a well-formed reply");
            let ids: Vec<&str> = read.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(ids, ["1-0", "1-1"]);
            assert_eq!(read[0].event.as_deref(), Some(&b"{}"[..]));
            assert_eq!(read[1].event, None);
            assert!(read[1].decode().is_err());
        }
        assert_eq!(stream_entries(Value::Nil).expect("nil").len(), 0);
        assert!(stream_entries(Value::Int(1)).is_err());
    }

    #[test]
    fn compares_stream_ids_numerically() {
        assert!(stream_id_after("10-0", "9-5"));
        assert!(stream_id_after("9-10", "9-9"));
        assert!(!stream_id_after("9-9", "9-9"));
        assert!(!stream_id_after("0-0", "0-0"));
        assert!(!stream_id_after("x", "1-0"));
    }
}
