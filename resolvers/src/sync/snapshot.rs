//! A first snapshot of the signed-in customer's working set, a page at a time: their orders
//! (newest first, all of them, through the backend's pages), their support cases (the newest
//! [`crate::loaders::MAX_CASES_PER_CUSTOMER`]), then the open tasks offered to them. Each page
//! holds at most `first` entities, and says where the next continues.

use crate::error::GraphResult;
use crate::loaders::{Loaders, settle};
use crate::records::{CaseRecord, OrderPageQuery, OrderRecord, TaskRecord, TaskStatus};

use super::delta::Owner;
use super::token::{SnapshotCursor, SnapshotPart};

/// One entity of the working set, as read.
pub(crate) enum Entity {
    Order(OrderRecord),
    Case(CaseRecord),
    Task(TaskRecord),
}

/// A page of the snapshot.
pub(crate) struct SnapshotPage {
    pub(crate) entities: Vec<Entity>,
    /// Where the next page starts; `None` when this was the last.
    pub(crate) next: Option<SnapshotCursor>,
}

/// Whether `task` is on `owner`'s work list: offered to them (`READY`) or theirs
/// (`RESERVED`), as the process server's potential-owner query lists them.
pub(crate) fn on_work_list(task: &TaskRecord, owner: &Owner<'_>) -> bool {
    matches!(task.status, TaskStatus::Ready | TaskStatus::Reserved)
        && task
            .actual_owner
            .as_deref()
            .is_none_or(|who| who == owner.process_user)
}

/// The page of at most `first` entities starting at `cursor`.
pub(crate) async fn page(
    loaders: &Loaders,
    owner: &Owner<'_>,
    cursor: SnapshotCursor,
    first: usize,
) -> GraphResult<SnapshotPage> {
    let mut entities = Vec::with_capacity(first);
    let mut next = Some(cursor);
    while let Some(cursor) = next.take() {
        let room = first - entities.len();
        if room == 0 {
            next = Some(cursor);
            break;
        }
        let offset = || {
            cursor
                .after
                .as_deref()
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0)
        };
        match cursor.part {
            SnapshotPart::Orders => {
                let query = OrderPageQuery {
                    limit: room,
                    after: cursor.after.clone(),
                    status: None,
                };
                let page = settle(
                    loaders
                        .customer_orders
                        .load_one((owner.customer.clone(), query))
                        .await,
                )?;
                let (items, more) = match page {
                    // An empty page that names a next one would loop: the orders end there.
                    Some(page) if !page.items.is_empty() => (page.items, page.next_cursor),
                    _ => (Vec::new(), None),
                };
                entities.extend(items.into_iter().map(Entity::Order));
                next = Some(match more {
                    Some(after) => SnapshotCursor {
                        part: SnapshotPart::Orders,
                        after: Some(after),
                    },
                    None => SnapshotCursor {
                        part: SnapshotPart::Cases,
                        after: None,
                    },
                });
            }
            SnapshotPart::Cases => {
                let mut cases = loaders
                    .customer_cases
                    .load_one(owner.customer.clone())
                    .await?
                    .unwrap_or_default();
                cases.sort_by_key(|c| std::cmp::Reverse(c.created_at));
                let (taken, rest) = take(cases, offset(), room);
                entities.extend(taken.into_iter().map(Entity::Case));
                next = Some(SnapshotCursor {
                    part: if rest.is_some() {
                        SnapshotPart::Cases
                    } else {
                        SnapshotPart::Tasks
                    },
                    after: rest,
                });
            }
            SnapshotPart::Tasks => {
                let tasks = settle(
                    loaders
                        .user_tasks
                        .load_one(owner.process_user.to_owned())
                        .await,
                )?
                .unwrap_or_default();
                let tasks = tasks
                    .into_iter()
                    .filter(|t| on_work_list(t, owner))
                    .collect();
                let (taken, rest) = take(tasks, offset(), room);
                entities.extend(taken.into_iter().map(Entity::Task));
                next = rest.map(|after| SnapshotCursor {
                    part: SnapshotPart::Tasks,
                    after: Some(after),
                });
            }
        }
    }
    Ok(SnapshotPage { entities, next })
}

/// At most `room` of `items` from `offset` on, and the offset after them when more remain.
fn take<T>(items: Vec<T>, offset: usize, room: usize) -> (Vec<T>, Option<String>) {
    let total = items.len();
    let taken: Vec<T> = items.into_iter().skip(offset).take(room).collect();
    let end = offset.saturating_add(taken.len());
    (taken, (end < total).then(|| end.to_string()))
}
