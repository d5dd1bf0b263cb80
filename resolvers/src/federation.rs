//! Apollo Federation: each item of `_entities` stands or fails alone.
//!
//! async-graphql resolves `_entities` by joining every representation's entity resolver with
//! `try_join_all`, so one entity the caller may not see (or whose upstream failed) turns the
//! whole list into `null`. The entity resolvers of the query root go through [`entity`]
//! instead: a failed item answers `null` (which async-graphql keeps as that item alone) and
//! its error is added with the path `["_entities", <index>]`, the index of its
//! representation, as a gateway expects.

use std::collections::HashSet;
use std::sync::Mutex;

use async_graphql::{Any, Context, ID, PathSegment, Value};

/// The `_entities` items of one request whose errors were reported, by the response key of
/// the `_entities` field and the index of the representation: so that identical
/// representations that both fail each get their own error. A std mutex: held only to look
/// up and insert, never across an `.await`.
#[derive(Default)]
pub(crate) struct ReportedEntities(Mutex<HashSet<(String, usize)>>);

/// Resolves one entity of `_entities`: the entity, or `null` with its error at its index.
pub(crate) async fn entity<T>(
    ctx: &Context<'_>,
    typename: &str,
    id: &ID,
    resolve: impl Future<Output = async_graphql::Result<Option<T>>>,
) -> async_graphql::Result<Option<T>> {
    let error = match resolve.await {
        Ok(found) => return Ok(found),
        Err(error) => error,
    };
    let mut error = ctx.set_error_path(error.into_server_error(ctx.item.pos));
    if let Some(index) = claim_index(ctx, typename, id) {
        error.path.push(PathSegment::Index(index));
    }
    ctx.add_error(error);
    Ok(None)
}

/// The index of the first representation of `typename` with this `id` that has no error
/// reported yet (the first such at all when the request has no [`ReportedEntities`]).
fn claim_index(ctx: &Context<'_>, typename: &str, id: &ID) -> Option<usize> {
    let (_, representations) = ctx.param_value::<Vec<Any>>("representations", None).ok()?;
    let mut matching = representations
        .iter()
        .enumerate()
        .filter(|(_, r)| represents(&r.0, typename, id))
        .map(|(index, _)| index);
    let Some(reported) = ctx.data_opt::<ReportedEntities>() else {
        return matching.next();
    };
    let field = ctx.item.node.response_key().node.to_string();
    let mut reported = reported
        .0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let index = matching.find(|index| !reported.contains(&(field.clone(), *index)))?;
    reported.insert((field, index));
    Some(index)
}

/// Whether a representation is `{"__typename": typename, "id": id, ..}`.
fn represents(representation: &Value, typename: &str, id: &ID) -> bool {
    let Value::Object(fields) = representation else {
        return false;
    };
    let same_type = matches!(fields.get("__typename"), Some(Value::String(t)) if t == typename);
    let same_id = match fields.get("id") {
        Some(Value::String(key)) => *key == id.0,
        Some(Value::Number(key)) => key.to_string() == id.0,
        _ => false,
    };
    same_type && same_id
}
