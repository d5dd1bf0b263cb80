//! Notifications: how many per second go through the push outbox to the sandbox's push
//! providers on one instance, and how long a push takes from its webhook being accepted to the
//! provider receiving it.
//!
//! `cargo bench --bench notifications` (release). Two parts:
//!
//! 1. **Outbox throughput**, in this process: the sandbox's push providers (FCM, APNs over
//!    HTTP/2, Web Push, the SMTP sink) and the push channels wired to them as the embedded
//!    sandbox wires them; `NOTIFY_JOBS` jobs (default 20000) spread round-robin over
//!    `NOTIFY_CHANNELS` (default `fcm,apns,webpush`; `email` can be added) are enqueued in
//!    batches of `NOTIFY_BATCH` (default 50), and the clock runs from the first enqueue until
//!    the providers have received the last one. Then each channel alone, with `NOTIFY_CHANNEL_JOBS`
//!    jobs (default 5000). Both with the memory outbox and with the Redis outbox (a private
//!    `redis-server` on a free port, never 6379). `NOTIFY_SENDERS` overrides the outbox's
//!    `senders` (default: the config default).
//! 2. **Webhook → push latency**: the `switchyard` binary in its own process (embedded
//!    sandbox, simulator off); `NOTIFY_CUSTOMERS` demo customers (default 100) sign in and each
//!    registers one Web Push subscription from the sandbox (`POST /dev/webpush-subscription`,
//!    `registerDevice`); `NOTIFY_WEBHOOKS` signed `order.status_changed` SHIPPED webhooks
//!    (default 2000) at `NOTIFY_RATE` per second (default 200), each for an order of its
//!    customer. Latency runs from the webhook's 2xx answer at the client (and, as an upper
//!    bound, from sending the webhook) to the `received_at` the sandbox's Web Push service
//!    stamped on the push (`GET /dev/pushes`; both clocks are this machine's wall clock).
//!    Once in memory, once with events, outbox and notification store on a private Redis.
//!    `NOTIFY_LATENCY_CSV=<prefix>` also writes each webhook's times to `<prefix>.memory.csv`
//!    and `<prefix>.redis.csv` (ms since the first was sent: `webhook,sent,answered,received`).
//!
//! Every run checks that the providers received each job (each webhook's push) exactly once
//! and fails otherwise. Bounded in count and time: each run gives up after
//! `NOTIFY_TIMEOUT_SECS` (default 120).

#[path = "../tests/api/support/redis.rs"]
mod redis_server;

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use redis_server::RedisServer;
use sandbox::{ApnsEnvironment, ReceivedPush, Sandbox, SandboxConfig, WebPushSubscription};
use serde_json::{Value, json};
use sha2::Sha256;
use switchyard::config::{OutboxConfig, Secret};
use switchyard::notify::outbox::{self, Deliveries, Job, Settlement};
use switchyard::push::{Channels, PushMessage, Target};
use tokio::sync::watch;

const SECRET: &str = "bench-webhook-secret";
/// The bundle id of the demo iOS app.
const APP: &str = "com.example.switchyard";
/// Distinct APNs devices and Web Push subscriptions the jobs go to (round-robin).
const DEVICES: usize = 100;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    switchyard::telemetry::init(&switchyard::config::LogConfig {
        filter: "warn".into(),
        ..Default::default()
    });
    let jobs = env_or("NOTIFY_JOBS", 20_000).max(1);
    let channel_jobs = env_or("NOTIFY_CHANNEL_JOBS", 5_000);
    let batch = env_or("NOTIFY_BATCH", 50).max(1);
    let timeout = Duration::from_secs(env_or("NOTIFY_TIMEOUT_SECS", 120) as u64);
    let senders = env_or("NOTIFY_SENDERS", OutboxConfig::default().senders).max(1);
    let mix: Vec<Kind> = match std::env::var("NOTIFY_CHANNELS") {
        Ok(list) => list
            .split(',')
            .map(|name| Kind::parse(name.trim()))
            .collect::<anyhow::Result<_>>()?,
        // E-mail is left out of the mix by default: it is the bottleneck (see the README).
        Err(_) => vec![Kind::Fcm, Kind::Apns, Kind::WebPush],
    };
    ensure!(!mix.is_empty(), "NOTIFY_CHANNELS names no channel");
    let customers = env_or("NOTIFY_CUSTOMERS", 100).clamp(1, 1000);
    let webhooks = env_or("NOTIFY_WEBHOOKS", 2_000);
    let rate = env_or("NOTIFY_RATE", 200).max(1);

    // ----- 1. outbox throughput ---------------------------------------------------------------
    let providers = Providers::start().await?;
    let redis = RedisServer::start();
    let bench = Throughput {
        providers: &providers,
        redis_url: redis.url(),
        batch,
        senders,
        timeout,
    };
    let mix_names = mix.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ");
    for backend in [Backend::Memory, Backend::Redis] {
        let mixed = bench.run(backend, &mix, jobs).await?;
        println!(
            "outbox ({}, {senders} senders): {jobs} jobs over {mix_names} (batches of {batch}) \
             in {:.2} s: {:.0} jobs/s, each received once (enqueued in {:.2} s)",
            backend.name(),
            mixed.elapsed.as_secs_f64(),
            mixed.rate(),
            mixed.enqueued.as_secs_f64(),
        );
        if channel_jobs > 0 {
            let mut alone = Vec::new();
            for kind in Kind::ALL {
                let run = bench.run(backend, &[kind], channel_jobs).await?;
                alone.push(format!("{} {:.0}/s", kind.name(), run.rate()));
            }
            println!(
                "  each channel alone, {channel_jobs} jobs: {}",
                alone.join(", ")
            );
        }
    }
    providers.sandbox.shutdown().await;

    // ----- 2. webhook -> push latency ----------------------------------------------------------
    if webhooks > 0 {
        for store in [None, Some(&redis)] {
            let label = if store.is_some() { "redis" } else { "memory" };
            let Latencies {
                from_answer,
                from_send,
                answer,
                early,
            } = latency(store, label, customers, webhooks, rate, timeout).await?;
            let early = if early > 0 {
                format!(" ({early} stamped before their 2xx reached the client: counted as 0)")
            } else {
                String::new()
            };
            println!(
                "webhook -> push ({label}): {webhooks} webhooks at {rate}/s over {customers} \
                 customers (one Web Push device each), {} of {webhooks} pushes received once\n  \
                 2xx -> received      {}{early}\n  \
                 webhook sent -> received {}\n  \
                 webhook sent -> 2xx      {}",
                from_answer.len(),
                summary(&from_answer),
                summary(&from_send),
                summary(&answer),
            );
        }
    }
    Ok(())
}

// ----- part 1 ---------------------------------------------------------------------------------

/// The push channels a job can go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Fcm,
    Apns,
    WebPush,
    Email,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Fcm, Kind::Apns, Kind::WebPush, Kind::Email];

    fn name(self) -> &'static str {
        match self {
            Kind::Fcm => "fcm",
            Kind::Apns => "apns",
            Kind::WebPush => "webpush",
            Kind::Email => "email",
        }
    }

    fn parse(name: &str) -> anyhow::Result<Kind> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .with_context(|| {
                format!("NOTIFY_CHANNELS: no channel {name:?} (fcm, apns, webpush, email)")
            })
    }
}

/// Where the jobs wait.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Memory,
    Redis,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis => "redis",
        }
    }
}

/// The sandbox's push providers, the channels wired to them, and the devices the jobs go to.
struct Providers {
    sandbox: Sandbox,
    channels: Arc<Channels>,
    /// APNs device tokens the sandbox minted (production).
    apns: Vec<String>,
    /// Web Push subscriptions made with the channels' VAPID key.
    webpush: Vec<WebPushSubscription>,
}

impl Providers {
    async fn start() -> anyhow::Result<Providers> {
        let sandbox = Sandbox::start(SandboxConfig {
            simulator_interval_ms: 0,
            ..SandboxConfig::default()
        })
        .await?;
        let config = switchyard::embedded::sandbox_push_wiring(&sandbox)?;
        let channels = Arc::new(switchyard::push::build(&config)?);
        let key = channels
            .vapid_public_key()
            .context("the sandbox wiring configures Web Push")?;
        let apns = (0..DEVICES)
            .map(|_| sandbox.push().apns_device(APP, ApnsEnvironment::Production))
            .collect();
        let webpush = (0..DEVICES)
            .map(|_| sandbox.push().webpush_subscribe(Some(&key)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Providers {
            sandbox,
            channels,
            apns,
            webpush,
        })
    }

    /// The `i`-th job of run `run`, to a `kind` device.
    fn job(&self, run: &str, i: usize, kind: Kind) -> Job {
        let notification = format!("bench-{run}-{i}");
        let order = format!("ord-{:06}", i % 20_000 + 1);
        let (device, address_key, target) = match kind {
            Kind::Fcm => {
                let token = format!("bench-device-{i}");
                (
                    format!("fcm-{i}"),
                    Some(format!("fcm:{token}")),
                    Target::Fcm { token },
                )
            }
            Kind::Apns => {
                let token = self.apns[i % self.apns.len()].clone();
                (
                    format!("apns-{}", i % self.apns.len()),
                    Some(format!("apns:{token}")),
                    Target::Apns {
                        token,
                        topic: APP.to_owned(),
                        sandbox: false,
                    },
                )
            }
            Kind::WebPush => {
                let subscription = &self.webpush[i % self.webpush.len()];
                (
                    format!("web-{}", i % self.webpush.len()),
                    Some(format!("webpush:{}", subscription.endpoint)),
                    Target::WebPush {
                        endpoint: subscription.endpoint.clone(),
                        p256dh: subscription.keys.p256dh.clone(),
                        auth: subscription.keys.auth.clone(),
                    },
                )
            }
            Kind::Email => (
                "email".to_owned(),
                None,
                Target::Email {
                    address: format!("customer-{}@example.com", i % 1000),
                    locale: "en-GB".to_owned(),
                },
            ),
        };
        Job {
            id: format!("{notification}/{device}"),
            notification_id: notification.clone(),
            customer_id: format!("cust-{:04}", i % 1000 + 1),
            address_key,
            target,
            message: PushMessage {
                id: notification,
                title: "Your order is on its way".to_owned(),
                body: format!("Order {order} has shipped."),
                data: BTreeMap::from([
                    ("order".to_owned(), order.clone()),
                    ("kind".to_owned(), "OrderShipped".to_owned()),
                ]),
                deep_link: Some(format!("retail://orders/{order}")),
                collapse_key: Some(format!("order:{order}")),
                urgent: false,
                ttl: Duration::from_secs(24 * 3600),
            },
            not_before: None,
            attempts: 0,
        }
    }
}

/// Counts what the outbox settled; anything but a delivery is kept, to fail with.
#[derive(Default)]
struct Tally {
    delivered: AtomicUsize,
    other: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Deliveries for Tally {
    async fn gone(&self, _job: &Job) {}

    async fn settled(&self, job: &Job, settlement: &Settlement) {
        match settlement {
            Settlement::Delivered => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            other => self
                .other
                .lock()
                .unwrap()
                .push(format!("{}: {other:?}", job.id)),
        }
    }
}

impl Tally {
    fn delivered(&self) -> usize {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Fails when any send was settled otherwise than delivered.
    fn check(&self) -> anyhow::Result<()> {
        let other = self.other.lock().unwrap();
        ensure!(
            other.is_empty(),
            "{} sends were not delivered, e.g. {:?}",
            other.len(),
            &other[..other.len().min(5)]
        );
        Ok(())
    }
}

/// The throughput runs' setup.
struct Throughput<'a> {
    providers: &'a Providers,
    redis_url: String,
    batch: usize,
    senders: usize,
    timeout: Duration,
}

/// What one run measured.
struct Run {
    jobs: usize,
    /// From the first enqueue to the last push received.
    elapsed: Duration,
    /// From the first enqueue to the last enqueue answered.
    enqueued: Duration,
}

impl Run {
    fn rate(&self) -> f64 {
        self.jobs as f64 / self.elapsed.as_secs_f64()
    }
}

impl Throughput<'_> {
    /// `n` jobs round-robin over `kinds` through a fresh outbox on `backend`; fails unless the
    /// providers received each exactly once.
    async fn run(&self, backend: Backend, kinds: &[Kind], n: usize) -> anyhow::Result<Run> {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let run = format!("r{}", RUNS.fetch_add(1, Ordering::Relaxed));
        let push = self.providers.sandbox.push();
        push.reset();
        let stream_key = format!("bench:outbox:{run}");
        let config = OutboxConfig {
            redis_url: match backend {
                Backend::Memory => None,
                Backend::Redis => Some(Secret::new(self.redis_url.clone())),
            },
            stream_key: stream_key.clone(),
            senders: self.senders,
            ..OutboxConfig::default()
        };
        let jobs: Vec<Job> = (0..n)
            .map(|i| self.providers.job(&run, i, kinds[i % kinds.len()]))
            .collect();
        let expected: Vec<String> = jobs.iter().map(|job| job.notification_id.clone()).collect();
        let batches: Vec<Vec<Job>> = jobs.chunks(self.batch).map(<[Job]>::to_vec).collect();
        drop(jobs);

        let tally = Arc::new(Tally::default());
        let (stop, shutdown) = watch::channel(false);
        let started = outbox::start(
            &config,
            Arc::clone(&self.providers.channels),
            Arc::clone(&tally) as Arc<dyn Deliveries>,
            shutdown,
        )
        .await?;

        let began = Instant::now();
        let deadline = began + self.timeout;
        let outbox = Arc::clone(&started.outbox);
        let enqueue = tokio::spawn(async move {
            for batch in batches {
                outbox.enqueue(batch).await?;
            }
            anyhow::Ok(began.elapsed())
        });
        // Poll the providers' count (a lock and a length): a 1 ms resolution on runs of
        // seconds.
        while push.received_count() < n {
            tally.check()?;
            if Instant::now() > deadline {
                bail!(
                    "{} run {run}: only {} of {n} jobs received within {:?} ({} settled)",
                    backend.name(),
                    push.received_count(),
                    self.timeout,
                    tally.delivered(),
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let elapsed = began.elapsed();
        let enqueued = enqueue.await??;
        // Every send settled (acknowledged in the outbox), then stop.
        while tally.delivered() < n {
            tally.check()?;
            ensure!(
                Instant::now() < deadline,
                "{} run {run}: {} of {n} sends settled within {:?}",
                backend.name(),
                tally.delivered(),
                self.timeout,
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tally.check()?;
        let dead = started.dead_letters(10).await?;
        ensure!(dead.is_empty(), "dead letters: {dead:?}");
        let _ = stop.send(true);
        started.join().await;
        if matches!(backend, Backend::Redis) {
            let (len, pending) = stream_state(&self.redis_url, &stream_key).await?;
            ensure!(
                (len, pending) == (0, 0),
                "run {run}: {len} entries left in the stream, {pending} pending"
            );
        }

        // Each job received exactly once: no loss, no duplicates.
        let mut counts: HashMap<String, usize> = HashMap::with_capacity(n);
        for id in push.received().iter().map(notification_id) {
            *counts.entry(id).or_default() += 1;
        }
        let missing = expected
            .iter()
            .filter(|id| !counts.contains_key(*id))
            .count();
        let repeated = counts.values().filter(|&&c| c > 1).count();
        let total: usize = counts.values().sum();
        ensure!(
            missing == 0 && repeated == 0 && total == n && counts.len() == n,
            "{} run {run}: {total} pushes for {n} jobs: {missing} missing, {repeated} received \
             more than once, {} unexpected",
            backend.name(),
            counts
                .keys()
                .filter(|id| !id.starts_with(&format!("bench-{run}-")))
                .count(),
        );
        Ok(Run {
            jobs: n,
            elapsed,
            enqueued,
        })
    }
}

/// The notification id a provider received.
fn notification_id(push: &ReceivedPush) -> String {
    match push {
        ReceivedPush::Fcm(fcm) => fcm.message["data"]["notificationId"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        ReceivedPush::Apns(apns) => apns.payload["notificationId"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        ReceivedPush::WebPush(webpush) => webpush_notification_id(&webpush.payload),
        ReceivedPush::Email(email) => email
            .data
            .lines()
            .find_map(|line| line.strip_prefix("Message-ID: <notification-"))
            .and_then(|rest| rest.split('@').next())
            .unwrap_or_default()
            .to_owned(),
    }
}

/// The `notificationId` of a decrypted Web Push payload.
fn webpush_notification_id(payload: &str) -> String {
    serde_json::from_str::<Value>(payload)
        .ok()
        .and_then(|payload| payload["notificationId"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Entries in the outbox stream, and entries pending in its group.
async fn stream_state(url: &str, stream: &str) -> anyhow::Result<(u64, u64)> {
    let mut redis = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let len: u64 = redis::cmd("XLEN")
        .arg(stream)
        .query_async(&mut redis)
        .await?;
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg("senders")
        .query_async(&mut redis)
        .await?;
    let pending = match pending {
        redis::Value::Array(parts) => match parts.first() {
            Some(redis::Value::Int(n)) => u64::try_from(*n).unwrap_or(u64::MAX),
            _ => u64::MAX,
        },
        _ => u64::MAX,
    };
    Ok((len, pending))
}

// ----- part 2 ---------------------------------------------------------------------------------

/// Each push's latency, sorted.
struct Latencies {
    /// From the webhook's 2xx at the client to the push's `received_at`.
    from_answer: Vec<Duration>,
    /// From sending the webhook to the push's `received_at`.
    from_send: Vec<Duration>,
    /// From sending the webhook to its 2xx.
    answer: Vec<Duration>,
    /// Pushes stamped before their webhook's answer reached the client (counted as zero).
    early: usize,
}

/// When a webhook was sent, and when its 2xx came back.
#[derive(Clone, Copy)]
struct Posted {
    sent: DateTime<Utc>,
    answered: DateTime<Utc>,
}

/// Runs the `switchyard` binary (on `redis` when given: events, outbox and notification
/// store), registers a Web Push device for each of `customers`, posts `webhooks` shipped
/// webhooks at `rate` per second, and answers each push's latency from its webhook's 2xx to
/// its arrival.
async fn latency(
    redis: Option<&RedisServer>,
    label: &str,
    customers: usize,
    webhooks: usize,
    rate: usize,
    timeout: Duration,
) -> anyhow::Result<Latencies> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command
        .env("SWITCHYARD_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("SWITCHYARD_WEBHOOKS__BACKEND_SECRET", SECRET)
        .env("SWITCHYARD_SANDBOX__SIMULATOR_INTERVAL_MS", "0")
        .env("SWITCHYARD_LOG__FILTER", "warn")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    if let Some(redis) = redis {
        // A key prefix of this run's own: the throughput runs used the same Redis.
        command
            .env("SWITCHYARD_EVENTS__REDIS_URL", redis.url())
            .env("SWITCHYARD_EVENTS__STREAM_KEY", "bench:events")
            .env("SWITCHYARD_OUTBOX__REDIS_URL", redis.url())
            .env("SWITCHYARD_OUTBOX__STREAM_KEY", "bench:latency:outbox")
            .env("SWITCHYARD_NOTIFICATIONS__REDIS_URL", redis.url())
            .env("SWITCHYARD_NOTIFICATIONS__KEY_PREFIX", "bench:notify:");
    }
    let mut server = command.spawn()?;
    let http = reqwest::Client::new();
    wait_until_up(&http, &base).await?;

    // Sign in, find an order of each customer, register a Web Push subscription.
    let mut orders = Vec::with_capacity(customers);
    for c in 1..=customers {
        let customer = format!("cust-{c:04}");
        let answer: Value = http
            .post(format!("{base}/dev/token"))
            .json(&json!({ "user": customer }))
            .send()
            .await?
            .json()
            .await?;
        let token = answer["access_token"]
            .as_str()
            .context("no access_token from /dev/token")?
            .to_owned();
        let me = graphql(
            &http,
            &base,
            &token,
            "{ me { orders(first: 1) { edges { node { id } } } } }",
            json!({}),
        )
        .await?;
        let order = me["me"]["orders"]["edges"][0]["node"]["id"]
            .as_str()
            .with_context(|| format!("{customer} has no order: {me}"))?
            .to_owned();
        let input: Value = http
            .post(format!("{base}/dev/webpush-subscription"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let device = graphql(
            &http,
            &base,
            &token,
            "mutation($input: RegisterDeviceInput!) { registerDevice(input: $input) { id pushService } }",
            json!({ "input": input }),
        )
        .await?;
        ensure!(
            device["registerDevice"]["pushService"] == "WEB_PUSH",
            "registerDevice: {device}"
        );
        orders.push((customer, order));
    }

    // The webhooks, at a steady rate; each one's times by the notification it makes.
    let accepted: Arc<Mutex<HashMap<String, (usize, Posted)>>> = Arc::default();
    let mut posts = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let run = Utc::now().timestamp_millis();
    for e in 0..webhooks {
        tick.tick().await;
        let (customer, order) = &orders[e % customers];
        let event_id = format!("bench-{run}-{e}");
        let body = json!({
            "id": event_id,
            "type": "order.status_changed",
            "occurredAt": Utc::now().to_rfc3339(),
            "data": { "orderId": order, "customerId": customer, "status": "SHIPPED" }
        })
        .to_string();
        let ts = Utc::now().timestamp();
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes())?;
        mac.update(format!("{ts}.").as_bytes());
        mac.update(body.as_bytes());
        let signature = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
        let request = http
            .post(format!("{base}/webhooks/backend"))
            .header("content-type", "application/json")
            .header("x-webhook-timestamp", ts.to_string())
            .header("x-webhook-signature", signature)
            .body(body);
        let accepted = Arc::clone(&accepted);
        posts.spawn(async move {
            let sent = Utc::now();
            let status = request.send().await?.status();
            let answered = Utc::now();
            ensure!(status.is_success(), "webhook {event_id} answered {status}");
            accepted.lock().unwrap().insert(
                format!("ntf:backend:{event_id}"),
                (e, Posted { sent, answered }),
            );
            anyhow::Ok(())
        });
    }
    while let Some(posted) = posts.join_next().await {
        posted??;
    }

    // Wait for every push (polled after the webhooks are all in, so the listing does not
    // compete with them; arrival times come from the sandbox's own stamps).
    let deadline = Instant::now() + timeout;
    let pushes = loop {
        let pushes: Vec<Value> = http
            .get(format!("{base}/dev/pushes"))
            .send()
            .await?
            .json()
            .await?;
        if pushes.len() >= webhooks {
            // Anything more than expected would be a duplicate: give it a moment to show.
            tokio::time::sleep(Duration::from_millis(500)).await;
            break http
                .get(format!("{base}/dev/pushes"))
                .send()
                .await?
                .json::<Vec<Value>>()
                .await?;
        }
        ensure!(
            Instant::now() < deadline,
            "only {} of {webhooks} pushes received within {timeout:?}",
            pushes.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    server.kill().await.ok();

    let accepted = accepted.lock().unwrap();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut latencies = Latencies {
        from_answer: Vec::with_capacity(webhooks),
        from_send: Vec::with_capacity(webhooks),
        answer: Vec::with_capacity(webhooks),
        early: 0,
    };
    let mut rows = Vec::with_capacity(webhooks);
    for push in &pushes {
        ensure!(push["provider"] == "webpush", "an unexpected push: {push}");
        let id = webpush_notification_id(push["payload"].as_str().unwrap_or_default());
        let received: DateTime<Utc> = push["received_at"]
            .as_str()
            .context("a push without received_at")?
            .parse()?;
        let (id, (e, posted)) = accepted
            .get_key_value(&id)
            .with_context(|| format!("a push for no webhook of this run: {id:?}"))?;
        *seen.entry(id.as_str()).or_default() += 1;
        // Stamped before the client had the 2xx: the answer took longer to reach the client
        // than the whole push path took; counted (and shown) as zero.
        let from_answer = (received - posted.answered).to_std().unwrap_or_else(|_| {
            latencies.early += 1;
            Duration::ZERO
        });
        latencies.from_answer.push(from_answer);
        latencies
            .from_send
            .push((received - posted.sent).to_std().unwrap_or_default());
        latencies
            .answer
            .push((posted.answered - posted.sent).to_std().unwrap_or_default());
        rows.push((*e, posted.sent, posted.answered, received));
    }
    let repeated = seen.values().filter(|&&c| c > 1).count();
    ensure!(
        seen.len() == webhooks && repeated == 0 && pushes.len() == webhooks,
        "{} pushes for {webhooks} webhooks: {} distinct, {repeated} received more than once",
        pushes.len(),
        seen.len()
    );
    if let Ok(path) = std::env::var("NOTIFY_LATENCY_CSV") {
        rows.sort_by_key(|row| row.0);
        let start = rows.first().map(|row| row.1).unwrap_or_else(Utc::now);
        let at = |t: DateTime<Utc>| (t - start).num_microseconds().unwrap_or(0) as f64 / 1000.0;
        let mut csv = String::from("webhook,sent,answered,received\n");
        for (e, sent, answered, received) in rows {
            csv.push_str(&format!(
                "{e},{:.3},{:.3},{:.3}\n",
                at(sent),
                at(answered),
                at(received)
            ));
        }
        let path = format!("{path}.{label}.csv");
        std::fs::write(&path, csv).with_context(|| format!("writing {path}"))?;
    }
    latencies.from_answer.sort();
    latencies.from_send.sort();
    latencies.answer.sort();
    Ok(latencies)
}

/// `p50 …, p99 …, max …` of sorted latencies, in ms.
fn summary(sorted: &[Duration]) -> String {
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(pct(sorted, 0.50)),
        ms(pct(sorted, 0.99)),
        ms(sorted.last().copied().unwrap_or_default()),
    )
}

async fn graphql(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    query: &str,
    variables: Value,
) -> anyhow::Result<Value> {
    let answer: Value = http
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await?
        .json()
        .await?;
    ensure!(answer.get("errors").is_none(), "GraphQL errors: {answer}");
    Ok(answer["data"].clone())
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
    bail!("switchyard did not come up within 60 s")
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
