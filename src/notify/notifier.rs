//! From events to deliveries, once per event across every replica (a consumer group on the
//! event stream, `events::group`): the rules (`resolvers::notifications::rules`) say what
//! notification an event makes; the customer's preferences say where it goes (the
//! notification centre, every registered device, e-mail); quiet hours say when; the outbox
//! sends it.
//!
//! - The notification centre gets the notification when the customer has the centre on for
//!   its category (the `notifications` subscription shows the same notification live).
//! - Each device gets one push, written in its own locale; a customer who chose push but has
//!   no device gets an e-mail instead, as do those who chose e-mail.
//! - A non-urgent notification made during the customer's quiet hours (in their time zone)
//!   waits until they end; an urgent one (out for delivery, "we're on it") does not.
//!
//! Idempotent: an event handled twice (a replica died before acknowledging it) makes the same
//! notification (same id: the centre keeps it once) and the same jobs (same ids: the outbox
//! stores them once).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use resolvers::events::DomainEvent;
use resolvers::ids::CustomerId;
use resolvers::notifications::{
    Category, DEAL_MIN_VIEWS, Deal, Facts, NotificationRecord, NotificationStore, Notify,
    Preferences, PushAddress, StoreError, StoreResult, daily_deal_key, deal, deal_notification,
    is_about_its_customer, render, rules,
};
use resolvers::ports::Ports;

use super::outbox::{Deliveries, Job, Outbox};
use crate::events::group::Handler;
use crate::push::{PushMessage, Target};

/// How long a push may wait at a provider for the device to come online.
const PUSH_TTL: Duration = Duration::from_secs(24 * 3600);
/// A customer gets at most one MARKETING notification in this long.
const DEAL_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Turns events into notifications and their deliveries.
pub(crate) struct Notifier {
    store: Arc<dyn NotificationStore>,
    outbox: Arc<dyn Outbox>,
    /// For customers' e-mail addresses, and whose the objects an event names are.
    ports: Ports,
}

impl Notifier {
    pub(crate) fn new(
        store: Arc<dyn NotificationStore>,
        outbox: Arc<dyn Outbox>,
        ports: Ports,
    ) -> Self {
        Self {
            store,
            outbox,
            ports,
        }
    }

    /// Keeps `notification` in its customer's centre (when they want it there) and queues its
    /// deliveries.
    pub(crate) async fn deliver(
        &self,
        notification: &NotificationRecord,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let customer = &notification.customer_id;
        let preferences = self.store.preferences(customer).await.map_err(store)?;
        let channels = preferences.channels(notification.category());
        if channels.in_app {
            self.store
                .add_notification(notification)
                .await
                .map_err(store)?;
        }
        let not_before = if notification.kind.urgent() {
            None
        } else {
            quiet_until(&preferences, now)
        };
        let mut jobs = Vec::new();
        let devices = if channels.push {
            self.store.devices(customer).await.map_err(store)?
        } else {
            Vec::new()
        };
        for device in &devices {
            let target = match &device.address {
                PushAddress::Fcm { token } => Target::Fcm {
                    token: token.clone(),
                },
                PushAddress::Apns {
                    token,
                    bundle_id,
                    sandbox,
                } => Target::Apns {
                    token: token.clone(),
                    topic: bundle_id.clone(),
                    sandbox: *sandbox,
                },
                PushAddress::WebPush {
                    endpoint,
                    p256dh,
                    auth,
                } => Target::WebPush {
                    endpoint: endpoint.clone(),
                    p256dh: p256dh.clone(),
                    auth: auth.clone(),
                },
            };
            jobs.push(job(
                notification,
                &device.id,
                Some(device.address.key()),
                target,
                &device.locale,
                not_before,
            ));
        }
        if channels.email || (channels.push && devices.is_empty()) {
            let found = self
                .ports
                .backend
                .customers_by_ids(std::slice::from_ref(customer))
                .await
                .map_err(|e| anyhow::anyhow!("reading the customer's e-mail address: {e:?}"))?;
            if let Some(record) = found.into_iter().find(|c| &c.id == customer) {
                let target = Target::Email {
                    address: record.email,
                    locale: preferences.locale.clone(),
                };
                jobs.push(job(
                    notification,
                    "email",
                    None,
                    target,
                    &preferences.locale,
                    not_before,
                ));
            }
        }
        if jobs.is_empty() {
            return Ok(());
        }
        self.outbox.enqueue(jobs).await
    }
}

#[async_trait]
impl Handler for Notifier {
    async fn handle(&self, event: &DomainEvent) -> anyhow::Result<()> {
        if !is_about_its_customer(event, &self.ports)
            .await
            .map_err(anyhow::Error::msg)?
        {
            tracing::warn!(
                event = %event.id,
                "an event names an order, case or task that is not its customer's (or none): no notification"
            );
            return Ok(());
        }
        let facts = Facts::of(event, self.store.as_ref()).await.map_err(store)?;
        let now = Utc::now();
        for mut notification in rules(event, &facts) {
            // An upstream's clock (or a forged date) in the future must not pin a
            // notification to the top of the centre.
            notification.created_at = notification.created_at.min(now);
            self.deliver(&notification, now).await?;
        }
        if let Some(deal) = deal(event) {
            self.offer(event, &deal, Utc::now()).await?;
        }
        Ok(())
    }
}

impl Notifier {
    /// Tells the customers who viewed the product at least [`DEAL_MIN_VIEWS`] times this week
    /// of `deal`: only those who opted in to MARKETING on some channel, and each at most once
    /// in [`DEAL_EVERY`]. Handling the same event again (a redelivery) finds its own claim
    /// and delivers the same notification, which the centre and the outbox keep once.
    async fn offer(
        &self,
        event: &DomainEvent,
        deal: &Deal,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let viewers = self
            .store
            .frequent_viewers(deal.product.as_str(), DEAL_MIN_VIEWS, now)
            .await
            .map_err(store)?;
        for customer in viewers {
            let preferences = self.store.preferences(&customer).await.map_err(store)?;
            let channels = preferences.channels(Category::Marketing);
            if !(channels.in_app || channels.push || channels.email) {
                continue;
            }
            let mut notification = deal_notification(event, deal, &customer);
            notification.created_at = notification.created_at.min(now);
            let key = daily_deal_key(&customer);
            let ours = self
                .store
                .claim(&key, &notification.id, DEAL_EVERY)
                .await
                .map_err(store)?
                || self.store.claimed(&key).await.map_err(store)?.as_deref()
                    == Some(notification.id.as_str());
            if ours {
                self.deliver(&notification, now).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Notify for Notifier {
    async fn notify(&self, notification: NotificationRecord) -> StoreResult<()> {
        self.deliver(&notification, Utc::now())
            .await
            .map_err(|e| StoreError(format!("{e:#}")))
    }
}

/// What the outbox's senders tell the store: a device its provider says is gone is
/// forgotten.
pub(crate) struct ForgetGoneDevices {
    store: Arc<dyn NotificationStore>,
}

impl ForgetGoneDevices {
    pub(crate) fn new(store: Arc<dyn NotificationStore>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl Deliveries for ForgetGoneDevices {
    async fn gone(&self, job: &Job) {
        let Some(key) = &job.address_key else {
            return;
        };
        match self.store.forget_address(key).await {
            Ok(()) => {
                tracing::info!(customer = %job.customer_id, "a device its provider says is gone was forgotten")
            }
            Err(e) => tracing::warn!(error = %e, "could not forget a gone device"),
        }
    }

    async fn still_wanted(&self, job: &Job) -> bool {
        // E-mail goes to the customer's own address, which cannot move to someone else.
        let Some(key) = &job.address_key else {
            return true;
        };
        let Ok(customer) = CustomerId::parse(&job.customer_id) else {
            return false;
        };
        match self.store.devices(&customer).await {
            Ok(devices) => devices.iter().any(|d| d.address.key() == *key),
            // Sent rather than lost when the store cannot tell: at least once.
            Err(e) => {
                tracing::warn!(error = %e, "could not check that a put-off push's device is still registered; sending");
                true
            }
        }
    }
}

fn store(e: resolvers::notifications::StoreError) -> anyhow::Error {
    anyhow::anyhow!("the notification store failed: {e}")
}

/// One delivery of `notification`, written in `locale`.
fn job(
    notification: &NotificationRecord,
    to: &str,
    address_key: Option<String>,
    target: Target,
    locale: &str,
    not_before: Option<DateTime<Utc>>,
) -> Job {
    let (title, body) = render(notification.kind, &notification.params, locale);
    let mut data: BTreeMap<String, String> = notification.params.clone();
    data.insert("kind".to_owned(), format!("{:?}", notification.kind));
    Job {
        id: format!("{}/{to}", notification.id),
        notification_id: notification.id.clone(),
        customer_id: notification.customer_id.to_string(),
        address_key,
        target,
        message: PushMessage {
            id: notification.id.clone(),
            title,
            body,
            data,
            deep_link: Some(notification.deep_link.clone()),
            collapse_key: notification.collapse_key.clone(),
            urgent: notification.kind.urgent(),
            ttl: PUSH_TTL,
        },
        not_before,
        attempts: 0,
    }
}

/// When the customer's quiet hours end, if `now` is within them.
pub(crate) fn quiet_until(preferences: &Preferences, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let quiet = preferences.quiet_hours?;
    let zone: chrono_tz::Tz = preferences.time_zone.parse().ok()?;
    let local = now.with_timezone(&zone);
    let time = local.time();
    let within = if quiet.start <= quiet.end {
        time >= quiet.start && time < quiet.end
    } else {
        time >= quiet.start || time < quiet.end
    };
    if !within {
        return None;
    }
    let day = if time < quiet.end {
        local.date_naive()
    } else {
        local.date_naive().succ_opt()?
    };
    // An end that falls into a daylight-saving gap (02:30 on the spring-forward night) is the
    // first local time after it that exists.
    let end = day.and_time(quiet.end);
    let end = (0..=8).find_map(|quarter| {
        zone.from_local_datetime(&(end + chrono::Duration::minutes(15 * quarter)))
            .earliest()
    })?;
    Some(end.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use chrono::NaiveTime;
    use resolvers::notifications::QuietHours;

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn quiet(zone: &str, start: &str, end: &str) -> Preferences {
        Preferences {
            time_zone: zone.to_owned(),
            quiet_hours: Some(QuietHours {
                start: NaiveTime::parse_from_str(start, "%H:%M").unwrap(),
                end: NaiveTime::parse_from_str(end, "%H:%M").unwrap(),
            }),
            ..Preferences::default()
        }
    }

    #[test]
    fn quiet_hours_over_midnight_in_the_customers_time_zone() {
        let berlin = quiet("Europe/Berlin", "22:00", "07:00");
        // 23:30 in Berlin (winter, UTC+1): waits until 07:00 Berlin = 06:00 UTC next day.
        assert_eq!(
            quiet_until(&berlin, at("2026-12-01T22:30:00Z")),
            Some(at("2026-12-02T06:00:00Z"))
        );
        // 05:00 Berlin: waits until 07:00 the same day.
        assert_eq!(
            quiet_until(&berlin, at("2026-12-02T04:00:00Z")),
            Some(at("2026-12-02T06:00:00Z"))
        );
        // 12:00 Berlin: no wait.
        assert_eq!(quiet_until(&berlin, at("2026-12-02T11:00:00Z")), None);
        // In summer (UTC+2) the same local hours are an hour earlier in UTC.
        assert_eq!(
            quiet_until(&berlin, at("2026-07-01T21:30:00Z")),
            Some(at("2026-07-02T05:00:00Z"))
        );
    }

    #[test]
    fn quiet_hours_ending_in_a_daylight_saving_gap_end_when_the_clock_resumes() {
        // Berlin springs forward on 2026-03-29 from 02:00 to 03:00: 02:30 does not exist.
        let quiet = quiet("Europe/Berlin", "22:00", "02:30");
        assert_eq!(
            quiet_until(&quiet, at("2026-03-28T23:30:00Z")),
            Some(at("2026-03-29T01:00:00Z")),
            "03:00 local, the first time after 02:30 that exists"
        );
    }

    #[test]
    fn quiet_hours_within_a_day_and_none() {
        let lunch = quiet("UTC", "12:00", "13:00");
        assert_eq!(
            quiet_until(&lunch, at("2026-12-01T12:30:00Z")),
            Some(at("2026-12-01T13:00:00Z"))
        );
        assert_eq!(quiet_until(&lunch, at("2026-12-01T13:00:00Z")), None);
        assert_eq!(
            quiet_until(&Preferences::default(), at("2026-12-01T12:30:00Z")),
            None
        );
    }
}
