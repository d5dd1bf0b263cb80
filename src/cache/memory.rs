//! An in-process cache with a size bound and a TTL per entry, on moka.
//!
//! moka keeps the bound: when the cache is full, a new entry is admitted if it is asked for
//! at least as often as what it would evict (TinyLFU), so a cache full of live entries keeps
//! taking in what becomes popular, and the bound is never exceeded for long. Its own
//! maintenance runs in small steps on the callers' operations, never a sweep of the whole map
//! under one lock. Each entry expires at the TTL it was stored with (an [`Expiry`] that moka
//! evicts by), and reads check the same deadline on tokio's clock, so what a reader sees is
//! exact (also under `tokio::time::pause()`, which moka's own clock does not follow).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moka::Expiry;
use resolvers::cache::Cache;
use tokio::time::Instant;

/// Entries by key, bounded and expiring (see the module docs).
pub(crate) struct MemoryCache {
    /// moka's concurrent cache; values are `Arc`s since moka hands out a clone on every read.
    entries: moka::future::Cache<String, Arc<Entry>>,
    /// How long entity entries are kept past their TTL (`cache.stale_if_error_ms`).
    stale_if_error: Duration,
}

/// One stored value and how long it lives.
struct Entry {
    bytes: Vec<u8>,
    /// The TTL it was stored with: what moka evicts it by.
    ttl: Duration,
    /// When it stops being served, on tokio's clock: what reads check.
    expires_at: Instant,
}

/// Tells moka that each entry lives for its own TTL, from when it was last written.
struct PerEntryTtl;

impl Expiry<String, Arc<Entry>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        entry: &Arc<Entry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Arc<Entry>,
        _updated_at: std::time::Instant,
        _remaining: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

impl MemoryCache {
    /// A cache holding at most `max_entries`.
    pub(crate) fn new(max_entries: usize) -> Self {
        Self {
            entries: moka::future::Cache::builder()
                .max_capacity(u64::try_from(max_entries).unwrap_or(u64::MAX))
                .expire_after(PerEntryTtl)
                .build(),
            stale_if_error: Duration::ZERO,
        }
    }

    /// Keeps entries `grace` past their TTL, for stale-if-error.
    pub(crate) fn keeping_stale(mut self, grace: Duration) -> Self {
        self.stale_if_error = grace;
        self
    }
}

#[async_trait]
impl Cache for MemoryCache {
    fn stale_if_error(&self) -> Duration {
        self.stale_if_error
    }

    async fn get_many(&self, keys: &[String]) -> Vec<Option<Vec<u8>>> {
        let now = Instant::now();
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            let live = self
                .entries
                .get(key)
                .await
                .filter(|entry| entry.expires_at > now);
            found.push(live.map(|entry| entry.bytes.clone()));
        }
        found
    }

    async fn put_many(&self, new: Vec<(String, Vec<u8>)>, ttl: Duration) {
        let expires_at = Instant::now() + ttl;
        for (key, bytes) in new {
            let entry = Entry {
                bytes,
                ttl,
                expires_at,
            };
            self.entries.insert(key, Arc::new(entry)).await;
        }
    }

    async fn delete(&self, keys: &[String]) {
        for key in keys {
            self.entries.invalidate(key).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> String {
        s.to_owned()
    }

    /// How many entries the cache holds, once moka has applied what is pending.
    async fn held(cache: &MemoryCache) -> u64 {
        cache.entries.run_pending_tasks().await;
        cache.entries.entry_count()
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_at_their_own_ttl_and_can_be_deleted() {
        let cache = MemoryCache::new(10);
        cache
            .put_many(
                vec![(k("a"), b"1".to_vec()), (k("b"), b"2".to_vec())],
                Duration::from_secs(5),
            )
            .await;
        cache
            .put_many(vec![(k("c"), b"3".to_vec())], Duration::from_secs(60))
            .await;
        assert_eq!(
            cache.get_many(&[k("a"), k("x")]).await,
            [Some(b"1".to_vec()), None]
        );
        cache.delete(&[k("a")]).await;
        assert_eq!(
            cache.get_many(&[k("a"), k("b")]).await,
            [None, Some(b"2".to_vec())]
        );

        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(
            cache.get_many(&[k("b"), k("c")]).await,
            [None, Some(b"3".to_vec())],
            "b lived its 5 s, c has 54 s left"
        );
        // Storing again starts a new life with the new TTL.
        cache
            .put_many(vec![(k("b"), b"2'".to_vec())], Duration::from_secs(60))
            .await;
        tokio::time::advance(Duration::from_secs(55)).await;
        assert_eq!(
            cache.get_many(&[k("b"), k("c")]).await,
            [Some(b"2'".to_vec()), None]
        );
    }

    #[tokio::test]
    async fn each_entry_tells_moka_its_own_ttl() {
        let entry = |ttl| {
            Arc::new(Entry {
                bytes: Vec::new(),
                ttl,
                expires_at: Instant::now() + ttl,
            })
        };
        let now = std::time::Instant::now();
        let short = entry(Duration::from_secs(5));
        let long = entry(Duration::from_secs(300));
        assert_eq!(
            PerEntryTtl.expire_after_create(&k("a"), &short, now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            PerEntryTtl.expire_after_update(&k("a"), &long, now, Some(Duration::from_secs(1))),
            Some(Duration::from_secs(300)),
            "a rewrite lives its new TTL, not what was left of the old one"
        );
    }

    #[tokio::test]
    async fn never_holds_more_than_its_bound() {
        let cache = MemoryCache::new(20);
        let entries = (0..100).map(|i| (i.to_string(), vec![i])).collect();
        cache.put_many(entries, Duration::from_secs(60)).await;
        assert!(held(&cache).await <= 20);
    }

    #[tokio::test]
    async fn a_cache_full_of_live_entries_still_takes_in_what_is_asked_for() {
        let cache = MemoryCache::new(20);
        let old: Vec<String> = (0..20).map(|i| format!("old-{i}")).collect();
        cache
            .put_many(
                old.iter()
                    .map(|key| (key.clone(), b"old".to_vec()))
                    .collect(),
                Duration::from_secs(3600),
            )
            .await;
        assert_eq!(held(&cache).await, 20);

        // New keys, each asked for (and missed) a few times, as read-through does, then
        // stored: they get in, and the cache stays within its bound.
        let new: Vec<String> = (0..10).map(|i| format!("new-{i}")).collect();
        for _ in 0..3 {
            assert!(cache.get_many(&new).await.iter().all(Option::is_none));
        }
        cache
            .put_many(
                new.iter()
                    .map(|key| (key.clone(), b"new".to_vec()))
                    .collect(),
                Duration::from_secs(3600),
            )
            .await;
        assert!(held(&cache).await <= 20);
        assert_eq!(
            cache.get_many(&new).await,
            vec![Some(b"new".to_vec()); new.len()]
        );
    }
}
