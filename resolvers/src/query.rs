//! The query root: where apps start reading.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, ID, Object, SimpleObject};

use crate::notifications::{InboxQuery, WebPushKey};
use crate::types::{
    Device, InboxNotification, NotificationPreferences, customer, store, unavailable,
};

use crate::error::{GraphError, GraphResult};
use crate::ids::{CaseId, CustomerId, OrderId, ProductId, parse_numeric_id};
use crate::loaders::{BACKEND_MAX_BATCH, Loaders, settle};
use crate::ports::Ports;
use crate::types::{Customer, Order, Product, SupportCase, Task, loaders};
use crate::viewer::{Role, Viewer, viewer};

/// Most notifications in one page of `notifications`.
const MAX_NOTIFICATIONS_PAGE: i32 = 50;

/// Most customers in one page of `customers`.
const MAX_CUSTOMERS_PAGE: i32 = 50;

/// Reads.
pub struct QueryRoot;

/// What a signed-in user is.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ViewerRole {
    /// A customer: sees their own data.
    Customer,
    /// A customer-service agent: sees any customer.
    Agent,
}

/// The signed-in user.
#[derive(SimpleObject)]
pub(crate) struct ViewerInfo {
    /// User id at the identity provider.
    pub(crate) user_id: String,
    /// Display name.
    pub(crate) name: String,
    /// Customer or agent.
    pub(crate) role: ViewerRole,
    /// For customers, their customer id.
    pub(crate) customer_id: Option<ID>,
}

/// Reads: where apps start.
#[Object(name = "Query")]
impl QueryRoot {
    /// Who is signed in (from the bearer token).
    async fn viewer(&self, ctx: &Context<'_>) -> GraphResult<ViewerInfo> {
        let v = viewer(ctx)?;
        Ok(ViewerInfo {
            user_id: v.user_id.clone(),
            name: v.name.clone(),
            role: match v.role {
                Role::Customer(_) => ViewerRole::Customer,
                Role::Agent => ViewerRole::Agent,
            },
            customer_id: v.customer_id().map(ID::from),
        })
    }

    /// The signed-in customer: the root of an app's home screen. Agents have no customer
    /// profile; they use `customer(id)`.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Customer>> {
        let v = viewer(ctx)?;
        let Some(id) = v.customer_id() else {
            return Err(GraphError::Forbidden(
                "agents have no customer profile: use customer(id)".to_owned(),
            )
            .into());
        };
        load_customer(ctx, v, id.clone()).await
    }

    /// A customer by id. Customers may only ask for themselves; agents for anyone.
    async fn customer(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The customer's id.")] id: ID,
    ) -> async_graphql::Result<Option<Customer>> {
        let v = viewer(ctx)?;
        load_customer(ctx, v, CustomerId::parse(&id)?).await
    }

    /// Customers whose name or email contains `search` (agents only), by id.
    #[graphql(complexity = "crate::page_cost(first, child_complexity)")]
    async fn customers(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Part of a name or an email address; all customers when absent.")]
        search: Option<String>,
        #[graphql(default = 20, desc = "How many (1 to 50).")] first: i32,
        #[graphql(desc = "Continue after this cursor.")] after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Customer>> {
        viewer(ctx)?.require_agent()?;
        if !(1..=MAX_CUSTOMERS_PAGE).contains(&first) {
            return Err(GraphError::BadInput(format!(
                "`first` must be between 1 and {MAX_CUSTOMERS_PAGE}"
            ))
            .into());
        }
        if let Some(after) = &after {
            CustomerId::parse(after)?;
        }
        let search = search
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        if search.as_ref().is_some_and(|s| s.chars().count() > 100) {
            return Err(
                GraphError::BadInput("`search` is limited to 100 characters".into()).into(),
            );
        }
        let ports = ctx.data::<Ports>()?;
        let page = ports
            .backend
            .search_customers(search.as_deref(), first as usize, after.as_deref())
            .await?;
        // Feed what we have into the loader so nested fields reuse it.
        loaders(ctx)?
            .customers
            .feed_many(page.items.iter().map(|c| (c.id.clone(), c.clone())));
        let mut connection = Connection::new(after.is_some(), page.next_cursor.is_some());
        connection.edges.extend(
            page.items
                .into_iter()
                .map(|c| Edge::new(c.id.to_string(), Customer(c))),
        );
        Ok(connection)
    }

    /// An order by id.
    async fn order(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The order's id.")] id: ID,
    ) -> async_graphql::Result<Option<Order>> {
        load_order(ctx, OrderId::parse(&id)?).await
    }

    /// A product by id.
    async fn product(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product's id.")] id: ID,
    ) -> async_graphql::Result<Option<Product>> {
        load_product(ctx, ProductId::parse(&id)?).await
    }

    /// Products by id, in the order asked (null for unknown ids); at most 100.
    #[graphql(complexity = "ids.len().max(1) * child_complexity")]
    async fn products(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Up to 100 product ids.")] ids: Vec<ID>,
    ) -> async_graphql::Result<Vec<Option<Product>>> {
        viewer(ctx)?;
        if ids.len() > BACKEND_MAX_BATCH {
            return Err(
                GraphError::BadInput(format!("at most {BACKEND_MAX_BATCH} ids at a time")).into(),
            );
        }
        let ids = ids
            .iter()
            .map(|id| ProductId::parse(id))
            .collect::<GraphResult<Vec<_>>>()?;
        let found = loaders(ctx)?
            .products
            .load_many(ids.iter().cloned())
            .await?;
        Ok(ids
            .iter()
            .map(|id| found.get(id).cloned().map(Product))
            .collect())
    }

    /// A support case by id.
    async fn support_case(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The case's id.")] id: ID,
    ) -> async_graphql::Result<Option<SupportCase>> {
        load_case(ctx, CaseId::parse(&id)?).await
    }

    /// A process task by id.
    async fn task(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task's id.")] id: ID,
    ) -> async_graphql::Result<Option<Task>> {
        load_task(ctx, parse_numeric_id(&id, "task")?).await
    }

    /// The signed-in user's work list: open tasks they may claim or already own (for agents,
    /// the return approvals waiting for the agents' group).
    async fn tasks(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Vec<Task>>> {
        let v = viewer(ctx)?;
        let tasks = settle(
            loaders(ctx)?
                .user_tasks
                .load_one(v.process_user().to_owned())
                .await,
        )?
        .unwrap_or_default();
        Ok(Some(tasks.into_iter().map(Task).collect()))
    }

    /// The signed-in customer's registered devices, oldest first.
    async fn my_devices(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Device>> {
        let customer = customer(ctx)?;
        let devices = store(ctx)?.devices(&customer).await.map_err(unavailable)?;
        Ok(devices.into_iter().map(Device).collect())
    }

    /// The signed-in customer's notification preferences.
    async fn notification_preferences(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<NotificationPreferences> {
        let customer = customer(ctx)?;
        let preferences = store(ctx)?
            .preferences(&customer)
            .await
            .map_err(unavailable)?;
        Ok(NotificationPreferences(preferences))
    }

    /// The signed-in customer's notification centre, newest first.
    #[graphql(complexity = "crate::page_cost(first, child_complexity)")]
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20, desc = "How many (1 to 50).")] first: i32,
        #[graphql(desc = "Continue after this cursor.")] after: Option<String>,
        #[graphql(default = false, desc = "Only those not read yet.")] unread_only: bool,
    ) -> async_graphql::Result<Connection<String, InboxNotification>> {
        let customer = customer(ctx)?;
        if !(1..=MAX_NOTIFICATIONS_PAGE).contains(&first) {
            return Err(GraphError::BadInput(format!(
                "`first` must be between 1 and {MAX_NOTIFICATIONS_PAGE}"
            ))
            .into());
        }
        let store = store(ctx)?;
        let query = InboxQuery {
            after: after.clone(),
            first: first as usize,
            unread_only,
        };
        let mut page = store
            .notifications(&customer, &query)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                GraphError::Rejected(
                    "BAD_CURSOR",
                    "`after` is not one of your notifications (or no longer in the centre): start again without it".to_owned(),
                )
            })?;
        let more = page.len() > query.first;
        page.truncate(query.first);
        let locale = store
            .preferences(&customer)
            .await
            .map_err(unavailable)?
            .locale;
        let mut connection = Connection::new(after.is_some(), more);
        connection.edges.extend(page.into_iter().map(|record| {
            let cursor = record.id.clone();
            let locale = locale.clone();
            Edge::new(cursor, InboxNotification { record, locale })
        }));
        Ok(connection)
    }

    /// How many of the signed-in customer's notifications are unread.
    async fn unread_notification_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        let customer = customer(ctx)?;
        let count = store(ctx)?
            .unread_count(&customer)
            .await
            .map_err(unavailable)?;
        Ok(i32::try_from(count).unwrap_or(i32::MAX))
    }

    /// Delta sync for apps that were offline. Without `token`: a first snapshot of the
    /// signed-in customer's working set (orders with their parcels, support cases, the tasks
    /// offered to them), `first` entities a page, each page's `token` continuing it. With the
    /// last page's (or a delta's) `token`: only what changed since, each changed entity once
    /// in its current state, those that left as `removed`, and a new `token`. Call again at
    /// once while `hasMore`. A token that is not ours or is another user's is `FORBIDDEN`; one
    /// older than the change log keeps is `SYNC_TOKEN_EXPIRED`: then sync without a token.
    #[graphql(complexity = "crate::page_cost(first, child_complexity)")]
    async fn sync(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The `token` of the previous page; none for a first snapshot.")]
        token: Option<String>,
        #[graphql(default = 50, desc = "Most entities in the page (1 to 50).")] first: i32,
    ) -> async_graphql::Result<crate::sync::SyncPage> {
        crate::sync::sync(ctx, token, first).await
    }

    /// The application server key (VAPID public key, base64url) a web app subscribes to Web
    /// Push with (`pushManager.subscribe({applicationServerKey})`); null when Web Push is off.
    async fn web_push_public_key(&self, ctx: &Context<'_>) -> Option<String> {
        ctx.data_opt::<WebPushKey>().and_then(|k| k.0.clone())
    }

    /// Federation: resolves `Customer` entities by key.
    #[graphql(entity)]
    async fn find_customer_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Customer>> {
        let v = viewer(ctx)?;
        load_customer(ctx, v, CustomerId::parse(&id)?).await
    }

    /// Federation: resolves `Order` entities by key.
    #[graphql(entity)]
    async fn find_order_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Order>> {
        load_order(ctx, OrderId::parse(&id)?).await
    }

    /// Federation: resolves `Product` entities by key.
    #[graphql(entity)]
    async fn find_product_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Product>> {
        load_product(ctx, ProductId::parse(&id)?).await
    }

    /// Federation: resolves `SupportCase` entities by key.
    #[graphql(entity)]
    async fn find_support_case_by_id(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The case's id.")] id: ID,
    ) -> async_graphql::Result<Option<SupportCase>> {
        load_case(ctx, CaseId::parse(&id)?).await
    }
}

/// A customer the viewer may see.
pub(crate) async fn load_customer(
    ctx: &Context<'_>,
    viewer: &Viewer,
    id: CustomerId,
) -> async_graphql::Result<Option<Customer>> {
    viewer.authorize(&id)?;
    Ok(loaders(ctx)?.customers.load_one(id).await?.map(Customer))
}

/// A product of the catalogue (any signed-in user).
pub(crate) async fn load_product(
    ctx: &Context<'_>,
    id: ProductId,
) -> async_graphql::Result<Option<Product>> {
    viewer(ctx)?;
    Ok(loaders(ctx)?.products.load_one(id).await?.map(Product))
}

/// An order the viewer may see.
pub(crate) async fn load_order(
    ctx: &Context<'_>,
    id: OrderId,
) -> async_graphql::Result<Option<Order>> {
    visible_order(viewer(ctx)?, &*loaders(ctx)?, id).await
}

/// A support case the viewer may see.
pub(crate) async fn load_case(
    ctx: &Context<'_>,
    id: CaseId,
) -> async_graphql::Result<Option<SupportCase>> {
    visible_case(viewer(ctx)?, &*loaders(ctx)?, id).await
}

/// A task the viewer may see: agents see any; customers only tasks about themselves.
pub(crate) async fn load_task(ctx: &Context<'_>, id: i64) -> async_graphql::Result<Option<Task>> {
    visible_task(viewer(ctx)?, &*loaders(ctx)?, id).await
}

// The rule for each kind of object, wherever one is resolved: queries, mutations, the objects
// a subscription's events name (events are upstream input, not proof of ownership), and links
// between objects. `None` when there is no such object; `FORBIDDEN` when it is not the
// viewer's.

/// An order, read through `loaders`, if `viewer` may see it.
pub(crate) async fn visible_order(
    viewer: &Viewer,
    loaders: &Loaders,
    id: OrderId,
) -> async_graphql::Result<Option<Order>> {
    let Some(order) = loaders.orders.load_one(id).await? else {
        return Ok(None);
    };
    viewer.authorize(&order.customer_id)?;
    Ok(Some(Order(order)))
}

/// A support case, read through `loaders`, if `viewer` may see it.
pub(crate) async fn visible_case(
    viewer: &Viewer,
    loaders: &Loaders,
    id: CaseId,
) -> async_graphql::Result<Option<SupportCase>> {
    let Some(case) = loaders.cases.load_one(id).await? else {
        return Ok(None);
    };
    viewer.authorize(&case.customer_id)?;
    Ok(Some(SupportCase(case)))
}

/// A task (with its input data), read through `loaders`, if `viewer` may see it: agents see
/// any; customers only tasks about themselves.
pub(crate) async fn visible_task(
    viewer: &Viewer,
    loaders: &Loaders,
    id: i64,
) -> async_graphql::Result<Option<Task>> {
    let Some(task) = settle(loaders.tasks.load_one(id).await)? else {
        return Ok(None);
    };
    viewer.authorize_about(task.customer_id.as_ref())?;
    Ok(Some(Task(task)))
}
