//! The graph of Switchyard: one GraphQL schema over the company's upstreams.
//!
//! This crate knows nothing of HTTP servers: the server crate builds the schema with
//! [`schema_builder`], gives it [`Ports`] implemented by its upstream adapters, and puts fresh
//! loaders and the caller's [`Viewer`] on every request ([`request_data`]). What the server
//! uses is `pub`; everything else is `pub(crate)`.
//!
//! # Layout
//! Public, for the server:
//! - [`ids`]: id types, validated once at the edge.
//! - [`records`]: the plain data the ports return.
//! - [`ports`]: traits for each upstream (backend, CRM, process server, carrier), and
//!   [`ports::Source`], which upstream.
//! - [`cache`]: the cross-request entity cache port, its keys and TTLs.
//! - [`deadline`]: the request's deadline, which every upstream call made for it keeps.
//! - [`directives`]: `@defer` and `@live`, declared for validation, introspection and the SDL.
//! - [`events`]: domain events (and the cache entries each makes stale) and this replica's hub,
//!   which hands each event only to the subscriptions it concerns.
//! - [`queue`]: the bounded queue a producer never waits on (the hub's, the shared views').
//! - [`error`]: errors, and the one place they become GraphQL errors with `extensions.code`.
//! - [`idempotency`]: mutations replayed with a key seen before answer the first result
//!   (the transport's `Idempotency-Key` header, the window and bounds are the server's).
//! - [`notifications`]: devices, preferences, the notification centre (records and the store
//!   port), and the rules that turn events into notifications.
//! - [`sync`]: delta sync for apps that were offline: the change log port
//!   ([`sync::ChangeLog`]), signed tokens, snapshots and deltas of a customer's working set.
//!
//! Inside the crate:
//! - `loaders`: per-request dataloaders, one per thing loaded.
//! - `types`: the GraphQL object types.
//! - `query`, `mutation`, `subscription`: the roots ([`EventDeadline`], the bound on
//!   resolving one event of a subscription, is the server's to set).
//! - `federation`: `_entities` items that fail alone.
//! - `serial`: mutations run one after another and stop at the first that fails.
//! - `viewer`: who is calling ([`Viewer`]), and the one authorization rule.

pub(crate) mod batch;
pub mod cache;
pub mod deadline;
pub mod directives;
pub mod error;
pub mod events;
pub(crate) mod federation;
pub mod idempotency;
pub mod ids;
pub(crate) mod loaders;
pub(crate) mod mutation;
pub mod notifications;
pub mod ports;
pub(crate) mod query;
pub mod queue;
pub mod records;
pub(crate) mod serial;
pub(crate) mod subscription;
pub mod sync;
pub(crate) mod types;
pub(crate) mod viewer;

use async_graphql::{Schema, SchemaBuilder};

pub use batch::Batched;
pub use ports::Ports;
pub use subscription::{EventDeadline, SHAREABLE_SUBSCRIPTIONS, lagged};
pub use viewer::{Role, Viewer};

/// The schema type.
pub type AppSchema = Schema<
    federation::Entities<query::QueryRoot>,
    serial::Serial<mutation::MutationRoot>,
    subscription::SubscriptionRoot,
>;

/// The schema builder type.
pub type AppSchemaBuilder = SchemaBuilder<
    federation::Entities<query::QueryRoot>,
    serial::Serial<mutation::MutationRoot>,
    subscription::SubscriptionRoot,
>;

/// Deepest query accepted (the home screen query is 6 levels deep).
pub(crate) const MAX_DEPTH: usize = 12;
/// Highest cost accepted. Each field costs 1, and a page's selection costs as many times as
/// the page holds (`orders(first: 50) { lines { product { name } } }` costs 50 times its
/// items), as does `products(ids)` per id: the cost follows what the document makes the
/// upstreams fetch. The home screen costs 185 (with 50 orders about 1,700), an agent's
/// search 100; 50 customers with 50 orders and their parcels each, 15,100.
pub(crate) const MAX_COMPLEXITY: usize = 2_500;

/// What a page of `first` items with this selection costs (`first` is checked to be 1 to 50
/// by the field; a bad value costs as one item and is refused when the field runs).
pub(crate) fn page_cost(first: i32, child_complexity: usize) -> usize {
    usize::try_from(first)
        .unwrap_or(1)
        .clamp(1, 50)
        .saturating_mul(child_complexity)
}
/// Deepest introspection-only document accepted: the standard introspection query nests
/// `ofType` about 10 levels; the server bounds such documents by their list nesting instead.
pub const MAX_INTROSPECTION_DEPTH: usize = 32;

/// The schema builder with the roots, limits and federation set up; the server adds the
/// [`Ports`] and [`events::EventHub`] (`.data(..)`) and its own settings before `finish()`.
pub fn schema_builder() -> AppSchemaBuilder {
    Schema::build(
        federation::Entities(query::QueryRoot),
        serial::Serial(mutation::MutationRoot),
        subscription::SubscriptionRoot,
    )
    .enable_federation()
    .enable_subscription_in_federation()
    .limit_depth(MAX_DEPTH)
    .limit_complexity(MAX_COMPLEXITY)
    .directive(directives::DeferDirective)
    .directive(directives::LiveDirective)
}

/// The loaders of one client request: fresh for each operation, or shared by the operations
/// of one batch (same viewer, same request), so that they batch their upstream reads together.
#[derive(Clone)]
pub struct RequestLoaders(std::sync::Arc<loaders::LoaderScope>);

impl RequestLoaders {
    /// Fresh loaders over `ports`.
    pub fn new(ports: &Ports) -> Self {
        Self(std::sync::Arc::new(loaders::LoaderScope::new(ports)))
    }

    /// The entities the operation read, as events name them: a live query runs again when
    /// an event has one of these keys.
    pub fn read(&self) -> std::collections::HashSet<events::Key> {
        self.0.current().read()
    }

    /// The entities served from stale copies since the last call, because their upstream
    /// failed (see [`cache`]): for the response's `extensions.stale`.
    pub fn take_stale(&self) -> Vec<cache::StaleRead> {
        self.0.take_stale()
    }
}

/// Puts what one operation needs on it: the request's loaders, the viewer when signed in,
/// and a note of the `_entities` items whose errors were reported.
pub fn request_data(
    request: async_graphql::Request,
    loaders: &RequestLoaders,
    viewer: Option<Viewer>,
) -> async_graphql::Request {
    let request = request
        .data(loaders.0.clone())
        .data(federation::ReportedEntities::default())
        .data(serial::MutationRun::default());
    match viewer {
        Some(v) => request.data(v),
        None => request,
    }
}

/// The schema's SDL as `schema/schema.graphql` holds it: the Federation v2 subgraph SDL.
pub fn sdl() -> String {
    schema_builder()
        .finish()
        .sdl_with_options(async_graphql::SDLExportOptions::new().federation())
}
