//! Mutations run one after another, and stop at the first that fails, as the GraphQL spec
//! executes them (and graphql-js does): a failed root mutation field (they are all non-null)
//! makes `data` null, so a mutation after it that still ran would change something the
//! client is never told of, and a retry would do it twice.
//!
//! async-graphql runs every root mutation field whatever happened before; [`Serial`] wraps
//! the mutation root and skips the fields after a failure ([`MutationRun`] remembers it, per
//! request). Queries are untouched: it costs nothing on their path.
//!
//! It is also where a root mutation field's idempotency key is looked up
//! (`crate::idempotency`): a replay answers the first run's result without running the field.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::idempotency::Begin;
use async_graphql::parser::types::Field;
use async_graphql::registry::Registry;
use async_graphql::resolver_utils::{ContainerType, resolve_container_serial};
use async_graphql::{
    Context, ContextSelectionSet, ObjectType, OutputType, Positioned, ServerResult, Value,
};

/// Whether a root mutation field of this request failed (request data).
#[derive(Default)]
pub(crate) struct MutationRun {
    failed: AtomicBool,
    /// Whether the field running now has sent its write (fields run one at a time): what
    /// its idempotency key makes of a failure (`crate::idempotency::Claim`). An `Arc`: the
    /// claim keeps it past the field's future, when the deadline drops that.
    sent: Arc<AtomicBool>,
}

/// Says that the mutation running for `ctx` is sending its write now: from here a failure
/// without an answer may have written (its idempotency key is then kept as unknown).
pub(crate) fn sending_write(ctx: &Context<'_>) {
    if let Some(run) = ctx.data_opt::<MutationRun>() {
        run.sent.store(true, Ordering::Release);
    }
}

/// The mutation root `M`, run so that nothing runs after a failed field.
pub struct Serial<M>(pub M);

impl<M: ContainerType> ContainerType for Serial<M> {
    async fn resolve_field(&self, ctx: &Context<'_>) -> ServerResult<Option<Value>> {
        let run = ctx.data_opt::<MutationRun>();
        if run.is_some_and(|run| run.failed.load(Ordering::Acquire)) {
            // `data` is null already: this field is not run, and says nothing.
            return Ok(Some(Value::Null));
        }
        let sent = match run {
            Some(run) => {
                run.sent.store(false, Ordering::Release);
                run.sent.clone()
            }
            None => Arc::default(),
        };
        let result = match crate::idempotency::begin(ctx, sent).await {
            Ok(Begin::Unkeyed) => self.0.resolve_field(ctx).await,
            Ok(Begin::Replay(value)) => Ok(Some(value)),
            Ok(Begin::Run(claim)) => {
                let result = self.0.resolve_field(ctx).await;
                claim.finish(&result).await;
                result
            }
            // On the field, as its own errors are: `data` is null, not a request error.
            Err(e) => Err(ctx.set_error_path(e)),
        };
        if result.is_err()
            && let Some(run) = run
        {
            run.failed.store(true, Ordering::Release);
        }
        result
    }
}

impl<M: ContainerType> OutputType for Serial<M> {
    fn type_name() -> Cow<'static, str> {
        M::type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        M::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        _field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        resolve_container_serial(ctx, self).await
    }
}

impl<M: ObjectType> ObjectType for Serial<M> {}
