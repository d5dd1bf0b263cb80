//! Notifications in the server: the push outbox that sends them (`outbox`), the store of
//! devices, preferences and notification centres (`store`: memory or Redis), and the notifier
//! that turns events into notifications and their deliveries (`notifier`).
pub mod outbox;
pub(crate) mod store;
