//! Delta sync: apps that were offline catch up in one call.
//!
//! `sync(token, first)` without a token answers a first **snapshot** of the signed-in
//! customer's working set (orders with their parcels, support cases, the tasks offered to
//! them), a page at a time; each page's token continues it, and the last page's token is a
//! position in the change log. With such a token it answers the **delta**: the entities that
//! changed since, each once with its current state (read through the request's loaders, one
//! batch per upstream), those that left the working set as tombstones, and a new token.
//!
//! The change log is the event stream ([`ChangeLog`], implemented by the server over its
//! event bus): a token holds the positions, per partition, where the customer's events can
//! be (their customer's partition and partition 0, which holds events naming no customer).
//! The positions are taken **before** the snapshot's first page is read, so whatever changes
//! while the snapshot is paged comes again in the first delta (an entity may then be sent
//! twice, never missed).
//!
//! Tokens are HMAC-signed and bound to the user they were given to (`token`). Errors, with
//! their `extensions.code`:
//! - `FORBIDDEN`: a token that is not ours (malformed, or its signature does not verify), or
//!   another user's; and agents, who have no working set.
//! - `SYNC_TOKEN_EXPIRED`: the log no longer holds what came after the token (trimmed past
//!   it: `[events] stream_max_len`; a restarted memory bus; another number of partitions).
//!   Start again without a token: a snapshot.
//! - `BAD_USER_INPUT`: `first` outside 1 to [`MAX_PAGE`].
//! - `UNAVAILABLE`: the log could not be read; an upstream's error when an entity could not
//!   be read. Nothing is half-answered: the app keeps its token and tries again.

mod delta;
pub mod log;
mod snapshot;
pub mod token;

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

pub use log::{ChangeLog, LogEntry, LogError};
pub use token::TokenKey;

use crate::error::{GraphError, GraphResult};
use crate::ids::CustomerId;
use crate::types::{Order, SupportCase, Task, loaders};
use crate::viewer::{Viewer, viewer};
use delta::{EntityKey, Owner};
use snapshot::{Entity, on_work_list};
use token::{Claims, SnapshotCursor, SnapshotPart};

/// Most entities one page of `sync` holds.
pub(crate) const MAX_PAGE: i32 = 50;

/// What `sync` needs from the server: the change log and the tokens' key.
#[derive(Clone)]
pub struct SyncSetup {
    /// The event stream, read back.
    pub log: Arc<dyn ChangeLog>,
    /// What tokens are signed with: the same on every replica.
    pub key: TokenKey,
}

/// Which kind of entity a change is about.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum SyncEntityType {
    /// An order, with its parcel (`Order.shipment`): a parcel scan is a change of its order.
    Order,
    /// A support case, with its conversation.
    SupportCase,
    /// A task on the customer's work list.
    Task,
}

/// One page of `sync`.
#[derive(SimpleObject)]
pub(crate) struct SyncPage {
    /// Whether this page is part of a snapshot (no token, or a snapshot page's token was
    /// sent): the app replaces what it holds by the snapshot's entities once its last page
    /// (`hasMore: false`) arrived. `false`: a delta, applied on top of what the app holds.
    pub(crate) snapshot: bool,
    /// Entities that are (or changed) in the working set, each once, with their current
    /// state: store them, replacing any copy with the same type and id.
    pub(crate) changes: Vec<SyncChange>,
    /// Entities that left the working set since the token (a task done or taken by someone
    /// else, an entity no longer found): delete them. An app may not know them.
    pub(crate) removed: Vec<SyncTombstone>,
    /// Send this with the next `sync` (continue the snapshot, or the delta from here). It
    /// is the app's to keep, bound to the signed-in user.
    pub(crate) token: String,
    /// Whether more is waiting right now: call `sync` again with `token` at once.
    pub(crate) has_more: bool,
}

/// An entity of the working set, as it is now.
pub(crate) struct SyncChange {
    kind: SyncEntityType,
    id: String,
    updated_at: DateTime<Utc>,
    entity: Entity,
}

/// An entity of the working set, as it is now.
#[Object]
impl SyncChange {
    /// Which kind of entity.
    #[graphql(name = "type")]
    async fn kind(&self) -> SyncEntityType {
        self.kind
    }

    /// The entity's id (with `type`, what the app keys its copy by).
    async fn id(&self) -> ID {
        ID(self.id.clone())
    }

    /// When it last changed upstream, as the change log knows it (the newest of its events);
    /// in a snapshot, when it was read.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }

    /// The order, when `type` is `ORDER`.
    async fn order(&self) -> Option<Order> {
        match &self.entity {
            Entity::Order(order) => Some(Order(order.clone())),
            _ => None,
        }
    }

    /// The support case, when `type` is `SUPPORT_CASE`.
    async fn support_case(&self) -> Option<SupportCase> {
        match &self.entity {
            Entity::Case(case) => Some(SupportCase(case.clone())),
            _ => None,
        }
    }

    /// The task, when `type` is `TASK`.
    async fn task(&self) -> Option<Task> {
        match &self.entity {
            Entity::Task(task) => Some(Task(task.clone())),
            _ => None,
        }
    }
}

/// An entity that left the working set.
#[derive(SimpleObject)]
pub(crate) struct SyncTombstone {
    /// Which kind of entity.
    #[graphql(name = "type")]
    pub(crate) kind: SyncEntityType,
    /// Its id.
    pub(crate) id: ID,
    /// When it left, as the change log knows it.
    pub(crate) removed_at: DateTime<Utc>,
}

impl Entity {
    fn change(self, updated_at: DateTime<Utc>) -> SyncChange {
        let (kind, id) = match &self {
            Entity::Order(o) => (SyncEntityType::Order, o.id.to_string()),
            Entity::Case(c) => (SyncEntityType::SupportCase, c.id.to_string()),
            Entity::Task(t) => (SyncEntityType::Task, t.id.to_string()),
        };
        SyncChange {
            kind,
            id,
            updated_at,
            entity: self,
        }
    }
}

impl EntityKey {
    fn tombstone(&self, removed_at: DateTime<Utc>) -> SyncTombstone {
        let (kind, id) = match self {
            EntityKey::Order(id) => (SyncEntityType::Order, id.to_string()),
            EntityKey::Case(id) => (SyncEntityType::SupportCase, id.to_string()),
            EntityKey::Task(id) => (SyncEntityType::Task, id.to_string()),
        };
        SyncTombstone {
            kind,
            id: ID(id),
            removed_at,
        }
    }
}

/// `Query.sync`.
pub(crate) async fn sync(
    ctx: &Context<'_>,
    token: Option<String>,
    first: i32,
) -> async_graphql::Result<SyncPage> {
    let viewer = viewer(ctx)?;
    let Some(customer) = viewer.customer_id() else {
        return Err(GraphError::Forbidden(
            "agents have no working set to sync: sync is for customers' apps".to_owned(),
        )
        .into());
    };
    if !(1..=MAX_PAGE).contains(&first) {
        return Err(
            GraphError::BadInput(format!("`first` must be between 1 and {MAX_PAGE}")).into(),
        );
    }
    let first = first as usize;
    let setup = ctx.data::<SyncSetup>()?;
    let owner = Owner {
        customer,
        process_user: viewer.process_user(),
    };
    let log = setup.log.as_ref();
    let claims = match token {
        Some(token) => open(setup, viewer, customer, &token)?,
        None => {
            // Before anything is read: what changes from here on comes in the first delta.
            let mut positions = Vec::new();
            for partition in partitions_of(log, customer) {
                let head = log.head(partition).await.map_err(log_error)?;
                positions.push((partition, head));
            }
            let start = SnapshotCursor {
                part: SnapshotPart::Orders,
                after: None,
            };
            Claims::new(&viewer.user_id, log.partitions(), positions, Some(start))
        }
    };
    let loaders = loaders(ctx)?;
    if let Some(cursor) = claims.snapshot.clone() {
        let page = snapshot::page(&loaders, &owner, cursor, first).await?;
        let now = Utc::now();
        let has_more = page.next.is_some();
        let next = Claims {
            snapshot: page.next,
            ..claims
        };
        return Ok(SyncPage {
            snapshot: true,
            changes: page.entities.into_iter().map(|e| e.change(now)).collect(),
            removed: Vec::new(),
            token: setup.key.sign(&next),
            has_more,
        });
    }

    let delta = delta::read(log, &claims.positions, &owner, first)
        .await
        .map_err(log_error)?;
    let (mut orders, mut cases, mut tasks) = (Vec::new(), Vec::new(), Vec::new());
    for key in &delta.changed {
        match key {
            EntityKey::Order(id) => orders.push(id.clone()),
            EntityKey::Case(id) => cases.push(id.clone()),
            EntityKey::Task(id) => tasks.push(*id),
        }
    }
    let (orders, cases, tasks) = futures::join!(
        loaders.orders.load_many(orders),
        loaders.cases.load_many(cases),
        loaders.tasks.load_many(tasks),
    );
    let (mut orders, mut cases, mut tasks) = (orders?, cases?, tasks?);
    let mut changes = Vec::new();
    let mut removed = Vec::new();
    for key in &delta.changed {
        let at = delta.updated_at.get(key).copied().unwrap_or_else(Utc::now);
        let now_in = match key {
            EntityKey::Order(id) => orders
                .remove(id)
                .filter(|o| viewer.authorize(&o.customer_id).is_ok())
                .map(Entity::Order),
            EntityKey::Case(id) => cases
                .remove(id)
                .filter(|c| viewer.authorize(&c.customer_id).is_ok())
                .map(Entity::Case),
            EntityKey::Task(id) => match tasks.remove(id).transpose()? {
                Some(task)
                    if on_work_list(&task, &owner)
                        && viewer.authorize_about(task.customer_id.as_ref()).is_ok() =>
                {
                    Some(Entity::Task(task))
                }
                _ => None,
            },
        };
        match now_in {
            Some(entity) => changes.push(entity.change(at)),
            None => removed.push(key.tombstone(at)),
        }
    }
    let next = Claims::new(&viewer.user_id, log.partitions(), delta.positions, None);
    Ok(SyncPage {
        snapshot: false,
        changes,
        removed,
        token: setup.key.sign(&next),
        has_more: delta.more,
    })
}

/// The partitions `customer`'s events can be in: theirs, and 0 (events naming no customer).
fn partitions_of(log: &dyn ChangeLog, customer: &CustomerId) -> Vec<usize> {
    let mut partitions = vec![0, log.partition_of(customer)];
    partitions.dedup();
    partitions
}

/// The claims of `token`, if it is ours, the viewer's, and its positions still mean something.
fn open(
    setup: &SyncSetup,
    viewer: &Viewer,
    customer: &CustomerId,
    token: &str,
) -> GraphResult<Claims> {
    let claims = setup.key.open(token).map_err(|_| {
        GraphError::Forbidden(
            "this sync token was not issued by this service, or was changed: sync again \
             without a token"
                .to_owned(),
        )
    })?;
    if claims.user != viewer.user_id {
        return Err(GraphError::Forbidden(
            "this sync token belongs to another user: sync again without a token".to_owned(),
        ));
    }
    let log = setup.log.as_ref();
    let expected = partitions_of(log, customer);
    let held: Vec<usize> = claims.positions.iter().map(|(p, _)| *p).collect();
    if claims.partitions != log.partitions() || held != expected {
        return Err(expired());
    }
    Ok(claims)
}

fn expired() -> GraphError {
    GraphError::Rejected(
        "SYNC_TOKEN_EXPIRED",
        "this sync token is older than the change log keeps: sync again without a token \
         (a snapshot)"
            .to_owned(),
    )
}

fn log_error(error: LogError) -> GraphError {
    match error {
        LogError::Expired => expired(),
        LogError::Unavailable(detail) => GraphError::Unavailable("sync changes", detail),
    }
}
