//! Delta sync against re-fetching: what an app coming back online pays for `sync(token)`
//! after about 100 changes to its customer's working set, against re-fetching the home screen
//! (`schema/operations/HomeScreen.graphql`), and against a fresh snapshot.
//!
//! `cargo bench --bench sync` (release build). One Switchyard over a sandbox in this process,
//! on loopback, the memory bus, the simulator off: the bench takes Ada's snapshot, then posts
//! `SYNC_CHANGES` (100) signed `order.status_changed` webhooks about her orders (round-robin:
//! the simulator alone moves one customer's world too little for that, a few dozen changes
//! before her orders are all delivered and her cases closed), waits until Switchyard has
//! taken them, and then times `SYNC_REPEATS` (200) calls of each, one after another:
//! `sync` from the snapshot's token (the same token every time: a delta is a read, the same
//! answer each call), `HomeScreen`, and the whole snapshot (every page). Bytes are the
//! answers' JSON bodies (no compression).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sandbox::{Sandbox, SandboxConfig};
use serde_json::{Value, json};
use switchyard::Config;

const ADA: &str = "cust-0001";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let changes = env_or("SYNC_CHANGES", 100);
    let repeats = env_or("SYNC_REPEATS", 200).max(1);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");
    let mut sandbox_config = SandboxConfig {
        simulator_interval_ms: 0,
        carrier_rate_per_sec: 0,
        ..SandboxConfig::default()
    };
    let mut config = Config::default();
    switchyard::embedded::connect_sandbox_webhooks(&mut sandbox_config, &mut config.webhooks, addr);
    let sandbox = Sandbox::start(sandbox_config).await?;
    let (upstreams, auth) = switchyard::embedded::sandbox_wiring(&sandbox)?;
    config.upstreams = upstreams;
    config.auth = auth;
    config.log.filter = "error".into();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switchyard::run(listener, config, async {
        let _ = stopped.await;
    }));

    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{}/token", sandbox.urls().oidc))
        .json(&json!({ "user": ADA }))
        .send()
        .await?
        .json()
        .await?;
    let token = token["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let operation = |name: &str| {
        std::fs::read_to_string(format!(
            "{}/schema/operations/{name}.graphql",
            env!("CARGO_MANIFEST_DIR")
        ))
    };
    let sync = operation("Sync")?;
    let home = json!({ "query": operation("HomeScreen")? }).to_string();
    let client = Client {
        http: &http,
        base: &base,
        token: &token,
    };

    // Warm up (connections, the CRM token, the JWKS), then the snapshot the app holds.
    for _ in 0..10 {
        client.post(&home).await?;
    }
    let snapshot = client.sync_all(&sync, None).await?;

    // Offline: `changes` signed webhooks say Ada's orders changed (round-robin over them,
    // each with the order's own status: Switchyard reads every changed order fresh anyway).
    let (orders, _) = client
        .post(
            &json!({ "query": "{ me { orders(first: 50) { edges { node { id status } } } } }" })
                .to_string(),
        )
        .await?;
    let orders: Vec<(String, String)> = orders["data"]["me"]["orders"]["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|edge| {
            let node = &edge["node"];
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (text(&node["id"]), text(&node["status"]))
        })
        .collect();
    anyhow::ensure!(!orders.is_empty(), "Ada has no orders");
    let secret = sandbox::DEV_BACKEND_WEBHOOK_SECRET;
    let mut entities = BTreeSet::new();
    for n in 0..changes {
        let (order, status) = &orders[n % orders.len()];
        entities.insert(order.clone());
        let body = json!({
            "id": format!("bench_sync_{n}"), "type": "order.status_changed",
            "occurredAt": chrono::Utc::now().to_rfc3339(),
            "data": { "orderId": order, "customerId": ADA, "status": status }
        })
        .to_string();
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let answer = http
            .post(format!("{base}/webhooks/backend"))
            .header("content-type", "application/json")
            .header("x-webhook-timestamp", &timestamp)
            .header("x-webhook-signature", sign(secret, &timestamp, &body))
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(
            answer.status() == 202,
            "webhook answered {}",
            answer.status()
        );
    }
    let hers = changes;
    // Back online once Switchyard has every webhook: the delta names every entity.
    let deadline = Instant::now() + Duration::from_secs(60);
    let delta = loop {
        let (body, _) = client
            .post(&sync_body(&sync, Some(&snapshot.token)))
            .await?;
        let page = &body["data"]["sync"];
        let got = page["changes"].as_array().map_or(0, Vec::len)
            + page["removed"].as_array().map_or(0, Vec::len);
        if got >= entities.len() || Instant::now() > deadline {
            break page.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let in_delta = delta["changes"].as_array().map_or(0, Vec::len);
    let removed = delta["removed"].as_array().map_or(0, Vec::len);

    let delta_body = sync_body(&sync, Some(&snapshot.token));
    let delta_run = client.time(repeats, || client.post(&delta_body)).await?;
    let home_run = client.time(repeats, || client.post(&home)).await?;
    let snapshot_run = client
        .time(repeats, || async {
            let pulled = client.sync_all(&sync, None).await?;
            Ok((Value::Null, pulled.bytes))
        })
        .await?;

    println!(
        "sync: Ada's working set, {} entities in the snapshot ({} pages of 50)",
        snapshot.entities, snapshot.pages
    );
    println!(
        "offline: {hers} changes to Ada's orders ({} orders): the delta has {in_delta} changes \
         and {removed} removals, hasMore {}",
        entities.len(),
        delta["hasMore"]
    );
    for (name, run) in [
        ("sync(token) after the changes", &delta_run),
        ("HomeScreen (re-fetch)", &home_run),
        ("sync() snapshot, all pages", &snapshot_run),
    ] {
        println!(
            "  {name:<31} {:>8} bytes   p50 {:>7.2} ms   p99 {:>7.2} ms   ({repeats} calls)",
            run.bytes,
            ms(run.p50),
            ms(run.p99)
        );
    }
    let _ = stop.send(());
    server.await??;
    sandbox.shutdown().await;
    Ok(())
}

/// `v1=` + hex HMAC-SHA256(secret, "<timestamp>.<body>"), as `docs/upstreams.md` says.
fn sign(secret: &str, timestamp: &str, body: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn sync_body(document: &str, token: Option<&str>) -> String {
    json!({ "query": document, "variables": { "token": token, "first": 50 } }).to_string()
}

struct Client<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
    token: &'a str,
}

/// A snapshot pulled page by page.
struct Pulled {
    token: String,
    entities: usize,
    pages: usize,
    bytes: usize,
}

/// Timings of one kind of call.
struct Run {
    /// The answer's size (of the last call; every call answers the same).
    bytes: usize,
    p50: Duration,
    p99: Duration,
}

impl Client<'_> {
    /// POSTs `body`; the answer (which must have no errors) and its size.
    async fn post(&self, body: &str) -> anyhow::Result<(Value, usize)> {
        let response = self
            .http
            .post(format!("{}/graphql", self.base))
            .bearer_auth(self.token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "status {}", response.status());
        let bytes = response.bytes().await?;
        let value: Value = serde_json::from_slice(&bytes)?;
        anyhow::ensure!(value.get("errors").is_none(), "errors: {value}");
        Ok((value, bytes.len()))
    }

    /// Every page of a sync from `token`.
    async fn sync_all(&self, document: &str, token: Option<&str>) -> anyhow::Result<Pulled> {
        let mut pulled = Pulled {
            token: token.unwrap_or_default().to_owned(),
            entities: 0,
            pages: 0,
            bytes: 0,
        };
        loop {
            let token = (pulled.pages > 0 || token.is_some()).then_some(pulled.token.as_str());
            let (body, bytes) = self.post(&sync_body(document, token)).await?;
            let page = &body["data"]["sync"];
            pulled.pages += 1;
            pulled.bytes += bytes;
            pulled.entities += page["changes"].as_array().map_or(0, Vec::len);
            pulled.token = page["token"].as_str().unwrap_or_default().to_owned();
            if page["hasMore"] != true {
                return Ok(pulled);
            }
            anyhow::ensure!(pulled.pages < 1_000, "sync keeps saying hasMore");
        }
    }

    /// Runs `call` `repeats` times, one after another.
    async fn time<F, Fut>(&self, repeats: usize, call: F) -> anyhow::Result<Run>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = anyhow::Result<(Value, usize)>>,
    {
        let mut times = Vec::with_capacity(repeats);
        let mut bytes = 0;
        for _ in 0..repeats {
            let started = Instant::now();
            bytes = call().await?.1;
            times.push(started.elapsed());
        }
        times.sort();
        let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
        Ok(Run {
            bytes,
            p50: pct(0.50),
            p99: pct(0.99),
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
