//! The customer's side of notifications: devices, preferences and the notification centre.

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, InputObject, Object};
use chrono::{DateTime, NaiveTime, Utc};
use url::Url;

use crate::error::GraphError;
use crate::ids::CustomerId;
use crate::notifications::{
    Category, Channels, DeviceRecord, NotificationKind, NotificationRecord, NotificationStore,
    Platform, Preferences, PushAddress, QuietHours, render,
};
use crate::viewer::viewer;

/// The notification store of the request (the server puts it in the schema's data).
pub(crate) fn store<'a>(
    ctx: &Context<'a>,
) -> async_graphql::Result<&'a Arc<dyn NotificationStore>> {
    ctx.data::<Arc<dyn NotificationStore>>()
}

/// The signed-in customer: devices, preferences and the notification centre are theirs.
pub(crate) fn customer(ctx: &Context<'_>) -> async_graphql::Result<CustomerId> {
    viewer(ctx)?.customer_id().cloned().ok_or_else(|| {
        GraphError::Forbidden("only customers have devices and a notification centre".into()).into()
    })
}

/// A store failure, as the client sees it.
pub(crate) fn unavailable(e: crate::notifications::StoreError) -> async_graphql::Error {
    GraphError::Unavailable("notifications", e.0).into()
}

/// How a device receives pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub(crate) enum PushService {
    /// Firebase Cloud Messaging.
    Fcm,
    /// Apple Push Notification service.
    Apns,
    /// A browser's Web Push service.
    WebPush,
}

/// A phone or browser that receives the customer's pushes.
pub(crate) struct Device(pub(crate) DeviceRecord);

/// A phone or browser that receives the customer's pushes.
#[Object]
impl Device {
    /// Ours; unregister it with this.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    /// What it is.
    async fn platform(&self) -> Platform {
        self.0.platform
    }

    /// How pushes reach it.
    async fn push_service(&self) -> PushService {
        match self.0.address {
            PushAddress::Fcm { .. } => PushService::Fcm,
            PushAddress::Apns { .. } => PushService::Apns,
            PushAddress::WebPush { .. } => PushService::WebPush,
        }
    }

    /// The app version it registered with.
    async fn app_version(&self) -> Option<&str> {
        self.0.app_version.as_deref()
    }

    /// What its notifications are written in.
    async fn locale(&self) -> &str {
        &self.0.locale
    }

    /// When it was (last) registered.
    async fn registered_at(&self) -> DateTime<Utc> {
        self.0.registered_at
    }
}

/// APNs' environment of an app build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub(crate) enum ApnsEnvironment {
    /// Development builds (APNs' sandbox).
    Sandbox,
    /// App Store and TestFlight builds.
    Production,
}

/// An APNs device token.
#[derive(InputObject)]
pub(crate) struct ApnsTokenInput {
    /// The device token, hex.
    token: String,
    /// The app's bundle id (the push topic).
    bundle_id: String,
    /// Which APNs environment the build talks to.
    environment: ApnsEnvironment,
}

/// A browser's Web Push subscription (`PushSubscription.toJSON()`).
#[derive(InputObject)]
pub(crate) struct WebPushSubscriptionInput {
    /// The push service's endpoint URL.
    endpoint: String,
    /// The subscription's P-256 public key, base64url.
    #[graphql(name = "p256dh")]
    p256dh: String,
    /// The subscription's auth secret, base64url.
    auth: String,
}

/// A device to register: exactly one of `fcmToken`, `apns`, `webPush`.
#[derive(InputObject)]
pub(crate) struct RegisterDeviceInput {
    /// What it is.
    platform: Platform,
    /// An FCM registration token (Android, or iOS through FCM).
    fcm_token: Option<String>,
    /// An APNs device token.
    apns: Option<ApnsTokenInput>,
    /// A Web Push subscription.
    web_push: Option<WebPushSubscriptionInput>,
    /// The app's version, e.g. `4.12.0`.
    app_version: Option<String>,
    /// What its notifications are written in: `en`, `de` (default `en`).
    locale: Option<String>,
    /// Makes the change idempotent: sent again by the same user with the same id (1 to 128
    /// characters of `A-Z a-z 0-9 - _ . :`, e.g. a UUID) within the server's window (a day
    /// by default), it answers the first result and changes nothing again (see the README's
    /// "Offline apps").
    pub(crate) client_mutation_id: Option<String>,
}

/// Longest token, endpoint or key taken.
const MAX_ADDRESS: usize = 4096;

fn bad(message: impl Into<String>) -> async_graphql::Error {
    GraphError::BadInput(message.into()).into()
}

fn bounded(field: &str, value: String) -> async_graphql::Result<String> {
    let value = value.trim().to_owned();
    if value.is_empty() || value.len() > MAX_ADDRESS {
        return Err(bad(format!(
            "`{field}` must be 1 to {MAX_ADDRESS} characters"
        )));
    }
    Ok(value)
}

/// Longest app version taken.
const MAX_APP_VERSION: usize = 64;

/// An app's version as an app sends it (`4.12.0`), trimmed; blank is none. It is shown (to
/// agents, in cases) as it is, so control characters are refused.
pub(crate) fn app_version(value: Option<String>) -> async_graphql::Result<Option<String>> {
    let Some(value) = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.chars().count() > MAX_APP_VERSION || value.chars().any(char::is_control) {
        return Err(bad(format!(
            "`appVersion` must be the app's version, e.g. `4.12.0` (at most {MAX_APP_VERSION} \
             characters, none of them control characters)"
        )));
    }
    Ok(Some(value))
}

fn locale(value: Option<String>) -> async_graphql::Result<String> {
    let value = value.unwrap_or_else(|| "en".to_owned());
    let ok = (2..=16).contains(&value.len())
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(value)
    } else {
        Err(bad(
            "`locale` must be a language tag such as `en` or `de-DE`",
        ))
    }
}

impl RegisterDeviceInput {
    /// The device record it asks for, checked.
    pub(crate) fn into_device(
        self,
        customer: CustomerId,
        now: DateTime<Utc>,
    ) -> async_graphql::Result<DeviceRecord> {
        let address = match (self.fcm_token, self.apns, self.web_push) {
            (Some(token), None, None) => PushAddress::Fcm {
                token: fcm_token(bounded("fcmToken", token)?)?,
            },
            (None, Some(apns), None) => PushAddress::Apns {
                token: apns_token(bounded("apns.token", apns.token)?)?,
                bundle_id: bundle_id(apns.bundle_id)?,
                sandbox: apns.environment == ApnsEnvironment::Sandbox,
            },
            (None, None, Some(web)) => {
                let endpoint = web_push_endpoint(bounded("webPush.endpoint", web.endpoint)?)?;
                PushAddress::WebPush {
                    endpoint,
                    p256dh: web_push_key("webPush.p256dh", web.p256dh, |k| {
                        k.len() == 65 && k[0] == 4
                    })?,
                    auth: web_push_key("webPush.auth", web.auth, |k| k.len() == 16)?,
                }
            }
            _ => return Err(bad("give exactly one of `fcmToken`, `apns` and `webPush`")),
        };
        if matches!(address, PushAddress::WebPush { .. }) != (self.platform == Platform::Web) {
            return Err(bad(
                "a Web Push subscription goes with the platform WEB, and only it",
            ));
        }
        let app_version = app_version(self.app_version)?;
        Ok(DeviceRecord {
            // The store keeps the id of a device registered before.
            id: String::new(),
            customer_id: customer,
            platform: self.platform,
            address,
            app_version,
            locale: locale(self.locale)?,
            registered_at: now,
        })
    }
}

/// An FCM registration token: base64url characters and `:` (`<instance id>:<token>`).
fn fcm_token(token: String) -> async_graphql::Result<String> {
    let fits = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':');
    if !token.bytes().all(fits) {
        return Err(bad(
            "`fcmToken` must be the FCM registration token (letters, digits, `_`, `-` and `:`)",
        ));
    }
    Ok(token)
}

/// An APNs device token: hex digits, as iOS hands it to the app (64 today; Apple says not to
/// rely on the length), in lower case: the same token in either case is the same device.
fn apns_token(token: String) -> async_graphql::Result<String> {
    if token.len() < 32
        || !token.len().is_multiple_of(2)
        || !token.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(bad(
            "`apns.token` must be the device token in hex (as `deviceToken` hex-encoded)",
        ));
    }
    Ok(token.to_ascii_lowercase())
}

/// Longest bundle id (Apple's limit for an app's bundle identifier).
const MAX_BUNDLE_ID: usize = 155;

/// An app's bundle id, the APNs topic: reverse DNS, `com.example.retail`.
fn bundle_id(value: String) -> async_graphql::Result<String> {
    let value = value.trim().to_owned();
    let fits = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-');
    if value.is_empty() || value.len() > MAX_BUNDLE_ID || !value.bytes().all(fits) {
        return Err(bad(format!(
            "`apns.bundleId` must be the app's bundle id, e.g. `com.example.retail` (letters, \
             digits, `.` and `-`, at most {MAX_BUNDLE_ID})"
        )));
    }
    Ok(value)
}

/// A Web Push endpoint: an http(s) URL with a host, as the push is sent to it (parsed by
/// `url::Url`, as the Web Push channel does): one that does not parse could never be sent to.
/// Kept as the browser gave it (its device is found by it).
fn web_push_endpoint(endpoint: String) -> async_graphql::Result<String> {
    let problem = match Url::parse(&endpoint) {
        Err(e) => e.to_string(),
        Ok(url) if !matches!(url.scheme(), "https" | "http") => "not http(s)".to_owned(),
        Ok(url) if url.host().is_none() => "no host".to_owned(),
        Ok(_) => return Ok(endpoint),
    };
    Err(bad(format!(
        "`webPush.endpoint` must be the subscription's http(s) URL (PushSubscription.endpoint): \
         {problem}"
    )))
}

/// A key of a Web Push subscription as `PushSubscription.getKey` gives it, base64url: `p256dh`
/// an uncompressed P-256 point (65 bytes), `auth` 16 bytes.
fn web_push_key(
    field: &str,
    key: String,
    fits: impl Fn(&[u8]) -> bool,
) -> async_graphql::Result<String> {
    use base64::Engine as _;
    let key = bounded(field, key)?;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let decoded = engine.decode(key.trim_end_matches('='));
    if !decoded.is_ok_and(|k| fits(&k)) {
        return Err(bad(format!(
            "`{field}` is not the subscription's key (base64url, from PushSubscription.getKey)"
        )));
    }
    Ok(key)
}

/// One category's channels.
pub(crate) struct CategoryPreference(Category, Channels);

/// One category's channels.
#[Object]
impl CategoryPreference {
    /// The category.
    async fn category(&self) -> Category {
        self.0
    }

    /// Push to every registered device.
    async fn push(&self) -> bool {
        self.1.push
    }

    /// E-mail (also used when push is chosen but no device is registered).
    async fn email(&self) -> bool {
        self.1.email
    }

    /// The notification centre and the `notifications` subscription.
    async fn in_app(&self) -> bool {
        self.1.in_app
    }
}

/// When non-urgent notifications wait, in the customer's time zone.
pub(crate) struct QuietHoursInfo(QuietHours);

/// When non-urgent notifications wait, in the customer's time zone.
#[Object(name = "QuietHours")]
impl QuietHoursInfo {
    /// From, `HH:MM`.
    async fn start(&self) -> String {
        self.0.start.format("%H:%M").to_string()
    }

    /// Until, `HH:MM` (before `start`: over midnight).
    async fn end(&self) -> String {
        self.0.end.format("%H:%M").to_string()
    }
}

/// The customer's notification preferences.
pub(crate) struct NotificationPreferences(pub(crate) Preferences);

/// The customer's notification preferences.
#[Object]
impl NotificationPreferences {
    /// What notifications are written in (`en`, `de`); each device has its own too.
    async fn locale(&self) -> &str {
        &self.0.locale
    }

    /// The IANA time zone of the quiet hours, e.g. `Europe/Berlin`.
    async fn time_zone(&self) -> &str {
        &self.0.time_zone
    }

    /// When non-urgent notifications wait; null: never.
    async fn quiet_hours(&self) -> Option<QuietHoursInfo> {
        self.0.quiet_hours.map(QuietHoursInfo)
    }

    /// Every category's channels.
    async fn categories(&self) -> Vec<CategoryPreference> {
        Category::ALL
            .into_iter()
            .map(|c| CategoryPreference(c, self.0.channels(c)))
            .collect()
    }
}

/// One category's channels to set.
#[derive(InputObject)]
pub(crate) struct CategoryPreferenceInput {
    /// The category.
    category: Category,
    /// Push to every registered device.
    push: bool,
    /// E-mail (also used when push is chosen but no device is registered).
    email: bool,
    /// The notification centre and the `notifications` subscription.
    in_app: bool,
}

/// Quiet hours to set, `HH:MM` each.
#[derive(InputObject)]
pub(crate) struct QuietHoursInput {
    /// From, `HH:MM`.
    start: String,
    /// Until, `HH:MM` (before `start`: over midnight).
    end: String,
}

/// What to change; what is left out stays.
#[derive(InputObject)]
pub(crate) struct NotificationPreferencesInput {
    /// `en`, `de`, ...
    locale: Option<String>,
    /// An IANA time zone, e.g. `Europe/Berlin`.
    time_zone: Option<String>,
    /// New quiet hours.
    quiet_hours: Option<QuietHoursInput>,
    /// No quiet hours any more.
    clear_quiet_hours: Option<bool>,
    /// Channels of these categories.
    categories: Option<Vec<CategoryPreferenceInput>>,
    /// Makes the change idempotent: sent again by the same user with the same id (1 to 128
    /// characters of `A-Z a-z 0-9 - _ . :`, e.g. a UUID) within the server's window (a day
    /// by default), it answers the first result and changes nothing again (see the README's
    /// "Offline apps").
    pub(crate) client_mutation_id: Option<String>,
}

impl NotificationPreferencesInput {
    /// `preferences` with this applied, checked.
    pub(crate) fn apply(self, mut preferences: Preferences) -> async_graphql::Result<Preferences> {
        if let Some(l) = self.locale {
            preferences.locale = locale(Some(l))?;
        }
        if let Some(zone) = self.time_zone {
            if zone.parse::<chrono_tz::Tz>().is_err() {
                let shown: String = zone.chars().take(64).collect();
                return Err(bad(format!("`{shown}` is not an IANA time zone")));
            }
            preferences.time_zone = zone;
        }
        if let Some(q) = self.quiet_hours {
            let (start, end) = (clock("start", &q.start)?, clock("end", &q.end)?);
            if start == end {
                return Err(bad(
                    "`quietHours`: start and end are the same: quiet hours need a span \
                     (`clearQuietHours` turns them off)",
                ));
            }
            preferences.quiet_hours = Some(QuietHours { start, end });
        }
        if self.clear_quiet_hours == Some(true) {
            preferences.quiet_hours = None;
        }
        for c in self.categories.unwrap_or_default() {
            preferences.categories.insert(
                c.category,
                Channels {
                    push: c.push,
                    email: c.email,
                    in_app: c.in_app,
                },
            );
        }
        Ok(preferences)
    }
}

/// A time of day of the quiet hours, `HH:MM` exactly (two digits each, as they are shown).
fn clock(field: &str, value: &str) -> async_graphql::Result<NaiveTime> {
    let digits = value.len() == 5
        && value.as_bytes()[2] == b':'
        && value
            .bytes()
            .enumerate()
            .all(|(i, b)| i == 2 || b.is_ascii_digit());
    digits
        .then(|| NaiveTime::parse_from_str(value, "%H:%M").ok())
        .flatten()
        .ok_or_else(|| bad(format!("`quietHours.{field}` must be HH:MM, e.g. `07:05`")))
}

/// One notification of the customer's notification centre: the same the devices got.
pub(crate) struct InboxNotification {
    pub(crate) record: NotificationRecord,
    /// The locale it is shown in.
    pub(crate) locale: String,
}

/// One notification of the customer's notification centre: the same the devices got.
#[Object]
impl InboxNotification {
    /// Mark it read with this.
    async fn id(&self) -> ID {
        ID(self.record.id.clone())
    }

    /// What it is about.
    async fn category(&self) -> Category {
        self.record.category()
    }

    /// What happened.
    async fn kind(&self) -> NotificationKind {
        self.record.kind
    }

    /// The headline, in the customer's language.
    async fn title(&self) -> String {
        render(self.record.kind, &self.record.params, &self.locale).0
    }

    /// The text, in the customer's language.
    async fn body(&self) -> String {
        render(self.record.kind, &self.record.params, &self.locale).1
    }

    /// Where the app opens it, e.g. `retail://orders/ord-000123`.
    async fn deep_link(&self) -> &str {
        &self.record.deep_link
    }

    /// Whether the customer has read it.
    async fn read(&self) -> bool {
        self.record.read
    }

    /// When it was made.
    async fn created_at(&self) -> DateTime<Utc> {
        self.record.created_at
    }
}
