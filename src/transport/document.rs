//! What the transport reads from a GraphQL document before running it: which operation runs
//! and of what type (no mutations over GET), and whether it only introspects the schema.
//!
//! Introspection-only documents (the playground's schema fetch, codegen tools) run without
//! the data depth limit, which the standard introspection query exceeds through its nested
//! `ofType`s. What bounds them instead is the one way introspection can explode: list
//! fields nested in list fields (`fields { type { fields { type { fields ... } } } }` grows
//! with every level). [`introspection_too_nested`] allows the shapes real tools send
//! (`types > fields > args`) and refuses deeper nesting of `fields`, `inputFields`,
//! `interfaces` and `possibleTypes`.

use async_graphql::parser::types::{
    ExecutableDocument, OperationDefinition, OperationType, Selection, SelectionSet,
};
use async_graphql::{Name, Value};

/// List fields of introspection types that can be nested within each other.
const NESTABLE_LISTS: [&str; 4] = ["fields", "inputFields", "interfaces", "possibleTypes"];
/// Deepest nesting of fragment spreads followed (validation rejects cycles later; this keeps
/// the walk bounded before it does).
const MAX_SPREADS: usize = 32;

/// The operation `name` selects (or the only one).
pub(in crate::transport) fn operation<'a>(
    doc: &'a ExecutableDocument,
    name: Option<&str>,
) -> Option<&'a OperationDefinition> {
    match name {
        Some(name) => doc
            .operations
            .iter()
            .find(|(n, _)| n.map(|n| n.as_str()) == Some(name))
            .map(|(_, op)| &op.node),
        None => doc.operations.iter().next().map(|(_, op)| &op.node),
    }
}

/// Whether a query only reads the schema (`__schema`, `__type`, `__typename` at its root).
pub(in crate::transport) fn is_introspection_only(
    doc: &ExecutableDocument,
    op: &OperationDefinition,
) -> bool {
    op.ty == OperationType::Query
        && root_fields(doc, &op.selection_set.node, 0)
            .is_some_and(|names| !names.is_empty() && names.iter().all(|n| n.starts_with("__")))
}

/// Whether introspection list fields nest within each other more than real tools need.
pub(in crate::transport) fn introspection_too_nested(
    doc: &ExecutableDocument,
    op: &OperationDefinition,
) -> bool {
    too_nested(doc, &op.selection_set.node, 0, 0)
}

/// Puts the fields of a result in the order the query asked for them, as the GraphQL spec
/// says a response should. (async-graphql resolves sibling fields concurrently and keeps them
/// in the order they finished.) Fields of fragments count where the fragment stands.
pub(in crate::transport) fn in_query_order(
    data: &mut Value,
    doc: &ExecutableDocument,
    op: &OperationDefinition,
) {
    reorder(data, doc, &[&op.selection_set.node]);
}

fn reorder(value: &mut Value, doc: &ExecutableDocument, sets: &[&SelectionSet]) {
    match value {
        Value::List(items) => items.iter_mut().for_each(|v| reorder(v, doc, sets)),
        Value::Object(fields) => {
            let mut keys: Vec<(&Name, Vec<&SelectionSet>)> = Vec::new();
            for set in sets {
                collect_keys(doc, set, &mut keys, 0);
            }
            let mut ordered = async_graphql::indexmap::IndexMap::with_capacity(fields.len());
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
    keys: &mut Vec<(&'a Name, Vec<&'a SelectionSet>)>,
    spreads: usize,
) {
    if spreads > MAX_SPREADS {
        return;
    }
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => {
                let field = &f.node;
                let key = field.alias.as_ref().map_or(&field.name.node, |a| &a.node);
                match keys.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, subsets)) => subsets.push(&field.selection_set.node),
                    None => keys.push((key, vec![&field.selection_set.node])),
                }
            }
            Selection::InlineFragment(i) => {
                collect_keys(doc, &i.node.selection_set.node, keys, spreads + 1)
            }
            Selection::FragmentSpread(s) => {
                if let Some(fragment) = doc.fragments.get(&s.node.fragment_name.node) {
                    collect_keys(doc, &fragment.node.selection_set.node, keys, spreads + 1);
                }
            }
        }
    }
}

fn root_fields<'a>(
    doc: &'a ExecutableDocument,
    set: &'a SelectionSet,
    spreads: usize,
) -> Option<Vec<&'a str>> {
    if spreads > MAX_SPREADS {
        return None;
    }
    let mut names = Vec::new();
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => names.push(f.node.name.node.as_str()),
            Selection::InlineFragment(i) => {
                names.extend(root_fields(doc, &i.node.selection_set.node, spreads + 1)?)
            }
            Selection::FragmentSpread(s) => {
                let fragment = doc.fragments.get(&s.node.fragment_name.node)?;
                names.extend(root_fields(
                    doc,
                    &fragment.node.selection_set.node,
                    spreads + 1,
                )?);
            }
        }
    }
    Some(names)
}

fn too_nested(doc: &ExecutableDocument, set: &SelectionSet, lists: usize, spreads: usize) -> bool {
    if spreads > MAX_SPREADS {
        return true;
    }
    set.items.iter().any(|item| match &item.node {
        Selection::Field(f) => {
            let inner = lists + usize::from(NESTABLE_LISTS.contains(&f.node.name.node.as_str()));
            inner > 1 || too_nested(doc, &f.node.selection_set.node, inner, spreads)
        }
        Selection::InlineFragment(i) => {
            too_nested(doc, &i.node.selection_set.node, lists, spreads + 1)
        }
        Selection::FragmentSpread(s) => doc
            .fragments
            .get(&s.node.fragment_name.node)
            .is_some_and(|f| too_nested(doc, &f.node.selection_set.node, lists, spreads + 1)),
    })
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;

    use super::*;

    fn check(query: &str) -> (bool, bool) {
        let doc = parse_query(query).unwrap();
        let op = operation(&doc, None).unwrap();
        (
            is_introspection_only(&doc, op),
            introspection_too_nested(&doc, op),
        )
    }

    #[test]
    fn the_standard_introspection_query_is_introspection_and_allowed() {
        let standard = r#"query IntrospectionQuery { __schema { queryType { name } types { ...FullType } directives { name args { ...InputValue } } } }
            fragment FullType on __Type { kind name fields(includeDeprecated: true) { name args { ...InputValue } type { ...TypeRef } }
              inputFields { ...InputValue } interfaces { ...TypeRef } enumValues { name } possibleTypes { ...TypeRef } }
            fragment InputValue on __InputValue { name type { ...TypeRef } defaultValue }
            fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name
              ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } } } }"#;
        assert_eq!(check(standard), (true, false));
    }

    #[test]
    fn results_are_put_in_query_order_through_aliases_lists_and_fragments() {
        let doc = parse_query(
            "{ b: me { z a ...F } list { y x } } fragment F on Customer { m ... on Customer { k } }",
        )
        .unwrap();
        let op = operation(&doc, None).unwrap();
        let mut data = Value::from_json(serde_json::json!({
            "list": [{ "x": 1, "y": 2 }, { "x": 3, "y": 4 }],
            "b": { "k": 1, "m": 2, "a": 3, "z": 4 },
        }))
        .unwrap();
        in_query_order(&mut data, &doc, op);
        assert_eq!(
            serde_json::to_string(&data.into_json().unwrap()).unwrap(),
            r#"{"b":{"z":4,"a":3,"m":2,"k":1},"list":[{"y":2,"x":1},{"y":4,"x":3}]}"#
        );
    }

    #[test]
    fn nested_field_lists_are_refused_and_data_is_not_introspection() {
        let bomb =
            "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }";
        assert_eq!(check(bomb), (true, true));
        assert!(!check("{ __typename me { id } }").0);
        assert!(!check("mutation { __typename }").0);
    }
}
