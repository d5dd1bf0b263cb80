//! Rate limits per client IP and per signed-in user (`[rate_limit]`), shared by the replicas
//! through Redis when `redis_url` is set, per replica in memory otherwise.
//!
//! Fixed windows of a minute: each operation counts one against its client's IP before
//! anything is parsed, and one against its user once the token is validated (a batch counts
//! as many as it holds; a websocket counts its connection against the IP and each `subscribe`
//! against the user). Over a limit: HTTP 429 with `Retry-After` (the seconds left in the
//! window) and `extensions.code: RATE_LIMITED`; over websockets, the `subscribe` gets an
//! `error` with that code.
//!
//! The client IP is the connection's peer, or, behind `trusted_proxies` proxies that each
//! append to `X-Forwarded-For`, the address that many entries from the right of that header
//! (what the nearest untrusted hop sent). A Redis that cannot be reached lets requests through
//! (logged): the limits protect the service, they must not take it down.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use redis::aio::ConnectionManager;

use super::error::TransportError;
use crate::config::RateLimitConfig;

/// The peer's address, which the server loop (`crate::serve`) puts on every request.
pub(crate) type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

/// The length of a window.
const WINDOW_SECS: u64 = 60;

/// The limits and their counters.
pub(crate) struct RateLimits {
    /// `None`: no limits.
    counters: Option<Counters>,
    per_ip: u64,
    per_user: u64,
    trusted_proxies: usize,
}

enum Counters {
    /// Counts by `<kind>:<who>:<window>`, forgotten two windows later.
    Memory(moka::future::Cache<String, Arc<AtomicU64>>),
    Redis {
        connection: ConnectionManager,
        prefix: String,
    },
}

impl RateLimits {
    /// The limits the config asks for.
    pub(crate) async fn build(config: &RateLimitConfig) -> anyhow::Result<Self> {
        let counters = match (&config.redis_url, config.enabled) {
            (_, false) => None,
            (Some(url), true) => Some(Counters::Redis {
                connection: crate::cache::request_path_connection(url.expose()).await?,
                prefix: config.key_prefix.clone(),
            }),
            (None, true) => Some(Counters::Memory(
                moka::future::Cache::builder()
                    .max_capacity(1_000_000)
                    .time_to_live(Duration::from_secs(2 * WINDOW_SECS))
                    .build(),
            )),
        };
        Ok(Self {
            counters,
            per_ip: config.per_ip_per_minute,
            per_user: config.per_user_per_minute,
            trusted_proxies: config.trusted_proxies,
        })
    }

    /// Counts `n` operations of the client that sent a request with these headers over a
    /// connection from `peer`.
    pub(crate) async fn client(
        &self,
        headers: &HeaderMap,
        peer: Peer,
        n: usize,
    ) -> Result<(), TransportError> {
        let ip = self.client_ip(headers, peer.map(|Extension(ConnectInfo(peer))| peer));
        self.ip(ip, n as u64).await
    }

    /// Counts `n` operations of the client at `ip`.
    async fn ip(&self, ip: IpAddr, n: u64) -> Result<(), TransportError> {
        self.hit("ip", &ip.to_string(), self.per_ip, n).await
    }

    /// Counts `n` operations of the signed-in `user`.
    pub(crate) async fn user(&self, user: &str, n: u64) -> Result<(), TransportError> {
        self.hit("user", user, self.per_user, n).await
    }

    /// The client's address (see the module docs).
    fn client_ip(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> IpAddr {
        let peer_ip = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip());
        if self.trusted_proxies == 0 {
            return peer_ip;
        }
        // Every entry counts for the position, parsed or not: a proxy that writes a port or
        // something odd must not shift the choice onto an entry the client wrote.
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let hop = match hops.len().checked_sub(self.trusted_proxies) {
            Some(i) => hops[i],
            None => hops.first().copied().unwrap_or(""),
        };
        parse_hop(hop).unwrap_or(peer_ip)
    }

    async fn hit(&self, kind: &str, who: &str, limit: u64, n: u64) -> Result<(), TransportError> {
        let Some(counters) = &self.counters else {
            return Ok(());
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let window = now / WINDOW_SECS;
        let key = format!("{kind}:{who}:{window}");
        let count = match counters {
            Counters::Memory(cache) => cache
                .get_with(key, async { Arc::new(AtomicU64::new(0)) })
                .await
                .fetch_add(n, Ordering::Relaxed)
                .saturating_add(n),
            Counters::Redis { connection, prefix } => {
                let mut connection = connection.clone();
                let counted: redis::RedisResult<(u64,)> = redis::pipe()
                    .atomic()
                    .incr(format!("{prefix}{key}"), n)
                    .expire(format!("{prefix}{key}"), (2 * WINDOW_SECS) as i64)
                    .ignore()
                    .query_async(&mut connection)
                    .await;
                match counted {
                    Ok((count,)) => count,
                    Err(e) => {
                        tracing::warn!(error = %e, "rate limits: Redis cannot count; letting the request through");
                        return Ok(());
                    }
                }
            }
        };
        if count <= limit {
            return Ok(());
        }
        metrics::counter!("switchyard_rate_limited_total", "by" => kind.to_owned()).increment(1);
        Err(TransportError::RateLimited {
            retry_after_secs: WINDOW_SECS - now % WINDOW_SECS,
            by: if kind == "ip" {
                "client address"
            } else {
                "user"
            },
            limit,
        })
    }
}

/// An `X-Forwarded-For` entry: an address, with or without a port (`1.2.3.4:443`,
/// `[2001:db8::1]:443`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn limits(trusted_proxies: usize) -> RateLimits {
        RateLimits::build(&RateLimitConfig {
            enabled: true,
            per_ip_per_minute: 3,
            per_user_per_minute: 2,
            trusted_proxies,
            ..RateLimitConfig::default()
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn counts_each_client_on_its_own() {
        let limits = limits(0).await;
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        for _ in 0..3 {
            assert!(limits.ip(a, 1).await.is_ok());
        }
        let Err(TransportError::RateLimited {
            retry_after_secs, ..
        }) = limits.ip(a, 1).await
        else {
            panic!("the fourth request of a minute is over the limit");
        };
        assert!((1..=60).contains(&retry_after_secs));
        assert!(limits.ip(b, 1).await.is_ok());
        assert!(limits.user("cust-0001", 2).await.is_ok());
        assert!(limits.user("cust-0001", 1).await.is_err());
        assert!(limits.user("cust-0002", 1).await.is_ok());
    }

    #[tokio::test]
    async fn behind_trusted_proxies_the_client_is_what_the_first_untrusted_hop_sent() {
        let peer = Some(SocketAddr::from(([10, 0, 0, 9], 5000)));
        let mut headers = HeaderMap::new();
        // Forged by the client, then appended by our two proxies.
        headers.insert(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.7, 10.0.0.8".parse().unwrap(),
        );
        assert_eq!(
            limits(0).await.client_ip(&headers, peer),
            IpAddr::from([10, 0, 0, 9])
        );
        assert_eq!(
            limits(2).await.client_ip(&headers, peer),
            IpAddr::from([203, 0, 113, 7])
        );
        assert_eq!(
            limits(5).await.client_ip(&headers, peer),
            IpAddr::from([6, 6, 6, 6])
        );
        // A proxy that writes ports: still the entry at the trusted position.
        headers.insert(
            "x-forwarded-for",
            "8.8.8.8, 203.0.113.7:5555, 10.0.0.8:443".parse().unwrap(),
        );
        assert_eq!(
            limits(2).await.client_ip(&headers, peer),
            IpAddr::from([203, 0, 113, 7])
        );
        // An entry that is no address at that position: the peer, not a client's entry.
        headers.insert(
            "x-forwarded-for",
            "8.8.8.8, junk, 10.0.0.8".parse().unwrap(),
        );
        assert_eq!(
            limits(2).await.client_ip(&headers, peer),
            IpAddr::from([10, 0, 0, 9])
        );
    }

    #[tokio::test]
    async fn switched_off_nothing_is_counted() {
        let limits = RateLimits::build(&RateLimitConfig::default())
            .await
            .unwrap();
        for _ in 0..10_000 {
            assert!(limits.ip(IpAddr::from([10, 0, 0, 1]), 1).await.is_ok());
        }
    }
}
