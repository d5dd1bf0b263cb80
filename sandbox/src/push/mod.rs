//! The push providers' stand-ins: FCM HTTP v1, APNs (HTTP/2 over TLS), a Web Push service
//! (RFC 8030/8291/8292) and an SMTP sink, each on its own port, each recording what it
//! accepted in one shared log ([`SandboxPush::received`], `GET /_sandbox/push` on the FCM
//! server), each record stamped with when it was accepted (`received_at`).
//!
//! The credentials a sender needs are generated at start and written to a temporary directory
//! the sandbox owns (removed when it stops): the FCM service-account JSON (an RSA key of the
//! sandbox's own, its `token_uri` pointing at the sandbox), the APNs `.p8` signing key with its
//! team id and key id, and the PEM of the CA that signed the APNs server's certificate
//! ([`PushCredentials`]). Each provider verifies what a sender signs with them exactly as the
//! real one does, so a sender that works against the sandbox has its JWTs right.
//!
//! Devices and subscriptions:
//! - FCM takes any registration token, except the error tokens below.
//! - APNs knows the device tokens it minted ([`SandboxPush::apns_device`]), each for one app
//!   (bundle id, the `apns-topic`) and one environment (production or development, each on its
//!   own port as `api.push.apple.com` and `api.sandbox.push.apple.com` are): any other token is
//!   `BadDeviceToken`, another app's topic `DeviceTokenNotForTopic`.
//! - Web Push subscriptions are minted by the push service as a browser's are
//!   (`POST /subscriptions` on the Web Push server, or [`SandboxPush::webpush_subscribe`]):
//!   the service keeps the private key and decrypts every payload it receives with it.
//!   [`SandboxPush::webpush_unsubscribe`] (or `DELETE /subscriptions/{id}`) makes it 410 Gone.
//!
//! Error tokens, so a sender's tests reach every answer a provider gives. FCM registration
//! tokens, APNs device tokens and the last path segment of Web Push endpoints (`/push/{id}`)
//! starting with:
//!
//! | prefix          | FCM                                   | APNs                          | Web Push            |
//! |-----------------|---------------------------------------|-------------------------------|---------------------|
//! | `unregistered-` | 404 `UNREGISTERED`                    | 410 `Unregistered`            | 410 Gone            |
//! | `invalid-`      | 400 `INVALID_ARGUMENT`                | 400 `BadDeviceToken`          | 404 Not Found       |
//! | `mismatch-`     | 403 `SENDER_ID_MISMATCH`              | 400 `DeviceTokenNotForTopic`  | 403 Forbidden       |
//! | `toolarge-`     | 400 `INVALID_ARGUMENT` (too big)      | 413 `PayloadTooLarge`         | 413                 |
//! | `quota-`        | 429 `QUOTA_EXCEEDED`, `Retry-After: 30` | 429 `TooManyRequests`, `Retry-After: 30` | 429, `Retry-After: 30` |
//! | `unavailable-`  | 503 `UNAVAILABLE`, `Retry-After: 10`  | 503 `ServiceUnavailable`      | 503, `Retry-After: 10` |
//! | `internal-`     | 500 `INTERNAL`                        | 500 `InternalServerError`     | 500                 |
//! | `badrequest-`   | 400 without an FCM error code         | 400 `BadTopic`                | 400                 |
//!
//! E-mail recipients whose local part starts with `unknown-` are refused `550 5.1.1`,
//! `full-` `452 4.2.2`, `reject-` `550 5.7.1` (policy), `broken-` `554 5.3.0`.
//!
//! Layout:
//! - `fcm`: the OAuth2 token endpoint (the JWT grant, RS256) and `messages:send`.
//! - `apns`: `POST /3/device/{token}` behind the ES256 provider token, on two TLS ports.
//! - `tls`: the sandbox's CA, the APNs server certificate, and the HTTP/2-over-TLS server.
//! - `webpush`: subscriptions, `POST /push/{id}` behind VAPID, aes128gcm decryption.
//! - `smtp`: a sink speaking enough SMTP (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT).

pub(crate) mod apns;
pub(crate) mod fcm;
pub(crate) mod smtp;
pub(crate) mod tls;
pub(crate) mod webpush;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

pub use apns::ApnsEnvironment;
pub use webpush::WebPushSubscription;

/// A VAPID private key for the embedded sandbox's Switchyard (a raw P-256 scalar, base64url):
/// a fixed dev value, so that subscriptions made against its public key
/// ([`DEV_VAPID_PUBLIC_KEY`]) outlive a restart. Not a secret: never use it elsewhere.
pub const DEV_VAPID_PRIVATE_KEY: &str = "bHjsFWfwJA_yCWR8ZGWlf5NzHxsK4cuAq1VfWmscK-c";
/// The public key of [`DEV_VAPID_PRIVATE_KEY`] (uncompressed point, base64url): what a web app
/// passes to `pushManager.subscribe` as `applicationServerKey`.
pub const DEV_VAPID_PUBLIC_KEY: &str =
    "BFHLToXeh_c8P9BdNs4Ayur5DnLp5dmbSPrR-kGHnAkqNVHtxTT6qbAmsbPe5L3GRh7VdosxVrZ-IgTmzyOefGA";

/// Where a sender finds the credentials the sandbox's providers accept: files in the
/// sandbox's temporary directory, and the ids that go with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushCredentials {
    /// The FCM service-account JSON (`project_id`, `client_email`, `private_key`,
    /// `private_key_id`, `token_uri`), as the Firebase console downloads it.
    pub fcm_service_account_file: PathBuf,
    /// The FCM project id in that file.
    pub fcm_project_id: String,
    /// The APNs signing key (`AuthKey_<key id>.p8`, PKCS#8 PEM).
    pub apns_key_file: PathBuf,
    /// The APNs key id (the provider token's `kid`).
    pub apns_key_id: String,
    /// The APNs team id (the provider token's `iss`).
    pub apns_team_id: String,
    /// The CA that signed the APNs server's certificate (PEM), for the sender to trust.
    pub apns_ca_file: PathBuf,
}

/// What one provider accepted, in the order they were accepted.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum ReceivedPush {
    /// A message FCM accepted.
    Fcm(FcmReceived),
    /// A notification APNs accepted.
    Apns(ApnsReceived),
    /// A push message the Web Push service accepted, decrypted.
    #[serde(rename = "webpush")]
    WebPush(WebPushReceived),
    /// A message the SMTP sink accepted.
    Email(EmailReceived),
}

/// A message FCM accepted (`POST /v1/projects/{project}/messages:send`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FcmReceived {
    /// The project in the path.
    pub project_id: String,
    /// The `name` FCM answered (`projects/{project}/messages/{id}`).
    pub name: String,
    /// The `message` object as sent.
    pub message: Value,
    /// When the provider accepted it (the wall clock, taken as it was recorded, before the
    /// provider answered the sender): what a benchmark measures arrival with.
    pub received_at: DateTime<Utc>,
}

/// A notification APNs accepted (`POST /3/device/{token}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApnsReceived {
    /// Which of the two servers took it.
    pub environment: ApnsEnvironment,
    /// The device token in the path.
    pub device_token: String,
    /// The HTTP version it came over (`HTTP/2.0`: APNs speaks nothing else).
    pub http_version: String,
    /// The `apns-*` request headers, by lower-case name.
    pub headers: std::collections::BTreeMap<String, String>,
    /// The provider token's `iat`.
    pub provider_token_issued_at: i64,
    /// The first 12 hex digits of the provider token's SHA-256: equal for one reused token.
    pub provider_token_fingerprint: String,
    /// The JSON payload.
    pub payload: Value,
    /// When the provider accepted it (the wall clock, taken as it was recorded, before the
    /// provider answered the sender): what a benchmark measures arrival with.
    pub received_at: DateTime<Utc>,
}

/// A push message the Web Push service accepted (`POST /push/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebPushReceived {
    /// The subscription's endpoint.
    pub endpoint: String,
    /// `TTL`, in seconds.
    pub ttl: u64,
    /// `Urgency`, if sent.
    pub urgency: Option<String>,
    /// `Topic`, if sent.
    pub topic: Option<String>,
    /// The VAPID JWT's `sub`.
    pub vapid_subject: String,
    /// The VAPID public key (`k`), base64url.
    pub vapid_public_key: String,
    /// The payload, decrypted with the subscription's private key, as text.
    pub payload: String,
    /// When the provider accepted it (the wall clock, taken as it was recorded, before the
    /// provider answered the sender): what a benchmark measures arrival with.
    pub received_at: DateTime<Utc>,
}

/// A message the SMTP sink accepted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmailReceived {
    /// The envelope sender (`MAIL FROM`).
    pub from: String,
    /// The envelope recipients that were accepted (`RCPT TO`).
    pub to: Vec<String>,
    /// The `Subject` header, unfolded, as written (possibly RFC 2047 encoded).
    pub subject: Option<String>,
    /// The message (headers and body) as received, dot-stuffing undone.
    pub data: String,
    /// When the provider accepted it (the wall clock, taken as it was recorded, before the
    /// provider answered the sender): what a benchmark measures arrival with.
    pub received_at: DateTime<Utc>,
}

/// The providers' shared state: the log, and what each provider knows.
pub(crate) struct PushState {
    /// What was accepted, oldest first. A plain mutex: pushes are appended and copied, never
    /// held across an `.await`.
    log: Mutex<Vec<ReceivedPush>>,
    pub(crate) fcm: fcm::FcmState,
    pub(crate) apns: apns::ApnsState,
    pub(crate) webpush: webpush::WebPushState,
    credentials: PushCredentials,
    /// The PEM of the sandbox's CA (also in `credentials.apns_ca_file`).
    ca_pem: String,
    /// Holds the credential files; removed on drop.
    _dir: tempfile::TempDir,
}

impl PushState {
    pub(crate) fn record(&self, push: ReceivedPush) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(push);
    }
}

/// The push providers of a running sandbox: what they received, their credentials, and the
/// devices and subscriptions they know.
#[derive(Clone)]
pub struct SandboxPush {
    state: Arc<PushState>,
}

impl std::fmt::Debug for SandboxPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxPush")
            .field("credentials", &self.state.credentials)
            .finish_non_exhaustive()
    }
}

impl SandboxPush {
    /// Generates the providers' keys and certificate and writes the credential files;
    /// `urls` says where the servers listen (the FCM token URI goes in the service account).
    pub(crate) fn new(
        fcm_url: &str,
        webpush_url: &str,
        tls_hosts: &[String],
        fcm_token_ttl_secs: u64,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("switchyard-sandbox-push-")
            .tempdir()
            .context("creating the sandbox's push credential directory")?;
        let fcm = fcm::FcmState::new(fcm_url, fcm_token_ttl_secs)?;
        let fcm_service_account_file = dir.path().join("fcm-service-account.json");
        write_private(&fcm_service_account_file, &fcm.service_account_json())?;
        let apns = apns::ApnsState::new()?;
        let apns_key_file = dir.path().join(format!("AuthKey_{}.p8", apns.key_id()));
        write_private(&apns_key_file, &apns.key_pem())?;
        let identity = tls::TlsIdentity::generate(tls_hosts)?;
        let apns_ca_file = dir.path().join("apns-ca.pem");
        write_private(&apns_ca_file, &identity.ca_pem)?;
        let credentials = PushCredentials {
            fcm_service_account_file,
            fcm_project_id: fcm.project_id().to_owned(),
            apns_key_file,
            apns_key_id: apns.key_id().to_owned(),
            apns_team_id: apns.team_id().to_owned(),
            apns_ca_file,
        };
        let state = PushState {
            log: Mutex::default(),
            fcm,
            apns: apns.with_tls(identity.server_config),
            webpush: webpush::WebPushState::new(webpush_url),
            credentials,
            ca_pem: identity.ca_pem,
            _dir: dir,
        };
        Ok(Self {
            state: Arc::new(state),
        })
    }

    pub(crate) fn state(&self) -> &Arc<PushState> {
        &self.state
    }

    /// Everything the providers accepted so far, oldest first.
    pub fn received(&self) -> Vec<ReceivedPush> {
        self.state
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many pushes the providers accepted so far: [`SandboxPush::received`]'s length,
    /// without copying the log (a benchmark waiting for thousands asks often).
    pub fn received_count(&self) -> usize {
        self.state
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Forgets what the providers received.
    pub fn reset(&self) {
        self.state
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The credential files and ids a sender needs.
    pub fn credentials(&self) -> &PushCredentials {
        &self.state.credentials
    }

    /// The PEM of the CA that signed the APNs servers' certificate.
    pub fn ca_pem(&self) -> &str {
        &self.state.ca_pem
    }

    /// Mints an APNs device token (64 hex digits) of the app `topic` (its bundle id) in
    /// `environment`, as iOS hands one to an app.
    pub fn apns_device(&self, topic: &str, environment: ApnsEnvironment) -> String {
        self.state.apns.mint_device(topic, environment)
    }

    /// Makes every APNs provider token seen so far expired: the next request with one is
    /// answered 403 `ExpiredProviderToken` (as APNs does for tokens older than an hour).
    pub fn expire_apns_provider_tokens(&self) {
        self.state.apns.expire_seen_tokens();
    }

    /// Revokes every FCM access token handed out so far: the next send with one is answered
    /// 401 `UNAUTHENTICATED` (as when Google's token expired early).
    pub fn expire_fcm_access_tokens(&self) {
        self.state.fcm.revoke_all();
    }

    /// Mints a Web Push subscription, as a browser's `pushManager.subscribe` does; with
    /// `application_server_key` (a VAPID public key, base64url), only pushes signed with that
    /// key are accepted (403 otherwise), as real push services do.
    pub fn webpush_subscribe(
        &self,
        application_server_key: Option<&str>,
    ) -> anyhow::Result<WebPushSubscription> {
        self.state.webpush.subscribe(application_server_key)
    }

    /// Unsubscribes: pushes to `endpoint` are answered 410 Gone from now on. False if the
    /// endpoint is not one of this service's subscriptions.
    pub fn webpush_unsubscribe(&self, endpoint: &str) -> bool {
        self.state.webpush.unsubscribe(endpoint)
    }
}

/// `GET /_sandbox/push` (what every provider accepted, oldest first, Web Push payloads
/// decrypted) and `DELETE /_sandbox/push` (forget), outside the fault layer.
pub(crate) fn control_routes(push: SandboxPush) -> Router {
    let read = push.clone();
    Router::new().route(
        "/_sandbox/push",
        get(move || async move { Json(read.received()) }).delete(move || async move {
            push.reset();
            StatusCode::NO_CONTENT
        }),
    )
}

/// Writes a credential file readable by its owner only.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.write_all(contents.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    #[cfg(not(unix))]
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `der` as PEM with `label` (`PRIVATE KEY`, `CERTIFICATE`).
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

/// `len` random bytes from the system's CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // Filling from the OS generator only fails if the OS has none; a sandbox cannot run then.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        tracing::error!("the system random number generator failed");
    }
    bytes
}

/// Random bytes as lower-case hex.
pub(crate) fn random_hex<const N: usize>() -> String {
    random_bytes::<N>()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Base64url without padding.
pub(crate) fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The first 12 hex digits of `text`'s SHA-256: tells tokens apart without showing them.
pub(crate) fn fingerprint(text: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .take(6)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// An error token's class, by prefix (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorToken {
    Unregistered,
    Invalid,
    Mismatch,
    TooLarge,
    Quota,
    Unavailable,
    Internal,
    BadRequest,
}

impl ErrorToken {
    pub(crate) fn of(token: &str) -> Option<Self> {
        [
            ("unregistered-", Self::Unregistered),
            ("invalid-", Self::Invalid),
            ("mismatch-", Self::Mismatch),
            ("toolarge-", Self::TooLarge),
            ("quota-", Self::Quota),
            ("unavailable-", Self::Unavailable),
            ("internal-", Self::Internal),
            ("badrequest-", Self::BadRequest),
        ]
        .into_iter()
        .find(|(prefix, _)| token.starts_with(prefix))
        .map(|(_, class)| class)
    }
}

/// `Retry-After` seconds of the `quota-` error tokens.
pub(crate) const QUOTA_RETRY_AFTER_SECS: u64 = 30;
/// `Retry-After` seconds of the `unavailable-` error tokens.
pub(crate) const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 10;
