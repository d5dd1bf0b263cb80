//! Notifications: what reaches a customer beyond the open app (push to their phones and
//! browsers, e-mail, the in-app notification centre), and the one place where events become
//! notifications ([`rules`]).
//!
//! - The records: a customer's [`DeviceRecord`]s (where to push), their [`Preferences`] (which
//!   [`Category`] goes to which [`Channel`], their locale, time zone and quiet hours), and the
//!   [`NotificationRecord`]s of their notification centre.
//! - The port, [`NotificationStore`]: memory or Redis in the server (`src/notify/store`).
//! - [`rules`]: an event in, the notifications it makes out (pure: the same event gives the
//!   same notifications on every replica); [`render`]: a notification's title and body in a
//!   locale (English and German).
//!
//! The graph serves devices, preferences and the notification centre; the server runs the
//! rules once per event across replicas and delivers what they make through its outbox.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

use crate::events::{DomainEvent, EventKind};
use crate::ids::{CustomerId, ProductId};
use crate::loaders::{Loaders, settle};
use crate::ports::{Ports, UpstreamError};

/// The Web Push application server key (VAPID public key, base64url) apps subscribe with;
/// `None` when Web Push is off. Schema data.
#[derive(Debug, Clone, Default)]
pub struct WebPushKey(pub Option<String>);

/// What a phone or browser is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Platform {
    /// An iPhone or iPad app (APNs, or FCM).
    Ios,
    /// An Android app (FCM).
    Android,
    /// A browser (Web Push).
    Web,
}

/// Where a device receives pushes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PushAddress {
    /// A Firebase Cloud Messaging registration token.
    Fcm { token: String },
    /// An APNs device token of the app `bundle_id`, in APNs' development (`sandbox`) or
    /// production environment.
    Apns {
        token: String,
        bundle_id: String,
        sandbox: bool,
    },
    /// A browser's Web Push subscription.
    WebPush {
        endpoint: String,
        p256dh: String,
        auth: String,
    },
}

impl PushAddress {
    /// What makes two registrations the same device: the token (or the endpoint).
    pub fn key(&self) -> String {
        match self {
            PushAddress::Fcm { token } => format!("fcm:{token}"),
            PushAddress::Apns { token, .. } => format!("apns:{token}"),
            PushAddress::WebPush { endpoint, .. } => format!("webpush:{endpoint}"),
        }
    }
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Ours, stable while the device stays registered.
    pub id: String,
    pub customer_id: CustomerId,
    pub platform: Platform,
    pub address: PushAddress,
    pub app_version: Option<String>,
    /// `en`, `de`, ...: what its notifications are written in.
    pub locale: String,
    pub registered_at: DateTime<Utc>,
}

/// What a notification is about; each has its own preferences.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    async_graphql::Enum,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[graphql(name = "NotificationCategory")]
pub enum Category {
    /// Orders and their parcels.
    Orders,
    /// Support cases.
    Support,
    /// Tasks offered to the customer (e.g. confirming a return's pick-up).
    Tasks,
    /// Offers: only with the customer's opt-in, at most one a day.
    Marketing,
}

impl Category {
    /// Every category, in a fixed order.
    pub const ALL: [Category; 4] = [
        Category::Orders,
        Category::Support,
        Category::Tasks,
        Category::Marketing,
    ];
}

/// How a notification reaches the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Channel {
    /// Push to every registered device.
    Push,
    /// E-mail (also when push is chosen but no device is registered).
    Email,
    /// The in-app notification centre (and the `notifications` subscription).
    InApp,
}

/// Which channels a category goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channels {
    pub push: bool,
    pub email: bool,
    pub in_app: bool,
}

/// Quiet hours, in the customer's time zone: a non-urgent notification waits until they end.
/// `start` after `end` spans midnight (22:00 to 07:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

/// A customer's notification preferences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {
    /// What their notification centre and e-mails are written in (`en`, `de`).
    pub locale: String,
    /// IANA time zone of their quiet hours, e.g. `Europe/Berlin`.
    pub time_zone: String,
    pub quiet_hours: Option<QuietHours>,
    pub categories: BTreeMap<Category, Channels>,
}

impl Default for Preferences {
    /// Orders, support and tasks by push and in the app; marketing nowhere until the customer
    /// opts in; English, UTC, no quiet hours.
    fn default() -> Self {
        let on = Channels {
            push: true,
            email: false,
            in_app: true,
        };
        let off = Channels {
            push: false,
            email: false,
            in_app: false,
        };
        Preferences {
            locale: "en".to_owned(),
            time_zone: "UTC".to_owned(),
            quiet_hours: None,
            categories: Category::ALL
                .into_iter()
                .map(|c| (c, if c == Category::Marketing { off } else { on }))
                .collect(),
        }
    }
}

impl Preferences {
    /// The channels of a category.
    pub fn channels(&self, category: Category) -> Channels {
        self.categories
            .get(&category)
            .copied()
            .unwrap_or_else(|| Preferences::default().categories[&category])
    }
}

/// What happened, as a notification says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NotificationKind {
    /// An order left the warehouse.
    OrderShipped,
    /// An order's parcel is out for delivery today.
    OrderOutForDelivery,
    /// An order was delivered.
    OrderDelivered,
    /// An order was cancelled.
    OrderCancelled,
    /// Customer service answered a support case.
    CaseAnswered,
    /// A support case was closed.
    CaseResolved,
    /// A task is waiting for the customer (confirming a return's pick-up).
    TaskOffered,
    /// The app reported an error and a support case was opened for it ("We're on it").
    ClientErrorReported,
    /// A product the customer looked at is back in stock or cheaper.
    ProductDeal,
}

impl NotificationKind {
    /// Its category.
    pub fn category(self) -> Category {
        match self {
            NotificationKind::OrderShipped
            | NotificationKind::OrderOutForDelivery
            | NotificationKind::OrderDelivered
            | NotificationKind::OrderCancelled => Category::Orders,
            NotificationKind::CaseAnswered
            | NotificationKind::CaseResolved
            | NotificationKind::ClientErrorReported => Category::Support,
            NotificationKind::TaskOffered => Category::Tasks,
            NotificationKind::ProductDeal => Category::Marketing,
        }
    }

    /// Whether it goes out during quiet hours too.
    pub fn urgent(self) -> bool {
        matches!(
            self,
            NotificationKind::OrderOutForDelivery | NotificationKind::ClientErrorReported
        )
    }
}

/// One notification of a customer's notification centre.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRecord {
    /// Unique, and the same on every replica for the same event (derived from the event id):
    /// a notification made twice is stored and sent once. One form per maker, none a prefix
    /// of another's: `ntf:<event id>` ([`rules`]; an event id is `<source>:<upstream id>`,
    /// the source `backend`, `crm`, `process` or `carrier`), `ntf:deal:<event id>/<customer>`
    /// ([`deal_notification`]; event and customer ids hold no `/`), and
    /// `ntf:reported:<case>` ([`reported_error`]).
    pub id: String,
    pub customer_id: CustomerId,
    pub kind: NotificationKind,
    /// What the texts name: `order`, `case`, `caseNumber`, `task`, `product`, `productName`.
    pub params: BTreeMap<String, String>,
    /// Where the app opens it, e.g. `retail://orders/ord-000123`.
    pub deep_link: String,
    /// A newer notification with the same key replaces the older one on the lock screen.
    pub collapse_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub read: bool,
}

impl NotificationRecord {
    /// Its category.
    pub fn category(&self) -> Category {
        self.kind.category()
    }
}

/// A page of a notification centre, newest first.
#[derive(Debug, Clone)]
pub struct InboxQuery {
    /// After this notification id (the previous page's last).
    pub after: Option<String>,
    pub first: usize,
    pub unread_only: bool,
}

/// The notification store failed (the cause is for logs).
#[derive(Debug, Clone)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the store's calls return.
pub type StoreResult<T> = Result<T, StoreError>;

/// Devices, preferences and notification centres, and the few keyed facts the rules need
/// (product views, once-only claims). Memory for one instance, Redis for several.
#[async_trait]
pub trait NotificationStore: Send + Sync + 'static {
    /// Registers a device: the same token (or endpoint) registered again is the same device
    /// (updated), and a token registered by another customer moves to this one.
    async fn register_device(&self, device: DeviceRecord) -> StoreResult<DeviceRecord>;
    /// Removes one of the customer's devices; `false` when it was not theirs.
    async fn unregister_device(&self, customer: &CustomerId, id: &str) -> StoreResult<bool>;
    /// The customer's devices, oldest first.
    async fn devices(&self, customer: &CustomerId) -> StoreResult<Vec<DeviceRecord>>;
    /// Forgets the device at this address (its provider said it is gone).
    async fn forget_address(&self, address_key: &str) -> StoreResult<()>;
    /// The customer's preferences (the defaults until they set some).
    async fn preferences(&self, customer: &CustomerId) -> StoreResult<Preferences>;
    async fn set_preferences(
        &self,
        customer: &CustomerId,
        preferences: &Preferences,
    ) -> StoreResult<()>;
    /// Adds a notification to its customer's centre; `false` when one with its id is there.
    async fn add_notification(&self, notification: &NotificationRecord) -> StoreResult<bool>;
    /// A page of a customer's centre, newest first (`first + 1` records, to tell whether
    /// there are more); `None` when `after` is not one of the customer's notifications (a
    /// cursor that was never theirs, or fell out of the centre).
    async fn notifications(
        &self,
        customer: &CustomerId,
        query: &InboxQuery,
    ) -> StoreResult<Option<Vec<NotificationRecord>>>;
    /// Marks these of the customer's notifications read; answers how many changed.
    async fn mark_read(&self, customer: &CustomerId, ids: &[String]) -> StoreResult<usize>;
    /// How many of the customer's notifications are unread.
    async fn unread_count(&self, customer: &CustomerId) -> StoreResult<usize>;
    /// Counts a view of a product by a customer; answers their views of it in the last
    /// seven days (the newest 100 are kept, so at most 100).
    async fn count_view(
        &self,
        customer: &CustomerId,
        product: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<u32>;
    /// The customers who viewed a product at least `min` times in the seven days before `at`.
    async fn frequent_viewers(
        &self,
        product: &str,
        min: u32,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<CustomerId>>;
    /// Claims `key` for `ttl`: `true` the first time, `false` while the claim lasts (once-a-day
    /// limits, remembered facts).
    async fn claim(&self, key: &str, value: &str, ttl: Duration) -> StoreResult<bool>;
    /// Ends the claim on `key` if it still holds `value` (a claim someone took since is theirs
    /// and stays); `true` when it did.
    async fn release(&self, key: &str, value: &str) -> StoreResult<bool>;
    /// Sets `key` to `value` for `ttl`, whatever it held.
    async fn remember(&self, key: &str, value: &str, ttl: Duration) -> StoreResult<()>;
    /// The value of a live claim.
    async fn claimed(&self, key: &str) -> StoreResult<Option<String>>;
}

/// A notification's title and body in `locale` (`de`, else English).
pub fn render(
    kind: NotificationKind,
    params: &BTreeMap<String, String>,
    locale: &str,
) -> (String, String) {
    let p = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
    let german = locale.to_ascii_lowercase().starts_with("de");
    let (title, body) = match (kind, german) {
        (NotificationKind::OrderShipped, false) => (
            "Your order is on its way".to_owned(),
            format!("Order {} has shipped.", p("order")),
        ),
        (NotificationKind::OrderShipped, true) => (
            "Deine Bestellung ist unterwegs".to_owned(),
            format!("Bestellung {} wurde versandt.", p("order")),
        ),
        (NotificationKind::OrderOutForDelivery, false) => (
            "Arriving today".to_owned(),
            format!("Order {} is out for delivery.", p("order")),
        ),
        (NotificationKind::OrderOutForDelivery, true) => (
            "Kommt heute".to_owned(),
            format!("Bestellung {} ist in der Zustellung.", p("order")),
        ),
        (NotificationKind::OrderDelivered, false) => (
            "Delivered".to_owned(),
            format!("Order {} has been delivered.", p("order")),
        ),
        (NotificationKind::OrderDelivered, true) => (
            "Zugestellt".to_owned(),
            format!("Bestellung {} wurde zugestellt.", p("order")),
        ),
        (NotificationKind::OrderCancelled, false) => (
            "Order cancelled".to_owned(),
            format!("Order {} has been cancelled.", p("order")),
        ),
        (NotificationKind::OrderCancelled, true) => (
            "Bestellung storniert".to_owned(),
            format!("Bestellung {} wurde storniert.", p("order")),
        ),
        (NotificationKind::CaseAnswered, false) => (
            "We replied to your request".to_owned(),
            format!("There is a new answer on case {}.", p("caseNumber")),
        ),
        (NotificationKind::CaseAnswered, true) => (
            "Wir haben geantwortet".to_owned(),
            format!("Es gibt eine neue Antwort zu Fall {}.", p("caseNumber")),
        ),
        (NotificationKind::CaseResolved, false) => (
            "Your request is resolved".to_owned(),
            format!("Case {} has been closed.", p("caseNumber")),
        ),
        (NotificationKind::CaseResolved, true) => (
            "Dein Anliegen ist erledigt".to_owned(),
            format!("Fall {} wurde abgeschlossen.", p("caseNumber")),
        ),
        (NotificationKind::TaskOffered, false) => (
            "Your action is needed".to_owned(),
            "Please confirm the pick-up of your return.".to_owned(),
        ),
        (NotificationKind::TaskOffered, true) => (
            "Bitte bestätigen".to_owned(),
            "Bitte bestätige die Abholung deiner Rücksendung.".to_owned(),
        ),
        (NotificationKind::ClientErrorReported, false) => (
            "We're on it".to_owned(),
            format!(
                "Something went wrong in the app. Case {} is open and our team is looking into it.",
                p("caseNumber")
            ),
        ),
        (NotificationKind::ClientErrorReported, true) => (
            "Wir kümmern uns darum".to_owned(),
            format!(
                "In der App ist ein Fehler aufgetreten. Fall {} ist eröffnet, unser Team sieht sich das an.",
                p("caseNumber")
            ),
        ),
        (NotificationKind::ProductDeal, false) => (
            format!("{} is waiting for you", p("productName")),
            format!("{} is {}.", p("productName"), p("deal")),
        ),
        (NotificationKind::ProductDeal, true) => (
            format!("{} wartet auf dich", p("productName")),
            format!(
                "{} ist {}.",
                p("productName"),
                if p("deal") == "back in stock" {
                    "wieder verfügbar"
                } else {
                    "jetzt günstiger"
                }
            ),
        ),
    };
    (title, body)
}

/// The "we're on it" of an error the app reported, for which case `case` was opened: made by
/// `reportClientError` and by the rules from the case's creation event, with one id, so it
/// is kept and sent once.
pub fn reported_error(
    customer: &CustomerId,
    case: &crate::ids::CaseId,
    case_number: &str,
    at: DateTime<Utc>,
) -> NotificationRecord {
    NotificationRecord {
        id: format!("ntf:reported:{}", case.as_str()),
        customer_id: customer.clone(),
        kind: NotificationKind::ClientErrorReported,
        params: BTreeMap::from([
            ("case".to_owned(), case.as_str().to_owned()),
            ("caseNumber".to_owned(), case_number.to_owned()),
        ]),
        deep_link: format!("retail://cases/{}", case.as_str()),
        collapse_key: Some(format!("case:{}", case.as_str())),
        created_at: at,
        read: false,
    }
}

/// Where the graph hands a notification it made itself (not from an upstream event): the
/// server keeps and delivers it as it does the rules' ones. Schema data.
#[async_trait]
pub trait Notify: Send + Sync + 'static {
    /// Keeps it in the customer's centre (as they prefer) and queues its deliveries.
    async fn notify(&self, notification: NotificationRecord) -> StoreResult<()>;
}

/// What the rules need to know beyond the event, from the store: whether a comment was the
/// customer's own, whether a case was opened for an error the app reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    /// The event's comment was written by the customer, through Switchyard.
    pub own_comment: bool,
    /// The event's case was opened by `reportClientError`.
    pub reported_error: bool,
}

impl Facts {
    /// The facts about `event`, from `store`.
    pub async fn of(event: &DomainEvent, store: &dyn NotificationStore) -> StoreResult<Facts> {
        let own_comment = match comment_id(event) {
            Some(id) => store.claimed(&own_comment_key(id)).await?.is_some(),
            None => false,
        };
        let reported_error = match (&event.kind, &event.subject.case_id) {
            (EventKind::CaseUpdated, Some(case)) => store
                .claimed(&reported_case_key(case.as_str()))
                .await?
                .is_some(),
            _ => false,
        };
        Ok(Facts {
            own_comment,
            reported_error,
        })
    }
}

/// Whether everything `event` names (its order, case, task) exists and is its customer's.
/// The notifier makes notifications only of such events: a webhook that names one customer
/// and another's order (or an order that does not exist) tells nobody anything. (The
/// subscriptions' check, `subscription::names_what_is_not_theirs`, is lenient instead: it
/// never holds a live event back for an upstream that is down.) An upstream that cannot
/// answer now is an `Err`, so the event is handled again later rather than dropped.
pub async fn is_about_its_customer(event: &DomainEvent, ports: &Ports) -> Result<bool, String> {
    let Some(customer) = &event.customer_id else {
        return Ok(true);
    };
    // (Whose an object is never changes: a stale copy answers that as well as a fresh one.)
    let loaders = Loaders::new(ports, &Default::default());
    let failed = |e: UpstreamError| format!("checking whose the event's objects are: {e:?}");
    let subject = &event.subject;
    if let Some(id) = &subject.order_id {
        let order = loaders.orders.load_one(id.clone()).await.map_err(failed)?;
        if order.is_none_or(|o| &o.customer_id != customer) {
            return Ok(false);
        }
    }
    if let Some(id) = &subject.case_id {
        let case = loaders.cases.load_one(id.clone()).await.map_err(failed)?;
        if case.is_none_or(|c| &c.customer_id != customer) {
            return Ok(false);
        }
    }
    if let Some(id) = subject.task_id {
        let task = settle(loaders.tasks.load_one(id).await).map_err(failed)?;
        if task.is_none_or(|t| t.customer_id.as_ref() != Some(customer)) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The store claim that remembers case `id` as opened for an error the app reported.
pub fn reported_case_key(id: &str) -> String {
    format!("reported-case:{id}")
}

/// The store claim that remembers comment `id` as the customer's own (written through
/// Switchyard): its event is not an answer to notify them of.
pub fn own_comment_key(id: &str) -> String {
    format!("own-comment:{id}")
}

/// The CRM comment a `CaseCommentAdded` event is about.
pub fn comment_id(event: &DomainEvent) -> Option<&str> {
    if event.kind != EventKind::CaseCommentAdded {
        return None;
    }
    event.payload["payload"]["ChangeEventHeader"]["recordIds"][0].as_str()
}

/// The notifications an event makes: the one place where events become notifications. Pure:
/// every replica makes the same ones (with the same ids) from the same event.
///
/// | event | notification |
/// |---|---|
/// | order `SHIPPED`, `DELIVERED`, `CANCELLED` | `ORDER_SHIPPED`, `ORDER_DELIVERED`, `ORDER_CANCELLED` |
/// | parcel scanned `OUT_FOR_DELIVERY` | `ORDER_OUT_FOR_DELIVERY` (urgent) |
/// | case `Closed` / `Resolved` | `CASE_RESOLVED` |
/// | published case comment not written through Switchyard | `CASE_ANSWERED` |
/// | task `ConfirmPickup` created, `Ready` | `TASK_OFFERED` |
///
/// | case created by `reportClientError` | `CLIENT_ERROR_REPORTED` (urgent: "we're on it") |
///
/// A comment the customer wrote through Switchyard is not an answer; a case opened for an
/// error the app reported is said so: the caller passes the [`Facts`] (Switchyard remembers
/// the comments and cases it created).
pub fn rules(event: &DomainEvent, facts: &Facts) -> Vec<NotificationRecord> {
    let Some(customer) = event.customer_id.clone() else {
        return Vec::new();
    };
    let payload = &event.payload;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
    let order = event
        .subject
        .order_id
        .as_ref()
        .map(|o| o.as_str().to_owned());
    let (kind, params, link, collapse) = match event.kind {
        EventKind::OrderUpdated => {
            let kind = match payload["data"]["status"].as_str() {
                Some("SHIPPED") => NotificationKind::OrderShipped,
                Some("DELIVERED") => NotificationKind::OrderDelivered,
                Some("CANCELLED") => NotificationKind::OrderCancelled,
                _ => return Vec::new(),
            };
            let Some(order) = order else {
                return Vec::new();
            };
            (
                kind,
                BTreeMap::from([("order".to_owned(), order.clone())]),
                format!("retail://orders/{order}"),
                Some(format!("order:{order}")),
            )
        }
        EventKind::ShipmentUpdated => {
            if payload["data"]["status"].as_str() != Some("OUT_FOR_DELIVERY") {
                return Vec::new();
            }
            let Some(order) = order else {
                return Vec::new();
            };
            (
                NotificationKind::OrderOutForDelivery,
                BTreeMap::from([("order".to_owned(), order.clone())]),
                format!("retail://orders/{order}"),
                Some(format!("order:{order}")),
            )
        }
        EventKind::CaseUpdated | EventKind::CaseCommentAdded => {
            let Some(case) = event.subject.case_id.as_ref() else {
                return Vec::new();
            };
            let fields = &payload["payload"];
            let created = fields["ChangeEventHeader"]["changeType"] == "CREATE";
            let kind = if event.kind == EventKind::CaseCommentAdded {
                if facts.own_comment || fields["IsPublished"] != serde_json::Value::Bool(true) {
                    return Vec::new();
                }
                NotificationKind::CaseAnswered
            } else if created && facts.reported_error {
                let number = text(&fields["CaseNumber"]);
                return vec![reported_error(&customer, case, &number, event.occurred_at)];
            } else if matches!(fields["Status"].as_str(), Some("Closed" | "Resolved")) {
                NotificationKind::CaseResolved
            } else {
                return Vec::new();
            };
            (
                kind,
                BTreeMap::from([
                    ("case".to_owned(), case.as_str().to_owned()),
                    ("caseNumber".to_owned(), text(&fields["CaseNumber"])),
                ]),
                format!("retail://cases/{}", case.as_str()),
                Some(format!("case:{}", case.as_str())),
            )
        }
        EventKind::TaskUpdated => {
            let offered = payload["type"] == "TaskCreated"
                && payload["taskName"] == "ConfirmPickup"
                && payload["taskStatus"] == "Ready";
            let Some(task) = event.subject.task_id.filter(|_| offered) else {
                return Vec::new();
            };
            (
                NotificationKind::TaskOffered,
                BTreeMap::from([("task".to_owned(), task.to_string())]),
                format!("retail://tasks/{task}"),
                None,
            )
        }
        // Concerns the customers who looked at the product: see [`deal`].
        EventKind::ProcessUpdated | EventKind::ProductUpdated => return Vec::new(),
    };
    vec![NotificationRecord {
        id: format!("ntf:{}", event.id),
        customer_id: customer,
        kind,
        params,
        deep_link: link,
        collapse_key: collapse,
        created_at: event.occurred_at,
        read: false,
    }]
}

/// How often a customer must have viewed a product in the last seven days for a deal on it
/// to be worth telling them.
pub const DEAL_MIN_VIEWS: u32 = 3;

/// What a product update offers a customer who kept looking at the product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deal {
    pub product: ProductId,
    pub product_name: String,
    /// `back in stock` or `cheaper`.
    pub what: &'static str,
}

/// The deal a `ProductUpdated` event is: the product came back in stock, or is in stock and
/// got cheaper (in the same currency). Anything else (out of stock, dearer, unchanged, a
/// payload without the fields) is none.
pub fn deal(event: &DomainEvent) -> Option<Deal> {
    if event.kind != EventKind::ProductUpdated {
        return None;
    }
    let product = event.subject.product_id.clone()?;
    let data = &event.payload["data"];
    let now_in_stock = data["inStock"].as_bool()?;
    let was_in_stock = data["previous"]["inStock"].as_bool();
    fn price(p: &serde_json::Value) -> Option<(i64, &str)> {
        Some((p["minorUnits"].as_i64()?, p["currency"].as_str()?))
    }
    let cheaper = match (price(&data["price"]), price(&data["previous"]["price"])) {
        (Some((now, currency)), Some((before, was))) => currency == was && 0 < now && now < before,
        _ => false,
    };
    let what = if !now_in_stock {
        return None;
    } else if was_in_stock == Some(false) {
        "back in stock"
    } else if cheaper {
        "cheaper"
    } else {
        return None;
    };
    let name = data["name"].as_str().filter(|n| !n.trim().is_empty());
    Some(Deal {
        product_name: name.unwrap_or(product.as_str()).chars().take(120).collect(),
        product,
        what,
    })
}

/// The MARKETING notification of `deal` for `customer` (one per event and customer).
pub fn deal_notification(
    event: &DomainEvent,
    deal: &Deal,
    customer: &CustomerId,
) -> NotificationRecord {
    let product = deal.product.as_str();
    NotificationRecord {
        id: format!("ntf:deal:{}/{}", event.id, customer.as_str()),
        customer_id: customer.clone(),
        kind: NotificationKind::ProductDeal,
        params: BTreeMap::from([
            ("product".to_owned(), product.to_owned()),
            ("productName".to_owned(), deal.product_name.clone()),
            ("deal".to_owned(), deal.what.to_owned()),
        ]),
        deep_link: format!("retail://products/{product}"),
        collapse_key: Some(format!("deal:{product}")),
        created_at: event.occurred_at,
        read: false,
    }
}

/// The store claim that keeps a customer to one MARKETING notification a day; it holds the id
/// of the notification that took it.
pub fn daily_deal_key(customer: &CustomerId) -> String {
    format!("deal-of-the-day:{}", customer.as_str())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::events::Subject;
    use crate::ids::{CaseId, OrderId, ProductId};
    use crate::ports::Source;

    fn event(kind: EventKind, subject: Subject, payload: serde_json::Value) -> DomainEvent {
        DomainEvent {
            id: "backend:evt_1".into(),
            kind,
            source: Source::Backend,
            customer_id: Some(CustomerId::parse("cust-0001").unwrap()),
            subject,
            occurred_at: Utc::now(),
            audience: Vec::new(),
            summary: String::new(),
            payload,
        }
    }

    fn order(id: &str) -> Subject {
        Subject {
            order_id: Some(OrderId::parse(id).unwrap()),
            ..Subject::default()
        }
    }

    fn product_update(data: serde_json::Value) -> DomainEvent {
        let mut event = event(
            EventKind::ProductUpdated,
            Subject {
                product_id: Some(ProductId::parse("prod-0042").unwrap()),
                ..Subject::default()
            },
            json!({ "data": data }),
        );
        event.customer_id = None;
        event
    }

    fn eur(minor: i64) -> serde_json::Value {
        json!({"minorUnits": minor, "currency": "EUR"})
    }

    #[test]
    fn a_product_back_in_stock_or_cheaper_is_a_deal_and_nothing_else_is() {
        let what = |data| deal(&product_update(data)).map(|d| d.what);
        let back = json!({"name": "Trail Runner", "inStock": true, "price": eur(100),
            "previous": {"inStock": false, "price": eur(100)}});
        assert_eq!(what(back.clone()), Some("back in stock"));
        let cheaper = json!({"name": "Trail Runner", "inStock": true, "price": eur(90),
            "previous": {"inStock": true, "price": eur(100)}});
        assert_eq!(what(cheaper), Some("cheaper"));
        for none in [
            json!({"inStock": false, "price": eur(90), "previous": {"inStock": true, "price": eur(100)}}),
            json!({"inStock": true, "price": eur(110), "previous": {"inStock": true, "price": eur(100)}}),
            json!({"inStock": true, "price": eur(100), "previous": {"inStock": true, "price": eur(100)}}),
            json!({"inStock": true, "price": {"minorUnits": 90, "currency": "USD"},
                   "previous": {"inStock": true, "price": eur(100)}}),
            json!({"inStock": true, "price": eur(-100), "previous": {"inStock": true, "price": eur(100)}}),
            json!({"inStock": true}),
            json!({}),
        ] {
            assert_eq!(what(none.clone()), None, "{none}");
        }
        let found = deal(&product_update(back)).unwrap();
        assert_eq!(found.product_name, "Trail Runner");
        let customer = CustomerId::parse("cust-0001").unwrap();
        let n = deal_notification(&product_update(json!({})), &found, &customer);
        assert_eq!(
            n.id, "ntf:deal:backend:evt_1/cust-0001",
            "one per event and customer"
        );
        let mut order_event = event(
            EventKind::OrderUpdated,
            order("ord-000123"),
            json!({"data": {"status": "SHIPPED"}}),
        );
        order_event.id = "backend:evt_1:cust-0001".into();
        assert_ne!(
            rules(&order_event, &Facts::default())[0].id,
            n.id,
            "an event id may hold `:`"
        );
        assert_eq!(n.kind.category(), Category::Marketing);
        assert_eq!(n.deep_link, "retail://products/prod-0042");
        assert_eq!(
            render(n.kind, &n.params, "de"),
            (
                "Trail Runner wartet auf dich".to_owned(),
                "Trail Runner ist wieder verfügbar.".to_owned()
            )
        );
        assert!(rules(&product_update(json!({})), &Facts::default()).is_empty());
    }

    #[test]
    fn order_events_make_order_notifications_with_one_collapse_key() {
        let shipped = event(
            EventKind::OrderUpdated,
            order("ord-000123"),
            json!({"data": {"status": "SHIPPED"}}),
        );
        let made = rules(&shipped, &Facts::default());
        assert_eq!(made.len(), 1);
        let n = &made[0];
        assert_eq!(n.kind, NotificationKind::OrderShipped);
        assert_eq!(n.id, "ntf:backend:evt_1", "the same id on every replica");
        assert_eq!(n.deep_link, "retail://orders/ord-000123");
        let out = event(
            EventKind::ShipmentUpdated,
            order("ord-000123"),
            json!({"data": {"status": "OUT_FOR_DELIVERY"}}),
        );
        let later = &rules(&out, &Facts::default())[0];
        assert_eq!(later.kind, NotificationKind::OrderOutForDelivery);
        assert!(later.kind.urgent());
        assert_eq!(
            later.collapse_key, n.collapse_key,
            "the newer replaces the older"
        );
        for quiet in ["CONFIRMED", "PENDING"] {
            let e = event(
                EventKind::OrderUpdated,
                order("ord-000123"),
                json!({"data": {"status": quiet}}),
            );
            assert!(rules(&e, &Facts::default()).is_empty(), "{quiet}");
        }
        let in_transit = event(
            EventKind::ShipmentUpdated,
            order("ord-000123"),
            json!({"data": {"status": "IN_TRANSIT"}}),
        );
        assert!(rules(&in_transit, &Facts::default()).is_empty());
    }

    #[test]
    fn case_answers_are_agents_comments_not_the_customers_own() {
        let subject = Subject {
            case_id: Some(CaseId::parse("500000000000001AAA").unwrap()),
            ..Subject::default()
        };
        let comment = event(
            EventKind::CaseCommentAdded,
            subject.clone(),
            json!({"payload": {"IsPublished": true, "CaseNumber": "00001001",
                   "ChangeEventHeader": {"recordIds": ["00a000000000001AAA"]}}}),
        );
        assert_eq!(comment_id(&comment), Some("00a000000000001AAA"));
        assert_eq!(
            rules(&comment, &Facts::default())[0].kind,
            NotificationKind::CaseAnswered
        );
        assert!(
            rules(
                &comment,
                &Facts {
                    own_comment: true,
                    ..Facts::default()
                }
            )
            .is_empty(),
            "the customer's own comment"
        );
        let note = event(
            EventKind::CaseCommentAdded,
            subject.clone(),
            json!({"payload": {"IsPublished": false, "CaseNumber": "00001001"}}),
        );
        assert!(
            rules(&note, &Facts::default()).is_empty(),
            "an internal note"
        );
        let closed = event(
            EventKind::CaseUpdated,
            subject,
            json!({"payload": {"Status": "Closed", "CaseNumber": "00001001"}}),
        );
        let made = rules(&closed, &Facts::default());
        assert_eq!(made[0].kind, NotificationKind::CaseResolved);
        assert_eq!(
            render(made[0].kind, &made[0].params, "en").1,
            "Case 00001001 has been closed."
        );
        assert_eq!(
            render(made[0].kind, &made[0].params, "de-DE").1,
            "Fall 00001001 wurde abgeschlossen."
        );
    }

    #[test]
    fn a_pickup_to_confirm_is_offered_to_the_customer() {
        let subject = Subject {
            task_id: Some(7),
            ..Subject::default()
        };
        let created = event(
            EventKind::TaskUpdated,
            subject.clone(),
            json!({"type": "TaskCreated", "taskName": "ConfirmPickup", "taskStatus": "Ready"}),
        );
        assert_eq!(
            rules(&created, &Facts::default())[0].kind,
            NotificationKind::TaskOffered
        );
        let approval = event(
            EventKind::TaskUpdated,
            subject,
            json!({"type": "TaskCreated", "taskName": "ApproveReturn", "taskStatus": "Ready"}),
        );
        assert!(
            rules(&approval, &Facts::default()).is_empty(),
            "agents' tasks are not the customer's"
        );
        let mut nobody = created.clone();
        nobody.customer_id = None;
        assert!(rules(&nobody, &Facts::default()).is_empty());
    }

    #[test]
    fn every_kind_reads_in_english_and_german() {
        let params = BTreeMap::from([
            ("order".to_owned(), "ord-1".to_owned()),
            ("caseNumber".to_owned(), "0001".to_owned()),
            ("productName".to_owned(), "Lamp".to_owned()),
            ("deal".to_owned(), "back in stock".to_owned()),
        ]);
        for kind in [
            NotificationKind::OrderShipped,
            NotificationKind::OrderOutForDelivery,
            NotificationKind::OrderDelivered,
            NotificationKind::OrderCancelled,
            NotificationKind::CaseAnswered,
            NotificationKind::CaseResolved,
            NotificationKind::TaskOffered,
            NotificationKind::ClientErrorReported,
            NotificationKind::ProductDeal,
        ] {
            let en = render(kind, &params, "en");
            let de = render(kind, &params, "de");
            assert!(!en.0.is_empty() && !en.1.is_empty(), "{kind:?}");
            assert_ne!(en, de, "{kind:?} has its own German");
        }
    }
}
