//! The `@live` directive, declared so that validation, introspection and the SDL know it:
//!
//! ```graphql
//! directive @live on QUERY
//! ```
//!
//! Execution ignores a directive on an operation, so a live query runs as the same query:
//! over HTTP, one result. Running it again when what it read changes is the server's
//! transport's (`src/transport/live_query.rs`, over websockets and SSE), which learns what
//! a run read from its loaders ([`crate::RequestLoaders::read`]).

use std::borrow::Cow;

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::Directive;
use async_graphql::registry::{__DirectiveLocation, MetaDirective, Registry};
use async_graphql::{ContextDirective, CustomDirective, CustomDirectiveFactory, ServerError};

/// The directive's name.
pub const LIVE: &str = "live";

/// Declares `@live` on the schema (see the module docs).
pub(crate) struct LiveDirective;

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
        // Only called for a directive on a field, which validation refuses for `@live`.
        Err(ServerError::new(
            "@live applies to query operations only",
            None,
        ))
    }
}
