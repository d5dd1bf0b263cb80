//! APNs: `POST {environment}/3/device/{token}` over HTTP/2 (ALPN `h2` on the TLS connection,
//! which reqwest's `http2` feature negotiates; one multiplexed connection per environment),
//! with a provider token.
//!
//! The provider token is an ES256 JWT `{iss: team id, iat}` with `kid` the key id, signed with
//! the `.p8` key, reused for [`TOKEN_REFRESH`] (APNs wants it refreshed between 20 and 60
//! minutes: more often is 429 `TooManyProviderTokenUpdates`, older is 403
//! `ExpiredProviderToken`). On `ExpiredProviderToken` the channel signs a new one and tries
//! once more.
//!
//! Headers: `apns-topic` (the app's bundle id), `apns-push-type: alert`, `apns-priority` 10
//! (urgent) or 5, `apns-expiration` (unix time; 0 for a zero TTL: deliver now or never),
//! `apns-collapse-id` (the collapse key, or its SHA-256 in hex when over 64 bytes), `apns-id`
//! (the message id when it is a UUID, else a UUID derived from it: the same message always has
//! the same `apns-id`). The payload is `{"aps": {"alert": {title, body}, "sound": "default"},
//! notificationId, deepLink?, ...data}`, at most 4096 bytes (checked before sending).
//!
//! Answers (`{"reason"}`): 200 Delivered; 410 (`Unregistered`, `ExpiredToken`) Gone, and 400
//! `BadDeviceToken` / `DeviceTokenNotForTopic` Gone; another 400 Rejected; 403
//! `ExpiredProviderToken` a new token (once), other 403s about our token or certificate Retry
//! (credentials, not the message), other 403s Rejected; 404, 405, 413 Rejected; 429 (also
//! `TooManyProviderTokenUpdates`) and 5xx Retry, honouring `Retry-After` if APNs sends one. A
//! 400 or 403 whose reason does not parse is Rejected (no device is dropped on a guess).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;
use url::Url;

use super::call::{Answer, ProviderHttp, log_answer, retry_after};
use super::{Channel, PushMessage, SendOutcome, Target, unix_now, wrong_target};
use crate::config::ApnsConfig;

/// How long one provider token is used (APNs: between 20 and 60 minutes).
pub(super) const TOKEN_REFRESH: Duration = Duration::from_secs(40 * 60);
/// The largest payload of an alert notification.
const MAX_PAYLOAD_BYTES: usize = 4096;
/// The longest `apns-collapse-id`.
const MAX_COLLAPSE_ID_BYTES: usize = 64;

/// The APNs channel.
pub(super) struct ApnsChannel {
    http: ProviderHttp,
    production: Url,
    development: Url,
    tokens: ProviderTokens,
}

impl ApnsChannel {
    pub(super) fn new(config: &ApnsConfig) -> anyhow::Result<Self> {
        let pem = std::fs::read(&config.key_file).with_context(|| {
            format!("push.apns.key_file: reading {}", config.key_file.display())
        })?;
        let key = EncodingKey::from_ec_pem(&pem).map_err(|_| {
            anyhow::anyhow!(
                "push.apns.key_file {} is not a .p8 signing key (PKCS#8 PEM, P-256)",
                config.key_file.display()
            )
        })?;
        let ca = match &config.ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("push.apns.ca_file: reading {}", path.display()))?;
                Some(reqwest::Certificate::from_pem(&pem).map_err(|e| {
                    anyhow::anyhow!(
                        "push.apns.ca_file {} is not a PEM certificate: {e}",
                        path.display()
                    )
                })?)
            }
            None => None,
        };
        for (key, url) in [
            ("production_url", &config.production_url),
            ("development_url", &config.development_url),
        ] {
            if url.scheme() != "https" || url.cannot_be_a_base() {
                anyhow::bail!(
                    "push.apns.{key} must be an https URL (APNs speaks HTTP/2 over TLS), got {url}"
                );
            }
        }
        let http = ProviderHttp::new("apns", &config.policy, |builder| match ca {
            Some(ca) => builder.tls_certs_merge([ca]),
            None => builder,
        })?;
        let tokens = ProviderTokens::new(&config.team_id, &config.key_id, key);
        tokens
            .current()
            .map_err(|e| anyhow::anyhow!("push.apns: the .p8 key cannot sign: {e}"))?;
        Ok(Self {
            http,
            production: config.production_url.clone(),
            development: config.development_url.clone(),
            tokens,
        })
    }

    async fn send_to(
        &self,
        token: &str,
        topic: &str,
        sandbox: bool,
        message: &PushMessage,
    ) -> SendOutcome {
        let payload = match payload(message) {
            Ok(payload) => payload,
            Err(reason) => {
                tracing::warn!(channel = "apns", notification = %message.id, %reason, "push rejected before sending");
                return SendOutcome::Rejected { reason };
            }
        };
        let base = if sandbox {
            &self.development
        } else {
            &self.production
        };
        let url = device_url(base, token);
        for attempt in 0..2 {
            let jwt = match self.tokens.current() {
                Ok(jwt) => jwt,
                Err(e) => {
                    return SendOutcome::Rejected {
                        reason: format!("signing the provider token: {e}"),
                    };
                }
            };
            let request = self
                .http
                .client()
                .post(url.clone())
                .header("authorization", format!("bearer {jwt}"))
                .header("apns-topic", topic)
                .header("apns-push-type", "alert")
                .header("apns-priority", if message.urgent { "10" } else { "5" })
                .header("apns-expiration", expiration(message.ttl, unix_now()))
                .header("apns-id", apns_id(&message.id))
                .header("content-type", "application/json");
            let request = match &message.collapse_key {
                Some(key) => request.header("apns-collapse-id", collapse_id(key)),
                None => request,
            };
            let request = match request.body(payload.clone()).build() {
                Ok(request) => request,
                Err(e) => {
                    // A header value that is not visible ASCII (the topic).
                    return SendOutcome::Rejected {
                        reason: format!("building the APNs request: {}", e.without_url()),
                    };
                }
            };
            let answer = match self.http.call(request).await {
                Ok(answer) => answer,
                Err(detail) => {
                    tracing::warn!(channel = "apns", notification = %message.id, %detail, "APNs send failed");
                    return SendOutcome::Retry { after: None };
                }
            };
            match classify(&answer) {
                Verdict::ExpiredProviderToken if attempt == 0 => {
                    tracing::info!(channel = "apns", notification = %message.id, "APNs says the provider token expired: signing a new one");
                    self.tokens.expire(&jwt);
                }
                Verdict::ExpiredProviderToken => {
                    tracing::error!(channel = "apns", notification = %message.id, "APNs refused a fresh provider token as expired: check the clock");
                    return SendOutcome::Retry { after: None };
                }
                Verdict::Outcome(outcome) => {
                    log_answer("apns", None, message, &answer, &outcome);
                    return outcome;
                }
            }
        }
        SendOutcome::Retry { after: None }
    }
}

#[async_trait::async_trait]
impl Channel for ApnsChannel {
    async fn send(&self, target: &Target, message: &PushMessage) -> SendOutcome {
        match target {
            Target::Apns {
                token,
                topic,
                sandbox,
            } => self.send_to(token, topic, *sandbox, message).await,
            other => wrong_target("apns", other),
        }
    }
}

/// `{base}/3/device/{token}`, the token one percent-encoded segment.
fn device_url(base: &Url, token: &str) -> Url {
    let mut url = base.clone();
    url.set_query(None);
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(["3", "device", token]);
    }
    url
}

/// `apns-expiration`: when APNs stops trying (unix time); `0` (try once, keep nothing) for a
/// zero TTL.
pub(super) fn expiration(ttl: Duration, now: i64) -> String {
    if ttl.is_zero() {
        return "0".to_owned();
    }
    let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    now.saturating_add(secs).to_string()
}

/// `apns-collapse-id`: the key itself when it fits in 64 bytes, else its SHA-256 in hex (64
/// characters), so that a long key still collapses with itself.
pub(super) fn collapse_id(key: &str) -> String {
    if key.len() <= MAX_COLLAPSE_ID_BYTES {
        return key.to_owned();
    }
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// `apns-id`: the message id when it is a UUID (lower-cased), else a UUID (version 8, RFC
/// 9562) made of the first 16 bytes of SHA-256 of the id, so the same notification always
/// carries the same `apns-id`.
pub(super) fn apns_id(id: &str) -> String {
    if is_uuid(id) {
        return id.to_ascii_lowercase();
    }
    let digest = Sha256::digest(format!("switchyard apns-id {id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The JSON payload: `aps` and the app's keys.
fn payload(message: &PushMessage) -> Result<Vec<u8>, String> {
    let mut root = Map::new();
    for (key, value) in super::app_data(message) {
        if key == "aps" {
            return Err("data key \"aps\" is reserved by APNs".to_owned());
        }
        root.insert(key, Value::String(value));
    }
    root.insert(
        "aps".to_owned(),
        json!({"alert": {"title": message.title, "body": message.body}, "sound": "default"}),
    );
    let bytes = serde_json::to_vec(&Value::Object(root))
        .map_err(|e| format!("encoding the payload: {e}"))?;
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(format!(
            "the payload is {} bytes; APNs takes at most {MAX_PAYLOAD_BYTES}",
            bytes.len()
        ));
    }
    Ok(bytes)
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Outcome(SendOutcome),
    /// 403 `ExpiredProviderToken`: sign a new token.
    ExpiredProviderToken,
}

#[derive(Deserialize)]
struct ErrorBody {
    reason: String,
}

fn classify(answer: &Answer) -> Verdict {
    let status = answer.status;
    if status.is_success() {
        return Verdict::Outcome(SendOutcome::Delivered);
    }
    let reason = serde_json::from_slice::<ErrorBody>(&answer.body)
        .ok()
        .map(|body| body.reason);
    let rejected = || {
        SendOutcome::rejected(format!(
            "{} {}",
            status.as_u16(),
            reason.as_deref().unwrap_or("(no reason)")
        ))
    };
    let retry = || SendOutcome::Retry {
        after: retry_after(&answer.headers),
    };
    let outcome = match (status.as_u16(), reason.as_deref()) {
        (410, _) => SendOutcome::Gone,
        (400, Some("BadDeviceToken" | "DeviceTokenNotForTopic")) => SendOutcome::Gone,
        (403, Some("ExpiredProviderToken")) => return Verdict::ExpiredProviderToken,
        (
            403,
            Some(
                "InvalidProviderToken"
                | "MissingProviderToken"
                | "BadCertificate"
                | "BadCertificateEnvironment"
                | "UnrelatedKeyIdInToken"
                | "BadEnvironmentKeyInToken",
            ),
        ) => {
            tracing::error!(
                channel = "apns",
                reason = reason.as_deref().unwrap_or_default(),
                "APNs refused our credentials: check push.apns.team_id, key_id and key_file"
            );
            retry()
        }
        (429, _) => retry(),
        (500..=599, _) => retry(),
        (400..=499, _) => rejected(),
        _ => retry(),
    };
    Verdict::Outcome(outcome)
}

/// The provider token, signed once and reused for [`TOKEN_REFRESH`].
pub(super) struct ProviderTokens {
    team_id: String,
    key_id: String,
    /// The `.p8` key; never logged.
    key: EncodingKey,
    /// The token in use and when it was signed. A plain mutex: signing takes microseconds and
    /// nothing awaits while holding it.
    current: Mutex<Option<(Arc<str>, Instant)>>,
}

#[derive(Serialize)]
struct ProviderClaims<'a> {
    iss: &'a str,
    iat: i64,
}

impl ProviderTokens {
    pub(super) fn new(team_id: &str, key_id: &str, key: EncodingKey) -> Self {
        Self {
            team_id: team_id.to_owned(),
            key_id: key_id.to_owned(),
            key,
            current: Mutex::new(None),
        }
    }

    /// The token to send: the current one, or a new one when it is [`TOKEN_REFRESH`] old.
    pub(super) fn current(&self) -> jsonwebtoken::errors::Result<Arc<str>> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((jwt, signed)) = current.as_ref()
            && signed.elapsed() < TOKEN_REFRESH
        {
            return Ok(Arc::clone(jwt));
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let claims = ProviderClaims {
            iss: &self.team_id,
            iat: unix_now(),
        };
        let jwt: Arc<str> = Arc::from(jsonwebtoken::encode(&header, &claims, &self.key)?);
        *current = Some((Arc::clone(&jwt), Instant::now()));
        Ok(jwt)
    }

    /// Drops `stale` (refused as expired), unless it was replaced already.
    pub(super) fn expire(&self, stale: &str) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|(jwt, _)| &**jwt == stale) {
            *current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
    use reqwest::StatusCode;
    use reqwest::header::HeaderMap;

    use super::*;

    fn message() -> PushMessage {
        PushMessage {
            id: "n-1".into(),
            title: "Shipped".into(),
            body: "On its way".into(),
            data: BTreeMap::from([("orderId".into(), "ord-1".into())]),
            deep_link: None,
            collapse_key: None,
            urgent: true,
            ttl: Duration::from_secs(60),
        }
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn key() -> (EncodingKey, jsonwebtoken::DecodingKey) {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        (
            EncodingKey::from_ec_der(pkcs8.as_ref()),
            jsonwebtoken::DecodingKey::from_ec_der(pair.public_key().as_ref()),
        )
    }

    #[test]
    fn apns_ids_are_uuids_derived_from_the_message_id() {
        let id = apns_id("notif-42");
        assert!(is_uuid(&id), "{id}");
        assert_eq!(id, apns_id("notif-42"), "deterministic");
        assert_ne!(id, apns_id("notif-43"));
        assert_eq!(&id[14..15], "8", "version 8");
        assert!(
            matches!(&id[19..20], "8" | "9" | "a" | "b"),
            "RFC 9562 variant: {id}"
        );
        assert_eq!(
            apns_id("123E4567-E89B-12D3-A456-426614174000"),
            "123e4567-e89b-12d3-a456-426614174000",
            "a UUID stays itself"
        );
    }

    #[test]
    fn collapse_ids_fit_in_64_bytes() {
        assert_eq!(collapse_id("order-1"), "order-1");
        let long = "k".repeat(65);
        let id = collapse_id(&long);
        assert_eq!(id.len(), 64);
        assert_eq!(id, collapse_id(&long));
        assert_eq!(collapse_id(&"k".repeat(64)), "k".repeat(64));
    }

    #[test]
    fn expiration_is_a_unix_time_or_zero() {
        assert_eq!(expiration(Duration::from_secs(60), 1_000), "1060");
        assert_eq!(expiration(Duration::ZERO, 1_000), "0");
    }

    #[test]
    fn the_payload_has_aps_and_the_app_keys() {
        let bytes = payload(&message()).unwrap();
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            value,
            json!({"aps": {"alert": {"title": "Shipped", "body": "On its way"}, "sound": "default"},
                   "orderId": "ord-1", "notificationId": "n-1"})
        );
        let mut reserved = message();
        reserved.data.insert("aps".into(), "x".into());
        assert!(payload(&reserved).is_err());
        let mut large = message();
        large.body = "x".repeat(5000);
        assert!(payload(&large).unwrap_err().contains("4096"));
    }

    #[test]
    fn outcomes_follow_status_and_reason() {
        let outcome = |status, body| classify(&answer(status, body));
        assert_eq!(outcome(200, ""), Verdict::Outcome(SendOutcome::Delivered));
        assert_eq!(
            outcome(410, r#"{"reason":"Unregistered","timestamp":1}"#),
            Verdict::Outcome(SendOutcome::Gone)
        );
        assert_eq!(outcome(410, "garbage"), Verdict::Outcome(SendOutcome::Gone));
        assert_eq!(
            outcome(400, r#"{"reason":"BadDeviceToken"}"#),
            Verdict::Outcome(SendOutcome::Gone)
        );
        assert_eq!(
            outcome(400, r#"{"reason":"DeviceTokenNotForTopic"}"#),
            Verdict::Outcome(SendOutcome::Gone)
        );
        assert!(matches!(
            outcome(400, r#"{"reason":"BadCollapseId"}"#),
            Verdict::Outcome(SendOutcome::Rejected { .. })
        ));
        assert!(matches!(
            outcome(400, "not json"),
            Verdict::Outcome(SendOutcome::Rejected { .. })
        ));
        assert!(matches!(
            outcome(413, r#"{"reason":"PayloadTooLarge"}"#),
            Verdict::Outcome(SendOutcome::Rejected { .. })
        ));
        assert_eq!(
            outcome(403, r#"{"reason":"ExpiredProviderToken"}"#),
            Verdict::ExpiredProviderToken
        );
        assert_eq!(
            outcome(403, r#"{"reason":"InvalidProviderToken"}"#),
            Verdict::Outcome(SendOutcome::Retry { after: None })
        );
        assert_eq!(
            outcome(429, r#"{"reason":"TooManyProviderTokenUpdates"}"#),
            Verdict::Outcome(SendOutcome::Retry { after: None })
        );
        assert_eq!(
            outcome(503, ""),
            Verdict::Outcome(SendOutcome::Retry { after: None })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_provider_token_is_reused_for_40_minutes() {
        let (encoding, decoding) = key();
        let tokens = ProviderTokens::new("TEAM123456", "KEY1234567", encoding);
        let first = tokens.current().unwrap();
        tokio::time::advance(Duration::from_secs(39 * 60)).await;
        assert_eq!(tokens.current().unwrap(), first);
        tokio::time::advance(Duration::from_secs(61)).await;
        let second = tokens.current().unwrap();
        assert_ne!(second, first);
        tokens.expire(&first);
        assert_eq!(
            tokens.current().unwrap(),
            second,
            "a stale token does not drop a newer one"
        );
        tokens.expire(&second);
        assert_ne!(tokens.current().unwrap(), second);

        let header = jsonwebtoken::decode_header(&*first).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some("KEY1234567"));
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["iss"]);
        validation.set_issuer(&["TEAM123456"]);
        let claims: Value = jsonwebtoken::decode(&*first, &decoding, &validation)
            .unwrap()
            .claims;
        assert_eq!(claims.as_object().unwrap().len(), 2, "{claims}");
        assert!((claims["iat"].as_i64().unwrap() - unix_now()).abs() < 5);
    }

    #[test]
    fn the_device_token_is_one_path_segment() {
        let base = Url::parse("https://api.push.apple.com").unwrap();
        assert_eq!(
            device_url(&base, "abc123").as_str(),
            "https://api.push.apple.com/3/device/abc123"
        );
        assert_eq!(
            device_url(&base, "a/b?c").as_str(),
            "https://api.push.apple.com/3/device/a%2Fb%3Fc"
        );
    }
}
