//! What changed since a token: the change log read from the token's positions, the events of
//! the signed-in customer's working set picked out, and collapsed into one change per entity.
//!
//! An event is in the customer's working set when it is about one of their orders (order and
//! parcel events naming them: a parcel is part of its order, `Order.shipment`), one of their
//! support cases (case changes and the comments they may see: the CRM's internal notes name no
//! customer), or a task offered to them (task events whose audience names them: a return
//! approval waiting for the agents names the customer too, but is not on the customer's list).
//! Product and process events are not part of it.
//!
//! Reading is bounded twice: at most `first` distinct entities (reading stops before the first
//! event of one more), and at most [`MAX_EVENTS`] log entries per call, whoever's they are. Either
//! way the positions reached go into the next token and the page says `hasMore`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::log::{ChangeLog, LogError};
use crate::events::{DomainEvent, EventKind};
use crate::ids::{CaseId, CustomerId, OrderId};

/// Most log entries one sync reads, across partitions (all customers' events of the
/// partitions it reads count).
pub(crate) const MAX_EVENTS: usize = 2_000;
/// Most entries one read of the log asks for.
const READ_CHUNK: usize = 256;

/// An entity of the working set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum EntityKey {
    Order(OrderId),
    Case(CaseId),
    Task(i64),
}

/// The entities that changed, oldest first change first, and how far the log was read.
#[derive(Debug, Default)]
pub(crate) struct Delta {
    /// Each changed entity once, in the order of its first change.
    pub(crate) changed: Vec<EntityKey>,
    /// When each last changed upstream (its newest event's `occurredAt`).
    pub(crate) updated_at: HashMap<EntityKey, DateTime<Utc>>,
    /// The positions reached, for the next token.
    pub(crate) positions: Vec<(usize, String)>,
    /// Whether the log holds more after them (a bound was reached).
    pub(crate) more: bool,
}

/// Who the working set is of.
pub(crate) struct Owner<'a> {
    /// The customer.
    pub(crate) customer: &'a CustomerId,
    /// Who they are at the process server (tasks' audience).
    pub(crate) process_user: &'a str,
}

/// The working-set entity `event` changed, if any.
pub(crate) fn entity_of(event: &DomainEvent, owner: &Owner<'_>) -> Option<EntityKey> {
    let subject = &event.subject;
    let theirs = event.customer_id.as_ref() == Some(owner.customer);
    match event.kind {
        EventKind::OrderUpdated | EventKind::ShipmentUpdated if theirs => {
            subject.order_id.clone().map(EntityKey::Order)
        }
        EventKind::CaseUpdated | EventKind::CaseCommentAdded if theirs => {
            subject.case_id.clone().map(EntityKey::Case)
        }
        EventKind::TaskUpdated if event.audience.iter().any(|a| a == owner.process_user) => {
            subject.task_id.map(EntityKey::Task)
        }
        _ => None,
    }
}

/// Reads `log` after `positions`, picking `owner`'s changes, at most `first` entities.
pub(crate) async fn read(
    log: &dyn ChangeLog,
    positions: &[(usize, String)],
    owner: &Owner<'_>,
    first: usize,
) -> Result<Delta, LogError> {
    let mut delta = Delta::default();
    let mut budget = MAX_EVENTS;
    let mut full = false;
    for (partition, start) in positions {
        let mut position = start.clone();
        // Once a bound is reached the other partitions keep their positions.
        while !full && budget > 0 {
            let chunk = READ_CHUNK.min(budget);
            let entries = log.read_after(*partition, &position, chunk).await?;
            let exhausted = entries.len() < chunk;
            budget = budget.saturating_sub(entries.len());
            for entry in entries {
                if let Some(event) = &entry.event
                    && let Some(key) = entity_of(event, owner)
                {
                    if !delta.updated_at.contains_key(&key) {
                        if delta.changed.len() >= first {
                            full = true;
                            break;
                        }
                        delta.changed.push(key.clone());
                    }
                    let at = delta.updated_at.entry(key).or_insert(event.occurred_at);
                    *at = (*at).max(event.occurred_at);
                }
                position = entry.position;
            }
            if exhausted {
                break;
            }
        }
        if full || budget == 0 {
            delta.more = true;
        }
        delta.positions.push((*partition, position));
    }
    Ok(delta)
}
