//! Notifications in the server: the push outbox that sends them (`outbox`), the store of
//! devices, preferences and notification centres (`store`: memory or Redis), and the notifier
//! that turns events into notifications and their deliveries (`notifier`).
//!
//! [`start`] builds all three for one replica: the store, the push channels, the outbox and
//! its senders, and the notifier, which handles every event once across the replicas (the
//! consumer group `notifications` on the event stream).

pub(crate) mod notifier;
pub mod outbox;
pub(crate) mod store;

use std::sync::Arc;

use anyhow::Context;
use resolvers::Ports;
use resolvers::notifications::{NotificationStore, Notify};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use notifier::{ForgetGoneDevices, Notifier};

/// The consumer group the notification rules run in.
const RULES_GROUP: &str = "notifications";

/// Notifications of one replica, running.
pub(crate) struct Notifications {
    /// Devices, preferences, notification centres.
    pub(crate) store: Arc<dyn NotificationStore>,
    /// Where the graph hands the notifications it makes itself.
    pub(crate) notify: Arc<dyn Notify>,
    /// The Web Push application server key apps subscribe with, when Web Push is on.
    pub(crate) web_push_key: Option<String>,
    outbox: outbox::Started,
    rules: JoinHandle<()>,
}

/// Starts the store, the outbox's senders and the rules of this replica.
pub(crate) async fn start(
    config: &Config,
    ports: &Ports,
    bus: &dyn crate::events::EventBus,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Notifications> {
    let store = store::build(&config.notifications)
        .await
        .context("opening the notification store")?;
    let channels = Arc::new(crate::push::build(&config.push).context("setting up [push]")?);
    let web_push_key = channels.vapid_public_key();
    let deliveries = Arc::new(ForgetGoneDevices::new(store.clone()));
    let outbox = outbox::start(&config.outbox, channels, deliveries, shutdown.clone())
        .await
        .context("starting the push outbox")?;
    let notifier = Arc::new(Notifier::new(
        store.clone(),
        outbox.outbox.clone(),
        ports.clone(),
    ));
    let rules =
        crate::events::group::consume(&config.events, RULES_GROUP, bus, notifier.clone(), shutdown)
            .await
            .context("starting the notification rules")?;
    Ok(Notifications {
        store,
        notify: notifier,
        web_push_key,
        outbox,
        rules,
    })
}

impl Notifications {
    /// Waits for the senders and the rules to stop (after the shutdown signal).
    pub(crate) async fn join(self) {
        self.outbox.join().await;
        if let Err(e) = self.rules.await {
            tracing::error!(error = %e, "the notification rules ended abnormally");
        }
    }
}
