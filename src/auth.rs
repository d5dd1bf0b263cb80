//! Who is calling: validates `Authorization: Bearer <JWT>` from the company's OIDC provider.
//!
//! Tokens are checked for signature (against the provider's JWKS), issuer, audience, expiry
//! and not-before. The JWKS is fetched on first use, cached, and fetched again when a token
//! names a key id the cache does not know (key rotation), at most once per
//! [`JWKS_REFRESH_INTERVAL`] so that a flood of forged key ids cannot hammer the provider.
//! The sandbox's dev issuer goes through this same code path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use resolvers::ids::CustomerId;
use resolvers::{Role, Viewer};
use serde::Deserialize;
use tokio::sync::Mutex;
use url::Url;

/// Least time between two JWKS fetches triggered by unknown key ids.
pub const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Algorithms accepted: asymmetric only (never `none` or a shared secret).
const ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why a token was refused. The message is safe to show the caller.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token is malformed, expired, for someone else or signed by a stranger.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The identity provider's keys could not be read (the caller is not at fault).
    #[error("the identity provider's keys are unavailable")]
    KeysUnavailable,
}

/// A validated token: who, and until when.
#[derive(Debug, Clone)]
pub struct Session {
    /// The signed-in user.
    pub viewer: Viewer,
    /// When the token expires (`exp`): long-lived connections end then.
    pub expires_at: std::time::SystemTime,
}

/// The claims Switchyard reads.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

/// Settings of the validator.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Where the keys are; discovered from the issuer when `None`.
    pub jwks_url: Option<Url>,
    /// Clock skew tolerated.
    pub leeway_secs: u64,
    /// Claim with the roles.
    pub roles_claim: String,
    /// Claim with a customer's id.
    pub customer_id_claim: String,
}

/// The keys as last fetched.
struct KeyCache {
    /// `None` until the first successful fetch.
    keys: Option<JwkSet>,
    /// When the last fetch was tried (successful or not), to rate-limit refreshes.
    last_fetch: Option<Instant>,
}

/// Validates bearer tokens.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    settings: AuthSettings,
    http: reqwest::Client,
    /// A tokio mutex: held across the JWKS fetch so concurrent requests with a new key id
    /// wait for one fetch instead of starting one each.
    cache: Mutex<KeyCache>,
}

impl Authenticator {
    /// A validator; keys are fetched on first use.
    pub fn new(settings: AuthSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                http,
                cache: Mutex::new(KeyCache {
                    keys: None,
                    last_fetch: None,
                }),
            }),
        })
    }

    /// The session a bearer token stands for.
    pub async fn authenticate(&self, token: &str) -> Result<Session, AuthError> {
        let header = decode_header(token).map_err(|e| invalid(&e))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(AuthError::InvalidToken(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| AuthError::InvalidToken("the token names no key id (kid)".into()))?;
        let jwk = self.key(&kid).await?;
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| AuthError::InvalidToken(format!("unusable key {kid}: {e}")))?;
        let s = &self.inner.settings;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&s.issuer]);
        validation.set_audience(&[&s.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = s.leeway_secs;
        let claims = decode::<Claims>(token, &key, &validation)
            .map_err(|e| invalid(&e))?
            .claims;
        let expires_at = std::time::UNIX_EPOCH + Duration::from_secs(claims.exp);
        Ok(Session {
            viewer: viewer_from(claims, s)?,
            expires_at,
        })
    }

    /// The key with this id, refreshing the JWKS once if it is not known.
    async fn key(&self, kid: &str) -> Result<Jwk, AuthError> {
        let mut cache = self.inner.cache.lock().await;
        if let Some(jwk) = cache.keys.as_ref().and_then(|k| k.find(kid)) {
            return Ok(jwk.clone());
        }
        let may_fetch = cache
            .last_fetch
            .is_none_or(|t| t.elapsed() >= JWKS_REFRESH_INTERVAL || cache.keys.is_none());
        if may_fetch {
            cache.last_fetch = Some(Instant::now());
            match self.fetch_keys().await {
                Ok(keys) => cache.keys = Some(keys),
                Err(e) => {
                    tracing::warn!(error = %e, "could not fetch the identity provider's JWKS");
                    if cache.keys.is_none() {
                        return Err(AuthError::KeysUnavailable);
                    }
                }
            }
        }
        cache
            .keys
            .as_ref()
            .and_then(|k| k.find(kid))
            .cloned()
            .ok_or_else(|| AuthError::InvalidToken(format!("unknown signing key {kid}")))
    }

    async fn fetch_keys(&self) -> anyhow::Result<JwkSet> {
        let s = &self.inner.settings;
        let jwks_url = match &s.jwks_url {
            Some(url) => url.clone(),
            None => {
                #[derive(Deserialize)]
                struct Discovery {
                    jwks_uri: Url,
                }
                let discovery = format!(
                    "{}/.well-known/openid-configuration",
                    s.issuer.trim_end_matches('/')
                );
                self.get_json::<Discovery>(&discovery).await?.jwks_uri
            }
        };
        self.get_json::<JwkSet>(jwks_url.as_str()).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> anyhow::Result<T> {
        let response = self.inner.http.get(url).send().await?.error_for_status()?;
        Ok(response.json().await?)
    }
}

/// A refusal a caller can act on, without the decoder's internals.
fn invalid(e: &jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    let reason = match e.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidSignature => "the signature does not verify".to_owned(),
        ErrorKind::InvalidIssuer => "the token is from another issuer".to_owned(),
        ErrorKind::InvalidAudience => "the token is for another audience".to_owned(),
        ErrorKind::InvalidAlgorithm => "the token's algorithm does not match its key".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
        _ => "the token is not a well-formed JWT".to_owned(),
    };
    AuthError::InvalidToken(reason)
}

fn viewer_from(claims: Claims, s: &AuthSettings) -> Result<Viewer, AuthError> {
    let roles: Vec<&str> = match claims.rest.get(&s.roles_claim) {
        Some(serde_json::Value::Array(items)) => items.iter().filter_map(|v| v.as_str()).collect(),
        Some(serde_json::Value::String(one)) => one.split_whitespace().collect(),
        _ => Vec::new(),
    };
    let role = if roles.contains(&"agent") {
        Role::Agent
    } else if roles.contains(&"customer") {
        let raw = claims
            .rest
            .get(&s.customer_id_claim)
            .and_then(|v| v.as_str())
            .unwrap_or(&claims.sub);
        let id = CustomerId::parse(raw).map_err(|_| {
            AuthError::InvalidToken(format!("`{}` is not a customer id", s.customer_id_claim))
        })?;
        Role::Customer(id)
    } else {
        return Err(AuthError::InvalidToken(format!(
            "the token grants neither the customer nor the agent role (claim `{}`)",
            s.roles_claim
        )));
    };
    Ok(Viewer {
        name: claims.name.unwrap_or_else(|| claims.sub.clone()),
        user_id: claims.sub,
        role,
    })
}
