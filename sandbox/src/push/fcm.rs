//! FCM HTTP v1, as Google serves it: the OAuth2 token endpoint and `messages:send`.
//!
//! - `POST /token` (form): `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` and
//!   `assertion=<JWT>`, RS256-signed with the service account's key (`kid` its
//!   `private_key_id`), `iss` its `client_email`, `aud` its `token_uri`, a `scope` holding
//!   `https://www.googleapis.com/auth/firebase.messaging`, and at most an hour between `iat`
//!   and `exp`. Answers `{access_token, expires_in, token_type: "Bearer"}`, or 400
//!   `{error, error_description}` as Google's OAuth server does.
//! - `POST /v1/projects/{project}/messages:send` with `Authorization: Bearer <access token>`:
//!   checks the message as FCM does (one target, string data values, no reserved data keys,
//!   known fields only, android priority and TTL formats, string headers), then the
//!   registration token (the error tokens of the module above), records it and answers
//!   `{"name": "projects/{project}/messages/{id}"}`. Errors are Google's
//!   `{"error": {code, message, status, details: [{"@type": "...FcmError", errorCode}]}}`.
//!
//! The RSA key is generated once per process (2048-bit generation is slow in a debug build)
//! and written into each sandbox's service-account file.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::{
    ErrorToken, FcmReceived, PushState, QUOTA_RETRY_AFTER_SECS, ReceivedPush,
    UNAVAILABLE_RETRY_AFTER_SECS, random_hex,
};

/// The scope a grant must ask for.
pub(crate) const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The grant type of the JWT bearer flow (RFC 7523).
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The sandbox's Firebase project.
const PROJECT_ID: &str = "switchyard-sandbox";
/// Longest a grant may live (`exp - iat`), as Google enforces.
const MAX_GRANT_SECS: i64 = 3600;
/// Clock skew tolerated on a grant's `iat` / `exp`.
const LEEWAY_SECS: u64 = 60;
/// FCM's limit on a message (4 KB of payload; the whole request here).
const MAX_MESSAGE_BYTES: usize = 4096;
/// The detail type FCM errors carry.
const FCM_ERROR_TYPE: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";

/// The process's service-account key: generated once (2048-bit RSA takes a while in a debug
/// build), shared by every sandbox in the process, each writing it to its own file.
struct ServiceAccountKey {
    /// PKCS#8 DER of the private key.
    pkcs8: Vec<u8>,
    /// The public key, for verifying grants.
    public: DecodingKey,
}

fn service_account_key() -> anyhow::Result<&'static ServiceAccountKey> {
    static KEY: OnceLock<Result<ServiceAccountKey, String>> = OnceLock::new();
    KEY.get_or_init(|| {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| "generating the FCM service-account key failed".to_owned())?;
        let pkcs8 = pair
            .as_der()
            .map_err(|_| "encoding the FCM service-account key failed".to_owned())?;
        Ok(ServiceAccountKey {
            pkcs8: pkcs8.as_ref().to_vec(),
            public: DecodingKey::from_rsa_der(pair.public_key().as_ref()),
        })
    })
    .as_ref()
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Starts generating the service-account key on a blocking thread, so that it overlaps the
/// world's seeding; [`FcmState::new`] waits for it.
pub(crate) fn prepare_key() -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(|| {
        let _ = service_account_key();
    })
}

/// What the FCM stand-in knows: its service account and the access tokens it handed out.
pub(crate) struct FcmState {
    key: &'static ServiceAccountKey,
    client_email: String,
    private_key_id: String,
    token_uri: String,
    token_ttl: Duration,
    /// Access tokens handed out and when they expire. A plain mutex: looked up and inserted,
    /// never held across an `.await`.
    tokens: Mutex<HashMap<String, Instant>>,
    /// Numbers the message names.
    sent: AtomicU64,
}

impl FcmState {
    pub(crate) fn new(base_url: &str, token_ttl_secs: u64) -> anyhow::Result<Self> {
        Ok(Self {
            key: service_account_key()?,
            client_email: format!("switchyard-push@{PROJECT_ID}.iam.gserviceaccount.com"),
            private_key_id: random_hex::<20>(),
            token_uri: format!("{base_url}/token"),
            token_ttl: Duration::from_secs(token_ttl_secs),
            tokens: Mutex::default(),
            sent: AtomicU64::new(0),
        })
    }

    pub(crate) fn project_id(&self) -> &str {
        PROJECT_ID
    }

    /// The service-account JSON, as the Firebase console downloads it.
    pub(crate) fn service_account_json(&self) -> String {
        let account = json!({
            "type": "service_account",
            "project_id": PROJECT_ID,
            "private_key_id": self.private_key_id,
            "private_key": super::pem("PRIVATE KEY", &self.key.pkcs8),
            "client_email": self.client_email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "universe_domain": "googleapis.com",
        });
        serde_json::to_string_pretty(&account).unwrap_or_default()
    }

    pub(crate) fn revoke_all(&self) {
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn token_is_valid(&self, token: &str) -> bool {
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        tokens
            .get(token)
            .is_some_and(|expires| Instant::now() < *expires)
    }
}

/// The FCM server's routes (the token endpoint and `messages:send`).
pub(crate) fn router(push: Arc<PushState>) -> Router {
    Router::new()
        .route("/token", post(token))
        .route("/v1/projects/{project}/messages:send", post(send))
        .fallback(|| async {
            google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint", None)
        })
        .with_state(push)
}

/// Google's OAuth error shape.
fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// Google's API error shape; with `fcm_code`, an `FcmError` detail.
pub(crate) fn google_error(
    status: StatusCode,
    status_name: &str,
    message: &str,
    fcm_code: Option<&str>,
) -> Response {
    let mut error = json!({
        "code": status.as_u16(),
        "message": message,
        "status": status_name,
    });
    if let Some(code) = fcm_code {
        error["details"] = json!([{"@type": FCM_ERROR_TYPE, "errorCode": code}]);
    }
    (status, Json(json!({ "error": error }))).into_response()
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    assertion: Option<String>,
}

#[derive(Deserialize)]
struct GrantClaims {
    scope: Option<String>,
    iat: i64,
    exp: i64,
}

/// `POST /token`: the JWT grant, verified against the service account's key.
async fn token(
    State(push): State<Arc<PushState>>,
    axum::Form(form): axum::Form<TokenForm>,
) -> Response {
    let fcm = &push.fcm;
    if form.grant_type.as_deref() != Some(GRANT_TYPE) {
        return oauth_error("unsupported_grant_type", "Invalid grant_type.");
    }
    let Some(assertion) = form.assertion else {
        return oauth_error("invalid_request", "Missing required parameter: assertion");
    };
    let header = match jsonwebtoken::decode_header(&assertion) {
        Ok(header) => header,
        Err(_) => return oauth_error("invalid_grant", "Invalid JWT: malformed."),
    };
    if header.alg != Algorithm::RS256 {
        return oauth_error(
            "invalid_grant",
            "Invalid JWT Signature: the algorithm must be RS256.",
        );
    }
    if header.kid.as_deref() != Some(fcm.private_key_id.as_str()) {
        return oauth_error(
            "invalid_grant",
            "Invalid JWT Signature: unknown key id (kid).",
        );
    }
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[&fcm.token_uri]);
    validation.set_issuer(&[&fcm.client_email]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
    validation.leeway = LEEWAY_SECS;
    let claims = match jsonwebtoken::decode::<GrantClaims>(&assertion, &fcm.key.public, &validation)
    {
        Ok(data) => data.claims,
        Err(error) => {
            return oauth_error("invalid_grant", &format!("Invalid JWT: {error}."));
        }
    };
    let now = chrono::Utc::now().timestamp();
    if claims.exp - claims.iat > MAX_GRANT_SECS || claims.iat > now + LEEWAY_SECS as i64 {
        return oauth_error(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
        );
    }
    let scoped = claims
        .scope
        .as_deref()
        .is_some_and(|scope| scope.split(' ').any(|s| s == SCOPE));
    if !scoped {
        return oauth_error(
            "invalid_scope",
            "The grant does not ask for the firebase.messaging scope.",
        );
    }
    let access_token = format!("ya29.sandbox-{}", random_hex::<24>());
    fcm.tokens
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(access_token.clone(), Instant::now() + fcm.token_ttl);
    Json(json!({
        "access_token": access_token,
        "expires_in": fcm.token_ttl.as_secs(),
        "token_type": "Bearer",
    }))
    .into_response()
}

/// `POST /v1/projects/{project}/messages:send`.
async fn send(
    State(push): State<Arc<PushState>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let fcm = &push.fcm;
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !bearer.is_some_and(|token| fcm.token_is_valid(token)) {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            None,
        );
    }
    if project != PROJECT_ID {
        return google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            &format!(
                "Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/{project}'."
            ),
            None,
        );
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(error) => return invalid(&format!("Invalid JSON payload received. {error}")),
    };
    let message = match check_request(&request, body.len()) {
        Ok(message) => message,
        Err(why) => return invalid(&why),
    };
    let token = message
        .get("token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(class) = ErrorToken::of(token) {
        return error_token(class);
    }
    let number = fcm.sent.fetch_add(1, Ordering::Relaxed) + 1;
    let name = format!("projects/{PROJECT_ID}/messages/0:{number:016}%sandbox");
    let validate_only = request
        .get("validate_only")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !validate_only {
        push.record(ReceivedPush::Fcm(FcmReceived {
            project_id: project,
            name: name.clone(),
            message: message.clone(),
            received_at: chrono::Utc::now(),
        }));
    }
    Json(json!({ "name": name })).into_response()
}

fn invalid(why: &str) -> Response {
    google_error(
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        why,
        Some("INVALID_ARGUMENT"),
    )
}

/// The answer of an error token.
fn error_token(class: ErrorToken) -> Response {
    let with_retry_after = |mut response: Response, secs: u64| {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        response
    };
    match class {
        ErrorToken::Unregistered => google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Requested entity was not found.",
            Some("UNREGISTERED"),
        ),
        ErrorToken::Invalid => google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
            Some("INVALID_ARGUMENT"),
        ),
        ErrorToken::Mismatch => google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "SenderId mismatch",
            Some("SENDER_ID_MISMATCH"),
        ),
        ErrorToken::TooLarge => google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Message is too big",
            Some("INVALID_ARGUMENT"),
        ),
        ErrorToken::Quota => with_retry_after(
            google_error(
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Send requests'.",
                Some("QUOTA_EXCEEDED"),
            ),
            QUOTA_RETRY_AFTER_SECS,
        ),
        ErrorToken::Unavailable => with_retry_after(
            google_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "The service is currently unavailable.",
                Some("UNAVAILABLE"),
            ),
            UNAVAILABLE_RETRY_AFTER_SECS,
        ),
        ErrorToken::Internal => google_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "Internal error encountered.",
            Some("INTERNAL"),
        ),
        ErrorToken::BadRequest => google_error(
            StatusCode::BAD_REQUEST,
            "FAILED_PRECONDITION",
            "Request contains an invalid argument.",
            None,
        ),
    }
}

/// Checks a send request's shape as FCM does; answers its `message`, or why it is invalid.
fn check_request(request: &Value, size: usize) -> Result<&Value, String> {
    let Some(object) = request.as_object() else {
        return Err("Invalid JSON payload received. The request is not an object.".into());
    };
    known_fields(object, "", &["message", "validate_only"])?;
    let message = object
        .get("message")
        .ok_or("Invalid JSON payload received. Missing 'message'.")?;
    let Some(fields) = message.as_object() else {
        return Err("Invalid value at 'message': not an object.".into());
    };
    known_fields(
        fields,
        "message",
        &[
            "name",
            "data",
            "notification",
            "android",
            "webpush",
            "apns",
            "fcm_options",
            "token",
            "topic",
            "condition",
        ],
    )?;
    let targets = ["token", "topic", "condition"]
        .iter()
        .filter(|t| fields.contains_key(**t))
        .count();
    if targets != 1 {
        return Err(
            "Exactly one of message.token, message.topic or message.condition must be set.".into(),
        );
    }
    if !fields.get("token").is_none_or(Value::is_string) {
        return Err("Invalid value at 'message.token' (TYPE_STRING).".into());
    }
    if let Some(data) = fields.get("data") {
        check_data(data, "message.data")?;
    }
    if let Some(notification) = fields.get("notification") {
        let Some(notification) = notification.as_object() else {
            return Err("Invalid value at 'message.notification'.".into());
        };
        known_fields(
            notification,
            "message.notification",
            &["title", "body", "image"],
        )?;
        strings(notification, "message.notification")?;
    }
    if let Some(android) = fields.get("android") {
        check_android(android)?;
    }
    if let Some(apns) = fields.get("apns") {
        let Some(apns) = apns.as_object() else {
            return Err("Invalid value at 'message.apns'.".into());
        };
        known_fields(
            apns,
            "message.apns",
            &["headers", "payload", "fcm_options", "live_activity_token"],
        )?;
        if let Some(headers) = apns.get("headers") {
            string_map(headers, "message.apns.headers")?;
        }
    }
    if let Some(webpush) = fields.get("webpush") {
        let Some(webpush) = webpush.as_object() else {
            return Err("Invalid value at 'message.webpush'.".into());
        };
        known_fields(
            webpush,
            "message.webpush",
            &["headers", "data", "notification", "fcm_options"],
        )?;
        if let Some(headers) = webpush.get("headers") {
            string_map(headers, "message.webpush.headers")?;
        }
        if let Some(data) = webpush.get("data") {
            check_data(data, "message.webpush.data")?;
        }
    }
    if size > MAX_MESSAGE_BYTES {
        return Err("Message is too big".into());
    }
    Ok(message)
}

fn known_fields(object: &Map<String, Value>, at: &str, known: &[&str]) -> Result<(), String> {
    match object.keys().find(|key| !known.contains(&key.as_str())) {
        Some(unknown) => Err(format!(
            "Invalid JSON payload received. Unknown name \"{unknown}\" at '{at}': Cannot find field."
        )),
        None => Ok(()),
    }
}

fn strings(object: &Map<String, Value>, at: &str) -> Result<(), String> {
    match object.iter().find(|(_, value)| !value.is_string()) {
        Some((key, _)) => Err(format!("Invalid value at '{at}.{key}' (TYPE_STRING).")),
        None => Ok(()),
    }
}

fn string_map(value: &Value, at: &str) -> Result<(), String> {
    let Some(object) = value.as_object() else {
        return Err(format!("Invalid value at '{at}': not a map."));
    };
    strings(object, at)
}

/// A `data` map: string values only, no reserved keys.
fn check_data(data: &Value, at: &str) -> Result<(), String> {
    let Some(object) = data.as_object() else {
        return Err(format!("Invalid value at '{at}': not a map."));
    };
    for (index, (key, value)) in object.iter().enumerate() {
        if !value.is_string() {
            return Err(format!(
                "Invalid value at '{at}[{index}].value' (TYPE_STRING), {value}"
            ));
        }
        let reserved = ["from", "notification", "message_type"].contains(&key.as_str())
            || key.starts_with("google.")
            || key.starts_with("gcm.");
        if reserved {
            return Err(format!("Invalid data payload key: {key} is reserved."));
        }
    }
    Ok(())
}

fn check_android(android: &Value) -> Result<(), String> {
    let Some(android) = android.as_object() else {
        return Err("Invalid value at 'message.android'.".into());
    };
    known_fields(
        android,
        "message.android",
        &[
            "collapse_key",
            "priority",
            "ttl",
            "restricted_package_name",
            "data",
            "notification",
            "fcm_options",
            "direct_boot_ok",
        ],
    )?;
    if let Some(priority) = android.get("priority")
        && !matches!(priority.as_str(), Some("NORMAL" | "HIGH"))
    {
        return Err(format!(
            "Invalid value at 'message.android.priority' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), {priority}"
        ));
    }
    if let Some(ttl) = android.get("ttl") {
        let valid = ttl.as_str().is_some_and(is_duration);
        if !valid {
            return Err(format!(
                "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), {ttl}"
            ));
        }
    }
    if let Some(collapse_key) = android.get("collapse_key")
        && !collapse_key.is_string()
    {
        return Err("Invalid value at 'message.android.collapse_key' (TYPE_STRING).".into());
    }
    if let Some(data) = android.get("data") {
        check_data(data, "message.android.data")?;
    }
    Ok(())
}

/// A protobuf JSON duration: seconds with up to nine fractional digits, then `s`.
fn is_duration(text: &str) -> bool {
    let Some(number) = text.strip_suffix('s') else {
        return false;
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.len() <= 9
        && fraction.bytes().all(|b| b.is_ascii_digit())
        && !(number.contains('.') && fraction.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_protobuf_json() {
        for good in ["0s", "3600s", "1.5s", "2.000000001s"] {
            assert!(is_duration(good), "{good}");
        }
        for bad in ["", "s", "3600", "1.s", "-1s", "1.0000000001s", "1m"] {
            assert!(!is_duration(bad), "{bad}");
        }
    }

    #[test]
    fn data_values_must_be_strings_and_keys_not_reserved() {
        assert!(check_data(&json!({"a": "1"}), "message.data").is_ok());
        assert!(check_data(&json!({"a": 1}), "message.data").is_err());
        assert!(check_data(&json!({"google.x": "1"}), "message.data").is_err());
        assert!(check_data(&json!({"from": "1"}), "message.data").is_err());
    }

    #[test]
    fn a_message_needs_exactly_one_target_and_known_fields() {
        let ok = json!({"message": {"token": "t", "notification": {"title": "a", "body": "b"}}});
        assert!(check_request(&ok, 10).is_ok());
        let none = json!({"message": {"notification": {"title": "a"}}});
        assert!(check_request(&none, 10).is_err());
        let two = json!({"message": {"token": "t", "topic": "x"}});
        assert!(check_request(&two, 10).is_err());
        let unknown = json!({"message": {"token": "t", "priority": "high"}});
        assert!(
            check_request(&unknown, 10)
                .unwrap_err()
                .contains("Unknown name \"priority\"")
        );
        let bad_priority = json!({"message": {"token": "t", "android": {"priority": "high"}}});
        assert!(check_request(&bad_priority, 10).is_err());
    }
}
