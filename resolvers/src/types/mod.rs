//! The GraphQL object types. Each wraps a record from [`crate::records`] and resolves its
//! links to other types through the request's [`crate::loaders::Loaders`].

mod customer;
mod money;
mod notification;
mod order;
mod process;
mod product;
mod support_case;

pub(crate) use customer::Customer;
pub(crate) use money::Money;
pub(crate) use notification::{
    Device, InboxNotification, NotificationPreferences, NotificationPreferencesInput,
    RegisterDeviceInput, app_version, customer, store, unavailable,
};
pub(crate) use order::{Order, Shipment};
pub(crate) use process::{ProcessInstance, Task};
pub(crate) use product::Product;
pub(crate) use support_case::{CaseComment, SupportCase};

use std::sync::Arc;

use async_graphql::Context;

use crate::loaders::{LoaderScope, Loaders};

/// The loaders of the request (or subscription event) being resolved.
pub(crate) fn loaders(ctx: &Context<'_>) -> async_graphql::Result<Arc<Loaders>> {
    Ok(ctx.data::<Arc<LoaderScope>>()?.current())
}
