//! Startup: builds everything from the config and serves until shutdown.
//!
//! [`run`] is the seam `main`, the integration tests and the benchmarks share: they bind a
//! listener (tests use `127.0.0.1:0`), pass a config and a shutdown future, and talk to the
//! real server over HTTP.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;

use crate::auth::{AuthSettings, Authenticator};
use crate::config::Config;
use crate::events::EventBus;
use crate::transport::{self, AppState};
use resolvers::Ports;
use resolvers::cache::Cache;
use resolvers::events::EventHub;
use resolvers::notifications::{NotificationStore, Notify, WebPushKey};

/// Longest the server waits at shutdown for live connections to close.
const CONNECTION_DRAIN: Duration = Duration::from_secs(5);

/// The audience tokens must carry unless configured otherwise.
pub(crate) const DEFAULT_AUDIENCE: &str = "switchyard";

/// Serves Switchyard on `listener` until `shutdown` completes, then drains in-flight requests.
///
/// With no upstream configured, starts the embedded sandbox first and points every upstream
/// (and the token issuer) at it (`crate::embedded`); a build without the `sandbox` feature
/// fails then (see [`preflight`]).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    preflight(&config)?;
    #[cfg(feature = "sandbox")]
    if !config.has_upstreams() {
        let mut config = config;
        let sandbox = crate::embedded::start(&mut config, listener.local_addr()?).await?;
        let sign_in = crate::embedded::DevSignIn::of(&sandbox);
        let served = serve_with_dev_sign_in(listener, config, sign_in, shutdown).await;
        sandbox.shutdown().await;
        return served;
    }
    serve(listener, config, None, shutdown).await
}

/// Serves Switchyard with the demo sign-in of a sandbox running in this process, as the
/// embedded sandbox does: for tests and benchmarks that start the sandbox themselves (to read
/// its request counters, or to tune it) and wire `config` to it with
/// [`crate::embedded::sandbox_wiring`].
#[cfg(feature = "sandbox")]
pub async fn serve_with_dev_sign_in(
    listener: TcpListener,
    config: Config,
    sign_in: crate::embedded::DevSignIn,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve(listener, config, Some(sign_in.routes()?), shutdown).await
}

/// What [`run`] checks before it starts anything: the config is consistent, and in a build
/// without the `sandbox` feature it names the upstreams and the token issuer. `main` calls it
/// before binding, so a config that cannot start fails with its own message.
pub fn preflight(config: &Config) -> anyhow::Result<()> {
    config.validate()?;
    #[cfg(not(feature = "sandbox"))]
    if !config.has_upstreams() {
        let mut missing = vec![
            "[upstreams.backend]",
            "[upstreams.crm]",
            "[upstreams.process]",
            "[upstreams.carrier]",
        ];
        if config.auth.issuer.is_none() {
            missing.push("[auth] issuer");
        }
        let last = missing.pop().unwrap_or_default();
        anyhow::bail!(
            "no upstreams are configured, and this build has no embedded sandbox to stand in \
             for them (it was built without the `sandbox` feature): configure {} and {last} \
             in the config file (--config) or as SWITCHYARD_* variables",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Serves `config` (its upstreams configured) on `listener`, with `extra_routes` (the embedded
/// sandbox's demo sign-in) beside Switchyard's own, until `shutdown` completes.
pub(crate) async fn serve(
    listener: TcpListener,
    config: Config,
    extra_routes: Option<Router>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let addr = listener.local_addr()?;
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    crate::metrics::install();
    let cache = crate::cache::build(&config.cache).await?;
    let hub = EventHub::new(config.events.hub_capacity, cache.clone());
    let events = crate::events::start(&config.events, hub.clone(), shutdown_rx.clone()).await?;
    let (ports, upstream_health) = upstream_ports(&config, cache)?;
    let notifications =
        crate::notify::start(&config, &ports, events.bus.as_ref(), shutdown_rx.clone()).await?;
    let graph_data = GraphData {
        store: notifications.store.clone(),
        web_push_key: WebPushKey(notifications.web_push_key.clone()),
        notify: notifications.notify.clone(),
        sync: resolvers::sync::SyncSetup {
            log: events.log.clone(),
            key: sync_token_key(&config)?,
        },
    };
    let state = app_state(
        &config,
        ports,
        upstream_health,
        hub,
        events.bus.clone(),
        graph_data,
        shutdown_rx,
    )
    .await?;
    let open_connections = state.open_connections.clone();
    let mut app = transport::router(state, config.server.playground_enabled());
    if let Some(extra) = extra_routes {
        app = app.merge(extra);
    }
    let server = &config.server;
    tracing::info!(
        %addr,
        profile = ?server.profile,
        playground = server.playground_enabled(),
        introspection = server.introspection_enabled(),
        suggestions = server.suggestions_enabled(),
        csrf_prevention = server.csrf_prevention,
        trusted_documents_only = config
            .persisted_queries
            .trusted_only
            .unwrap_or(server.production()),
        "switchyard listening on http://{addr}/graphql"
    );
    let limits = crate::serve::ConnectionLimits {
        header_read_timeout: config.server.header_read_timeout,
        max_connections: config.server.max_connections,
    };
    let served = crate::serve::serve(listener, app, limits, async move {
        shutdown.await;
        // Tell long-lived connections (websockets, SSE) and the event reader to stop.
        let _ = shutdown_tx.send(true);
    })
    .await
    .context("serving HTTP");
    // axum's graceful shutdown does not wait for upgraded connections: give websockets and
    // SSE streams a moment to send their closing frames (1001 / `complete`).
    let drained = Instant::now() + CONNECTION_DRAIN;
    while open_connections.load(Ordering::Relaxed) > 0 && Instant::now() < drained {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    events.join().await;
    notifications.join().await;
    tracing::info!("switchyard stopped");
    served
}

/// What the schema needs besides the upstream ports and the hub.
struct GraphData {
    store: Arc<dyn NotificationStore>,
    web_push_key: WebPushKey,
    notify: Arc<dyn Notify>,
    /// Delta sync: the change log and the tokens' key.
    sync: resolvers::sync::SyncSetup,
}

/// The key sync tokens are signed with: `[sync] token_secret`, else a random one for this
/// process (its tokens then die with it, and other replicas refuse them).
fn sync_token_key(config: &Config) -> anyhow::Result<resolvers::sync::TokenKey> {
    if let Some(secret) = &config.sync.token_secret {
        return Ok(resolvers::sync::TokenKey::new(secret.expose().as_bytes()));
    }
    if config.server.production() {
        tracing::warn!(
            "sync.token_secret is not set: sync tokens are signed with a random key of this \
             process, refused by other replicas and after a restart (apps then take a snapshot)"
        );
    }
    let mut key = vec![0u8; 32];
    aws_lc_rs::rand::fill(&mut key)
        .map_err(|_| anyhow::anyhow!("no random bytes for the sync token key"))?;
    Ok(resolvers::sync::TokenKey::new(key))
}

/// The upstream adapters of the configured upstreams, reading through `cache`.
fn upstream_ports(
    config: &Config,
    cache: Arc<dyn Cache>,
) -> anyhow::Result<(Ports, crate::upstream::UpstreamHealth)> {
    let u = &config.upstreams;
    let (Some(backend), Some(crm), Some(process), Some(carrier)) =
        (&u.backend, &u.crm, &u.process, &u.carrier)
    else {
        anyhow::bail!("every upstream must be configured");
    };
    crate::upstream::ports(backend, crm, process, carrier, cache)
}

async fn app_state(
    config: &Config,
    ports: Ports,
    upstream_health: crate::upstream::UpstreamHealth,
    hub: EventHub,
    bus: Arc<dyn EventBus>,
    graph: GraphData,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<AppState> {
    let webhooks = Arc::new(crate::ingest::Webhooks::new(&config.webhooks, bus)?);
    let builder = || {
        let builder = resolvers::schema_builder()
            .data(ports.clone())
            .data(hub.clone())
            .data(graph.store.clone())
            .data(graph.web_push_key.clone())
            .data(graph.notify.clone())
            .data(config.idempotency.graph())
            .data(graph.sync.clone());
        let builder = if config.server.introspection_enabled() {
            builder
        } else {
            builder.disable_introspection()
        };
        if config.server.suggestions_enabled() {
            builder
        } else {
            builder.disable_suggestions()
        }
    };
    let schema = builder().finish();
    let introspection_schema = builder()
        .limit_depth(resolvers::MAX_INTROSPECTION_DEPTH)
        .limit_complexity(usize::MAX)
        .finish();
    let subscription_schema = builder().extension(transport::EventDeadlines).finish();
    let issuer = config
        .auth
        .issuer
        .as_ref()
        .context("auth.issuer is not set")?;
    let auth = Authenticator::new(AuthSettings {
        issuer: issuer.clone(),
        audience: config
            .auth
            .audience
            .clone()
            .unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned()),
        jwks_url: config.auth.jwks_url.clone(),
        leeway_secs: config.auth.leeway_secs.unwrap_or(30),
        jwks_refresh: config
            .auth
            .jwks_refresh_secs
            .map_or(crate::auth::JWKS_REFRESH_INTERVAL, Duration::from_secs),
        roles_claim: config
            .auth
            .roles_claim
            .clone()
            .unwrap_or_else(|| "roles".into()),
        customer_id_claim: config
            .auth
            .customer_id_claim
            .clone()
            .unwrap_or_else(|| "customer_id".into()),
    })?;
    let persisted = Arc::new(
        transport::PersistedQueries::build(&config.persisted_queries, config.server.production())
            .await
            .context("connecting the persisted queries' Redis")?,
    );
    let types = transport::Types::from_sdl(&schema.sdl()).context("reading the schema's types")?;
    Ok(AppState {
        schema,
        introspection_schema,
        subscription_schema,
        types: Arc::new(types),
        ports,
        auth,
        request_timeout: config.server.request_timeout,
        parsed: Default::default(),
        persisted,
        rate_limits: Arc::new(
            transport::RateLimits::build(&config.rate_limit)
                .await
                .context("connecting the rate limits' Redis")?,
        ),
        readiness: Arc::new(transport::Readiness::new(config, upstream_health)?),
        max_body_bytes: config.server.max_body_bytes,
        max_batch_size: config.server.max_batch_size,
        max_response_bytes: config.server.max_response_bytes,
        body_read_timeout: config.server.body_read_timeout,
        csrf_prevention: config.server.csrf_prevention,
        introspection_enabled: config.server.introspection_enabled(),
        federation_enabled: config.server.federation_enabled(),
        cors_allow_origins: config.server.cors_allow_origins.clone(),
        webhooks,
        subscriptions: config.subscriptions.clone(),
        views: Arc::new(transport::Views::new(config.subscriptions.send_buffer)),
        hub,
        open_connections: Default::default(),
        shutdown,
    })
}

/// The trusted documents' manifest (what `schema/persisted-query-manifest.json` holds).
pub fn persisted_query_manifest() -> String {
    transport::manifest_json()
}

/// The schema's SDL (what `schema/schema.graphql` holds).
pub fn schema_sdl() -> String {
    resolvers::sdl()
}
