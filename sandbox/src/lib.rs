//! The sandbox: the company's upstream systems and the push providers as real servers on local
//! ports, seeded with deterministic demo data. Switchyard embeds it (its default `sandbox` feature) for `cargo
//! run`, the tests and the benchmarks, and runs it alone as `switchyard sandbox`.
//!
//! Each upstream speaks the wire contract of `docs/upstreams.md` (the real system's API shape),
//! so Switchyard's adapters cannot tell the sandbox from the real thing. [`Sandbox::start`] binds
//! the servers (port 0 each, or [`SandboxConfig::ports`] for the standalone
//! `switchyard sandbox` mode), and [`Sandbox::urls`] says where they are. The push providers
//! (FCM, APNs, Web Push, an SMTP sink) record what they accept ([`Sandbox::pushes`]), and the
//! credentials Switchyard needs for them are in [`SandboxPush::credentials`].
//!
//! This crate knows nothing of the server: it talks to Switchyard only over HTTP, like the
//! real systems. Where both sides must agree without an HTTP answer to check (the webhook
//! signature), the contract is written down on each side and each side's tests pin the same
//! values.
//!
//! Layout:
//! - `world`: the one [`World`](world::World) every server reads and writes, its mutations, and
//!   the [`SandboxChange`] events they announce.
//! - `data`: the deterministic seed: 1,000 customers, 500 products, 20,000 orders, parcels,
//!   1,500 CRM cases, 300 return processes; `cust-0001` (Ada Lovelace) is hand-written.
//! - `backend`: the company's own customer / order / product microservices (REST/JSON).
//! - `crm`: the CRM, Salesforce REST shaped (OAuth token, SOQL, composite retrieve, create).
//! - `soql`: the SOQL subset the CRM parses, with its sObject schema.
//! - `process`: the process server, jBPM KIE Server REST shaped (return requests, human tasks).
//! - `carrier`: the parcel carrier's tracking API (API key, token-bucket rate limit).
//! - `oidc`: a dev OpenID issuer that signs ES256 tokens for demo users.
//! - `push`: the push providers' stand-ins: FCM HTTP v1 (OAuth2 JWT grant, `messages:send`),
//!   APNs (HTTP/2 over TLS with the sandbox's own CA, ES256 provider tokens), a Web Push service
//!   (VAPID, aes128gcm decrypted with the subscription's key), an SMTP sink; `GET
//!   /_sandbox/push` on the FCM server lists what they accepted.
//! - `faults`: request counting, latency and fault injection in front of every server, and the
//!   `/_sandbox/requests` control routes.
//! - `simulator`: moves the world on its own every [`SandboxConfig::simulator_interval_ms`]
//!   (orders ship, parcels are scanned, agents answer cases and decide returns).
//! - `webhooks`: posts every change, signed (HMAC-SHA256 over `<timestamp>.<body>`), to
//!   [`SandboxConfig::webhooks`] in the shape of the upstream that owns it, retrying like a
//!   real sender.

mod backend;
mod carrier;
mod crm;
mod data;
mod faults;
mod oidc;
mod process;
mod push;
mod simulator;
mod soql;
mod webhooks;
mod world;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::Router;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

pub use push::webpush::WebPushKeys;
pub use push::{
    ApnsEnvironment, ApnsReceived, DEV_VAPID_PRIVATE_KEY, DEV_VAPID_PUBLIC_KEY, EmailReceived,
    FcmReceived, PushCredentials, ReceivedPush, SandboxPush, WebPushReceived, WebPushSubscription,
};
pub use webhooks::{
    DEV_BACKEND_WEBHOOK_SECRET, DEV_CARRIER_WEBHOOK_SECRET, DEV_CRM_WEBHOOK_SECRET,
    DEV_PROCESS_WEBHOOK_SECRET, SandboxWebhooks,
};
pub use world::{SandboxChange, TaskEvent};

use faults::{Faults, RequestCounter};
use world::SharedWorld;

/// How long [`Sandbox::shutdown`] waits for in-flight requests before it cuts them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Latency and faults of one upstream. Rates are probabilities per request, from 0 to 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamKnobs {
    /// Added to every answer, in milliseconds.
    pub latency_ms: u64,
    /// Share of requests answered 503 in the upstream's error shape.
    pub error_rate: f64,
    /// Share of requests that stall 120 s before they are answered (the client times out).
    pub timeout_rate: f64,
    /// Share of requests answered 200 with the JSON body cut in half.
    pub malformed_rate: f64,
}

impl UpstreamKnobs {
    /// Answers a share `error_rate` of requests with 503, and nothing else.
    pub fn failing(error_rate: f64) -> Self {
        Self {
            error_rate,
            ..Self::default()
        }
    }

    /// Adds `latency_ms` to every answer, and nothing else.
    pub fn slow(latency_ms: u64) -> Self {
        Self {
            latency_ms,
            ..Self::default()
        }
    }

    pub(crate) fn validate(&self, upstream: Upstream) -> anyhow::Result<()> {
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("timeout_rate", self.timeout_rate),
            ("malformed_rate", self.malformed_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                bail!(
                    "sandbox.{}.{name} must be between 0 and 1, got {rate}",
                    upstream.name()
                );
            }
        }
        Ok(())
    }
}

/// Fixed ports for the standalone sandbox; 0 picks a free port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxPorts {
    /// Port of the backend microservices.
    pub backend: u16,
    /// Port of the CRM.
    pub crm: u16,
    /// Port of the process server.
    pub process: u16,
    /// Port of the carrier.
    pub carrier: u16,
    /// Port of the dev OIDC issuer.
    pub oidc: u16,
    /// Port of FCM (its token endpoint, `messages:send`, and `/_sandbox/push`).
    pub fcm: u16,
    /// Port of APNs' production environment (HTTPS).
    pub apns: u16,
    /// Port of APNs' development environment (HTTPS).
    pub apns_development: u16,
    /// Port of the Web Push service.
    pub webpush: u16,
    /// Port of the SMTP sink.
    pub smtp: u16,
}

/// Configuration of the sandbox. Every field has a default; the credentials are fixed,
/// documented dev values, not secrets.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Seed of the demo data and of the fault dice (default 42).
    pub seed: u64,
    /// Latency and faults of the backend microservices.
    pub backend: UpstreamKnobs,
    /// Latency and faults of the CRM.
    pub crm: UpstreamKnobs,
    /// Latency and faults of the process server.
    pub process: UpstreamKnobs,
    /// Latency and faults of the carrier.
    pub carrier: UpstreamKnobs,
    /// Latency and faults of the dev OIDC issuer.
    pub oidc: UpstreamKnobs,
    /// Latency and faults of FCM.
    pub fcm: UpstreamKnobs,
    /// Latency and faults of APNs (both environments).
    pub apns: UpstreamKnobs,
    /// Latency and faults of the Web Push service.
    pub webpush: UpstreamKnobs,
    /// Latency and faults of the SMTP sink (on its greeting; see `push::smtp`).
    pub smtp: UpstreamKnobs,
    /// Lifetime of an FCM access token in seconds (default 3600, as Google's).
    pub fcm_token_ttl_secs: u64,
    /// Lifetime of a CRM access token in seconds (default 3600; 0 expires tokens at once).
    pub crm_token_ttl_secs: u64,
    /// Records per SOQL answer before `nextRecordsUrl` (default 2000, like Salesforce).
    pub crm_batch_size: usize,
    /// CRM API calls allowed per UTC day before 403 `REQUEST_LIMIT_EXCEEDED` (default 1,000,000).
    pub crm_daily_api_limit: u64,
    /// Carrier requests per second (a token bucket holding one second's worth; default 200;
    /// 0 means unlimited).
    pub carrier_rate_per_sec: u32,
    /// Address the servers bind (default 127.0.0.1).
    pub bind: IpAddr,
    /// Fixed ports (the standalone mode); `None` picks a free port for each server.
    pub ports: Option<SandboxPorts>,
    /// Bearer token of the backend microservices (default `sandbox-backend-token`).
    pub backend_token: String,
    /// OAuth client id of the CRM's connected app (default `sandbox-crm-client`).
    pub crm_client_id: String,
    /// OAuth client secret of the CRM's connected app (default `sandbox-crm-secret`).
    pub crm_client_secret: String,
    /// Basic-auth user of the KIE server (default `kieserver`).
    pub kie_user: String,
    /// Basic-auth password of the KIE server (default `kieserver1!`).
    pub kie_password: String,
    /// The carrier's API key (default `sandbox-carrier-key`).
    pub carrier_api_key: String,
    /// `aud` of the tokens the dev OIDC issuer signs (default `switchyard`).
    pub oidc_audience: String,
    /// Milliseconds between two steps of the simulator that moves the demo on its own
    /// (default 4000; 0 turns it off: tests want a quiet world).
    pub simulator_interval_ms: u64,
    /// Where to post signed webhooks for every change (default: none are posted).
    pub webhooks: Option<SandboxWebhooks>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            backend: UpstreamKnobs::default(),
            crm: UpstreamKnobs::default(),
            process: UpstreamKnobs::default(),
            carrier: UpstreamKnobs::default(),
            oidc: UpstreamKnobs::default(),
            fcm: UpstreamKnobs::default(),
            apns: UpstreamKnobs::default(),
            webpush: UpstreamKnobs::default(),
            smtp: UpstreamKnobs::default(),
            fcm_token_ttl_secs: 3600,
            crm_token_ttl_secs: 3600,
            crm_batch_size: 2000,
            crm_daily_api_limit: 1_000_000,
            carrier_rate_per_sec: 200,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: None,
            backend_token: "sandbox-backend-token".to_owned(),
            crm_client_id: "sandbox-crm-client".to_owned(),
            crm_client_secret: "sandbox-crm-secret".to_owned(),
            kie_user: "kieserver".to_owned(),
            kie_password: "kieserver1!".to_owned(),
            carrier_api_key: "sandbox-carrier-key".to_owned(),
            oidc_audience: "switchyard".to_owned(),
            simulator_interval_ms: 4000,
            webhooks: None,
        }
    }
}

impl fmt::Debug for SandboxConfig {
    /// Credentials are dev values, but logs should not learn the habit of printing them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("seed", &self.seed)
            .field("backend", &self.backend)
            .field("crm", &self.crm)
            .field("process", &self.process)
            .field("carrier", &self.carrier)
            .field("oidc", &self.oidc)
            .field("fcm", &self.fcm)
            .field("apns", &self.apns)
            .field("webpush", &self.webpush)
            .field("smtp", &self.smtp)
            .field("fcm_token_ttl_secs", &self.fcm_token_ttl_secs)
            .field("crm_token_ttl_secs", &self.crm_token_ttl_secs)
            .field("crm_batch_size", &self.crm_batch_size)
            .field("crm_daily_api_limit", &self.crm_daily_api_limit)
            .field("carrier_rate_per_sec", &self.carrier_rate_per_sec)
            .field("bind", &self.bind)
            .field("ports", &self.ports)
            .field("crm_client_id", &self.crm_client_id)
            .field("kie_user", &self.kie_user)
            .field("oidc_audience", &self.oidc_audience)
            .field("simulator_interval_ms", &self.simulator_interval_ms)
            .field("webhooks", &self.webhooks)
            .finish_non_exhaustive()
    }
}

impl SandboxConfig {
    fn knobs(&self, upstream: Upstream) -> UpstreamKnobs {
        match upstream {
            Upstream::Backend => self.backend,
            Upstream::Crm => self.crm,
            Upstream::Process => self.process,
            Upstream::Carrier => self.carrier,
            Upstream::Oidc => self.oidc,
            Upstream::Fcm => self.fcm,
            Upstream::Apns => self.apns,
            Upstream::WebPush => self.webpush,
            Upstream::Smtp => self.smtp,
        }
    }

    fn port(&self, upstream: Upstream) -> u16 {
        let Some(ports) = self.ports else { return 0 };
        match upstream {
            Upstream::Backend => ports.backend,
            Upstream::Crm => ports.crm,
            Upstream::Process => ports.process,
            Upstream::Carrier => ports.carrier,
            Upstream::Oidc => ports.oidc,
            Upstream::Fcm => ports.fcm,
            Upstream::Apns => ports.apns,
            Upstream::WebPush => ports.webpush,
            Upstream::Smtp => ports.smtp,
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        for upstream in Upstream::ALL {
            self.knobs(upstream).validate(upstream)?;
        }
        if self.crm_batch_size == 0 {
            bail!("sandbox.crm_batch_size must be at least 1");
        }
        if let Some(webhooks) = &self.webhooks {
            webhooks.validate()?;
        }
        Ok(())
    }
}

/// One of the sandbox's servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Upstream {
    /// The backend integration microservices.
    Backend,
    /// The CRM (Salesforce shaped).
    Crm,
    /// The process server (KIE shaped).
    Process,
    /// The parcel carrier.
    Carrier,
    /// The dev OIDC issuer.
    Oidc,
    /// Firebase Cloud Messaging (HTTP v1).
    Fcm,
    /// Apple Push Notification service (both environments).
    Apns,
    /// A Web Push service.
    WebPush,
    /// An SMTP server (the sink).
    Smtp,
}

impl Upstream {
    /// Every upstream, in a fixed order.
    pub const ALL: [Upstream; 9] = [
        Upstream::Backend,
        Upstream::Crm,
        Upstream::Process,
        Upstream::Carrier,
        Upstream::Oidc,
        Upstream::Fcm,
        Upstream::Apns,
        Upstream::WebPush,
        Upstream::Smtp,
    ];

    /// Lower-case name, as in config keys: `backend`, `crm`, `process`, `carrier`, `oidc`,
    /// `fcm`, `apns`, `webpush`, `smtp`.
    pub fn name(self) -> &'static str {
        match self {
            Upstream::Backend => "backend",
            Upstream::Crm => "crm",
            Upstream::Process => "process",
            Upstream::Carrier => "carrier",
            Upstream::Oidc => "oidc",
            Upstream::Fcm => "fcm",
            Upstream::Apns => "apns",
            Upstream::WebPush => "webpush",
            Upstream::Smtp => "smtp",
        }
    }

    /// The scheme of its base URL.
    fn scheme(self) -> &'static str {
        match self {
            Upstream::Apns => "https",
            Upstream::Smtp => "smtp",
            _ => "http",
        }
    }
}

/// Base URLs of the sandbox's servers, `http://host:port[/path]` (`https://` for APNs,
/// `smtp://` for the SMTP sink), without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxUrls {
    /// The backend microservices, e.g. `http://127.0.0.1:41234`.
    pub backend: String,
    /// The CRM: the token endpoint's host and the `instance_url` it hands out.
    pub crm: String,
    /// The KIE server's REST base, ending in `/kie-server/services/rest/server`.
    pub process: String,
    /// The carrier's tracking API.
    pub carrier: String,
    /// The dev OIDC issuer; exactly the `iss` of its tokens.
    pub oidc: String,
    /// FCM: the base URL of `messages:send` (the token endpoint is `{fcm}/token`, as the
    /// service-account file says); `GET {fcm}/_sandbox/push` lists what every provider got.
    pub fcm: String,
    /// APNs' production environment (`https://`, the sandbox's CA).
    pub apns: String,
    /// APNs' development environment (`https://`, the sandbox's CA).
    pub apns_development: String,
    /// The Web Push service: `POST {webpush}/subscriptions` mints a subscription.
    pub webpush: String,
    /// The SMTP sink, `smtp://host:port` (plain SMTP, no TLS, no AUTH).
    pub smtp: String,
}

/// The running sandbox: the upstreams' HTTP servers over one seeded world, and the push
/// providers.
///
/// Dropping it stops the servers (without waiting); [`Sandbox::shutdown`] stops them and waits.
pub struct Sandbox {
    urls: SandboxUrls,
    config: SandboxConfig,
    world: SharedWorld,
    /// The push providers' state: what they received, their credentials.
    push: SandboxPush,
    /// One counter per upstream, in [`Upstream::ALL`] order; shared with its fault layer.
    counters: [Arc<RequestCounter>; Upstream::ALL.len()],
    /// The fault layers of the HTTP servers (the SMTP sink's are its own), in the same order.
    faults: [Option<Arc<Faults>>; Upstream::ALL.len()],
    /// Flipped to `true` to stop every server (and cut injected stalls short).
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    /// The simulator and the webhook senders.
    background: Vec<JoinHandle<()>>,
    /// The dice of [`Sandbox::step`], apart from the background simulator's (a std mutex:
    /// held for one step, never across an await).
    stepper: std::sync::Mutex<simulator::Simulator>,
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Seeds the world, binds the servers and starts serving; starts the webhook sender
    /// when [`SandboxConfig::webhooks`] is set, and the simulator unless
    /// [`SandboxConfig::simulator_interval_ms`] is 0.
    ///
    /// Fails if the config is invalid (a rate outside 0..=1, a zero batch size) or a port
    /// cannot be bound.
    pub async fn start(config: SandboxConfig) -> anyhow::Result<Sandbox> {
        config.validate()?;
        let started = Instant::now();
        // The FCM service-account key is slow to generate in a debug build: overlap the seeding.
        let fcm_key = push::fcm::prepare_key();
        let world = SharedWorld::new(data::seed_world(config.seed, &config.kie_user));
        tracing::debug!(elapsed = ?started.elapsed(), seed = config.seed, "sandbox world seeded");

        let mut listeners = Vec::with_capacity(Upstream::ALL.len());
        for upstream in Upstream::ALL {
            let address = SocketAddr::new(config.bind, config.port(upstream));
            let listener = TcpListener::bind(address)
                .await
                .with_context(|| format!("binding the sandbox {} on {address}", upstream.name()))?;
            let local = listener.local_addr().context("reading a bound address")?;
            listeners.push((
                upstream,
                listener,
                format!("{}://{local}", upstream.scheme()),
            ));
        }
        let apns_development = {
            let port = config.ports.map_or(0, |ports| ports.apns_development);
            let address = SocketAddr::new(config.bind, port);
            TcpListener::bind(address)
                .await
                .with_context(|| format!("binding the sandbox apns_development on {address}"))?
        };
        let apns_development_url = format!(
            "https://{}",
            apns_development
                .local_addr()
                .context("reading a bound address")?
        );
        let root = |upstream: Upstream| {
            listeners
                .iter()
                .find(|(candidate, ..)| *candidate == upstream)
                .map(|(_, _, url)| url.clone())
                .unwrap_or_default()
        };
        let urls = SandboxUrls {
            backend: root(Upstream::Backend),
            crm: root(Upstream::Crm),
            process: format!("{}{}", root(Upstream::Process), process::BASE_PATH),
            carrier: root(Upstream::Carrier),
            oidc: root(Upstream::Oidc),
            fcm: root(Upstream::Fcm),
            apns: root(Upstream::Apns),
            apns_development: apns_development_url,
            webpush: root(Upstream::WebPush),
            smtp: root(Upstream::Smtp),
        };
        fcm_key
            .await
            .context("generating the FCM service-account key")?;
        let push = SandboxPush::new(
            &urls.fcm,
            &urls.webpush,
            &[config.bind.to_string()],
            config.fcm_token_ttl_secs,
        )?;
        let mut apns_development = Some(apns_development);

        let (shutdown, _) = watch::channel(false);
        // Subscribed before anything can change the world, so the first change is posted too.
        let mut background = match &config.webhooks {
            Some(hooks) => webhooks::start(hooks, world.subscribe(), &shutdown)?,
            None => Vec::new(),
        };
        if config.simulator_interval_ms > 0 {
            background.push(simulator::spawn(
                world.clone(),
                config.seed,
                Duration::from_millis(config.simulator_interval_ms),
                shutdown.subscribe(),
            ));
        }
        let counters: [Arc<RequestCounter>; Upstream::ALL.len()] =
            std::array::from_fn(|_| Arc::default());
        let mut servers = Vec::with_capacity(listeners.len() + 1);
        let mut fault_layers: [Option<Arc<Faults>>; Upstream::ALL.len()] =
            std::array::from_fn(|_| None);
        let push_state = Arc::clone(push.state());
        for (upstream, listener, _) in listeners {
            let counter = Arc::clone(&counters[upstream as usize]);
            let faults = Arc::new(Faults::new(
                upstream,
                config.knobs(upstream),
                config.seed,
                Arc::clone(&counter),
                shutdown.subscribe(),
            ));
            let router = match upstream {
                Upstream::Backend => backend::router(world.clone(), &config),
                Upstream::Crm => crm::router(world.clone(), &config, &urls.crm),
                Upstream::Process => process::router(world.clone(), &config),
                Upstream::Carrier => carrier::router(world.clone(), &config),
                Upstream::Oidc => oidc::router(&world, &config, &urls.oidc)?,
                Upstream::Fcm => push::fcm::router(Arc::clone(&push_state)),
                Upstream::WebPush => push::webpush::router(Arc::clone(&push_state)),
                Upstream::Apns => push::apns::router(Arc::clone(&push_state)),
                Upstream::Smtp => {
                    servers.push(push::smtp::spawn(
                        listener,
                        faults,
                        Arc::clone(&push_state),
                        shutdown.subscribe(),
                    ));
                    continue;
                }
            };
            fault_layers[upstream as usize] = Some(Arc::clone(&faults));
            let mut router = faults::layer(router, Arc::clone(&faults))
                .merge(faults::control_routes("", Arc::clone(&faults)));
            match upstream {
                Upstream::Process => {
                    router = router.merge(faults::control_routes(process::BASE_PATH, faults));
                }
                Upstream::Fcm => router = router.merge(push::control_routes(push.clone())),
                Upstream::WebPush => {
                    router =
                        router.merge(push::webpush::subscription_routes(Arc::clone(&push_state)));
                }
                _ => {}
            }
            if upstream == Upstream::Apns {
                let tls = push_state.apns.tls.clone().context("the APNs TLS config")?;
                for (environment, listener) in [
                    (ApnsEnvironment::Production, Some(listener)),
                    (ApnsEnvironment::Development, apns_development.take()),
                ] {
                    let Some(listener) = listener else { continue };
                    servers.push(push::tls::spawn_h2(
                        "apns",
                        listener,
                        Arc::clone(&tls),
                        router.clone().layer(axum::Extension(environment)),
                        push::apns::ConnectionTokens::default,
                        shutdown.subscribe(),
                    ));
                }
                continue;
            }
            servers.push(spawn_server(
                upstream,
                listener,
                router,
                shutdown.subscribe(),
            ));
        }
        tracing::info!(?urls, "sandbox upstreams listening");
        let config_seed = config.seed;
        Ok(Sandbox {
            urls,
            config,
            world,
            push,
            counters,
            faults: fault_layers,
            shutdown,
            servers,
            background,
            stepper: std::sync::Mutex::new(simulator::Simulator::new(config_seed)),
        })
    }

    /// Where the servers listen.
    pub fn urls(&self) -> &SandboxUrls {
        &self.urls
    }

    /// The configuration it runs with, credentials included.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// The push providers: their credentials, the devices and subscriptions they know, what
    /// they received.
    pub fn push(&self) -> &SandboxPush {
        &self.push
    }

    /// What the push providers accepted so far, oldest first (Web Push payloads decrypted).
    pub fn pushes(&self) -> Vec<ReceivedPush> {
        self.push.received()
    }

    /// Requests an upstream received since start or the last reset, keyed by
    /// `"METHOD /route/template"` (e.g. `"GET /orders/{id}"`).
    pub fn requests(&self, upstream: Upstream) -> BTreeMap<String, u64> {
        self.counters[upstream as usize].snapshot()
    }

    /// The `traceparent` header of the last request an upstream received with one (since
    /// start or the last reset): what a caller propagates of its trace.
    pub fn last_traceparent(&self, upstream: Upstream) -> Option<String> {
        self.counters[upstream as usize].last_traceparent()
    }

    /// Applies other latency and fault knobs to an upstream from its next request on (what
    /// `PUT /_sandbox/faults` does); refuses rates outside 0..=1 and the SMTP sink.
    pub fn set_faults(&self, upstream: Upstream, knobs: UpstreamKnobs) -> anyhow::Result<()> {
        self.faults[upstream as usize]
            .as_ref()
            .with_context(|| format!("{} takes its knobs at start only", upstream.name()))?
            .set_knobs(knobs)
    }

    /// Forgets the request counts of every upstream.
    pub fn reset_requests(&self) {
        for counter in &self.counters {
            counter.reset();
        }
    }

    /// Moves the world on by one simulator step now, as the simulator does every
    /// `simulator_interval_ms`: for tests and benchmarks that run with the simulator off and
    /// want the world to move at their own pace. The step announces its changes (and posts
    /// them, with webhooks configured) like any other; its dice are seeded with the sandbox's
    /// seed, so the same seed and the same calls give the same steps. Answers what it did,
    /// `None` when nothing was left to move.
    pub fn step(&self) -> Option<String> {
        let mut stepper = self
            .stepper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        stepper.step(&mut self.world.write(), chrono::Utc::now())
    }

    /// Every change to the world from now on (orders, parcels, cases, tasks, processes).
    pub fn changes(&self) -> broadcast::Receiver<SandboxChange> {
        self.world.subscribe()
    }

    /// Stops accepting connections, lets in-flight requests finish (at most 10 s), and waits
    /// for the servers to end.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        let mut servers = std::mem::take(&mut self.servers);
        servers.append(&mut self.background);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        for mut server in servers {
            if tokio::time::timeout_at(deadline, &mut server)
                .await
                .is_err()
            {
                server.abort();
            }
        }
        tracing::info!(urls = ?self.urls, "sandbox upstreams stopped");
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

fn spawn_server(
    upstream: Upstream,
    listener: TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        if let Err(error) = axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(upstream = upstream.name(), %error, "sandbox server failed");
        }
    })
}
