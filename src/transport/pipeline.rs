//! The one path of a GraphQL operation, whichever transport carries it (HTTP, websockets,
//! SSE):
//!
//! 1. [`prepare`]: the document of a persisted query (`persisted`); the document parsed and
//!    within the limits that must hold before anything recurses on it (`parsed`, which
//!    keeps the documents apps send again and again, `limits`); the operation it runs
//!    (`document::operation`), whether it only introspects the schema, and the variables
//!    the operation requires;
//! 2. [`Prepared::execute`] (one result), [`Prepared::stream`] (a subscription's results) or
//!    [`Prepared::incremental`] (a query with `@defer`, in parts: `defer`, `incremental`):
//!    the schema runs it with data of its own (the viewer, fresh loaders);
//! 3. each result is shaped as the spec says (`shape`: null semantics, query order, codes)
//!    and bounded in size (`server.max_response_bytes`).
//!
//! A transport reads the request (`request`), decides who calls (its own way of carrying a
//! token) and what its protocol allows (no mutations over `GET`), calls these, and writes
//! [`Outcome`]s and [`TransportError`]s in its protocol.

use std::sync::Arc;

use async_graphql::parser::types::{ExecutableDocument, OperationDefinition, OperationType};
use async_graphql::{Value as ConstValue, Variables};
use futures::StreamExt;
use futures::stream::BoxStream;
use resolvers::{AppSchema, Batched, EventDeadline, RequestLoaders, Viewer};

use super::defer::{self, Deferred, Plan};
use super::error::TransportError;
use super::persisted::Persisted;
use super::request::GraphQlRequest;
use super::shape::{self, Outcome, Types};
use super::{AppState, document, incremental, live_query};

/// Most representations one `_entities` field takes (as `products(ids)` takes 100 ids).
const MAX_ENTITIES: usize = 100;

/// A request whose document parsed and is within the limits, ready to run.
pub(crate) struct Prepared {
    /// What async-graphql executes; it holds the parsed document.
    request: async_graphql::Request,
    /// The parsed document, to shape each result by.
    shaper: Shaper,
    /// What the operation is: a query, a mutation or a subscription.
    kind: OperationType,
    /// Whether it only reads the schema (see `document`): such documents run on the schema
    /// without the data depth limit.
    introspection: bool,
    /// Which transport carries it, for metrics.
    transport: &'static str,
    /// The operation's name as metrics label it (see `crate::metrics::operation_label`).
    label: String,
    /// A persisted query's hash and document, to register once it ran without a request
    /// error (so an invalid document is never stored).
    registration: Option<(String, String)>,
    /// A query marked `@live`: over websockets and SSE it runs again when what it read
    /// changes (`live_query`).
    live: bool,
    /// The fragments the operation defers (`@defer`), for the transports that deliver them
    /// later ([`Prepared::incremental`]).
    deferred: Vec<Deferred>,
}

/// Resolves a request's persisted query, bounds and parses its document, and picks its
/// operation; a document sent with its hash is registered once it is known to be good.
/// `transport` (`http`, `ws`, `sse`) labels its metrics; `client` is the client's
/// `apollographql-client-name` (trusted clients may send any document).
pub(crate) async fn prepare(
    state: &AppState,
    transport: &'static str,
    client: Option<&str>,
    mut raw: GraphQlRequest,
) -> Result<Prepared, TransportError> {
    match state.persisted.resolve(&mut raw, client).await? {
        Persisted::Register(hash) => {
            let document = raw.query.clone();
            let mut prepared = parse(state, transport, raw)?;
            if prepared.kind == OperationType::Subscription {
                // Validated when the stream starts, after this returns: registered now.
                state.persisted.register(hash, &document).await;
            } else {
                prepared.registration = Some((hash, document));
            }
            Ok(prepared)
        }
        Persisted::No | Persisted::Found => parse(state, transport, raw),
    }
}

/// Bounds and parses a request's document, and picks its operation.
fn parse(
    state: &AppState,
    transport: &'static str,
    raw: GraphQlRequest,
) -> Result<Prepared, TransportError> {
    if raw.query.trim().is_empty() {
        return Err(TransportError::BadRequest("`query` is missing".into()));
    }
    let document = state.parsed.parse(&raw.query)?;
    let mut request = raw.into_request();
    request.set_parsed_query(ExecutableDocument::clone(&document));
    let operation = document::operation(&document, request.operation_name.as_deref())?;
    if !state.introspection_enabled && document::reads_schema(&document, operation) {
        return Err(TransportError::IntrospectionDisabled);
    }
    if document::uses_federation(&document, operation) {
        if !state.federation_enabled {
            return Err(TransportError::FederationDisabled);
        }
        let representations =
            document::entity_representations(&document, operation, &request.variables);
        if representations.is_none_or(|n| n > MAX_ENTITIES) {
            return Err(TransportError::Limit {
                code: "MAX_ENTITIES_LIMIT",
                message: format!(
                    "`_entities` takes at most {MAX_ENTITIES} representations at a time"
                ),
            });
        }
    }
    let introspection = document::is_introspection_only(&document, operation);
    if introspection && document::introspection_too_nested(&document, operation) {
        return Err(TransportError::Limit {
            code: "MAX_DEPTH_LIMIT",
            message: "introspection nests `fields`, `inputFields`, `interfaces` or \
                      `possibleTypes` too deeply"
                .into(),
        });
    }
    check_variables(operation, &request.variables)?;
    document::check_conditions(&document, operation)?;
    let deferred = defer::find(&document, operation, &request.variables)?;
    let kind = operation.ty;
    let live = kind == OperationType::Query
        && operation
            .directives
            .iter()
            .any(|d| d.node.name.node == resolvers::directives::LIVE);
    // A request need not name the only operation of its document; the document does.
    let named = request.operation_name.clone().or_else(|| {
        let mut names = document.operations.iter().map(|(name, _)| name);
        match (names.next(), names.next()) {
            (Some(Some(name)), None) => Some(name.to_string()),
            _ => None,
        }
    });
    let label = crate::metrics::operation_label(named.as_deref());
    // In the request's span (`transport::request_span`), so in its log lines and its trace.
    // A websocket's span is its connection's, which runs many operations: only the transport.
    let span = tracing::Span::current();
    span.record("transport", transport);
    if transport != "ws" {
        span.record("operation", label.as_str());
    }
    Ok(Prepared {
        shaper: Shaper {
            operation: request.operation_name.clone(),
            document,
            max_response_bytes: state.max_response_bytes,
        },
        request,
        kind,
        introspection,
        transport,
        label,
        registration: None,
        live,
        deferred,
    })
}

/// The variables the operation requires are there and not `null` (the spec's
/// `CoerceVariableValues`: a request error otherwise). Their types are checked by
/// async-graphql's validation.
fn check_variables(
    operation: &OperationDefinition,
    variables: &Variables,
) -> Result<(), TransportError> {
    for definition in &operation.variable_definitions {
        let definition = &definition.node;
        let ty = &definition.var_type.node;
        if ty.nullable {
            continue;
        }
        let name = definition.name.node.as_str();
        let missing = match variables.get(name) {
            Some(ConstValue::Null) => true,
            Some(_) => false,
            None => definition.default_value.is_none(),
        };
        if missing {
            return Err(TransportError::BadVariables(format!(
                "variable `${name}` of type `{ty}` is required: give it a value in `variables`"
            )));
        }
    }
    Ok(())
}

impl Prepared {
    /// A query, a mutation or a subscription.
    pub(crate) fn kind(&self) -> OperationType {
        self.kind
    }

    /// The operation's name as metrics and logs label it.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// The operation's name, as the request gave it.
    pub(crate) fn name(&self) -> Option<&str> {
        self.shaper.operation.as_deref()
    }

    fn schema<'a>(&self, state: &'a AppState) -> &'a AppSchema {
        if self.introspection {
            &state.introspection_schema
        } else if self.kind == OperationType::Subscription {
            &state.subscription_schema
        } else {
            &state.schema
        }
    }

    /// Whether the operation is a query that defers fragments: a transport that can deliver
    /// results incrementally runs it with [`Prepared::incremental`]. (A mutation or a
    /// subscription with `@defer` runs as one whole result per event: a deferred part would
    /// run its mutation again.)
    pub(crate) fn defers(&self) -> bool {
        self.kind == OperationType::Query && !self.deferred.is_empty()
    }

    /// Runs a query with deferred fragments for `viewer` with the request's `loaders`, by
    /// `deadline`: its payloads, as they come (see `incremental`); a request error is the
    /// only item when the document does not validate.
    pub(crate) fn incremental(
        self,
        state: &AppState,
        viewer: Option<Viewer>,
        loaders: RequestLoaders,
        deadline: tokio::time::Instant,
    ) -> BoxStream<'static, Outcome> {
        let plan = match Plan::build(
            &self.shaper.document,
            self.shaper.operation.as_deref(),
            &self.deferred,
            &self.request.variables,
        ) {
            Ok(plan) => plan,
            Err(e) => {
                let errors = vec![e.to_server_error()];
                return futures::stream::once(async { Outcome::RequestError(errors) }).boxed();
            }
        };
        metrics::counter!("switchyard_deferred_operations_total", "transport" => self.transport)
            .increment(1);
        let run = incremental::Run {
            schema: self.schema(state).clone(),
            plan,
            deferred: self.deferred,
            document: self.shaper.document.clone(),
            query: self.request.query.clone(),
            operation: self.shaper.operation.clone(),
            variables: self.request.variables.clone(),
            viewer,
            loaders,
            deadline,
        };
        let mut payloads = incremental::stream(state, run);
        let Some((hash, document)) = self.registration else {
            return payloads;
        };
        // A persisted query is registered once its first payload shows it valid.
        let persisted = state.persisted.clone();
        futures::stream::once(async move {
            let first = payloads.next().await;
            if let Some(Outcome::Executed { .. }) = &first {
                persisted.register(hash, &document).await;
            }
            futures::stream::iter(first).chain(payloads)
        })
        .flatten()
        .boxed()
    }

    /// Runs a query or mutation for `viewer` (none: anonymous) with the request's `loaders`:
    /// one result.
    pub(crate) async fn execute(
        self,
        state: &AppState,
        viewer: Option<Viewer>,
        loaders: &RequestLoaders,
    ) -> Outcome {
        let schema = self.schema(state);
        let request = resolvers::request_data(self.request, loaders, viewer);
        let started = std::time::Instant::now();
        let mut response = Batched::new(schema.execute(request)).await;
        shape::mark_stale(&mut response, loaders.take_stale());
        let kind = match self.kind {
            OperationType::Mutation => "mutation",
            _ => "query",
        };
        metrics::histogram!(
            "switchyard_graphql_request_duration_seconds",
            "transport" => self.transport,
            "operation" => self.label,
            "type" => kind,
        )
        .record(started.elapsed().as_secs_f64());
        let outcome = self.shaper.shape(response, &state.types, true);
        if let (Some((hash, document)), Outcome::Executed { .. }) = (self.registration, &outcome) {
            state.persisted.register(hash, &document).await;
        }
        outcome
    }

    /// Runs any operation for `viewer`, with data of its own (fresh loaders, never shared
    /// with another operation): a subscription's results as they come (each event bounded
    /// by `server.request_timeout_ms`: a `TIMEOUT` error past it), a query's or mutation's
    /// one result (stopped past `server.request_timeout_ms`, as over HTTP), or the payloads
    /// of a query with deferred fragments ([`Prepared::incremental`]).
    pub(crate) fn stream(self, state: &AppState, viewer: Viewer) -> BoxStream<'static, Outcome> {
        if self.live {
            // The first run as it came (it registers a persisted query), later ones again.
            let template = self.again();
            let mut first = Some(self);
            let (run_state, run_viewer) = (state.clone(), viewer.clone());
            let run: live_query::Run = Box::new(move |loaders| {
                let prepared = first.take().unwrap_or_else(|| template.again());
                let (state, viewer, loaders) =
                    (run_state.clone(), run_viewer.clone(), loaders.clone());
                Box::pin(async move { prepared.once(&state, viewer, &loaders).await })
            });
            return live_query::stream(run, state.clone(), &viewer);
        }
        if self.defers() {
            let deadline = tokio::time::Instant::now() + state.request_timeout;
            let loaders = RequestLoaders::new(&state.ports);
            return self.incremental(state, Some(viewer), loaders, deadline);
        }
        if self.kind != OperationType::Subscription {
            let state = state.clone();
            return futures::stream::once(async move {
                let loaders = RequestLoaders::new(&state.ports);
                self.once(&state, viewer, &loaders).await
            })
            .boxed();
        }
        metrics::counter!("switchyard_subscriptions_total", "transport" => self.transport)
            .increment(1);
        let schema = self.schema(state).clone();
        let loaders = RequestLoaders::new(&state.ports);
        // Each event is bounded as a query is (see `event_deadline`).
        let request = resolvers::request_data(self.request, &loaders, Some(viewer))
            .data(EventDeadline::new(state.request_timeout));
        let shaper = self.shaper;
        let types = state.types.clone();
        let mut first = true;
        let active = ActiveSubscription::start(self.transport);
        Batched::new(schema.execute_stream(request))
            .map(move |response| {
                let _active = &active;
                let outcome = shaper.shape(response, &types, first);
                first = false;
                outcome
            })
            .boxed()
    }
}

impl Prepared {
    /// Runs a query or mutation for `viewer` with `loaders`: its one result, under the same
    /// deadline as over HTTP (a `TIMEOUT` error past it).
    pub(crate) async fn once(
        self,
        state: &AppState,
        viewer: Viewer,
        loaders: &RequestLoaders,
    ) -> Outcome {
        let deadline = tokio::time::Instant::now() + state.request_timeout;
        let label = self.label.clone();
        let run = self.execute(state, Some(viewer), loaders);
        match super::deadline::by_deadline(state, deadline, Some(&label), run).await {
            Ok(outcome) => outcome,
            Err(timeout) => Outcome::executed(
                &async_graphql::Response::from_errors(vec![timeout.to_server_error()]),
                state.max_response_bytes,
                Some(&label),
            ),
        }
    }

    /// The same operation, to run again (a live query's next run).
    pub(crate) fn again(&self) -> Self {
        let mut request = async_graphql::Request::new(self.request.query.clone())
            .variables(self.request.variables.clone());
        request.operation_name = self.request.operation_name.clone();
        request.extensions = self.request.extensions.clone();
        request.set_parsed_query(ExecutableDocument::clone(&self.shaper.document));
        Self {
            request,
            shaper: self.shaper.clone(),
            kind: self.kind,
            introspection: self.introspection,
            transport: self.transport,
            label: self.label.clone(),
            registration: None,
            live: self.live,
            deferred: self.deferred.clone(),
        }
    }
}

/// One subscription running, in `switchyard_subscriptions_active{transport}` while its
/// stream lives.
struct ActiveSubscription(&'static str);

impl ActiveSubscription {
    fn start(transport: &'static str) -> Self {
        metrics::gauge!("switchyard_subscriptions_active", "transport" => transport).increment(1);
        Self(transport)
    }
}

impl Drop for ActiveSubscription {
    fn drop(&mut self) {
        metrics::gauge!("switchyard_subscriptions_active", "transport" => self.0).decrement(1);
    }
}

/// What shapes each result of one operation: its document, which operation of it runs, and
/// how large a result may be.
#[derive(Clone)]
struct Shaper {
    document: Arc<ExecutableDocument>,
    operation: Option<String>,
    /// `server.max_response_bytes`.
    max_response_bytes: usize,
}

impl Shaper {
    fn shape(&self, response: async_graphql::Response, types: &Types, first: bool) -> Outcome {
        match document::operation(&self.document, self.operation.as_deref()) {
            Ok(operation) => {
                match shape::result(response, &self.document, operation, types, first) {
                    Ok(result) => Outcome::executed(
                        &result,
                        self.max_response_bytes,
                        self.operation.as_deref(),
                    ),
                    Err(errors) => Outcome::RequestError(errors),
                }
            }
            Err(e) => {
                // `prepare` found this operation in this same document.
                tracing::error!(error = %e, "the prepared operation is gone from its document");
                Outcome::RequestError(vec![TransportError::Internal.to_server_error()])
            }
        }
    }
}
