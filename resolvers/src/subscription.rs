//! The subscription root: live updates, fed by upstream events.
//!
//! Each subscription listens to this replica's [`EventHub`] under the keys of what it watches
//! (the order, the case, the customer, the task's audience: the hub wakes it only for events
//! with one of them), keeps the events that concern what it watches and that its subscriber
//! may see, and resolves the changed object fresh through new loaders for every event (never
//! from what an earlier event cached), so a client may select nested fields as in a query.
//!
//! An event is upstream input, not proof of ownership: its `customerId` only picks whose feed
//! it goes to. Every object resolved for a subscriber (the watched order or case, the task
//! offered, what a notification names) goes through the same authorization rule as in a
//! query ([`crate::query::visible_order`] and its siblings): an object of another customer
//! comes back as it would from `order(id)`, null with a `FORBIDDEN` error, never with its
//! data. (Why not drop such an event instead: see [`Notification`].)
//!
//! A subscription that falls more than the hub's capacity behind (its client reads too
//! slowly) gets one `SUBSCRIPTION_LAGGED` error ([`lagged`]) and ends: the client
//! resubscribes and refetches, instead of everyone else waiting for it.
//!
//! Resolving one event is bounded by the server's [`EventDeadline`] (its request timeout),
//! when the request carries one: an event that takes longer (a slow upstream) gets a
//! `TIMEOUT` error instead of its data, and the subscription goes on with the next.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_graphql::{Context, ID, Object, Subscription};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use tokio::time::Instant;

use crate::error::GraphError;
use crate::events::{DomainEvent, EventHub, EventKind, HubSubscription, Key, RecvError};
use crate::ids::{CaseId, OrderId};
use crate::loaders::{LoaderScope, Loaders, settle};
use crate::notifications::{Facts, rules};
use crate::query::{load_case, load_order, load_task, visible_case, visible_order, visible_task};
use crate::records::TaskStatus;
use crate::types::{InboxNotification, Order, Shipment, SupportCase, Task, store, unavailable};
use crate::viewer::{Role, Viewer, acting_for, viewer};

/// Live updates.
pub struct SubscriptionRoot;

/// How long resolving one event of a subscription may take: the server puts one in each
/// subscription's request data. The clock starts when an event arrives ([`Watch`] reads the
/// changed object within it); what is left of it bounds resolving the fields selected on
/// the object ([`EventDeadline::current`], which the server's transport applies).
#[derive(Debug, Clone)]
pub struct EventDeadline {
    /// The bound of one event (`server.request_timeout_ms`).
    timeout: Duration,
    /// When the event being resolved now must be done. A std mutex: held for one read or
    /// write, never across an await. Shared by the clones that the subscription's stream and
    /// the request data hold.
    current: Arc<Mutex<Instant>>,
}

impl EventDeadline {
    /// A bound of `timeout` on every event.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            current: Arc::new(Mutex::new(Instant::now() + timeout)),
        }
    }

    /// The bound of one event.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// When the event being resolved now must be done.
    pub fn current(&self) -> Instant {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the clock of an event that just arrived: when it must be done.
    fn start(&self) -> Instant {
        let at = Instant::now() + self.timeout;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = at;
        at
    }

    /// The error of an event that took too long.
    pub fn error(&self) -> GraphError {
        GraphError::Rejected(
            "TIMEOUT",
            format!(
                "resolving this update took longer than {} ms (server.request_timeout_ms), so \
                 it was left out: the subscription goes on",
                self.timeout.as_millis()
            ),
        )
    }
}

/// What a subscription sees: the events it may see, and a way to read fresh data for each.
struct Watch {
    events: HubSubscription,
    scope: Arc<LoaderScope>,
    /// The bound on each event, if the server set one.
    deadline: Option<EventDeadline>,
    /// The subscriber, for filtering events and authorizing what each resolves; an `Arc` as
    /// every event's resolution holds it.
    viewer: Arc<Viewer>,
}

impl Watch {
    /// Events with one of `keys` (every event the subscription keeps must have one).
    fn new(ctx: &Context<'_>, keys: Vec<Key>) -> async_graphql::Result<Self> {
        Ok(Self {
            viewer: Arc::new(viewer(ctx)?.clone()),
            events: ctx.data::<EventHub>()?.subscribe_to(keys),
            scope: ctx.data::<Arc<LoaderScope>>()?.clone(),
            deadline: ctx.data_opt::<EventDeadline>().cloned(),
        })
    }

    /// The events `keep` accepts, that the viewer may see, each resolved by `resolve` with
    /// fresh loaders, for the subscriber (whom `resolve` authorizes what it reads for), within
    /// the event's deadline (a `TIMEOUT` error past it). Ends with a `SUBSCRIPTION_LAGGED`
    /// error if the subscriber fell behind.
    fn stream<T, K, R, Fut>(
        self,
        keep: K,
        resolve: R,
    ) -> impl Stream<Item = async_graphql::Result<T>>
    where
        T: Send + 'static,
        K: Fn(&DomainEvent) -> bool + Send + 'static,
        R: Fn(Arc<Loaders>, Arc<Viewer>, Arc<DomainEvent>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = async_graphql::Result<Option<T>>> + Send,
    {
        let Watch {
            events,
            scope,
            viewer,
            deadline,
        } = self;
        let resolve = Arc::new(resolve);
        futures::stream::unfold(Some(events), |state| async move {
            let events = state?;
            match events.recv().await {
                Ok(event) => Some((Ok(event), Some(events))),
                Err(RecvError::Lagged(missed)) => Some((Err(missed), None)),
                Err(RecvError::Closed) => None,
            }
        })
        .filter({
            let viewer = viewer.clone();
            move |item| {
                let pass = match item {
                    Ok(event) => keep(event) && may_see(&viewer, event),
                    Err(_) => true,
                };
                futures::future::ready(pass)
            }
        })
        .then(move |item| {
            let scope = scope.clone();
            let resolve = resolve.clone();
            let viewer = viewer.clone();
            let deadline = deadline.clone();
            async move {
                match item {
                    Ok(event) => {
                        scope.renew();
                        let resolved = resolve(scope.current(), viewer, event);
                        match &deadline {
                            Some(deadline) => tokio::time::timeout_at(deadline.start(), resolved)
                                .await
                                .unwrap_or_else(|_| Err(deadline.error().into())),
                            None => resolved.await,
                        }
                    }
                    Err(missed) => Err(lagged(missed).into()),
                }
            }
        })
        // An event whose object is gone yields nothing.
        .filter_map(|r| {
            let item = r.transpose();
            if matches!(item, Some(Ok(_))) {
                metrics::counter!("switchyard_events_delivered_total").increment(1);
            }
            futures::future::ready(item)
        })
    }
}

/// The subscriptions that read nothing for their subscriber when they start (each event is
/// read fresh when it comes), so that one run of them gives several connections of one viewer
/// exactly what each would get alone: the server may share them (its shared views). The
/// others (`orderUpdated`, `shipmentUpdated`, `caseUpdated`) read and authorize their object
/// for each subscriber as it subscribes (`NOT_FOUND` or `FORBIDDEN` from a fresh read), which
/// joining a running one would skip.
pub const SHAREABLE_SUBSCRIPTIONS: [&str; 2] = ["notifications", "taskAssigned"];

/// The error of a subscription that fell `missed` updates behind and ends (the server's
/// shared views say the same to a subscriber that reads too slowly).
pub fn lagged(missed: u64) -> GraphError {
    GraphError::Rejected(
        "SUBSCRIPTION_LAGGED",
        format!(
            "this subscription fell {missed} updates behind and was ended: subscribe again and \
             refetch"
        ),
    )
}

/// Whether an event is for the viewer's feed at all (agents: everyone's). This only picks
/// events; what they name is authorized when resolved.
fn may_see(viewer: &Viewer, event: &DomainEvent) -> bool {
    match &viewer.role {
        Role::Agent => true,
        Role::Customer(own) => event.customer_id.as_ref() == Some(own),
    }
}

/// Live updates.
#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// An order, each time it changes (status, shipment, parcel scans).
    async fn order_updated(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The order to watch.")] id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Order>> + use<>> {
        let id = OrderId::parse(&id)?;
        if load_order(ctx, id.clone()).await?.is_none() {
            return Err(GraphError::NotFound(format!("no order {id}")).into());
        }
        let watched = id.clone();
        Ok(Watch::new(ctx, vec![Key::Order(id.clone())])?.stream(
            move |e| {
                matches!(e.kind, EventKind::OrderUpdated | EventKind::ShipmentUpdated)
                    && e.subject.order_id.as_ref() == Some(&watched)
            },
            move |loaders, viewer, _| {
                let id = id.clone();
                async move { visible_order(&viewer, &loaders, id).await }
            },
        ))
    }

    /// The parcel of an order, each time the carrier scans it.
    async fn shipment_updated(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The order whose parcel to watch.")] order_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Shipment>> + use<>> {
        let id = OrderId::parse(&order_id)?;
        if load_order(ctx, id.clone()).await?.is_none() {
            return Err(GraphError::NotFound(format!("no order {id}")).into());
        }
        let watched = id.clone();
        Ok(Watch::new(ctx, vec![Key::Order(id.clone())])?.stream(
            move |e| {
                e.kind == EventKind::ShipmentUpdated
                    && e.subject.order_id.as_ref() == Some(&watched)
            },
            move |loaders, viewer, _| {
                let id = id.clone();
                async move {
                    let order = visible_order(&viewer, &loaders, id).await?;
                    Ok(order.and_then(|o| o.0.shipment).map(Shipment))
                }
            },
        ))
    }

    /// A support case, each time it changes or someone comments on it.
    async fn case_updated(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The case to watch.")] id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<SupportCase>> + use<>> {
        let id = CaseId::parse(&id)?;
        if load_case(ctx, id.clone()).await?.is_none() {
            return Err(GraphError::NotFound(format!("no support case {id}")).into());
        }
        let watched = id.clone();
        Ok(Watch::new(ctx, vec![Key::Case(id.clone())])?.stream(
            move |e| {
                matches!(e.kind, EventKind::CaseUpdated | EventKind::CaseCommentAdded)
                    && e.subject.case_id.as_ref() == Some(&watched)
            },
            move |loaders, viewer, _| {
                let id = id.clone();
                async move { visible_case(&viewer, &loaders, id).await }
            },
        ))
    }

    /// Tasks as they become available to the signed-in user (offered to them or their group,
    /// or claimed by them).
    async fn task_assigned(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Task>> + use<>> {
        let viewer = viewer(ctx)?;
        let audience: Vec<String> = viewer.audience().into_iter().map(str::to_owned).collect();
        let keys = audience.iter().cloned().map(Key::Audience).collect();
        let watch = Watch::new(ctx, keys)?;
        Ok(watch.stream(
            move |e| {
                e.kind == EventKind::TaskUpdated
                    && e.audience.iter().any(|who| audience.contains(who))
            },
            |loaders, viewer, event| async move {
                let Some(id) = event.subject.task_id else {
                    return Ok(None);
                };
                let task = visible_task(&viewer, &loaders, id).await?;
                Ok(task.filter(|t| matches!(t.0.status, TaskStatus::Ready | TaskStatus::Reserved)))
            },
        ))
    }

    /// Everything that concerns the signed-in customer, as a feed: orders, parcels, cases,
    /// returns. Agents name the customer to follow.
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Agents only: the customer to follow.")] customer_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Notification>> + use<>>
    {
        let customer = acting_for(ctx, customer_id.as_ref())?;
        Ok(
            Watch::new(ctx, vec![Key::Customer(customer.clone())])?.stream(
                move |e| e.customer_id.as_ref() == Some(&customer),
                |loaders, viewer, event| async move {
                    if names_what_is_not_theirs(&viewer, &loaders, &event).await {
                        tracing::warn!(
                            event = %event.id,
                            user = %viewer.user_id,
                            "an event names another customer's order, case or task: not sent"
                        );
                        return Ok(None);
                    }
                    Ok(Some(Notification { event }))
                },
            ),
        )
    }
}

/// Whether an event names an order, case or task the viewer may not see (a webhook that
/// names one customer and carries another's order id): such an event is not sent at all, as
/// its summary and ids alone would tell the subscriber about someone else's things. The
/// objects are read through the event's loaders, so the fields a client selects cost no second
/// read; one that cannot be read now (its upstream failed) does not hold the event back, and
/// comes as a field error when selected.
async fn names_what_is_not_theirs(viewer: &Viewer, loaders: &Loaders, event: &DomainEvent) -> bool {
    let subject = &event.subject;
    if let Some(id) = &subject.order_id
        && let Ok(Some(order)) = loaders.orders.load_one(id.clone()).await
        && viewer.authorize(&order.customer_id).is_err()
    {
        return true;
    }
    if let Some(id) = &subject.case_id
        && let Ok(Some(case)) = loaders.cases.load_one(id.clone()).await
        && viewer.authorize(&case.customer_id).is_err()
    {
        return true;
    }
    if let Some(id) = subject.task_id
        && let Ok(Some(task)) = settle(loaders.tasks.load_one(id).await)
        && viewer.authorize_about(task.customer_id.as_ref()).is_err()
    {
        return true;
    }
    false
}

/// Something that happened to the customer's orders, parcels, cases or returns.
///
/// The event's `customerId` says whose feed it belongs to; the objects it names are read when
/// selected, through the request's loaders, and authorized as in a query. An event naming
/// another customer's things is not sent ([`names_what_is_not_theirs`]).
pub(crate) struct Notification {
    event: Arc<DomainEvent>,
}

/// Something that happened to the customer's orders, parcels, cases or returns.
#[Object]
impl Notification {
    /// Unique id of the event (the same across redeliveries).
    async fn id(&self) -> ID {
        ID(self.event.id.clone())
    }

    /// What kind of thing happened.
    async fn kind(&self) -> EventKind {
        self.event.kind
    }

    /// One line to show, e.g. `Order ord-000123 is now SHIPPED`.
    async fn summary(&self) -> &str {
        &self.event.summary
    }

    /// When it happened.
    async fn occurred_at(&self) -> DateTime<Utc> {
        self.event.occurred_at
    }

    /// The order it is about, read fresh.
    async fn order(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Order>> {
        let Some(id) = &self.event.subject.order_id else {
            return Ok(None);
        };
        load_order(ctx, id.clone()).await
    }

    /// The support case it is about, read fresh.
    async fn support_case(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<SupportCase>> {
        let Some(id) = &self.event.subject.case_id else {
            return Ok(None);
        };
        load_case(ctx, id.clone()).await
    }

    /// The notification this event made for the customer, as their devices and notification
    /// centre get it; null when it made none (or the customer has the notification centre
    /// off for its category).
    async fn message(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<InboxNotification>> {
        let Some(customer) = &self.event.customer_id else {
            return Ok(None);
        };
        let store = store(ctx)?;
        let facts = Facts::of(&self.event, store.as_ref())
            .await
            .map_err(unavailable)?;
        let Some(record) = rules(&self.event, &facts).into_iter().next() else {
            return Ok(None);
        };
        let preferences = store.preferences(customer).await.map_err(unavailable)?;
        if !preferences.channels(record.category()).in_app {
            return Ok(None);
        }
        Ok(Some(InboxNotification {
            record,
            locale: preferences.locale,
        }))
    }

    /// The task it is about, read fresh.
    async fn task(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Task>> {
        let Some(id) = self.event.subject.task_id else {
            return Ok(None);
        };
        load_task(ctx, id).await
    }
}
