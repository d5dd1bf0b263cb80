//! What a result looks like on the wire, as the GraphQL spec says: the one place every
//! transport's results pass through ([`result`], then [`Outcome::executed`]).
//!
//! async-graphql 7 leaves three things to us:
//! - **Null semantics** ("Handling Field Errors", "Errors and Non-Null Fields"): a field that
//!   fails is left out of its object (and an object whose fields all failed becomes `null`).
//!   The spec wants the failed field `null` with its error, and a failed non-null field to
//!   make its parent `null`, up to the nearest nullable field (or `data` itself). The errors'
//!   paths say which fields failed; the document and the schema's types ([`Types`]) say which
//!   of them may be null. See [`complete_nulls`].
//! - **Field order**: sibling fields come back in the order they finished resolving; the spec
//!   wants the order of the query ([`in_query_order`]).
//! - **Codes**: async-graphql's own errors (validation, limits, coercion) carry no
//!   `extensions.code`; [`add_codes`] gives every error one.
//!
//! And one bound of ours: a result whose JSON would be larger than
//! `server.max_response_bytes` is replaced by a `RESPONSE_TOO_LARGE` error
//! ([`Outcome::executed`], which serializes each result once, into what is sent), so no
//! transport sends (or buffers) an answer without bound.

use std::collections::HashMap;

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{
    BaseType, ExecutableDocument, Field, OperationDefinition, OperationType, Selection,
    SelectionSet, Type, TypeKind, TypeSystemDefinition,
};
use async_graphql::{Name, PathSegment, ServerError, Value};

use super::error::TransportError;
use super::limits::MAX_SPREAD_DEPTH;

/// What is sent when a result cannot be serialized.
const INTERNAL_ERROR: &str =
    r#"{"errors":[{"message":"internal error","extensions":{"code":"INTERNAL"}}]}"#;

/// How an operation's result is reported.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// Nothing ran: the document did not validate (async-graphql's validation runs when the
    /// operation starts). The errors, each with a code.
    RequestError(Vec<ServerError>),
    /// An execution result (`data` with spec null semantics in query order, and `errors`,
    /// each with a code) as the JSON that is sent: `{"data": ..., "errors": [...]}`,
    /// `errors` only when there are some.
    Executed {
        json: String,
        /// How many errors it has, for logs.
        errors: usize,
    },
}

impl Outcome {
    /// An execution result, serialized once, or `data: null` with one `RESPONSE_TOO_LARGE`
    /// error (logged, `operation` naming it) when its JSON would be longer than `max_bytes`.
    /// The serialization stops at the bound, so no more than `max_bytes` is formatted.
    pub(crate) fn executed(
        response: &async_graphql::Response,
        max_bytes: usize,
        operation: Option<&str>,
    ) -> Outcome {
        let serialized = bounded_json(response, max_bytes);
        if let Err(Json::TooLarge) = serialized {
            tracing::warn!(
                ?operation,
                max_bytes,
                errors = response.errors.len(),
                "a result over server.max_response_bytes was replaced by RESPONSE_TOO_LARGE"
            );
            let too_large = TransportError::ResponseTooLarge(max_bytes).to_server_error();
            return Outcome::executed(
                &async_graphql::Response::from_errors(vec![too_large]),
                usize::MAX,
                operation,
            );
        }
        match serialized {
            Ok(json) => Outcome::Executed {
                json,
                errors: response.errors.len(),
            },
            Err(_) => Outcome::Executed {
                json: INTERNAL_ERROR.to_owned(),
                errors: 1,
            },
        }
    }

    /// The GraphQL response as JSON: `{"errors": [...]}` for a request error, else the
    /// execution result's.
    pub(crate) fn into_json(self) -> String {
        match self {
            Outcome::RequestError(errors) => {
                serde_json::to_string(&RequestErrors { errors: &errors }).unwrap_or_else(|e| {
                    tracing::error!(error = %e, "could not serialize request errors");
                    INTERNAL_ERROR.to_owned()
                })
            }
            Outcome::Executed { json, .. } => json,
        }
    }

    /// The `errors` of a request error as a JSON array (what a websocket `error` message
    /// carries).
    pub(crate) fn errors_json(errors: &[ServerError]) -> String {
        serde_json::to_string(errors).unwrap_or_else(|_| "[]".to_owned())
    }

    /// The number of errors, for logs.
    pub(crate) fn error_count(&self) -> usize {
        match self {
            Outcome::RequestError(errors) => errors.len(),
            Outcome::Executed { errors, .. } => *errors,
        }
    }
}

#[derive(serde::Serialize)]
struct RequestErrors<'a> {
    errors: &'a [ServerError],
}

/// Shapes one result of the operation `operation` of `doc`: the execution result, or the
/// errors of a request error (only an operation's first result can be one).
pub(crate) fn result(
    mut response: async_graphql::Response,
    doc: &ExecutableDocument,
    operation: &OperationDefinition,
    types: &Types,
    first: bool,
) -> Result<async_graphql::Response, Vec<ServerError>> {
    // A request error has no data and no error with a path; an execution error that nulled
    // the whole result still has a path.
    let request_error = first
        && response.data == Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    add_codes(&mut response.errors, request_error);
    if request_error {
        return Err(response.errors);
    }
    complete_nulls(&mut response.data, &response.errors, doc, operation, types);
    in_query_order(&mut response.data, doc, operation);
    Ok(response)
}

/// Why [`bounded_json`] gave no JSON.
#[derive(Debug)]
pub(crate) enum Json {
    /// It would be longer than the bound.
    TooLarge,
    /// It could not be serialized (logged).
    Failed,
}

/// `value` as JSON, or [`Json::TooLarge`] as soon as it would be longer than `max_bytes`
/// (no more than that is formatted).
pub(crate) fn bounded_json(
    value: &impl serde::Serialize,
    max_bytes: usize,
) -> Result<String, Json> {
    let mut out = Bounded {
        json: Vec::with_capacity(1024.min(max_bytes)),
        left: max_bytes,
        over: false,
    };
    let serialized = serde_json::to_writer(&mut out, value);
    if out.over {
        return Err(Json::TooLarge);
    }
    match serialized.map(|()| String::from_utf8(out.json)) {
        Ok(Ok(json)) => Ok(json),
        failed => {
            tracing::error!(error = ?failed.err(), "could not serialize a result");
            Err(Json::Failed)
        }
    }
}

/// A writer into a buffer that fails once more than `left` bytes came.
struct Bounded {
    json: Vec<u8>,
    left: usize,
    /// Whether it failed for that reason (and not another).
    over: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.left.checked_sub(buf.len()) {
            Some(left) => {
                self.left = left;
                self.json.extend_from_slice(buf);
                Ok(buf.len())
            }
            None => {
                self.over = true;
                Err(std::io::Error::other("over the bound"))
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Gives every error an `extensions.code`. Errors of the graph have theirs; async-graphql's
/// own are told apart by their messages (it has no other signal): coercion errors (a value
/// of the wrong type) are `BAD_USER_INPUT`; in a request error, the depth and complexity
/// limits name themselves and anything else is `GRAPHQL_VALIDATION_FAILED`; in a result,
/// an uncoded error is `INTERNAL`.
pub(crate) fn add_codes(errors: &mut [ServerError], request_error: bool) {
    for error in errors.iter_mut() {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_some() {
            continue;
        }
        let message = error.message.as_str();
        let code = if message.starts_with("Invalid value for argument")
            || message.starts_with("Failed to parse")
        {
            "BAD_USER_INPUT"
        } else if !request_error {
            "INTERNAL"
        } else if message.starts_with("Query is nested too deep")
            || message.starts_with("The recursion depth of the query")
        {
            "MAX_DEPTH_LIMIT"
        } else if message.starts_with("Query is too complex") {
            "MAX_COMPLEXITY_LIMIT"
        } else {
            "GRAPHQL_VALIDATION_FAILED"
        };
        extensions.set("code", code);
    }
    for error in errors.iter() {
        let code = error
            .extensions
            .as_ref()
            .and_then(|e| e.get("code"))
            .and_then(|code| match code {
                async_graphql::Value::String(code) => Some(code.as_str()),
                _ => None,
            })
            .unwrap_or("INTERNAL");
        crate::metrics::graphql_error(code);
    }
}

/// The schema's object types and their fields' declared types, read once from its SDL.
#[derive(Debug, Default)]
pub(crate) struct Types {
    /// Type name -> field name -> declared type.
    fields: HashMap<String, HashMap<String, Type>>,
    /// The root types' names: query, mutation, subscription.
    roots: [String; 3],
}

impl Types {
    /// Reads the SDL of a schema (async-graphql's `Schema::sdl()`, which includes the
    /// federation fields `_entities` and `_service`).
    pub(crate) fn from_sdl(sdl: &str) -> anyhow::Result<Types> {
        let document = async_graphql::parser::parse_schema(sdl)?;
        let mut types = Types {
            fields: HashMap::new(),
            roots: ["Query".into(), "Mutation".into(), "Subscription".into()],
        };
        for definition in document.definitions {
            match definition {
                TypeSystemDefinition::Schema(schema) => {
                    let schema = schema.node;
                    for (root, name) in types.roots.iter_mut().zip([
                        schema.query,
                        schema.mutation,
                        schema.subscription,
                    ]) {
                        if let Some(name) = name {
                            *root = name.node.to_string();
                        }
                    }
                }
                TypeSystemDefinition::Type(ty) => {
                    let ty = ty.node;
                    let fields = match ty.kind {
                        TypeKind::Object(o) => o.fields,
                        TypeKind::Interface(i) => i.fields,
                        _ => continue,
                    };
                    let entry = types.fields.entry(ty.name.node.to_string()).or_default();
                    for field in fields {
                        entry.insert(field.node.name.node.to_string(), field.node.ty.node);
                    }
                }
                TypeSystemDefinition::Directive(_) => {}
            }
        }
        Ok(types)
    }

    fn root(&self, kind: OperationType) -> &str {
        match kind {
            OperationType::Query => &self.roots[0],
            OperationType::Mutation => &self.roots[1],
            OperationType::Subscription => &self.roots[2],
        }
    }

    fn field(&self, parent: &str, field: &str) -> Option<&Type> {
        self.fields.get(parent)?.get(field)
    }
}

/// Puts `null` where a field failed, and makes the parent of a failed non-null field `null`,
/// up to the nearest nullable position, as the spec says.
///
/// Two passes, so that a parent nulled by one error is never brought back by another:
/// first every failed field (an error's path whose last key is missing) gets its `null`
/// (an object async-graphql turned into `null` because all its fields failed becomes an
/// object again on the way); then each failed non-null field nulls its parents.
fn complete_nulls(
    data: &mut Value,
    errors: &[ServerError],
    doc: &ExecutableDocument,
    operation: &OperationDefinition,
    types: &Types,
) {
    let failed: Vec<&[PathSegment]> = errors
        .iter()
        .filter(|e| !e.path.is_empty() && insert_null(data, &e.path))
        .map(|e| e.path.as_slice())
        .collect();
    for path in failed {
        let declared = declared_types(path, doc, operation, types);
        let mut end = path.len();
        // While the position that is null may not be, its parent becomes null.
        while declared[end - 1].is_some_and(|ty| !ty.nullable) {
            end -= 1;
            if end == 0 {
                *data = Value::Null;
                return;
            }
            if !set_null(data, &path[..end]) {
                break;
            }
        }
    }
}

/// Inserts `null` at `path` when its last key is missing; `true` if it did.
fn insert_null(data: &mut Value, path: &[PathSegment]) -> bool {
    let mut value = data;
    for (i, segment) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        match segment {
            PathSegment::Field(key) => {
                if *value == Value::Null {
                    // All of this object's fields failed (the error's path goes through it).
                    *value = Value::Object(IndexMap::new());
                }
                let Value::Object(fields) = value else {
                    return false;
                };
                if last {
                    if fields.contains_key(key.as_str()) {
                        return false;
                    }
                    fields.insert(Name::new(key), Value::Null);
                    return true;
                }
                match fields.get_mut(key.as_str()) {
                    Some(inner) => value = inner,
                    None => return false,
                }
            }
            PathSegment::Index(index) => {
                let Value::List(items) = value else {
                    return false;
                };
                match items.get_mut(*index) {
                    Some(inner) if !last => value = inner,
                    _ => return false,
                }
            }
        }
    }
    false
}

/// Sets the value at `path` to `null`; `false` when it (or a parent) is null or missing
/// already, i.e. an earlier error nulled it and went on from there.
fn set_null(data: &mut Value, path: &[PathSegment]) -> bool {
    let mut value = data;
    for segment in path {
        let inner = match (segment, value) {
            (PathSegment::Field(key), Value::Object(fields)) => fields.get_mut(key.as_str()),
            (PathSegment::Index(index), Value::List(items)) => items.get_mut(*index),
            _ => None,
        };
        match inner {
            Some(inner) if *inner != Value::Null => value = inner,
            _ => return false,
        }
    }
    *value = Value::Null;
    true
}

/// The declared type of the value at each prefix of `path` (a field's type, or a list's item
/// type), read through the document's selections; `None` where it cannot be told (it then
/// counts as nullable).
fn declared_types<'a>(
    path: &[PathSegment],
    doc: &'a ExecutableDocument,
    operation: &'a OperationDefinition,
    types: &'a Types,
) -> Vec<Option<&'a Type>> {
    let mut declared = Vec::with_capacity(path.len());
    let mut sets: Vec<&SelectionSet> = vec![&operation.selection_set.node];
    let mut parent: Option<&str> = Some(types.root(operation.ty));
    let mut current: Option<&Type> = None;
    for segment in path {
        match segment {
            PathSegment::Field(key) => {
                let mut ty = None;
                let mut subsets = Vec::new();
                if let Some(parent) = parent {
                    for set in &sets {
                        for_each_field(doc, set, parent, 0, &mut |field, on| {
                            if field.response_key().node.as_str() == key {
                                ty = ty.or_else(|| types.field(on, field.name.node.as_str()));
                                subsets.push(&field.selection_set.node);
                            }
                        });
                    }
                }
                current = ty;
                sets = subsets;
            }
            PathSegment::Index(_) => {
                current = current.and_then(|ty| match &ty.base {
                    BaseType::List(item) => Some(&**item),
                    BaseType::Named(_) => None,
                });
            }
        }
        parent = current.map(named_type);
        declared.push(current);
    }
    declared
}

/// Calls `visit` with each field `set` selects, through its fragments, and the type it is
/// selected on: the innermost fragment's type condition, else `on`. Bounded by
/// [`MAX_SPREAD_DEPTH`] (the document was validated and counted before anything walks it).
fn for_each_field<'a>(
    doc: &'a ExecutableDocument,
    set: &'a SelectionSet,
    on: &'a str,
    spreads: usize,
    visit: &mut impl FnMut(&'a Field, &'a str),
) {
    if spreads > MAX_SPREAD_DEPTH {
        return;
    }
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => visit(&f.node, on),
            Selection::InlineFragment(i) => {
                let inline = &i.node;
                let on = inline
                    .type_condition
                    .as_ref()
                    .map_or(on, |c| c.node.on.node.as_str());
                for_each_field(doc, &inline.selection_set.node, on, spreads + 1, visit);
            }
            Selection::FragmentSpread(s) => {
                if let Some(fragment) = doc.fragments.get(&s.node.fragment_name.node) {
                    let fragment = &fragment.node;
                    let on = fragment.type_condition.node.on.node.as_str();
                    for_each_field(doc, &fragment.selection_set.node, on, spreads + 1, visit);
                }
            }
        }
    }
}

fn named_type(ty: &Type) -> &str {
    match &ty.base {
        BaseType::Named(name) => name.as_str(),
        BaseType::List(item) => named_type(item),
    }
}

/// Puts the fields of a result in the order the query asked for them. Fields of fragments
/// count where the fragment stands.
pub(crate) fn in_query_order(data: &mut Value, doc: &ExecutableDocument, op: &OperationDefinition) {
    reorder(data, doc, &[&op.selection_set.node]);
}

fn reorder(value: &mut Value, doc: &ExecutableDocument, sets: &[&SelectionSet]) {
    match value {
        Value::List(items) => items.iter_mut().for_each(|v| reorder(v, doc, sets)),
        Value::Object(fields) => {
            let mut keys: IndexMap<&Name, Vec<&SelectionSet>> = IndexMap::new();
            for set in sets {
                collect_keys(doc, set, &mut keys);
            }
            let mut ordered = IndexMap::with_capacity(fields.len());
            for (key, subsets) in &keys {
                if let Some((name, mut v)) = fields.shift_remove_entry(*key) {
                    reorder(&mut v, doc, subsets);
                    ordered.insert(name, v);
                }
            }
            ordered.extend(fields.drain(..));
            *fields = ordered;
        }
        _ => {}
    }
}

/// The response keys of a selection set in document order, each with the selection sets
/// that select into it.
fn collect_keys<'a>(
    doc: &'a ExecutableDocument,
    set: &'a SelectionSet,
    keys: &mut IndexMap<&'a Name, Vec<&'a SelectionSet>>,
) {
    for_each_field(doc, set, "", 0, &mut |field, _| {
        keys.entry(&field.response_key().node)
            .or_default()
            .push(&field.selection_set.node);
    });
}

/// Says in `extensions.stale` which entities were served from stale copies because their
/// upstream failed: `[{"type": "Order", "id": "ord-1", "ageSeconds": 95}]`.
pub(crate) fn mark_stale(
    response: &mut async_graphql::Response,
    reads: Vec<resolvers::cache::StaleRead>,
) {
    if reads.is_empty() {
        return;
    }
    let reads = reads
        .into_iter()
        .map(|read| {
            let mut item = async_graphql::indexmap::IndexMap::new();
            item.insert(
                async_graphql::Name::new("type"),
                async_graphql::Value::from(read.type_name),
            );
            item.insert(
                async_graphql::Name::new("id"),
                async_graphql::Value::from(read.id),
            );
            item.insert(
                async_graphql::Name::new("ageSeconds"),
                async_graphql::Value::from(read.age.as_secs()),
            );
            async_graphql::Value::Object(item)
        })
        .collect();
    response
        .extensions
        .insert("stale".to_owned(), async_graphql::Value::List(reads));
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;
    use serde_json::json;

    use super::*;

    const SDL: &str = "
        type Query { me: Customer viewer: Viewer! customers: [Customer!]! items: [Item]! }
        type Viewer { role: String! }
        type Customer { id: ID! name: String! email: String orders: [Order!]! }
        type Order { id: ID! status: String! note: String }
        type Item { id: ID! }
    ";

    fn error(path: &[&str]) -> ServerError {
        let mut e = ServerError::new("failed", None);
        e.path = path
            .iter()
            .map(|s| match s.parse::<usize>() {
                Ok(i) => PathSegment::Index(i),
                Err(_) => PathSegment::Field((*s).to_owned()),
            })
            .collect();
        e
    }

    /// The data of `query` given async-graphql's `data` and errors at `paths`.
    fn shaped(query: &str, data: serde_json::Value, paths: &[&[&str]]) -> serde_json::Value {
        let types = Types::from_sdl(SDL).unwrap();
        let doc = parse_query(query).unwrap();
        let (_, op) = doc.operations.iter().next().unwrap();
        let mut response = async_graphql::Response::new(Value::from_json(data).unwrap());
        response.errors = paths.iter().map(|p| error(p)).collect();
        match result(response, &doc, &op.node, &types, true) {
            Ok(r) => r.data.into_json().unwrap(),
            Err(e) => panic!("a request error: {e:?}"),
        }
    }

    #[test]
    fn a_failed_nullable_field_is_null() {
        let data = shaped(
            "{ viewer { role } me { id } }",
            json!({"viewer": {"role": "AGENT"}}),
            &[&["me"]],
        );
        assert_eq!(data.to_string(), r#"{"viewer":{"role":"AGENT"},"me":null}"#);
    }

    #[test]
    fn a_failed_non_null_root_field_nulls_data() {
        let data = shaped(
            "{ viewer { role } customers { id } }",
            json!({"viewer": {"role": "X"}}),
            &[&["customers"]],
        );
        assert_eq!(data, serde_json::Value::Null);
    }

    #[test]
    fn a_failed_non_null_field_nulls_its_nearest_nullable_parent() {
        // me.name is non-null: me (nullable) becomes null; the rest stands.
        let data = shaped(
            "{ me { id name email } viewer { role } }",
            json!({"me": {"id": "c1", "email": "e"}, "viewer": {"role": "X"}}),
            &[&["me", "name"]],
        );
        assert_eq!(data.to_string(), r#"{"me":null,"viewer":{"role":"X"}}"#);
        // A nullable field inside stays an object with its null.
        let data = shaped(
            "{ me { id email } }",
            json!({"me": {"id": "c1"}}),
            &[&["me", "email"]],
        );
        assert_eq!(data.to_string(), r#"{"me":{"id":"c1","email":null}}"#);
    }

    #[test]
    fn non_null_list_items_propagate_through_the_list() {
        // orders: [Order!]! — an item's non-null field fails: the item, then the list, then
        // me.orders (non-null) and so me (nullable) become null.
        let data = shaped(
            "{ me { id orders { id status } } }",
            json!({"me": {"id": "c", "orders": [{"id": "o1", "status": "X"}, {"id": "o2"}]}}),
            &[&["me", "orders", "1", "status"]],
        );
        assert_eq!(data.to_string(), r#"{"me":null}"#);
        // A nullable field of an item is just null.
        let data = shaped(
            "{ me { orders { id note } } }",
            json!({"me": {"orders": [{"id": "o1"}, {"id": "o2", "note": "n"}]}}),
            &[&["me", "orders", "0", "note"]],
        );
        assert_eq!(
            data.to_string(),
            r#"{"me":{"orders":[{"id":"o1","note":null},{"id":"o2","note":"n"}]}}"#
        );
    }

    #[test]
    fn an_object_whose_fields_all_failed_becomes_an_object_again() {
        // async-graphql answers `me: null` when every field of it failed.
        let data = shaped("{ me { email } }", json!({"me": null}), &[&["me", "email"]]);
        assert_eq!(data.to_string(), r#"{"me":{"email":null}}"#);
        let data = shaped("{ me { email } }", json!(null), &[&["me"]]);
        assert_eq!(data.to_string(), r#"{"me":null}"#);
    }

    #[test]
    fn a_nulled_parent_stays_null_whatever_else_failed_inside() {
        let data = shaped(
            "{ me { name email } }",
            json!({"me": null}),
            &[&["me", "name"], &["me", "email"]],
        );
        assert_eq!(data.to_string(), r#"{"me":null}"#);
    }

    #[test]
    fn aliases_and_fragments_are_followed_to_the_declared_type() {
        let data = shaped(
            "{ who: me { ...F } } fragment F on Customer { n: name id }",
            json!({"who": {"id": "c"}}),
            &[&["who", "n"]],
        );
        assert_eq!(data.to_string(), r#"{"who":null}"#);
    }

    #[test]
    fn request_errors_keep_no_data_and_get_codes() {
        let types = Types::from_sdl(SDL).unwrap();
        let doc = parse_query("{ me { id } }").unwrap();
        let (_, op) = doc.operations.iter().next().unwrap();
        let response = async_graphql::Response::from_errors(vec![
            ServerError::new("Query is nested too deep.", None),
            ServerError::new("Unknown field \"x\"", None),
        ]);
        let Err(errors) = result(response, &doc, &op.node, &types, true) else {
            panic!("not a request error");
        };
        let codes: Vec<_> = errors
            .iter()
            .map(|e| {
                e.extensions
                    .as_ref()
                    .unwrap()
                    .get("code")
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            codes,
            ["\"MAX_DEPTH_LIMIT\"", "\"GRAPHQL_VALIDATION_FAILED\""]
        );
    }

    #[test]
    fn results_are_put_in_query_order_through_aliases_lists_and_fragments() {
        let doc = parse_query(
            "{ b: me { z a ...F } list { y x } } fragment F on Customer { m ... on Customer { k } }",
        )
        .unwrap();
        let (_, op) = doc.operations.iter().next().unwrap();
        let mut data = Value::from_json(json!({
            "list": [{ "x": 1, "y": 2 }, { "x": 3, "y": 4 }],
            "b": { "k": 1, "m": 2, "a": 3, "z": 4 },
        }))
        .unwrap();
        in_query_order(&mut data, &doc, &op.node);
        assert_eq!(
            data.into_json().unwrap().to_string(),
            r#"{"b":{"z":4,"a":3,"m":2,"k":1},"list":[{"y":2,"x":1},{"y":4,"x":3}]}"#
        );
    }
}
