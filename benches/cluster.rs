//! The event bus on Redis Cluster: how many events per second go through one partition and
//! through several, from publishing to delivery on two replicas.
//!
//! `cargo bench --bench cluster` (release). A private three-node Redis Cluster (the test
//! support's `RedisCluster`: `redis-server --cluster-enabled yes` on free ports,
//! `redis-cli --cluster create`), and, for comparison, a private single `redis-server`. For
//! each setting, two replicas' event buses (`switchyard::events::start`, as `switchyard run`
//! starts them, each with its hub) on it; `CLUSTER_EVENTS` events (default 100000) of
//! `CLUSTER_CUSTOMERS` customers (default 1000) are published by `CLUSTER_PUBLISHERS`
//! concurrent publishers (default 32; each publishes its customers' events in order), half
//! through each replica. The clock runs from the first publish until both replicas' hubs
//! have been handed every event. The settings: one node with one partition (today's bus),
//! then the cluster with each of `CLUSTER_PARTITIONS` (default `1,3,6`).
//!
//! Besides the rate, each run says what an event cost in CPU: the Redis nodes' (`INFO cpu`,
//! `used_cpu_sys` + `used_cpu_user`, summed over the nodes) and this process's (the two
//! replicas and the publishers; `/proc/self/stat`, at Linux's 100 ticks per second), both
//! per event. On a machine with fewer cores than Redis nodes plus replicas, the rate is what
//! the cores allow; the CPU per event is what scales a deployment (see README, "Capacity").
//!
//! Every run checks that each replica was handed each event exactly once (its delivered
//! count, then nothing more for a moment) and fails otherwise. Bounded: each run gives up
//! after `CLUSTER_TIMEOUT_SECS` (default 120).

#[path = "../tests/api/support/redis.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use chrono::Utc;
use redis_server::{RedisCluster, RedisServer};
use resolvers::events::{DomainEvent, EventHub, EventKind, Subject};
use resolvers::ids::CustomerId;
use resolvers::ports::Source;
use switchyard::config::{EventsConfig, Secret};
use switchyard::events::{self, Events};
use tokio::sync::watch;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One setting to measure.
struct Setting {
    label: String,
    url: String,
    cluster: bool,
    partitions: usize,
    /// The Redis nodes' client ports, for their CPU counters.
    ports: Vec<u16>,
}

/// CPU seconds the Redis on 127.0.0.1:`port` has used (`INFO cpu`).
fn redis_cpu(port: u16) -> anyhow::Result<f64> {
    let output = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "INFO", "cpu"])
        .output()
        .context("running redis-cli")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| -> anyhow::Result<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .context("INFO cpu without used_cpu_*")?
            .trim()
            .parse()
            .context("a number of seconds")
    };
    Ok(field("used_cpu_sys")? + field("used_cpu_user")?)
}

/// CPU seconds this process has used (user + system), from `/proc/self/stat`.
fn own_cpu() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("/proc/self/stat")?;
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("a stat line")?
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    switchyard::telemetry::init(&switchyard::config::LogConfig {
        filter: "warn".into(),
        ..Default::default()
    });
    let total = env_or("CLUSTER_EVENTS", 100_000).max(1);
    let customers = env_or("CLUSTER_CUSTOMERS", 1_000).max(1);
    let publishers = env_or("CLUSTER_PUBLISHERS", 32).max(1);
    let timeout = Duration::from_secs(env_or("CLUSTER_TIMEOUT_SECS", 120) as u64);
    let partitions: Vec<usize> = std::env::var("CLUSTER_PARTITIONS")
        .unwrap_or_else(|_| "1,3,6".to_owned())
        .split(',')
        .map(|p| {
            p.trim()
                .parse()
                .context("CLUSTER_PARTITIONS: numbers, comma-separated")
        })
        .collect::<anyhow::Result<_>>()?;

    let node = RedisServer::start();
    let cluster = RedisCluster::start();
    let mut settings = vec![Setting {
        label: "one node".to_owned(),
        url: node.url(),
        cluster: false,
        partitions: 1,
        ports: vec![node.addr().port()],
    }];
    for &count in &partitions {
        settings.push(Setting {
            label: "cluster (3 nodes)".to_owned(),
            url: cluster.seed_url(),
            cluster: true,
            partitions: count,
            ports: cluster.ports(),
        });
    }
    println!(
        "event bus: {total} events of {customers} customers, {publishers} publishers, \
         2 replicas"
    );
    for (n, setting) in settings.iter().enumerate() {
        let run = tokio::time::timeout(timeout, measure(setting, n, total, customers, publishers))
            .await
            .with_context(|| format!("{}: not done within {timeout:?}", setting.label))??;
        println!(
            "  {:<18} partitions={:<2} {:>6.2} s  {:>7.0} events/s  ({:>6.0}/s per partition)  \
             publish p50 {:.2} ms p99 {:.2} ms  CPU per event: Redis {:.1} us, replicas {:.1} us",
            setting.label,
            setting.partitions,
            run.elapsed.as_secs_f64(),
            total as f64 / run.elapsed.as_secs_f64(),
            total as f64 / run.elapsed.as_secs_f64() / setting.partitions as f64,
            run.p50_ms,
            run.p99_ms,
            run.redis_cpu * 1e6 / total as f64,
            run.own_cpu * 1e6 / total as f64,
        );
    }
    Ok(())
}

/// One run's figures.
struct Run {
    elapsed: Duration,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU seconds of the Redis nodes during the run.
    redis_cpu: f64,
    /// CPU seconds of this process (replicas and publishers) during the run.
    own_cpu: f64,
}

/// Two replicas' buses on `setting`, `total` events published, until both delivered all.
async fn measure(
    setting: &Setting,
    run: usize,
    total: usize,
    customers: usize,
    publishers: usize,
) -> anyhow::Result<Run> {
    let config = EventsConfig {
        redis_url: Some(Secret::new(setting.url.clone())),
        cluster: setting.cluster,
        cluster_nodes: Vec::new(),
        partitions: setting.partitions,
        // A stream of each run's own, so that no run reads another's entries.
        stream_key: format!("bench:events:{run}"),
        stream_max_len: total * 2,
        dedup_ttl_secs: 600,
        hub_capacity: 1024,
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut replicas: Vec<Events> = Vec::new();
    for _ in 0..2 {
        let hub = EventHub::new(config.hub_capacity, Arc::new(resolvers::cache::NoCache));
        replicas.push(events::start(&config, hub, shutdown_rx.clone()).await?);
    }
    let customer_ids: Vec<CustomerId> = (0..customers)
        .map(|n| CustomerId::parse(&format!("cust-{n:06}")).expect("a customer id"))
        .collect();

    let redis_cpu_before: f64 = setting
        .ports
        .iter()
        .map(|p| redis_cpu(*p))
        .sum::<anyhow::Result<f64>>()?;
    let own_cpu_before = own_cpu()?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for publisher in 0..publishers {
        let bus = Arc::clone(&replicas[publisher % 2].bus);
        let ids = customer_ids.clone();
        // Event `n` is of customer `n % customers`; this publisher takes the customers
        // `c % publishers == publisher`, so each customer's events go out in order.
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for n in (0..total).filter(|n| (n % ids.len()) % publishers == publisher) {
                let event = DomainEvent {
                    id: format!("bench:{n}"),
                    kind: EventKind::OrderUpdated,
                    source: Source::Backend,
                    customer_id: Some(ids[n % ids.len()].clone()),
                    subject: Subject::default(),
                    occurred_at: Utc::now(),
                    audience: Vec::new(),
                    summary: format!("event {n}"),
                    payload: serde_json::Value::Null,
                };
                let sent = Instant::now();
                ensure!(
                    bus.publish(&event).await?,
                    "event {n} taken for a duplicate"
                );
                latencies.push(sent.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for task in tasks {
        latencies.extend(task.await??);
    }
    while replicas.iter().any(|r| r.delivered() < total as u64) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    let own_cpu = own_cpu()? - own_cpu_before;
    let redis_cpu = setting
        .ports
        .iter()
        .map(|p| redis_cpu(*p))
        .sum::<anyhow::Result<f64>>()?
        - redis_cpu_before;
    // Exactly once: nothing more arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (n, replica) in replicas.iter().enumerate() {
        if replica.delivered() != total as u64 {
            bail!(
                "replica {n} was handed {} events, not {total}",
                replica.delivered()
            );
        }
    }
    shutdown.send_replace(true);
    for replica in replicas {
        replica.join().await;
    }
    latencies.sort();
    let at = |q: f64| {
        latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1000.0
    };
    Ok(Run {
        elapsed,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        redis_cpu,
        own_cpu,
    })
}
