//! Web Push: `POST <subscription endpoint>` (RFC 8030) with VAPID (RFC 8292) and the payload
//! encrypted for the subscription (RFC 8291, `ece`).
//!
//! VAPID: an ES256 JWT `{aud: the endpoint's origin (scheme, host and port), exp: 12 hours
//! ahead (push services take at most 24), sub: push.webpush.subject}` in `Authorization: vapid
//! t=<jwt>, k=<public key, base64url>`. One JWT per push service origin is signed and reused
//! for an hour (so it always has 11 hours or more left), as RFC 8292 allows: signing one per
//! message (a key parse and an ECDSA signature) was about an eighth of a send's own CPU.
//! Headers: `TTL` (seconds), `Urgency` (`high` for urgent messages, else `normal`), `Topic`
//! (derived from the collapse key, else from the message id, so a retried message replaces its
//! own pending copy), `Content-Encoding: aes128gcm`. The payload is JSON `{notificationId,
//! title, body, deepLink?, data}` for the app's service worker, at most 3993 bytes before
//! encryption.
//!
//! Endpoints must be `https://` on a public address (plain `http://`, and addresses of this
//! network, only with `allow_http`, for local testing: an endpoint on loopback, private or
//! link-local addresses is dropped as gone, never called). An endpoint that is not an http(s)
//! URL with a host (`url::Url` cannot parse it) can never work either: Gone too. Plain
//! `http://` without `allow_http`, and keys that are not a P-256 point and a 16-byte secret,
//! are Rejected without a request. The subscription's endpoint comes from a browser, so it is
//! never logged beyond its host.
//!
//! Answers: 2xx (201) Delivered; 404, 410 Gone; 413 Rejected (a bug of ours: the size is
//! checked before sending); 429 and 5xx Retry with `Retry-After`; another 4xx (400, 401 and
//! 403 about our VAPID header) Rejected.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use anyhow::Context as _;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use url::Url;

use super::call::{Answer, ProviderHttp, excerpt, log_answer, retry_after};
use super::{Channel, PushMessage, SendOutcome, Target, ece, unix_now, wrong_target};
use crate::config::WebPushConfig;

/// How long a VAPID JWT is valid (push services take at most 24 hours).
const VAPID_LIFETIME_SECS: i64 = 12 * 3600;
/// How long one signed VAPID header is reused for its origin.
const VAPID_REUSE_SECS: i64 = 3600;
/// Most origins whose VAPID header is kept (there are a handful of push services; endpoints
/// come from browsers, so the cache is bounded all the same).
const VAPID_CACHE_ORIGINS: usize = 256;
/// The longest `Topic` (RFC 8030 section 5.4).
const MAX_TOPIC_CHARS: usize = 32;

/// The Web Push channel.
pub(super) struct WebPushChannel {
    http: ProviderHttp,
    /// The VAPID private key (PKCS#8); never logged.
    key: EncodingKey,
    /// The VAPID public key, uncompressed point, base64url: `k`, and what apps subscribe with.
    public_key: String,
    subject: String,
    allow_http: bool,
    /// The signed `Authorization` header by push service origin, with when it was signed
    /// (unix seconds). A plain mutex: looked up and filled without an `.await`.
    vapid_headers: Mutex<HashMap<String, (String, i64)>>,
}

impl WebPushChannel {
    pub(super) fn new(config: &WebPushConfig) -> anyhow::Result<Self> {
        let pair = match (&config.vapid_private_key, &config.vapid_private_key_file) {
            (Some(key), None) => {
                key_from_raw(key.expose()).context("push.webpush.vapid_private_key")?
            }
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!(
                        "push.webpush.vapid_private_key_file: reading {}",
                        path.display()
                    )
                })?;
                key_from_text(&text).with_context(|| {
                    format!("push.webpush.vapid_private_key_file {}", path.display())
                })?
            }
            _ => anyhow::bail!(
                "push.webpush needs exactly one of vapid_private_key, vapid_private_key_file"
            ),
        };
        let pkcs8 = pair
            .to_pkcs8v1()
            .map_err(|_| anyhow::anyhow!("push.webpush: encoding the VAPID key failed"))?;
        let channel = Self {
            http: ProviderHttp::new("webpush", &config.policy, |builder| builder)?,
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            public_key: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            subject: config.subject.clone(),
            allow_http: config.allow_http,
            vapid_headers: Mutex::default(),
        };
        channel
            .vapid("https://push.example", unix_now())
            .map_err(|e| anyhow::anyhow!("push.webpush: the VAPID key cannot sign: {e}"))?;
        Ok(channel)
    }

    pub(super) fn vapid_public_key(&self) -> &str {
        &self.public_key
    }

    /// The `Authorization` header for pushes to `origin` at `now`: the one signed for it
    /// within [`VAPID_REUSE_SECS`], else a new one.
    fn authorization(&self, origin: &str, now: i64) -> jsonwebtoken::errors::Result<String> {
        let fresh = |signed_at: i64| (0..VAPID_REUSE_SECS).contains(&(now - signed_at));
        if let Some((header, signed_at)) = self.cached(origin)
            && fresh(signed_at)
        {
            return Ok(header);
        }
        let header = self.vapid(origin, now)?;
        let mut cache = self
            .vapid_headers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= VAPID_CACHE_ORIGINS && !cache.contains_key(origin) {
            cache.retain(|_, (_, signed_at)| fresh(*signed_at));
            if cache.len() >= VAPID_CACHE_ORIGINS {
                cache.clear();
            }
        }
        cache.insert(origin.to_owned(), (header.clone(), now));
        Ok(header)
    }

    fn cached(&self, origin: &str) -> Option<(String, i64)> {
        self.vapid_headers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(origin)
            .cloned()
    }

    /// A newly signed `Authorization` header for pushes to `origin`.
    fn vapid(&self, origin: &str, now: i64) -> jsonwebtoken::errors::Result<String> {
        let claims = VapidClaims {
            aud: origin,
            exp: now + VAPID_LIFETIME_SECS,
            sub: &self.subject,
        };
        let jwt = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.key)?;
        Ok(format!("vapid t={jwt}, k={}", self.public_key))
    }

    async fn send_to(
        &self,
        endpoint: &str,
        p256dh: &str,
        auth: &str,
        message: &PushMessage,
    ) -> SendOutcome {
        let url = match endpoint_url(endpoint) {
            Ok(url) => url,
            Err(reason) => {
                // Nothing can ever be sent to it: its device goes (and e-mail takes over).
                tracing::warn!(channel = "webpush", notification = %message.id, %reason, "Web Push endpoint unusable: the subscription is dropped");
                return SendOutcome::Gone;
            }
        };
        let prepared = self.prepare(url, p256dh, auth, message);
        let (url, body, authorization) = match prepared {
            Ok(prepared) => prepared,
            Err(reason) => {
                tracing::warn!(channel = "webpush", notification = %message.id, %reason, "push rejected before sending");
                return SendOutcome::Rejected { reason };
            }
        };
        let host = url.host_str().unwrap_or_default().to_owned();
        if !self.allow_http {
            match public_address(&url).await {
                Ok(()) => {}
                Err(Refused::Internal(reason)) => {
                    // Never a push service: the subscription can never work (and must not
                    // make this server call its own network).
                    tracing::warn!(channel = "webpush", notification = %message.id, %host, %reason, "Web Push endpoint refused: the subscription is dropped");
                    return SendOutcome::Gone;
                }
                Err(Refused::Unresolved(detail)) => {
                    tracing::warn!(channel = "webpush", notification = %message.id, %host, %detail, "Web Push endpoint does not resolve now");
                    return SendOutcome::Retry { after: None };
                }
            }
        }
        let topic = topic(message.collapse_key.as_deref().unwrap_or(&message.id));
        let request = self
            .http
            .client()
            .post(url)
            .header("authorization", authorization)
            .header("ttl", message.ttl.as_secs().to_string())
            .header("urgency", if message.urgent { "high" } else { "normal" })
            .header("topic", topic)
            .header("content-encoding", "aes128gcm")
            .header("content-type", "application/octet-stream")
            .body(body)
            .build();
        let request = match request {
            Ok(request) => request,
            Err(e) => {
                return SendOutcome::Rejected {
                    reason: format!("building the Web Push request: {}", e.without_url()),
                };
            }
        };
        let answer = match self.http.call(request).await {
            Ok(answer) => answer,
            Err(detail) => {
                tracing::warn!(channel = "webpush", notification = %message.id, %host, %detail, "Web Push send failed");
                return SendOutcome::Retry { after: None };
            }
        };
        let outcome = classify(&answer);
        log_answer("webpush", Some(&host), message, &answer, &outcome);
        outcome
    }

    /// The URL, the encrypted body and the VAPID header, or why there can be none.
    fn prepare(
        &self,
        url: Url,
        p256dh: &str,
        auth: &str,
        message: &PushMessage,
    ) -> Result<(Url, Vec<u8>, String), String> {
        if url.scheme() == "http" && !self.allow_http {
            return Err("the endpoint is plain http (push.webpush.allow_http is off)".to_owned());
        }
        let ua_public = decode_b64(p256dh).ok_or("p256dh is not base64url")?;
        let auth = decode_b64(auth).ok_or("auth is not base64url")?;
        let payload = serde_json::to_vec(&payload(message))
            .map_err(|e| format!("encoding the payload: {e}"))?;
        let body = ece::encrypt(&payload, &ua_public, &auth)?;
        let authorization = self
            .authorization(&url.origin().ascii_serialization(), unix_now())
            .map_err(|e| format!("signing the VAPID JWT: {e}"))?;
        Ok((url, body, authorization))
    }
}

/// The endpoint as a URL: `https` (or `http`) with a host, or why it can never be pushed to.
fn endpoint_url(endpoint: &str) -> Result<Url, String> {
    let url = Url::parse(endpoint).map_err(|e| format!("the endpoint is not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!(
            "the endpoint's scheme {:?} is not https",
            url.scheme()
        ));
    }
    if url.host().is_none() {
        return Err("the endpoint has no host".to_owned());
    }
    Ok(url)
}

/// Why an endpoint is not sent to.
enum Refused {
    /// It is, or resolves to, an address of this network (loopback, private, link-local,
    /// metadata services...).
    Internal(String),
    /// Its name does not resolve now.
    Unresolved(String),
}

/// Whether the endpoint's host is a public address, as every push service's is. Checked
/// before each send when plain http is off (production); with `allow_http` (local testing)
/// anything goes. The name is resolved here and again by the HTTP client: a name whose
/// answers change between the two (DNS rebinding) is not caught.
async fn public_address(url: &Url) -> Result<(), Refused> {
    let port = url.port_or_known_default().unwrap_or(443);
    let addresses: Vec<std::net::IpAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![ip.into()],
        Some(url::Host::Ipv6(ip)) => vec![ip.into()],
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                return Err(Refused::Internal(format!("{name} is this machine")));
            }
            tokio::net::lookup_host((name.as_str(), port))
                .await
                .map_err(|e| Refused::Unresolved(e.to_string()))?
                .map(|a| a.ip())
                .collect()
        }
        None => return Err(Refused::Internal("no host".to_owned())),
    };
    match addresses.iter().find(|ip| !is_public(**ip)) {
        Some(ip) => Err(Refused::Internal(format!("{ip} is not a public address"))),
        None if addresses.is_empty() => Err(Refused::Unresolved("no address".to_owned())),
        None => Ok(()),
    }
}

/// Not loopback, private, link-local, shared, documentation, multicast or unspecified.
fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

#[async_trait::async_trait]
impl Channel for WebPushChannel {
    async fn send(&self, target: &Target, message: &PushMessage) -> SendOutcome {
        match target {
            Target::WebPush {
                endpoint,
                p256dh,
                auth,
            } => self.send_to(endpoint, p256dh, auth, message).await,
            other => wrong_target("webpush", other),
        }
    }
}

#[derive(Serialize)]
struct VapidClaims<'a> {
    aud: &'a str,
    exp: i64,
    sub: &'a str,
}

/// What the app's service worker gets.
fn payload(message: &PushMessage) -> serde_json::Value {
    let mut payload = json!({
        "notificationId": message.id,
        "title": message.title,
        "body": message.body,
        "data": message.data,
    });
    if let Some(link) = &message.deep_link {
        payload["deepLink"] = json!(link);
    }
    payload
}

/// `Topic`: the key itself when it is at most 32 base64url characters, else the first 32
/// characters of its SHA-256 in base64url.
pub(super) fn topic(key: &str) -> String {
    let fits = !key.is_empty()
        && key.len() <= MAX_TOPIC_CHARS
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if fits {
        return key.to_owned();
    }
    let mut hashed = URL_SAFE_NO_PAD.encode(Sha256::digest(key.as_bytes()));
    hashed.truncate(MAX_TOPIC_CHARS);
    hashed
}

fn classify(answer: &Answer) -> SendOutcome {
    let status = answer.status;
    if status.is_success() {
        return SendOutcome::Delivered;
    }
    match status {
        StatusCode::NOT_FOUND | StatusCode::GONE => SendOutcome::Gone,
        StatusCode::TOO_MANY_REQUESTS => SendOutcome::Retry {
            after: retry_after(&answer.headers),
        },
        s if s.is_server_error() => SendOutcome::Retry {
            after: retry_after(&answer.headers),
        },
        s if s.is_client_error() => SendOutcome::Rejected {
            reason: format!("{}: {}", s.as_u16(), excerpt(&answer.body)),
        },
        _ => SendOutcome::Retry { after: None },
    }
}

/// Base64url, or base64, padded or not (subscriptions are stored as apps sent them).
fn decode_b64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
        .ok()
}

/// The VAPID key from its raw private scalar (32 bytes, base64url).
fn key_from_raw(text: &str) -> anyhow::Result<EcdsaKeyPair> {
    let scalar = decode_b64(text).context("not base64url")?;
    anyhow::ensure!(
        scalar.len() == 32,
        "a P-256 private key is 32 bytes, this is {}",
        scalar.len()
    );
    let private = aws_lc_rs::agreement::PrivateKey::from_private_key(
        &aws_lc_rs::agreement::ECDH_P256,
        &scalar,
    )
    .map_err(|_| anyhow::anyhow!("not a P-256 private key"))?;
    let public = private
        .compute_public_key()
        .map_err(|_| anyhow::anyhow!("not a P-256 private key"))?;
    EcdsaKeyPair::from_private_key_and_public_key(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &scalar,
        public.as_ref(),
    )
    .map_err(|e| anyhow::anyhow!("not a P-256 private key: {e}"))
}

/// The VAPID key from a file: PEM (PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`), or the raw
/// base64url scalar on a line of its own.
fn key_from_text(text: &str) -> anyhow::Result<EcdsaKeyPair> {
    if !text.contains("-----BEGIN") {
        return key_from_raw(text.trim());
    }
    let mut der = None;
    let mut body = String::new();
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with("-----BEGIN") {
            inside = line.contains("PRIVATE KEY");
            body.clear();
        } else if line.starts_with("-----END") {
            if inside {
                der = Some(
                    STANDARD
                        .decode(&body)
                        .context("the PEM body is not base64")?,
                );
                break;
            }
        } else if inside {
            body.push_str(line);
        }
    }
    let der = der.context("no PRIVATE KEY or EC PRIVATE KEY block")?;
    EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
        .map_err(|e| anyhow::anyhow!("not a P-256 private key: {e}"))
}

/// The public key of a raw private key (tests).
#[cfg(test)]
fn public_of_raw(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(key_from_raw(text).unwrap().public_key().as_ref())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use reqwest::header::HeaderMap;
    use serde_json::Value;

    use aws_lc_rs::encoding::AsDer as _;

    use super::*;
    use crate::config::{ChannelPolicy, Secret};

    /// The sandbox's dev VAPID key pair (not a secret).
    const RAW: &str = "bHjsFWfwJA_yCWR8ZGWlf5NzHxsK4cuAq1VfWmscK-c";
    const PUBLIC: &str =
        "BFHLToXeh_c8P9BdNs4Ayur5DnLp5dmbSPrR-kGHnAkqNVHtxTT6qbAmsbPe5L3GRh7VdosxVrZ-IgTmzyOefGA";

    fn channel(allow_http: bool) -> WebPushChannel {
        WebPushChannel::new(&WebPushConfig {
            vapid_private_key: Some(Secret::new(RAW)),
            vapid_private_key_file: None,
            subject: "mailto:push@example.com".into(),
            allow_http,
            policy: ChannelPolicy::default(),
        })
        .unwrap()
    }

    fn message() -> PushMessage {
        PushMessage {
            id: "n-1".into(),
            title: "t".into(),
            body: "b".into(),
            data: BTreeMap::new(),
            deep_link: None,
            collapse_key: None,
            urgent: false,
            ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_public_key_is_the_uncompressed_point_of_the_private_one() {
        assert_eq!(public_of_raw(RAW), PUBLIC);
        assert_eq!(channel(false).vapid_public_key(), PUBLIC);
        let padded = format!("{}=", RAW.replace('-', "+").replace('_', "/"));
        assert_eq!(
            URL_SAFE_NO_PAD.encode(key_from_raw(&padded).unwrap().public_key().as_ref()),
            PUBLIC
        );
    }

    #[test]
    fn pem_keys_read_as_pkcs8_and_sec1() {
        let pair = key_from_raw(RAW).unwrap();
        let pkcs8 = pair.to_pkcs8v1().unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(pkcs8.as_ref())
        );
        assert_eq!(
            URL_SAFE_NO_PAD.encode(key_from_text(&pem).unwrap().public_key().as_ref()),
            PUBLIC
        );
        let sec1 = pair.private_key().as_der().unwrap();
        let pem = format!(
            "-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----\n",
            STANDARD.encode(sec1.as_ref())
        );
        assert_eq!(
            URL_SAFE_NO_PAD.encode(key_from_text(&pem).unwrap().public_key().as_ref()),
            PUBLIC
        );
        assert_eq!(
            URL_SAFE_NO_PAD.encode(
                key_from_text(&format!("{RAW}\n"))
                    .unwrap()
                    .public_key()
                    .as_ref()
            ),
            PUBLIC
        );
        assert!(
            key_from_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .is_err()
        );
        assert!(key_from_raw("c2hvcnQ").is_err());
    }

    #[test]
    fn the_vapid_jwt_names_the_origin_with_its_port_and_expires_within_a_day() {
        let header = channel(false)
            .vapid("http://127.0.0.1:8080", 1_000_000)
            .unwrap();
        let (t, k) = header
            .strip_prefix("vapid t=")
            .and_then(|rest| rest.split_once(", k="))
            .unwrap();
        assert_eq!(k, PUBLIC);
        let jwt_header = jsonwebtoken::decode_header(t).unwrap();
        assert_eq!(jwt_header.alg, Algorithm::ES256);
        let key = jsonwebtoken::DecodingKey::from_ec_der(&URL_SAFE_NO_PAD.decode(PUBLIC).unwrap());
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.validate_exp = false;
        validation.set_audience(&["http://127.0.0.1:8080"]);
        let claims: Value = jsonwebtoken::decode(t, &key, &validation).unwrap().claims;
        assert_eq!(
            claims,
            json!({"aud": "http://127.0.0.1:8080", "exp": 1_000_000 + 12 * 3600, "sub": "mailto:push@example.com"})
        );
    }

    #[test]
    fn one_vapid_header_per_origin_is_reused_for_an_hour() {
        let channel = channel(false);
        let first = channel
            .authorization("https://a.example", 1_000_000)
            .unwrap();
        assert_eq!(
            channel
                .authorization("https://a.example", 1_000_000 + 3599)
                .unwrap(),
            first
        );
        let other = channel
            .authorization("https://b.example", 1_000_000)
            .unwrap();
        assert_ne!(other, first, "each origin has its own audience");
        let renewed = channel
            .authorization("https://a.example", 1_000_000 + 3600)
            .unwrap();
        assert_ne!(renewed, first);
        // A clock that went back signs anew rather than reuse a header from the future.
        assert_ne!(
            channel.authorization("https://a.example", 999_000).unwrap(),
            renewed
        );
    }

    #[test]
    fn the_vapid_cache_stays_bounded() {
        let channel = channel(false);
        for i in 0..VAPID_CACHE_ORIGINS + 10 {
            channel
                .authorization(&format!("https://p{i}.example"), 1_000_000)
                .unwrap();
        }
        assert!(channel.vapid_headers.lock().unwrap().len() <= VAPID_CACHE_ORIGINS);
    }

    #[test]
    fn topics_are_at_most_32_base64url_characters() {
        assert_eq!(topic("order-17_x"), "order-17_x");
        let hashed = topic("order ord-019801 shipped");
        assert_eq!(hashed.len(), 32);
        assert!(
            hashed
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(hashed, topic("order ord-019801 shipped"));
        assert_eq!(topic(&"a".repeat(33)).len(), 32);
        assert_ne!(topic(&"a".repeat(33)), "a".repeat(32));
        assert_eq!(topic("").len(), 32);
    }

    #[test]
    fn endpoints_must_be_https_unless_http_is_allowed() {
        let subscription = (
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "BTBZMqHH6r4Tts7J_aSIgg",
        );
        let strict = channel(false);
        let prepare = |channel: &WebPushChannel, endpoint: &str| {
            let url = endpoint_url(endpoint)?;
            channel.prepare(url, subscription.0, subscription.1, &message())
        };
        assert!(prepare(&strict, "https://push.example/sub/1").is_ok());
        assert!(
            prepare(&strict, "http://127.0.0.1:9/push/1")
                .unwrap_err()
                .contains("allow_http")
        );
        assert!(prepare(&strict, "ftp://push.example/1").is_err());
        assert!(prepare(&strict, "not a url").is_err());
        assert!(prepare(&channel(true), "http://127.0.0.1:9/push/1").is_ok());
        let url = endpoint_url("https://p.example/1").unwrap();
        assert!(
            strict
                .prepare(url, "bad!", subscription.1, &message())
                .is_err()
        );
    }

    /// An endpoint that is not a URL can never be pushed to: its device is dropped (so the
    /// customer gets e-mail instead), not kept for every push to be dead-lettered.
    #[tokio::test]
    async fn endpoints_that_are_not_urls_are_gone_without_a_request() {
        let subscription = (
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "BTBZMqHH6r4Tts7J_aSIgg",
        );
        for endpoint in [
            "https://example.com:99999/x",
            "https://exa mple.com/x",
            "https://[::1/x",
            "https://%00/x",
            "not a url",
            "ftp://push.example/1",
        ] {
            let sent = tokio::time::timeout(
                Duration::from_secs(5),
                channel(true).send_to(endpoint, subscription.0, subscription.1, &message()),
            )
            .await
            .expect("no request, so no wait");
            assert_eq!(sent, SendOutcome::Gone, "{endpoint}");
        }
    }

    #[tokio::test]
    async fn endpoints_on_this_network_are_dropped_without_a_request() {
        let subscription = (
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "BTBZMqHH6r4Tts7J_aSIgg",
        );
        // Port 9 on these hosts would refuse or hang: `Gone` at once means no request.
        for endpoint in [
            "https://127.0.0.1:9/x",
            "https://localhost:9/x",
            "https://LOCALHOST./x",
            "https://10.1.2.3:9/x",
            "https://192.168.0.1:9/x",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1:9/x",
            "https://[::1]:9/x",
            "https://[fd00::1]:9/x",
            "https://[fe80::1]:9/x",
            "https://[::ffff:127.0.0.1]:9/x",
            "https://2130706433:9/x",
            "https://0.0.0.0:9/x",
        ] {
            let sent = tokio::time::timeout(
                Duration::from_secs(5),
                channel(false).send_to(endpoint, subscription.0, subscription.1, &message()),
            )
            .await
            .expect("no request, so no wait");
            assert_eq!(sent, SendOutcome::Gone, "{endpoint}");
        }
        assert!(is_public("8.8.8.8".parse().unwrap()));
        assert!(is_public("2001:4860:4860::8888".parse().unwrap()));
    }

    #[test]
    fn outcomes_follow_the_status() {
        let answer = |status: u16| Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Vec::new(),
        };
        assert_eq!(classify(&answer(201)), SendOutcome::Delivered);
        assert_eq!(classify(&answer(404)), SendOutcome::Gone);
        assert_eq!(classify(&answer(410)), SendOutcome::Gone);
        assert!(matches!(
            classify(&answer(413)),
            SendOutcome::Rejected { .. }
        ));
        assert!(matches!(
            classify(&answer(403)),
            SendOutcome::Rejected { .. }
        ));
        assert_eq!(classify(&answer(429)), SendOutcome::Retry { after: None });
        assert_eq!(classify(&answer(503)), SendOutcome::Retry { after: None });
    }
}
