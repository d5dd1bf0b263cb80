//! Fan-out of live updates: N websocket subscribers on one Switchyard instance, M signed
//! webhooks; delivery latency from the webhook POST to the `next` frame at the subscriber,
//! and the server's resident memory per connection.
//!
//! `cargo bench --bench fanout` (release). The server runs as its own process (the
//! `switchyard` binary, embedded sandbox), so the clients' sockets do not count against its
//! file descriptor limit. Sizes: `FANOUT_SUBSCRIBERS` (default 10000), `FANOUT_EVENTS`
//! (default 2000), `FANOUT_RATE` events per second (default 200). Bounded in count and time.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "bench-webhook-secret";
const CUSTOMERS: usize = 1000;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let subscribers = env_or("FANOUT_SUBSCRIBERS", 10_000);
    let events = env_or("FANOUT_EVENTS", 2_000);
    let rate = env_or("FANOUT_RATE", 200).max(1);

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .env("SWITCHYARD_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("SWITCHYARD_WEBHOOKS__BACKEND_SECRET", SECRET)
        .env(
            "SWITCHYARD_SUBSCRIPTIONS__MAX_CONNECTIONS",
            (subscribers + 100).to_string(),
        )
        .env("SWITCHYARD_SANDBOX__SIMULATOR_INTERVAL_MS", "0")
        .env("SWITCHYARD_LOG__FILTER", "error")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = server.id().unwrap_or_default();
    let http = reqwest::Client::new();
    wait_until_up(&http, &base).await?;
    let rss_before = rss_kib(pid);

    // Tokens: one per customer, subscribers spread over the customers.
    let mut tokens = Vec::with_capacity(CUSTOMERS);
    for c in 1..=CUSTOMERS {
        let answer: Value = http
            .post(format!("{base}/dev/token"))
            .json(&json!({ "user": format!("cust-{c:04}") }))
            .send()
            .await?
            .json()
            .await?;
        tokens.push(
            answer["access_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }

    // Each customer's newest order: the events name an order of the customer they are for
    // (an event naming another customer's order is not sent to anyone's feed).
    let mut orders = Vec::with_capacity(CUSTOMERS);
    for token in &tokens {
        let answer: Value = http
            .post(format!("{base}/graphql"))
            .bearer_auth(token)
            .json(&json!({"query": "{ me { orders(first: 1) { edges { node { id } } } } }"}))
            .send()
            .await?
            .json()
            .await?;
        let order = answer["data"]["me"]["orders"]["edges"][0]["node"]["id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("a customer without orders: {answer}"))?;
        orders.push(order.to_owned());
    }

    // Connect and subscribe, 200 at a time.
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(subscribers.max(1));
    let connect_started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(200));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..subscribers {
        let token = tokens[i % CUSTOMERS].clone();
        let url = format!("ws://127.0.0.1:{port}/graphql/ws");
        let (sent_at, latencies, ready_tx, gate) = (
            sent_at.clone(),
            latencies.clone(),
            ready_tx.clone(),
            gate.clone(),
        );
        clients.spawn(async move {
            let permit = gate.acquire_owned().await?;
            let mut request = url.into_client_request()?;
            request
                .headers_mut()
                .insert("sec-websocket-protocol", "graphql-transport-ws".parse()?);
            let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
            let init = json!({"type":"connection_init","payload":{"Authorization": format!("Bearer {token}")}});
            ws.send(Message::text(init.to_string())).await?;
            while let Some(frame) = ws.next().await {
                if let Message::Text(t) = frame?
                    && t.contains("connection_ack")
                {
                    break;
                }
            }
            let subscribe = json!({"id":"1","type":"subscribe","payload":{"query":"subscription { notifications { id summary } }"}});
            ws.send(Message::text(subscribe.to_string())).await?;
            drop(permit);
            ready_tx.send(()).await.ok();
            while let Some(frame) = ws.next().await {
                let Message::Text(text) = frame? else { continue };
                let received = Instant::now();
                let v: Value = serde_json::from_str(&text)?;
                match v["type"].as_str() {
                    Some("next") => {
                        let id = v["payload"]["data"]["notifications"]["id"].as_str().unwrap_or_default();
                        if let Some(t0) = sent_at.lock().unwrap().get(id) {
                            latencies.lock().unwrap().push(received - *t0);
                        }
                    }
                    Some("ping") => ws.send(Message::text(r#"{"type":"pong"}"#)).await?,
                    Some("complete") | Some("error") => break,
                    _ => {}
                }
            }
            anyhow::Ok(())
        });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut ready = 0;
    while ready < subscribers {
        tokio::select! {
            Some(()) = ready_rx.recv() => ready += 1,
            Some(done) = clients.join_next() => {
                // A client ended before it was ready: say why.
                done??;
                anyhow::bail!("a subscriber's connection ended before it was ready");
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                anyhow::bail!("only {ready} of {subscribers} subscribers connected within 120 s");
            }
        }
    }
    let connect_time = connect_started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_kib(pid);

    // Post the webhooks at a steady rate.
    let expected = events * (subscribers / CUSTOMERS).max(1);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    for e in 0..events {
        tick.tick().await;
        let customer = format!("cust-{:04}", e % CUSTOMERS + 1);
        let event_id = format!("bench-{e}");
        let body = json!({
            "id": event_id,
            "type": "order.status_changed",
            "occurredAt": chrono::Utc::now().to_rfc3339(),
            "data": { "orderId": orders[e % CUSTOMERS], "customerId": customer, "status": "SHIPPED" }
        })
        .to_string();
        let ts = chrono::Utc::now().timestamp();
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes())?;
        mac.update(format!("{ts}.").as_bytes());
        mac.update(body.as_bytes());
        let signature = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
        sent_at
            .lock()
            .unwrap()
            .insert(format!("backend:{event_id}"), Instant::now());
        let status = http
            .post(format!("{base}/webhooks/backend"))
            .header("content-type", "application/json")
            .header("x-webhook-timestamp", ts.to_string())
            .header("x-webhook-signature", signature)
            .body(body)
            .send()
            .await?
            .status();
        anyhow::ensure!(status.is_success(), "webhook answered {status}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while latencies.lock().unwrap().len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut all = latencies.lock().unwrap().clone();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let per_connection = (rss_after.saturating_sub(rss_before)) as f64 / subscribers as f64;
    println!(
        "fan-out: {subscribers} websocket subscribers (connected in {:.1} s), {events} webhooks at {rate}/s, \
         {} of {expected} deliveries; latency webhook POST -> frame p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         server RSS {} MiB -> {} MiB ({:.1} KiB per connection)",
        connect_time.as_secs_f64(),
        all.len(),
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(all.last().copied().unwrap_or_default()),
        rss_before / 1024,
        rss_after / 1024,
        per_connection,
    );
    clients.abort_all();
    server.kill().await.ok();
    Ok(())
}

async fn wait_until_up(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    for _ in 0..600 {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("switchyard did not come up within 60 s")
}

/// Resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
