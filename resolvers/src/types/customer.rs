use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::{Order, ProcessInstance, SupportCase, Task, loaders};
use crate::error::GraphError;
use crate::loaders::settle;
use crate::records::{CustomerRecord, LoyaltyTier, OrderPageQuery, OrderStatus};
use crate::viewer::process_user_of;

/// Most orders in one page of `Customer.orders`.
pub(crate) const MAX_ORDERS_PAGE: i32 = 50;

/// A customer of the company, with everything the apps show about them.
pub(crate) struct Customer(pub(crate) CustomerRecord);

/// A postal address.
#[derive(SimpleObject)]
pub(crate) struct Address {
    /// Street and number.
    pub(crate) line1: String,
    /// City.
    pub(crate) city: String,
    /// Postal code.
    pub(crate) postal_code: String,
    /// ISO 3166-1 alpha-2 country code.
    pub(crate) country: String,
}

/// A customer of the company, with everything the apps show about them.
#[Object]
impl Customer {
    /// The customer's id.
    async fn id(&self) -> ID {
        (&self.0.id).into()
    }

    /// Given name.
    async fn first_name(&self) -> &str {
        &self.0.first_name
    }

    /// Family name.
    async fn last_name(&self) -> &str {
        &self.0.last_name
    }

    /// Full name, ready to display.
    async fn name(&self) -> String {
        format!("{} {}", self.0.first_name, self.0.last_name)
    }

    /// Email address.
    async fn email(&self) -> &str {
        &self.0.email
    }

    /// Phone number, when known.
    async fn phone(&self) -> Option<&str> {
        self.0.phone.as_deref()
    }

    /// Loyalty programme tier.
    async fn loyalty_tier(&self) -> LoyaltyTier {
        self.0.loyalty_tier
    }

    /// When they became a customer.
    async fn member_since(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// Default delivery address.
    async fn address(&self) -> Option<Address> {
        self.0.address.as_ref().map(|a| Address {
            line1: a.line1.clone(),
            city: a.city.clone(),
            postal_code: a.postal_code.clone(),
            country: a.country.clone(),
        })
    }

    /// The customer's orders, newest first, a page at a time (`first` at most 50).
    #[graphql(complexity = "crate::page_cost(first, child_complexity)")]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 10, desc = "How many orders (1 to 50).")] first: i32,
        #[graphql(desc = "Continue after this cursor (an edge's `cursor`).")] after: Option<String>,
        #[graphql(desc = "Only orders in this status.")] status: Option<OrderStatus>,
    ) -> async_graphql::Result<Option<Connection<String, Order>>> {
        if !(1..=MAX_ORDERS_PAGE).contains(&first) {
            return Err(GraphError::BadInput(format!(
                "`first` must be between 1 and {MAX_ORDERS_PAGE}"
            ))
            .into());
        }
        let query = OrderPageQuery {
            limit: first as usize,
            after: after.clone(),
            status,
        };
        let page = settle(
            loaders(ctx)?
                .customer_orders
                .load_one((self.0.id.clone(), query))
                .await,
        )?
        .unwrap_or(crate::records::Page {
            items: Vec::new(),
            next_cursor: None,
        });
        let mut connection = Connection::new(after.is_some(), page.next_cursor.is_some());
        connection.edges.extend(
            page.items
                .into_iter()
                .map(|o| Edge::new(o.id.to_string(), Order(o))),
        );
        Ok(Some(connection))
    }

    /// The customer's support cases, newest first (the 50 newest).
    async fn support_cases(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = false, desc = "Only cases that are not closed.")] open_only: bool,
    ) -> async_graphql::Result<Option<Vec<SupportCase>>> {
        let loaders = loaders(ctx)?;
        let cases = if open_only {
            &loaders.customer_open_cases
        } else {
            &loaders.customer_cases
        };
        let mut cases = cases.load_one(self.0.id.clone()).await?.unwrap_or_default();
        cases.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        Ok(Some(cases.into_iter().map(SupportCase).collect()))
    }

    /// Process tasks waiting for this customer (e.g. confirm a return's pick-up).
    async fn tasks(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Vec<Task>>> {
        let tasks = settle(
            loaders(ctx)?
                .user_tasks
                .load_one(process_user_of(&self.0.id).to_owned())
                .await,
        )?
        .unwrap_or_default();
        Ok(Some(tasks.into_iter().map(Task).collect()))
    }

    /// The customer's return requests, newest first.
    async fn returns(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<Vec<ProcessInstance>>> {
        let instances = settle(
            loaders(ctx)?
                .customer_returns
                .load_one(self.0.id.clone())
                .await,
        )?
        .unwrap_or_default();
        Ok(Some(instances.into_iter().map(ProcessInstance).collect()))
    }
}
