//! The directives Switchyard adds to the schema, declared so that validation,
//! introspection and the SDL know them:
//!
//! ```graphql
//! directive @defer(label: String, if: Boolean! = true) on FRAGMENT_SPREAD | INLINE_FRAGMENT
//! directive @live on QUERY
//! ```
//!
//! async-graphql 7 lets a schema declare a directive of its own
//! ([`async_graphql::CustomDirectiveFactory`]), which its validation then checks (known
//! directive, allowed location, argument names and types) and its introspection and SDL
//! show. Its execution ignores a directive on a fragment (other than `@skip` and `@include`)
//! or on an operation, so a document with these runs as the same document without them:
//! one whole result. What they mean is the server's transport's:
//!
//! - `@defer` (async-graphql 7 has no `@defer` execution: it was removed): delivering the
//!   deferred fragments later (`src/transport/defer.rs` plans the documents,
//!   `incremental.rs` runs them, `multipart.rs` writes them over HTTP).
//! - `@live`: running the query again when what it read changes
//!   (`src/transport/live_query.rs`, over websockets and SSE), which learns what a run read
//!   from its loaders ([`crate::RequestLoaders::read`]).

use std::borrow::Cow;

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::Directive;
use async_graphql::registry::{
    __DirectiveLocation, Deprecation, MetaDirective, MetaInputValue, Registry,
};
use async_graphql::{ContextDirective, CustomDirective, CustomDirectiveFactory, ServerError};

/// `@defer`'s name.
pub const DEFER: &str = "defer";

/// `@live`'s name.
pub const LIVE: &str = "live";

/// Declares `@defer` on the schema (see the module docs).
pub(crate) struct DeferDirective;

/// Declares `@live` on the schema (see the module docs).
pub(crate) struct LiveDirective;

impl CustomDirectiveFactory for DeferDirective {
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(DEFER)
    }

    fn register(&self, registry: &mut Registry) {
        let argument =
            |name: &str, description: &str, ty: &str, default: Option<&str>| MetaInputValue {
                name: name.to_owned(),
                description: Some(description.to_owned()),
                ty: ty.to_owned(),
                deprecation: Deprecation::NoDeprecated,
                default_value: default.map(str::to_owned),
                visible: None,
                inaccessible: false,
                tags: Vec::new(),
                is_secret: false,
                directive_invocations: Vec::new(),
            };
        let mut args = IndexMap::new();
        args.insert(
            "label".to_owned(),
            argument(
                "label",
                "Names the deferred part: echoed in each of its incremental results.",
                "String",
                None,
            ),
        );
        args.insert(
            "if".to_owned(),
            argument(
                "if",
                "Deferred when true; when false the fragment comes with the first result.",
                "Boolean!",
                Some("true"),
            ),
        );
        registry.add_directive(MetaDirective {
            name: DEFER.to_owned(),
            description: Some(
                "Delivers the fragment after the rest of the result, in an incremental \
                 result of its own (`multipart/mixed; deferSpec=20220824` over HTTP, \
                 several `next` messages over websockets and SSE). A client that does \
                 not accept incremental delivery gets the whole result at once."
                    .to_owned(),
            ),
            locations: vec![
                __DirectiveLocation::FRAGMENT_SPREAD,
                __DirectiveLocation::INLINE_FRAGMENT,
            ],
            args,
            is_repeatable: false,
            visible: None,
            composable: None,
        });
    }

    fn create(
        &self,
        _ctx: &ContextDirective<'_>,
        _directive: &Directive,
    ) -> Result<Box<dyn CustomDirective>, ServerError> {
        Err(not_on_a_field(DEFER))
    }
}

impl CustomDirectiveFactory for LiveDirective {
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(LIVE)
    }

    fn register(&self, registry: &mut Registry) {
        registry.add_directive(MetaDirective {
            name: LIVE.to_owned(),
            description: Some(
                "Keeps the query's result true: over websockets and SSE, a new result \
                 whenever an event changes an entity the last one showed (only when it \
                 differs). Over HTTP, one result."
                    .to_owned(),
            ),
            locations: vec![__DirectiveLocation::QUERY],
            args: IndexMap::new(),
            is_repeatable: false,
            visible: None,
            composable: None,
        });
    }

    fn create(
        &self,
        _ctx: &ContextDirective<'_>,
        _directive: &Directive,
    ) -> Result<Box<dyn CustomDirective>, ServerError> {
        Err(not_on_a_field(LIVE))
    }
}

/// `create` is only called for a directive on a field, which validation refuses for both.
fn not_on_a_field(name: &str) -> ServerError {
    ServerError::new(format!("@{name} does not apply to fields"), None)
}
