//! The ports: what the graph needs from the outside world, as traits.
//!
//! The server (`src/upstream/`) implements each with an HTTP adapter for the real system.
//! The graph only ever sees these traits and the records in [`crate::records`], so a resolver
//! never knows which wire format or which replica of an upstream answered; a failed call is an
//! [`UpstreamError`] of its [`Source`], which `crate::error` turns into a GraphQL error.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ids::{CaseId, CustomerId, OrderId, ProductId};
use crate::records::*;

/// One of the upstreams: where an error came from, which one an event is from. Serialized as
/// its name (`backend`, `crm`, `process`, `carrier`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The backend integration microservices.
    Backend,
    /// The CRM.
    Crm,
    /// The process automation server.
    Process,
    /// The parcel carrier.
    Carrier,
}

impl Source {
    /// Every upstream, in a fixed order.
    pub const ALL: [Source; 4] = [
        Source::Backend,
        Source::Crm,
        Source::Process,
        Source::Carrier,
    ];

    /// The name used in `extensions.source`, webhook routes, event ids and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Backend => "backend",
            Source::Crm => "crm",
            Source::Process => "process",
            Source::Carrier => "carrier",
        }
    }

    /// The upstream of this name (exactly as [`Source::as_str`] spells it).
    pub fn parse(name: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call to an upstream, as an adapter reports it.
///
/// Deliberately not `Display`: async-graphql turns any `Display` error into a GraphQL error
/// without our extensions, so an `UpstreamError` can only reach a client through
/// `crate::error::GraphError`, which sets `code` and `source`.
#[derive(Debug, Clone)]
pub struct UpstreamError {
    /// Which upstream failed.
    pub source: Source,
    /// How it failed.
    pub kind: UpstreamErrorKind,
}

/// How an upstream call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamErrorKind {
    /// Could not get a usable answer: connection refused, timeout, 5xx, a malformed body, our
    /// own credentials refused. `detail` is for logs only.
    #[error("unavailable: {detail}")]
    Unavailable { detail: String },
    /// Not sent: its breaker is open, its concurrency budget had no room in time, or the
    /// request's deadline left no time. Nothing reached the upstream (so a write did not
    /// happen). `detail` is for logs only.
    #[error("not sent: {detail}")]
    NotSent { detail: String },
    /// The upstream is rate limiting or out of quota.
    #[error("rate limited: {detail}")]
    RateLimited { detail: String },
    /// The upstream refused the request for a business reason the client can act on. `code`
    /// is one of ours (e.g. `OUT_OF_STOCK`), `message` is safe to show.
    #[error("rejected ({code}): {message}")]
    Rejected { code: &'static str, message: String },
    /// The thing asked for does not exist upstream.
    #[error("not found")]
    NotFound,
}

impl UpstreamError {
    /// An upstream that gave no usable answer.
    pub fn unavailable(source: Source, detail: impl Into<String>) -> Self {
        Self {
            source,
            kind: UpstreamErrorKind::Unavailable {
                detail: detail.into(),
            },
        }
    }

    /// Whether the upstream refused for the business reason `code` (e.g. `NOT_CANCELLABLE`).
    pub fn is_rejected_with(&self, code: &str) -> bool {
        matches!(&self.kind, UpstreamErrorKind::Rejected { code: c, .. } if *c == code)
    }

    /// Whether the upstream failed (no usable answer, or rate limiting us), as opposed to
    /// answering "no" or "not found".
    pub fn is_failure(&self) -> bool {
        matches!(
            self.kind,
            UpstreamErrorKind::Unavailable { .. }
                | UpstreamErrorKind::NotSent { .. }
                | UpstreamErrorKind::RateLimited { .. }
        )
    }

    /// A call that was never sent (see [`UpstreamErrorKind::NotSent`]).
    pub fn not_sent(source: Source, detail: impl Into<String>) -> Self {
        Self {
            source,
            kind: UpstreamErrorKind::NotSent {
                detail: detail.into(),
            },
        }
    }

    /// An upstream that refused for a business reason.
    pub fn rejected(source: Source, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            source,
            kind: UpstreamErrorKind::Rejected {
                code,
                message: message.into(),
            },
        }
    }
}

/// Result of a call to an upstream.
pub type UpstreamResult<T> = Result<T, UpstreamError>;

/// The company's backend integration microservices: customers, orders, products.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Customers by id, in one bulk call; unknown ids are absent from the answer.
    async fn customers_by_ids(&self, ids: &[CustomerId]) -> UpstreamResult<Vec<CustomerRecord>>;
    /// Customers whose name or email matches `search`, by id, one page.
    async fn search_customers(
        &self,
        search: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> UpstreamResult<Page<CustomerRecord>>;
    /// One page of a customer's orders, newest first.
    async fn orders_of_customer(
        &self,
        customer: &CustomerId,
        query: &OrderPageQuery,
    ) -> UpstreamResult<Page<OrderRecord>>;
    /// Orders by id, in one bulk call.
    async fn orders_by_ids(&self, ids: &[OrderId]) -> UpstreamResult<Vec<OrderRecord>>;
    /// Products by id, in one bulk call.
    async fn products_by_ids(&self, ids: &[ProductId]) -> UpstreamResult<Vec<ProductRecord>>;
    /// Places an order for a customer.
    async fn place_order(
        &self,
        customer: &CustomerId,
        lines: &[NewOrderLine],
    ) -> UpstreamResult<OrderRecord>;
    /// Cancels an order that has not shipped.
    async fn cancel_order(&self, id: &OrderId) -> UpstreamResult<OrderRecord>;
}

/// The CRM: contacts, support cases and their comments.
#[async_trait]
pub trait Crm: Send + Sync + 'static {
    /// The contact records of customers, in one query.
    async fn contacts_by_customer_ids(
        &self,
        ids: &[CustomerId],
    ) -> UpstreamResult<Vec<ContactRecord>>;
    /// The cases of these customers that `query` selects, newest first: at most
    /// `query.per_customer` of each customer, filtered and bounded by the CRM, in one query
    /// for the batch when it can.
    async fn cases_by_customer_ids(
        &self,
        ids: &[CustomerId],
        query: &CaseQuery,
    ) -> UpstreamResult<Vec<CaseRecord>>;
    /// Cases by id, in one query.
    async fn cases_by_ids(&self, ids: &[CaseId]) -> UpstreamResult<Vec<CaseRecord>>;
    /// The comments of these cases, oldest first, in one query.
    async fn comments_by_case_ids(&self, ids: &[CaseId]) -> UpstreamResult<Vec<CaseCommentRecord>>;
    /// Opens a case; answers its id.
    async fn create_case(&self, case: &NewCase) -> UpstreamResult<CaseId>;
    /// Adds a published comment to a case; answers the comment's id.
    async fn add_comment(&self, case: &CaseId, body: &str) -> UpstreamResult<String>;
}

/// The process automation server: process instances and human tasks.
#[async_trait]
pub trait ProcessServer: Send + Sync + 'static {
    /// Starts a return request for an order; answers the process instance id.
    async fn start_return(
        &self,
        customer: &CustomerId,
        order: &OrderId,
        reason: &str,
    ) -> UpstreamResult<i64>;
    /// One process instance; `None` when unknown.
    async fn process_instance(&self, id: i64) -> UpstreamResult<Option<ProcessInstanceRecord>>;
    /// The return requests of a customer, newest first.
    async fn returns_of_customer(
        &self,
        customer: &CustomerId,
    ) -> UpstreamResult<Vec<ProcessInstanceRecord>>;
    /// Open tasks `user` may work on (as a potential owner) or owns.
    async fn tasks_for_user(&self, user: &str) -> UpstreamResult<Vec<TaskRecord>>;
    /// One task with its input data; `None` when unknown.
    async fn task(&self, id: i64) -> UpstreamResult<Option<TaskRecord>>;
    /// Claims a ready task for `user`.
    async fn claim_task(&self, id: i64, user: &str) -> UpstreamResult<()>;
    /// Completes a task as `user` with output variables (claiming and starting it first if
    /// needed).
    async fn complete_task(
        &self,
        id: i64,
        user: &str,
        outputs: &serde_json::Map<String, serde_json::Value>,
    ) -> UpstreamResult<()>;
}

/// A parcel carrier's tracking API: one parcel per call, no bulk read.
#[async_trait]
pub trait Carrier: Send + Sync + 'static {
    /// Tracking of one parcel; `None` when the carrier does not know the number.
    async fn track(&self, tracking_number: &str) -> UpstreamResult<Option<TrackingRecord>>;
}

/// Every port the graph needs, shared by all requests.
#[derive(Clone)]
pub struct Ports {
    pub backend: Arc<dyn Backend>,
    pub crm: Arc<dyn Crm>,
    pub process: Arc<dyn ProcessServer>,
    pub carrier: Arc<dyn Carrier>,
    /// The cross-request entity cache the loaders read through.
    pub cache: Arc<dyn crate::cache::Cache>,
}

#[cfg(test)]
mod tests {
    use super::Source;

    #[test]
    fn a_source_is_its_name_everywhere() {
        for source in Source::ALL {
            let name = source.as_str();
            assert_eq!(Source::parse(name), Some(source));
            assert_eq!(source.to_string(), name);
            // As events carry it on the bus (Redis stream entries from before stay readable).
            assert_eq!(serde_json::to_value(source).unwrap(), name);
            assert_eq!(
                serde_json::from_value::<Source>(name.into()).unwrap(),
                source
            );
        }
        assert_eq!(Source::parse("Backend"), None);
        assert_eq!(Source::parse("oidc"), None);
    }
}
