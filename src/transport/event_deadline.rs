//! The bound on resolving one event of a subscription, as a query is bounded by
//! `server.request_timeout_ms`.
//!
//! The pipeline puts a [`resolvers::EventDeadline`] in each subscription's request data. The
//! graph starts its clock when an event arrives and reads the changed object within it; this
//! extension bounds the rest, resolving the fields the subscription selects on the object
//! (each a read through the event's loaders, from an upstream that may be slow), by what is
//! left. Past the deadline, the event is answered with a `TIMEOUT` error on the subscription's
//! field instead of its data, and the subscription goes on with the next event.
//!
//! Only the schema that runs subscriptions has it (see `crate::app`): queries and mutations
//! are bounded by their transport, and pay nothing for it.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo,
};
use async_graphql::{PathSegment, ServerResult, Value};
use resolvers::EventDeadline;

/// Bounds each event of a subscription by its [`EventDeadline`].
pub(crate) struct EventDeadlines;

impl ExtensionFactory for EventDeadlines {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(EventDeadlines)
    }
}

#[async_trait::async_trait]
impl Extension for EventDeadlines {
    /// A root field resolved with an [`EventDeadline`] in the request's data is one event of
    /// a subscription (a subscription's root field is resolved once per event; nested fields
    /// have a parent, and run within their root's bound).
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        let deadline = ctx.data_opt::<EventDeadline>();
        let (Some(deadline), None) = (deadline, info.path_node.parent) else {
            return next.run(ctx, info).await;
        };
        let key = info.alias.unwrap_or(info.name).to_owned();
        let pos = info.field.name.pos;
        match tokio::time::timeout_at(deadline.current(), next.run(ctx, info)).await {
            Ok(resolved) => resolved,
            Err(_) => {
                tracing::warn!(
                    field = %key,
                    timeout_ms = deadline.timeout().as_millis() as u64,
                    "a subscription event took too long to resolve"
                );
                let mut error = async_graphql::Error::from(deadline.error()).into_server_error(pos);
                error.path = vec![PathSegment::Field(key)];
                Err(error)
            }
        }
    }
}
