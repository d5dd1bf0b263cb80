//! FCM HTTP v1: `POST {base_url}/v1/projects/{project_id}/messages:send` with an OAuth2 access
//! token of the service account.
//!
//! The token comes from the service account's `token_uri` for a JWT grant (RFC 7523): RS256
//! with the account's key, `kid` its `private_key_id`, `iss` its `client_email`, `scope`
//! `firebase.messaging`, `aud` the token URI, an hour between `iat` and `exp`. It is cached
//! until shortly before it expires ([`AccessTokens`]: one exchange when sends race, a short
//! pause after a failed one). A 401 on a send gets a fresh token and one more try.
//!
//! Outcomes are decided on FCM's own error code (`error.details[]` of type
//! `google.firebase.fcm.v1.FcmError`), not on the HTTP status:
//! - `UNREGISTERED` (404), `SENDER_ID_MISMATCH` (403): the token is dead or another
//!   project's: Gone;
//! - `INVALID_ARGUMENT` (400): Rejected; `THIRD_PARTY_AUTH_ERROR` (401, Firebase's APNs or
//!   Web Push credentials are wrong: no new access token helps): Rejected;
//! - `QUOTA_EXCEEDED` (429), `UNAVAILABLE` (503), `INTERNAL` (500): Retry, with
//!   `Retry-After`.
//!
//! Without an FCM code the status decides: 401 a new token (once; a fresh token refused too is
//! Retry: our credentials, not the message), 429 and 5xx Retry, another 4xx Rejected (a 404
//! without `UNREGISTERED` is a wrong project id or base URL, never a dead token), anything else
//! Retry. A 2xx is Delivered even when its body does not parse.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;
use url::Url;

use super::call::{Answer, ProviderHttp, excerpt, log_answer, retry_after};
use super::{Channel, PushMessage, SendOutcome, Target, app_data, unix_now, wrong_target};
use crate::config::FcmConfig;

/// The scope FCM sends need.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The JWT bearer grant (RFC 7523).
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Lifetime of a grant: Google takes at most an hour.
const GRANT_SECS: i64 = 3600;
/// The error detail type whose `errorCode` decides.
const FCM_ERROR_TYPE: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";
/// The longest TTL FCM keeps a message (4 weeks).
const MAX_TTL: Duration = Duration::from_secs(28 * 24 * 3600);
/// Data keys FCM reserves.
const RESERVED_KEYS: [&str; 3] = ["from", "notification", "message_type"];
/// How long sends wait before asking the token endpoint again after it failed (unless it said
/// `Retry-After`).
const TOKEN_FAILURE_PAUSE: Duration = Duration::from_secs(2);
/// Refresh a token this long before it expires (or at half its life, if that is sooner).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// The fields of the service-account JSON this channel reads.
#[derive(Deserialize)]
struct ServiceAccountFile {
    project_id: String,
    client_email: String,
    private_key: String,
    private_key_id: String,
    token_uri: Url,
}

/// The FCM channel.
pub(super) struct FcmChannel {
    http: ProviderHttp,
    project_id: String,
    client_email: String,
    private_key_id: String,
    token_uri: Url,
    /// The service account's RSA key; never logged.
    key: EncodingKey,
    /// `{base_url}/v1/projects/{project_id}/messages:send`.
    send_url: Url,
    tokens: AccessTokens,
}

impl FcmChannel {
    pub(super) fn new(config: &FcmConfig) -> anyhow::Result<Self> {
        let path = &config.service_account_file;
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("push.fcm.service_account_file: reading {}", path.display())
        })?;
        // The error of serde names the field, never the key's value.
        let account: ServiceAccountFile = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "push.fcm.service_account_file {} is not a service-account JSON key: {e}",
                path.display()
            )
        })?;
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes()).map_err(|_| {
            anyhow::anyhow!(
                "push.fcm.service_account_file {}: private_key is not an RSA private key in PEM",
                path.display()
            )
        })?;
        if !matches!(account.token_uri.scheme(), "http" | "https") {
            anyhow::bail!("push.fcm.service_account_file: token_uri must be an http(s) URL");
        }
        let send_url = send_url(&config.base_url, &account.project_id)?;
        let channel = Self {
            http: ProviderHttp::new("fcm", &config.policy, |builder| builder)?,
            project_id: account.project_id,
            client_email: account.client_email,
            private_key_id: account.private_key_id,
            token_uri: account.token_uri,
            key,
            send_url,
            tokens: AccessTokens::default(),
        };
        // Sign one grant now: a key that cannot sign fails at start, not at the first send.
        channel
            .grant(unix_now())
            .map_err(|e| anyhow::anyhow!("push.fcm: the service account's key cannot sign: {e}"))?;
        Ok(channel)
    }

    /// The signed JWT grant, issued at `now`.
    fn grant(&self, now: i64) -> jsonwebtoken::errors::Result<String> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.private_key_id.clone());
        let claims = GrantClaims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: self.token_uri.as_str(),
            iat: now,
            exp: now + GRANT_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
    }

    /// Exchanges a grant for an access token at the token URI.
    async fn fetch_token(&self) -> Result<(String, Duration), TokenFailure> {
        let grant = self.grant(unix_now()).map_err(|e| TokenFailure {
            detail: format!("signing the grant: {e}"),
            retry_after: None,
        })?;
        let request = self
            .http
            .client()
            .post(self.token_uri.clone())
            .form(&[("grant_type", GRANT_TYPE), ("assertion", grant.as_str())])
            .build()
            .map_err(|e| TokenFailure {
                detail: format!("building the token request: {}", e.without_url()),
                retry_after: None,
            })?;
        let answer = self
            .http
            .call_unbudgeted(request)
            .await
            .map_err(|detail| TokenFailure {
                detail: format!("the token endpoint: {detail}"),
                retry_after: None,
            })?;
        token_answer(&answer)
    }

    fn body(&self, token: &str, message: &PushMessage) -> Result<Value, String> {
        message_body(token, message, unix_now())
    }

    async fn send_to(&self, token: &str, message: &PushMessage) -> SendOutcome {
        let body = match self.body(token, message) {
            Ok(body) => body,
            Err(reason) => {
                tracing::warn!(channel = "fcm", notification = %message.id, %reason, "push rejected before sending");
                return SendOutcome::Rejected { reason };
            }
        };
        for attempt in 0..2 {
            let access = match self.tokens.get(|| self.fetch_token()).await {
                Ok(access) => access,
                Err(failure) => {
                    tracing::error!(
                        channel = "fcm",
                        notification = %message.id,
                        detail = %failure.detail,
                        "no FCM access token: check push.fcm.service_account_file"
                    );
                    return SendOutcome::Retry {
                        after: failure.retry_after,
                    };
                }
            };
            let request = match self
                .http
                .client()
                .post(self.send_url.clone())
                .bearer_auth(&*access)
                .json(&body)
                .build()
            {
                Ok(request) => request,
                Err(e) => {
                    return SendOutcome::Rejected {
                        reason: format!("building the FCM request: {}", e.without_url()),
                    };
                }
            };
            let answer = match self.http.call(request).await {
                Ok(answer) => answer,
                Err(detail) => {
                    tracing::warn!(channel = "fcm", notification = %message.id, %detail, "FCM send failed");
                    return SendOutcome::Retry { after: None };
                }
            };
            match classify(&answer) {
                Verdict::Outcome(outcome) => {
                    log_answer("fcm", None, message, &answer, &outcome);
                    return outcome;
                }
                Verdict::Unauthenticated if attempt == 0 => {
                    tracing::info!(channel = "fcm", notification = %message.id, "FCM refused the access token: getting a new one");
                    self.tokens.invalidate(&access).await;
                }
                Verdict::Unauthenticated => {
                    tracing::error!(
                        channel = "fcm",
                        notification = %message.id,
                        project = %self.project_id,
                        "FCM refused a fresh access token: check the service account's permissions"
                    );
                    return SendOutcome::Retry { after: None };
                }
            }
        }
        SendOutcome::Retry { after: None }
    }
}

#[async_trait::async_trait]
impl Channel for FcmChannel {
    async fn send(&self, target: &Target, message: &PushMessage) -> SendOutcome {
        match target {
            Target::Fcm { token } => self.send_to(token, message).await,
            other => wrong_target("fcm", other),
        }
    }
}

fn send_url(base: &Url, project_id: &str) -> anyhow::Result<Url> {
    if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
        anyhow::bail!("push.fcm.base_url must be an http(s) URL, got {base}");
    }
    let mut url = base.clone();
    url.set_query(None);
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("push.fcm.base_url cannot carry a path"))?
        .pop_if_empty()
        .extend(["v1", "projects", project_id, "messages:send"]);
    Ok(url)
}

#[derive(Serialize)]
struct GrantClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

/// The send request's body.
fn message_body(token: &str, message: &PushMessage, now: i64) -> Result<Value, String> {
    if let Some(key) = message.data.keys().find(|key| {
        RESERVED_KEYS.contains(&key.as_str())
            || key.starts_with("google.")
            || key.starts_with("gcm.")
    }) {
        return Err(format!("data key {key:?} is reserved by FCM"));
    }
    let ttl = message.ttl.min(MAX_TTL).as_secs();
    let mut android = json!({
        "priority": if message.urgent { "HIGH" } else { "NORMAL" },
        "ttl": format!("{ttl}s"),
    });
    let mut apns_headers = json!({
        "apns-priority": if message.urgent { "10" } else { "5" },
        "apns-expiration": super::apns::expiration(message.ttl, now),
    });
    let mut webpush_headers = json!({
        "Urgency": if message.urgent { "high" } else { "normal" },
        "TTL": ttl.to_string(),
    });
    if let Some(key) = &message.collapse_key {
        android["collapse_key"] = json!(key);
        apns_headers["apns-collapse-id"] = json!(super::apns::collapse_id(key));
        webpush_headers["Topic"] = json!(super::webpush::topic(key));
    }
    Ok(json!({
        "message": {
            "token": token,
            "notification": {"title": message.title, "body": message.body},
            "data": app_data(message),
            "android": android,
            "apns": {"headers": apns_headers},
            "webpush": {"headers": webpush_headers},
        }
    }))
}

/// What to do with an answer to a send.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Outcome(SendOutcome),
    /// 401 without an FCM code: the access token is refused.
    Unauthenticated,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: GoogleError,
}

#[derive(Deserialize)]
struct GoogleError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "@type", default)]
    kind: String,
    #[serde(rename = "errorCode")]
    error_code: Option<String>,
}

fn classify(answer: &Answer) -> Verdict {
    let status = answer.status;
    if status.is_success() {
        return Verdict::Outcome(SendOutcome::Delivered);
    }
    let error = serde_json::from_slice::<ErrorBody>(&answer.body)
        .ok()
        .map(|b| b.error);
    let code = error.as_ref().and_then(|error| {
        error
            .details
            .iter()
            .find(|detail| detail.kind == FCM_ERROR_TYPE)
            .and_then(|detail| detail.error_code.clone())
    });
    let reason = || match &error {
        Some(error) => format!(
            "{} {}: {}",
            status.as_u16(),
            code.as_deref().unwrap_or(error.status.as_str()),
            error.message
        ),
        None => format!("{}: {}", status.as_u16(), excerpt(&answer.body)),
    };
    let retry = || SendOutcome::Retry {
        after: retry_after(&answer.headers),
    };
    let outcome = match code.as_deref() {
        Some("UNREGISTERED" | "SENDER_ID_MISMATCH") => SendOutcome::Gone,
        Some("INVALID_ARGUMENT" | "THIRD_PARTY_AUTH_ERROR") => SendOutcome::rejected(reason()),
        Some("QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL") => retry(),
        _ if status == StatusCode::UNAUTHORIZED => return Verdict::Unauthenticated,
        _ if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() => retry(),
        _ if status.is_client_error() => SendOutcome::rejected(reason()),
        _ => retry(),
    };
    Verdict::Outcome(outcome)
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<u64>,
    token_type: Option<String>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    error_description: Option<String>,
}

/// The access token and its lifetime from the token endpoint's answer. The body of a success
/// is never quoted (it holds the token).
fn token_answer(answer: &Answer) -> Result<(String, Duration), TokenFailure> {
    if answer.status.is_success() {
        let token: TokenAnswer =
            serde_json::from_slice(&answer.body).map_err(|_| TokenFailure {
                detail: format!(
                    "the token endpoint's {} answer does not parse (body withheld)",
                    answer.status
                ),
                retry_after: None,
            })?;
        if token
            .token_type
            .as_deref()
            .is_some_and(|kind| !kind.eq_ignore_ascii_case("bearer"))
        {
            return Err(TokenFailure {
                detail: "the token endpoint handed out a token that is not a bearer token".into(),
                retry_after: None,
            });
        }
        if token.access_token.is_empty() {
            return Err(TokenFailure {
                detail: "the token endpoint handed out an empty token".into(),
                retry_after: None,
            });
        }
        return Ok((
            token.access_token,
            Duration::from_secs(token.expires_in.unwrap_or(3600)),
        ));
    }
    let why = match serde_json::from_slice::<OAuthError>(&answer.body) {
        Ok(error) => format!(
            "{} {}: {}",
            answer.status.as_u16(),
            error.error,
            error.error_description.unwrap_or_default()
        ),
        Err(_) => format!("{}: {}", answer.status.as_u16(), excerpt(&answer.body)),
    };
    Err(TokenFailure {
        detail: format!("the token endpoint refused the grant: {why}"),
        retry_after: retry_after(&answer.headers),
    })
}

/// Why there is no access token.
#[derive(Debug, Clone)]
pub(super) struct TokenFailure {
    detail: String,
    retry_after: Option<Duration>,
}

/// The cached OAuth access token: one exchange at a time (sends that race wait for it and
/// share it), reused until [`REFRESH_MARGIN`] before it expires; after a failed exchange,
/// sends get `Retry` without asking again for a moment (or the endpoint's `Retry-After`).
#[derive(Default)]
pub(super) struct AccessTokens {
    /// A tokio mutex: it is held across the exchange, which is what makes racing sends wait
    /// for one exchange instead of starting their own.
    state: tokio::sync::Mutex<TokenState>,
}

#[derive(Default)]
struct TokenState {
    current: Option<AccessToken>,
    /// No exchange before this, after a failed one.
    paused_until: Option<Instant>,
}

struct AccessToken {
    value: Arc<str>,
    refresh_at: Instant,
    expires_at: Instant,
}

impl AccessTokens {
    /// The current token, or a new one from `fetch` (which answers the token and its lifetime).
    pub(super) async fn get<F, Fut>(&self, fetch: F) -> Result<Arc<str>, TokenFailure>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(String, Duration), TokenFailure>>,
    {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        if let Some(token) = &state.current
            && now < token.refresh_at
        {
            return Ok(Arc::clone(&token.value));
        }
        if let Some(until) = state.paused_until
            && now < until
        {
            return Err(TokenFailure {
                detail: "the last token exchange failed; waiting before the next".into(),
                retry_after: Some(until - now),
            });
        }
        match fetch().await {
            Ok((value, lifetime)) => {
                let now = Instant::now();
                let margin = REFRESH_MARGIN.min(lifetime / 2);
                let value: Arc<str> = Arc::from(value);
                state.current = Some(AccessToken {
                    value: Arc::clone(&value),
                    refresh_at: now + (lifetime - margin),
                    expires_at: now + lifetime,
                });
                state.paused_until = None;
                Ok(value)
            }
            Err(failure) => {
                let pause = failure
                    .retry_after
                    .unwrap_or(TOKEN_FAILURE_PAUSE)
                    .max(TOKEN_FAILURE_PAUSE);
                state.paused_until = Some(Instant::now() + pause);
                // A token due for refresh may still be good for a few minutes: keep using it.
                match &state.current {
                    Some(token) if Instant::now() < token.expires_at => {
                        Ok(Arc::clone(&token.value))
                    }
                    _ => Err(TokenFailure {
                        retry_after: Some(pause),
                        ..failure
                    }),
                }
            }
        }
    }

    /// Forgets `stale` (a token the provider refused), unless a newer one replaced it already.
    pub(super) async fn invalidate(&self, stale: &str) {
        let mut state = self.state.lock().await;
        if state
            .current
            .as_ref()
            .is_some_and(|token| &*token.value == stale)
        {
            state.current = None;
            state.paused_until = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    use super::*;

    fn message() -> PushMessage {
        PushMessage {
            id: "n-1".into(),
            title: "Shipped".into(),
            body: "Your order is on its way".into(),
            data: BTreeMap::from([("orderId".into(), "ord-1".into())]),
            deep_link: Some("app://orders/ord-1".into()),
            collapse_key: Some("order-ord-1".into()),
            urgent: true,
            ttl: Duration::from_secs(3600),
        }
    }

    fn answer(status: u16, body: Value, retry_after: Option<&str>) -> Answer {
        let mut headers = HeaderMap::new();
        if let Some(value) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        }
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: body.to_string().into_bytes(),
        }
    }

    fn fcm_error(status: u16, code: &str) -> Value {
        json!({"error": {"code": status, "message": "m", "status": "S",
            "details": [{"@type": FCM_ERROR_TYPE, "errorCode": code}]}})
    }

    #[test]
    fn the_body_carries_every_platform_s_fields_as_strings() {
        let body = message_body("tok", &message(), 1_000).unwrap();
        assert_eq!(
            body,
            json!({"message": {
                "token": "tok",
                "notification": {"title": "Shipped", "body": "Your order is on its way"},
                "data": {"orderId": "ord-1", "notificationId": "n-1", "deepLink": "app://orders/ord-1"},
                "android": {"priority": "HIGH", "ttl": "3600s", "collapse_key": "order-ord-1"},
                "apns": {"headers": {"apns-priority": "10", "apns-expiration": "4600", "apns-collapse-id": "order-ord-1"}},
                "webpush": {"headers": {"Urgency": "high", "TTL": "3600", "Topic": "order-ord-1"}},
            }})
        );
        let calm = PushMessage {
            urgent: false,
            collapse_key: None,
            ttl: Duration::from_secs(90 * 24 * 3600),
            ..message()
        };
        let body = message_body("tok", &calm, 1_000).unwrap();
        assert_eq!(
            body["message"]["android"],
            json!({"priority": "NORMAL", "ttl": "2419200s"})
        );
        assert_eq!(body["message"]["apns"]["headers"]["apns-priority"], "5");
        assert_eq!(
            body["message"]["webpush"]["headers"],
            json!({"Urgency": "normal", "TTL": "2419200"})
        );
    }

    #[test]
    fn reserved_data_keys_are_refused_before_sending() {
        for key in ["from", "google.x", "gcm.n.e", "message_type"] {
            let mut message = message();
            message.data.insert(key.into(), "v".into());
            assert!(message_body("t", &message, 0).is_err(), "{key}");
        }
    }

    #[test]
    fn outcomes_follow_fcm_error_codes_not_statuses() {
        let gone = Verdict::Outcome(SendOutcome::Gone);
        assert_eq!(
            classify(&answer(404, fcm_error(404, "UNREGISTERED"), None)),
            gone
        );
        assert_eq!(
            classify(&answer(403, fcm_error(403, "SENDER_ID_MISMATCH"), None)),
            gone
        );
        assert!(matches!(
            classify(&answer(400, fcm_error(400, "INVALID_ARGUMENT"), None)),
            Verdict::Outcome(SendOutcome::Rejected { .. })
        ));
        assert!(matches!(
            classify(&answer(401, fcm_error(401, "THIRD_PARTY_AUTH_ERROR"), None)),
            Verdict::Outcome(SendOutcome::Rejected { .. })
        ));
        assert_eq!(
            classify(&answer(429, fcm_error(429, "QUOTA_EXCEEDED"), Some("30"))),
            Verdict::Outcome(SendOutcome::Retry {
                after: Some(Duration::from_secs(30))
            })
        );
        assert_eq!(
            classify(&answer(500, fcm_error(500, "INTERNAL"), None)),
            Verdict::Outcome(SendOutcome::Retry { after: None })
        );
        // Without an FCM code: a 404 is not a dead token, a 401 is our token.
        assert!(matches!(
            classify(&answer(
                404,
                json!({"error": {"code": 404, "status": "NOT_FOUND"}}),
                None
            )),
            Verdict::Outcome(SendOutcome::Rejected { .. })
        ));
        assert_eq!(
            classify(&answer(
                401,
                json!({"error": {"status": "UNAUTHENTICATED"}}),
                None
            )),
            Verdict::Unauthenticated
        );
        // Bodies that do not parse.
        let garbage = Answer {
            body: b"<html>".to_vec(),
            ..answer(502, json!(null), None)
        };
        assert_eq!(
            classify(&garbage),
            Verdict::Outcome(SendOutcome::Retry { after: None })
        );
        let garbage = Answer {
            body: b"{\"".to_vec(),
            ..answer(200, json!(null), None)
        };
        assert_eq!(classify(&garbage), Verdict::Outcome(SendOutcome::Delivered));
        let garbage = Answer {
            body: vec![],
            ..answer(400, json!(null), None)
        };
        assert!(matches!(
            classify(&garbage),
            Verdict::Outcome(SendOutcome::Rejected { .. })
        ));
    }

    #[test]
    fn the_send_url_names_the_project() {
        let base = Url::parse("https://fcm.googleapis.com").unwrap();
        assert_eq!(
            send_url(&base, "my-proj").unwrap().as_str(),
            "https://fcm.googleapis.com/v1/projects/my-proj/messages:send"
        );
        let prefixed = Url::parse("http://127.0.0.1:9000/fcm/").unwrap();
        assert_eq!(
            send_url(&prefixed, "p").unwrap().as_str(),
            "http://127.0.0.1:9000/fcm/v1/projects/p/messages:send"
        );
    }

    #[test]
    fn the_grant_is_an_rs256_jwt_for_the_token_uri() {
        use aws_lc_rs::encoding::AsDer as _;
        use aws_lc_rs::signature::KeyPair as _;
        use base64::Engine as _;
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = pair.as_der().unwrap();
        let body = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n");
        let channel = FcmChannel {
            http: ProviderHttp::new("fcm", &crate::config::ChannelPolicy::default(), |b| b)
                .unwrap(),
            project_id: "p".into(),
            client_email: "sa@p.iam.gserviceaccount.com".into(),
            private_key_id: "kid-1".into(),
            token_uri: Url::parse("https://oauth2.googleapis.com/token").unwrap(),
            // As the service-account file has it: PKCS#8 PEM.
            key: EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            send_url: Url::parse("https://fcm.googleapis.com/v1/projects/p/messages:send").unwrap(),
            tokens: AccessTokens::default(),
        };
        let now = unix_now();
        let jwt = channel.grant(now).unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some("kid-1"));
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.set_audience(&["https://oauth2.googleapis.com/token"]);
        validation.set_issuer(&["sa@p.iam.gserviceaccount.com"]);
        let key = jsonwebtoken::DecodingKey::from_rsa_der(pair.public_key().as_ref());
        let claims: Value = jsonwebtoken::decode(&jwt, &key, &validation)
            .unwrap()
            .claims;
        assert_eq!(claims["scope"], SCOPE);
        assert_eq!(claims["iat"], now);
        assert_eq!(claims["exp"], now + 3600);
    }

    #[test]
    fn token_answers_are_read_without_quoting_the_token() {
        let ok = answer(
            200,
            json!({"access_token": "ya29.x", "expires_in": 3599, "token_type": "Bearer"}),
            None,
        );
        assert_eq!(
            token_answer(&ok).unwrap(),
            ("ya29.x".into(), Duration::from_secs(3599))
        );
        let refused = answer(
            400,
            json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
            None,
        );
        let failure = token_answer(&refused).unwrap_err();
        assert!(
            failure.detail.contains("invalid_grant"),
            "{}",
            failure.detail
        );
        let cut = Answer {
            body: b"{\"access_token\": \"ya29.sec".to_vec(),
            ..answer(200, json!(null), None)
        };
        let failure = token_answer(&cut).unwrap_err();
        assert!(!failure.detail.contains("ya29"), "{}", failure.detail);
    }

    #[tokio::test(start_paused = true)]
    async fn racing_sends_share_one_exchange_and_the_token_is_refreshed_before_it_expires() {
        let tokens = AccessTokens::default();
        let fetches = AtomicUsize::new(0);
        let fetch = || async {
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok((format!("token-{n}"), Duration::from_secs(3600)))
        };
        let got = futures::future::join_all((0..10).map(|_| tokens.get(fetch))).await;
        assert!(got.iter().all(|t| t.as_deref().ok() == Some("token-1")));
        assert_eq!(fetches.load(Ordering::SeqCst), 1);

        tokio::time::advance(Duration::from_secs(3600 - 301)).await;
        assert_eq!(tokens.get(fetch).await.unwrap().as_ref(), "token-1");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            tokens.get(fetch).await.unwrap().as_ref(),
            "token-2",
            "refreshed 5 minutes early"
        );

        // A refused token is replaced once, however many sends saw it refused.
        tokens.invalidate("token-2").await;
        tokens.invalidate("token-2").await;
        assert_eq!(tokens.get(fetch).await.unwrap().as_ref(), "token-3");
        tokens.invalidate("token-2").await;
        assert_eq!(tokens.get(fetch).await.unwrap().as_ref(), "token-3");
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_exchange_pauses_the_next_ones() {
        let tokens = AccessTokens::default();
        let fetches = AtomicUsize::new(0);
        let failing = || async {
            fetches.fetch_add(1, Ordering::SeqCst);
            Err(TokenFailure {
                detail: "503".into(),
                retry_after: Some(Duration::from_secs(10)),
            })
        };
        let failure = tokens.get(failing).await.unwrap_err();
        assert_eq!(failure.retry_after, Some(Duration::from_secs(10)));
        let failure = tokens.get(failing).await.unwrap_err();
        assert!(failure.retry_after.unwrap() <= Duration::from_secs(10));
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            1,
            "no second exchange within Retry-After"
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        let ok = || async { Ok(("fresh".to_owned(), Duration::from_secs(3600))) };
        assert_eq!(tokens.get(ok).await.unwrap().as_ref(), "fresh");
    }
}
