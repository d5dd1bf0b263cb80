//! The event bus against a real Redis (a private `redis-server` per test) and in memory:
//! delivery to every replica exactly once and in order, dedup, reconnects, shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use resolvers::events::{DomainEvent, EventHub, EventKind, HubSubscription, Subject};
use resolvers::ports::Source;
use switchyard::config::{EventsConfig, Secret};
use switchyard::events::{self, Events};
use tokio::sync::watch;
use tokio::time::timeout;

use crate::support::redis::{RedisServer, TcpProxy, free_port};

const STREAM: &str = "test:events";
/// Longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(15);

/// One Switchyard replica's view of the bus: its `Events`, its hub and a subscription to it.
struct Replica {
    events: Events,
    received: HubSubscription,
    shutdown: watch::Sender<bool>,
}

fn config(redis_url: Option<String>) -> EventsConfig {
    EventsConfig {
        redis_url: redis_url.map(Secret::new),
        // One stream named STREAM on one node: the keys these tests look at.
        cluster: false,
        cluster_nodes: Vec::new(),
        partitions: 1,
        stream_key: STREAM.to_owned(),
        stream_max_len: 10_000,
        dedup_ttl_secs: 60,
        hub_capacity: 1024,
    }
}

async fn replica(redis_url: Option<String>) -> Replica {
    replica_with(config(redis_url)).await
}

async fn replica_with(config: EventsConfig) -> Replica {
    let hub = EventHub::new(
        config.hub_capacity,
        std::sync::Arc::new(resolvers::cache::NoCache),
    );
    let received = hub.subscribe();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let events = timeout(WAIT, events::start(&config, hub, shutdown_rx))
        .await
        .expect("start within the timeout")
        .expect("the event bus starts");
    Replica {
        events,
        received,
        shutdown,
    }
}

impl Replica {
    async fn publish(&self, event: &DomainEvent) -> bool {
        timeout(WAIT, self.events.bus.publish(event))
            .await
            .expect("publish within the timeout")
            .expect("publish succeeds")
    }

    /// The next event this replica's hub delivers.
    async fn next(&mut self) -> Arc<DomainEvent> {
        match timeout(WAIT, self.received.recv()).await {
            Ok(Ok(event)) => event,
            Ok(Err(error)) => panic!("hub subscription failed: {error}"),
            Err(_) => panic!(
                "no event within {WAIT:?} (delivered so far: {})",
                self.events.delivered()
            ),
        }
    }

    /// The ids of the next `n` events delivered.
    async fn next_ids(&mut self, n: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.next().await.id.clone());
        }
        ids
    }

    /// Asserts that nothing (more) is delivered within `quiet`.
    async fn assert_nothing_within(&mut self, quiet: Duration) {
        if let Ok(result) = timeout(quiet, self.received.recv()).await {
            panic!("expected no event, got {result:?}");
        }
    }

    async fn stop(self) {
        self.shutdown.send_replace(true);
        timeout(WAIT, self.events.join())
            .await
            .expect("the reader stops");
    }
}

fn event(id: &str) -> DomainEvent {
    DomainEvent {
        id: id.to_owned(),
        kind: EventKind::OrderUpdated,
        source: Source::Backend,
        customer_id: None,
        subject: Subject {
            task_id: Some(7),
            ..Subject::default()
        },
        occurred_at: Utc
            .with_ymd_and_hms(2024, 5, 2, 14, 0, 0)
            .single()
            .expect("a valid time"),
        audience: vec!["agent-1".to_owned()],
        summary: format!("event {id}"),
        payload: serde_json::json!({ "status": "Ready" }),
    }
}

async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("a connection to the test Redis")
}

async fn stream_length(url: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(STREAM)
        .query_async(&mut redis_connection(url).await)
        .await
        .expect("XLEN")
}

#[tokio::test]
async fn an_event_reaches_every_replica_once() {
    let redis = RedisServer::start();
    let mut a = replica(Some(redis.url())).await;
    let mut b = replica(Some(redis.url())).await;

    let published = event("backend:1");
    assert!(a.publish(&published).await);
    assert_eq!(
        *a.next().await,
        published,
        "the publishing replica gets it too"
    );
    assert_eq!(*b.next().await, published);

    // Were it delivered twice, the copy would come before this marker.
    assert!(b.publish(&event("backend:marker")).await);
    assert_eq!(a.next().await.id, "backend:marker");
    assert_eq!(b.next().await.id, "backend:marker");
    a.assert_nothing_within(Duration::from_millis(300)).await;
    b.assert_nothing_within(Duration::from_millis(1)).await;
    assert_eq!(a.events.delivered(), 2);
    assert_eq!(b.events.delivered(), 2);
    assert_eq!(stream_length(&redis.url()).await, 2);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_duplicate_is_absorbed_across_replicas() {
    let redis = RedisServer::start();
    let mut a = replica(Some(redis.url())).await;
    let b = replica(Some(redis.url())).await;

    let first = event("crm:500");
    assert!(a.publish(&first).await);
    assert!(
        !a.publish(&first).await,
        "same id again on the same replica"
    );
    let mut changed = first.clone();
    changed.summary = "a redelivery with other content".to_owned();
    assert!(!b.publish(&changed).await, "same id on another replica");
    assert!(a.publish(&event("crm:501")).await);

    assert_eq!(*a.next().await, first, "the first publish wins");
    assert_eq!(a.next().await.id, "crm:501");
    a.assert_nothing_within(Duration::from_millis(300)).await;
    assert_eq!(a.events.delivered(), 2);
    assert_eq!(stream_length(&redis.url()).await, 2);

    let mut connection = redis_connection(&redis.url()).await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{STREAM}:seen:crm:500"))
        .query_async(&mut connection)
        .await
        .expect("TTL");
    assert!(
        (1..=60).contains(&ttl),
        "the seen-marker expires: TTL {ttl}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_replica_cut_off_from_redis_catches_up_in_order_once() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(redis.addr()).await;
    let mut a = replica(Some(redis.url())).await;
    let mut b = replica(Some(proxy.redis_url())).await;

    assert!(a.publish(&event("process:warmup")).await);
    assert_eq!(b.next().await.id, "process:warmup");

    proxy.cut().await;
    let ids: Vec<String> = (0..50).map(|i| format!("process:{i}")).collect();
    for id in &ids {
        assert!(a.publish(&event(id)).await);
    }
    b.assert_nothing_within(Duration::from_millis(500)).await;
    assert_eq!(
        b.events.delivered(),
        1,
        "B was cut off while they were published"
    );

    proxy.restore();
    assert_eq!(b.next_ids(50).await, ids);
    assert!(a.publish(&event("process:after")).await);
    assert_eq!(
        b.next().await.id,
        "process:after",
        "nothing twice, nothing extra"
    );
    b.assert_nothing_within(Duration::from_millis(300)).await;
    assert_eq!(b.events.delivered(), 52);

    let mut expected = vec!["process:warmup".to_owned()];
    expected.extend(ids);
    expected.push("process:after".to_owned());
    assert_eq!(a.next_ids(52).await, expected);
    a.assert_nothing_within(Duration::from_millis(1)).await;
    assert_eq!(a.events.delivered(), 52);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn publishing_fails_promptly_while_redis_is_unreachable_then_recovers() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(redis.addr()).await;
    let mut reader = replica(Some(redis.url())).await;
    let publisher = replica(Some(proxy.redis_url())).await;

    proxy.cut().await;
    // The first attempt finds its connection dropped; the second waits on the reconnects
    // until the publish timeout (5 s).
    for attempt in 1..=2 {
        let asked = Instant::now();
        let failed = timeout(WAIT, publisher.events.bus.publish(&event("crm:cut")))
            .await
            .expect("publish gives up within the timeout");
        assert!(failed.is_err(), "attempt {attempt}: {failed:?}");
        let took = asked.elapsed();
        assert!(took < Duration::from_secs(6), "attempt {attempt}: {took:?}");
    }

    proxy.restore();
    let recovered = Instant::now();
    let accepted = loop {
        match publisher.events.bus.publish(&event("crm:cut")).await {
            Ok(accepted) => break accepted,
            Err(error) if recovered.elapsed() < WAIT => {
                eprintln!("not yet: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("publishing did not recover within {WAIT:?}: {error}"),
        }
    };
    assert!(accepted, "the failed attempt left no seen-marker behind");
    assert_eq!(reader.next().await.id, "crm:cut");
    reader
        .assert_nothing_within(Duration::from_millis(300))
        .await;
    assert_eq!(reader.events.delivered(), 1);
    reader.stop().await;
    publisher.stop().await;
}

#[tokio::test]
async fn the_memory_bus_dedups_and_delivers() {
    let mut lone = replica(None).await;
    let first = event("carrier:PC1:1");
    assert!(lone.publish(&first).await);
    assert!(!lone.publish(&first).await);
    assert!(lone.publish(&event("carrier:PC1:2")).await);

    assert_eq!(*lone.next().await, first);
    assert_eq!(lone.next().await.id, "carrier:PC1:2");
    lone.assert_nothing_within(Duration::from_millis(100)).await;
    assert_eq!(lone.events.delivered(), 2);
    lone.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_memory_bus_forgets_ids_after_the_ttl() {
    let mut lone = replica(None).await;
    let first = event("carrier:PC2:1");
    assert!(lone.publish(&first).await);
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(!lone.publish(&first).await, "remembered within the TTL");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(lone.publish(&first).await, "forgotten after the TTL");

    assert_eq!(lone.next().await.id, first.id);
    assert_eq!(lone.next().await.id, first.id);
    lone.assert_nothing_within(Duration::from_millis(100)).await;
    assert_eq!(lone.events.delivered(), 2);
}

#[tokio::test]
async fn shutdown_ends_a_blocked_reader_promptly() {
    let redis = RedisServer::start();
    let a = replica(Some(redis.url())).await;
    // Let the reader settle into its blocking read (5 s).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asked = Instant::now();
    a.shutdown.send_replace(true);
    timeout(Duration::from_secs(2), a.events.join())
        .await
        .expect("the reader stops within 2 s");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );

    // A dropped shutdown sender stops it too, and the memory bus has nothing to wait for.
    let b = replica(Some(redis.url())).await;
    drop(b.shutdown);
    timeout(Duration::from_secs(2), b.events.join())
        .await
        .expect("the reader stops when the shutdown sender is gone");
    let lone = replica(None).await;
    timeout(Duration::from_secs(1), lone.stop())
        .await
        .expect("memory bus joins at once");
}

#[tokio::test]
async fn a_replica_starts_after_the_events_already_on_the_stream() {
    let redis = RedisServer::start();
    let a = replica(Some(redis.url())).await;
    assert!(a.publish(&event("backend:old")).await);
    let mut b = replica(Some(redis.url())).await;
    assert!(a.publish(&event("backend:new")).await);
    assert_eq!(b.next().await.id, "backend:new");
    b.assert_nothing_within(Duration::from_millis(200)).await;
    assert_eq!(b.events.delivered(), 1);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn entries_that_do_not_decode_are_skipped() {
    let redis = RedisServer::start();
    let mut a = replica(Some(redis.url())).await;
    let mut connection = redis_connection(&redis.url()).await;
    for (field, value) in [
        ("event", "not json"),
        ("other", "{}"),
        ("event", "{\"id\":1}"),
    ] {
        let _: String = redis::cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg(field)
            .arg(value)
            .query_async(&mut connection)
            .await
            .expect("XADD");
    }
    assert!(a.publish(&event("backend:good")).await);
    assert_eq!(a.next().await.id, "backend:good");
    a.assert_nothing_within(Duration::from_millis(200)).await;
    assert_eq!(a.events.delivered(), 1);
    a.stop().await;
}

#[tokio::test]
async fn a_failed_append_does_not_mark_the_event_seen() {
    let redis = RedisServer::start();
    let mut a = replica(Some(redis.url())).await;
    let mut connection = redis_connection(&redis.url()).await;
    // The stream key now holds a string: XADD fails with WRONGTYPE inside the script.
    let _: () = redis::cmd("SET")
        .arg(STREAM)
        .arg("not a stream")
        .query_async(&mut connection)
        .await
        .expect("SET");
    let failed = timeout(WAIT, a.events.bus.publish(&event("crm:9")))
        .await
        .expect("publish within the timeout");
    assert!(failed.is_err(), "{failed:?}");
    let marked: i64 = redis::cmd("EXISTS")
        .arg(format!("{STREAM}:seen:crm:9"))
        .query_async(&mut connection)
        .await
        .expect("EXISTS");
    assert_eq!(marked, 0, "no seen-marker without the entry");

    let _: i64 = redis::cmd("DEL")
        .arg(STREAM)
        .query_async(&mut connection)
        .await
        .expect("DEL");
    assert!(
        a.publish(&event("crm:9")).await,
        "the retry is not a duplicate"
    );
    assert_eq!(a.next().await.id, "crm:9");
    assert_eq!(a.events.delivered(), 1);
    a.stop().await;
}

#[tokio::test]
async fn a_unix_socket_url_works() {
    let redis = RedisServer::start();
    let mut unix = replica(Some(redis.unix_url())).await;
    assert!(unix.publish(&event("backend:unix")).await);
    assert_eq!(unix.next().await.id, "backend:unix");
    unix.stop().await;
}

/// The `rediss://` URL of the TLS server [`a_tls_url_works`] started, for the child process.
const TLS_URL_VAR: &str = "SWITCHYARD_TEST_REDISS_URL";

/// rediss:// through rustls, as in production: the server's certificate must chain to a
/// trusted root, here the test CA, which rustls reads from `SSL_CERT_FILE` (as an operator
/// would add a private CA). The environment cannot be changed safely inside this
/// multi-threaded test process, so the round trip runs in a child process of this test
/// binary.
#[test]
fn a_tls_url_works() {
    let redis = RedisServer::start_tls();
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let output = std::process::Command::new(test_binary)
        .args([
            "events::tls_round_trip_in_a_process_that_trusts_the_test_ca",
            "--exact",
        ])
        .args(["--ignored", "--nocapture", "--test-threads", "1"])
        .env(TLS_URL_VAR, redis.url())
        .env("SSL_CERT_FILE", redis.ca_file())
        .env_remove("SSL_CERT_DIR")
        .output()
        .expect("running the child test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the TLS round trip failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
#[ignore = "run by a_tls_url_works, in a process that trusts the test CA"]
async fn tls_round_trip_in_a_process_that_trusts_the_test_ca() {
    let url = std::env::var(TLS_URL_VAR)
        .unwrap_or_else(|_| panic!("run by a_tls_url_works, which sets {TLS_URL_VAR}"));
    // What main does first: one rustls crypto provider for the whole process.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut tls = replica(Some(url)).await;
    assert!(tls.publish(&event("backend:tls")).await);
    assert_eq!(tls.next().await.id, "backend:tls");
    assert_eq!(tls.events.delivered(), 1);
    tls.stop().await;
}

#[tokio::test]
async fn start_fails_clearly_without_leaking_the_password() {
    let port = free_port();
    let (_shutdown, shutdown_rx) = watch::channel(false);
    let config = config(Some(format!("redis://:hunter2@127.0.0.1:{port}/0")));
    let error = timeout(
        WAIT,
        events::start(
            &config,
            EventHub::new(16, std::sync::Arc::new(resolvers::cache::NoCache)),
            shutdown_rx.clone(),
        ),
    )
    .await
    .expect("start gives up within the timeout")
    .err()
    .expect("start fails without Redis");
    let message = format!("{error:#}");
    assert!(
        message.starts_with(&format!(
            "cannot reach Redis at 127.0.0.1:{port} (events.redis_url)"
        )),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");

    let invalid = EventsConfig {
        dedup_ttl_secs: 0,
        ..EventsConfig::default()
    };
    let error = events::start(
        &invalid,
        EventHub::new(16, std::sync::Arc::new(resolvers::cache::NoCache)),
        shutdown_rx,
    )
    .await
    .err()
    .expect("a zero TTL is refused");
    assert_eq!(
        error.to_string(),
        "events.dedup_ttl_secs must be at least 1 (0 would disable duplicate detection)"
    );
}
