//! Two Switchyard replicas on one Redis, started as the README's recipe starts them (from the
//! config `switchyard sandbox` prints): an upstream event ingested by one reaches a subscriber
//! on the other, invalidates the other's cache, and survives the other's Redis connection
//! being cut (delivered after it reconnects, none twice). Such replicas have no demo sign-in.
//! `cluster` runs the same replicas on a Redis Cluster with these helpers.

use std::time::Duration;

use sandbox::{Sandbox, SandboxConfig, SandboxWebhooks, Upstream};
use serde_json::{Value, json};
use switchyard::Config;
use tokio::net::TcpListener;

use crate::support::WAIT;
use crate::support::redis::{RedisServer, TcpProxy};
use crate::support::ws::{Client, MODERN, try_connect_to};

pub(crate) struct Replica {
    pub(crate) base: String,
    pub(crate) stop: tokio::sync::oneshot::Sender<()>,
    pub(crate) server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub(crate) async fn start(listener: TcpListener, config: Config) -> Replica {
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switchyard::run(listener, config, async {
        let _ = stopped.await;
    }));
    Replica {
        base: format!("http://{addr}"),
        stop,
        server,
    }
}

pub(crate) async fn graphql(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    query: &str,
    variables: Value,
) -> Value {
    let body: Value = http
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body.get("errors").is_none(), "{body:#}");
    body["data"].clone()
}

pub(crate) async fn subscribe(replica: &Replica, token: &str, query: &str) -> Client {
    let mut ws = try_connect_to(&replica.base, &[MODERN]).await.unwrap();
    ws.init(token).await;
    ws.subscribe("n", query).await;
    ws
}

/// The notification of the next `next` message.
pub(crate) async fn notification(ws: &mut Client) -> Value {
    let message = ws.recv_skipping_pings().await;
    assert_eq!(message["type"], "next", "{message:#}");
    message["payload"]["data"]["notifications"].clone()
}

/// Nothing more arrives for a while (an event may still be on its way from the other replica).
pub(crate) async fn expect_quiet(ws: &mut Client) {
    ws.expect_nothing_for(Duration::from_millis(700)).await;
}

pub(crate) const FEED: &str = "subscription { notifications { kind summary order { id status } } }";
pub(crate) const PLACE: &str =
    "mutation { placeOrder(input: { lines: [{ productId: \"prod-0001\", quantity: 1 }] }) { id } }";
pub(crate) const CANCEL: &str = "mutation($id: ID!) { cancelOrder(id: $id) { id status } }";
const READ: &str = "query($id: ID!) { order(id: $id) { status } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_every_replica_through_redis_even_across_a_cut_connection() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(redis.addr()).await;

    // One set of upstreams, as `switchyard sandbox` runs them; its webhooks go to replica A.
    // Both replicas start from the config it prints plus [events] (the README's recipe);
    // replica B reaches Redis through a proxy the test can cut.
    let a_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(SandboxConfig {
        simulator_interval_ms: 0,
        webhooks: Some(SandboxWebhooks::dev(format!(
            "http://{}/webhooks",
            a_listener.local_addr().unwrap()
        ))),
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let printed = switchyard::embedded::sandbox_summary(&sandbox).unwrap();
    let events = |url: String| format!("[events]\nredis_url = \"{url}\"\n");
    let a = start(
        a_listener,
        crate::support::replica_config(&printed, &events(redis.url())),
    )
    .await;
    let b = start(
        b_listener,
        crate::support::replica_config(&printed, &events(proxy.redis_url())),
    )
    .await;

    // No demo sign-in on the replicas: Ada's token comes from the issuer.
    let http = reqwest::Client::new();
    let ada = crate::support::issuer_token(&sandbox, "cust-0001").await;

    // Ada listens on B; she orders through A.
    let mut feed = subscribe(&b, &ada, FEED).await;
    expect_quiet(&mut feed).await;
    let first = graphql(&http, &a.base, &ada, PLACE, json!({})).await["placeOrder"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let seen = notification(&mut feed).await;
    assert_eq!(seen["kind"], "ORDER_UPDATED");
    assert_eq!(seen["order"], json!({ "id": first, "status": "CONFIRMED" }));

    // B caches the order: a second read does not reach the backend.
    let read = graphql(&http, &b.base, &ada, READ, json!({ "id": first })).await;
    assert_eq!(read["order"]["status"], "CONFIRMED");
    sandbox.reset_requests();
    graphql(&http, &b.base, &ada, READ, json!({ "id": first })).await;
    assert!(
        sandbox.requests(Upstream::Backend).is_empty(),
        "served from B's cache"
    );

    // B loses Redis; meanwhile A takes a cancellation and a new order.
    proxy.cut().await;
    graphql(&http, &a.base, &ada, CANCEL, json!({ "id": first })).await;
    let second = graphql(&http, &a.base, &ada, PLACE, json!({})).await["placeOrder"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    expect_quiet(&mut feed).await;

    // Back online: both arrive, in order, once.
    proxy.restore();
    let cancelled = notification(&mut feed).await;
    assert_eq!(
        cancelled["order"],
        json!({ "id": first, "status": "CANCELLED" })
    );
    assert!(
        cancelled["summary"].as_str().unwrap().contains("CANCELLED"),
        "{cancelled}"
    );
    let placed = notification(&mut feed).await;
    assert_eq!(
        placed["order"],
        json!({ "id": second, "status": "CONFIRMED" })
    );
    expect_quiet(&mut feed).await;

    // The event invalidated B's cached copy (CONFIRMED, good for 30 s): B reads the
    // cancellation (cached afresh when the notification above resolved the order).
    let read = graphql(&http, &b.base, &ada, READ, json!({ "id": first })).await;
    assert_eq!(read["order"]["status"], "CANCELLED");

    for replica in [a, b] {
        let _ = replica.stop.send(());
        tokio::time::timeout(WAIT, replica.server)
            .await
            .expect("a replica stops within the timeout")
            .unwrap()
            .unwrap();
    }
    sandbox.shutdown().await;
}

/// A replica started from the config `switchyard sandbox` prints has no demo sign-in: it
/// signs nobody in (404), and serves the tokens of the sandbox's issuer like a real
/// provider's.
#[tokio::test]
async fn a_replica_from_the_printed_config_serves_no_demo_sign_in() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let sandbox = Sandbox::start(SandboxConfig {
        simulator_interval_ms: 0,
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let printed = switchyard::embedded::sandbox_summary(&sandbox).unwrap();
    let replica = start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        crate::support::replica_config(&printed, ""),
    )
    .await;
    let http = reqwest::Client::new();

    let token = http
        .post(format!("{}/dev/token", replica.base))
        .json(&json!({ "user": "agent-01" }))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 404);
    let users = http
        .get(format!("{}/dev/users", replica.base))
        .send()
        .await
        .unwrap();
    assert_eq!(users.status(), 404);

    let ada = crate::support::issuer_token(&sandbox, "cust-0001").await;
    let me = graphql(&http, &replica.base, &ada, "{ me { name } }", json!({})).await;
    assert_eq!(me["me"]["name"], "Ada Lovelace");

    let _ = replica.stop.send(());
    tokio::time::timeout(WAIT, replica.server)
        .await
        .expect("the replica stops within the timeout")
        .unwrap()
        .unwrap();
    sandbox.shutdown().await;
}

/// Two replicas on one Redis: the notification rules run once per event (a consumer group),
/// and each push goes out once, whichever replica took the webhook or holds the device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_notification_is_sent_once_by_one_of_the_replicas() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let redis = RedisServer::start();
    let a_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(SandboxConfig {
        simulator_interval_ms: 0,
        webhooks: Some(SandboxWebhooks::dev(format!(
            "http://{}/webhooks",
            a_listener.local_addr().unwrap()
        ))),
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let printed = switchyard::embedded::sandbox_summary(&sandbox).unwrap();
    let url = redis.url();
    let shared = format!(
        "[events]\nredis_url = \"{url}\"\n[notifications]\nredis_url = \"{url}\"\n[outbox]\nredis_url = \"{url}\"\n"
    );
    let a = start(
        a_listener,
        crate::support::replica_config(&printed, &shared),
    )
    .await;
    let b = start(
        b_listener,
        crate::support::replica_config(&printed, &shared),
    )
    .await;
    let http = reqwest::Client::new();
    let ada = crate::support::issuer_token(&sandbox, "cust-0001").await;

    // The device is registered on B; the orders go through A.
    let register = "mutation { registerDevice(input: { platform: ANDROID, fcmToken: \"fcm-replicas\" }) { id } }";
    graphql(&http, &b.base, &ada, register, json!({})).await;
    let placed = graphql(&http, &a.base, &ada, PLACE, json!({})).await["placeOrder"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    graphql(&http, &a.base, &ada, CANCEL, json!({ "id": placed })).await;
    let deadline = std::time::Instant::now() + WAIT;
    while sandbox.push().received().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no push arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A second cancellation's push proves the first had all the time it needed to be sent
    // twice, if it were to be.
    let other = graphql(&http, &a.base, &ada, PLACE, json!({})).await["placeOrder"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    graphql(&http, &a.base, &ada, CANCEL, json!({ "id": other })).await;
    while sandbox.push().received().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the second push did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = sandbox.push().received();
    assert_eq!(
        received.len(),
        2,
        "one push per cancellation: {received:#?}"
    );
    // Both replicas show the notifications (one store in Redis).
    for replica in [&a, &b] {
        let centre = graphql(
            &http,
            &replica.base,
            &ada,
            "{ unreadNotificationCount }",
            json!({}),
        )
        .await;
        assert_eq!(centre["unreadNotificationCount"], 2);
    }
    for replica in [a, b] {
        let _ = replica.stop.send(());
        tokio::time::timeout(WAIT, replica.server)
            .await
            .expect("a replica stops within the timeout")
            .unwrap()
            .unwrap();
    }
    sandbox.shutdown().await;
}

/// A replica as its own process (the `switchyard` binary), so that it can be killed.
struct Process {
    base: String,
    child: tokio::process::Child,
}

const PROCESS_WEBHOOK_SECRET: &str = "replica-process-webhook-secret";

async fn spawn_process(dir: &std::path::Path, name: &str, config: &str) -> Process {
    let port = crate::support::redis::free_port();
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, config).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--config")
        .arg(&file)
        .env("SWITCHYARD_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "SWITCHYARD_WEBHOOKS__BACKEND_SECRET",
            PROCESS_WEBHOOK_SECRET,
        )
        .env("SWITCHYARD_LOG__FILTER", "warn")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + WAIT;
    while !http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(std::time::Instant::now() < deadline, "{name} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Process { base, child }
}

/// Two replicas as processes on one Redis. Replica A takes a webhook and starts sending its
/// push (the provider is slow); A is killed (SIGKILL) after it read the job and before it
/// acknowledged it. Replica B, started afterwards, takes the job over once it was idle for
/// `claim_idle_ms` (6 s here) and delivers it; the outbox ends empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_its_replica_died_sending_is_delivered_by_the_other() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let redis = RedisServer::start();
    let sandbox = Sandbox::start(SandboxConfig {
        simulator_interval_ms: 0,
        fcm: sandbox::UpstreamKnobs {
            latency_ms: 1_000,
            ..sandbox::UpstreamKnobs::default()
        },
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let printed = switchyard::embedded::sandbox_summary(&sandbox).unwrap();
    let url = redis.url();
    let config = format!(
        "{printed}\n[events]\nredis_url = \"{url}\"\n[notifications]\nredis_url = \"{url}\"\n\
         [outbox]\nredis_url = \"{url}\"\nclaim_idle_ms = 6000\n"
    );
    let dir = std::env::temp_dir().join(format!("switchyard-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut a = spawn_process(&dir, "a", &config).await;
    let http = reqwest::Client::new();
    let ada = crate::support::issuer_token(&sandbox, "cust-0001").await;
    let register = "mutation { registerDevice(input: { platform: ANDROID, fcmToken: \"fcm-killed\" }) { id } }";
    graphql(&http, &a.base, &ada, register, json!({})).await;

    let body = json!({"id": "evt_kill_1", "type": "order.status_changed",
        "occurredAt": "2026-01-01T10:00:00Z",
        "data": {"orderId": "ord-019801", "customerId": "cust-0001", "status": "SHIPPED"}})
    .to_string();
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let accepted = http
        .post(format!("{}/webhooks/backend", a.base))
        .header("content-type", "application/json")
        .header("x-webhook-timestamp", &timestamp)
        .header(
            "x-webhook-signature",
            crate::support::sign_webhook(PROCESS_WEBHOOK_SECRET, &timestamp, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);

    let sends = || {
        sandbox
            .requests(Upstream::Fcm)
            .get("POST /v1/projects/{project}/messages:send")
            .copied()
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + WAIT;
    while sends() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "A never sent the push"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A is sending (the provider takes a second to answer; A waits up to half of
    // claim_idle_ms, 3 s, for its token and the send): kill it before it can acknowledge.
    a.child.kill().await.unwrap();
    assert!(
        sandbox.push().received().is_empty(),
        "killed before the provider answered"
    );

    let b = spawn_process(&dir, "b", &config).await;
    let deadline = std::time::Instant::now() + WAIT;
    while sends() < 2 || sandbox.push().received().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "B did not take the push over: {} sends",
            sends()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = sandbox.push().received();
    assert!(
        (1..=2).contains(&received.len()),
        "at least once, at most once more: {received:#?}"
    );
    for push in &received {
        let sandbox::ReceivedPush::Fcm(push) = push else {
            panic!("{push:?}")
        };
        assert_eq!(push.message["token"], "fcm-killed");
        assert_eq!(
            push.message["data"]["notificationId"],
            "ntf:backend:evt_kill_1"
        );
    }
    // B acknowledged it: nothing is left in the outbox, nothing pending.
    while crate::outbox::stream_state(&url).await != (0, 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the outbox did not empty: {:?}",
            crate::outbox::stream_state(&url).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let centre = graphql(
        &http,
        &b.base,
        &ada,
        "{ notifications(first: 5) { edges { node { id } } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        centre["notifications"]["edges"][0]["node"]["id"],
        "ntf:backend:evt_kill_1"
    );
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
    sandbox.shutdown().await;
}
