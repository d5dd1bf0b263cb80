//! Where devices, preferences and notification centres are kept: [`build`] picks Redis when
//! `[notifications] redis_url` is set (shared by every replica), memory otherwise (one
//! instance; lost at restart).

mod memory;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use resolvers::notifications::{NotificationStore, PushAddress};
use sha2::{Digest, Sha256};

use crate::config::NotificationsConfig;

pub(crate) use memory::MemoryStore;

/// Notifications kept per customer (the newest).
pub(crate) const INBOX_LIMIT: usize = 200;
/// How far back product views count ("viewed three times this week").
pub(crate) const VIEW_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most views of one product by one customer kept (the newest): the rules need three, and a
/// client looping on `trackProductView` must not grow the store.
pub(crate) const MAX_VIEWS_KEPT: usize = 100;

/// The store the config asks for.
pub(crate) async fn build(
    config: &NotificationsConfig,
) -> anyhow::Result<Arc<dyn NotificationStore>> {
    Ok(match &config.redis_url {
        Some(url) => Arc::new(redis::RedisStore::connect(url.expose(), &config.key_prefix).await?),
        None => Arc::new(MemoryStore::default()),
    })
}

/// A device's id: derived from its address, so registering the same token again finds it.
pub(crate) fn device_id(address: &PushAddress) -> String {
    device_id_of_key(&address.key())
}

/// The device id of an address key ([`PushAddress::key`]).
pub(crate) fn device_id_of_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    format!("dev-{}", hex::encode(&digest[..12]))
}
