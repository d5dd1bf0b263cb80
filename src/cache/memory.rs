//! An in-process cache with expiry and a size bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use resolvers::cache::Cache;

/// Entries in a map behind a std mutex (held only for map operations, never across an
/// `.await`); expired entries are dropped when read, and swept when the map is full.
pub struct MemoryCache {
    /// Value and expiry by key.
    entries: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
    /// Most entries kept; inserts beyond it (after a sweep of the expired) are skipped.
    max_entries: usize,
}

impl MemoryCache {
    /// A cache holding at most `max_entries`.
    pub fn new(max_entries: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            max_entries,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Vec<u8>, Instant)>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get_many(&self, keys: &[String]) -> Vec<Option<Vec<u8>>> {
        let now = Instant::now();
        let entries = self.lock();
        keys.iter()
            .map(|k| {
                entries
                    .get(k)
                    .filter(|(_, expires)| *expires > now)
                    .map(|(v, _)| v.clone())
            })
            .collect()
    }

    async fn put_many(&self, new: Vec<(String, Vec<u8>)>, ttl: Duration) {
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() + new.len() > self.max_entries {
            entries.retain(|_, (_, expires)| *expires > now);
        }
        for (key, value) in new {
            if entries.len() >= self.max_entries && !entries.contains_key(&key) {
                break;
            }
            entries.insert(key, (value, now + ttl));
        }
    }

    async fn delete(&self, keys: &[String]) {
        let mut entries = self.lock();
        for key in keys {
            entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_expire_and_can_be_deleted() {
        let cache = MemoryCache::new(10);
        let k = |s: &str| s.to_owned();
        cache
            .put_many(
                vec![(k("a"), b"1".to_vec()), (k("b"), b"2".to_vec())],
                Duration::from_secs(5),
            )
            .await;
        assert_eq!(
            cache.get_many(&[k("a"), k("c")]).await,
            [Some(b"1".to_vec()), None]
        );
        cache.delete(&[k("a")]).await;
        assert_eq!(
            cache.get_many(&[k("a"), k("b")]).await,
            [None, Some(b"2".to_vec())]
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(cache.get_many(&[k("b")]).await, [None]);
    }

    #[tokio::test]
    async fn never_holds_more_than_its_bound() {
        let cache = MemoryCache::new(2);
        let entries = (0..5).map(|i| (i.to_string(), vec![i])).collect();
        cache.put_many(entries, Duration::from_secs(60)).await;
        assert_eq!(cache.lock().len(), 2);
    }
}
