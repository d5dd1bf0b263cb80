//! The embedded sandbox: everything of the server that exists only for it (the `sandbox`
//! feature, on by default).
//!
//! With no upstream configured, [`crate::run`] comes here: it starts the sandbox (the `sandbox`
//! crate) in this process, has it post its webhooks to this Switchyard with secrets both sides
//! know ([`connect_sandbox_webhooks`]), points the upstreams and the token issuer at it
//! ([`sandbox_wiring`]), and serves with the demo sign-in (`GET /dev/users`, `POST /dev/token`,
//! see [`DevSignIn`]) that the playground uses.
//!
//! Nothing in a config file or the environment turns the demo sign-in on: only a Switchyard
//! that runs a sandbox itself serves it. `switchyard sandbox` runs the sandbox alone and prints
//! [`sandbox_summary`], the config replicas need to use it like real systems: their tokens come
//! from the (sandbox's) identity provider, as in production.

mod dev_sign_in;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use anyhow::Context as _;
use sandbox::{Sandbox, SandboxConfig, SandboxWebhooks};
use tokio::net::TcpListener;
use url::Url;

use crate::config::{
    AuthConfig, BackendConfig, CallPolicy, CarrierConfig, Config, CrmConfig, ProcessConfig, Secret,
    UpstreamsConfig, WebhooksConfig,
};

pub use dev_sign_in::DevSignIn;

/// What [`crate::run`] does when no upstream is configured: starts the sandbox, wires `config`
/// to it and serves with its demo sign-in until `shutdown` completes; then stops the sandbox.
pub(crate) async fn run(
    listener: TcpListener,
    mut config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
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
    let served = serve(listener, config, DevSignIn::of(&sandbox), shutdown).await;
    sandbox.shutdown().await;
    served
}

/// Serves Switchyard with the demo sign-in of a sandbox running in this process, as the
/// embedded sandbox does: for tests and benchmarks that start the sandbox themselves (to read
/// its request counters, or to tune it) and wire `config` to it with [`sandbox_wiring`].
pub async fn serve(
    listener: TcpListener,
    config: Config,
    sign_in: DevSignIn,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    crate::app::serve(listener, config, Some(sign_in.routes()?), shutdown).await
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
        ..AuthConfig::default()
    };
    Ok((upstreams, auth))
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
         [auth]\nissuer = \"{issuer}\"\naudience = \"{aud}\"\n\n\
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
