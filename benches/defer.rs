//! `@defer` on the home screen with a slow carrier: how long the app waits for its first
//! part, with `HomeScreenDeferred` (tracking deferred, `multipart/mixed` as Apollo Client asks
//! for it) and with `HomeScreen` (one JSON result), the carrier answering after 2 s.
//!
//! `cargo bench --bench defer` (release build). The entity cache is off, so that every
//! request reaches the carrier. Prints one line per operation; the README keeps the latest
//! figures. Bounded: a fixed number of requests.

use std::time::{Duration, Instant};

use sandbox::{Sandbox, SandboxConfig, Upstream, UpstreamKnobs};
use serde_json::json;
use switchyard::Config;

const CARRIER_LATENCY_MS: u64 = 2_000;
const REQUESTS: usize = 40;
const CONCURRENCY: usize = 8;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let sandbox = Sandbox::start(SandboxConfig {
        carrier: UpstreamKnobs::slow(CARRIER_LATENCY_MS),
        carrier_rate_per_sec: 0,
        simulator_interval_ms: 0,
        ..SandboxConfig::default()
    })
    .await?;
    let (upstreams, auth) = switchyard::embedded::sandbox_wiring(&sandbox)?;
    let mut config = Config {
        upstreams,
        auth,
        ..Config::default()
    };
    config.log.filter = "error".into();
    config.cache.enabled = false;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switchyard::run(listener, config, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()?;
    let token: serde_json::Value = http
        .post(format!("{}/token", sandbox.urls().oidc))
        .json(&json!({ "user": "cust-0001" }))
        .send()
        .await?
        .json()
        .await?;
    let token = token["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    println!(
        "home screen, carrier at {CARRIER_LATENCY_MS} ms, {REQUESTS} requests, {CONCURRENCY} \
         concurrent, entity cache off"
    );
    for (name, accept) in [
        ("HomeScreen", "application/json"),
        (
            "HomeScreenDeferred",
            "multipart/mixed;deferSpec=20220824,application/json",
        ),
    ] {
        let query = std::fs::read_to_string(format!(
            "{}/schema/operations/{name}.graphql",
            env!("CARGO_MANIFEST_DIR")
        ))?;
        let body = json!({ "query": query }).to_string();
        let request = Request {
            http: http.clone(),
            url: format!("{base}/graphql"),
            token: token.clone(),
            accept,
            body,
        };
        // Warm up (connections, the CRM token, the JWKS).
        request.one().await?;
        sandbox.reset_requests();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CONCURRENCY {
            let request = request.clone();
            tasks.spawn(async move {
                let mut mine = Vec::new();
                for _ in 0..REQUESTS / CONCURRENCY {
                    mine.push(request.one().await?);
                }
                anyhow::Ok(mine)
            });
        }
        let mut firsts = Vec::new();
        let mut lasts = Vec::new();
        while let Some(done) = tasks.join_next().await {
            for (first, last) in done?? {
                firsts.push(first);
                lasts.push(last);
            }
        }
        let carrier: u64 = sandbox.requests(Upstream::Carrier).values().sum();
        let all: u64 = [
            Upstream::Backend,
            Upstream::Crm,
            Upstream::Process,
            Upstream::Carrier,
        ]
        .into_iter()
        .map(|u| sandbox.requests(u).values().sum::<u64>())
        .sum();
        println!(
            "{name:<19} first part p50 {:>7.1} ms, p95 {:>7.1} ms; last part p50 {:>7.1} ms; \
             {:.1} upstream calls per request ({:.1} to the carrier)",
            pct(&mut firsts, 0.50),
            pct(&mut firsts, 0.95),
            pct(&mut lasts, 0.50),
            all as f64 / REQUESTS as f64,
            carrier as f64 / REQUESTS as f64,
        );
    }
    let _ = stop.send(());
    server.await??;
    sandbox.shutdown().await;
    Ok(())
}

#[derive(Clone)]
struct Request {
    http: reqwest::Client,
    url: String,
    token: String,
    accept: &'static str,
    body: String,
}

impl Request {
    /// One request: when its first part (or its whole JSON result) had come, and its last.
    async fn one(&self) -> anyhow::Result<(Duration, Duration)> {
        let started = Instant::now();
        let mut response = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .header("accept", self.accept)
            .body(self.body.clone())
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "status {}", response.status());
        let multipart = response.headers()["content-type"]
            .to_str()?
            .starts_with("multipart/mixed");
        let mut body = Vec::new();
        let mut first = None;
        while let Some(chunk) = response.chunk().await? {
            body.extend_from_slice(&chunk);
            // A part is complete once the boundary after it came (the first boundary opens).
            let complete = !multipart || count(&body, b"\r\n---") >= 2;
            if first.is_none() && complete {
                first = Some(started.elapsed());
            }
        }
        let last = started.elapsed();
        let text = String::from_utf8(body)?;
        anyhow::ensure!(!text.contains("\"errors\""), "errors: {text}");
        Ok((first.unwrap_or(last), last))
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

fn pct(values: &mut [Duration], p: f64) -> f64 {
    values.sort();
    let at = ((values.len() as f64 * p) as usize).min(values.len() - 1);
    values[at].as_secs_f64() * 1000.0
}
