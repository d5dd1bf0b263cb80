//! A cache in Redis, shared by replicas: `MGET`, `SET .. EX` in one pipeline, `DEL`.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use resolvers::cache::Cache;

/// A connection for what requests wait on (the caches, the rate limits): a Redis that is down
/// costs a request at most about a second (connect and answer timeouts of 500 ms, one
/// retry), not the several seconds of the defaults' retries; the callers then go on without
/// it.
pub(crate) async fn request_path_connection(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(500)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200));
    Ok(ConnectionManager::new_with_config(client, config).await?)
}

/// A Redis-backed cache; keys are prefixed so several deployments can share one Redis.
pub(crate) struct RedisCache {
    /// Reconnects on its own; cloned per call (cheap: a handle to one multiplexed connection).
    connection: ConnectionManager,
    /// Prepended to every key.
    prefix: String,
    /// How long entity entries are kept past their TTL (`cache.stale_if_error_ms`).
    stale_if_error: Duration,
}

impl RedisCache {
    /// Connects (fails at start when Redis cannot be reached).
    pub(crate) async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let connection = request_path_connection(url).await?;
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
            stale_if_error: Duration::ZERO,
        })
    }

    /// Keeps entries `grace` past their TTL, for stale-if-error.
    pub(crate) fn keeping_stale(mut self, grace: Duration) -> Self {
        self.stale_if_error = grace;
        self
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

#[async_trait]
impl Cache for RedisCache {
    fn stale_if_error(&self) -> Duration {
        self.stale_if_error
    }

    async fn get_many(&self, keys: &[String]) -> Vec<Option<Vec<u8>>> {
        if keys.is_empty() {
            return Vec::new();
        }
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let mut connection = self.connection.clone();
        match redis::cmd("MGET")
            .arg(&full)
            .query_async::<Vec<Option<Vec<u8>>>>(&mut connection)
            .await
        {
            Ok(values) if values.len() == keys.len() => values,
            Ok(_) => vec![None; keys.len()],
            Err(e) => {
                tracing::warn!(error = %e, "cache read failed; reading upstreams");
                vec![None; keys.len()]
            }
        }
    }

    async fn put_many(&self, entries: Vec<(String, Vec<u8>)>, ttl: Duration) {
        if entries.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (key, value) in &entries {
            pipe.cmd("SET")
                .arg(self.key(key))
                .arg(value)
                .arg("EX")
                .arg(ttl.as_secs().max(1))
                .ignore();
        }
        let mut connection = self.connection.clone();
        if let Err(e) = pipe.query_async::<()>(&mut connection).await {
            tracing::warn!(error = %e, "cache write failed");
        }
    }

    async fn delete(&self, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let mut connection = self.connection.clone();
        if let Err(e) = redis::cmd("DEL")
            .arg(&full)
            .query_async::<()>(&mut connection)
            .await
        {
            tracing::warn!(error = %e, "cache invalidation failed");
        }
    }
}
