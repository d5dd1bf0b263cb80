use async_graphql::{Context, ID, Object};
use chrono::{DateTime, Utc};

use super::{Customer, Order, loaders};
use crate::query::{load_customer, load_order};
use crate::records::{CaseCommentRecord, CasePriority, CaseRecord, CaseStatus};
use crate::viewer::{Role, viewer};

/// A support case the customer opened with customer service.
pub(crate) struct SupportCase(pub(crate) CaseRecord);

/// A support case the customer opened with customer service.
#[Object]
impl SupportCase {
    /// The case's id.
    async fn id(&self) -> ID {
        (&self.0.id).into()
    }

    /// The number customer service quotes, e.g. `00001024`.
    async fn case_number(&self) -> &str {
        &self.0.case_number
    }

    /// One-line summary.
    async fn subject(&self) -> &str {
        &self.0.subject
    }

    /// The customer's description of the problem.
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }

    /// Where the case is.
    async fn status(&self) -> CaseStatus {
        self.0.status
    }

    /// How urgent it is.
    async fn priority(&self) -> CasePriority {
        self.0.priority
    }

    /// Whether it is closed.
    async fn is_closed(&self) -> bool {
        self.0.status == CaseStatus::Closed
    }

    /// The channel it came in through (`Web`, `Phone`, `Email`, `App`).
    async fn origin(&self) -> Option<&str> {
        self.0.origin.as_deref()
    }

    /// When it was opened.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// When it was closed; null while open.
    async fn closed_at(&self) -> Option<DateTime<Utc>> {
        self.0.closed_at
    }

    /// The order it is about, if any.
    async fn order(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Order>> {
        let Some(id) = &self.0.order_id else {
            return Ok(None);
        };
        load_order(ctx, id.clone()).await
    }

    /// The customer who opened it.
    async fn customer(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Customer>> {
        load_customer(ctx, viewer(ctx)?, self.0.customer_id.clone()).await
    }

    /// The conversation, oldest first. Customers see the public comments; agents also see
    /// internal notes.
    async fn comments(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Vec<CaseComment>>> {
        let is_agent = viewer(ctx)?.role == Role::Agent;
        let mut comments = loaders(ctx)?
            .case_comments
            .load_one(self.0.id.clone())
            .await?
            .unwrap_or_default();
        comments.retain(|c| is_agent || c.is_published);
        comments.sort_by_key(|c| c.created_at);
        Ok(Some(comments.into_iter().map(CaseComment).collect()))
    }
}

/// A message on a support case.
pub(crate) struct CaseComment(pub(crate) CaseCommentRecord);

/// A message on a support case.
#[Object]
impl CaseComment {
    /// The comment's id.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    /// The text.
    async fn body(&self) -> &str {
        &self.0.body
    }

    /// When it was written.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// Whether the customer can see it (false for agents' internal notes).
    async fn is_public(&self) -> bool {
        self.0.is_published
    }
}
