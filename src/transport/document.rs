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
    BaseType, ExecutableDocument, Field, OperationDefinition, OperationType, Selection,
    SelectionSet,
};
use async_graphql::{Value as ConstValue, Variables};
use async_graphql_value::Value as GraphQlValue;

use super::error::TransportError;
use super::limits::MAX_SPREAD_DEPTH;

/// List fields of introspection types that can be nested within each other.
const NESTABLE_LISTS: [&str; 4] = ["fields", "inputFields", "interfaces", "possibleTypes"];

/// The operation a request runs: the one `name` names, or the document's only one. A
/// document with several operations and no name is a request error, as the GraphQL spec's
/// `GetOperation` says.
pub(crate) fn operation<'a>(
    doc: &'a ExecutableDocument,
    name: Option<&str>,
) -> Result<&'a OperationDefinition, TransportError> {
    let mut operations = doc.operations.iter();
    match name {
        Some(name) => operations
            .find(|(n, _)| n.is_some_and(|n| n.as_str() == name))
            .map(|(_, op)| &op.node)
            .ok_or_else(|| {
                TransportError::UnknownOperation(format!(
                    "the document has no operation named {name:?}"
                ))
            }),
        None => match (operations.next(), operations.next()) {
            (Some((_, op)), None) => Ok(&op.node),
            _ => Err(TransportError::UnknownOperation(
                "the document has several operations: name one with `operationName`".into(),
            )),
        },
    }
}

/// Whether a query only reads the schema (`__schema`, `__type`, `__typename` at its root).
pub(crate) fn is_introspection_only(doc: &ExecutableDocument, op: &OperationDefinition) -> bool {
    op.ty == OperationType::Query
        && root_fields(doc, &op.selection_set.node, 0)
            .is_some_and(|names| !names.is_empty() && names.iter().all(|n| n.starts_with("__")))
}

/// Whether a query asks for the schema (`__schema` or `__type` at its root).
pub(crate) fn reads_schema(doc: &ExecutableDocument, op: &OperationDefinition) -> bool {
    root_fields(doc, &op.selection_set.node, 0)
        .is_none_or(|names| names.iter().any(|n| *n == "__schema" || *n == "__type"))
}

/// Whether introspection list fields nest within each other more than real tools need.
pub(crate) fn introspection_too_nested(doc: &ExecutableDocument, op: &OperationDefinition) -> bool {
    too_nested(doc, &op.selection_set.node, 0, 0)
}

/// Whether a query uses Apollo Federation's own fields (`_entities`, `_service`): what a
/// gateway asks of a subgraph. Root fields that cannot be told are spreads in a cycle
/// (deeper chains are refused before): validation refuses the document with its own error.
pub(crate) fn uses_federation(doc: &ExecutableDocument, op: &OperationDefinition) -> bool {
    root_fields(doc, &op.selection_set.node, 0)
        .is_some_and(|names| names.iter().any(|n| *n == "_entities" || *n == "_service"))
}

/// The most representations one `_entities` field of the operation asks for (a list, or a
/// variable holding one); `None` when fragments nest too deep to tell.
pub(crate) fn entity_representations(
    doc: &ExecutableDocument,
    op: &OperationDefinition,
    variables: &Variables,
) -> Option<usize> {
    let fields = root_field_nodes(doc, &op.selection_set.node, 0)?;
    let count = fields
        .iter()
        .filter(|f| f.name.node.as_str() == "_entities")
        .map(
            |f| match f.get_argument("representations").map(|v| &v.node) {
                Some(GraphQlValue::List(items)) => items.len(),
                Some(GraphQlValue::Variable(name)) => match variables.get(name) {
                    Some(ConstValue::List(items)) => items.len(),
                    _ => 1,
                },
                Some(_) => 1,
                None => 0,
            },
        )
        .max()
        .unwrap_or(0);
    Some(count)
}

fn root_fields<'a>(
    doc: &'a ExecutableDocument,
    set: &'a SelectionSet,
    spreads: usize,
) -> Option<Vec<&'a str>> {
    let fields = root_field_nodes(doc, set, spreads)?;
    Some(fields.into_iter().map(|f| f.name.node.as_str()).collect())
}

fn root_field_nodes<'a>(
    doc: &'a ExecutableDocument,
    set: &'a SelectionSet,
    spreads: usize,
) -> Option<Vec<&'a Field>> {
    if spreads > MAX_SPREAD_DEPTH {
        return None;
    }
    let mut fields = Vec::new();
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => fields.push(&f.node),
            Selection::InlineFragment(i) => fields.extend(root_field_nodes(
                doc,
                &i.node.selection_set.node,
                spreads + 1,
            )?),
            Selection::FragmentSpread(s) => {
                let fragment = doc.fragments.get(&s.node.fragment_name.node)?;
                fields.extend(root_field_nodes(
                    doc,
                    &fragment.node.selection_set.node,
                    spreads + 1,
                )?);
            }
        }
    }
    Some(fields)
}

fn too_nested(doc: &ExecutableDocument, set: &SelectionSet, lists: usize, spreads: usize) -> bool {
    if spreads > MAX_SPREAD_DEPTH {
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

/// `@skip` and `@include` take a `Boolean!` `if`: a literal of another type, or a variable
/// declared with another type, is a validation error (async-graphql lets a root
/// `__typename` through with neither data nor an error).
pub(crate) fn check_conditions(
    doc: &ExecutableDocument,
    op: &OperationDefinition,
) -> Result<(), TransportError> {
    let declared = |name: &str| {
        op.variable_definitions
            .iter()
            .find(|d| d.node.name.node.as_str() == name)
            .map(|d| &d.node.var_type.node.base)
    };
    let fragments = doc.fragments.values().map(|f| &f.node.selection_set.node);
    for set in std::iter::once(&op.selection_set.node).chain(fragments) {
        conditions_in(set, &declared)?;
    }
    Ok(())
}

fn conditions_in<'a>(
    set: &SelectionSet,
    declared: &impl Fn(&str) -> Option<&'a BaseType>,
) -> Result<(), TransportError> {
    for item in &set.items {
        for directive in item.node.directives() {
            let name = directive.node.name.node.as_str();
            if name != "skip" && name != "include" {
                continue;
            }
            let fine = match directive.node.get_argument("if").map(|v| &v.node) {
                None | Some(GraphQlValue::Boolean(_)) => true,
                Some(GraphQlValue::Variable(var)) => declared(var.as_str())
                    .is_none_or(|ty| matches!(ty, BaseType::Named(n) if n.as_str() == "Boolean")),
                Some(_) => false,
            };
            if !fine {
                return Err(TransportError::Invalid(format!(
                    "`@{name}(if:)` takes a Boolean"
                )));
            }
        }
        match &item.node {
            Selection::Field(field) => conditions_in(&field.node.selection_set.node, declared)?,
            Selection::InlineFragment(inline) => {
                conditions_in(&inline.node.selection_set.node, declared)?
            }
            Selection::FragmentSpread(_) => {}
        }
    }
    Ok(())
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
    fn nested_field_lists_are_refused_and_data_is_not_introspection() {
        let bomb =
            "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }";
        assert_eq!(check(bomb), (true, true));
        assert!(!check("{ __typename me { id } }").0);
        assert!(!check("mutation { __typename }").0);
    }
}
