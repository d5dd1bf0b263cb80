//! A Web Push service (RFC 8030), as a browser vendor runs one, with the receiving browser's
//! half built in: it mints subscriptions (keeping their private keys), and decrypts what it is
//! pushed (RFC 8291, aes128gcm) as the browser would.
//!
//! - `POST /subscriptions` (optional body `{"applicationServerKey": "<VAPID public key>"}`)
//!   answers 201 with the subscription as `PushSubscription.toJSON()` has it:
//!   `{endpoint, expirationTime: null, keys: {p256dh, auth}}`. With an application server key
//!   only pushes signed with that key are accepted (403 otherwise). `DELETE
//!   /subscriptions/{id}` unsubscribes (pushes then get 410). Neither is counted or faulted.
//! - `POST /push/{id}`: `Authorization: vapid t=<JWT>, k=<public key>` (RFC 8292: ES256 with
//!   `k`, `aud` this service's origin, `exp` in the future and at most 24 hours away, `sub` a
//!   `mailto:` or `https:` URI; 401 otherwise), `TTL` (required), `Urgency`
//!   (`very-low`/`low`/`normal`/`high`), `Topic` (at most 32 base64url characters),
//!   `Content-Encoding: aes128gcm`, at most 4096 bytes (413); the body must decrypt with the
//!   subscription's keys (400 otherwise: a real service cannot tell, the browser would drop
//!   it). Accepted: 201 with `Location`, recorded with the decrypted payload. Unknown
//!   subscriptions 404, unsubscribed ones 410; the error ids of the module above.
//!
//! Errors have the shape of Mozilla's autopush: `{code, errno, error, message}`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;
use web_push_native::p256;
use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint as _;

use super::{
    ErrorToken, PushState, QUOTA_RETRY_AFTER_SECS, ReceivedPush, UNAVAILABLE_RETRY_AFTER_SECS,
    WebPushReceived, b64url, random_bytes,
};

/// The largest body a push service must accept (RFC 8030 section 7.2).
const MAX_BODY_BYTES: usize = 4096;
/// Longest a VAPID JWT may live (RFC 8292 section 2).
const MAX_VAPID_SECS: i64 = 24 * 3600;
/// Clock skew tolerated on a VAPID JWT's `exp`.
const LEEWAY_SECS: i64 = 60;
/// The urgencies of RFC 8030 section 5.3.
const URGENCIES: [&str; 4] = ["very-low", "low", "normal", "high"];

/// A push subscription, as `PushSubscription.toJSON()` gives it to a web app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebPushSubscription {
    /// Where the application server posts.
    pub endpoint: String,
    /// The subscription's keys.
    pub keys: WebPushKeys,
}

/// `PushSubscription.toJSON().keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebPushKeys {
    /// The browser's P-256 public key (uncompressed point), base64url.
    pub p256dh: String,
    /// The 16-byte authentication secret, base64url.
    pub auth: String,
}

struct Subscription {
    secret: p256::SecretKey,
    auth: [u8; 16],
    /// The VAPID public key the app subscribed with, if any.
    application_server_key: Option<Vec<u8>>,
    unsubscribed: bool,
}

/// The subscriptions of the push service.
pub(crate) struct WebPushState {
    /// `http://host:port`, the origin of every endpoint (the VAPID `aud`).
    origin: String,
    /// By id. A plain mutex: looked up, never held across an `.await`.
    subscriptions: Mutex<HashMap<String, Subscription>>,
    /// Numbers the accepted messages (their `Location`).
    accepted: AtomicU64,
}

impl WebPushState {
    pub(crate) fn new(origin: &str) -> Self {
        Self {
            origin: origin.trim_end_matches('/').to_owned(),
            subscriptions: Mutex::default(),
            accepted: AtomicU64::new(0),
        }
    }

    pub(crate) fn subscribe(
        &self,
        application_server_key: Option<&str>,
    ) -> anyhow::Result<WebPushSubscription> {
        let application_server_key = application_server_key
            .map(|key| {
                decode_point(key).ok_or_else(|| {
                    anyhow::anyhow!("applicationServerKey is not a base64url P-256 public key")
                })
            })
            .transpose()?;
        let secret = loop {
            // A random 32-byte string is a valid scalar but with negligible probability.
            if let Ok(secret) = p256::SecretKey::from_slice(&random_bytes::<32>()) {
                break secret;
            }
        };
        let p256dh = b64url(secret.public_key().to_encoded_point(false).as_bytes());
        let auth = random_bytes::<16>();
        let id = b64url(&random_bytes::<16>());
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id.clone(),
                Subscription {
                    secret,
                    auth,
                    application_server_key,
                    unsubscribed: false,
                },
            );
        Ok(WebPushSubscription {
            endpoint: format!("{}/push/{id}", self.origin),
            keys: WebPushKeys {
                p256dh,
                auth: b64url(&auth),
            },
        })
    }

    pub(crate) fn unsubscribe(&self, endpoint: &str) -> bool {
        let Some(id) = endpoint
            .strip_prefix(&self.origin)
            .and_then(|rest| rest.strip_prefix("/push/"))
        else {
            return false;
        };
        self.unsubscribe_id(id)
    }

    fn unsubscribe_id(&self, id: &str) -> bool {
        let mut subscriptions = self
            .subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match subscriptions.get_mut(id) {
            Some(subscription) => {
                subscription.unsubscribed = true;
                true
            }
            None => false,
        }
    }
}

/// A base64url (or base64, padded or not) uncompressed P-256 point.
fn decode_point(text: &str) -> Option<Vec<u8>> {
    let bytes = decode_b64(text)?;
    (bytes.len() == 65 && bytes[0] == 0x04).then_some(bytes)
}

fn decode_b64(text: &str) -> Option<Vec<u8>> {
    let normalized: String = text
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    URL_SAFE_NO_PAD.decode(normalized).ok()
}

/// The faulted route: `POST /push/{id}`.
pub(crate) fn router(push: Arc<PushState>) -> Router {
    Router::new()
        .route("/push/{id}", post(receive))
        .fallback(|| async { autopush_error(StatusCode::NOT_FOUND, 102, "no such endpoint") })
        .with_state(push)
}

/// The subscription routes, outside the fault layer.
pub(crate) fn subscription_routes(push: Arc<PushState>) -> Router {
    Router::new()
        .route("/subscriptions", post(subscribe))
        .route("/subscriptions/{id}", delete(unsubscribe))
        .with_state(push)
}

fn autopush_error(status: StatusCode, errno: u16, message: &str) -> Response {
    (
        status,
        Json(json!({
            "code": status.as_u16(),
            "errno": errno,
            "error": status.canonical_reason().unwrap_or("Error"),
            "message": message,
        })),
    )
        .into_response()
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SubscribeBody {
    application_server_key: Option<String>,
}

async fn subscribe(State(push): State<Arc<PushState>>, body: axum::body::Bytes) -> Response {
    let request: SubscribeBody = if body.is_empty() {
        SubscribeBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(error) => {
                return autopush_error(StatusCode::BAD_REQUEST, 101, &format!("bad body: {error}"));
            }
        }
    };
    match push
        .webpush
        .subscribe(request.application_server_key.as_deref())
    {
        Ok(subscription) => (
            StatusCode::CREATED,
            Json(json!({
                "endpoint": subscription.endpoint,
                "expirationTime": null,
                "keys": subscription.keys,
            })),
        )
            .into_response(),
        Err(error) => autopush_error(StatusCode::BAD_REQUEST, 101, &error.to_string()),
    }
}

async fn unsubscribe(State(push): State<Arc<PushState>>, Path(id): Path<String>) -> Response {
    if push.webpush.unsubscribe_id(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        autopush_error(StatusCode::NOT_FOUND, 102, "no such subscription")
    }
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `t` and `k` of `Authorization: vapid t=..., k=...`.
fn vapid_parts(authorization: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = authorization.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("vapid") {
        return None;
    }
    let (mut t, mut k) = (None, None);
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = Some(value.trim()),
            Some(("k", value)) => k = Some(value.trim()),
            _ => {}
        }
    }
    Some((t?, k?))
}

#[derive(Deserialize)]
struct VapidClaims {
    exp: i64,
    sub: Option<String>,
}

/// Verifies the VAPID header; answers the subject and the key, or the refusal.
fn verify_vapid(
    headers: &HeaderMap,
    origin: &str,
    application_server_key: Option<&[u8]>,
) -> Result<(String, String), Box<Response>> {
    let unauthorized = |why: &str| Box::new(autopush_error(StatusCode::UNAUTHORIZED, 109, why));
    let Some((jwt, key)) = text(headers, header::AUTHORIZATION.as_str()).and_then(vapid_parts)
    else {
        return Err(unauthorized(
            "missing or malformed Authorization: vapid t=..., k=...",
        ));
    };
    let Some(point) = decode_point(key) else {
        return Err(unauthorized("k is not a P-256 public key"));
    };
    if application_server_key.is_some_and(|expected| expected != point.as_slice()) {
        return Err(Box::new(autopush_error(
            StatusCode::FORBIDDEN,
            109,
            "the VAPID key is not the one this subscription was made with",
        )));
    }
    let header = jsonwebtoken::decode_header(jwt).map_err(|_| unauthorized("t is not a JWT"))?;
    if header.alg != Algorithm::ES256 {
        return Err(unauthorized("the VAPID JWT must be ES256"));
    }
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[origin]);
    validation.set_required_spec_claims(&["exp", "aud"]);
    validation.leeway = LEEWAY_SECS as u64;
    let claims =
        jsonwebtoken::decode::<VapidClaims>(jwt, &DecodingKey::from_ec_der(&point), &validation)
            .map_err(|e| unauthorized(&format!("the VAPID JWT does not verify: {e}")))?
            .claims;
    if claims.exp - chrono::Utc::now().timestamp() > MAX_VAPID_SECS + LEEWAY_SECS {
        return Err(unauthorized(
            "the VAPID JWT's exp is more than 24 hours away",
        ));
    }
    let subject = claims.sub.unwrap_or_default();
    if !(subject.starts_with("mailto:") || subject.starts_with("https:")) {
        return Err(unauthorized(
            "the VAPID JWT's sub must be a mailto: or https: URI",
        ));
    }
    Ok((subject, b64url(&point)))
}

/// `POST /push/{id}`.
async fn receive(
    State(push): State<Arc<PushState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let service = &push.webpush;
    if let Some(class) = ErrorToken::of(&id) {
        let with_retry_after = |mut response: Response, secs: u64| {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            response
        };
        return match class {
            ErrorToken::Unregistered => {
                autopush_error(StatusCode::GONE, 106, "subscription expired")
            }
            ErrorToken::Invalid => {
                autopush_error(StatusCode::NOT_FOUND, 102, "no such subscription")
            }
            ErrorToken::Mismatch => {
                autopush_error(StatusCode::FORBIDDEN, 109, "VAPID key mismatch")
            }
            ErrorToken::TooLarge => {
                autopush_error(StatusCode::PAYLOAD_TOO_LARGE, 104, "payload too large")
            }
            ErrorToken::Quota => with_retry_after(
                autopush_error(StatusCode::TOO_MANY_REQUESTS, 117, "too many messages"),
                QUOTA_RETRY_AFTER_SECS,
            ),
            ErrorToken::Unavailable => with_retry_after(
                autopush_error(StatusCode::SERVICE_UNAVAILABLE, 201, "service unavailable"),
                UNAVAILABLE_RETRY_AFTER_SECS,
            ),
            ErrorToken::Internal => {
                autopush_error(StatusCode::INTERNAL_SERVER_ERROR, 999, "internal error")
            }
            ErrorToken::BadRequest => autopush_error(StatusCode::BAD_REQUEST, 101, "bad request"),
        };
    }
    // Copy what the checks need out of the lock.
    let subscription = {
        let subscriptions = service
            .subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        subscriptions.get(&id).map(|s| {
            (
                s.secret.clone(),
                s.auth,
                s.application_server_key.clone(),
                s.unsubscribed,
            )
        })
    };
    let Some((secret, auth, application_server_key, unsubscribed)) = subscription else {
        return autopush_error(StatusCode::NOT_FOUND, 102, "no such subscription");
    };
    if unsubscribed {
        return autopush_error(StatusCode::GONE, 106, "the subscription was removed");
    }
    let (vapid_subject, vapid_public_key) =
        match verify_vapid(&headers, &service.origin, application_server_key.as_deref()) {
            Ok(vapid) => vapid,
            Err(refused) => return *refused,
        };
    let Some(ttl) = text(&headers, "ttl").and_then(|ttl| ttl.parse::<u64>().ok()) else {
        return autopush_error(
            StatusCode::BAD_REQUEST,
            111,
            "missing or invalid TTL header",
        );
    };
    let urgency = text(&headers, "urgency").map(str::to_owned);
    if urgency.as_deref().is_some_and(|u| !URGENCIES.contains(&u)) {
        return autopush_error(StatusCode::BAD_REQUEST, 111, "invalid Urgency header");
    }
    let topic = text(&headers, "topic").map(str::to_owned);
    let topic_ok = topic.as_deref().is_none_or(|topic| {
        !topic.is_empty()
            && topic.len() <= 32
            && topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !topic_ok {
        return autopush_error(StatusCode::BAD_REQUEST, 111, "invalid Topic header");
    }
    if text(&headers, header::CONTENT_ENCODING.as_str()) != Some("aes128gcm") {
        return autopush_error(
            StatusCode::BAD_REQUEST,
            110,
            "Content-Encoding must be aes128gcm",
        );
    }
    if body.len() > MAX_BODY_BYTES {
        return autopush_error(StatusCode::PAYLOAD_TOO_LARGE, 104, "payload too large");
    }
    let auth = web_push_native::Auth::clone_from_slice(&auth);
    let payload = match web_push_native::decrypt(body.to_vec(), &secret, &auth) {
        Ok(plaintext) => String::from_utf8_lossy(&plaintext).into_owned(),
        Err(error) => {
            return autopush_error(
                StatusCode::BAD_REQUEST,
                110,
                &format!("the payload does not decrypt with the subscription's keys: {error}"),
            );
        }
    };
    let number = service.accepted.fetch_add(1, Ordering::Relaxed) + 1;
    push.record(ReceivedPush::WebPush(WebPushReceived {
        endpoint: format!("{}/push/{id}", service.origin),
        ttl,
        urgency,
        topic,
        vapid_subject,
        vapid_public_key,
        payload,
        received_at: chrono::Utc::now(),
    }));
    let mut response = StatusCode::CREATED.into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("{}/messages/{number}", service.origin)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response.headers_mut().insert("ttl", HeaderValue::from(ttl));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vapid_header_has_t_and_k() {
        assert_eq!(
            vapid_parts("vapid t=a.b.c, k=BKEY"),
            Some(("a.b.c", "BKEY"))
        );
        assert_eq!(vapid_parts("vapid k=BKEY,t=a.b.c"), Some(("a.b.c", "BKEY")));
        assert_eq!(vapid_parts("WebPush a.b.c"), None);
        assert_eq!(vapid_parts("vapid t=a.b.c"), None);
    }

    #[test]
    fn subscriptions_decrypt_what_is_encrypted_for_them() {
        let service = WebPushState::new("http://127.0.0.1:1");
        let subscription = service.subscribe(None).unwrap();
        let public =
            p256::PublicKey::from_sec1_bytes(&decode_b64(&subscription.keys.p256dh).unwrap())
                .unwrap();
        let auth =
            web_push_native::Auth::clone_from_slice(&decode_b64(&subscription.keys.auth).unwrap());
        let body = web_push_native::encrypt(b"hello".to_vec(), &public, &auth).unwrap();
        let id = subscription.endpoint.rsplit('/').next().unwrap();
        let subscriptions = service.subscriptions.lock().unwrap();
        let secret = &subscriptions[id].secret;
        assert_eq!(
            web_push_native::decrypt(body, secret, &auth).unwrap(),
            b"hello"
        );
    }
}
