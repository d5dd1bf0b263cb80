//! The change log port: the event stream read back from a position, for delta sync.
//!
//! The server implements it over its event bus (`src/events`): Redis Streams, where a
//! position is a stream entry id, or the memory bus's bounded log. Positions are opaque here:
//! the graph only hands back what the log gave it.

use std::sync::Arc;

use async_trait::async_trait;

use crate::events::DomainEvent;
use crate::ids::CustomerId;

/// One entry of the log: where it is, and the event it holds (`None` when the entry did not
/// decode as an event: it is skipped, and reading goes on after it).
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// The entry's position, to resume after.
    pub position: String,
    /// The event, when the entry holds one.
    pub event: Option<Arc<DomainEvent>>,
}

/// Why the log could not be read from a position.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// Entries after the position are no longer kept (the log was trimmed past it, or the
    /// position is not one of this log's): what changed since cannot be told.
    #[error("the change log no longer holds what came after this position")]
    Expired,
    /// The log's store could not be reached (the cause is for logs).
    #[error("the change log is unavailable: {0}")]
    Unavailable(String),
}

/// The event stream, read back: every event the bus accepted, in the order it accepted them,
/// per partition (a customer's events are all in one partition; events without a customer
/// are in the first, 0).
#[async_trait]
pub trait ChangeLog: Send + Sync + 'static {
    /// How many partitions the log has.
    fn partitions(&self) -> usize;

    /// The partition holding `customer`'s events.
    fn partition_of(&self, customer: &CustomerId) -> usize;

    /// Where `partition` ends now: reading after it returns only what is appended later.
    async fn head(&self, partition: usize) -> Result<String, LogError>;

    /// At most `limit` entries of `partition` after `position` (not including it), oldest
    /// first; [`LogError::Expired`] when some entry after `position` is no longer kept.
    async fn read_after(
        &self,
        partition: usize,
        position: &str,
        limit: usize,
    ) -> Result<Vec<LogEntry>, LogError>;
}
