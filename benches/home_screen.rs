//! The home screen under load: latency and throughput of the `HomeScreen` operation through
//! Switchyard, against the sandbox on loopback, with and without upstream latency.
//!
//! `cargo bench --bench home_screen` (release build). Prints one line per scenario; the
//! README keeps the latest figures. Every run is bounded (a fixed number of requests).

use std::time::{Duration, Instant};

use sandbox::{Sandbox, SandboxConfig, Upstream};
use serde_json::json;
use switchyard::Config;

const REQUESTS: usize = 2_000;
const CONCURRENCY: usize = 16;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    println!("HomeScreen, {REQUESTS} requests, {CONCURRENCY} concurrent, one signed-in customer");
    for latency_ms in [0, 20] {
        scenario(latency_ms).await?;
    }
    Ok(())
}

async fn scenario(latency_ms: u64) -> anyhow::Result<()> {
    let mut sandbox_config = SandboxConfig::default();
    for knobs in [
        &mut sandbox_config.backend,
        &mut sandbox_config.crm,
        &mut sandbox_config.process,
        &mut sandbox_config.carrier,
    ] {
        knobs.latency_ms = latency_ms;
    }
    sandbox_config.carrier_rate_per_sec = 0;
    let sandbox = Sandbox::start(sandbox_config).await?;
    let (upstreams, auth) = switchyard::embedded::sandbox_wiring(&sandbox)?;
    let mut config = Config {
        upstreams,
        auth,
        ..Config::default()
    };
    config.log.filter = "error".into();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switchyard::run(listener, config, async {
        let _ = stopped.await;
    }));

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()?;
    // Straight from the sandbox's issuer: this Switchyard has no demo sign-in.
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
    let query = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/operations/HomeScreen.graphql"
    ))?;
    let body = json!({ "query": query }).to_string();

    // Warm up (connections, the CRM token, the JWKS).
    for _ in 0..20 {
        one(&http, &base, &token, &body).await?;
    }
    sandbox.reset_requests();

    let started = Instant::now();
    let mut latencies = Vec::with_capacity(REQUESTS);
    let mut tasks = tokio::task::JoinSet::new();
    // REQUESTS is a multiple of CONCURRENCY.
    for _ in 0..CONCURRENCY {
        let (http, base, token, body) = (http.clone(), base.clone(), token.clone(), body.clone());
        let share = REQUESTS / CONCURRENCY;
        tasks.spawn(async move {
            let mut mine = Vec::with_capacity(share);
            for _ in 0..share {
                let t = Instant::now();
                one(&http, &base, &token, &body).await?;
                mine.push(t.elapsed());
            }
            anyhow::Ok(mine)
        });
    }
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let upstream_calls: u64 = [
        Upstream::Backend,
        Upstream::Crm,
        Upstream::Process,
        Upstream::Carrier,
    ]
    .into_iter()
    .map(|u| sandbox.requests(u).values().sum::<u64>())
    .sum();
    println!(
        "upstream latency {latency_ms:>3} ms: {:>7.0} req/s, p50 {:>7.2} ms, p99 {:>7.2} ms, {:.1} upstream calls per request",
        REQUESTS as f64 / elapsed.as_secs_f64(),
        ms(pct(0.50)),
        ms(pct(0.99)),
        upstream_calls as f64 / REQUESTS as f64,
    );
    let _ = stop.send(());
    server.await??;
    sandbox.shutdown().await;
    Ok(())
}

async fn one(http: &reqwest::Client, base: &str, token: &str, body: &str) -> anyhow::Result<()> {
    let response = http
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await?;
    anyhow::ensure!(response.status() == 200, "status {}", response.status());
    let value: serde_json::Value = response.json().await?;
    anyhow::ensure!(value.get("errors").is_none(), "errors: {value}");
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
