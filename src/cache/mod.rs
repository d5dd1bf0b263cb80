//! The entity cache's adapters: memory (per replica) or Redis (shared).
//!
//! Either is correct with several replicas: every replica reads every event and deletes the
//! entries it makes stale before its subscriptions see the event (see `resolvers::cache`).
//! A Redis cache is shared, so one replica's fetch serves the others too.

mod memory;
mod redis;

use std::sync::Arc;

use resolvers::cache::{Cache, NoCache};

pub(crate) use memory::MemoryCache;
pub(crate) use redis::{RedisCache, request_path_connection};

use crate::config::CacheConfig;

/// The cache the config asks for.
pub(crate) async fn build(config: &CacheConfig) -> anyhow::Result<Arc<dyn Cache>> {
    if !config.enabled {
        return Ok(Arc::new(NoCache));
    }
    let grace = config.stale_if_error;
    Ok(match &config.redis_url {
        Some(url) => Arc::new(
            RedisCache::connect(url.expose(), &config.key_prefix)
                .await?
                .keeping_stale(grace),
        ),
        None => Arc::new(MemoryCache::new(config.max_entries).keeping_stale(grace)),
    })
}
