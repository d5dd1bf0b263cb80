use async_graphql::{Context, ID, Object};
use chrono::{DateTime, Utc};

use super::{Order, loaders};
use crate::loaders::settle;
use crate::query::load_order;
use crate::records::{ProcessInstanceRecord, ProcessState, TaskRecord, TaskStatus};
use crate::viewer::viewer;

/// A running or finished business process, such as a return request.
pub(crate) struct ProcessInstance(pub(crate) ProcessInstanceRecord);

/// A running or finished business process, such as a return request.
#[Object]
impl ProcessInstance {
    /// The process instance's id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// Which process this is, e.g. `returns.ReturnRequest`.
    async fn process_id(&self) -> &str {
        &self.0.process_id
    }

    /// Human-readable process name, e.g. `Return request`.
    async fn name(&self) -> &str {
        &self.0.process_name
    }

    /// Whether it is still running.
    async fn state(&self) -> ProcessState {
        self.0.state
    }

    /// When it started.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }

    /// Why the customer asked (for return requests).
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }

    /// How it ended, e.g. `rejected` or `picked-up`; null while running.
    async fn outcome(&self) -> Option<&str> {
        self.0.outcome.as_deref()
    }

    /// The order it is about, if any.
    async fn order(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Order>> {
        let Some(id) = &self.0.order_id else {
            return Ok(None);
        };
        load_order(ctx, id.clone()).await
    }
}

/// A step of a process that waits for a person: an agent approving a return, a customer
/// confirming a pick-up.
pub(crate) struct Task(pub(crate) TaskRecord);

/// A step of a process that waits for a person: an agent approving a return, a customer
/// confirming a pick-up.
#[Object]
impl Task {
    /// The task's id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// What the task is, e.g. `ApproveReturn` or `ConfirmPickup`.
    async fn name(&self) -> &str {
        &self.0.name
    }

    /// What to do, in words.
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }

    /// Where the task is (`READY` to be claimed, `RESERVED` by its owner, ...).
    async fn status(&self) -> TaskStatus {
        self.0.status
    }

    /// Who has claimed it; null while nobody has.
    async fn owner(&self) -> Option<&str> {
        self.0.actual_owner.as_deref()
    }

    /// When it was created.
    async fn created_at(&self) -> Option<DateTime<Utc>> {
        self.0.created_at
    }

    /// The process it belongs to.
    async fn process(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ProcessInstance>> {
        let loaded = loaders(ctx)?
            .process_instances
            .load_one(self.0.process_instance_id)
            .await;
        let Some(instance) = settle(loaded)? else {
            return Ok(None);
        };
        viewer(ctx)?.authorize_about(instance.customer_id.as_ref())?;
        Ok(Some(ProcessInstance(instance)))
    }
}
