//! The notification store in memory: one instance only, lost at restart (use Redis for
//! several replicas, or to keep devices across restarts).
//!
//! Bounded: a customer's notification centre keeps its newest [`INBOX_LIMIT`] notifications,
//! product views older than a week are dropped as they are counted, and claims expire.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use resolvers::ids::CustomerId;
use resolvers::notifications::{
    DeviceRecord, InboxQuery, NotificationRecord, NotificationStore, Preferences, StoreResult,
};

use super::{INBOX_LIMIT, MAX_VIEWS_KEPT, VIEW_WINDOW, device_id};

/// Everything, under one std mutex: held only for map operations, never across an await.
#[derive(Default)]
pub(crate) struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// By device id (derived from the address, so a re-registration finds its device).
    devices: HashMap<String, DeviceRecord>,
    preferences: HashMap<CustomerId, Preferences>,
    /// Each customer's notifications, oldest first.
    inbox: HashMap<CustomerId, VecDeque<NotificationRecord>>,
    /// (product, customer) -> view times, oldest first.
    views: HashMap<(String, CustomerId), VecDeque<DateTime<Utc>>>,
    /// Key -> (value, until).
    claims: HashMap<String, (String, Instant)>,
}

impl MemoryStore {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl NotificationStore for MemoryStore {
    async fn register_device(&self, mut device: DeviceRecord) -> StoreResult<DeviceRecord> {
        device.id = device_id(&device.address);
        self.state()
            .devices
            .insert(device.id.clone(), device.clone());
        Ok(device)
    }

    async fn unregister_device(&self, customer: &CustomerId, id: &str) -> StoreResult<bool> {
        let mut state = self.state();
        let theirs = state
            .devices
            .get(id)
            .is_some_and(|d| &d.customer_id == customer);
        if theirs {
            state.devices.remove(id);
        }
        Ok(theirs)
    }

    async fn devices(&self, customer: &CustomerId) -> StoreResult<Vec<DeviceRecord>> {
        let mut devices: Vec<DeviceRecord> = self
            .state()
            .devices
            .values()
            .filter(|d| &d.customer_id == customer)
            .cloned()
            .collect();
        devices.sort_by(|a, b| (a.registered_at, &a.id).cmp(&(b.registered_at, &b.id)));
        Ok(devices)
    }

    async fn forget_address(&self, address_key: &str) -> StoreResult<()> {
        self.state()
            .devices
            .retain(|_, d| d.address.key() != address_key);
        Ok(())
    }

    async fn preferences(&self, customer: &CustomerId) -> StoreResult<Preferences> {
        Ok(self
            .state()
            .preferences
            .get(customer)
            .cloned()
            .unwrap_or_default())
    }

    async fn set_preferences(
        &self,
        customer: &CustomerId,
        preferences: &Preferences,
    ) -> StoreResult<()> {
        self.state()
            .preferences
            .insert(customer.clone(), preferences.clone());
        Ok(())
    }

    async fn add_notification(&self, notification: &NotificationRecord) -> StoreResult<bool> {
        let mut state = self.state();
        let inbox = state
            .inbox
            .entry(notification.customer_id.clone())
            .or_default();
        if inbox.iter().any(|n| n.id == notification.id) {
            return Ok(false);
        }
        // Newest first means by `created_at`, as in Redis (a late event sorts where it
        // happened); equal times keep their arrival order.
        let at = inbox.partition_point(|n| n.created_at <= notification.created_at);
        inbox.insert(at, notification.clone());
        while inbox.len() > INBOX_LIMIT {
            inbox.pop_front();
        }
        Ok(true)
    }

    async fn notifications(
        &self,
        customer: &CustomerId,
        query: &InboxQuery,
    ) -> StoreResult<Option<Vec<NotificationRecord>>> {
        let state = self.state();
        let empty = VecDeque::new();
        let inbox = state.inbox.get(customer).unwrap_or(&empty);
        let newest_first = inbox.iter().rev();
        let after_cursor: Box<dyn Iterator<Item = &NotificationRecord>> = match &query.after {
            Some(after) if !inbox.iter().any(|n| &n.id == after) => return Ok(None),
            Some(after) => Box::new(newest_first.skip_while(move |n| &n.id != after).skip(1)),
            None => Box::new(newest_first),
        };
        Ok(Some(
            after_cursor
                .filter(|n| !query.unread_only || !n.read)
                .take(query.first + 1)
                .cloned()
                .collect(),
        ))
    }

    async fn mark_read(&self, customer: &CustomerId, ids: &[String]) -> StoreResult<usize> {
        let mut state = self.state();
        let Some(inbox) = state.inbox.get_mut(customer) else {
            return Ok(0);
        };
        let mut changed = 0;
        for n in inbox.iter_mut().filter(|n| !n.read && ids.contains(&n.id)) {
            n.read = true;
            changed += 1;
        }
        Ok(changed)
    }

    async fn unread_count(&self, customer: &CustomerId) -> StoreResult<usize> {
        Ok(self
            .state()
            .inbox
            .get(customer)
            .map_or(0, |inbox| inbox.iter().filter(|n| !n.read).count()))
    }

    async fn count_view(
        &self,
        customer: &CustomerId,
        product: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<u32> {
        let mut state = self.state();
        let views = state
            .views
            .entry((product.to_owned(), customer.clone()))
            .or_default();
        views.push_back(at);
        prune(views, at);
        while views.len() > MAX_VIEWS_KEPT {
            views.pop_front();
        }
        Ok(u32::try_from(views.len()).unwrap_or(u32::MAX))
    }

    async fn frequent_viewers(
        &self,
        product: &str,
        min: u32,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<CustomerId>> {
        let mut state = self.state();
        let mut viewers = Vec::new();
        for ((p, customer), views) in state.views.iter_mut() {
            if p != product {
                continue;
            }
            prune(views, at);
            if views.len() >= min as usize {
                viewers.push(customer.clone());
            }
        }
        viewers.sort();
        Ok(viewers)
    }

    async fn claim(&self, key: &str, value: &str, ttl: Duration) -> StoreResult<bool> {
        let mut state = self.state();
        let now = Instant::now();
        // Expired claims go now and then (amortized over the inserts), not on every call.
        if state.claims.len() >= 1024 && state.claims.len().is_power_of_two() {
            state.claims.retain(|_, (_, until)| *until > now);
        }
        if state.claims.get(key).is_some_and(|(_, until)| *until > now) {
            return Ok(false);
        }
        state
            .claims
            .insert(key.to_owned(), (value.to_owned(), now + ttl));
        Ok(true)
    }

    async fn release(&self, key: &str, value: &str) -> StoreResult<bool> {
        let mut state = self.state();
        let held = state
            .claims
            .get(key)
            .is_some_and(|(held, until)| held == value && *until > Instant::now());
        if held {
            state.claims.remove(key);
        }
        Ok(held)
    }

    async fn remember(&self, key: &str, value: &str, ttl: Duration) -> StoreResult<()> {
        self.state()
            .claims
            .insert(key.to_owned(), (value.to_owned(), Instant::now() + ttl));
        Ok(())
    }

    async fn claimed(&self, key: &str) -> StoreResult<Option<String>> {
        let state = self.state();
        Ok(state
            .claims
            .get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(value, _)| value.clone()))
    }
}

/// Drops views older than the window before `at`.
fn prune(views: &mut VecDeque<DateTime<Utc>>, at: DateTime<Utc>) {
    let window = chrono::Duration::from_std(VIEW_WINDOW).unwrap_or_default();
    while views.front().is_some_and(|t| *t <= at - window) {
        views.pop_front();
    }
}
