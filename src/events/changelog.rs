//! The bus read back from a position: [`resolvers::sync::ChangeLog`] for delta sync.
//!
//! - [`RedisLog`]: the partitions' streams themselves. A position is an entry id; reading is
//!   `XRANGE <stream> (<position> + COUNT <n>`, then `XINFO STREAM` to tell whether anything
//!   after the position was trimmed (see `lost_after`) or the stream started over (its
//!   `last-generated-id` is before the position): either way the position has expired. The check comes after the read, so an entry trimmed while it was read makes the
//!   answer `Expired`, never a silent gap. It reads on the bus's shared publishing connection
//!   (these are short commands, no blocking read).
//! - [`MemoryLog`]: the memory bus has no stream, so it keeps the last `stream_max_len` events
//!   it accepted in a ring, as the stream keeps about that many. A position is
//!   `<epoch>-<sequence>`: the epoch is made when the bus starts, so a position from before a
//!   restart (whose events are gone) is expired, not misread. Events are kept without their
//!   upstream `payload` (sync reads only what they are about), a few hundred bytes each: the
//!   default 100,000 are some tens of MiB.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redis::Value;
use resolvers::events::DomainEvent;
use resolvers::ids::CustomerId;
use resolvers::sync::{ChangeLog, LogEntry, LogError};

use super::connection::Connection;
use super::partition::Partitions;
use super::redis::{STREAM_START, entry_list, field, stream_id_after};

/// The change log of the Redis bus: its streams.
pub(crate) struct RedisLog {
    /// The bus's publishing connection (shared, reconnecting by itself).
    pub(crate) connection: Connection,
    /// The streams.
    pub(crate) partitions: Partitions,
}

#[async_trait]
impl ChangeLog for RedisLog {
    fn partitions(&self) -> usize {
        self.partitions.count()
    }

    fn partition_of(&self, customer: &CustomerId) -> usize {
        self.partitions.of_customer(customer.as_str())
    }

    async fn head(&self, partition: usize) -> Result<String, LogError> {
        let reply: Value = redis::cmd("XREVRANGE")
            .arg(self.partitions.stream(partition))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        let newest = entry_list(reply).map_err(unavailable)?.into_iter().next();
        Ok(newest.map_or_else(|| STREAM_START.to_owned(), |entry| entry.id))
    }

    async fn read_after(
        &self,
        partition: usize,
        position: &str,
        limit: usize,
    ) -> Result<Vec<LogEntry>, LogError> {
        if partition >= self.partitions.count() || parse_id(position).is_none() {
            return Err(LogError::Expired);
        }
        let stream = self.partitions.stream(partition);
        let mut connection = self.connection.clone();
        let reply: Value = redis::cmd("XRANGE")
            .arg(&stream)
            .arg(format!("({position}"))
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let entries = entry_list(reply).map_err(unavailable)?;
        let info: Result<Value, _> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&stream)
            .query_async(&mut connection)
            .await;
        match info {
            Ok(info) => {
                if lost_after(&info, position) {
                    return Err(LogError::Expired);
                }
            }
            // No stream (yet, or any more): only the start of the log is a position in it.
            Err(error) if error.to_string().contains("no such key") => {
                if position != STREAM_START {
                    return Err(LogError::Expired);
                }
            }
            Err(error) => return Err(unavailable(error)),
        }
        Ok(entries
            .into_iter()
            .map(|entry| LogEntry {
                event: entry.decode().ok().map(Arc::new),
                position: entry.id,
            })
            .collect())
    }
}

/// Whether `XINFO STREAM`'s answer says that entries after `position` may have been trimmed,
/// or that the stream started over since. Trimming (`MAXLEN ~`) leaves no record of what it
/// removed (`max-deleted-entry-id` counts only `XDEL`), so: from the start (`0-0`), anything
/// ever removed (`entries-added` above `length`); from an entry, that entry itself being gone
/// (the first entry is after it). The latter also refuses a position whose very next entry
/// happens to be the first one kept: the app then takes a snapshot it did not strictly need,
/// never misses a change.
fn lost_after(info: &Value, position: &str) -> bool {
    let get = |name| field(info.clone(), name);
    let last = get("last-generated-id").and_then(text);
    if last.is_some_and(|last| stream_id_after(position, &last)) {
        return true;
    }
    let first = get("first-entry")
        .and_then(|first| entry_list(Value::Array(vec![first])).ok())
        .and_then(|entries| entries.into_iter().next())
        .map(|entry| entry.id);
    if position == STREAM_START {
        let count = |name| match get(name) {
            Some(Value::Int(n)) => n,
            _ => 0,
        };
        return count("entries-added") > count("length");
    }
    match first {
        Some(first) => stream_id_after(&first, position),
        // Empty, though entries were added after the position: trimmed away.
        None => get("last-generated-id")
            .and_then(text)
            .is_some_and(|last| last != position),
    }
}

fn unavailable(error: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(error.to_string())
}

/// A reply value as text.
fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) | Value::VerbatimString { text, .. } => Some(text),
        _ => None,
    }
}

/// `<a>-<b>`, as stream ids and memory positions are.
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (a, b) = id.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The change log of the memory bus: its last `capacity` events.
pub(crate) struct MemoryLog {
    /// Made when the bus starts: positions of another run are not ours.
    epoch: u64,
    /// Most events kept (`stream_max_len`).
    capacity: usize,
    /// A std mutex: held to append or copy out, never across an await.
    entries: Mutex<Ring>,
}

/// The kept events, oldest first, each with its sequence number.
struct Ring {
    /// The sequence number of the last event appended (0: none yet).
    last: u64,
    events: VecDeque<(u64, Arc<DomainEvent>)>,
}

impl MemoryLog {
    /// A log keeping `capacity` events (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        Self {
            epoch,
            capacity: capacity.max(1),
            entries: Mutex::new(Ring {
                last: 0,
                events: VecDeque::new(),
            }),
        }
    }

    /// Appends an accepted event (the bus calls this in the order it accepts them).
    pub(crate) fn append(&self, event: &DomainEvent) {
        let event = Arc::new(DomainEvent {
            payload: serde_json::Value::Null,
            ..event.clone()
        });
        let mut ring = self.ring();
        ring.last += 1;
        let sequence = ring.last;
        if ring.events.len() >= self.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back((sequence, event));
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        // Every change is one push or pop: poisoning leaves it consistent.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn position(&self, sequence: u64) -> String {
        format!("{}-{sequence}", self.epoch)
    }
}

#[async_trait]
impl ChangeLog for MemoryLog {
    fn partitions(&self) -> usize {
        1
    }

    fn partition_of(&self, _customer: &CustomerId) -> usize {
        0
    }

    async fn head(&self, _partition: usize) -> Result<String, LogError> {
        Ok(self.position(self.ring().last))
    }

    async fn read_after(
        &self,
        partition: usize,
        position: &str,
        limit: usize,
    ) -> Result<Vec<LogEntry>, LogError> {
        let Some((epoch, after)) = parse_id(position) else {
            return Err(LogError::Expired);
        };
        let ring = self.ring();
        let oldest = ring.events.front().map_or(ring.last + 1, |(seq, _)| *seq);
        // Another run's, from the future, or the next one after it is gone.
        if partition != 0 || epoch != self.epoch || after > ring.last || after + 1 < oldest {
            return Err(LogError::Expired);
        }
        let skip = usize::try_from(after + 1 - oldest).unwrap_or(usize::MAX);
        Ok(ring
            .events
            .iter()
            .skip(skip)
            .take(limit)
            .map(|(sequence, event)| LogEntry {
                position: self.position(*sequence),
                event: Some(Arc::clone(event)),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use resolvers::events::{EventKind, Subject};
    use resolvers::ports::Source;

    fn event(n: u64) -> Arc<DomainEvent> {
        Arc::new(DomainEvent {
            id: format!("backend:{n}"),
            kind: EventKind::OrderUpdated,
            source: Source::Backend,
            customer_id: None,
            subject: Subject::default(),
            occurred_at: chrono::Utc::now(),
            audience: Vec::new(),
            summary: String::new(),
            payload: serde_json::Value::Null,
        })
    }

    async fn ids(log: &MemoryLog, after: &str, limit: usize) -> Result<Vec<String>, LogError> {
        Ok(log
            .read_after(0, after, limit)
            .await?
            .into_iter()
            .map(|entry| entry.event.unwrap().id.clone())
            .collect())
    }

    #[tokio::test]
    async fn the_memory_log_reads_after_a_position_until_it_is_trimmed_past_it() {
        let log = MemoryLog::new(3);
        let start = log.head(0).await.unwrap();
        assert_eq!(ids(&log, &start, 10).await.unwrap(), Vec::<String>::new());
        for n in 1..=3 {
            log.append(&event(n));
        }
        assert_eq!(
            ids(&log, &start, 10).await.unwrap(),
            ["backend:1", "backend:2", "backend:3"]
        );
        assert_eq!(
            ids(&log, &start, 2).await.unwrap(),
            ["backend:1", "backend:2"]
        );
        let after_one = log.position(1);
        log.append(&event(4));
        // Event 1 is gone: reading after the start would miss it; after 1 nothing is missed.
        assert!(matches!(
            ids(&log, &start, 10).await,
            Err(LogError::Expired)
        ));
        assert_eq!(
            ids(&log, &after_one, 10).await.unwrap(),
            ["backend:2", "backend:3", "backend:4"]
        );
        let head = log.head(0).await.unwrap();
        assert_eq!(ids(&log, &head, 10).await.unwrap(), Vec::<String>::new());
        for stranger in ["1-1", "x", &log.position(5), &format!("{}", log.epoch)] {
            assert!(
                matches!(ids(&log, stranger, 10).await, Err(LogError::Expired)),
                "{stranger}"
            );
        }
    }
}
