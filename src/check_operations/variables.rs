//! The spec's "All Variable Usages Are Allowed" rule: a variable's declared type fits every
//! argument (and input field, list item, directive argument) it is passed to.
//!
//! async-graphql 7.2.1 has this rule (`VariableInAllowedPosition`), but it never fires: the
//! combinator that runs its rules together does not pass input values on to them. So an
//! argument whose type changed (`first: String` became `first: Int`) would pass validation
//! while every app sending `$first: String` breaks. This checks it from the schema's SDL.

use std::collections::HashMap;

use async_graphql::Name;
use async_graphql::Pos;
use async_graphql::parser::types::{
    BaseType, ExecutableDocument, InputValueDefinition, Selection, SelectionSet, Type, TypeKind,
    TypeSystemDefinition,
};
use async_graphql::parser::{Positioned, parse_schema};
use async_graphql_value::Value;

/// An input position: its type, and whether it has a default (then a nullable variable
/// may be passed to a non-null position).
#[derive(Clone)]
struct Slot {
    ty: Type,
    has_default: bool,
}

/// A field of an object or interface type: its type, and its arguments.
struct FieldInputs {
    ty: Type,
    arguments: HashMap<String, Slot>,
}

/// What the check needs of the schema.
pub(super) struct InputTypes {
    /// Root operation types: query, mutation, subscription.
    roots: [String; 3],
    /// Object and interface types: field name to its type and its arguments.
    fields: HashMap<String, HashMap<String, FieldInputs>>,
    /// Input object types: field name to its slot.
    inputs: HashMap<String, HashMap<String, Slot>>,
    /// Directives: argument name to its slot.
    directives: HashMap<String, HashMap<String, Slot>>,
}

/// A variable passed somewhere, in an operation or a fragment.
struct Usage<'a> {
    variable: &'a str,
    slot: Slot,
    /// What it is passed to, for the message: `argument "first" of "Query.customers"`.
    place: String,
    pos: Pos,
}

/// The usages of one operation or fragment, and the fragments it spreads.
#[derive(Default)]
struct Scope<'a> {
    usages: Vec<Usage<'a>>,
    spreads: Vec<&'a str>,
}

impl InputTypes {
    /// Reads the schema's SDL.
    pub(super) fn from_sdl(sdl: &str) -> anyhow::Result<Self> {
        let document = parse_schema(sdl)?;
        let mut types = Self {
            roots: ["Query".into(), "Mutation".into(), "Subscription".into()],
            fields: HashMap::new(),
            inputs: HashMap::new(),
            directives: HashMap::new(),
        };
        let boolean_if = HashMap::from([(
            "if".to_owned(),
            Slot {
                ty: Type {
                    base: BaseType::Named(Name::new("Boolean")),
                    nullable: false,
                },
                has_default: false,
            },
        )]);
        types
            .directives
            .insert("include".into(), boolean_if.clone());
        types.directives.insert("skip".into(), boolean_if);
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
                    let name = ty.name.node.to_string();
                    match ty.kind {
                        TypeKind::Object(o) => types.add_fields(name, o.fields),
                        TypeKind::Interface(i) => types.add_fields(name, i.fields),
                        TypeKind::InputObject(input) => {
                            types
                                .inputs
                                .entry(name)
                                .or_default()
                                .extend(slots(input.fields));
                        }
                        _ => {}
                    }
                }
                TypeSystemDefinition::Directive(directive) => {
                    let directive = directive.node;
                    types
                        .directives
                        .insert(directive.name.node.to_string(), slots(directive.arguments));
                }
            }
        }
        Ok(types)
    }

    fn add_fields(
        &mut self,
        ty: String,
        fields: Vec<Positioned<async_graphql::parser::types::FieldDefinition>>,
    ) {
        let entry = self.fields.entry(ty).or_default();
        for field in fields {
            let field = field.node;
            entry.insert(
                field.name.node.to_string(),
                FieldInputs {
                    ty: field.ty.node,
                    arguments: slots(field.arguments),
                },
            );
        }
    }

    /// Every variable passed where its declared type does not fit: position and message.
    pub(super) fn misused_variables(&self, document: &ExecutableDocument) -> Vec<(Pos, String)> {
        let mut fragments: HashMap<&str, Scope<'_>> = HashMap::new();
        for (name, fragment) in &document.fragments {
            let mut scope = Scope::default();
            let on = fragment.node.type_condition.node.on.node.as_str();
            self.collect(&fragment.node.selection_set.node, Some(on), &mut scope);
            fragments.insert(name.as_str(), scope);
        }
        let mut problems = Vec::new();
        for (_, operation) in document.operations.iter() {
            let operation = &operation.node;
            let root = match operation.ty {
                async_graphql::parser::types::OperationType::Query => &self.roots[0],
                async_graphql::parser::types::OperationType::Mutation => &self.roots[1],
                async_graphql::parser::types::OperationType::Subscription => &self.roots[2],
            };
            let mut scope = Scope::default();
            self.collect_directives(&operation.directives, &mut scope);
            self.collect(&operation.selection_set.node, Some(root), &mut scope);
            // The fragments it spreads, each once, transitively.
            let mut seen: Vec<&str> = Vec::new();
            let mut pending = scope.spreads.clone();
            let mut usages: Vec<&Usage<'_>> = scope.usages.iter().collect();
            while let Some(name) = pending.pop() {
                if seen.contains(&name) {
                    continue;
                }
                seen.push(name);
                if let Some(fragment) = fragments.get(name) {
                    usages.extend(&fragment.usages);
                    pending.extend(&fragment.spreads);
                }
            }
            for usage in usages {
                let Some(definition) = operation
                    .variable_definitions
                    .iter()
                    .map(|d| &d.node)
                    .find(|d| d.name.node == usage.variable)
                else {
                    continue; // An undeclared variable: validation reports it.
                };
                let declared = &definition.var_type.node;
                let has_default = definition
                    .default_value
                    .as_ref()
                    .is_some_and(|v| v.node != async_graphql::Value::Null);
                if !allowed(declared, has_default, &usage.slot) {
                    problems.push((
                        usage.pos,
                        format!(
                            "Variable \"${}\" of type \"{declared}\" is passed to {}, of type \"{}\"",
                            usage.variable, usage.place, usage.slot.ty
                        ),
                    ));
                }
            }
        }
        problems
    }

    /// The usages in `set`, a selection on `ty` (`None`: a type the schema does not have).
    fn collect<'a>(&self, set: &'a SelectionSet, ty: Option<&str>, scope: &mut Scope<'a>) {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    self.collect_directives(&field.directives, scope);
                    let name = field.name.node.as_str();
                    let schema_field = ty
                        .and_then(|ty| self.fields.get(ty))
                        .and_then(|fields| fields.get(name));
                    if let (Some(ty), Some(schema_field)) = (ty, schema_field) {
                        for (argument, value) in &field.arguments {
                            if let Some(slot) = schema_field.arguments.get(argument.node.as_str()) {
                                let place =
                                    format!("argument \"{}\" of \"{ty}.{name}\"", argument.node);
                                self.collect_value(&value.node, slot, &place, value.pos, scope);
                            }
                        }
                    }
                    let inner = schema_field.map(|schema_field| named(&schema_field.ty));
                    self.collect(&field.selection_set.node, inner, scope);
                }
                Selection::FragmentSpread(spread) => {
                    self.collect_directives(&spread.node.directives, scope);
                    scope.spreads.push(spread.node.fragment_name.node.as_str());
                }
                Selection::InlineFragment(inline) => {
                    let inline = &inline.node;
                    self.collect_directives(&inline.directives, scope);
                    let on = inline
                        .type_condition
                        .as_ref()
                        .map_or(ty, |condition| Some(condition.node.on.node.as_str()));
                    self.collect(&inline.selection_set.node, on, scope);
                }
            }
        }
    }

    fn collect_directives<'a>(
        &self,
        directives: &'a [Positioned<async_graphql::parser::types::Directive>],
        scope: &mut Scope<'a>,
    ) {
        for directive in directives {
            let directive = &directive.node;
            let Some(arguments) = self.directives.get(directive.name.node.as_str()) else {
                continue;
            };
            for (argument, value) in &directive.arguments {
                if let Some(slot) = arguments.get(argument.node.as_str()) {
                    let place =
                        format!("argument \"{}\" of @{}", argument.node, directive.name.node);
                    self.collect_value(&value.node, slot, &place, value.pos, scope);
                }
            }
        }
    }

    /// The variables in `value`, passed to `slot`, and inside its lists and input objects.
    fn collect_value<'a>(
        &self,
        value: &'a Value,
        slot: &Slot,
        place: &str,
        pos: Pos,
        scope: &mut Scope<'a>,
    ) {
        match value {
            Value::Variable(variable) => scope.usages.push(Usage {
                variable: variable.as_str(),
                slot: slot.clone(),
                place: place.to_owned(),
                pos,
            }),
            Value::List(items) => {
                if let BaseType::List(item) = &slot.ty.base {
                    let item = Slot {
                        ty: (**item).clone(),
                        has_default: false,
                    };
                    for value in items {
                        self.collect_value(value, &item, place, pos, scope);
                    }
                }
            }
            Value::Object(object) => {
                let input = named(&slot.ty);
                if let Some(fields) = self.inputs.get(input) {
                    for (field, value) in object {
                        if let Some(field_slot) = fields.get(field.as_str()) {
                            let place = format!("field \"{field}\" of input \"{input}\" ({place})");
                            self.collect_value(value, field_slot, &place, pos, scope);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

fn slots(definitions: Vec<Positioned<InputValueDefinition>>) -> HashMap<String, Slot> {
    definitions
        .into_iter()
        .map(|definition| {
            let definition = definition.node;
            (
                definition.name.node.to_string(),
                Slot {
                    ty: definition.ty.node,
                    has_default: definition.default_value.is_some(),
                },
            )
        })
        .collect()
}

/// The named type at the bottom of `ty`'s lists.
fn named(ty: &Type) -> &str {
    match &ty.base {
        BaseType::Named(name) => name.as_str(),
        BaseType::List(item) => named(item),
    }
}

/// The spec's `IsVariableUsageAllowed`: a variable of type `declared` (with a non-null
/// default or not) may be passed to `slot`.
fn allowed(declared: &Type, has_default: bool, slot: &Slot) -> bool {
    if !slot.ty.nullable && declared.nullable {
        if !has_default && !slot.has_default {
            return false;
        }
        let nullable_slot = Type {
            base: slot.ty.base.clone(),
            nullable: true,
        };
        return compatible(declared, &nullable_slot);
    }
    compatible(declared, &slot.ty)
}

/// The spec's `AreTypesCompatible`: a non-null location takes only a non-null variable; a
/// nullable one takes either, of the same base.
fn compatible(declared: &Type, location: &Type) -> bool {
    if !location.nullable && declared.nullable {
        return false;
    }
    compatible_base(&declared.base, &location.base)
}

fn compatible_base(declared: &BaseType, location: &BaseType) -> bool {
    match (declared, location) {
        (BaseType::List(declared), BaseType::List(location)) => compatible(declared, location),
        (BaseType::Named(declared), BaseType::Named(location)) => declared == location,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;

    use super::*;

    const SDL: &str = r#"
        type Query { customers(first: Int! = 20, search: String, ids: [ID!]): [Customer!]! }
        type Customer { id: ID! orders(filter: OrderFilter): [Int] }
        input OrderFilter { status: String! since: Int }
    "#;

    fn misused(query: &str) -> Vec<String> {
        let types = InputTypes::from_sdl(SDL).unwrap();
        types
            .misused_variables(&parse_query(query).unwrap())
            .into_iter()
            .map(|(_, message)| message)
            .collect()
    }

    #[test]
    fn variables_of_the_arguments_types_fit() {
        for query in [
            "query($n: Int!) { customers(first: $n) { id } }",
            // The argument has a default: a nullable variable fits.
            "query($n: Int) { customers(first: $n) { id } }",
            "query($s: String!) { customers(search: $s) { id } }",
            "query($id: ID!) { customers(ids: [$id]) { id } }",
            "query($ids: [ID!]!) { customers(ids: $ids) { id } }",
            "query($s: String!) { customers { orders(filter: {status: $s}) } }",
            "query($b: Boolean!) { customers @include(if: $b) { id } }",
            "query($s: String = \"x\") { ...F } fragment F on Query { customers { orders(filter: {status: $s}) } }",
        ] {
            assert_eq!(misused(query), Vec::<String>::new(), "{query}");
        }
    }

    #[test]
    fn variables_of_other_types_do_not() {
        for (query, expected) in [
            (
                "query($n: String!) { customers(first: $n) { id } }",
                r#"Variable "$n" of type "String!" is passed to argument "first" of "Query.customers", of type "Int!""#,
            ),
            (
                "query($ids: [ID]) { customers(ids: $ids) { id } }",
                r#"Variable "$ids" of type "[ID]" is passed to argument "ids" of "Query.customers", of type "[ID!]""#,
            ),
            (
                "query($s: String) { ...F } fragment F on Query { customers { orders(filter: {status: $s}) } }",
                r#"Variable "$s" of type "String" is passed to field "status" of input "OrderFilter" (argument "filter" of "Customer.orders"), of type "String!""#,
            ),
            (
                "query($b: Boolean) { customers @skip(if: $b) { id } }",
                r#"Variable "$b" of type "Boolean" is passed to argument "if" of @skip, of type "Boolean!""#,
            ),
        ] {
            assert_eq!(misused(query), vec![expected.to_owned()], "{query}");
        }
    }
}
