//! The plan of an operation with `@defer`: which documents run, and where each result goes.
//!
//! A fragment (spread or inline) with `@defer` (whose `if` is not `false`, and that `@skip` /
//! `@include` leave in) is *deferred*. From the parsed document the plan builds:
//! - the **initial document**: the operation with every deferred fragment wrapped in
//!   `... @skip(if: true) { <the fragment> }`, so async-graphql validates the whole document
//!   (its depth and complexity limits count every field of it, deferred or not) and then
//!   leaves the deferred fragments out of the execution;
//! - per deferred fragment, a **part document**: the same operation where, along the path of
//!   selections from the root down to the fragment (the fields with their arguments and
//!   aliases, the fragments they pass through), every other selection is wrapped the same way,
//!   and inside the fragment the fragments deferred deeper are. It selects only the path and
//!   the fragment's fields, and validates as the whole document (every variable and fragment
//!   is still used, every field counted).
//!
//! All of them run with the request's loaders inside one `resolvers::Batched`
//! (`incremental`): the path fields a part resolves again come from what the loaders already
//! loaded for the initial document, so a part costs no upstream call that the whole query
//! would not have made. A part's result holds, at its path, one object per list item the path
//! goes through: each is one incremental item (`path` with list indices, `label`).
//!
//! A fragment spread twice is deferred twice (each occurrence has its path); a deferred
//! fragment inside another is delivered after it (`parent`). At most
//! [`MAX_DEFERRED_FRAGMENTS`] occurrences per operation: each runs the path and validation
//! again.

use std::collections::HashMap;

use async_graphql::parser::types::{
    Directive, ExecutableDocument, FragmentDefinition, InlineFragment, OperationDefinition,
    Selection, SelectionSet,
};
use async_graphql::{Name, Positioned, Value as ConstValue, Variables};
use async_graphql_value::Value;

use super::document;
use super::error::TransportError;
use super::limits::MAX_SPREAD_DEPTH;

/// Most deferred fragments (occurrences, with fragments expanded) one operation may have.
pub(crate) const MAX_DEFERRED_FRAGMENTS: usize = 16;

/// A deferred fragment found in an operation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Deferred {
    /// The index of each selection from the operation's selection set down to the fragment
    /// (through fields, inline fragments and the definitions of spread fragments).
    steps: Vec<usize>,
    /// The response keys (alias or name) of the fields on the way: where its items are.
    pub(crate) keys: Vec<Name>,
    /// Its `label`, echoed in its items.
    pub(crate) label: Option<String>,
    /// The deferred fragment it is inside, delivered before it.
    pub(crate) parent: Option<usize>,
}

/// The deferred fragments of `operation` with `variables`, in document order (a parent
/// before the fragments inside it); more than [`MAX_DEFERRED_FRAGMENTS`] is a request error.
pub(crate) fn find(
    doc: &ExecutableDocument,
    operation: &OperationDefinition,
    variables: &Variables,
) -> Result<Vec<Deferred>, TransportError> {
    let variables = &with_defaults(operation, variables);
    let mut walk = Walk {
        doc,
        variables,
        steps: Vec::new(),
        keys: Vec::new(),
        found: Vec::new(),
    };
    walk.set(&operation.selection_set.node, None, 0)?;
    Ok(walk.found)
}

struct Walk<'a> {
    doc: &'a ExecutableDocument,
    variables: &'a Variables,
    steps: Vec<usize>,
    keys: Vec<Name>,
    found: Vec<Deferred>,
}

impl Walk<'_> {
    fn set(
        &mut self,
        set: &SelectionSet,
        parent: Option<usize>,
        spreads: usize,
    ) -> Result<(), TransportError> {
        if spreads > MAX_SPREAD_DEPTH {
            return Ok(());
        }
        for (i, item) in set.items.iter().enumerate() {
            if skipped(item.node.directives(), self.variables) {
                continue;
            }
            self.steps.push(i);
            match &item.node {
                Selection::Field(field) => {
                    self.keys.push(field.node.response_key().node.clone());
                    self.set(&field.node.selection_set.node, parent, spreads)?;
                    self.keys.pop();
                }
                Selection::InlineFragment(_) | Selection::FragmentSpread(_) => {
                    let Some(inner) = fragment_set(self.doc, &item.node) else {
                        self.steps.pop();
                        continue;
                    };
                    let mut parent = parent;
                    if let Some(label) = deferral(item.node.directives(), self.variables)? {
                        if label.is_some() && self.found.iter().any(|f| f.label == label) {
                            return Err(TransportError::Invalid(
                                "each `@defer` of an operation needs a label of its own".into(),
                            ));
                        }
                        if self.found.len() == MAX_DEFERRED_FRAGMENTS {
                            return Err(TransportError::Limit {
                                code: "MAX_DEFERRED_FRAGMENTS_LIMIT",
                                message: format!(
                                    "an operation may defer at most {MAX_DEFERRED_FRAGMENTS} \
                                     fragments (each occurrence of a spread counts)"
                                ),
                            });
                        }
                        self.found.push(Deferred {
                            steps: self.steps.clone(),
                            keys: self.keys.clone(),
                            label,
                            parent,
                        });
                        parent = Some(self.found.len() - 1);
                    }
                    self.set(inner, parent, spreads + 1)?;
                }
            }
            self.steps.pop();
        }
        Ok(())
    }
}

/// `variables` with the operation's defaults for those not given (as execution sees them).
fn with_defaults(operation: &OperationDefinition, variables: &Variables) -> Variables {
    let mut all = variables.clone();
    for definition in &operation.variable_definitions {
        let definition = &definition.node;
        if !all.contains_key(&definition.name.node)
            && let Some(default) = definition.default_value()
        {
            all.insert(definition.name.node.clone(), default.clone());
        }
    }
    all
}

/// The selection set of an inline fragment, or of the definition of a spread fragment.
fn fragment_set<'a>(doc: &'a ExecutableDocument, item: &'a Selection) -> Option<&'a SelectionSet> {
    match item {
        Selection::InlineFragment(inline) => Some(&inline.node.selection_set.node),
        Selection::FragmentSpread(spread) => doc
            .fragments
            .get(&spread.node.fragment_name.node)
            .map(|f| &f.node.selection_set.node),
        Selection::Field(_) => None,
    }
}

/// The value of argument `name` of `directive` with `variables`, if given.
fn argument(directive: &Directive, name: &str, variables: &Variables) -> Option<ConstValue> {
    let value = directive.get_argument(name)?;
    value
        .node
        .clone()
        .into_const_with(|var| variables.get(&var).cloned().ok_or(()))
        .ok()
}

/// Whether `@skip` or `@include` leave this selection out (as async-graphql decides).
fn skipped(directives: &[Positioned<Directive>], variables: &Variables) -> bool {
    directives.iter().any(|d| {
        let skip_when = match d.node.name.node.as_str() {
            "skip" => true,
            "include" => false,
            _ => return false,
        };
        argument(&d.node, "if", variables) == Some(ConstValue::Boolean(skip_when))
    })
}

/// Longest `@defer` label: it names a part and is echoed in each of its items.
const MAX_LABEL_BYTES: usize = 128;

/// `Some(label)` when these directives defer their fragment: `@defer` without `if: false`.
/// A label is a string written in the document (never a variable, as the incremental
/// delivery RFC says) of at most [`MAX_LABEL_BYTES`].
fn deferral(
    directives: &[Positioned<Directive>],
    variables: &Variables,
) -> Result<Option<Option<String>>, TransportError> {
    let Some(defer) = directives
        .iter()
        .find(|d| d.node.name.node == resolvers::directives::DEFER)
    else {
        return Ok(None);
    };
    if argument(&defer.node, "if", variables) == Some(ConstValue::Boolean(false)) {
        return Ok(None);
    }
    let label = match defer.node.get_argument("label").map(|v| &v.node) {
        Some(Value::String(label)) if label.len() > MAX_LABEL_BYTES => {
            return Err(TransportError::Limit {
                code: "MAX_DEFER_LABEL_LIMIT",
                message: format!("a `@defer` label has at most {MAX_LABEL_BYTES} bytes"),
            });
        }
        Some(Value::String(label)) => Some(label.clone()),
        Some(Value::Variable(_)) => {
            return Err(TransportError::Invalid(
                "the `label` of `@defer` is written in the document, not given as a variable"
                    .into(),
            ));
        }
        // Anything else is validation's to refuse.
        _ => None,
    };
    Ok(Some(label))
}

/// The documents an operation with deferred fragments runs (see the module docs).
pub(crate) struct Plan {
    /// Everything but the deferred fragments.
    pub(crate) initial: ExecutableDocument,
    /// Per deferred fragment (in the order of [`find`]), the path to it and its selection.
    pub(crate) parts: Vec<ExecutableDocument>,
}

impl Plan {
    /// The plan of the operation `operation_name` of `doc`, whose deferred fragments are
    /// `deferred` (from [`find`], with the same document and variables).
    pub(crate) fn build(
        doc: &ExecutableDocument,
        operation_name: Option<&str>,
        deferred: &[Deferred],
        variables: &Variables,
    ) -> Result<Plan, TransportError> {
        let operation = document::operation(doc, operation_name)?;
        let variables = &with_defaults(operation, variables);
        let mut initial = doc.clone();
        for fragment in initial.fragments.values_mut() {
            strip(&mut fragment.node.selection_set.node, variables);
        }
        let mut stripped = operation.selection_set.node.clone();
        strip(&mut stripped, variables);
        set_operation(&mut initial, operation_name, stripped)?;
        let mut parts = Vec::with_capacity(deferred.len());
        for one in deferred {
            let mut part = initial.clone();
            let mut fragments = std::mem::take(&mut part.fragments);
            let set = along(
                doc,
                &operation.selection_set.node,
                &one.steps,
                &mut fragments,
                variables,
            );
            part.fragments = fragments;
            set_operation(&mut part, operation_name, set)?;
            parts.push(part);
        }
        Ok(Plan { initial, parts })
    }
}

/// Replaces the selection set of the operation `name` of `doc`.
fn set_operation(
    doc: &mut ExecutableDocument,
    name: Option<&str>,
    set: SelectionSet,
) -> Result<(), TransportError> {
    use async_graphql::parser::types::DocumentOperations;
    let operation = match (&mut doc.operations, name) {
        (DocumentOperations::Single(operation), _) => Some(operation),
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get_mut(name),
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values_mut().next()
        }
        (DocumentOperations::Multiple(_), None) => None,
    };
    let operation = operation.ok_or(TransportError::Internal)?;
    operation.node.selection_set.node = set;
    Ok(())
}

/// Wraps each deferred fragment of `set` (not those inside fragment definitions, which are
/// stripped on their own) in `... @skip(if: true) { }`.
fn strip(set: &mut SelectionSet, variables: &Variables) {
    for item in &mut set.items {
        let deferred = !skipped(item.node.directives(), variables)
            && deferral(item.node.directives(), variables).is_ok_and(|d| d.is_some());
        if deferred {
            *item = skipped_wrapper(item.clone());
            continue;
        }
        match &mut item.node {
            Selection::Field(field) => strip(&mut field.node.selection_set.node, variables),
            Selection::InlineFragment(inline) => {
                strip(&mut inline.node.selection_set.node, variables);
            }
            Selection::FragmentSpread(_) => {}
        }
    }
}

/// `set` (of the original document) with only the selection at `steps` left to run: the
/// others are wrapped in `... @skip(if: true) { }`; at the last step, the deferred fragment
/// with the fragments deferred inside it stripped. A fragment spread on the way gets its
/// definition in `fragments` pruned the same way (it cannot be spread again inside the
/// fragment: that would be a cycle).
fn along(
    doc: &ExecutableDocument,
    set: &SelectionSet,
    steps: &[usize],
    fragments: &mut HashMap<Name, Positioned<FragmentDefinition>>,
    variables: &Variables,
) -> SelectionSet {
    let Some((&at, rest)) = steps.split_first() else {
        return set.clone();
    };
    let items = set
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            if i != at {
                return skipped_wrapper(item.clone());
            }
            let mut item = item.clone();
            match &mut item.node {
                Selection::Field(field) => {
                    let inner = along(
                        doc,
                        &field.node.selection_set.node,
                        rest,
                        fragments,
                        variables,
                    );
                    field.node.selection_set.node = inner;
                }
                Selection::InlineFragment(inline) => {
                    let inner = if rest.is_empty() {
                        let mut inner = inline.node.selection_set.node.clone();
                        strip(&mut inner, variables);
                        inner
                    } else {
                        along(
                            doc,
                            &inline.node.selection_set.node,
                            rest,
                            fragments,
                            variables,
                        )
                    };
                    inline.node.selection_set.node = inner;
                }
                Selection::FragmentSpread(spread) => {
                    // At the last step the definition is the stripped one already.
                    let name = &spread.node.fragment_name.node;
                    if let (false, Some(original)) = (rest.is_empty(), doc.fragments.get(name)) {
                        let pruned = along(
                            doc,
                            &original.node.selection_set.node,
                            rest,
                            fragments,
                            variables,
                        );
                        if let Some(fragment) = fragments.get_mut(name) {
                            fragment.node.selection_set.node = pruned;
                        }
                    }
                }
            }
            item
        })
        .collect();
    SelectionSet { items }
}

/// `... @skip(if: true) { <item> }`: validated (and counted by the limits), never run.
fn skipped_wrapper(item: Positioned<Selection>) -> Positioned<Selection> {
    let pos = item.pos;
    let skip = Directive {
        name: Positioned::new(Name::new("skip"), pos),
        arguments: vec![(
            Positioned::new(Name::new("if"), pos),
            Positioned::new(Value::Boolean(true), pos),
        )],
    };
    let wrapper = InlineFragment {
        type_condition: None,
        directives: vec![Positioned::new(skip, pos)],
        selection_set: Positioned::new(SelectionSet { items: vec![item] }, pos),
    };
    Positioned::new(
        Selection::InlineFragment(Positioned::new(wrapper, pos)),
        pos,
    )
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;

    use super::*;

    fn deferred(query: &str, variables: serde_json::Value) -> Vec<Deferred> {
        let doc = parse_query(query).unwrap();
        let operation = document::operation(&doc, None).unwrap();
        let variables = Variables::from_json(variables);
        find(&doc, operation, &variables).unwrap()
    }

    fn keys(d: &Deferred) -> Vec<&str> {
        d.keys.iter().map(Name::as_str).collect()
    }

    #[test]
    fn deferred_fragments_are_found_with_their_paths_labels_and_parents() {
        let found = deferred(
            r#"query Q($later: Boolean!) {
                me { id orders { ... @defer(label: "o") { id ...S @defer } } }
                viewer: me { ... @defer(if: false) { name } ... @defer(if: $later) { email } }
            }
            fragment S on Order { shipment { status } }"#,
            serde_json::json!({ "later": true }),
        );
        assert_eq!(found.len(), 3);
        assert_eq!(keys(&found[0]), ["me", "orders"]);
        assert_eq!(found[0].label.as_deref(), Some("o"));
        assert_eq!(found[0].parent, None);
        assert_eq!(keys(&found[1]), ["me", "orders"]);
        assert_eq!(found[1].parent, Some(0));
        assert_eq!(keys(&found[2]), ["viewer"]);
        assert_eq!(found[2].label, None);
    }

    #[test]
    fn skipped_fragments_and_if_false_are_not_deferred() {
        let found = deferred(
            r#"query Q($no: Boolean!) { me { ... @defer(if: $no) { id } ... @skip(if: true) @defer { name } } }"#,
            serde_json::json!({ "no": false }),
        );
        assert!(found.is_empty());
    }

    #[test]
    fn too_many_deferred_fragments_are_a_request_error() {
        let many = (0..=MAX_DEFERRED_FRAGMENTS)
            .map(|i| format!("... @defer(label: \"{i}\") {{ id }}"))
            .collect::<String>();
        let doc = parse_query(format!("{{ me {{ {many} }} }}")).unwrap();
        let operation = document::operation(&doc, None).unwrap();
        let refused = find(&doc, operation, &Variables::default()).unwrap_err();
        assert!(
            matches!(
                refused,
                TransportError::Limit {
                    code: "MAX_DEFERRED_FRAGMENTS_LIMIT",
                    ..
                }
            ),
            "{refused:?}"
        );
    }

    #[test]
    fn the_documents_keep_every_selection_and_run_only_their_own() {
        let query = r#"{ me { id orders(first: 2) { ...F } } } fragment F on Order { id ... @defer(label: "s") { shipment { status } } }"#;
        let doc = parse_query(query).unwrap();
        let operation = document::operation(&doc, None).unwrap();
        let found = find(&doc, operation, &Variables::default()).unwrap();
        let plan = Plan::build(&doc, None, &found, &Variables::default()).unwrap();
        let skips = |doc: &ExecutableDocument| {
            serde_json::to_string(doc)
                .unwrap()
                .matches("\"skip\"")
                .count()
        };
        // The initial document skips the deferred fragment (inside F's definition).
        assert_eq!(skips(&plan.initial), 1);
        // The part keeps `me { orders(first: 2) { ...F } }` and runs the deferred fragment:
        // it skips `id` beside `orders`, and F's definition skips its own `id`.
        assert_eq!(skips(&plan.parts[0]), 2);
        let part = serde_json::to_string(&plan.parts[0]).unwrap();
        assert!(part.contains("\"first\""), "{part}");
    }
}
