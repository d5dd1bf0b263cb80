//! What the upstream ports return: plain data, already translated from each upstream's wire
//! format by its adapter. GraphQL types in `types/` wrap these.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{CaseId, CustomerId, OrderId, ProductId};

/// An amount of money in minor units (cents) of a currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoneyRecord {
    /// Amount in the currency's minor unit (e.g. cents).
    pub minor_units: i64,
    /// ISO 4217 currency code.
    pub currency: String,
}

/// A customer as the backend knows them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CustomerRecord {
    pub id: CustomerId,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub phone: Option<String>,
    pub loyalty_tier: LoyaltyTier,
    pub created_at: DateTime<Utc>,
    pub address: Option<AddressRecord>,
}

/// A postal address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddressRecord {
    pub line1: String,
    pub city: String,
    pub postal_code: String,
    pub country: String,
}

/// Loyalty programme tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LoyaltyTier {
    /// Entry tier.
    Bronze,
    /// Middle tier.
    Silver,
    /// Top tier.
    Gold,
}

/// A product of the catalogue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProductRecord {
    pub id: ProductId,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub price: MoneyRecord,
    pub in_stock: bool,
    pub image_url: Option<String>,
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Received, not yet confirmed.
    Pending,
    /// Confirmed and being prepared.
    Confirmed,
    /// Handed to the carrier.
    Shipped,
    /// Delivered to the customer.
    Delivered,
    /// Cancelled before shipping.
    Cancelled,
}

/// An order with its lines.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderRecord {
    pub id: OrderId,
    pub customer_id: CustomerId,
    pub status: OrderStatus,
    pub placed_at: DateTime<Utc>,
    pub lines: Vec<OrderLineRecord>,
    pub total: MoneyRecord,
    pub shipment: Option<ShipmentRef>,
}

/// One line of an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderLineRecord {
    pub line_no: u32,
    pub product_id: ProductId,
    pub quantity: u32,
    pub unit_price: MoneyRecord,
}

/// The parcel of a shipped order: which carrier, which tracking number.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShipmentRef {
    pub carrier: String,
    pub tracking_number: String,
}

/// A page of a list an upstream pages through with cursors.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Filters and paging for a customer's orders.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderPageQuery {
    pub limit: usize,
    /// Continue after this order id.
    pub after: Option<String>,
    pub status: Option<OrderStatus>,
}

/// Which of a customer's support cases to read: the newest `per_customer`, and only those not
/// closed when `open_only`. The CRM filters and bounds (never the graph after reading all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaseQuery {
    pub open_only: bool,
    pub per_customer: usize,
}

/// A line of an order to place.
#[derive(Debug, Clone)]
pub struct NewOrderLine {
    pub product_id: ProductId,
    pub quantity: u32,
}

/// Status of a parcel at the carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ShipmentStatus {
    /// The label exists; the carrier does not have the parcel yet.
    LabelCreated,
    /// On its way.
    InTransit,
    /// With the driver today.
    OutForDelivery,
    /// Delivered.
    Delivered,
    /// Something went wrong (damaged, address problem, ...).
    Exception,
}

/// A parcel's tracking at the carrier.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrackingRecord {
    pub tracking_number: String,
    pub carrier: String,
    pub status: ShipmentStatus,
    pub estimated_delivery: Option<DateTime<Utc>>,
    /// Newest first.
    pub events: Vec<TrackingEventRecord>,
}

/// One scan of a parcel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrackingEventRecord {
    pub timestamp: DateTime<Utc>,
    pub location: String,
    pub status: ShipmentStatus,
    pub description: String,
}

/// A customer's contact record in the CRM.
#[derive(Debug, Clone)]
pub struct ContactRecord {
    pub id: String,
    pub customer_id: CustomerId,
}

/// Status of a support case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
pub enum CaseStatus {
    /// Just opened, nobody has looked at it yet.
    New,
    /// An agent is working on it.
    Working,
    /// Handed to a specialist team.
    Escalated,
    /// Resolved and closed.
    Closed,
}

/// Priority of a support case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
pub enum CasePriority {
    /// Can wait.
    Low,
    /// Normal.
    Medium,
    /// Urgent.
    High,
}

/// A support case in the CRM.
#[derive(Debug, Clone)]
pub struct CaseRecord {
    pub id: CaseId,
    pub case_number: String,
    pub subject: String,
    pub description: Option<String>,
    pub status: CaseStatus,
    pub priority: CasePriority,
    pub origin: Option<String>,
    /// The customer the case's contact stands for.
    pub customer_id: CustomerId,
    pub order_id: Option<OrderId>,
    pub created_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
}

/// A case to open.
#[derive(Debug, Clone)]
pub struct NewCase {
    pub contact_id: String,
    pub subject: String,
    pub description: Option<String>,
    pub priority: CasePriority,
    pub order_id: Option<OrderId>,
}

/// A comment on a support case.
#[derive(Debug, Clone)]
pub struct CaseCommentRecord {
    pub id: String,
    pub case_id: CaseId,
    pub body: String,
    /// Whether the customer may see it (agents' internal notes are not published).
    pub is_published: bool,
    pub created_at: DateTime<Utc>,
}

/// State of a process instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
pub enum ProcessState {
    /// Still running.
    Active,
    /// Finished.
    Completed,
    /// Stopped before finishing.
    Aborted,
}

/// A running or finished process (e.g. a return request).
#[derive(Debug, Clone)]
pub struct ProcessInstanceRecord {
    pub id: i64,
    pub process_id: String,
    pub process_name: String,
    pub state: ProcessState,
    pub started_at: Option<DateTime<Utc>>,
    pub customer_id: Option<CustomerId>,
    pub order_id: Option<OrderId>,
    pub reason: Option<String>,
    pub outcome: Option<String>,
}

/// Status of a human task (WS-HumanTask states, as KIE Server names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
pub enum TaskStatus {
    /// Created, not yet offered.
    Created,
    /// Offered to its potential owners; nobody has claimed it.
    Ready,
    /// Claimed by one user.
    Reserved,
    /// Its owner is working on it.
    InProgress,
    /// Put on hold.
    Suspended,
    /// Done.
    Completed,
    /// Failed.
    Failed,
    /// Ended with an error.
    Error,
    /// Left before completion.
    Exited,
    /// No longer valid.
    Obsolete,
}

/// A human task of a process.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub status: TaskStatus,
    pub actual_owner: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub process_instance_id: i64,
    pub container_id: String,
    /// The customer the task is about, when the task's input data names one (task instance
    /// reads carry it; list reads do not).
    pub customer_id: Option<CustomerId>,
}
