//! Push delivery: Switchyard's clients for each push provider, behind one small interface the
//! push outbox calls ([`Channel`]): a [`PushMessage`] to a [`Target`] gives a
//! [`SendOutcome`], in the terms the outbox acts on (ack, drop the device, dead-letter, back
//! off).
//!
//! [`build`] makes the configured channels (`[push]` in config); [`Channels::send`] picks one
//! by the target's kind. Every channel has its own HTTP client (or SMTP pool), timeout and
//! concurrency budget ([`crate::config::ChannelPolicy`]), never retries on its own (the outbox
//! does, with backoff: a provider's `Retry-After` comes back in [`SendOutcome::Retry`]), except
//! once after its credentials were refused as expired; and never panics on what a provider
//! answers. Logs name the channel, the notification id and the provider's status and reason,
//! never a credential, a device token or an endpoint's path.
//!
//! How answers map to outcomes, and why, is in each channel's module docs. Across channels:
//! - only a provider saying so makes a device [`SendOutcome::Gone`] (FCM `UNREGISTERED` /
//!   `SENDER_ID_MISMATCH`, APNs 410 / `BadDeviceToken` / `DeviceTokenNotForTopic`, Web Push
//!   404 / 410, SMTP 550 mailbox unavailable), or a Web Push endpoint that can never be
//!   called (not a URL, or on this network). A 404 without FCM's error code (a wrong
//!   project or base URL) or an answer that does not parse is never taken for a dead device;
//! - our own credentials being refused (an FCM token that does not work even fresh, an APNs
//!   provider token refused, the OAuth token endpoint failing) is [`SendOutcome::Retry`]: the
//!   message is fine, the configuration is not, and a fixed configuration delivers it;
//! - an answer that cannot be read is [`SendOutcome::Retry`] for a 5xx or a transport failure
//!   and [`SendOutcome::Rejected`] for a 4xx (the status says the request was wrong); a 2xx
//!   is [`SendOutcome::Delivered`] whatever its body (the provider took the message; retrying
//!   would show the user a duplicate).
//!
//! What the apps receive (the same keys on every channel): the title and body; `notificationId`
//! (the message id) and `deepLink` (when there is one) beside the message's data (FCM: in
//! `data`; APNs: top-level keys beside `aps`; Web Push: the JSON payload
//! `{notificationId, title, body, deepLink?, data}`).
//!
//! # Layout
//! - `call`: the call path the HTTP channels share (client, budget, body limit, `Retry-After`).
//! - `fcm`: FCM HTTP v1 (service-account JWT grant, the cached OAuth token, `messages:send`).
//! - `apns`: APNs over HTTP/2 (the ES256 provider token, reused for 40 minutes).
//! - `webpush`: Web Push with VAPID; `ece`: its payload encryption (RFC 8291, aes128gcm).
//! - `email`: e-mail over SMTP (lettre on tokio with rustls and aws-lc-rs).

mod apns;
mod call;
mod ece;
mod email;
mod fcm;
mod webpush;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::PushConfig;

/// One notification as a provider sends it (already localized).
///
/// Serializable, for the push outbox, which stores each message with its job; `ttl` is
/// stored as whole milliseconds (`ttl_ms`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushMessage {
    /// The notification id (uuid-ish). APNs' `apns-id` is a UUID derived from it
    /// deterministically; FCM carries it in `data["notificationId"]`; Web Push derives its
    /// `Topic` from it when there is no collapse key (a retried message replaces its pending
    /// copy).
    pub id: String,
    /// The title.
    pub title: String,
    /// The body text.
    pub body: String,
    /// Data for the app (FCM needs string values).
    pub data: BTreeMap<String, String>,
    /// Where tapping the notification leads, if anywhere.
    pub deep_link: Option<String>,
    /// A newer message with the same key replaces an undelivered older one: APNs
    /// `apns-collapse-id` (hashed when over 64 bytes), FCM `android.collapse_key` and APNs
    /// headers, Web Push `Topic` (derived to 32 base64url characters).
    pub collapse_key: Option<String>,
    /// APNs priority 10 vs 5, FCM Android priority HIGH vs NORMAL, Web Push Urgency high vs
    /// normal.
    pub urgent: bool,
    /// How long a provider keeps it for an offline device: `apns-expiration`, FCM
    /// `android.ttl`, Web Push `TTL`. Zero: deliver now or never.
    #[serde(rename = "ttl_ms", with = "millis")]
    pub ttl: Duration,
}

/// Where it goes.
///
/// Serializable, for the push outbox, tagged by [`Target::kind`] (`{"kind": "fcm", "token":
/// ..}`). What it serializes to is stored data (a device's address), never logged: its
/// `Debug` leaves tokens, endpoints and keys out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Target {
    /// An FCM registration token.
    Fcm {
        /// The registration token.
        token: String,
    },
    /// An APNs device token.
    Apns {
        /// The device token (hex).
        token: String,
        /// The app's bundle id (`apns-topic`).
        topic: String,
        /// The device runs a development build: APNs' development environment.
        sandbox: bool,
    },
    /// A browser's push subscription (`PushSubscription.toJSON()`).
    #[serde(rename = "webpush")]
    WebPush {
        /// The push service's URL for this subscription.
        endpoint: String,
        /// The browser's P-256 public key, base64url.
        p256dh: String,
        /// The subscription's authentication secret, base64url.
        auth: String,
    },
    /// An e-mail address.
    Email {
        /// The address.
        address: String,
        /// The recipient's locale (the message is already in it), e.g. `en-GB`.
        locale: String,
    },
}

impl Target {
    /// The channel that takes it: `fcm`, `apns`, `webpush`, `email`.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Fcm { .. } => "fcm",
            Target::Apns { .. } => "apns",
            Target::WebPush { .. } => "webpush",
            Target::Email { .. } => "email",
        }
    }
}

impl fmt::Debug for Target {
    /// Tokens, endpoints and keys identify a person's device: they stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Fcm { .. } => f.write_str("Target::Fcm { .. }"),
            Target::Apns { topic, sandbox, .. } => f
                .debug_struct("Target::Apns")
                .field("topic", topic)
                .field("sandbox", sandbox)
                .finish_non_exhaustive(),
            Target::WebPush { .. } => f.write_str("Target::WebPush { .. }"),
            Target::Email { locale, .. } => f
                .debug_struct("Target::Email")
                .field("locale", locale)
                .finish_non_exhaustive(),
        }
    }
}

/// What the provider said, in the terms the outbox acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Ack the outbox entry.
    Delivered,
    /// The token/subscription is dead: remove the device, ack.
    Gone,
    /// A bug of ours or a bad message: log, dead-letter, no retry.
    Rejected {
        /// Why, for the logs and the dead letter.
        reason: String,
    },
    /// Transient: back off (honour Retry-After).
    Retry {
        /// The provider's `Retry-After`, when it gave one.
        after: Option<Duration>,
    },
}

impl SendOutcome {
    fn rejected(reason: impl Into<String>) -> Self {
        SendOutcome::Rejected {
            reason: reason.into(),
        }
    }

    /// `delivered`, `gone`, `rejected`, `retry`: for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SendOutcome::Delivered => "delivered",
            SendOutcome::Gone => "gone",
            SendOutcome::Rejected { .. } => "rejected",
            SendOutcome::Retry { .. } => "retry",
        }
    }
}

/// A way to deliver notifications.
#[async_trait::async_trait]
pub trait Channel: Send + Sync {
    /// Sends `message` to `target`, once.
    async fn send(&self, target: &Target, message: &PushMessage) -> SendOutcome;
}

/// All configured channels; `send` picks by target kind; a target whose channel is not
/// configured is Rejected.
pub struct Channels {
    fcm: Option<fcm::FcmChannel>,
    apns: Option<apns::ApnsChannel>,
    webpush: Option<webpush::WebPushChannel>,
    email: Option<email::EmailChannel>,
}

impl fmt::Debug for Channels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channels")
            .field("configured", &self.configured())
            .finish()
    }
}

/// Builds the channels `config` configures: reads the key files, builds the clients. Fails on
/// a key or file no channel can work with, naming the config key.
pub fn build(config: &PushConfig) -> anyhow::Result<Channels> {
    config.validate()?;
    let channels = Channels {
        fcm: config.fcm.as_ref().map(fcm::FcmChannel::new).transpose()?,
        apns: config
            .apns
            .as_ref()
            .map(apns::ApnsChannel::new)
            .transpose()?,
        webpush: config
            .webpush
            .as_ref()
            .map(webpush::WebPushChannel::new)
            .transpose()?,
        email: config
            .email
            .as_ref()
            .map(email::EmailChannel::new)
            .transpose()?,
    };
    tracing::info!(channels = ?channels.configured(), "push channels ready");
    Ok(channels)
}

impl Channels {
    /// The VAPID public key (uncompressed point, base64url) that web apps pass to
    /// `pushManager.subscribe` as `applicationServerKey`; `None` without Web Push.
    pub fn vapid_public_key(&self) -> Option<String> {
        self.webpush
            .as_ref()
            .map(|channel| channel.vapid_public_key().to_owned())
    }

    /// The kinds of target that can be sent to (`fcm`, `apns`, `webpush`, `email`).
    pub fn configured(&self) -> Vec<&'static str> {
        [
            ("fcm", self.fcm.is_some()),
            ("apns", self.apns.is_some()),
            ("webpush", self.webpush.is_some()),
            ("email", self.email.is_some()),
        ]
        .into_iter()
        .filter_map(|(kind, on)| on.then_some(kind))
        .collect()
    }
}

#[async_trait::async_trait]
impl Channel for Channels {
    async fn send(&self, target: &Target, message: &PushMessage) -> SendOutcome {
        let channel: Option<&dyn Channel> = match target {
            Target::Fcm { .. } => self.fcm.as_ref().map(|c| c as &dyn Channel),
            Target::Apns { .. } => self.apns.as_ref().map(|c| c as &dyn Channel),
            Target::WebPush { .. } => self.webpush.as_ref().map(|c| c as &dyn Channel),
            Target::Email { .. } => self.email.as_ref().map(|c| c as &dyn Channel),
        };
        let kind = target.kind();
        let Some(channel) = channel else {
            tracing::warn!(channel = kind, notification = %message.id, "push channel not configured");
            return SendOutcome::rejected(format!("the {kind} channel is not configured"));
        };
        let outcome = channel.send(target, message).await;
        tracing::debug!(
            channel = kind,
            notification = %message.id,
            outcome = outcome.label(),
            "push sent"
        );
        outcome
    }
}

/// The outcome of a target given to the wrong channel (a bug of the caller).
fn wrong_target(channel: &str, target: &Target) -> SendOutcome {
    SendOutcome::rejected(format!(
        "the {channel} channel cannot send to a {} target",
        target.kind()
    ))
}

/// `message.data` with `notificationId` and `deepLink` (ours win over the caller's).
fn app_data(message: &PushMessage) -> BTreeMap<String, String> {
    let mut data = message.data.clone();
    data.insert("notificationId".to_owned(), message.id.clone());
    if let Some(link) = &message.deep_link {
        data.insert("deepLink".to_owned(), link.clone());
    }
    data
}

/// Seconds since the epoch.
fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A [`Duration`] as whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_serialize_tagged_by_kind_and_round_trip() {
        let targets = [
            Target::Fcm {
                token: "fcm-token".into(),
            },
            Target::Apns {
                token: "ab12".into(),
                topic: "com.example.app".into(),
                sandbox: true,
            },
            Target::WebPush {
                endpoint: "https://push.example/s/1".into(),
                p256dh: "key".into(),
                auth: "secret".into(),
            },
            Target::Email {
                address: "ada@example.com".into(),
                locale: "en-GB".into(),
            },
        ];
        for target in targets {
            let json = serde_json::to_value(&target).unwrap();
            assert_eq!(json["kind"], target.kind(), "{json}");
            let back: Target = serde_json::from_value(json).unwrap();
            assert_eq!(back, target);
        }
    }

    #[test]
    fn messages_round_trip_with_their_ttl_in_milliseconds() {
        let message = PushMessage {
            id: "n-1".into(),
            title: "t".into(),
            body: "b".into(),
            data: BTreeMap::from([("k".into(), "v".into())]),
            deep_link: None,
            collapse_key: Some("c".into()),
            urgent: true,
            ttl: Duration::from_millis(3_600_500),
        };
        let json = serde_json::to_value(&message).unwrap();
        assert_eq!(json["ttl_ms"], 3_600_500);
        let back: PushMessage = serde_json::from_value(json).unwrap();
        assert_eq!(back, message);
    }

    #[test]
    fn debug_leaves_device_addresses_out() {
        let target = Target::WebPush {
            endpoint: "https://push.example/s/1".into(),
            p256dh: "key".into(),
            auth: "secret".into(),
        };
        let shown = format!("{target:?}");
        for hidden in ["push.example", "key", "secret"] {
            assert!(!shown.contains(hidden), "{shown}");
        }
    }
}
