//! The event bus partitioned over a private three-node Redis Cluster (`[events] cluster =
//! true`, `partitions = 4`): every replica gets every event once, each customer's in order,
//! the partitions spread over the nodes, and a replica cut off from one node catches up with
//! nothing lost or doubled while the other nodes' partitions keep flowing. First at the bus
//! (two replicas' `Events`, many events of several customers), then with two Switchyard
//! replicas (a webhook taken by one reaches a websocket subscriber on the other; the
//! notification rules, a consumer group per partition, push once per event).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use resolvers::events::{DomainEvent, EventHub, EventKind, HubSubscription, Subject};
use resolvers::ids::CustomerId;
use resolvers::ports::Source;
use sandbox::{Sandbox, SandboxConfig, SandboxWebhooks};
use serde_json::json;
use switchyard::config::{EventsConfig, Secret};
use switchyard::events::{self, Events};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::timeout;

use crate::replicas::{CANCEL, FEED, PLACE, expect_quiet, graphql, notification, subscribe};
use crate::support::WAIT;
use crate::support::redis::RedisCluster;

const STREAM: &str = "test:events";
const PARTITIONS: usize = 4;
/// The customers of the bus test; with four partitions their events use all four.
const CUSTOMERS: [&str; 6] = [
    "cust-0001",
    "cust-0002",
    "cust-0003",
    "cust-0004",
    "cust-0005",
    "cust-0006",
];
/// Events per customer in each round of the bus test.
const PER_CUSTOMER: usize = 40;
/// The user replica B connects as, so that it alone can be cut off from a node.
const B_USER: &str = "replica-b";
const B_PASSWORD: &str = "b-secret";

/// The partition stream of `customer`'s events as the README specifies it, written from
/// the spec (not with the bus's code): `{<stream_key>:p<i>}`, `i` = 64-bit FNV-1a of the
/// customer id modulo the number of partitions.
fn stream_of(stream_key: &str, customer: &str, partitions: usize) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in customer.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{{{stream_key}:p{}}}", hash % partitions as u64)
}

/// A replica's `[events]`: `url` is the first node; the others are seeds too, so that the
/// replica can reconnect while any one node is out of its reach.
fn config(url: String, cluster: &RedisCluster) -> EventsConfig {
    EventsConfig {
        cluster_nodes: cluster
            .other_node_urls(&url)
            .into_iter()
            .map(Secret::new)
            .collect(),
        redis_url: Some(Secret::new(url)),
        cluster: true,
        partitions: PARTITIONS,
        stream_key: STREAM.to_owned(),
        stream_max_len: 10_000,
        dedup_ttl_secs: 60,
        // Room for a whole round without a subscriber lagging.
        hub_capacity: 4096,
    }
}

/// One replica's view of the bus: its `Events` and a subscription to its hub.
struct Replica {
    events: Events,
    received: HubSubscription,
    shutdown: watch::Sender<bool>,
    /// Per customer, the sequence numbers of the events delivered, in delivery order.
    seen: BTreeMap<String, Vec<usize>>,
}

async fn replica(url: String, cluster: &RedisCluster) -> Replica {
    let config = config(url, cluster);
    let hub = EventHub::new(config.hub_capacity, Arc::new(resolvers::cache::NoCache));
    let received = hub.subscribe();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let events = timeout(WAIT, events::start(&config, hub, shutdown_rx))
        .await
        .expect("start within the timeout")
        .expect("the event bus starts on the cluster");
    Replica {
        events,
        received,
        shutdown,
        seen: BTreeMap::new(),
    }
}

impl Replica {
    async fn publish(&self, event: &DomainEvent) -> bool {
        timeout(WAIT, self.events.bus.publish(event))
            .await
            .expect("publish within the timeout")
            .expect("publish succeeds")
    }

    /// Takes delivered events until `done` holds of what was seen, within [`WAIT`].
    async fn receive_until(
        &mut self,
        what: &str,
        done: impl Fn(&BTreeMap<String, Vec<usize>>) -> bool,
    ) {
        let deadline = Instant::now() + WAIT;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.received.recv()).await {
                Ok(Ok(event)) => self.record(&event),
                Ok(Err(error)) => panic!("hub subscription failed: {error}"),
                Err(_) => panic!("{what}: not within {WAIT:?}; seen {:?}", self.seen),
            }
        }
    }

    /// Asserts that nothing (more) is delivered within `quiet`.
    async fn assert_nothing_within(&mut self, quiet: Duration) {
        if let Ok(result) = timeout(quiet, self.received.recv()).await {
            panic!("expected no event, got {result:?}");
        }
    }

    fn record(&mut self, event: &DomainEvent) {
        let customer = event.customer_id.as_ref().expect("a customer").as_str();
        let seq = event.summary.parse().expect("the sequence number");
        self.seen.entry(customer.to_owned()).or_default().push(seq);
    }

    async fn stop(self) {
        self.shutdown.send_replace(true);
        timeout(WAIT, self.events.join())
            .await
            .expect("the readers stop");
    }
}

/// Event `seq` of `customer`; its summary is the sequence number.
fn event(customer: &str, seq: usize) -> DomainEvent {
    DomainEvent {
        id: format!("backend:{customer}:{seq}"),
        kind: EventKind::OrderUpdated,
        source: Source::Backend,
        customer_id: Some(CustomerId::parse(customer).expect("a customer id")),
        subject: Subject::default(),
        occurred_at: Utc
            .with_ymd_and_hms(2024, 5, 2, 14, 0, 0)
            .single()
            .expect("a valid time"),
        audience: Vec::new(),
        summary: seq.to_string(),
        payload: json!({}),
    }
}

/// `0..until` for each of `customers`: what a replica must have seen, in that order.
fn all_of(customers: &[&str], until: usize) -> BTreeMap<String, Vec<usize>> {
    customers
        .iter()
        .map(|c| ((*c).to_owned(), (0..until).collect()))
        .collect()
}

/// Whether `seen` holds at least `until` events of each of `customers`.
fn has(seen: &BTreeMap<String, Vec<usize>>, customers: &[&str], until: usize) -> bool {
    customers
        .iter()
        .all(|c| seen.get(*c).is_some_and(|s| s.len() >= until))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_events_reach_every_replica_once_in_order_per_customer_across_a_cut_node() {
    let cluster = RedisCluster::start();
    cluster.add_user(B_USER, B_PASSWORD);
    let mut a = replica(cluster.seed_url(), &cluster).await;
    let mut b = replica(cluster.seed_url_as(B_USER, B_PASSWORD), &cluster).await;

    // Round 1: the customers' events interleaved, published by both replicas in turn.
    for seq in 0..PER_CUSTOMER {
        for (n, customer) in CUSTOMERS.iter().enumerate() {
            let publisher = if (seq + n) % 2 == 0 { &a } else { &b };
            assert!(publisher.publish(&event(customer, seq)).await);
        }
    }
    // A redelivery, through the other replica: absorbed (its marker is in its stream's slot).
    assert!(!b.publish(&event(CUSTOMERS[0], 0)).await);
    for replica in [&mut a, &mut b] {
        replica
            .receive_until("round 1", |seen| has(seen, &CUSTOMERS, PER_CUSTOMER))
            .await;
        replica
            .assert_nothing_within(Duration::from_millis(300))
            .await;
        assert_eq!(
            replica.seen,
            all_of(&CUSTOMERS, PER_CUSTOMER),
            "once, in order"
        );
        assert_eq!(
            replica.events.delivered(),
            (CUSTOMERS.len() * PER_CUSTOMER) as u64
        );
    }

    // Each customer's events are in its partition's stream, and the streams are spread
    // over the nodes.
    let mut per_stream: BTreeMap<String, u64> = BTreeMap::new();
    for customer in CUSTOMERS {
        *per_stream
            .entry(stream_of(STREAM, customer, PARTITIONS))
            .or_default() += PER_CUSTOMER as u64;
    }
    assert_eq!(per_stream.len(), PARTITIONS, "every partition is used");
    let mut nodes = BTreeMap::new();
    for (stream, expected) in &per_stream {
        assert_eq!(cluster.stream_length(stream), *expected, "{stream}");
        nodes.insert(cluster.node_holding(stream), stream.clone());
    }
    assert!(
        nodes.len() >= 2,
        "the partitions are on several nodes: {nodes:?}"
    );

    // Round 2: B is cut off from one node (its connections killed, and refused until it is
    // let back) while A publishes. The customers of that node's partitions wait; the others
    // keep arriving at B.
    let (&cut_node, _) = nodes.iter().next().expect("a node with a partition");
    let (cut, kept): (Vec<&str>, Vec<&str>) = CUSTOMERS
        .iter()
        .partition(|c| cluster.node_holding(&stream_of(STREAM, c, PARTITIONS)) == cut_node);
    assert!(
        !cut.is_empty() && !kept.is_empty(),
        "cut {cut:?}, kept {kept:?}"
    );
    cluster.cut_user(cut_node, B_USER);
    let cut_at = Instant::now();
    b.seen.clear();
    a.seen.clear();
    for seq in 0..PER_CUSTOMER {
        for customer in CUSTOMERS {
            assert!(a.publish(&event(customer, PER_CUSTOMER + seq)).await);
        }
    }
    let round_2 = |customers: &[&str]| -> BTreeMap<String, Vec<usize>> {
        customers
            .iter()
            .map(|c| ((*c).to_owned(), (PER_CUSTOMER..2 * PER_CUSTOMER).collect()))
            .collect()
    };
    a.receive_until("round 2 on A", |seen| has(seen, &CUSTOMERS, PER_CUSTOMER))
        .await;
    assert_eq!(a.seen, round_2(&CUSTOMERS));
    b.receive_until("the other nodes' partitions on B while cut", |seen| {
        has(seen, &kept, PER_CUSTOMER)
    })
    .await;
    b.assert_nothing_within(Duration::from_millis(700)).await;
    assert_eq!(
        b.seen,
        round_2(&kept),
        "nothing from the cut node's partitions"
    );

    // Cut for longer than a read may take (its 5 s block and 5 s grace): the cluster
    // client's own retries of the read give up, and B's reader drops its connection and
    // keeps reconnecting (refused) until it is let back, then resumes where it stopped.
    let cut_for = Duration::from_secs(12);
    tokio::time::sleep(cut_for.saturating_sub(cut_at.elapsed())).await;

    // Let back: B catches up on the cut node's partitions, in order, none twice.
    cluster.restore_user(cut_node, B_USER);
    b.receive_until("the catch-up on B", |seen| {
        has(seen, &CUSTOMERS, PER_CUSTOMER)
    })
    .await;
    b.assert_nothing_within(Duration::from_millis(300)).await;
    assert_eq!(b.seen, round_2(&CUSTOMERS));
    assert_eq!(
        b.events.delivered(),
        (2 * CUSTOMERS.len() * PER_CUSTOMER) as u64
    );
    a.assert_nothing_within(Duration::from_millis(1)).await;

    a.stop().await;
    b.stop().await;
}

/// Two Switchyard replicas on the cluster, started from the config `switchyard sandbox`
/// prints plus `[events]` (as `replicas` runs them on one Redis): an order placed through A
/// (whose webhook A takes) reaches Ada's subscription on B; B cut off from the node of Ada's
/// partition gets the cancellation and the next order once let back, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_a_cluster_deliver_across_a_cut_node_as_on_one_redis() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cluster = RedisCluster::start();
    cluster.add_user(B_USER, B_PASSWORD);
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
    let events = |url: String| {
        format!("[events]\nredis_url = \"{url}\"\ncluster = true\npartitions = {PARTITIONS}\n")
    };
    let a = crate::replicas::start(
        a_listener,
        crate::support::replica_config(&printed, &events(cluster.seed_url())),
    )
    .await;
    let b = crate::replicas::start(
        b_listener,
        crate::support::replica_config(&printed, &events(cluster.seed_url_as(B_USER, B_PASSWORD))),
    )
    .await;
    let http = reqwest::Client::new();
    let ada = crate::support::issuer_token(&sandbox, "cust-0001").await;

    let mut feed = subscribe(&b, &ada, FEED).await;
    expect_quiet(&mut feed).await;
    let first = graphql(&http, &a.base, &ada, PLACE, json!({})).await["placeOrder"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let seen = notification(&mut feed).await;
    assert_eq!(seen["order"], json!({ "id": first, "status": "CONFIRMED" }));

    // B loses the node holding Ada's partition; A takes a cancellation and a new order.
    let ada_node = cluster.node_holding(&stream_of("switchyard:events", "cust-0001", PARTITIONS));
    assert_eq!(
        cluster.stream_length(&stream_of("switchyard:events", "cust-0001", PARTITIONS)),
        1,
        "Ada's order event is in her partition"
    );
    cluster.cut_user(ada_node, B_USER);
    graphql(&http, &a.base, &ada, CANCEL, json!({ "id": first })).await;
    let second = graphql(&http, &a.base, &ada, PLACE, json!({})).await["placeOrder"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    expect_quiet(&mut feed).await;

    cluster.restore_user(ada_node, B_USER);
    let cancelled = notification(&mut feed).await;
    assert_eq!(
        cancelled["order"],
        json!({ "id": first, "status": "CANCELLED" })
    );
    let placed = notification(&mut feed).await;
    assert_eq!(
        placed["order"],
        json!({ "id": second, "status": "CONFIRMED" })
    );
    expect_quiet(&mut feed).await;

    for replica in [a, b] {
        let _ = replica.stop.send(());
        timeout(WAIT, replica.server)
            .await
            .expect("a replica stops within the timeout")
            .unwrap()
            .unwrap();
    }
    sandbox.shutdown().await;
}

/// The notification rules, a consumer group on each partition, on the cluster: two replicas
/// (events on the cluster; devices and the outbox on a Redis of their own, which stays one
/// node) send one push per cancellation, whichever replica took the webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_run_once_per_event_on_a_cluster() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cluster = RedisCluster::start();
    let redis = crate::support::redis::RedisServer::start();
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
    let (seed, url) = (cluster.seed_url(), redis.url());
    let shared = format!(
        "[events]\nredis_url = \"{seed}\"\ncluster = true\npartitions = {PARTITIONS}\n\
         [notifications]\nredis_url = \"{url}\"\n[outbox]\nredis_url = \"{url}\"\n"
    );
    let a = crate::replicas::start(
        a_listener,
        crate::support::replica_config(&printed, &shared),
    )
    .await;
    let b = crate::replicas::start(
        b_listener,
        crate::support::replica_config(&printed, &shared),
    )
    .await;
    let http = reqwest::Client::new();
    let ada = crate::support::issuer_token(&sandbox, "cust-0001").await;

    let register = "mutation { registerDevice(input: { platform: ANDROID, fcmToken: \"fcm-cluster\" }) { id } }";
    graphql(&http, &b.base, &ada, register, json!({})).await;
    let deadline = Instant::now() + WAIT;
    for cancellation in 1..=2 {
        let placed = graphql(&http, &a.base, &ada, PLACE, json!({})).await["placeOrder"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        graphql(&http, &a.base, &ada, CANCEL, json!({ "id": placed })).await;
        while sandbox.push().received().len() < cancellation {
            assert!(
                Instant::now() < deadline,
                "push {cancellation} did not arrive"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The second push proves the first had all the time it needed to be sent twice.
    let received = sandbox.push().received();
    assert_eq!(
        received.len(),
        2,
        "one push per cancellation: {received:#?}"
    );
    // The group exists on Ada's partition, and nothing is left pending there.
    let ada_stream = stream_of("switchyard:events", "cust-0001", PARTITIONS);
    let node = cluster.node_holding(&ada_stream);
    let groups = cluster.cli(node, &["XINFO", "GROUPS", &ada_stream]);
    assert!(groups.contains("pending\n0"), "{groups}");
    for replica in [a, b] {
        let _ = replica.stop.send(());
        timeout(WAIT, replica.server)
            .await
            .expect("a replica stops within the timeout")
            .unwrap()
            .unwrap();
    }
    sandbox.shutdown().await;
}
