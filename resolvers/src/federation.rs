//! Apollo Federation: each item of `_entities` stands or fails alone.
//!
//! async-graphql resolves `_entities` by joining every representation's entity lookup with
//! `try_join_all`, so one entity the caller may not see (or whose upstream failed, or whose
//! `__typename` names no entity type here) turns the whole answer into an error. [`Entities`]
//! wraps the query root and catches each failed lookup: that item answers `null` (which
//! async-graphql keeps as that item alone) and its error is added with the path
//! `["_entities", <index>]`, the index of its representation, as a gateway expects.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_graphql::parser::types::Field;
use async_graphql::registry::Registry;
use async_graphql::resolver_utils::{ContainerType, resolve_container};
use async_graphql::{
    Any, Context, ContextSelectionSet, ErrorExtensions, ObjectType, OutputType, PathSegment,
    Positioned, ServerResult, Value,
};

/// The indexes of one request's `_entities` representations that have no error reported
/// yet, by `_entities` response key and representation: read from the `representations`
/// argument once per request (on the first failure), then handed out in order, so that
/// identical representations that all fail each get their own error, and a request with
/// thousands of failing items costs one pass over them, not one per item. A std mutex: held
/// only to look up and take, never across an `.await`.
#[derive(Default)]
pub(crate) struct ReportedEntities(Mutex<HashMap<String, HashMap<String, VecDeque<usize>>>>);

/// The query root `Q`, whose failed entity lookups fail alone.
pub struct Entities<Q>(pub Q);

impl<Q: ContainerType> ContainerType for Entities<Q> {
    async fn resolve_field(&self, ctx: &Context<'_>) -> ServerResult<Option<Value>> {
        self.0.resolve_field(ctx).await
    }

    async fn find_entity(&self, ctx: &Context<'_>, params: &Value) -> ServerResult<Option<Value>> {
        let mut error = match self.0.find_entity(ctx, params).await {
            Ok(Some(found)) => return Ok(Some(found)),
            Ok(None) => {
                async_graphql::Error::new("no entity type of this `__typename` is served here")
                    .extend_with(|_, e| e.set("code", "BAD_USER_INPUT"))
                    .into_server_error(ctx.item.pos)
            }
            // The graph's errors have their code; async-graphql's own (a representation
            // without `__typename`) are about what the gateway sent.
            Err(mut error) => {
                let extensions = error.extensions.get_or_insert_with(Default::default);
                if extensions.get("code").is_none() {
                    extensions.set("code", "BAD_USER_INPUT");
                }
                error
            }
        };
        error.path = ctx
            .path_node
            .map(|p| p.to_string_vec())
            .unwrap_or_default()
            .into_iter()
            .map(PathSegment::Field)
            .collect();
        if let Some(index) = claim_index(ctx, params) {
            error.path.push(PathSegment::Index(index));
        }
        ctx.add_error(error);
        Ok(Some(Value::Null))
    }
}

impl<Q: ContainerType> OutputType for Entities<Q> {
    fn type_name() -> Cow<'static, str> {
        Q::type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        Q::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        _field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        resolve_container(ctx, self).await
    }
}

impl<Q: ObjectType> ObjectType for Entities<Q> {}

/// The index of the first representation equal to `representation` that has no error
/// reported yet.
fn claim_index(ctx: &Context<'_>, representation: &Value) -> Option<usize> {
    let reported = ctx.data_opt::<ReportedEntities>()?;
    let field = ctx.item.node.response_key().node.to_string();
    let mut by_field = reported
        .0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let pending = by_field.entry(field).or_insert_with(|| indexes(ctx));
    pending.get_mut(&representation.to_string())?.pop_front()
}

/// Every representation's index, by the representation (as GraphQL text).
fn indexes(ctx: &Context<'_>) -> HashMap<String, VecDeque<usize>> {
    let mut indexes: HashMap<String, VecDeque<usize>> = HashMap::new();
    let Ok((_, representations)) = ctx.param_value::<Vec<Any>>("representations", None) else {
        return indexes;
    };
    for (index, representation) in representations.iter().enumerate() {
        indexes
            .entry(representation.0.to_string())
            .or_default()
            .push_back(index);
    }
    indexes
}
