//! The push outbox against the sandbox's push providers over real HTTP (and HTTP/2 for
//! APNs), in memory and on a private `redis-server`: what the providers received comes from
//! the sandbox's own record. The `Deliveries` hook is a recording fake standing in for the
//! device store only; it is also how the tests await each settled send instead of sleeping.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redis::AsyncCommands as _;
use sandbox::{
    ApnsEnvironment, ReceivedPush, Sandbox, SandboxConfig, Upstream, UpstreamKnobs,
    WebPushSubscription,
};
use serde_json::Value;
use switchyard::config::{OutboxConfig, Secret};
use switchyard::notify::outbox::{self, Deliveries, Job, Settlement, Started};
use switchyard::push::{Channel as _, Channels, PushMessage, Target};
use tokio::sync::watch;

use crate::support::WAIT;
use crate::support::redis::{RedisServer, TcpProxy};

/// The bundle id of the demo iOS app.
const APP: &str = "com.example.switchyard";
/// The FCM send route, as the sandbox counts it.
const FCM_SEND: &str = "POST /v1/projects/{project}/messages:send";
/// The Web Push route, as the sandbox counts it.
const WEBPUSH_SEND: &str = "POST /push/{id}";

// ----- harness --------------------------------------------------------------------------------

/// One settled send, as the outbox reported it.
#[derive(Debug, Clone)]
struct Settled {
    /// Which outbox settled it (when several share a recorder).
    by: &'static str,
    job: String,
    attempts: u32,
    settlement: Settlement,
    at: DateTime<Utc>,
}

/// The recording fake of the device store: what was gone, and every settled send.
struct Recorder {
    gone: Mutex<Vec<String>>,
    settled: watch::Sender<Vec<Settled>>,
}

impl Recorder {
    fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            gone: Mutex::default(),
            settled: watch::Sender::new(Vec::new()),
        })
    }

    fn gone(&self) -> Vec<String> {
        self.gone
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn settled(&self) -> Vec<Settled> {
        self.settled.borrow().clone()
    }

    /// Waits (at most [`WAIT`]) until the settled sends satisfy `done`; answers them.
    async fn until(&self, what: &str, done: impl Fn(&[Settled]) -> bool) -> Vec<Settled> {
        let mut settled = self.settled.subscribe();
        match tokio::time::timeout(WAIT, settled.wait_for(|all| done(all))).await {
            Ok(Ok(all)) => all.clone(),
            _ => panic!(
                "timed out waiting for {what}; settled: {:#?}",
                self.settled()
            ),
        }
    }

    /// Waits until `n` sends settled as `label` (`delivered`, `gone`, ...).
    async fn until_count(&self, label: &str, n: usize) -> Vec<Settled> {
        self.until(&format!("{n} {label}"), |all| count(all, label) >= n)
            .await
    }
}

fn count(settled: &[Settled], label: &str) -> usize {
    settled
        .iter()
        .filter(|s| s.settlement.label() == label)
        .count()
}

/// What one outbox tells the shared recorder, under its name.
struct Tagged {
    by: &'static str,
    recorder: Arc<Recorder>,
}

#[async_trait::async_trait]
impl Deliveries for Tagged {
    async fn gone(&self, job: &Job) {
        self.recorder
            .gone
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(job.id.clone());
    }

    async fn settled(&self, job: &Job, settlement: &Settlement) {
        let record = Settled {
            by: self.by,
            job: job.id.clone(),
            attempts: job.attempts,
            settlement: settlement.clone(),
            at: Utc::now(),
        };
        self.recorder.settled.send_modify(|all| all.push(record));
    }
}

/// A sandbox with `knobs`, and the push channels wired to it as the embedded sandbox wires
/// them.
async fn providers(knobs: SandboxConfig) -> (Sandbox, Arc<Channels>) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    switchyard::telemetry::init(&switchyard::config::LogConfig {
        filter: "warn".into(),
        ..Default::default()
    });
    let sandbox = Sandbox::start(SandboxConfig {
        simulator_interval_ms: 0,
        ..knobs
    })
    .await
    .expect("sandbox starts");
    let config = switchyard::embedded::sandbox_push_wiring(&sandbox).expect("push wiring");
    let channels = switchyard::push::build(&config).expect("channels build");
    (sandbox, Arc::new(channels))
}

/// Where the jobs wait.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Memory,
    Redis,
}

/// A running outbox, with its recorder and its shutdown switch.
struct Running {
    started: Started,
    recorder: Arc<Recorder>,
    stop: watch::Sender<bool>,
}

impl Running {
    async fn enqueue(&self, jobs: Vec<Job>) {
        self.started.outbox.enqueue(jobs).await.expect("enqueued");
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(WAIT, self.started.join())
            .await
            .expect("the outbox stops promptly");
    }
}

/// Small waits, so that retries happen within a test.
fn quick(config: OutboxConfig) -> OutboxConfig {
    OutboxConfig {
        backoff_base_ms: 5,
        backoff_max_ms: 20,
        ..config
    }
}

fn on_redis(url: &str, config: OutboxConfig) -> OutboxConfig {
    OutboxConfig {
        redis_url: Some(Secret::new(url)),
        ..config
    }
}

async fn start(config: OutboxConfig, channels: &Arc<Channels>) -> Running {
    start_recording(config, channels, Recorder::new(), "").await
}

/// An outbox reporting to `recorder` as `by`.
async fn start_recording(
    config: OutboxConfig,
    channels: &Arc<Channels>,
    recorder: Arc<Recorder>,
    by: &'static str,
) -> Running {
    let (stop, shutdown) = watch::channel(false);
    let deliveries = Arc::new(Tagged {
        by,
        recorder: Arc::clone(&recorder),
    });
    let started = outbox::start(&config, Arc::clone(channels), deliveries, shutdown)
        .await
        .expect("the outbox starts");
    Running {
        started,
        recorder,
        stop,
    }
}

/// An outbox on `backend` (a fresh private Redis for [`Backend::Redis`], returned to keep it
/// running) with `config`.
async fn start_on(
    backend: Backend,
    config: OutboxConfig,
    channels: &Arc<Channels>,
) -> (Running, Option<RedisServer>) {
    match backend {
        Backend::Memory => (start(config, channels).await, None),
        Backend::Redis => {
            let redis = RedisServer::start();
            let running = start(on_redis(&redis.url(), config), channels).await;
            (running, Some(redis))
        }
    }
}

fn message(notification: &str) -> PushMessage {
    PushMessage {
        id: notification.to_owned(),
        title: "Your order has shipped".to_owned(),
        body: "ord-016201 is on its way.".to_owned(),
        data: BTreeMap::from([("orderId".to_owned(), "ord-016201".to_owned())]),
        deep_link: None,
        collapse_key: None,
        urgent: true,
        ttl: Duration::from_secs(3600),
    }
}

/// The job delivering notification `notification` to device `device` at `target`.
fn job(notification: &str, device: &str, target: Target) -> Job {
    Job {
        id: format!("{notification}/{device}"),
        notification_id: notification.to_owned(),
        customer_id: "cust-0001".to_owned(),
        address_key: Some(format!("{}:{device}", target.kind())),
        target,
        message: message(notification),
        not_before: None,
        attempts: 0,
    }
}

fn fcm(token: &str) -> Target {
    Target::Fcm {
        token: token.to_owned(),
    }
}

fn webpush_at(sandbox: &Sandbox, subscription: &WebPushSubscription, id: &str) -> Target {
    Target::WebPush {
        endpoint: format!("{}/push/{id}", sandbox.urls().webpush),
        p256dh: subscription.keys.p256dh.clone(),
        auth: subscription.keys.auth.clone(),
    }
}

fn subscribe(sandbox: &Sandbox, channels: &Channels) -> WebPushSubscription {
    let key = channels.vapid_public_key().expect("web push is configured");
    sandbox
        .push()
        .webpush_subscribe(Some(&key))
        .expect("a subscription")
}

/// The `notificationId` of each push the providers accepted, oldest first.
fn received_ids(sandbox: &Sandbox) -> Vec<String> {
    sandbox
        .pushes()
        .iter()
        .map(|push| match push {
            ReceivedPush::Fcm(fcm) => fcm.message["data"]["notificationId"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            ReceivedPush::Apns(apns) => apns.payload["notificationId"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            ReceivedPush::WebPush(webpush) => serde_json::from_str::<Value>(&webpush.payload)
                .ok()
                .and_then(|payload| payload["notificationId"].as_str().map(str::to_owned))
                .unwrap_or_default(),
            ReceivedPush::Email(email) => email
                .data
                .lines()
                .find_map(|line| line.strip_prefix("Message-ID: <notification-"))
                .and_then(|rest| rest.split('@').next())
                .unwrap_or_default()
                .to_owned(),
        })
        .collect()
}

/// How often each notification id was received.
fn received_counts(sandbox: &Sandbox) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for id in received_ids(sandbox) {
        *counts.entry(id).or_default() += 1;
    }
    counts
}

fn requests(sandbox: &Sandbox, upstream: Upstream, route: &str) -> u64 {
    sandbox.requests(upstream).get(route).copied().unwrap_or(0)
}

async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Entries in the push outbox's stream, and entries pending in its group (the default keys).
pub(crate) async fn stream_state(url: &str) -> (u64, u64) {
    let mut redis = redis_connection(url).await;
    let len: u64 = redis.xlen("switchyard:outbox").await.unwrap();
    let pending: Value = redis::cmd("XPENDING")
        .arg("switchyard:outbox")
        .arg("senders")
        .query_async::<redis::Value>(&mut redis)
        .await
        .map(|reply| match reply {
            redis::Value::Array(parts) => match parts.first() {
                Some(redis::Value::Int(n)) => Value::from(*n),
                _ => Value::Null,
            },
            _ => Value::Null,
        })
        .unwrap();
    (len, pending.as_u64().unwrap_or(u64::MAX))
}

// ----- delivery -------------------------------------------------------------------------------

/// Jobs to every kind of channel are each delivered once.
async fn delivers_each_job_once(backend: Backend) {
    let (sandbox, channels) = providers(SandboxConfig::default()).await;
    let (running, redis) = start_on(backend, OutboxConfig::default(), &channels).await;
    let subscription = subscribe(&sandbox, &channels);
    let device = sandbox.push().apns_device(APP, ApnsEnvironment::Production);
    let mut jobs = Vec::new();
    for i in 0..8 {
        jobs.push(job(
            &format!("n-fcm-{i}"),
            "d1",
            fcm(&format!("device-{i}")),
        ));
        jobs.push(job(
            &format!("n-web-{i}"),
            "d2",
            Target::WebPush {
                endpoint: subscription.endpoint.clone(),
                p256dh: subscription.keys.p256dh.clone(),
                auth: subscription.keys.auth.clone(),
            },
        ));
    }
    jobs.push(job(
        "n-apns",
        "d3",
        Target::Apns {
            token: device,
            topic: APP.to_owned(),
            sandbox: false,
        },
    ));
    let mut mail = job(
        "n-mail",
        "email",
        Target::Email {
            address: "ada@example.com".to_owned(),
            locale: "en-GB".to_owned(),
        },
    );
    mail.address_key = None;
    jobs.push(mail);
    let expected: Vec<String> = jobs.iter().map(|j| j.notification_id.clone()).collect();

    running.enqueue(jobs.clone()).await;
    // The same jobs again (a retried enqueue): stored once.
    running.enqueue(jobs).await;
    let settled = running
        .recorder
        .until_count("delivered", expected.len())
        .await;

    assert!(settled.iter().all(|s| s.attempts == 1), "{settled:#?}");
    let counts = received_counts(&sandbox);
    assert_eq!(counts.len(), expected.len(), "{counts:?}");
    for id in &expected {
        assert_eq!(counts.get(id), Some(&1), "{id}: {counts:?}");
    }
    if let Some(redis) = &redis {
        assert_eq!(
            stream_state(&redis.url()).await,
            (0, 0),
            "nothing left in the stream, nothing pending"
        );
    }
    assert_eq!(running.recorder.settled().len(), expected.len());
    running.stop().await;
}

#[tokio::test]
async fn each_job_is_delivered_once_from_memory() {
    delivers_each_job_once(Backend::Memory).await;
}

#[tokio::test]
async fn each_job_is_delivered_once_from_redis() {
    delivers_each_job_once(Backend::Redis).await;
}

// ----- retries --------------------------------------------------------------------------------

/// A 503 with `Retry-After: 10` is retried no sooner than 10 s later, however short the
/// backoff; a 500 is retried with the backoff and dead-lettered after `max_attempts`.
async fn retries_honour_retry_after_and_end_in_the_dead_letters(backend: Backend) {
    let (sandbox, channels) = providers(SandboxConfig::default()).await;
    let config = quick(OutboxConfig {
        max_attempts: 3,
        ..OutboxConfig::default()
    });
    let (running, redis) = start_on(backend, config, &channels).await;
    let subscription = subscribe(&sandbox, &channels);
    let unavailable = job(
        "n-unavailable",
        "d1",
        webpush_at(&sandbox, &subscription, "unavailable-1"),
    );
    let internal = job(
        "n-internal",
        "d2",
        webpush_at(&sandbox, &subscription, "internal-1"),
    );

    let enqueued_at = Utc::now();
    running.enqueue(vec![unavailable, internal]).await;
    let settled = running
        .recorder
        .until("the 500 dead-lettered and the 503 retrying", |all| {
            count(all, "dead_lettered") == 1 && all.iter().any(|s| s.job == "n-unavailable/d1")
        })
        .await;

    // The 500: three sends a few milliseconds apart, then given up.
    let internal: Vec<&Settled> = settled
        .iter()
        .filter(|s| s.job == "n-internal/d2")
        .collect();
    let labels: Vec<&str> = internal.iter().map(|s| s.settlement.label()).collect();
    assert_eq!(
        labels,
        ["retrying", "retrying", "dead_lettered"],
        "{internal:#?}"
    );
    assert_eq!(internal[2].attempts, 3);
    let Settlement::DeadLettered { reason } = &internal[2].settlement else {
        unreachable!()
    };
    assert!(reason.contains("after 3 attempts"), "{reason}");

    // The 503 with Retry-After: 10 s: scheduled 10 s out, not sent again meanwhile.
    let first: Vec<&Settled> = settled
        .iter()
        .filter(|s| s.job == "n-unavailable/d1")
        .collect();
    let [first] = first.as_slice() else {
        panic!("one send of the 503 job so far: {settled:#?}");
    };
    let Settlement::Retrying { due, retry_after } = &first.settlement else {
        panic!("{first:#?}");
    };
    assert_eq!(*retry_after, Some(Duration::from_secs(10)));
    assert!(
        *due >= enqueued_at + chrono::Duration::seconds(10),
        "due {due}, enqueued {enqueued_at}"
    );
    assert_eq!(
        requests(&sandbox, Upstream::WebPush, WEBPUSH_SEND),
        4,
        "three sends of the 500, one of the 503"
    );
    if let Some(redis) = &redis {
        // Waiting in the delayed set, with its due time as the score.
        let mut connection = redis_connection(&redis.url()).await;
        let delayed: Vec<(String, f64)> = connection
            .zrange_withscores("switchyard:outbox:delayed", 0, -1)
            .await
            .unwrap();
        let [(member, score)] = delayed.as_slice() else {
            panic!("{delayed:?}");
        };
        let waiting: Job = serde_json::from_str(member).unwrap();
        assert_eq!(
            (waiting.id.as_str(), waiting.attempts),
            ("n-unavailable/d1", 1)
        );
        assert_eq!(*score as i64, due.timestamp_millis());
    }

    let dead = running.started.dead_letters(10).await.unwrap();
    let [letter] = dead.as_slice() else {
        panic!("{dead:#?}");
    };
    let dead_job = letter.job.as_ref().expect("the job");
    assert_eq!(
        (dead_job.id.as_str(), dead_job.attempts),
        ("n-internal/d2", 3)
    );
    assert_eq!(&letter.reason, reason);
    assert!(sandbox.pushes().is_empty());
    running.stop().await;
}

#[tokio::test]
async fn retries_honour_retry_after_and_end_in_the_dead_letters_from_memory() {
    retries_honour_retry_after_and_end_in_the_dead_letters(Backend::Memory).await;
}

#[tokio::test]
async fn retries_honour_retry_after_and_end_in_the_dead_letters_from_redis() {
    retries_honour_retry_after_and_end_in_the_dead_letters(Backend::Redis).await;
}

/// A provider that fails half its calls (503 UNAVAILABLE): every job is retried until
/// delivered, and delivered once.
async fn jobs_are_delivered_once_the_provider_recovers(backend: Backend) {
    let flaky = SandboxConfig {
        fcm: UpstreamKnobs::failing(0.5),
        ..SandboxConfig::default()
    };
    let (sandbox, channels) = providers(flaky).await;
    let config = quick(OutboxConfig {
        max_attempts: 30,
        ..OutboxConfig::default()
    });
    let (running, _redis) = start_on(backend, config, &channels).await;
    let jobs: Vec<Job> = (0..12)
        .map(|i| job(&format!("n-{i}"), "d", fcm(&format!("device-{i}"))))
        .collect();
    running.enqueue(jobs).await;
    let settled = running.recorder.until_count("delivered", 12).await;

    assert_eq!(count(&settled, "dead_lettered"), 0, "{settled:#?}");
    assert!(
        count(&settled, "retrying") > 0,
        "some sends failed: {settled:#?}"
    );
    let counts = received_counts(&sandbox);
    assert_eq!(counts.len(), 12, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    // A failed send is a refused message or a refused OAuth token exchange (the faults hit
    // both routes), so there are at most as many message calls as settled sends.
    let sends = requests(&sandbox, Upstream::Fcm, FCM_SEND);
    let settled_sends = 12 + count(&settled, "retrying") as u64;
    assert!(
        (12..=settled_sends).contains(&sends),
        "{sends} of {settled_sends}"
    );
    running.stop().await;
}

#[tokio::test]
async fn jobs_are_delivered_once_the_provider_recovers_from_memory() {
    jobs_are_delivered_once_the_provider_recovers(Backend::Memory).await;
}

#[tokio::test]
async fn jobs_are_delivered_once_the_provider_recovers_from_redis() {
    jobs_are_delivered_once_the_provider_recovers(Backend::Redis).await;
}

// ----- gone, rejected -------------------------------------------------------------------------

/// Gone tells the store once and is not retried; Rejected goes to the dead letters at once.
async fn gone_and_rejected_are_final(backend: Backend) {
    let (sandbox, channels) = providers(SandboxConfig::default()).await;
    let (running, redis) = start_on(backend, quick(OutboxConfig::default()), &channels).await;
    running
        .enqueue(vec![
            job("n-gone", "d1", fcm("unregistered-1")),
            job("n-bad", "d2", fcm("invalid-1")),
        ])
        .await;
    let settled = running
        .recorder
        .until("gone and dead-lettered", |all| {
            count(all, "gone") == 1 && count(all, "dead_lettered") == 1
        })
        .await;

    assert_eq!(settled.len(), 2, "nothing retried: {settled:#?}");
    assert!(settled.iter().all(|s| s.attempts == 1), "{settled:#?}");
    assert_eq!(running.recorder.gone(), ["n-gone/d1"]);
    assert_eq!(requests(&sandbox, Upstream::Fcm, FCM_SEND), 2);

    let dead = running.started.dead_letters(10).await.unwrap();
    let [letter] = dead.as_slice() else {
        panic!("{dead:#?}");
    };
    assert_eq!(letter.job.as_ref().map(|j| j.id.as_str()), Some("n-bad/d2"));
    assert!(
        letter.reason.contains("INVALID_ARGUMENT"),
        "{}",
        letter.reason
    );
    if let Some(redis) = &redis {
        // The dead-letter stream, as an operator reads it.
        let mut connection = redis_connection(&redis.url()).await;
        let entries: redis::streams::StreamRangeReply = connection
            .xrange_all("switchyard:outbox:dead")
            .await
            .unwrap();
        let [entry] = entries.ids.as_slice() else {
            panic!("{entries:?}");
        };
        let reason: String = entry.get("reason").unwrap();
        assert_eq!(reason, letter.reason);
        let stored: String = entry.get("job").unwrap();
        assert!(stored.contains("\"n-bad/d2\""), "{stored}");
        assert_eq!(stream_state(&redis.url()).await, (0, 0));
    }
    running.stop().await;
}

#[tokio::test]
async fn gone_and_rejected_are_final_from_memory() {
    gone_and_rejected_are_final(Backend::Memory).await;
}

#[tokio::test]
async fn gone_and_rejected_are_final_from_redis() {
    gone_and_rejected_are_final(Backend::Redis).await;
}

// ----- not_before -----------------------------------------------------------------------------

/// A job with `not_before` 300 ms ahead is sent after it, and after a job enqueued with it
/// that may go at once.
async fn not_before_holds_a_job_back(backend: Backend) {
    let (sandbox, channels) = providers(SandboxConfig::default()).await;
    let (running, _redis) = start_on(backend, OutboxConfig::default(), &channels).await;
    let not_before = Utc::now() + chrono::Duration::milliseconds(300);
    let mut later = job("n-later", "d1", fcm("device-1"));
    later.not_before = Some(not_before);
    let now = job("n-now", "d2", fcm("device-2"));
    running.enqueue(vec![later, now]).await;

    let first = running.recorder.until_count("delivered", 1).await;
    assert_eq!(first[0].job, "n-now/d2");
    let received = received_ids(&sandbox);
    if Utc::now() < not_before {
        assert_eq!(received, ["n-now"], "the other one waits");
    }

    let both = running.recorder.until_count("delivered", 2).await;
    assert_eq!(both[1].job, "n-later/d1");
    assert!(both[1].at >= not_before, "{} < {not_before}", both[1].at);
    assert_eq!(received_ids(&sandbox), ["n-now", "n-later"]);
    running.stop().await;
}

#[tokio::test]
async fn not_before_holds_a_job_back_in_memory() {
    not_before_holds_a_job_back(Backend::Memory).await;
}

#[tokio::test]
async fn not_before_holds_a_job_back_in_redis() {
    not_before_holds_a_job_back(Backend::Redis).await;
}

// ----- several replicas -----------------------------------------------------------------------

#[tokio::test]
async fn two_outboxes_on_one_redis_send_each_job_exactly_once() {
    let (sandbox, channels) = providers(SandboxConfig::default()).await;
    let redis = RedisServer::start();
    let config = on_redis(&redis.url(), OutboxConfig::default());
    let recorder = Recorder::new();
    let a = start_recording(config.clone(), &channels, Arc::clone(&recorder), "a").await;
    let b = start_recording(config, &channels, Arc::clone(&recorder), "b").await;
    assert_ne!(a.started.consumer(), b.started.consumer());

    let jobs: Vec<Job> = (0..200)
        .map(|i| job(&format!("n-{i}"), "d", fcm(&format!("device-{i}"))))
        .collect();
    // Half enqueued on each replica, and each half on the other again (stored once).
    a.enqueue(jobs[..100].to_vec()).await;
    b.enqueue(jobs[100..].to_vec()).await;
    b.enqueue(jobs[..100].to_vec()).await;
    a.enqueue(jobs[100..].to_vec()).await;

    let settled = recorder.until_count("delivered", 200).await;
    assert_eq!(settled.len(), 200, "no job settled twice");
    let by_a = settled.iter().filter(|s| s.by == "a").count();
    assert!(
        by_a > 0 && by_a < 200,
        "both replicas sent: {by_a} and {}",
        200 - by_a
    );
    let counts = received_counts(&sandbox);
    assert_eq!(counts.len(), 200);
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    assert_eq!(requests(&sandbox, Upstream::Fcm, FCM_SEND), 200);
    assert_eq!(stream_state(&redis.url()).await, (0, 0));
    a.stop().await;
    b.stop().await;
}

/// A replica read jobs and died before acknowledging them; for one of them it had even
/// sent it (the provider took it) — killed between send and ack. A live replica takes them
/// over once they are idle for `claim_idle_ms`, and sends them; the one sent twice carries
/// the same notification id and `apns-id` both times.
#[tokio::test]
async fn a_dead_replicas_jobs_are_taken_over_after_claim_idle() {
    let (sandbox, channels) = providers(SandboxConfig::default()).await;
    let redis = RedisServer::start();
    let mut connection = redis_connection(&redis.url()).await;
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("switchyard:outbox")
        .arg("senders")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut connection)
        .await
        .unwrap();
    let device = sandbox.push().apns_device(APP, ApnsEnvironment::Production);
    let apns = job(
        "n-sent",
        "d0",
        Target::Apns {
            token: device,
            topic: APP.to_owned(),
            sandbox: false,
        },
    );
    let mut jobs = vec![apns.clone()];
    jobs.extend((1..5).map(|i| job(&format!("n-{i}"), "d", fcm(&format!("device-{i}")))));
    for job in &jobs {
        let _: String = connection
            .xadd(
                "switchyard:outbox",
                "*",
                &[("job", serde_json::to_string(job).unwrap())],
            )
            .await
            .unwrap();
    }
    // The replica that dies: reads all five, sends the first, acknowledges nothing.
    let read_at = Utc::now();
    let read: redis::streams::StreamReadReply = connection
        .xread_options(
            &["switchyard:outbox"],
            &[">"],
            &redis::streams::StreamReadOptions::default()
                .group("senders", "replica-that-died")
                .count(10),
        )
        .await
        .unwrap();
    assert_eq!(read.keys[0].ids.len(), 5);
    assert_eq!(
        channels.send(&apns.target, &apns.message).await,
        switchyard::push::SendOutcome::Delivered
    );

    let config = on_redis(
        &redis.url(),
        OutboxConfig {
            claim_idle_ms: 500,
            ..OutboxConfig::default()
        },
    );
    let live = start(config, &channels).await;
    let settled = live.recorder.until_count("delivered", 5).await;

    assert!(
        settled
            .iter()
            .all(|s| s.at >= read_at + chrono::Duration::milliseconds(500)),
        "taken over only once idle for claim_idle_ms: {settled:#?}"
    );
    let counts = received_counts(&sandbox);
    assert_eq!(counts.len(), 5, "{counts:?}");
    assert_eq!(counts["n-sent"], 2, "sent by both: {counts:?}");
    assert!(
        counts.iter().all(|(id, n)| *n == 1 || id == "n-sent"),
        "{counts:?}"
    );
    // The repeat is recognisable: the same apns-id and notificationId.
    let apns_ids: Vec<String> = sandbox
        .pushes()
        .iter()
        .filter_map(|push| match push {
            ReceivedPush::Apns(apns) => Some(apns.headers["apns-id"].clone()),
            _ => None,
        })
        .collect();
    assert_eq!(apns_ids.len(), 2);
    assert_eq!(apns_ids[0], apns_ids[1]);
    assert_eq!(stream_state(&redis.url()).await, (0, 0));
    live.stop().await;
}

/// A replica that stops hands back the jobs it holds but has not sent (here: jobs read under
/// its name while its only sender was busy), so that another replica takes them over when it
/// starts, not only once they were idle for `claim_idle_ms`.
#[tokio::test]
async fn a_stopping_replica_hands_back_what_it_has_not_sent() {
    let slow_fcm = SandboxConfig {
        fcm: UpstreamKnobs::slow(500),
        ..SandboxConfig::default()
    };
    let (sandbox, channels) = providers(slow_fcm).await;
    let redis = RedisServer::start();
    let config = on_redis(
        &redis.url(),
        OutboxConfig {
            senders: 1,
            claim_idle_ms: 20_000,
            ..OutboxConfig::default()
        },
    );
    let a = start(config.clone(), &channels).await;
    let consumer = a.started.consumer().expect("a consumer").to_owned();
    a.enqueue(vec![job("n-busy", "d", fcm("device-0"))]).await;
    // A's one sender is busy with it (FCM answers slowly) once it is pending under A.
    let mut connection = redis_connection(&redis.url()).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let pending: redis::streams::StreamPendingCountReply = connection
            .xpending_consumer_count("switchyard:outbox", "senders", "-", "+", 10, &consumer)
            .await
            .unwrap();
        if !pending.ids.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "A never read its job"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Three more, read under A's name while its sender is busy (as a read cut short by
    // shutdown leaves them).
    let subscription = subscribe(&sandbox, &channels);
    for i in 1..=3 {
        let target = Target::WebPush {
            endpoint: subscription.endpoint.clone(),
            p256dh: subscription.keys.p256dh.clone(),
            auth: subscription.keys.auth.clone(),
        };
        let held = job(&format!("n-held-{i}"), "d", target);
        let _: String = connection
            .xadd(
                "switchyard:outbox",
                "*",
                &[("job", serde_json::to_string(&held).unwrap())],
            )
            .await
            .unwrap();
    }
    let read_at = Utc::now();
    let read: redis::streams::StreamReadReply = connection
        .xread_options(
            &["switchyard:outbox"],
            &[">"],
            &redis::streams::StreamReadOptions::default()
                .group("senders", &consumer)
                .count(10),
        )
        .await
        .unwrap();
    assert_eq!(read.keys[0].ids.len(), 3);

    let a_recorder = Arc::clone(&a.recorder);
    a.stop().await;
    let by_a = a_recorder.settled();
    assert_eq!(by_a.len(), 1, "A finished what it was sending: {by_a:#?}");
    assert_eq!(by_a[0].job, "n-busy/d");

    let b = start(config, &channels).await;
    let settled = b.recorder.until_count("delivered", 3).await;
    assert!(
        settled
            .iter()
            .all(|s| s.at < read_at + chrono::Duration::seconds(20)),
        "taken over before claim_idle_ms passed: {settled:#?}"
    );
    let counts = received_counts(&sandbox);
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    assert_eq!(stream_state(&redis.url()).await, (0, 0));
    b.stop().await;
}

// ----- losing Redis ---------------------------------------------------------------------------

/// Providers whose FCM takes 20 ms per send, so that a stream of jobs is still in flight
/// when Redis goes away.
fn fcm_taking_20_ms() -> SandboxConfig {
    SandboxConfig {
        fcm: UpstreamKnobs::slow(20),
        ..SandboxConfig::default()
    }
}

/// Redis is cut off in the middle of a stream of jobs and comes back: every job is
/// delivered, once.
#[tokio::test]
async fn a_redis_cut_mid_stream_loses_nothing() {
    let (sandbox, channels) = providers(fcm_taking_20_ms()).await;
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(redis.addr()).await;
    let config = on_redis(
        &proxy.redis_url(),
        OutboxConfig {
            claim_idle_ms: 1_000,
            ..OutboxConfig::default()
        },
    );
    let running = start(config, &channels).await;
    let jobs: Vec<Job> = (0..300)
        .map(|i| job(&format!("n-{i}"), "d", fcm(&format!("device-{i}"))))
        .collect();
    running.enqueue(jobs[..200].to_vec()).await;
    running.recorder.until_count("delivered", 20).await;

    proxy.cut().await;
    let cut_at = running.recorder.settled().len();
    // While cut off, sends in flight finish and wait to be settled; nothing new is read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.restore();
    running.enqueue(jobs[200..].to_vec()).await;
    let settled = running.recorder.until_count("delivered", 300).await;

    assert!(cut_at < 200, "cut mid-stream: {cut_at} of 200 were settled");
    assert_eq!(settled.len(), 300, "{settled:#?}");
    let counts = received_counts(&sandbox);
    assert_eq!(counts.len(), 300, "none lost");
    assert!(counts.values().all(|n| *n == 1), "none twice: {counts:?}");
    assert_eq!(stream_state(&redis.url()).await, (0, 0));
    running.stop().await;
}

/// Redis itself is killed (SIGKILL) and restarted in the middle of a stream of jobs, some of
/// them scheduled for later: with its append-only file fsynced on every write, it comes back
/// with every job it acknowledged, and every one is delivered. At least once: a job sent
/// whose acknowledgement died with Redis may go twice, no more than were in flight.
#[tokio::test]
async fn a_redis_restart_mid_stream_loses_nothing() {
    let (sandbox, channels) = providers(fcm_taking_20_ms()).await;
    let mut redis = RedisServer::start_persistent();
    let config = on_redis(
        &redis.url(),
        OutboxConfig {
            claim_idle_ms: 1_000,
            ..OutboxConfig::default()
        },
    );
    let senders = config.senders;
    let running = start(config, &channels).await;
    let mut jobs: Vec<Job> = (0..300)
        .map(|i| job(&format!("n-{i}"), "d", fcm(&format!("device-{i}"))))
        .collect();
    let later = Utc::now() + chrono::Duration::milliseconds(1_500);
    for job in &mut jobs[..20] {
        job.not_before = Some(later);
    }
    running.enqueue(jobs[..200].to_vec()).await;
    running.recorder.until_count("delivered", 20).await;

    redis.restart();
    let restarted_with = running.recorder.settled().len();
    running.enqueue(jobs[200..].to_vec()).await;
    let settled = running.recorder.until_count("delivered", 300).await;

    assert!(
        restarted_with < 200,
        "restarted mid-stream: {restarted_with} of 200 were settled"
    );
    let counts = received_counts(&sandbox);
    assert_eq!(counts.len(), 300, "none lost: {settled:#?}");
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.len() <= senders && twice.iter().all(|(_, n)| **n == 2),
        "at most the jobs in flight, once more: {twice:?}"
    );
    for scheduled in &jobs[..20] {
        assert!(
            counts.contains_key(&scheduled.message.id),
            "the schedule survived: {}",
            scheduled.message.id
        );
    }
    let deadline = Instant::now() + WAIT;
    while stream_state(&redis.url()).await != (0, 0) {
        assert!(Instant::now() < deadline, "the stream empties");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await;
}
