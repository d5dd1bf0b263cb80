//! The sandbox's world: every record the fake upstreams serve, in one place.
//!
//! The five servers are views over one [`World`]: the backend serves its customers, products and
//! orders, the CRM its contacts, cases and comments, the process server its return processes and
//! tasks, the carrier its parcels. Keeping them together keeps them consistent (a CRM contact per
//! customer, a parcel per shipped order) and lets one mutation touch several upstreams' views.
//!
//! Every mutation is a method here, so the handlers and the simulator (orders ship, parcels are
//! scanned, agents answer cases) change the world the same way, and every mutation announces
//! itself on the [`SandboxChange`] channel, from which the webhook sender posts it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::broadcast;

/// Currency of every price in the sandbox.
pub(crate) const CURRENCY: &str = "EUR";
/// The KIE container holding the return process.
pub(crate) const RETURNS_CONTAINER: &str = "returns";
/// The process definition id of a return request.
pub(crate) const RETURN_PROCESS_ID: &str = "returns.ReturnRequest";
/// The group every `agent-*` user belongs to in the process server.
pub(crate) const AGENTS_GROUP: &str = "agents";
/// The carrier that ships every order.
pub(crate) const CARRIER_NAME: &str = "PARCELCO";
/// How many changes a slow receiver may lag behind before it misses some.
const CHANGE_CHANNEL_CAPACITY: usize = 1024;

/// Something that changed in the sandbox's world, announced on [`crate::Sandbox::changes`].
///
/// Status values are the upstream's own wire names (`"SHIPPED"`, `"Working"`, `"Ready"`).
/// Receivers that lag more than 1,024 changes behind miss the oldest ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum SandboxChange {
    /// An order was placed or its status changed (backend).
    #[serde(rename_all = "camelCase")]
    OrderStatusChanged {
        /// The order, `ord-NNNNNN`.
        order_id: String,
        /// Its customer, `cust-NNNN`.
        customer_id: String,
        /// The new status, e.g. `CONFIRMED`, `SHIPPED`.
        status: String,
    },
    /// The carrier recorded a scan of a parcel.
    #[serde(rename_all = "camelCase")]
    ShipmentScanned {
        /// The parcel's tracking number, `PC1NNNNNNNN`.
        tracking_number: String,
        /// The order shipped in the parcel.
        order_id: String,
        /// The order's customer.
        customer_id: String,
        /// The parcel's new status, e.g. `OUT_FOR_DELIVERY`.
        status: String,
        /// Where the parcel was scanned, e.g. `Leipzig, DE`.
        location: String,
        /// What the scan says, e.g. `Out for delivery`.
        description: String,
    },
    /// A CRM case was created or its status changed.
    #[serde(rename_all = "camelCase")]
    CaseChanged {
        /// The case's Salesforce id (`500...`).
        case_id: String,
        /// The case's number, e.g. `00001001`.
        case_number: String,
        /// The customer behind the case's contact, if the contact has one.
        customer_id: Option<String>,
        /// The case's status, e.g. `New`, `Closed`.
        status: String,
        /// Whether the case was just created (else an existing case changed).
        created: bool,
    },
    /// A comment was added to a CRM case.
    #[serde(rename_all = "camelCase")]
    CaseCommentAdded {
        /// The case's Salesforce id (`500...`).
        case_id: String,
        /// The comment's Salesforce id (`00a...`).
        comment_id: String,
        /// The number of the case, e.g. `00001001`.
        case_number: String,
        /// The customer behind the case's contact, if the contact has one.
        customer_id: Option<String>,
        /// Whether the comment is visible to the customer.
        published: bool,
    },
    /// A human task was created or changed state.
    #[serde(rename_all = "camelCase")]
    TaskChanged {
        /// What happened to the task.
        event: TaskEvent,
        /// The task id.
        task_id: i64,
        /// The process instance the task belongs to.
        process_instance_id: i64,
        /// `ApproveReturn` or `ConfirmPickup`.
        task_name: String,
        /// KIE task status, e.g. `Ready`, `Reserved`, `Completed`.
        status: String,
        /// The user working on the task, if any.
        actual_owner: Option<String>,
        /// Users and groups who may work on the task, e.g. `["agents"]` or `["cust-0001"]`.
        potential_owners: Vec<String>,
        /// The customer of the return request.
        customer_id: String,
        /// The order the return request is about.
        order_id: String,
    },
    /// A product's price or stock changed (backend).
    #[serde(rename_all = "camelCase")]
    ProductChanged {
        /// The product, `prod-NNNN`.
        product_id: String,
        /// Its name.
        name: String,
        /// Its price now, in cents of [`CURRENCY`].
        price_minor: i64,
        /// Whether it is in stock now.
        in_stock: bool,
        /// Its price before the change.
        previous_price_minor: i64,
        /// Whether it was in stock before the change.
        previous_in_stock: bool,
    },
    /// A process instance was started or changed state.
    #[serde(rename_all = "camelCase")]
    ProcessChanged {
        /// The process instance id.
        process_instance_id: i64,
        /// The customer of the return request.
        customer_id: String,
        /// The order the return request is about.
        order_id: String,
        /// KIE process instance state: 1 active, 2 completed, 3 aborted.
        state: i32,
        /// `picked-up` or `rejected` once completed.
        outcome: Option<String>,
    },
}

/// What happened to a human task, named as KIE's task event listener names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TaskEvent {
    /// The process reached the task: it is `Ready` for its potential owners.
    #[serde(rename = "TaskCreated")]
    Created,
    /// A potential owner claimed it: `Reserved`.
    #[serde(rename = "TaskClaimed")]
    Claimed,
    /// Its owner started working on it: `InProgress`.
    #[serde(rename = "TaskStarted")]
    Started,
    /// Its owner gave it back: `Ready` again.
    #[serde(rename = "TaskReleased")]
    Released,
    /// Its owner completed it: `Completed`.
    #[serde(rename = "TaskCompleted")]
    Completed,
}

impl TaskEvent {
    /// The listener's event name, e.g. `TaskClaimed`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Created => "TaskCreated",
            Self::Claimed => "TaskClaimed",
            Self::Started => "TaskStarted",
            Self::Released => "TaskReleased",
            Self::Completed => "TaskCompleted",
        }
    }
}

/// Loyalty tier of a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoyaltyTier {
    Bronze,
    Silver,
    Gold,
}

impl LoyaltyTier {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Bronze => "BRONZE",
            Self::Silver => "SILVER",
            Self::Gold => "GOLD",
        }
    }
}

/// A postal address.
#[derive(Debug, Clone)]
pub(crate) struct Address {
    pub(crate) line1: String,
    pub(crate) city: String,
    pub(crate) postal_code: String,
    /// ISO 3166-1 alpha-2.
    pub(crate) country: String,
}

/// A customer of the backend.
#[derive(Debug, Clone)]
pub(crate) struct Customer {
    pub(crate) id: String,
    pub(crate) first_name: String,
    pub(crate) last_name: String,
    pub(crate) email: String,
    pub(crate) phone: String,
    pub(crate) loyalty_tier: LoyaltyTier,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) address: Address,
}

/// A product of the backend's catalogue.
#[derive(Debug, Clone)]
pub(crate) struct Product {
    pub(crate) id: String,
    pub(crate) sku: String,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) category: String,
    /// Price in cents of [`CURRENCY`].
    pub(crate) price_minor: i64,
    pub(crate) in_stock: bool,
}

/// Status of a backend order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderStatus {
    Pending,
    Confirmed,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::Shipped => "SHIPPED",
            Self::Delivered => "DELIVERED",
            Self::Cancelled => "CANCELLED",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Confirmed,
            Self::Shipped,
            Self::Delivered,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }

    /// Whether an order in this status may still be cancelled.
    pub(crate) fn is_cancellable(self) -> bool {
        matches!(self, Self::Pending | Self::Confirmed)
    }
}

/// One line of an order.
#[derive(Debug, Clone)]
pub(crate) struct OrderLine {
    pub(crate) product_id: String,
    pub(crate) quantity: u32,
    /// The product's price when the order was placed, in cents.
    pub(crate) unit_price_minor: i64,
}

/// An order of the backend.
#[derive(Debug, Clone)]
pub(crate) struct Order {
    pub(crate) id: String,
    pub(crate) customer_id: String,
    pub(crate) status: OrderStatus,
    pub(crate) placed_at: DateTime<Utc>,
    pub(crate) lines: Vec<OrderLine>,
    /// Set when the order ships; the carrier knows a parcel under this number.
    pub(crate) tracking_number: Option<String>,
}

impl Order {
    pub(crate) fn total_minor(&self) -> i64 {
        self.lines
            .iter()
            .map(|line| line.unit_price_minor * i64::from(line.quantity))
            .sum()
    }
}

/// Status of a parcel at the carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParcelStatus {
    LabelCreated,
    InTransit,
    OutForDelivery,
    Delivered,
    Exception,
}

impl ParcelStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::LabelCreated => "LABEL_CREATED",
            Self::InTransit => "IN_TRANSIT",
            Self::OutForDelivery => "OUT_FOR_DELIVERY",
            Self::Delivered => "DELIVERED",
            Self::Exception => "EXCEPTION",
        }
    }
}

/// One scan of a parcel.
#[derive(Debug, Clone)]
pub(crate) struct ScanEvent {
    pub(crate) timestamp: DateTime<Utc>,
    pub(crate) location: String,
    pub(crate) status: ParcelStatus,
    pub(crate) description: String,
}

/// A parcel the carrier tracks.
#[derive(Debug, Clone)]
pub(crate) struct Parcel {
    pub(crate) tracking_number: String,
    pub(crate) order_id: String,
    pub(crate) status: ParcelStatus,
    pub(crate) estimated_delivery: Option<DateTime<Utc>>,
    /// Oldest first; the API answers newest first.
    pub(crate) events: Vec<ScanEvent>,
}

/// A CRM contact: one per customer.
#[derive(Debug, Clone)]
pub(crate) struct Contact {
    pub(crate) id: String,
    pub(crate) first_name: String,
    pub(crate) last_name: String,
    pub(crate) email: String,
    /// `Customer_Id__c`, the external id linking the contact to the backend's customer.
    pub(crate) customer_id: Option<String>,
}

/// Status picklist of a CRM case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CaseStatus {
    New,
    Working,
    Escalated,
    Closed,
}

impl CaseStatus {
    pub(crate) const ALL: [Self; 4] = [Self::New, Self::Working, Self::Escalated, Self::Closed];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::New => "New",
            Self::Working => "Working",
            Self::Escalated => "Escalated",
            Self::Closed => "Closed",
        }
    }
}

/// A CRM case.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub(crate) id: String,
    pub(crate) case_number: String,
    pub(crate) subject: String,
    pub(crate) description: Option<String>,
    pub(crate) status: CaseStatus,
    /// Picklist `Low`/`Medium`/`High`.
    pub(crate) priority: &'static str,
    /// Picklist `Web`/`Phone`/`Email`/`App`.
    pub(crate) origin: &'static str,
    pub(crate) contact_id: Option<String>,
    /// `Order_Id__c`: the backend order the case is about.
    pub(crate) order_id: Option<String>,
    pub(crate) created_date: DateTime<Utc>,
    pub(crate) closed_date: Option<DateTime<Utc>>,
}

/// Values of the `Priority` picklist of a case.
pub(crate) const CASE_PRIORITIES: [&str; 3] = ["Low", "Medium", "High"];
/// Values of the `Origin` picklist of a case.
pub(crate) const CASE_ORIGINS: [&str; 4] = ["Web", "Phone", "Email", "App"];

/// A comment on a CRM case.
#[derive(Debug, Clone)]
pub(crate) struct CaseComment {
    pub(crate) id: String,
    pub(crate) parent_id: String,
    pub(crate) body: String,
    pub(crate) is_published: bool,
    pub(crate) created_date: DateTime<Utc>,
    pub(crate) created_by_id: String,
}

/// State of a KIE process instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcessState {
    Active,
    Completed,
    Aborted,
}

impl ProcessState {
    /// KIE's numeric code: 1 active, 2 completed, 3 aborted.
    pub(crate) fn code(self) -> i32 {
        match self {
            Self::Active => 1,
            Self::Completed => 2,
            Self::Aborted => 3,
        }
    }
}

/// An instance of the return process.
#[derive(Debug, Clone)]
pub(crate) struct ProcessInstance {
    pub(crate) id: i64,
    pub(crate) state: ProcessState,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) initiator: String,
    pub(crate) customer_id: String,
    pub(crate) order_id: String,
    pub(crate) reason: String,
    /// `picked-up` or `rejected` once completed.
    pub(crate) outcome: Option<String>,
}

/// Which human task of the return process a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskName {
    ApproveReturn,
    ConfirmPickup,
}

impl TaskName {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::ApproveReturn => "ApproveReturn",
            Self::ConfirmPickup => "ConfirmPickup",
        }
    }
}

/// Status of a KIE human task (the subset the return process goes through).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskStatus {
    Ready,
    Reserved,
    InProgress,
    Completed,
    /// The task's process was aborted.
    Exited,
}

impl TaskStatus {
    pub(crate) const ALL: [Self; 5] = [
        Self::Ready,
        Self::Reserved,
        Self::InProgress,
        Self::Completed,
        Self::Exited,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Reserved => "Reserved",
            Self::InProgress => "InProgress",
            Self::Completed => "Completed",
            Self::Exited => "Exited",
        }
    }
}

/// Who may work on a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PotentialOwner {
    User(String),
    Group(&'static str),
}

impl PotentialOwner {
    /// The entity's id as KIE lists it in `task-pot-owners`.
    pub(crate) fn id(&self) -> &str {
        match self {
            Self::User(user) => user,
            Self::Group(group) => group,
        }
    }
}

/// A human task of the return process.
#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub(crate) id: i64,
    pub(crate) name: TaskName,
    pub(crate) status: TaskStatus,
    pub(crate) actual_owner: Option<String>,
    pub(crate) potential_owner: PotentialOwner,
    pub(crate) created_on: DateTime<Utc>,
    pub(crate) process_instance_id: i64,
    /// `customerId`, `orderId`, `reason` of the process.
    pub(crate) customer_id: String,
    pub(crate) order_id: String,
    pub(crate) reason: String,
    /// The output variables it was completed with.
    pub(crate) output: serde_json::Map<String, serde_json::Value>,
}

impl Task {
    pub(crate) fn description(&self) -> String {
        match self.name {
            TaskName::ApproveReturn => format!("Approve the return of {}", self.order_id),
            TaskName::ConfirmPickup => {
                format!("Hand the parcel of {} to the courier", self.order_id)
            }
        }
    }
}

/// Whether `user` is in `group` in the process server: `agent-*` users are in `agents`.
pub(crate) fn user_in_group(user: &str, group: &str) -> bool {
    group == AGENTS_GROUP && user.starts_with("agent-")
}

/// Why an order could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PlaceOrderError {
    #[error("an order needs at least one line")]
    EmptyOrder,
    #[error("an order has at most {max} lines")]
    TooManyLines { max: usize },
    #[error("no customer {0}")]
    UnknownCustomer(String),
    #[error("line {line}: no product {product_id}")]
    UnknownProduct { line: usize, product_id: String },
    #[error("line {line}: quantity must be between 1 and 99, got {quantity}")]
    InvalidQuantity { line: usize, quantity: i64 },
    #[error("line {line}: product {product_id} is out of stock")]
    OutOfStock { line: usize, product_id: String },
}

/// Why an order could not change status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OrderTransitionError {
    #[error("no order {0}")]
    NotFound(String),
    #[error("order {id} is {status} and cannot be {action}")]
    WrongStatus {
        id: String,
        status: &'static str,
        action: &'static str,
    },
}

/// Why a case or comment could not be created or changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CrmWriteError {
    #[error("no {object} with id {id}")]
    UnknownReference { object: &'static str, id: String },
}

/// Why a task operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TaskError {
    #[error("Could not find task instance with id {0}")]
    NotFound(i64),
    /// Wrong user, wrong owner or wrong status: KIE answers 403 to all of them.
    #[error("{0}")]
    Forbidden(String),
    /// The output variables do not fit the task.
    #[error("{0}")]
    BadOutput(String),
}

/// The input of a new case; defaults are already applied.
#[derive(Debug, Clone)]
pub(crate) struct NewCase {
    pub(crate) subject: String,
    pub(crate) description: Option<String>,
    pub(crate) status: CaseStatus,
    pub(crate) priority: &'static str,
    pub(crate) origin: &'static str,
    pub(crate) contact_id: String,
    pub(crate) order_id: Option<String>,
}

/// The largest number of lines one order may have.
pub(crate) const MAX_ORDER_LINES: usize = 50;

/// Salesforce id of the CRM user the integration (and the sandbox's own writes) acts as.
pub(crate) fn integration_user_id() -> String {
    salesforce_id("005", 3)
}

/// Salesforce id of the CRM user of agent `agent-0N` (N = 1 or 2).
pub(crate) fn agent_user_id(agent_no: u64) -> String {
    salesforce_id("005", agent_no)
}

/// An 18-character Salesforce id: a 3-character key prefix, the record number as 12 digits, and
/// the 3-character case-safety suffix Salesforce derives from the 15-character id.
pub(crate) fn salesforce_id(prefix: &str, number: u64) -> String {
    let base = format!("{prefix}{number:012}");
    let suffix = salesforce_id_suffix(&base);
    base + &suffix
}

/// Salesforce's case-safety suffix of a 15-character id: for each 5-character chunk, a bit per
/// upper-case letter, mapped onto `A..Z0..5`.
pub(crate) fn salesforce_id_suffix(id15: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    id15.as_bytes()
        .chunks(5)
        .map(|chunk| {
            let flags = chunk
                .iter()
                .enumerate()
                .filter(|(_, byte)| byte.is_ascii_uppercase())
                .fold(0usize, |flags, (bit, _)| flags | (1 << bit));
            char::from(ALPHABET[flags])
        })
        .collect()
}

/// Turns a 15- or 18-character Salesforce id into its 18-character form; other input is
/// returned unchanged (it matches nothing).
pub(crate) fn normalize_salesforce_id(id: &str) -> String {
    if id.len() == 15 && id.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
        format!("{id}{}", salesforce_id_suffix(id))
    } else {
        id.to_owned()
    }
}

/// The sandbox's world: every record of every upstream.
#[derive(Debug)]
pub(crate) struct World {
    // Backend. BTreeMaps where the API lists in id order, HashMaps where it only looks up.
    pub(crate) customers: BTreeMap<String, Customer>,
    pub(crate) products: BTreeMap<String, Product>,
    pub(crate) orders: HashMap<String, Order>,
    /// Order ids of each customer, so listing a customer's orders does not scan 20,000 orders.
    pub(crate) orders_by_customer: HashMap<String, Vec<String>>,
    /// Number of the next order placed (`ord-NNNNNN`).
    pub(crate) next_order_no: u64,

    // Carrier, keyed by tracking number.
    pub(crate) parcels: HashMap<String, Parcel>,

    // CRM, keyed by 18-character Salesforce id; SOQL lists in id order.
    pub(crate) contacts: BTreeMap<String, Contact>,
    /// Contact id of each customer id (`Customer_Id__c` is an external id).
    pub(crate) contact_by_customer: HashMap<String, String>,
    pub(crate) cases: BTreeMap<String, Case>,
    pub(crate) comments: BTreeMap<String, CaseComment>,
    pub(crate) next_case_no: u64,
    pub(crate) next_comment_no: u64,

    // Process server, keyed by id.
    pub(crate) processes: BTreeMap<i64, ProcessInstance>,
    pub(crate) tasks: BTreeMap<i64, Task>,
    pub(crate) next_process_id: i64,
    pub(crate) next_task_id: i64,

    /// Where mutations announce themselves. A broadcast channel: many listeners (webhooks,
    /// tests), none required, and a slow listener loses old changes rather than blocking a write.
    pub(crate) changes: broadcast::Sender<SandboxChange>,
}

impl Default for World {
    fn default() -> Self {
        Self {
            customers: BTreeMap::new(),
            products: BTreeMap::new(),
            orders: HashMap::new(),
            orders_by_customer: HashMap::new(),
            next_order_no: 1,
            parcels: HashMap::new(),
            contacts: BTreeMap::new(),
            contact_by_customer: HashMap::new(),
            cases: BTreeMap::new(),
            comments: BTreeMap::new(),
            next_case_no: 1,
            next_comment_no: 1,
            processes: BTreeMap::new(),
            tasks: BTreeMap::new(),
            next_process_id: 1,
            next_task_id: 1,
            changes: broadcast::channel(CHANGE_CHANNEL_CAPACITY).0,
        }
    }
}

impl World {
    fn announce(&self, change: SandboxChange) {
        // No receiver is fine: nobody is listening yet.
        let _ = self.changes.send(change);
    }

    // ----- backend -------------------------------------------------------------------------

    /// Changes a product's price (cents, positive) and stock, announcing the change when
    /// there is one. `None` when there is no such product.
    pub(crate) fn update_product(
        &mut self,
        product_id: &str,
        price_minor: Option<i64>,
        in_stock: Option<bool>,
    ) -> Option<Product> {
        let product = self.products.get_mut(product_id)?;
        let (previous_price_minor, previous_in_stock) = (product.price_minor, product.in_stock);
        product.price_minor = price_minor.unwrap_or(product.price_minor);
        product.in_stock = in_stock.unwrap_or(product.in_stock);
        let product = product.clone();
        if (product.price_minor, product.in_stock) != (previous_price_minor, previous_in_stock) {
            self.announce(SandboxChange::ProductChanged {
                product_id: product.id.clone(),
                name: product.name.clone(),
                price_minor: product.price_minor,
                in_stock: product.in_stock,
                previous_price_minor,
                previous_in_stock,
            });
        }
        Some(product)
    }

    /// Adds an order built by the seeder or a mutation, indexing it by customer.
    pub(crate) fn insert_order(&mut self, order: Order) {
        self.orders_by_customer
            .entry(order.customer_id.clone())
            .or_default()
            .push(order.id.clone());
        self.orders.insert(order.id.clone(), order);
    }

    /// The orders of a customer, newest first (by `placedAt`, then id).
    pub(crate) fn customer_orders(&self, customer_id: &str) -> Vec<&Order> {
        let mut orders: Vec<&Order> = self
            .orders_by_customer
            .get(customer_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.orders.get(id))
            .collect();
        orders.sort_by(|a, b| (b.placed_at, &b.id).cmp(&(a.placed_at, &a.id)));
        orders
    }

    /// Places an order in status `CONFIRMED`, pricing each line at the product's current price.
    /// `lines` are `(product id, quantity)`.
    pub(crate) fn place_order(
        &mut self,
        customer_id: &str,
        lines: &[(String, i64)],
        now: DateTime<Utc>,
    ) -> Result<Order, PlaceOrderError> {
        if lines.is_empty() {
            return Err(PlaceOrderError::EmptyOrder);
        }
        if lines.len() > MAX_ORDER_LINES {
            return Err(PlaceOrderError::TooManyLines {
                max: MAX_ORDER_LINES,
            });
        }
        if !self.customers.contains_key(customer_id) {
            return Err(PlaceOrderError::UnknownCustomer(customer_id.to_owned()));
        }
        let mut order_lines = Vec::with_capacity(lines.len());
        for (index, (product_id, quantity)) in lines.iter().enumerate() {
            let line = index + 1;
            let product =
                self.products
                    .get(product_id)
                    .ok_or_else(|| PlaceOrderError::UnknownProduct {
                        line,
                        product_id: product_id.clone(),
                    })?;
            let quantity = u32::try_from(*quantity)
                .ok()
                .filter(|quantity| (1..=99).contains(quantity))
                .ok_or(PlaceOrderError::InvalidQuantity {
                    line,
                    quantity: *quantity,
                })?;
            if !product.in_stock {
                return Err(PlaceOrderError::OutOfStock {
                    line,
                    product_id: product_id.clone(),
                });
            }
            order_lines.push(OrderLine {
                product_id: product.id.clone(),
                quantity,
                unit_price_minor: product.price_minor,
            });
        }
        let order = Order {
            id: format!("ord-{:06}", self.next_order_no),
            customer_id: customer_id.to_owned(),
            status: OrderStatus::Confirmed,
            placed_at: now,
            lines: order_lines,
            tracking_number: None,
        };
        self.next_order_no += 1;
        self.insert_order(order.clone());
        self.announce_order(&order);
        Ok(order)
    }

    /// Cancels a `PENDING` or `CONFIRMED` order.
    pub(crate) fn cancel_order(&mut self, order_id: &str) -> Result<Order, OrderTransitionError> {
        self.transition_order(
            order_id,
            "cancelled",
            OrderStatus::is_cancellable,
            |order| {
                order.status = OrderStatus::Cancelled;
            },
        )
    }

    /// Confirms a `PENDING` order (payment cleared, stock reserved): it becomes `CONFIRMED`.
    pub(crate) fn confirm_order(&mut self, order_id: &str) -> Result<Order, OrderTransitionError> {
        self.transition_order(
            order_id,
            "confirmed",
            |status| status == OrderStatus::Pending,
            |order| order.status = OrderStatus::Confirmed,
        )
    }

    /// Ships a `PENDING` or `CONFIRMED` order: gives it a tracking number (`PC1` and the order
    /// number) and the carrier a parcel with a `LABEL_CREATED` scan.
    pub(crate) fn ship_order(
        &mut self,
        order_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Order, OrderTransitionError> {
        let order =
            self.transition_order(order_id, "shipped", OrderStatus::is_cancellable, |order| {
                order.status = OrderStatus::Shipped;
                order.tracking_number = Some(tracking_number_for(&order.id));
            })?;
        let tracking_number = order.tracking_number.clone().unwrap_or_default();
        self.parcels.insert(
            tracking_number.clone(),
            Parcel {
                tracking_number: tracking_number.clone(),
                order_id: order.id.clone(),
                status: ParcelStatus::LabelCreated,
                estimated_delivery: None,
                events: Vec::new(),
            },
        );
        self.scan_parcel(
            &tracking_number,
            ParcelStatus::LabelCreated,
            "Warehouse, Leipzig, DE",
            "Shipping label created",
            now,
        );
        Ok(order)
    }

    /// Marks a `SHIPPED` order `DELIVERED`.
    fn deliver_order(&mut self, order_id: &str) -> Result<Order, OrderTransitionError> {
        self.transition_order(
            order_id,
            "delivered",
            |status| status == OrderStatus::Shipped,
            |order| order.status = OrderStatus::Delivered,
        )
    }

    fn transition_order(
        &mut self,
        order_id: &str,
        action: &'static str,
        allowed: impl Fn(OrderStatus) -> bool,
        change: impl FnOnce(&mut Order),
    ) -> Result<Order, OrderTransitionError> {
        let order = self
            .orders
            .get_mut(order_id)
            .ok_or_else(|| OrderTransitionError::NotFound(order_id.to_owned()))?;
        if !allowed(order.status) {
            return Err(OrderTransitionError::WrongStatus {
                id: order.id.clone(),
                status: order.status.as_str(),
                action,
            });
        }
        change(order);
        let order = order.clone();
        self.announce_order(&order);
        Ok(order)
    }

    fn announce_order(&self, order: &Order) {
        self.announce(SandboxChange::OrderStatusChanged {
            order_id: order.id.clone(),
            customer_id: order.customer_id.clone(),
            status: order.status.as_str().to_owned(),
        });
    }

    // ----- carrier -------------------------------------------------------------------------

    /// Records a scan of a parcel and moves it to `status`; a `DELIVERED` scan also delivers the
    /// order. Returns false for an unknown parcel.
    pub(crate) fn scan_parcel(
        &mut self,
        tracking_number: &str,
        status: ParcelStatus,
        location: &str,
        description: &str,
        now: DateTime<Utc>,
    ) -> bool {
        let Some(parcel) = self.parcels.get_mut(tracking_number) else {
            return false;
        };
        parcel.status = status;
        parcel.events.push(ScanEvent {
            timestamp: now,
            location: location.to_owned(),
            status,
            description: description.to_owned(),
        });
        let order_id = parcel.order_id.clone();
        let customer_id = self
            .orders
            .get(&order_id)
            .map(|order| order.customer_id.clone())
            .unwrap_or_default();
        self.announce(SandboxChange::ShipmentScanned {
            tracking_number: tracking_number.to_owned(),
            order_id: order_id.clone(),
            customer_id,
            status: status.as_str().to_owned(),
            location: location.to_owned(),
            description: description.to_owned(),
        });
        if status == ParcelStatus::Delivered {
            // Only a shipped order moves on; a parcel of a cancelled order stays as it was.
            let _ = self.deliver_order(&order_id);
        }
        true
    }

    // ----- CRM -----------------------------------------------------------------------------

    /// The customer id behind a contact id, if any.
    pub(crate) fn customer_of_contact(&self, contact_id: Option<&str>) -> Option<String> {
        contact_id
            .and_then(|id| self.contacts.get(id))
            .and_then(|contact| contact.customer_id.clone())
    }

    /// Creates a case; its contact must exist.
    pub(crate) fn create_case(
        &mut self,
        new: NewCase,
        now: DateTime<Utc>,
    ) -> Result<Case, CrmWriteError> {
        let contact_id = normalize_salesforce_id(&new.contact_id);
        if !self.contacts.contains_key(&contact_id) {
            return Err(CrmWriteError::UnknownReference {
                object: "Contact",
                id: new.contact_id,
            });
        }
        let number = self.next_case_no;
        self.next_case_no += 1;
        let case = Case {
            id: salesforce_id("500", number),
            case_number: case_number(number),
            subject: new.subject,
            description: new.description,
            status: new.status,
            priority: new.priority,
            origin: new.origin,
            contact_id: Some(contact_id),
            order_id: new.order_id,
            created_date: now,
            closed_date: (new.status == CaseStatus::Closed).then_some(now),
        };
        self.cases.insert(case.id.clone(), case.clone());
        self.announce_case(&case, true);
        Ok(case)
    }

    /// Moves a case to another status, setting or clearing its closed date.
    pub(crate) fn set_case_status(
        &mut self,
        case_id: &str,
        status: CaseStatus,
        now: DateTime<Utc>,
    ) -> Result<Case, CrmWriteError> {
        let case = self
            .cases
            .get_mut(&normalize_salesforce_id(case_id))
            .ok_or_else(|| CrmWriteError::UnknownReference {
                object: "Case",
                id: case_id.to_owned(),
            })?;
        if case.status != status {
            case.closed_date = match status {
                CaseStatus::Closed => Some(now),
                _ => None,
            };
            case.status = status;
        }
        let case = case.clone();
        self.announce_case(&case, false);
        Ok(case)
    }

    fn announce_case(&self, case: &Case, created: bool) {
        self.announce(SandboxChange::CaseChanged {
            case_id: case.id.clone(),
            case_number: case.case_number.clone(),
            customer_id: self.customer_of_contact(case.contact_id.as_deref()),
            status: case.status.as_str().to_owned(),
            created,
        });
    }

    /// Adds a comment to a case; the case must exist.
    pub(crate) fn add_case_comment(
        &mut self,
        parent_id: &str,
        body: String,
        is_published: bool,
        created_by_id: String,
        now: DateTime<Utc>,
    ) -> Result<CaseComment, CrmWriteError> {
        let parent_id = normalize_salesforce_id(parent_id);
        let Some(case) = self.cases.get(&parent_id) else {
            return Err(CrmWriteError::UnknownReference {
                object: "Case",
                id: parent_id,
            });
        };
        let customer_id = self.customer_of_contact(case.contact_id.as_deref());
        let case_number = case.case_number.clone();
        let comment = CaseComment {
            id: salesforce_id("00a", self.next_comment_no),
            parent_id,
            body,
            is_published,
            created_date: now,
            created_by_id,
        };
        self.next_comment_no += 1;
        self.comments.insert(comment.id.clone(), comment.clone());
        self.announce(SandboxChange::CaseCommentAdded {
            case_id: comment.parent_id.clone(),
            comment_id: comment.id.clone(),
            case_number,
            customer_id,
            published: comment.is_published,
        });
        Ok(comment)
    }

    // ----- process server ------------------------------------------------------------------

    /// Starts a return request: an active process instance waiting at `ApproveReturn`.
    pub(crate) fn start_return_process(
        &mut self,
        customer_id: &str,
        order_id: &str,
        reason: &str,
        initiator: &str,
        now: DateTime<Utc>,
    ) -> ProcessInstance {
        let instance = ProcessInstance {
            id: self.next_process_id,
            state: ProcessState::Active,
            started_at: now,
            initiator: initiator.to_owned(),
            customer_id: customer_id.to_owned(),
            order_id: order_id.to_owned(),
            reason: reason.to_owned(),
            outcome: None,
        };
        self.next_process_id += 1;
        self.processes.insert(instance.id, instance.clone());
        self.announce_process(&instance);
        self.create_task(&instance, TaskName::ApproveReturn, now);
        instance
    }

    fn create_task(&mut self, instance: &ProcessInstance, name: TaskName, now: DateTime<Utc>) {
        let potential_owner = match name {
            TaskName::ApproveReturn => PotentialOwner::Group(AGENTS_GROUP),
            TaskName::ConfirmPickup => PotentialOwner::User(instance.customer_id.clone()),
        };
        let task = Task {
            id: self.next_task_id,
            name,
            status: TaskStatus::Ready,
            actual_owner: None,
            potential_owner,
            created_on: now,
            process_instance_id: instance.id,
            customer_id: instance.customer_id.clone(),
            order_id: instance.order_id.clone(),
            reason: instance.reason.clone(),
            output: serde_json::Map::new(),
        };
        self.next_task_id += 1;
        self.announce_task(&task, TaskEvent::Created);
        self.tasks.insert(task.id, task);
    }

    /// Whether `user` is a potential owner of `task`, directly or through a group.
    pub(crate) fn is_potential_owner(task: &Task, user: &str) -> bool {
        match &task.potential_owner {
            PotentialOwner::User(owner) => owner == user,
            PotentialOwner::Group(group) => user_in_group(user, group),
        }
    }

    /// Claims a `Ready` task for `user`, a potential owner: it becomes `Reserved`.
    pub(crate) fn claim_task(&mut self, task_id: i64, user: &str) -> Result<(), TaskError> {
        let task = self.task_mut(task_id)?;
        check_ready_for(task, user, "claim")?;
        task.status = TaskStatus::Reserved;
        task.actual_owner = Some(user.to_owned());
        let task = task.clone();
        self.announce_task(&task, TaskEvent::Claimed);
        Ok(())
    }

    /// Starts a task: `Reserved` by `user`, or `Ready` with `user` a potential owner (claimed
    /// and started in one step, as KIE does). It becomes `InProgress`.
    pub(crate) fn start_task(&mut self, task_id: i64, user: &str) -> Result<(), TaskError> {
        let task = self.task_mut(task_id)?;
        match task.status {
            TaskStatus::Ready => check_ready_for(task, user, "start")?,
            TaskStatus::Reserved => check_owner(task, user, "start")?,
            _ => return Err(wrong_status(task, "start")),
        }
        task.status = TaskStatus::InProgress;
        task.actual_owner = Some(user.to_owned());
        let task = task.clone();
        self.announce_task(&task, TaskEvent::Started);
        Ok(())
    }

    /// Releases a `Reserved` or `InProgress` task owned by `user`: it is `Ready` again.
    pub(crate) fn release_task(&mut self, task_id: i64, user: &str) -> Result<(), TaskError> {
        let task = self.task_mut(task_id)?;
        if !matches!(task.status, TaskStatus::Reserved | TaskStatus::InProgress) {
            return Err(wrong_status(task, "release"));
        }
        check_owner(task, user, "release")?;
        task.status = TaskStatus::Ready;
        task.actual_owner = None;
        let task = task.clone();
        self.announce_task(&task, TaskEvent::Released);
        Ok(())
    }

    /// Completes an `InProgress` task owned by `user` with its output variables, and moves the
    /// process on. With `auto_progress`, a `Ready` or `Reserved` task is claimed and started
    /// first. `ApproveReturn` needs a boolean `approved`; an optional `comment` must be a string.
    pub(crate) fn complete_task(
        &mut self,
        task_id: i64,
        user: &str,
        output: serde_json::Map<String, serde_json::Value>,
        auto_progress: bool,
        now: DateTime<Utc>,
    ) -> Result<(), TaskError> {
        let task = self.task(task_id)?;
        let approved = validate_output(task, &output)?;
        match task.status {
            TaskStatus::InProgress => check_owner(task, user, "complete")?,
            TaskStatus::Ready if auto_progress => check_ready_for(task, user, "complete")?,
            TaskStatus::Reserved if auto_progress => check_owner(task, user, "complete")?,
            _ => return Err(wrong_status(task, "complete")),
        }
        let task = self.task_mut(task_id)?;
        task.status = TaskStatus::Completed;
        task.actual_owner = Some(user.to_owned());
        task.output = output;
        let task = task.clone();
        self.announce_task(&task, TaskEvent::Completed);

        let Some(instance) = self.processes.get_mut(&task.process_instance_id) else {
            return Ok(());
        };
        match (task.name, approved) {
            (TaskName::ApproveReturn, true) => {
                let instance = instance.clone();
                self.create_task(&instance, TaskName::ConfirmPickup, now);
            }
            (TaskName::ApproveReturn, false) => {
                instance.state = ProcessState::Completed;
                instance.outcome = Some("rejected".to_owned());
                let instance = instance.clone();
                self.announce_process(&instance);
            }
            (TaskName::ConfirmPickup, _) => {
                instance.state = ProcessState::Completed;
                instance.outcome = Some("picked-up".to_owned());
                let instance = instance.clone();
                self.announce_process(&instance);
            }
        }
        Ok(())
    }

    fn task(&self, task_id: i64) -> Result<&Task, TaskError> {
        self.tasks.get(&task_id).ok_or(TaskError::NotFound(task_id))
    }

    fn task_mut(&mut self, task_id: i64) -> Result<&mut Task, TaskError> {
        self.tasks
            .get_mut(&task_id)
            .ok_or(TaskError::NotFound(task_id))
    }

    fn announce_task(&self, task: &Task, event: TaskEvent) {
        self.announce(SandboxChange::TaskChanged {
            event,
            task_id: task.id,
            process_instance_id: task.process_instance_id,
            task_name: task.name.as_str().to_owned(),
            status: task.status.as_str().to_owned(),
            actual_owner: task.actual_owner.clone(),
            potential_owners: vec![task.potential_owner.id().to_owned()],
            customer_id: task.customer_id.clone(),
            order_id: task.order_id.clone(),
        });
    }

    fn announce_process(&self, instance: &ProcessInstance) {
        self.announce(SandboxChange::ProcessChanged {
            process_instance_id: instance.id,
            customer_id: instance.customer_id.clone(),
            order_id: instance.order_id.clone(),
            state: instance.state.code(),
            outcome: instance.outcome.clone(),
        });
    }
}

fn check_ready_for(task: &Task, user: &str, action: &str) -> Result<(), TaskError> {
    if task.status != TaskStatus::Ready {
        return Err(wrong_status(task, action));
    }
    if !World::is_potential_owner(task, user) {
        return Err(TaskError::Forbidden(format!(
            "User '{user}' does not have permissions to execute operation '{action}' on task id {}",
            task.id
        )));
    }
    Ok(())
}

fn check_owner(task: &Task, user: &str, action: &str) -> Result<(), TaskError> {
    if task.actual_owner.as_deref() != Some(user) {
        return Err(TaskError::Forbidden(format!(
            "User '{user}' does not have permissions to execute operation '{action}' on task id {}: \
             it is owned by '{}'",
            task.id,
            task.actual_owner.as_deref().unwrap_or("nobody"),
        )));
    }
    Ok(())
}

fn wrong_status(task: &Task, action: &str) -> TaskError {
    TaskError::Forbidden(format!(
        "Task {} is in status {} and cannot be used for operation '{action}'",
        task.id,
        task.status.as_str()
    ))
}

/// Checks the output variables of a completion; returns `approved` (true for `ConfirmPickup`).
fn validate_output(
    task: &Task,
    output: &serde_json::Map<String, serde_json::Value>,
) -> Result<bool, TaskError> {
    match task.name {
        TaskName::ApproveReturn => {
            let approved = output
                .get("approved")
                .and_then(serde_json::Value::as_bool)
                .ok_or_else(|| {
                    TaskError::BadOutput(
                        "ApproveReturn must be completed with a boolean output variable \
                         'approved'"
                            .to_owned(),
                    )
                })?;
            match output.get("comment") {
                None | Some(serde_json::Value::Null | serde_json::Value::String(_)) => Ok(approved),
                Some(_) => Err(TaskError::BadOutput(
                    "output variable 'comment' must be a string".to_owned(),
                )),
            }
        }
        TaskName::ConfirmPickup => Ok(true),
    }
}

/// The tracking number the carrier gives an order's parcel: `PC1` and the order's 8-digit number.
pub(crate) fn tracking_number_for(order_id: &str) -> String {
    let number = order_id
        .strip_prefix("ord-")
        .and_then(|digits| digits.parse::<u64>().ok())
        .unwrap_or(0);
    format!("PC1{number:08}")
}

/// The `CaseNumber` of the Nth case: 8 digits, starting at `00001001`.
pub(crate) fn case_number(number: u64) -> String {
    format!("{:08}", 1000 + number)
}

/// The world behind a lock, shared by the five servers.
///
/// A `std::sync::RwLock`, not tokio's: every access is a short, synchronous read or write that is
/// never held across an `.await`, and many readers (SOQL scans, bulk reads) run at once.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedWorld(Arc<RwLock<World>>);

impl SharedWorld {
    pub(crate) fn new(world: World) -> Self {
        Self(Arc::new(RwLock::new(world)))
    }

    /// Read access. A panic while the lock was held cannot leave a half-made record behind
    /// (mutations check before they change), so a poisoned lock is still used.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, World> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Write access; see [`SharedWorld::read`] about poisoning.
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, World> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// A receiver of every change from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<SandboxChange> {
        self.read().changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salesforce_ids_carry_the_case_safety_suffix() {
        assert_eq!(salesforce_id("500", 1), "500000000000001AAA");
        // Upper-case letters set bits per 5-character chunk.
        assert_eq!(salesforce_id_suffix("001A0000006Vm9r"), "IAC");
        assert_eq!(
            normalize_salesforce_id("500000000000001"),
            "500000000000001AAA"
        );
        assert_eq!(normalize_salesforce_id("nonsense"), "nonsense");
    }

    fn seeded() -> World {
        super::super::data::seed_world(42, "kieserver")
    }

    #[test]
    fn shipping_and_scanning_move_order_and_parcel_and_announce_it() {
        let mut world = seeded();
        let mut changes = world.changes.subscribe();
        let now = Utc::now();

        let order = world.ship_order("ord-019801", now).unwrap();
        assert_eq!(order.status, OrderStatus::Shipped);
        assert_eq!(order.tracking_number.as_deref(), Some("PC100019801"));
        assert_eq!(world.parcels["PC100019801"].events.len(), 1);
        assert!(world.scan_parcel(
            "PC100019801",
            ParcelStatus::Delivered,
            "London, GB",
            "Delivered",
            now
        ));
        assert_eq!(world.orders["ord-019801"].status, OrderStatus::Delivered);
        assert!(!world.scan_parcel("PC1NOPE", ParcelStatus::InTransit, "", "", now));
        assert_eq!(
            world.ship_order("ord-000001", now).unwrap_err(),
            OrderTransitionError::WrongStatus {
                id: "ord-000001".into(),
                status: "SHIPPED",
                action: "shipped"
            }
        );

        let statuses: Vec<String> = std::iter::from_fn(|| changes.try_recv().ok())
            .map(|change| match change {
                SandboxChange::OrderStatusChanged { status, .. }
                | SandboxChange::ShipmentScanned { status, .. } => status,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            statuses,
            ["SHIPPED", "LABEL_CREATED", "DELIVERED", "DELIVERED"]
        );
    }

    #[test]
    fn closing_a_case_sets_and_reopening_clears_its_closed_date() {
        let mut world = seeded();
        let now = Utc::now();
        let closed = world
            .set_case_status("500000000000001", CaseStatus::Closed, now)
            .unwrap();
        assert_eq!(closed.closed_date, Some(now));
        let reopened = world
            .set_case_status("500000000000001AAA", CaseStatus::Working, now)
            .unwrap();
        assert_eq!(reopened.closed_date, None);
        assert!(
            world
                .set_case_status("500nope", CaseStatus::New, now)
                .is_err()
        );
    }

    #[test]
    fn a_return_moves_through_approval_and_pickup() {
        let mut world = seeded();
        let now = Utc::now();
        let instance = world.start_return_process("cust-0002", "ord-000002", "Too big", "kie", now);
        let approval = world.next_task_id - 1;
        assert_eq!(
            world.claim_task(approval, "cust-0002"),
            Err(TaskError::Forbidden(format!(
                "User 'cust-0002' does not have permissions to execute operation 'claim' on task \
                 id {approval}"
            )))
        );
        world.claim_task(approval, "agent-01").unwrap();
        world.release_task(approval, "agent-01").unwrap();
        assert_eq!(world.tasks[&approval].status, TaskStatus::Ready);
        let approved = serde_json::json!({"approved": true});
        let serde_json::Value::Object(approved) = approved else {
            unreachable!()
        };
        assert!(matches!(
            world.complete_task(approval, "agent-02", approved.clone(), false, now),
            Err(TaskError::Forbidden(_))
        ));
        world
            .complete_task(approval, "agent-02", approved, true, now)
            .unwrap();
        let pickup = world.next_task_id - 1;
        assert_eq!(world.tasks[&pickup].name, TaskName::ConfirmPickup);
        world.start_task(pickup, "cust-0002").unwrap();
        world
            .complete_task(pickup, "cust-0002", serde_json::Map::new(), false, now)
            .unwrap();
        let done = &world.processes[&instance.id];
        assert_eq!(done.state, ProcessState::Completed);
        assert_eq!(done.outcome.as_deref(), Some("picked-up"));
        assert_eq!(
            world.claim_task(999_999, "agent-01"),
            Err(TaskError::NotFound(999_999))
        );
    }

    #[test]
    fn tracking_numbers_follow_the_order_number() {
        assert_eq!(tracking_number_for("ord-000001"), "PC100000001");
        assert_eq!(tracking_number_for("ord-020001"), "PC100020001");
    }
}
