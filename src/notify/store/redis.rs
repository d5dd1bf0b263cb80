//! The notification store in Redis, shared by every replica. Keys (under the configured
//! prefix):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `device:<id>` | string | a device (JSON); the id is derived from its token or endpoint |
//! | `devices:<customer>` | set | the customer's device ids |
//! | `prefs:<customer>` | string | the customer's preferences (JSON) |
//! | `inbox:<customer>` | sorted set | notification ids by time (the newest [`INBOX_LIMIT`]) |
//! | `inbox:<customer>:unread` | sorted set | the unread ones among them |
//! | `inbox:<customer>:items` | hash | id -> notification (JSON) |
//! | `views:<product>:<customer>` | sorted set | view times (the last week) |
//! | `viewers:<product>` | set | who viewed the product |
//! | `claim:<key>` | string | a claim's value, expiring |
//!
//! What must not half-happen (moving a device to another customer, adding a notification and
//! trimming the centre, ending a claim only if it is still the one taken) is one Lua script.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use resolvers::ids::CustomerId;
use resolvers::notifications::{
    DeviceRecord, InboxQuery, NotificationRecord, NotificationStore, Preferences, StoreError,
    StoreResult,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{INBOX_LIMIT, MAX_VIEWS_KEPT, VIEW_WINDOW, device_id};

/// Registers a device: KEYS[1] = `device:<id>`, KEYS[2] = the new owner's device set;
/// ARGV[1] = the record, ARGV[2] = the id, ARGV[3] = the prefix of device sets. The device
/// leaves its former owner's set.
const REGISTER: &str = r#"
local old = redis.call('GET', KEYS[1])
if old then
  local owner = cjson.decode(old)['customer_id']
  redis.call('SREM', ARGV[3] .. owner, ARGV[2])
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
return 1
"#;

/// Adds a notification: KEYS = the centre's zset, unread zset, items hash; ARGV = id, score,
/// record, limit. Answers 0 when it is there already.
const ADD: &str = r#"
if redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[3]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if extra > 0 then
  local gone = redis.call('ZRANGE', KEYS[1], 0, extra - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1)
  for _, id in ipairs(gone) do
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
  end
end
return 1
"#;

/// Ends a claim if it still holds a value: KEYS[1] = `claim:<key>`, ARGV[1] = the value.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// A notification store in Redis.
pub(crate) struct RedisStore {
    /// Reconnects on its own; cloned per call (a handle to one multiplexed connection).
    connection: ConnectionManager,
    /// Prepended to every key.
    prefix: String,
    register: Script,
    add: Script,
    release: Script,
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("redis: {e}"))
}

fn json<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(failed)
}

fn parse<T: DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(failed)
}

impl RedisStore {
    /// Connects (fails at start when Redis cannot be reached).
    pub(crate) async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let connection = ConnectionManager::new(client).await?;
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
            register: Script::new(REGISTER),
            add: Script::new(ADD),
            release: Script::new(RELEASE),
        })
    }

    fn key(&self, key: impl std::fmt::Display) -> String {
        format!("{}{key}", self.prefix)
    }

    fn inbox_keys(&self, customer: &CustomerId) -> [String; 3] {
        [
            self.key(format!("inbox:{customer}")),
            self.key(format!("inbox:{customer}:unread")),
            self.key(format!("inbox:{customer}:items")),
        ]
    }

    async fn views(
        &self,
        customer: &CustomerId,
        product: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<u32> {
        let key = self.key(format!("views:{product}:{customer}"));
        let since = (at - window()).timestamp_millis();
        let mut c = self.connection.clone();
        let _: () = c.zrembyscore(&key, "-inf", since).await.map_err(failed)?;
        let count: u64 = c.zcard(&key).await.map_err(failed)?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }
}

fn window() -> chrono::Duration {
    chrono::Duration::from_std(VIEW_WINDOW).unwrap_or_default()
}

#[async_trait]
impl NotificationStore for RedisStore {
    async fn register_device(&self, mut device: DeviceRecord) -> StoreResult<DeviceRecord> {
        device.id = device_id(&device.address);
        let mut c = self.connection.clone();
        let _: i64 = self
            .register
            .key(self.key(format!("device:{}", device.id)))
            .key(self.key(format!("devices:{}", device.customer_id)))
            .arg(json(&device)?)
            .arg(&device.id)
            .arg(self.key("devices:"))
            .invoke_async(&mut c)
            .await
            .map_err(failed)?;
        Ok(device)
    }

    async fn unregister_device(&self, customer: &CustomerId, id: &str) -> StoreResult<bool> {
        let mut c = self.connection.clone();
        let removed: i64 = c
            .srem(self.key(format!("devices:{customer}")), id)
            .await
            .map_err(failed)?;
        if removed > 0 {
            let _: () = c
                .del(self.key(format!("device:{id}")))
                .await
                .map_err(failed)?;
        }
        Ok(removed > 0)
    }

    async fn devices(&self, customer: &CustomerId) -> StoreResult<Vec<DeviceRecord>> {
        let mut c = self.connection.clone();
        let ids: Vec<String> = c
            .smembers(self.key(format!("devices:{customer}")))
            .await
            .map_err(failed)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| self.key(format!("device:{id}")))
            .collect();
        let records: Vec<Option<String>> = c.mget(&keys).await.map_err(failed)?;
        let mut devices = Vec::new();
        for record in records.into_iter().flatten() {
            let device: DeviceRecord = parse(&record)?;
            // A device that moved on is still in this set only between two steps of a move.
            if &device.customer_id == customer {
                devices.push(device);
            }
        }
        devices.sort_by(|a, b| (a.registered_at, &a.id).cmp(&(b.registered_at, &b.id)));
        Ok(devices)
    }

    async fn forget_address(&self, address_key: &str) -> StoreResult<()> {
        let id = super::device_id_of_key(address_key);
        let key = self.key(format!("device:{id}"));
        let mut c = self.connection.clone();
        let record: Option<String> = c.get(&key).await.map_err(failed)?;
        if let Some(record) = record {
            let device: DeviceRecord = parse(&record)?;
            let _: () = c.del(&key).await.map_err(failed)?;
            let _: () = c
                .srem(self.key(format!("devices:{}", device.customer_id)), &id)
                .await
                .map_err(failed)?;
        }
        Ok(())
    }

    async fn preferences(&self, customer: &CustomerId) -> StoreResult<Preferences> {
        let mut c = self.connection.clone();
        let stored: Option<String> = c
            .get(self.key(format!("prefs:{customer}")))
            .await
            .map_err(failed)?;
        match stored {
            Some(text) => parse(&text),
            None => Ok(Preferences::default()),
        }
    }

    async fn set_preferences(
        &self,
        customer: &CustomerId,
        preferences: &Preferences,
    ) -> StoreResult<()> {
        let mut c = self.connection.clone();
        let _: () = c
            .set(self.key(format!("prefs:{customer}")), json(preferences)?)
            .await
            .map_err(failed)?;
        Ok(())
    }

    async fn add_notification(&self, notification: &NotificationRecord) -> StoreResult<bool> {
        let [all, unread, items] = self.inbox_keys(&notification.customer_id);
        let mut c = self.connection.clone();
        let added: i64 = self
            .add
            .key(all)
            .key(unread)
            .key(items)
            .arg(&notification.id)
            .arg(notification.created_at.timestamp_millis())
            .arg(json(notification)?)
            .arg(INBOX_LIMIT)
            .invoke_async(&mut c)
            .await
            .map_err(failed)?;
        Ok(added == 1)
    }

    async fn notifications(
        &self,
        customer: &CustomerId,
        query: &InboxQuery,
    ) -> StoreResult<Option<Vec<NotificationRecord>>> {
        let [all, unread, items] = self.inbox_keys(customer);
        let set = if query.unread_only { &unread } else { &all };
        let mut c = self.connection.clone();
        let start = match &query.after {
            Some(after) => {
                let rank: Option<isize> = c.zrevrank(set, after).await.map_err(failed)?;
                match rank {
                    Some(rank) => rank + 1,
                    None => {
                        // Not unread (read since) but in the centre: the page goes on after
                        // the unread ones newer than it. Not in the centre at all: unknown.
                        let score: Option<f64> = c.zscore(&all, after).await.map_err(failed)?;
                        let Some(score) = score else {
                            return Ok(None);
                        };
                        let newer: isize = c
                            .zcount(&unread, format!("({score}"), "+inf")
                            .await
                            .map_err(failed)?;
                        // Newest first puts members of one score in reverse order of their
                        // ids: those of the cursor's score after it in that order come first.
                        let tied: Vec<String> = c
                            .zrangebyscore(&unread, score, score)
                            .await
                            .map_err(failed)?;
                        let tied_before = tied.iter().filter(|id| id.as_str() > after.as_str());
                        newer + tied_before.count() as isize
                    }
                }
            }
            None => 0,
        };
        let ids: Vec<String> = c
            .zrevrange(set, start, start + query.first as isize)
            .await
            .map_err(failed)?;
        if ids.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let records: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&items)
            .arg(&ids)
            .query_async(&mut c)
            .await
            .map_err(failed)?;
        let unread_scores: Vec<Option<f64>> = redis::cmd("ZMSCORE")
            .arg(&unread)
            .arg(&ids)
            .query_async(&mut c)
            .await
            .map_err(failed)?;
        let mut page = Vec::new();
        for (record, unread) in records.into_iter().zip(unread_scores) {
            if let Some(record) = record {
                let mut notification: NotificationRecord = parse(&record)?;
                notification.read = unread.is_none();
                page.push(notification);
            }
        }
        Ok(Some(page))
    }

    async fn mark_read(&self, customer: &CustomerId, ids: &[String]) -> StoreResult<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        let [_, unread, _] = self.inbox_keys(customer);
        let mut c = self.connection.clone();
        let removed: usize = c.zrem(unread, ids).await.map_err(failed)?;
        Ok(removed)
    }

    async fn unread_count(&self, customer: &CustomerId) -> StoreResult<usize> {
        let [_, unread, _] = self.inbox_keys(customer);
        let mut c = self.connection.clone();
        c.zcard(unread).await.map_err(failed)
    }

    async fn count_view(
        &self,
        customer: &CustomerId,
        product: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<u32> {
        let key = self.key(format!("views:{product}:{customer}"));
        let mut c = self.connection.clone();
        let ms = at.timestamp_millis();
        // The member is unique per view (a count, not a set of times).
        let member = format!("{ms}:{}", uuid_like());
        let _: () = redis::pipe()
            .zadd(&key, member, ms)
            .ignore()
            .zremrangebyrank(&key, 0, -(MAX_VIEWS_KEPT as isize) - 1)
            .ignore()
            .expire(&key, VIEW_WINDOW.as_secs() as i64)
            .ignore()
            .sadd(self.key(format!("viewers:{product}")), customer.as_str())
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(failed)?;
        self.views(customer, product, at).await
    }

    async fn frequent_viewers(
        &self,
        product: &str,
        min: u32,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<CustomerId>> {
        let mut c = self.connection.clone();
        let viewers: Vec<String> = c
            .smembers(self.key(format!("viewers:{product}")))
            .await
            .map_err(failed)?;
        let mut frequent = Vec::new();
        for viewer in viewers {
            let Ok(customer) = CustomerId::parse(&viewer) else {
                continue;
            };
            if self.views(&customer, product, at).await? >= min {
                frequent.push(customer);
            }
        }
        frequent.sort();
        Ok(frequent)
    }

    async fn claim(&self, key: &str, value: &str, ttl: Duration) -> StoreResult<bool> {
        let mut c = self.connection.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key(format!("claim:{key}")))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut c)
            .await
            .map_err(failed)?;
        Ok(set.is_some())
    }

    async fn release(&self, key: &str, value: &str) -> StoreResult<bool> {
        let mut c = self.connection.clone();
        let released: i64 = self
            .release
            .key(self.key(format!("claim:{key}")))
            .arg(value)
            .invoke_async(&mut c)
            .await
            .map_err(failed)?;
        Ok(released > 0)
    }

    async fn remember(&self, key: &str, value: &str, ttl: Duration) -> StoreResult<()> {
        let mut c = self.connection.clone();
        let _: () = redis::cmd("SET")
            .arg(self.key(format!("claim:{key}")))
            .arg(value)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut c)
            .await
            .map_err(failed)?;
        Ok(())
    }

    async fn claimed(&self, key: &str) -> StoreResult<Option<String>> {
        let mut c = self.connection.clone();
        c.get(self.key(format!("claim:{key}")))
            .await
            .map_err(failed)
    }
}

/// A value unique enough to tell two views of the same millisecond apart.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
