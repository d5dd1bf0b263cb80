//! Startup: builds everything from the config and serves until shutdown.
//!
//! [`run`] is the seam `main`, the integration tests and the benchmarks share: they bind a
//! listener (tests use `127.0.0.1:0`), pass a config and a shutdown future, and talk to the
//! real server over HTTP.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use anyhow::Context;
use tokio::net::TcpListener;
use url::Url;

use crate::auth::{AuthSettings, Authenticator};
use crate::config::{
    AuthConfig, BackendConfig, CallPolicy, CarrierConfig, Config, CrmConfig, ProcessConfig, Secret,
    UpstreamsConfig, WebhooksConfig,
};
use crate::transport::{self, AppState};
use resolvers::cache::Cache;
use resolvers::events::{EventBus, EventHub};
use sandbox::{Sandbox, SandboxConfig, SandboxWebhooks};

/// Longest the server waits at shutdown for live connections to close.
const CONNECTION_DRAIN: Duration = Duration::from_secs(5);

/// The audience tokens must carry unless configured otherwise.
pub const DEFAULT_AUDIENCE: &str = "switchyard";

/// Serves Switchyard on `listener` until `shutdown` completes, then drains in-flight requests.
///
/// With no upstream configured, starts the embedded sandbox first and points every upstream
/// (and the token issuer) at it.
pub async fn run(
    listener: TcpListener,
    mut config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let sandbox = if config.uses_sandbox() {
        let mut sandbox_config = config.sandbox.clone();
        connect_sandbox_webhooks(&mut sandbox_config, &mut config.webhooks, addr);
        let sandbox = Sandbox::start(sandbox_config)
            .await
            .context("starting the embedded sandbox")?;
        let (upstreams, auth) = sandbox_wiring(&sandbox)?;
        config.upstreams = upstreams;
        config.auth = AuthConfig {
            issuer: auth.issuer,
            audience: config.auth.audience.clone().or(auth.audience),
            dev_issuer: auth.dev_issuer,
            ..config.auth
        };
        tracing::info!(
            backend = %sandbox.urls().backend,
            crm = %sandbox.urls().crm,
            process = %sandbox.urls().process,
            carrier = %sandbox.urls().carrier,
            oidc = %sandbox.urls().oidc,
            "embedded sandbox started"
        );
        Some(sandbox)
    } else {
        None
    };
    config.validate()?;
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let cache = crate::cache::build(&config.cache).await?;
    let hub = EventHub::new(config.events.hub_capacity, cache.clone());
    let events = crate::events::start(&config.events, hub.clone(), shutdown_rx.clone()).await?;
    let state = app_state(&config, cache, hub, events.bus.clone(), shutdown_rx)?;
    let open_connections = state.open_connections.clone();
    let app = transport::router(
        state,
        config.server.max_body_bytes,
        config.server.playground,
    );
    tracing::info!(
        %addr,
        playground = config.server.playground,
        "switchyard listening on http://{addr}/graphql"
    );
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
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
    if let Some(sandbox) = sandbox {
        sandbox.shutdown().await;
    }
    tracing::info!("switchyard stopped");
    served
}

/// Points a sandbox's webhooks at the Switchyard listening on `addr` (unless the sandbox
/// config names a target already), and has Switchyard verify them with the secrets the
/// sandbox signs with (unless configured).
pub fn connect_sandbox_webhooks(
    sandbox: &mut SandboxConfig,
    webhooks: &mut WebhooksConfig,
    addr: SocketAddr,
) {
    let hooks = sandbox.webhooks.get_or_insert_with(|| {
        let host = if addr.ip().is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            addr.ip()
        };
        SandboxWebhooks::dev(format!(
            "http://{}/webhooks",
            SocketAddr::new(host, addr.port())
        ))
    });
    let secret = |s: &String| Secret::new(s.clone());
    webhooks
        .backend_secret
        .get_or_insert_with(|| secret(&hooks.backend_secret));
    webhooks
        .crm_secret
        .get_or_insert_with(|| secret(&hooks.crm_secret));
    webhooks
        .process_secret
        .get_or_insert_with(|| secret(&hooks.process_secret));
    webhooks
        .carrier_secret
        .get_or_insert_with(|| secret(&hooks.carrier_secret));
}

fn app_state(
    config: &Config,
    cache: Arc<dyn Cache>,
    hub: EventHub,
    bus: Arc<dyn EventBus>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<AppState> {
    let u = &config.upstreams;
    let (Some(backend), Some(crm), Some(process), Some(carrier)) =
        (&u.backend, &u.crm, &u.process, &u.carrier)
    else {
        anyhow::bail!("every upstream must be configured");
    };
    let ports = crate::upstream::ports(backend, crm, process, carrier, cache)?;
    let webhooks = Arc::new(crate::ingest::Webhooks::new(&config.webhooks, bus)?);
    let builder = || {
        let builder = resolvers::schema_builder()
            .data(ports.clone())
            .data(hub.clone());
        if config.server.introspection {
            builder
        } else {
            builder.disable_introspection()
        }
    };
    let schema = builder().finish();
    let introspection_schema = builder()
        .limit_depth(resolvers::MAX_INTROSPECTION_DEPTH)
        .limit_complexity(usize::MAX)
        .finish();
    let issuer = config
        .auth
        .issuer
        .as_ref()
        .context("auth.issuer is not set")?;
    let auth = Authenticator::new(AuthSettings {
        issuer: issuer.as_str().trim_end_matches('/').to_owned(),
        audience: config
            .auth
            .audience
            .clone()
            .unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned()),
        jwks_url: config.auth.jwks_url.clone(),
        leeway_secs: config.auth.leeway_secs.unwrap_or(30),
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
    Ok(AppState {
        schema,
        introspection_schema,
        ports,
        auth,
        request_timeout: config.server.request_timeout,
        dev_issuer: config
            .auth
            .dev_issuer
            .as_ref()
            .map(|u| u.as_str().trim_end_matches('/').to_owned()),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        hub,
        webhooks,
        subscriptions: config.subscriptions.clone(),
        open_connections: Default::default(),
        shutdown,
    })
}

/// The upstream and auth config that points at a running sandbox, exactly as an operator
/// would write it for real systems.
pub fn sandbox_wiring(sandbox: &Sandbox) -> anyhow::Result<(UpstreamsConfig, AuthConfig)> {
    let urls = sandbox.urls();
    let creds = sandbox.config();
    let url = |u: &dyn std::fmt::Display| -> anyhow::Result<Url> {
        Url::parse(&u.to_string()).context("sandbox URL")
    };
    let upstreams = UpstreamsConfig {
        backend: Some(BackendConfig {
            url: url(&urls.backend)?,
            token: Secret::new(creds.backend_token.clone()),
            policy: CallPolicy::default(),
        }),
        crm: Some(CrmConfig {
            login_url: url(&urls.crm)?,
            client_id: creds.crm_client_id.clone(),
            client_secret: Secret::new(creds.crm_client_secret.clone()),
            api_version: "v60.0".to_owned(),
            policy: CallPolicy::default(),
        }),
        process: Some(ProcessConfig {
            url: url(&urls.process)?,
            user: creds.kie_user.clone(),
            password: Secret::new(creds.kie_password.clone()),
            container: "returns".to_owned(),
            return_process: "returns.ReturnRequest".to_owned(),
            policy: CallPolicy::default(),
        }),
        carrier: Some(CarrierConfig {
            url: url(&urls.carrier)?,
            api_key: Secret::new(creds.carrier_api_key.clone()),
            max_retry_after_secs: 2,
            policy: CallPolicy {
                concurrency: 8,
                ..CallPolicy::default()
            },
        }),
    };
    let auth = AuthConfig {
        issuer: Some(url(&urls.oidc)?),
        audience: Some(creds.oidc_audience.clone()),
        dev_issuer: Some(url(&urls.oidc)?),
        ..AuthConfig::default()
    };
    Ok((upstreams, auth))
}

/// The schema's SDL (what `schema/schema.graphql` holds).
pub fn schema_sdl() -> String {
    resolvers::sdl()
}

/// What `switchyard sandbox` prints: the URLs, and the config a replica needs to use them.
pub fn sandbox_summary(sandbox: &Sandbox) -> anyhow::Result<String> {
    let (u, auth) = sandbox_wiring(sandbox)?;
    let (Some(b), Some(c), Some(p), Some(k)) = (u.backend, u.crm, u.process, u.carrier) else {
        anyhow::bail!("sandbox wiring is incomplete");
    };
    let issuer = auth.issuer.map(|i| i.to_string()).unwrap_or_default();
    let webhooks = match &sandbox.config().webhooks {
        Some(w) => format!(
            "\n# The sandbox posts its webhooks to {}/<source>, signed with:\n\
             [webhooks]\nbackend_secret = \"{}\"\ncrm_secret = \"{}\"\n\
             process_secret = \"{}\"\ncarrier_secret = \"{}\"\n",
            w.url, w.backend_secret, w.crm_secret, w.process_secret, w.carrier_secret
        ),
        None => "\n# No webhooks are posted: set sandbox.webhooks.url to have live updates.\n"
            .to_owned(),
    };
    Ok(format!(
        "# Switchyard sandbox upstreams are running. Point replicas at them with this config\n\
         # (or the matching SWITCHYARD_* variables); these are dev credentials.\n\
         [auth]\nissuer = \"{issuer}\"\naudience = \"{aud}\"\ndev_issuer = \"{issuer}\"\n\n\
         [upstreams.backend]\nurl = \"{}\"\ntoken = \"{}\"\n\n\
         [upstreams.crm]\nlogin_url = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\n\n\
         [upstreams.process]\nurl = \"{}\"\nuser = \"{}\"\npassword = \"{}\"\n\n\
         [upstreams.carrier]\nurl = \"{}\"\napi_key = \"{}\"\n{webhooks}",
        b.url,
        b.token.expose(),
        c.login_url,
        c.client_id,
        c.client_secret.expose(),
        p.url,
        p.user,
        p.password.expose(),
        k.url,
        k.api_key.expose(),
        aud = auth.audience.unwrap_or_default(),
    ))
}
