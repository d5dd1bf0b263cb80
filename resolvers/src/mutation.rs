//! The mutation root: what apps change. Each mutation checks who may do it, calls the
//! upstream's port once, and answers the changed object read fresh through the loaders.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql::{Context, ID, InputObject, InputType as _, Object, Value};
use chrono::Utc;

use crate::cache::Cached;
use crate::error::GraphError;
use crate::ids::{CaseId, CustomerId, OrderId, ProductId, parse_numeric_id};
use crate::notifications::{Notify, own_comment_key, reported_case_key, reported_error};
use crate::ports::Ports;
use crate::query::{load_case, load_order, load_task};
use crate::records::{
    CaseCommentRecord, CasePriority, CaseRecord, CaseStatus, NewCase, NewOrderLine, OrderStatus,
    TaskRecord, TaskStatus,
};
use crate::types::{
    CaseComment, Device, NotificationPreferences, NotificationPreferencesInput, Order,
    ProcessInstance, RegisterDeviceInput, SupportCase, Task, app_version, customer, loaders, store,
    unavailable,
};
use crate::viewer::{acting_for, viewer};

/// Most lines in one order.
const MAX_ORDER_LINES: usize = 50;
/// Most items of one product in one line.
const MAX_QUANTITY: i32 = 99;
/// Longest case subject (Salesforce's `Case.Subject` is 255 characters).
const MAX_SUBJECT: usize = 255;
/// Longest case description or comment (Salesforce's long text limit is 32,000).
const MAX_TEXT: usize = 32_000;
/// How long a reported error's case takes the same error's repeats.
const REPORT_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How long the claim of a report whose case is being opened lasts: longer than any request
/// (`server.request_timeout_ms`, 30 s), so it ends on its own only when its request died.
const OPENING_CLAIM: Duration = Duration::from_secs(60);
/// What a report's claim holds while its case is being opened (then: the case's id).
const OPENING: &str = "opening:";
/// How long a repeat waits for the case another request is opening for the same error.
const OPENING_WAIT: Duration = Duration::from_secs(15);
/// Most cases `reportClientError` opens for one customer in an hour (repeats of an open
/// case add comments and do not count).
const REPORTED_CASES_PER_HOUR: usize = 10;
/// Most devices a customer keeps (each notification is one push per device).
const MAX_DEVICES_PER_CUSTOMER: usize = 10;

/// What the app reports.
#[derive(InputObject)]
pub(crate) struct ReportClientErrorInput {
    /// The app's error code, e.g. `CHECKOUT_TIMEOUT`.
    code: String,
    /// What the app showed or logged.
    message: String,
    /// Where it happened, e.g. `Checkout`.
    screen: Option<String>,
    /// The app's version.
    app_version: Option<String>,
    /// Anything else the app knows (a JSON object, at most 16 KiB): device, network, the
    /// last actions.
    context: Option<async_graphql::Json<serde_json::Value>>,
    /// Makes the change idempotent: sent again by the same user with the same id (1 to 128
    /// characters of `A-Z a-z 0-9 - _ . :`, e.g. a UUID) within the server's window (a day
    /// by default), it answers the first result and changes nothing again (see the README's
    /// "Offline apps").
    pub(crate) client_mutation_id: Option<String>,
}

/// A checked report.
struct ClientError {
    code: String,
    message: String,
    screen: Option<String>,
    app_version: Option<String>,
    context: Option<serde_json::Value>,
}

impl ReportClientErrorInput {
    /// The report, its texts without control characters (what an app logged may hold any), then
    /// checked: a text that was nothing but control characters is empty.
    fn checked(self) -> async_graphql::Result<ClientError> {
        let code = one_line(&self.code);
        check_text("code", &code, 100)?;
        let message: String = self
            .message
            .chars()
            .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
            .collect();
        let message = message.trim().to_owned();
        check_text("message", &message, 2_000)?;
        let screen = self.screen.as_deref().map(one_line);
        if let Some(screen) = &screen {
            check_text("screen", screen, 100)?;
        }
        let context = self.context.map(|c| c.0);
        if let Some(context) = &context {
            if !context.is_object() {
                return Err(bad_input("`context` must be a JSON object"));
            }
            if context.to_string().len() > 16 * 1024 {
                return Err(bad_input("`context` is at most 16 KiB"));
            }
        }
        Ok(ClientError {
            code,
            message,
            screen,
            app_version: app_version(self.app_version)?,
            context,
        })
    }
}

/// `text` on one line: control characters (line breaks, NUL...) become spaces, so a case's
/// subject and its labelled lines say only what they label.
fn one_line(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    line.trim().to_owned()
}

impl ClientError {
    /// What makes two reports the same error: its code and screen.
    fn fingerprint(&self) -> String {
        let text = format!("{}\n{}", self.code, self.screen.as_deref().unwrap_or(""));
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in text.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{hash:016x}")
    }

    fn subject(&self) -> String {
        match &self.screen {
            Some(screen) => format!("App error {} on {screen}", self.code),
            None => format!("App error {}", self.code),
        }
    }

    /// The case's description: the labelled fields, then the app's message indented (so no
    /// line of it can pass for a label), then the context as JSON (pretty when that fits the
    /// CRM's long text limit, else compact: the 16 KiB allowed always fit).
    fn description(&self) -> String {
        let mut text = format!("The app reported an error.\n\nCode: {}\n", self.code);
        if let Some(screen) = &self.screen {
            text.push_str(&format!("Screen: {screen}\n"));
        }
        if let Some(version) = &self.app_version {
            text.push_str(&format!("App version: {version}\n"));
        }
        text.push_str("Message:\n");
        for line in self.message.lines() {
            text.push_str(&format!("    {line}\n"));
        }
        if let Some(context) = &self.context {
            let pretty = serde_json::to_string_pretty(context).unwrap_or_default();
            let json = if text.len() + pretty.len() + 16 <= MAX_TEXT {
                pretty
            } else {
                context.to_string()
            };
            text.push_str(&format!("\nContext:\n{json}\n"));
        }
        text
    }

    /// The comment a repeat adds.
    fn again(&self) -> String {
        format!(
            "The app reported this error again at {}: {}{}",
            Utc::now().format("%Y-%m-%d %H:%M UTC"),
            self.message,
            self.app_version
                .as_deref()
                .map(|v| format!(" (app {v})"))
                .unwrap_or_default()
        )
    }
}

/// What became of a report.
#[derive(async_graphql::SimpleObject)]
pub(crate) struct ClientErrorReport {
    /// The support case that follows it.
    case: SupportCase,
    /// Whether it was a repeat, added to a case opened for the same error earlier.
    repeated: bool,
}

/// Most notifications marked read at once.
const MAX_MARK_READ: usize = 100;
/// How long a customer's own comment is remembered (so that its event is not taken for an
/// answer): longer than any webhook is retried.
const OWN_COMMENT_MEMORY: Duration = Duration::from_secs(7 * 24 * 3600);

/// The task of the return process where an agent decides.
const APPROVE_RETURN_TASK: &str = "ApproveReturn";

/// Changes.
pub struct MutationRoot;

/// One line of a new order.
#[derive(InputObject)]
pub(crate) struct OrderLineInput {
    /// The product to order.
    pub(crate) product_id: ID,
    /// How many (1 to 99).
    pub(crate) quantity: i32,
}

/// A new order.
#[derive(InputObject)]
pub(crate) struct PlaceOrderInput {
    /// Agents only: the customer to order for. Customers always order for themselves.
    pub(crate) customer_id: Option<ID>,
    /// What to order (1 to 50 lines).
    pub(crate) lines: Vec<OrderLineInput>,
    /// Makes the change idempotent: sent again by the same user with the same id (1 to 128
    /// characters of `A-Z a-z 0-9 - _ . :`, e.g. a UUID) within the server's window (a day
    /// by default), it answers the first result and changes nothing again (see the README's
    /// "Offline apps").
    pub(crate) client_mutation_id: Option<String>,
}

/// A new support case.
#[derive(InputObject)]
pub(crate) struct OpenSupportCaseInput {
    /// Agents only: the customer the case is for.
    pub(crate) customer_id: Option<ID>,
    /// One-line summary (1 to 255 characters).
    pub(crate) subject: String,
    /// The problem in the customer's words.
    pub(crate) description: Option<String>,
    /// The order the case is about, if any.
    pub(crate) order_id: Option<ID>,
    /// How urgent; `MEDIUM` when absent.
    pub(crate) priority: Option<CasePriority>,
    /// Makes the change idempotent: sent again by the same user with the same id (1 to 128
    /// characters of `A-Z a-z 0-9 - _ . :`, e.g. a UUID) within the server's window (a day
    /// by default), it answers the first result and changes nothing again (see the README's
    /// "Offline apps").
    pub(crate) client_mutation_id: Option<String>,
}

/// The outcome of a task.
#[derive(InputObject, Default)]
pub(crate) struct CompleteTaskInput {
    /// For `ApproveReturn` tasks (required there): whether the return is approved.
    pub(crate) approved: Option<bool>,
    /// A remark to keep with the decision.
    pub(crate) comment: Option<String>,
    /// Makes the change idempotent: sent again by the same user with the same id (1 to 128
    /// characters of `A-Z a-z 0-9 - _ . :`, e.g. a UUID) within the server's window (a day
    /// by default), it answers the first result and changes nothing again (see the README's
    /// "Offline apps").
    pub(crate) client_mutation_id: Option<String>,
}

fn bad_input(message: impl Into<String>) -> async_graphql::Error {
    GraphError::BadInput(message.into()).into()
}

fn check_text(field: &str, text: &str, max: usize) -> async_graphql::Result<()> {
    if text.trim().is_empty() {
        return Err(bad_input(format!("`{field}` must not be empty")));
    }
    if text.chars().count() > max {
        return Err(bad_input(format!(
            "`{field}` is limited to {max} characters"
        )));
    }
    Ok(())
}

/// Changes.
#[Object(name = "Mutation")]
impl MutationRoot {
    /// Places an order. Answers the new order.
    async fn place_order(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to order, and for whom (agents).")] input: PlaceOrderInput,
    ) -> async_graphql::Result<Order> {
        let customer = acting_for(ctx, input.customer_id.as_ref())?;
        if input.lines.is_empty() || input.lines.len() > MAX_ORDER_LINES {
            return Err(bad_input(format!(
                "an order has 1 to {MAX_ORDER_LINES} lines"
            )));
        }
        let lines = input
            .lines
            .iter()
            .map(|l| {
                if !(1..=MAX_QUANTITY).contains(&l.quantity) {
                    return Err(bad_input(format!(
                        "`quantity` must be between 1 and {MAX_QUANTITY}"
                    )));
                }
                Ok(NewOrderLine {
                    product_id: ProductId::parse(&l.product_id)?,
                    quantity: l.quantity as u32,
                })
            })
            .collect::<async_graphql::Result<Vec<_>>>()?;
        crate::serial::sending_write(ctx);
        let order = ctx
            .data::<Ports>()?
            .backend
            .place_order(&customer, &lines)
            .await?;
        Ok(Order(order))
    }

    /// Cancels an order that has not shipped yet (see `Order.canCancel`).
    async fn cancel_order(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The order to cancel.")] id: ID,
        #[graphql(
            name = "clientMutationId",
            desc = "Makes the change idempotent: sent again by the same user with the same id (1 to 128 characters of `A-Z a-z 0-9 - _ . :`, e.g. a UUID) within the server's window (a day by default), it answers the first result and changes nothing again (see the README's \"Offline apps\")."
        )]
        _client_mutation_id: Option<String>,
    ) -> async_graphql::Result<Order> {
        let id = OrderId::parse(&id)?;
        if load_order(ctx, id.clone()).await?.is_none() {
            return Err(GraphError::NotFound(format!("no order {id}")).into());
        }
        let ports = ctx.data::<Ports>()?;
        crate::serial::sending_write(ctx);
        let cancelled = ports.backend.cancel_order(&id).await;
        // Changed or not, what the cache holds of it may be stale now.
        ports.cache.delete(&[Cached::Order.key(id.as_str())]).await;
        match cancelled {
            Ok(order) => Ok(Order(order)),
            // With the order's state, when it can be read (else the refusal as it came: a
            // refusal still, whatever the read did).
            Err(e) if e.is_rejected_with("NOT_CANCELLABLE") => {
                match order_conflict(ports, &id).await {
                    Ok(conflict) => Err(conflict.into()),
                    Err(_) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Opens a support case, optionally about one of the customer's orders.
    async fn open_support_case(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The case to open.")] input: OpenSupportCaseInput,
    ) -> async_graphql::Result<SupportCase> {
        let customer = acting_for(ctx, input.customer_id.as_ref())?;
        check_text("subject", &input.subject, MAX_SUBJECT)?;
        if let Some(d) = &input.description {
            check_text("description", d, MAX_TEXT)?;
        }
        let order_id = match input.order_id.as_deref() {
            Some(raw) => {
                let id = OrderId::parse(raw)?;
                match load_order(ctx, id.clone()).await? {
                    Some(order) if order.0.customer_id == customer => Some(id),
                    Some(_) => return Err(bad_input(format!("order {id} is another customer's"))),
                    None => return Err(GraphError::NotFound(format!("no order {id}")).into()),
                }
            }
            None => None,
        };
        let Some(contact) = loaders(ctx)?.contacts.load_one(customer.clone()).await? else {
            return Err(GraphError::NotFound(format!(
                "customer {customer} has no contact record in the CRM"
            ))
            .into());
        };
        crate::serial::sending_write(ctx);
        let case_id = ctx
            .data::<Ports>()?
            .crm
            .create_case(&NewCase {
                contact_id: contact.id,
                subject: input.subject.trim().to_owned(),
                description: input.description,
                priority: input.priority.unwrap_or(CasePriority::Medium),
                order_id,
            })
            .await?;
        load_case(ctx, case_id.clone()).await?.ok_or_else(|| {
            GraphError::NotFound(format!(
                "case {case_id} was created but cannot be read back"
            ))
            .into()
        })
    }

    /// Adds a comment to a support case, visible to the customer.
    async fn add_case_comment(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The case to comment on.")] case_id: ID,
        #[graphql(desc = "The comment (1 to 32,000 characters).")] body: String,
        #[graphql(
            name = "clientMutationId",
            desc = "Makes the change idempotent: sent again by the same user with the same id (1 to 128 characters of `A-Z a-z 0-9 - _ . :`, e.g. a UUID) within the server's window (a day by default), it answers the first result and changes nothing again (see the README's \"Offline apps\")."
        )]
        _client_mutation_id: Option<String>,
    ) -> async_graphql::Result<CaseComment> {
        let case_id = CaseId::parse(&case_id)?;
        check_text("body", &body, MAX_TEXT)?;
        let Some(case) = load_case(ctx, case_id.clone()).await? else {
            return Err(GraphError::NotFound(format!("no support case {case_id}")).into());
        };
        if case.0.status == CaseStatus::Closed {
            // Switchyard's rule (the CRM would take it): a closed case is not talked to, the
            // customer opens a new one.
            return Err(GraphError::Conflict(
                "CASE_CLOSED",
                format!(
                    "support case {} is closed: open a new case",
                    case.0.case_number
                ),
                case_state(&case.0),
            )
            .into());
        }
        crate::serial::sending_write(ctx);
        let id = ctx
            .data::<Ports>()?
            .crm
            .add_comment(&case_id, &body)
            .await?;
        if viewer(ctx)?.customer_id().is_some() {
            // The customer's own words are not an answer to notify them of.
            let key = own_comment_key(&id);
            if let Err(e) = store(ctx)?.claim(&key, "1", OWN_COMMENT_MEMORY).await {
                tracing::warn!(error = %e, comment = %id, "could not remember a customer's comment");
            }
        }
        Ok(CaseComment(CaseCommentRecord {
            id,
            case_id,
            body,
            is_published: true,
            created_at: Utc::now(),
        }))
    }

    /// Registers the signed-in customer's phone or browser for push notifications. The same
    /// token (or Web Push endpoint) registered again is the same device, updated; one that
    /// another customer registered moves to this one. A customer keeps at most 10 devices:
    /// registering an eleventh forgets the one registered longest ago.
    async fn register_device(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The device and where it receives pushes.")] input: RegisterDeviceInput,
    ) -> async_graphql::Result<Device> {
        let customer = customer(ctx)?;
        let device = input.into_device(customer.clone(), Utc::now())?;
        let store = store(ctx)?;
        crate::serial::sending_write(ctx);
        let registered = store.register_device(device).await.map_err(unavailable)?;
        let devices = store.devices(&customer).await.map_err(unavailable)?;
        let extra = devices.len().saturating_sub(MAX_DEVICES_PER_CUSTOMER);
        for old in devices.iter().filter(|d| d.id != registered.id).take(extra) {
            store
                .unregister_device(&customer, &old.id)
                .await
                .map_err(unavailable)?;
        }
        Ok(Device(registered))
    }

    /// Unregisters one of the signed-in customer's devices; false when it was not theirs.
    async fn unregister_device(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The device's id.")] id: ID,
        #[graphql(
            name = "clientMutationId",
            desc = "Makes the change idempotent: sent again by the same user with the same id (1 to 128 characters of `A-Z a-z 0-9 - _ . :`, e.g. a UUID) within the server's window (a day by default), it answers the first result and changes nothing again (see the README's \"Offline apps\")."
        )]
        _client_mutation_id: Option<String>,
    ) -> async_graphql::Result<bool> {
        let customer = customer(ctx)?;
        crate::serial::sending_write(ctx);
        store(ctx)?
            .unregister_device(&customer, &id)
            .await
            .map_err(unavailable)
    }

    /// Changes the signed-in customer's notification preferences (what is left out stays).
    async fn update_notification_preferences(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change.")] input: NotificationPreferencesInput,
    ) -> async_graphql::Result<NotificationPreferences> {
        let customer = customer(ctx)?;
        let store = store(ctx)?;
        let current = store.preferences(&customer).await.map_err(unavailable)?;
        let updated = input.apply(current)?;
        crate::serial::sending_write(ctx);
        store
            .set_preferences(&customer, &updated)
            .await
            .map_err(unavailable)?;
        Ok(NotificationPreferences(updated))
    }

    /// Marks notifications of the signed-in customer read (at most 100); answers how many
    /// changed.
    async fn mark_notifications_read(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The notifications' ids.")] ids: Vec<ID>,
        #[graphql(
            name = "clientMutationId",
            desc = "Makes the change idempotent: sent again by the same user with the same id (1 to 128 characters of `A-Z a-z 0-9 - _ . :`, e.g. a UUID) within the server's window (a day by default), it answers the first result and changes nothing again (see the README's \"Offline apps\")."
        )]
        _client_mutation_id: Option<String>,
    ) -> async_graphql::Result<i32> {
        let customer = customer(ctx)?;
        if ids.len() > MAX_MARK_READ {
            return Err(bad_input(format!("at most {MAX_MARK_READ} ids at once")));
        }
        let ids: Vec<String> = ids.into_iter().map(|id| id.0).collect();
        crate::serial::sending_write(ctx);
        let changed = store(ctx)?
            .mark_read(&customer, &ids)
            .await
            .map_err(unavailable)?;
        Ok(i32::try_from(changed).unwrap_or(i32::MAX))
    }

    /// Records that the signed-in customer looked at a product (for offers: a product viewed
    /// three times in a week that comes back in stock or gets cheaper is worth a MARKETING
    /// notification, when the customer opted in); answers their views of it this week.
    async fn track_product_view(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product viewed.")] product_id: ID,
        #[graphql(
            name = "clientMutationId",
            desc = "Makes the change idempotent: sent again by the same user with the same id (1 to 128 characters of `A-Z a-z 0-9 - _ . :`, e.g. a UUID) within the server's window (a day by default), it answers the first result and changes nothing again (see the README's \"Offline apps\")."
        )]
        _client_mutation_id: Option<String>,
    ) -> async_graphql::Result<i32> {
        let customer = customer(ctx)?;
        let product = ProductId::parse(&product_id)?;
        if crate::query::load_product(ctx, product.clone())
            .await?
            .is_none()
        {
            return Err(GraphError::NotFound(format!("no product {product}")).into());
        }
        crate::serial::sending_write(ctx);
        let views = store(ctx)?
            .count_view(&customer, product.as_str(), Utc::now())
            .await
            .map_err(unavailable)?;
        Ok(i32::try_from(views).unwrap_or(i32::MAX))
    }

    /// Reports an error the app ran into, for customer service: opens a support case with the
    /// app's context in its description, and the customer is told "we're on it" with the case
    /// number (on every device, in the notification centre, on the `notifications`
    /// subscription). The same error (same code and screen) reported again within a day, while
    /// its case is open, adds a comment to that case instead of opening another (also when the
    /// reports arrive together). At most 10 cases an hour are opened for one customer's
    /// reports; more is refused with `RATE_LIMITED`.
    async fn report_client_error(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What the app ran into.")] input: ReportClientErrorInput,
    ) -> async_graphql::Result<ClientErrorReport> {
        let customer = customer(ctx)?;
        let report = input.checked()?;
        let store = store(ctx)?;
        // Held by the request opening the error's case, then by the case's id: the same
        // error reported at the same time waits for that case rather than open another.
        let key = format!("client-error:{customer}:{}", report.fingerprint());
        let ticket = format!("{OPENING}{}", unique());
        let deadline = Instant::now() + OPENING_WAIT;
        loop {
            if store
                .claim(&key, &ticket, OPENING_CLAIM)
                .await
                .map_err(unavailable)?
            {
                let opened = open_reported_case(ctx, &customer, &report, &key, &ticket).await;
                if opened.is_err()
                    && let Err(e) = store.release(&key, &ticket).await
                {
                    tracing::warn!(error = %e, "could not release a failed report's claim (it expires)");
                }
                return opened;
            }
            let held = store.claimed(&key).await.map_err(unavailable)?;
            match held {
                // Released or expired meanwhile: claim it again.
                None => {}
                Some(held) if held.starts_with(OPENING) => {
                    if Instant::now() >= deadline {
                        return Err(GraphError::Rejected(
                            "UNAVAILABLE",
                            "a case for this error is still being opened; report it again shortly"
                                .to_owned(),
                        )
                        .into());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Some(held) => {
                    let case = match CaseId::parse(&held) {
                        Ok(id) => load_case(ctx, id).await?,
                        Err(_) => None,
                    };
                    match case {
                        Some(case) if case.0.status != CaseStatus::Closed => {
                            return add_repeat(ctx, &report, case).await;
                        }
                        // Closed (or gone): the next report opens a new case.
                        _ => {
                            store.release(&key, &held).await.map_err(unavailable)?;
                        }
                    }
                }
            }
        }
    }

    /// Asks to return a shipped or delivered order: starts the return process, which an agent
    /// approves or rejects, and then asks the customer to confirm the pick-up.
    async fn request_return(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The shipped or delivered order to return.")] order_id: ID,
        #[graphql(desc = "Why (1 to 1,000 characters).")] reason: String,
        #[graphql(
            name = "clientMutationId",
            desc = "Makes the change idempotent: sent again by the same user with the same id (1 to 128 characters of `A-Z a-z 0-9 - _ . :`, e.g. a UUID) within the server's window (a day by default), it answers the first result and changes nothing again (see the README's \"Offline apps\")."
        )]
        _client_mutation_id: Option<String>,
    ) -> async_graphql::Result<ProcessInstance> {
        let order_id = OrderId::parse(&order_id)?;
        check_text("reason", &reason, 1_000)?;
        let Some(order) = load_order(ctx, order_id.clone()).await? else {
            return Err(GraphError::NotFound(format!("no order {order_id}")).into());
        };
        if !matches!(
            order.0.status,
            OrderStatus::Shipped | OrderStatus::Delivered
        ) {
            return Err(GraphError::Rejected(
                "NOT_RETURNABLE",
                "only shipped or delivered orders can be returned".to_owned(),
            )
            .into());
        }
        crate::serial::sending_write(ctx);
        let id = ctx
            .data::<Ports>()?
            .process
            .start_return(&order.0.customer_id, &order_id, reason.trim())
            .await?;
        let instance = crate::loaders::settle(loaders(ctx)?.process_instances.load_one(id).await)?;
        instance.map(ProcessInstance).ok_or_else(|| {
            GraphError::NotFound(format!("process {id} was started but cannot be read back")).into()
        })
    }

    /// Claims a task for the signed-in user, so nobody else works on it.
    async fn claim_task(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task to claim.")] id: ID,
        #[graphql(
            name = "clientMutationId",
            desc = "Makes the change idempotent: sent again by the same user with the same id (1 to 128 characters of `A-Z a-z 0-9 - _ . :`, e.g. a UUID) within the server's window (a day by default), it answers the first result and changes nothing again (see the README's \"Offline apps\")."
        )]
        _client_mutation_id: Option<String>,
    ) -> async_graphql::Result<Task> {
        let id = parse_numeric_id(&id, "task")?;
        let v = viewer(ctx)?;
        let Some(task) = load_task(ctx, id).await? else {
            return Err(GraphError::NotFound(format!("no task {id}")).into());
        };
        if let Some(conflict) = task_conflict(&task.0, v.process_user(), "claimed") {
            return Err(conflict.into());
        }
        crate::serial::sending_write(ctx);
        let claimed = ctx
            .data::<Ports>()?
            .process
            .claim_task(id, v.process_user())
            .await;
        refused_task(ctx, id, v.process_user(), "claimed", claimed).await?;
        reload_task(ctx, id).await
    }

    /// Completes a task as the signed-in user (claiming it first if nobody has).
    async fn complete_task(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task to complete.")] id: ID,
        #[graphql(desc = "The outcome (required for `ApproveReturn`).")] input: Option<
            CompleteTaskInput,
        >,
    ) -> async_graphql::Result<Task> {
        let id = parse_numeric_id(&id, "task")?;
        let input = input.unwrap_or_default();
        let v = viewer(ctx)?;
        let Some(task) = load_task(ctx, id).await? else {
            return Err(GraphError::NotFound(format!("no task {id}")).into());
        };
        if let Some(conflict) = task_conflict(&task.0, v.process_user(), "completed") {
            return Err(conflict.into());
        }
        let mut outputs = serde_json::Map::new();
        if task.0.name == APPROVE_RETURN_TASK {
            let Some(approved) = input.approved else {
                return Err(bad_input(
                    "`approved` is required to complete ApproveReturn",
                ));
            };
            outputs.insert("approved".into(), approved.into());
        }
        if let Some(comment) = input.comment {
            check_text("comment", &comment, MAX_TEXT)?;
            outputs.insert("comment".into(), comment.into());
        }
        crate::serial::sending_write(ctx);
        let completed = ctx
            .data::<Ports>()?
            .process
            .complete_task(id, v.process_user(), &outputs)
            .await;
        refused_task(ctx, id, v.process_user(), "completed", completed).await?;
        reload_task(ctx, id).await
    }
}

/// A value no other request holds, to tell whose a claim is.
fn unique() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    // Seeded at random per process and different for every `new()`.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_i64(Utc::now().timestamp_nanos_opt().unwrap_or_default());
    format!("{:016x}", hasher.finish())
}

/// A repeat of an error whose case is open: a comment on the case.
async fn add_repeat(
    ctx: &Context<'_>,
    report: &ClientError,
    case: SupportCase,
) -> async_graphql::Result<ClientErrorReport> {
    crate::serial::sending_write(ctx);
    let comment = ctx
        .data::<Ports>()?
        .crm
        .add_comment(&case.0.id, &report.again())
        .await?;
    // Switchyard's words, not an agent's answer.
    let own = own_comment_key(&comment);
    if let Err(e) = store(ctx)?.claim(&own, "1", OWN_COMMENT_MEMORY).await {
        tracing::warn!(error = %e, "could not remember a comment of ours");
    }
    Ok(ClientErrorReport {
        case,
        repeated: true,
    })
}

/// Opens the case of a reported error, for the request holding its claim (`key` held with
/// `ticket`), within the customer's hourly limit; tells the customer "we're on it".
async fn open_reported_case(
    ctx: &Context<'_>,
    customer: &CustomerId,
    report: &ClientError,
    key: &str,
    ticket: &str,
) -> async_graphql::Result<ClientErrorReport> {
    let store = store(ctx)?;
    // One of the customer's slots, each taken for an hour: at most so many cases in any hour.
    let hour = Duration::from_secs(3600);
    let mut slot = None;
    for n in 0..REPORTED_CASES_PER_HOUR {
        let candidate = format!("client-error-cases:{customer}:{n}");
        if store
            .claim(&candidate, ticket, hour)
            .await
            .map_err(unavailable)?
        {
            slot = Some(candidate);
            break;
        }
    }
    let Some(slot) = slot else {
        return Err(GraphError::Rejected(
            "RATE_LIMITED",
            format!(
                "at most {REPORTED_CASES_PER_HOUR} support cases are opened for reported errors \
                 in an hour; this error was not reported: report it again later"
            ),
        )
        .into());
    };
    crate::serial::sending_write(ctx);
    let case_id = match create_reported_case(ctx, customer, report).await {
        Ok(id) => id,
        Err(e) => {
            // No case: the slot is not used up.
            if let Err(e) = store.release(&slot, ticket).await {
                tracing::warn!(error = %e, "could not release a report's slot (it expires)");
            }
            return Err(e);
        }
    };
    store
        .remember(key, case_id.as_str(), REPORT_WINDOW)
        .await
        .map_err(unavailable)?;
    store
        .remember(
            &reported_case_key(case_id.as_str()),
            "1",
            OWN_COMMENT_MEMORY,
        )
        .await
        .map_err(unavailable)?;
    let case = load_case(ctx, case_id.clone()).await?.ok_or_else(|| {
        GraphError::NotFound(format!(
            "case {case_id} was created but cannot be read back"
        ))
    })?;
    // Delivered from here, whenever the CRM's event of the new case arrives (the rules
    // make the same notification from it, with the same id: it goes out once).
    let notification = reported_error(customer, &case.0.id, &case.0.case_number, Utc::now());
    ctx.data::<Arc<dyn Notify>>()?
        .notify(notification)
        .await
        .map_err(unavailable)?;
    Ok(ClientErrorReport {
        case,
        repeated: false,
    })
}

/// The CRM case of a reported error, for the customer's contact.
async fn create_reported_case(
    ctx: &Context<'_>,
    customer: &CustomerId,
    report: &ClientError,
) -> async_graphql::Result<CaseId> {
    let Some(contact) = loaders(ctx)?.contacts.load_one(customer.clone()).await? else {
        return Err(GraphError::NotFound(format!(
            "customer {customer} has no contact record in the CRM"
        ))
        .into());
    };
    let new_case = NewCase {
        contact_id: contact.id,
        subject: report.subject(),
        description: Some(report.description()),
        priority: CasePriority::High,
        order_id: None,
    };
    Ok(ctx.data::<Ports>()?.crm.create_case(&new_case).await?)
}

/// The order `cancelOrder` could not cancel, read afresh from the backend (past the caches),
/// as a `NOT_CANCELLABLE` conflict with its current state.
async fn order_conflict(ports: &Ports, id: &OrderId) -> async_graphql::Result<GraphError> {
    let order = ports
        .backend
        .orders_by_ids(std::slice::from_ref(id))
        .await?
        .into_iter()
        .find(|o| &o.id == id)
        .ok_or_else(|| GraphError::NotFound(format!("no order {id}")))?;
    let shipment = match &order.shipment {
        Some(s) => object([
            ("carrier", Value::String(s.carrier.clone())),
            ("trackingNumber", Value::String(s.tracking_number.clone())),
        ]),
        None => Value::Null,
    };
    let current = object([
        ("id", Value::String(order.id.to_string())),
        ("status", order.status.to_value()),
        ("canCancel", Value::Boolean(false)),
        ("placedAt", Value::String(order.placed_at.to_rfc3339())),
        ("shipment", shipment),
    ]);
    Ok(GraphError::Conflict(
        "NOT_CANCELLABLE",
        format!(
            "order {id} can no longer be cancelled: it is {}",
            enum_name(order.status.to_value()).to_lowercase()
        ),
        current,
    ))
}

/// A support case's state, for `extensions.current`.
fn case_state(case: &CaseRecord) -> Value {
    object([
        ("id", Value::String(case.id.to_string())),
        ("caseNumber", Value::String(case.case_number.clone())),
        ("status", case.status.to_value()),
        (
            "closedAt",
            case.closed_at
                .map(|t| Value::String(t.to_rfc3339()))
                .unwrap_or(Value::Null),
        ),
    ])
}

/// A task's state, for `extensions.current`: its status and its owner (who claimed it, or
/// who completed it).
fn task_state(task: &TaskRecord) -> Value {
    object([
        ("id", Value::String(task.id.to_string())),
        ("name", Value::String(task.name.clone())),
        ("status", task.status.to_value()),
        (
            "owner",
            task.actual_owner
                .clone()
                .map(Value::String)
                .unwrap_or(Value::Null),
        ),
    ])
}

/// The conflict of `task` with `user` wanting it `claimed` or `completed`, if it has one:
/// done already (`TASK_ALREADY_COMPLETED`), or someone else's (`TASK_CLAIMED_BY_OTHER`).
/// The process server refuses both with a bare 403; the state read says which.
fn task_conflict(task: &TaskRecord, user: &str, wanted: &str) -> Option<GraphError> {
    let owner = task.actual_owner.as_deref();
    let (code, message) = match task.status {
        TaskStatus::Completed => (
            "TASK_ALREADY_COMPLETED",
            format!(
                "task {} was completed already{}",
                task.id,
                owner.map(|o| format!(" by {o}")).unwrap_or_default()
            ),
        ),
        TaskStatus::Reserved | TaskStatus::InProgress if owner.is_some_and(|o| o != user) => (
            "TASK_CLAIMED_BY_OTHER",
            format!(
                "task {} cannot be {wanted} by you: {} has claimed it",
                task.id,
                owner.unwrap_or_default()
            ),
        ),
        _ => return None,
    };
    Some(GraphError::Conflict(code, message, task_state(task)))
}

/// What a task operation's refusal was: when the process server refused (`TASK_NOT_AVAILABLE`,
/// its bare 403) and the task, read again, is done or someone else's, that conflict; else the
/// refusal as it came.
async fn refused_task(
    ctx: &Context<'_>,
    id: i64,
    user: &str,
    wanted: &str,
    result: Result<(), crate::ports::UpstreamError>,
) -> async_graphql::Result<()> {
    let Err(e) = result else {
        return Ok(());
    };
    if !e.is_rejected_with("TASK_NOT_AVAILABLE") {
        return Err(e.into());
    }
    let now = ctx.data::<Ports>()?.process.task(id).await.ok().flatten();
    match now.and_then(|task| task_conflict(&task, user, wanted)) {
        Some(conflict) => Err(conflict.into()),
        None => Err(e.into()),
    }
}

/// A GraphQL object of these fields.
fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Object(
        fields
            .into_iter()
            .map(|(name, value)| (async_graphql::Name::new(name), value))
            .collect(),
    )
}

/// An enum value's name (`SHIPPED`).
fn enum_name(value: Value) -> String {
    match value {
        Value::Enum(name) => name.to_string(),
        other => other.to_string(),
    }
}

/// Reads a task again after a change (past this request's cache of it).
async fn reload_task(ctx: &Context<'_>, id: i64) -> async_graphql::Result<Task> {
    let loaders = loaders(ctx)?;
    loaders.tasks.clear();
    crate::loaders::settle(loaders.tasks.load_one(id).await)?
        .map(Task)
        .ok_or_else(|| GraphError::NotFound(format!("no task {id}")).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(code: &str, message: &str, context: Option<serde_json::Value>) -> ClientError {
        ReportClientErrorInput {
            code: code.into(),
            message: message.into(),
            screen: Some("Check\r\nout".into()),
            app_version: Some("4.2.0".into()),
            context: context.map(async_graphql::Json),
            client_mutation_id: None,
        }
        .checked()
        .unwrap()
    }

    #[test]
    fn a_report_cannot_forge_the_case_s_labelled_lines() {
        let forged = report(
            "C8\u{0}\r\nSubject: injected",
            "Timed out\n\nCode: FAKE\nApp version: 0.0.0\u{7}",
            None,
        );
        assert_eq!(
            forged.subject(),
            "App error C8   Subject: injected on Check  out"
        );
        let text = forged.description();
        let labels: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("Code:") || l.starts_with("App version:"))
            .collect();
        assert_eq!(
            labels,
            ["Code: C8   Subject: injected", "App version: 4.2.0"]
        );
        assert!(text.contains("    Code: FAKE\n"), "{text}");
        assert!(!text.contains('\u{7}'));
    }

    #[test]
    fn a_report_is_checked_once_its_control_characters_are_gone() {
        let checked = |code: &str, message: &str| {
            ReportClientErrorInput {
                code: code.into(),
                message: message.into(),
                screen: None,
                app_version: None,
                context: None,
                client_mutation_id: None,
            }
            .checked()
            .map(|r| r.subject())
        };
        assert!(checked("\u{0}\u{1}", "Timed out").is_err());
        assert!(checked("C1", "\u{0}\u{7}\r\n").is_err());
        assert_eq!(checked("C\u{0}1", "Timed out").unwrap(), "App error C 1");
    }

    #[test]
    fn the_largest_context_fits_the_crm_s_long_text() {
        let numbers: Vec<u32> = (0..3000).collect();
        let context = serde_json::json!({ "a": numbers });
        assert!(context.to_string().len() <= 16 * 1024);
        let text = report("C", &"m".repeat(2000), Some(context)).description();
        assert!(text.len() <= MAX_TEXT, "{}", text.len());
    }
}
