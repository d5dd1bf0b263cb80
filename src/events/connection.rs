//! Where the bus's Redis is: one node, or a Redis Cluster (`[events] cluster = true`).
//!
//! [`Target`] opens the two kinds of connection the bus uses, the same way for both:
//! - a **publisher**, shared by every publish of the replica and reconnecting by itself: a
//!   [`ConnectionManager`] on one node; on a cluster a [`ClusterConnection`], which knows
//!   which node holds which slot, follows `MOVED`/`ASK` redirections and reconnects to a node
//!   it lost;
//! - a **reader** of one stream, on connections of its own (an `XREAD BLOCK` holds up
//!   whatever else is queued on its connection), whose replies may take the block time plus
//!   a grace period. On a cluster that is a [`ClusterConnection`] too, which routes the read
//!   to the node holding the stream's slot (one stream per read: a read of several streams
//!   would need them in one slot).
//!
//! With a cluster, `redis_url` is one seed node (any node of the cluster), and
//! `cluster_nodes` more: a client connects to whichever seeds answer, learns the other nodes
//! from them (`CLUSTER SLOTS`) and follows the cluster's layout from then on. A reader that
//! reconnects starts from the seeds again, so with one seed only, that node being down keeps
//! every reader from reconnecting, whichever node its partition is on.

use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::config::{EventsConfig, Secret};

/// Longest a connection attempt (TCP, TLS, handshake) may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First wait of the publisher's reconnects; it doubles with each failure in a row.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between the publisher's reconnect attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// The Redis of the bus, and how to connect to it.
pub(super) enum Target {
    /// One endpoint (standalone, or a primary behind a stable address). Boxed: a client is
    /// ten times the size of the cluster's seed list.
    Node(Box<Client>),
    /// A Redis Cluster, reached through a seed node.
    Cluster {
        /// The seeds' URLs (`redis_url`, then `cluster_nodes`), to make clients from.
        seeds: Vec<String>,
    },
}

impl Target {
    /// The target of `[events]`: `redis_url`'s node, or with `cluster` the cluster of which
    /// `redis_url` and `cluster_nodes` are nodes (seeds). Fails when a URL is unusable; the
    /// error never repeats the URL, which may hold a password.
    pub(super) fn of(config: &EventsConfig, url: &str) -> anyhow::Result<Target> {
        let mut seeds = vec![url];
        seeds.extend(config.cluster_nodes.iter().map(Secret::expose));
        Self::open(&seeds, config.cluster)
    }

    /// The target `urls` name: one node, or with `cluster` seed nodes of a cluster.
    fn open(urls: &[&str], cluster: bool) -> anyhow::Result<Target> {
        if !cluster {
            return Client::open(urls[0])
                .map(|client| Target::Node(Box::new(client)))
                .map_err(|error| {
                    anyhow::anyhow!(
                        "events.redis_url is not a usable Redis URL (redis://, rediss:// or \
                     redis+unix://): {error}"
                    )
                });
        }
        let seeds: Vec<String> = urls.iter().map(|url| (*url).to_owned()).collect();
        // Checked now, so that a bad URL fails at start rather than at the first connection.
        cluster_client(&seeds, CONNECT_TIMEOUT).map_err(|error| {
            anyhow::anyhow!(
                "events.redis_url and events.cluster_nodes are not usable Redis Cluster seeds \
                 (all redis://, or all rediss://): {error}"
            )
        })?;
        Ok(Target::Cluster { seeds })
    }

    /// The address of the node (or of the seed), for messages: never the credentials.
    pub(super) fn address(&self, url: &str) -> String {
        match self {
            Target::Node(client) => client.get_connection_info().addr().to_string(),
            // The cluster client does not say; the seed parses as a node's URL.
            Target::Cluster { .. } => Client::open(url)
                .map(|seed| format!("{} (cluster seed)", seed.get_connection_info().addr()))
                .unwrap_or_else(|_| "the cluster seed".to_owned()),
        }
    }

    /// The shared publishing connection, each command bounded by `response_timeout`.
    pub(super) async fn publisher(&self, response_timeout: Duration) -> RedisResult<Connection> {
        match self {
            Target::Node(client) => client
                .get_connection_manager_with_config(
                    ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(CONNECT_TIMEOUT))
                        .set_response_timeout(Some(response_timeout))
                        .set_min_delay(RECONNECT_FIRST)
                        .set_max_delay(RECONNECT_MAX),
                )
                .await
                .map(Connection::Managed),
            Target::Cluster { seeds } => cluster_connection(seeds, response_timeout).await,
        }
    }

    /// A connection of one reader's own, whose replies may take up to `response_timeout`.
    pub(super) async fn reader(&self, response_timeout: Duration) -> RedisResult<Connection> {
        match self {
            Target::Node(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(response_timeout));
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Connection::Node)
            }
            Target::Cluster { seeds } => cluster_connection(seeds, response_timeout).await,
        }
    }
}

/// A cluster client whose every command, retries and redirections included, is bounded by
/// `response_timeout` (set on the client: a connection's own config bounds each attempt but
/// not the retries, which would then go on for minutes while a node is unreachable).
fn cluster_client(seeds: &[String], response_timeout: Duration) -> RedisResult<ClusterClient> {
    ClusterClient::builder(seeds.iter().map(String::as_str))
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(response_timeout)
        .build()
}

/// A new cluster connection (connections to every primary), replies bounded by
/// `response_timeout`, retries and redirections included.
async fn cluster_connection(
    seeds: &[String],
    response_timeout: Duration,
) -> RedisResult<Connection> {
    cluster_client(seeds, response_timeout)?
        .get_async_connection()
        .await
        .map(Connection::Cluster)
}

/// A connection to the bus's Redis, of whichever kind [`Target`] opened.
#[derive(Clone)]
pub(super) enum Connection {
    /// One node, one connection (a reader's).
    Node(MultiplexedConnection),
    /// One node, reconnecting by itself (the publisher).
    Managed(ConnectionManager),
    /// A cluster: a connection per node, routed by slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Node(connection) => connection.req_packed_command(cmd),
            Connection::Managed(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Node(connection) => connection.req_packed_commands(pipeline, offset, count),
            Connection::Managed(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Node(connection) => connection.get_db(),
            Connection::Managed(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_and_unix_socket_urls_are_accepted() {
        for url in [
            "redis://127.0.0.1:6379/0",
            "rediss://redis.example.com:6380",
            "redis+unix:///run/redis/redis.sock",
        ] {
            assert!(Target::open(&[url], false).is_ok(), "{url}");
        }
    }

    #[test]
    fn a_cluster_takes_tcp_seeds_only() {
        assert!(Target::open(&["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"], true).is_ok());
        assert!(Target::open(&["rediss://redis-1.example.com:6380"], true).is_ok());
        assert!(Target::open(&["redis://10.0.0.1:6379", "rediss://10.0.0.2:6380"], true).is_err());
        let error = Target::open(&["redis+unix:///run/redis/redis.sock"], true)
            .err()
            .expect("a unix socket is no cluster seed");
        assert!(
            error
                .to_string()
                .starts_with("events.redis_url and events.cluster_nodes are not usable"),
            "{error}"
        );
    }
}
