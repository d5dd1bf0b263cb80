//! Test harness: spawns the real server on `127.0.0.1:0` against a private sandbox, and talks
//! to it over real HTTP, websockets and SSE, as an app would.
//!
//! - [`TestApp`]: one Switchyard over its own sandbox, with request helpers;
//! - `ws`, `sse`: the live transports' clients;
//! - `issuer`: an OIDC issuer of the tests' own (any claims, key rotation, a slow JWKS);
//! - `redis`: a private `redis-server` (never the one on 6379), and a proxy to cut it off;
//! - `browser`: headless Chromium over CDP, for the playground.
#![allow(dead_code, unreachable_pub)]

pub mod browser;
pub mod issuer;
pub mod redis;
pub mod sse;
pub mod ws;

use std::collections::BTreeMap;
use std::time::Duration;

use sandbox::{Sandbox, SandboxConfig, Upstream};
use serde_json::{Value, json};
use switchyard::Config;
use tokio::sync::oneshot;

/// Longest any single wait of a test may take before it counts as a hang.
pub const WAIT: Duration = Duration::from_secs(15);

/// A running Switchyard with its own sandbox.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The sandbox behind it (its request counters, its URLs).
    pub sandbox: Sandbox,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Every upstream, for counting.
pub const UPSTREAMS: [Upstream; 4] = [
    Upstream::Backend,
    Upstream::Crm,
    Upstream::Process,
    Upstream::Carrier,
];

impl TestApp {
    /// Switchyard over a default sandbox.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(SandboxConfig::default(), |_| {}).await
    }

    /// Switchyard over a sandbox with these knobs; `tweak` may change Switchyard's config.
    ///
    /// Built as the embedded sandbox builds it (webhooks, wiring, the demo sign-in), except that
    /// the test starts the sandbox itself, to read its request counters.
    pub async fn spawn_with(
        sandbox_config: SandboxConfig,
        tweak: impl FnOnce(&mut Config),
    ) -> TestApp {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        switchyard::telemetry::init(&switchyard::config::LogConfig {
            filter: "warn".into(),
            ..Default::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        // Tests want a still world (no simulated activity unless a test asks), and the
        // sandbox's webhooks posted to this Switchyard, as with the embedded sandbox.
        let mut sandbox_config = SandboxConfig {
            simulator_interval_ms: 0,
            ..sandbox_config
        };
        let mut config = Config::default();
        switchyard::embedded::connect_sandbox_webhooks(
            &mut sandbox_config,
            &mut config.webhooks,
            addr,
        );
        let sandbox = Sandbox::start(sandbox_config)
            .await
            .expect("sandbox starts");
        let (upstreams, auth) = switchyard::embedded::sandbox_wiring(&sandbox).expect("wiring");
        config.upstreams = upstreams;
        config.auth = auth;
        config.push = switchyard::embedded::sandbox_push_wiring(&sandbox).expect("push wiring");
        tweak(&mut config);
        let (tx, rx) = oneshot::channel::<()>();
        let sign_in = switchyard::embedded::DevSignIn::of(&sandbox);
        let server = tokio::spawn(switchyard::app::serve_with_dev_sign_in(
            listener,
            config,
            sign_in,
            async {
                let _ = rx.await;
            },
        ));
        TestApp {
            base,
            sandbox,
            http: modern_client(),
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A bearer token for a demo user, through the demo sign-in.
    pub async fn token(&self, user: &str) -> String {
        sign_in(&self.url("/dev/token"), user).await
    }

    /// POSTs an operation; answers status and body.
    pub async fn post(&self, token: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
        let mut request = self
            .http
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// POSTs a batch (an array body), as Apollo's `BatchHttpLink` does; answers status and
    /// body.
    pub async fn post_batch(&self, token: &str, batch: Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url("/graphql"))
            .header(reqwest::header::ACCEPT, "application/json")
            .bearer_auth(token)
            .json(&batch)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// POSTs an operation that must succeed without errors; answers `data`.
    /// The id of the newest order of the token's customer.
    pub async fn first_order(&self, token: &str) -> String {
        let orders = self
            .data(
                token,
                "{ me { orders(first: 1) { edges { node { id } } } } }",
                json!({}),
            )
            .await;
        orders["me"]["orders"]["edges"][0]["node"]["id"]
            .as_str()
            .expect("the customer has an order")
            .to_owned()
    }

    pub async fn data(&self, token: &str, query: &str, variables: Value) -> Value {
        let (status, body) = self.post(Some(token), query, variables).await;
        assert_eq!(status, 200, "{body:#}");
        assert!(body.get("errors").is_none(), "unexpected errors: {body:#}");
        body["data"].clone()
    }

    /// POSTs a webhook body from `source` (`backend`, `crm`, `process`, `carrier`) to
    /// `/webhooks/{source}`, signed now with the secret the sandbox signs that source's
    /// webhooks with (which this Switchyard verifies), as the upstream would; answers status
    /// and body.
    pub async fn post_webhook(&self, source: &str, body: &Value) -> (u16, Value) {
        let hooks = self
            .sandbox
            .config()
            .webhooks
            .as_ref()
            .expect("the sandbox's webhooks are wired to this Switchyard");
        let secret = match source {
            "backend" => &hooks.backend_secret,
            "crm" => &hooks.crm_secret,
            "process" => &hooks.process_secret,
            "carrier" => &hooks.carrier_secret,
            other => panic!("no webhooks from {other}"),
        };
        let body = body.to_string();
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let signature = sign_webhook(secret, &timestamp, body.as_bytes());
        let response = self
            .http
            .post(self.url(&format!("/webhooks/{source}")))
            .header("content-type", "application/json")
            .header("x-webhook-timestamp", timestamp)
            .header("x-webhook-signature", signature)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Request counts per upstream, by route, since the last reset.
    pub fn counts(&self) -> BTreeMap<&'static str, BTreeMap<String, u64>> {
        UPSTREAMS
            .iter()
            .map(|u| (u.name(), self.sandbox.requests(*u)))
            .filter(|(_, m)| !m.is_empty())
            .collect()
    }

    pub fn reset_counts(&self) {
        self.sandbox.reset_requests();
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

/// An HTTP client that asks for what current GraphQL clients ask for (graphql-http, Apollo
/// Client 4): `Accept: application/graphql-response+json, application/json;q=0.9`, so that
/// request errors come with their 4xx statuses. A request may set its own `Accept`.
pub fn modern_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::ACCEPT,
        reqwest::header::HeaderValue::from_static(
            "application/graphql-response+json, application/json;q=0.9",
        ),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("an HTTP client")
}

/// A bearer token for a demo user straight from the sandbox's OIDC issuer (`POST /token`), the
/// way a deployment without the demo sign-in gets one from its identity provider.
pub async fn issuer_token(sandbox: &Sandbox, user: &str) -> String {
    sign_in(&format!("{}/token", sandbox.urls().oidc), user).await
}

/// The `access_token` that `POST url {"user": user}` answers (the demo sign-in's shape).
async fn sign_in(url: &str, user: &str) -> String {
    let answer: Value = reqwest::Client::new()
        .post(url)
        .json(&json!({ "user": user }))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap_or_else(|e| panic!("signing in as {user} at {url}: {e}"))
        .json()
        .await
        .unwrap();
    answer["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// A document under 1 KB that selects 2^`levels` fields once its fragments are expanded:
/// each fragment spreads the next one twice.
pub fn doubling_fragments(on: &str, levels: usize) -> String {
    let keyword = if on == "Subscription" {
        "subscription"
    } else {
        "query"
    };
    let mut doc = format!("{keyword} {{ ...F0 }}\n");
    for level in 0..levels {
        let next = level + 1;
        doc.push_str(&format!(
            "fragment F{level} on {on} {{ ...F{next} ...F{next} }}\n"
        ));
    }
    doc.push_str(&format!("fragment F{levels} on {on} {{ __typename }}"));
    doc
}

/// A replica's config as the README's replicas recipe makes it: what `switchyard sandbox`
/// prints, with `extra` (e.g. an `[events]` section) appended, read the way `--config` reads
/// its file (but not the `SWITCHYARD_*` environment, which belongs to whoever runs the tests).
pub fn replica_config(printed: &str, extra: &str) -> Config {
    use figment::providers::{Format, Toml};
    let text = format!("{printed}\n{extra}");
    let config: Config = figment::Figment::from(Toml::string(&text))
        .extract()
        .unwrap_or_else(|e| panic!("the printed config does not load: {e}\n{text}"));
    config.validate().expect("the printed config is valid");
    config
}

/// A webhook signature as `docs/upstreams.md` specifies it, written from the spec (not with
/// the sandbox's or the ingest's code): `v1=` + hex HMAC-SHA256(secret, "<timestamp>.<body>").
pub fn sign_webhook(secret: &str, timestamp: &str, body: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The text of an example operation in `schema/operations/`.
pub fn operation(name: &str) -> String {
    let path = format!(
        "{}/schema/operations/{name}.graphql",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Builds a count map from literal pairs, for exact comparisons.
pub fn counts(
    pairs: &[(&'static str, &[(&str, u64)])],
) -> BTreeMap<&'static str, BTreeMap<String, u64>> {
    pairs
        .iter()
        .map(|(u, routes)| {
            (
                *u,
                routes.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect(),
            )
        })
        .collect()
}
