//! Mutations run one after another, and stop at the first that fails, as the GraphQL spec
//! executes them (and graphql-js does): a failed root mutation field (they are all non-null)
//! makes `data` null, so a mutation after it that still ran would change something the
//! client is never told of, and a retry would do it twice.
//!
//! async-graphql runs every root mutation field whatever happened before; [`Serial`] wraps
//! the mutation root and skips the fields after a failure ([`MutationRun`] remembers it, per
//! request). Queries are untouched: it costs nothing on their path.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

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
        let result = self.0.resolve_field(ctx).await;
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
