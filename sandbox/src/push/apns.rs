//! APNs, as Apple serves it: `POST /3/device/{token}` over HTTP/2 with TLS, two servers (the
//! production and the development environment), token-based provider authentication.
//!
//! Checks, in APNs' order and with its reasons (`{"reason": ...}`, the `apns-id` header on
//! every answer):
//! - the provider token (`authorization: bearer <JWT>`): ES256 with the sandbox's `.p8` key,
//!   `kid` its key id, `iss` its team id, `iat` at most an hour old (403
//!   `MissingProviderToken` / `InvalidProviderToken` / `ExpiredProviderToken`). On one
//!   connection a new token less than 20 minutes after the previous one (still valid) is 429
//!   `TooManyProviderTokenUpdates`: a sender must reuse its token.
//! - the headers: `apns-topic` (400 `MissingTopic`), `apns-push-type`, `apns-priority` (10, 5
//!   or 1), `apns-expiration` (a unix time), `apns-collapse-id` (at most 64 bytes), `apns-id`
//!   (a canonical UUID) (400 `InvalidPushType`, `BadPriority`, `BadExpirationDate`,
//!   `BadCollapseId`, `BadMessageId`);
//! - the payload: at most 4096 bytes (413 `PayloadTooLarge`), a JSON object with an `aps`
//!   dictionary (400 `PayloadEmpty`, the sandbox's answer for anything else too);
//! - the device token: one the sandbox minted for this environment (400 `BadDeviceToken`) and
//!   for this topic (400 `DeviceTokenNotForTopic`), or an error token.
//!
//! Accepted: 200 with `apns-id` (and `apns-unique-id` in development), recorded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{
    ApnsReceived, ErrorToken, PushState, QUOTA_RETRY_AFTER_SECS, ReceivedPush, fingerprint,
    random_bytes, random_hex,
};

/// The sandbox's Apple Developer team id.
const TEAM_ID: &str = "SBXTEAM001";
/// The largest payload APNs takes for an alert.
const MAX_PAYLOAD_BYTES: usize = 4096;
/// A provider token older than this is expired.
const TOKEN_LIFETIME_SECS: i64 = 3600;
/// Least time between two provider tokens on one connection.
const MIN_TOKEN_UPDATE: Duration = Duration::from_secs(20 * 60);
/// Clock skew tolerated on a provider token's `iat`.
const LEEWAY_SECS: i64 = 60;
/// The push types APNs knows.
const PUSH_TYPES: [&str; 9] = [
    "alert",
    "background",
    "location",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
    "pushtotalk",
];

/// The APNs environment a device token belongs to, and the server that takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApnsEnvironment {
    /// `api.push.apple.com`: apps from the App Store or TestFlight.
    Production,
    /// `api.sandbox.push.apple.com`: apps built for development.
    Development,
}

/// What the APNs stand-in knows: its signing key, the devices it minted, the provider tokens
/// it has seen.
pub(crate) struct ApnsState {
    key_id: String,
    /// PKCS#8 DER of the signing key (the `.p8` file's contents).
    pkcs8: Vec<u8>,
    /// The signing key's public half (uncompressed point), for verifying provider tokens.
    public: DecodingKey,
    /// Device token -> (bundle id, environment). A plain mutex: looked up, never held across
    /// an `.await`.
    devices: Mutex<HashMap<String, (String, ApnsEnvironment)>>,
    /// Provider tokens seen, and those made expired.
    tokens: Mutex<TokenBook>,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
}

#[derive(Default)]
struct TokenBook {
    seen: HashSet<String>,
    expired: HashSet<String>,
}

impl ApnsState {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("generating the APNs signing key failed"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|e| anyhow::anyhow!("reading the APNs signing key: {e}"))?;
        Ok(Self {
            key_id: random_hex::<5>().to_ascii_uppercase(),
            pkcs8: pkcs8.as_ref().to_vec(),
            public: DecodingKey::from_ec_der(pair.public_key().as_ref()),
            devices: Mutex::default(),
            tokens: Mutex::default(),
            tls: None,
        })
    }

    pub(crate) fn with_tls(self, tls: Arc<rustls::ServerConfig>) -> Self {
        Self {
            tls: Some(tls),
            ..self
        }
    }

    pub(crate) fn key_id(&self) -> &str {
        &self.key_id
    }

    pub(crate) fn team_id(&self) -> &str {
        TEAM_ID
    }

    /// The `.p8` file's contents.
    pub(crate) fn key_pem(&self) -> String {
        super::pem("PRIVATE KEY", &self.pkcs8)
    }

    pub(crate) fn mint_device(&self, topic: &str, environment: ApnsEnvironment) -> String {
        let token = random_hex::<32>();
        self.devices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.clone(), (topic.to_owned(), environment));
        token
    }

    pub(crate) fn expire_seen_tokens(&self) {
        let mut book = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        let seen: Vec<String> = book.seen.iter().cloned().collect();
        book.expired.extend(seen);
    }

    /// Verifies a provider token; answers its `iat`, or the reason APNs gives.
    fn verify(&self, jwt: &str) -> Result<i64, &'static str> {
        #[derive(Deserialize)]
        struct Claims {
            iat: i64,
        }
        let header = jsonwebtoken::decode_header(jwt).map_err(|_| "InvalidProviderToken")?;
        if header.alg != Algorithm::ES256 || header.kid.as_deref() != Some(self.key_id.as_str()) {
            return Err("InvalidProviderToken");
        }
        let mut validation = Validation::new(Algorithm::ES256);
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["iss"]);
        validation.set_issuer(&[TEAM_ID]);
        let claims = jsonwebtoken::decode::<Claims>(jwt, &self.public, &validation)
            .map_err(|_| "InvalidProviderToken")?
            .claims;
        let now = chrono::Utc::now().timestamp();
        if claims.iat > now + LEEWAY_SECS {
            return Err("InvalidProviderToken");
        }
        let mut book = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        if book.expired.contains(jwt) || now - claims.iat > TOKEN_LIFETIME_SECS {
            return Err("ExpiredProviderToken");
        }
        book.seen.insert(jwt.to_owned());
        Ok(claims.iat)
    }

    fn is_expired(&self, jwt: &str, iat: i64) -> bool {
        let book = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        book.expired.contains(jwt) || chrono::Utc::now().timestamp() - iat > TOKEN_LIFETIME_SECS
    }
}

/// The provider token a connection uses: APNs limits how often it changes.
#[derive(Clone, Default)]
pub(crate) struct ConnectionTokens(Arc<Mutex<Option<ConnectionToken>>>);

struct ConnectionToken {
    jwt: String,
    iat: i64,
    since: Instant,
}

impl ConnectionTokens {
    /// Takes `jwt` as this connection's token; false if that is too soon after the last change.
    fn switch_to(&self, jwt: &str, iat: i64, apns: &ApnsState) -> bool {
        let mut current = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(token) = current.as_ref() {
            if token.jwt == jwt {
                return true;
            }
            if !apns.is_expired(&token.jwt, token.iat) && token.since.elapsed() < MIN_TOKEN_UPDATE {
                return false;
            }
        }
        *current = Some(ConnectionToken {
            jwt: jwt.to_owned(),
            iat,
            since: Instant::now(),
        });
        true
    }
}

/// The APNs routes; the listener adds the environment and each connection its tokens.
pub(crate) fn router(push: Arc<PushState>) -> Router {
    Router::new()
        .route("/3/device/{token}", post(send))
        .fallback(|| async { reason(StatusCode::NOT_FOUND, "BadPath", &uuid()) })
        .with_state(push)
}

/// An APNs error answer.
pub(crate) fn reason(status: StatusCode, reason: &str, apns_id: &str) -> Response {
    let body = if status == StatusCode::GONE {
        json!({"reason": reason, "timestamp": chrono::Utc::now().timestamp_millis()})
    } else {
        json!({"reason": reason})
    };
    let mut response = (status, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(apns_id) {
        response.headers_mut().insert("apns-id", value);
    }
    response
}

/// A random UUID (version 4), in APNs' upper-case canonical form.
fn uuid() -> String {
    let mut bytes = random_bytes::<16>();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// 8-4-4-4-12 hex digits.
fn is_canonical_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `POST /3/device/{token}`.
async fn send(
    State(push): State<Arc<PushState>>,
    Extension(environment): Extension<ApnsEnvironment>,
    Extension(connection): Extension<ConnectionTokens>,
    Path(device_token): Path<String>,
    version: Version,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let apns = &push.apns;
    let apns_id = text(&headers, "apns-id").map_or_else(uuid, str::to_owned);
    let fail = |status: StatusCode, why: &str| reason(status, why, &apns_id);

    let Some(jwt) = text(&headers, header::AUTHORIZATION.as_str()).and_then(|value| {
        value
            .strip_prefix("bearer ")
            .or(value.strip_prefix("Bearer "))
    }) else {
        return fail(StatusCode::FORBIDDEN, "MissingProviderToken");
    };
    let issued_at = match apns.verify(jwt) {
        Ok(iat) => iat,
        Err(why) => return fail(StatusCode::FORBIDDEN, why),
    };
    if !connection.switch_to(jwt, issued_at, apns) {
        return fail(StatusCode::TOO_MANY_REQUESTS, "TooManyProviderTokenUpdates");
    }

    let Some(topic) = text(&headers, "apns-topic") else {
        return fail(StatusCode::BAD_REQUEST, "MissingTopic");
    };
    if let Some(push_type) = headers.get("apns-push-type") {
        let known = push_type.to_str().is_ok_and(|t| PUSH_TYPES.contains(&t));
        if !known {
            return fail(StatusCode::BAD_REQUEST, "InvalidPushType");
        }
    }
    if let Some(priority) = headers.get("apns-priority")
        && !matches!(priority.to_str(), Ok("10" | "5" | "1"))
    {
        return fail(StatusCode::BAD_REQUEST, "BadPriority");
    }
    if let Some(expiration) = headers.get("apns-expiration")
        && expiration
            .to_str()
            .ok()
            .and_then(|e| e.parse::<u64>().ok())
            .is_none()
    {
        return fail(StatusCode::BAD_REQUEST, "BadExpirationDate");
    }
    if headers
        .get("apns-collapse-id")
        .is_some_and(|id| id.len() > 64)
    {
        return fail(StatusCode::BAD_REQUEST, "BadCollapseId");
    }
    if headers.get("apns-id").is_some() && !is_canonical_uuid(&apns_id) {
        return fail(StatusCode::BAD_REQUEST, "BadMessageId");
    }
    if body.len() > MAX_PAYLOAD_BYTES {
        return fail(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge");
    }
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(value @ Value::Object(_)) if value.get("aps").is_some_and(Value::is_object) => value,
        _ => return fail(StatusCode::BAD_REQUEST, "PayloadEmpty"),
    };

    if let Some(class) = ErrorToken::of(&device_token) {
        let mut response = match class {
            ErrorToken::Unregistered => fail(StatusCode::GONE, "Unregistered"),
            ErrorToken::Invalid => fail(StatusCode::BAD_REQUEST, "BadDeviceToken"),
            ErrorToken::Mismatch => fail(StatusCode::BAD_REQUEST, "DeviceTokenNotForTopic"),
            ErrorToken::TooLarge => fail(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge"),
            ErrorToken::Quota => fail(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests"),
            ErrorToken::Unavailable => fail(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
            ErrorToken::Internal => fail(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError"),
            ErrorToken::BadRequest => fail(StatusCode::BAD_REQUEST, "BadTopic"),
        };
        if class == ErrorToken::Quota {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(QUOTA_RETRY_AFTER_SECS),
            );
        }
        return response;
    }
    let device = apns
        .devices
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&device_token)
        .cloned();
    match device {
        Some((_, env)) if env != environment => {
            return fail(StatusCode::BAD_REQUEST, "BadDeviceToken");
        }
        Some((app, _)) if app != topic => {
            return fail(StatusCode::BAD_REQUEST, "DeviceTokenNotForTopic");
        }
        Some(_) => {}
        None => return fail(StatusCode::BAD_REQUEST, "BadDeviceToken"),
    }

    let apns_headers: BTreeMap<String, String> = headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("apns-"))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    push.record(ReceivedPush::Apns(ApnsReceived {
        environment,
        device_token,
        http_version: format!("{version:?}"),
        headers: apns_headers,
        provider_token_issued_at: issued_at,
        provider_token_fingerprint: fingerprint(jwt),
        payload,
        received_at: chrono::Utc::now(),
    }));
    let mut response = StatusCode::OK.into_response();
    if let Ok(value) = HeaderValue::from_str(&apns_id) {
        response.headers_mut().insert("apns-id", value);
    }
    if environment == ApnsEnvironment::Development
        && let Ok(value) = HeaderValue::from_str(&uuid().to_ascii_lowercase())
    {
        response.headers_mut().insert("apns-unique-id", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_canonical() {
        let id = uuid();
        assert!(is_canonical_uuid(&id), "{id}");
        assert!(is_canonical_uuid("123e4567-e89b-12d3-a456-426614174000"));
        assert!(!is_canonical_uuid("123e4567e89b12d3a456426614174000"));
        assert!(!is_canonical_uuid("123e4567-e89b-12d3-a456-42661417400g"));
    }
}
