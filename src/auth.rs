//! Who is calling: validates `Authorization: Bearer <JWT>` from the company's OIDC provider.
//!
//! Tokens are checked for signature (against the provider's JWKS), issuer (compared exactly:
//! `https://login.example.com/` and `https://login.example.com` are different issuers, as
//! OIDC says), audience, expiry and not-before. The JWKS is fetched on first use, cached,
//! and fetched again when a token names a key id the cache does not know (key rotation), at
//! most once per `auth.jwks_refresh_secs` ([`JWKS_REFRESH_INTERVAL`]) so that a flood of forged key ids cannot hammer
//! the provider. A token whose key is cached never waits: only tokens that need a refresh
//! wait for it, one refresh at a time. The sandbox's dev issuer goes through this same path.
//!
//! An app sends the same token with every request for its whole lifetime, and checking its
//! signature is most of what authentication costs (an ES256 verification is about 60 µs).
//! So a token that verified is remembered ([`Verified`], by its SHA-256, at most
//! [`VERIFIED_CAPACITY`] for at most [`VERIFIED_TTL`]) with the key set that verified it: the
//! same bytes with the same keys give the same result, so a later request with it is
//! answered from memory as long as the key set is still the current one (a JWKS refresh
//! makes every token verify again) and the token has not expired (`exp` plus the leeway,
//! checked on every request as the full check would). Refused tokens are not remembered.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use resolvers::ids::CustomerId;
use resolvers::{Role, Viewer};
use serde::Deserialize;
use sha2::Digest as _;
use url::Url;

/// Least time between two JWKS fetches triggered by unknown key ids, by default.
pub(crate) const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Least time between two tries of the first JWKS fetch, while it fails.
const RETRY_WITHOUT_KEYS: Duration = Duration::from_secs(1);

/// Most verified tokens remembered.
const VERIFIED_CAPACITY: u64 = 10_000;

/// Longest a verified token is remembered (its `exp` ends it sooner).
const VERIFIED_TTL: Duration = Duration::from_secs(300);

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
pub(crate) enum AuthError {
    /// The token is malformed, expired, for someone else or signed by a stranger.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The identity provider's keys could not be read (the caller is not at fault).
    #[error("the identity provider's keys are unavailable")]
    KeysUnavailable,
}

/// A validated token: who, and until when.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The signed-in user.
    pub viewer: Viewer,
    /// When the token expires (`exp`): long-lived connections end then.
    pub expires_at: SystemTime,
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
pub(crate) struct AuthSettings {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Where the keys are; discovered from the issuer when `None`.
    pub jwks_url: Option<Url>,
    /// Clock skew tolerated.
    pub leeway_secs: u64,
    /// Least time between two JWKS fetches triggered by unknown key ids.
    pub jwks_refresh: Duration,
    /// Claim with the roles.
    pub roles_claim: String,
    /// Claim with a customer's id.
    pub customer_id_claim: String,
}

/// Validates bearer tokens.
#[derive(Clone)]
pub(crate) struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    settings: AuthSettings,
    http: reqwest::Client,
    /// The keys as last fetched (`None` until the first successful fetch). A std lock, held
    /// only to clone a key out or to swap in a new set, never across an await: every request
    /// reads it, and none of them may wait for a fetch.
    keys: RwLock<Option<Arc<JwkSet>>>,
    /// Taken only by requests whose key id is not cached, and held across the fetch, so that
    /// concurrent tokens with a new key id wait for one fetch instead of starting one each.
    /// Holds when the last fetch was tried (successful or not), to rate-limit refreshes.
    refresh: tokio::sync::Mutex<Option<Instant>>,
    /// Tokens that verified, by their SHA-256.
    verified: moka::future::Cache<[u8; 32], Verified>,
}

/// A token that verified: the session it stands for, and the key set that verified it.
#[derive(Clone)]
struct Verified {
    session: Session,
    keys: Arc<JwkSet>,
}

impl Authenticator {
    /// A validator; keys are fetched on first use.
    pub(crate) fn new(settings: AuthSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                http,
                keys: RwLock::new(None),
                refresh: tokio::sync::Mutex::new(None),
                verified: moka::future::Cache::builder()
                    .max_capacity(VERIFIED_CAPACITY)
                    .time_to_live(VERIFIED_TTL)
                    .build(),
            }),
        })
    }

    /// The session a bearer token stands for.
    pub(crate) async fn authenticate(&self, token: &str) -> Result<Session, AuthError> {
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some(known) = self.inner.verified.get(&digest).await {
            let current = self
                .keys()
                .is_some_and(|keys| Arc::ptr_eq(&keys, &known.keys));
            let leeway = Duration::from_secs(self.inner.settings.leeway_secs);
            if current && SystemTime::now() <= known.session.expires_at + leeway {
                return Ok(known.session);
            }
            self.inner.verified.invalidate(&digest).await;
        }
        let (session, keys) = self.verify(token).await?;
        let known = Verified {
            session: session.clone(),
            keys,
        };
        self.inner.verified.insert(digest, known).await;
        Ok(session)
    }

    /// Checks a token in full: its signature against the provider's keys, and its claims.
    /// Returns its session, and the key set it verified with.
    async fn verify(&self, token: &str) -> Result<(Session, Arc<JwkSet>), AuthError> {
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
        let (jwk, keys) = self.key(&kid).await?;
        // A key published for one algorithm verifies only that algorithm (RFC 7517 `alg`).
        if let Some(alg) = jwk.common.key_algorithm
            && format!("{alg:?}") != format!("{:?}", header.alg)
        {
            return Err(AuthError::InvalidToken(
                "the token's algorithm does not match its key".into(),
            ));
        }
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
        let expires_at = UNIX_EPOCH
            .checked_add(Duration::from_secs(claims.exp))
            .ok_or_else(|| AuthError::InvalidToken("the token's `exp` is out of range".into()))?;
        let session = Session {
            viewer: viewer_from(claims, s)?,
            expires_at,
        };
        Ok((session, keys))
    }

    /// Whether the provider's keys are loaded, fetching them first (rate-limited as for
    /// tokens with an unknown key id) when they are not yet.
    pub(crate) async fn keys_ready(&self) -> bool {
        if self.keys().is_none() {
            // No key has this id: the lookup only fetches the set.
            let _ = self.key("").await;
        }
        self.keys().is_some()
    }

    /// The key with this id and the set it is in, refreshing the JWKS once if it is not
    /// known.
    async fn key(&self, kid: &str) -> Result<(Jwk, Arc<JwkSet>), AuthError> {
        if let Some(jwk) = self.cached(kid) {
            return Ok(jwk);
        }
        let mut last_fetch = self.inner.refresh.lock().await;
        // The refresh we waited for may have brought the key.
        if let Some(jwk) = self.cached(kid) {
            return Ok(jwk);
        }
        let have_keys = self.keys().is_some();
        // Without keys a failed fetch is tried again soon, with keys after the refresh
        // interval; either way at most one fetch per interval, failed or not, so that a
        // provider that is down is not asked once per request.
        let interval = if have_keys {
            self.inner.settings.jwks_refresh
        } else {
            self.inner.settings.jwks_refresh.min(RETRY_WITHOUT_KEYS)
        };
        if last_fetch.is_none_or(|t| t.elapsed() >= interval) {
            *last_fetch = Some(Instant::now());
            match self.fetch_keys().await {
                Ok(keys) => {
                    *self
                        .inner
                        .keys
                        .write()
                        .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(keys));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not fetch the identity provider's JWKS");
                    if !have_keys {
                        return Err(AuthError::KeysUnavailable);
                    }
                }
            }
        }
        drop(last_fetch);
        match self.cached(kid) {
            Some(found) => Ok(found),
            None if self.keys().is_none() => Err(AuthError::KeysUnavailable),
            None => Err(AuthError::InvalidToken(format!(
                "unknown signing key {kid}"
            ))),
        }
    }

    fn keys(&self) -> Option<Arc<JwkSet>> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn cached(&self, kid: &str) -> Option<(Jwk, Arc<JwkSet>)> {
        let keys = self.keys()?;
        let jwk = keys.find(kid)?.clone();
        Some((jwk, keys))
    }

    async fn fetch_keys(&self) -> anyhow::Result<JwkSet> {
        let s = &self.inner.settings;
        let jwks_url = match &s.jwks_url {
            Some(url) => url.clone(),
            None => {
                #[derive(Deserialize)]
                struct Discovery {
                    issuer: String,
                    jwks_uri: Url,
                }
                // OIDC Discovery: the issuer without its trailing slash, then the well-known
                // path; the document must name exactly the issuer it was fetched for.
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    s.issuer.trim_end_matches('/')
                );
                let discovery = self.get_json::<Discovery>(&url).await?;
                anyhow::ensure!(
                    discovery.issuer == s.issuer,
                    "the discovery document at {url} names the issuer {:?}, not {:?}",
                    discovery.issuer,
                    s.issuer
                );
                discovery.jwks_uri
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
    if claims.sub.trim().is_empty() {
        return Err(AuthError::InvalidToken("the token's `sub` is empty".into()));
    }
    let roles: Vec<&str> = match claims.rest.get(&s.roles_claim) {
        Some(serde_json::Value::Array(items)) => items.iter().filter_map(|v| v.as_str()).collect(),
        Some(serde_json::Value::String(one)) => one.split_whitespace().collect(),
        _ => Vec::new(),
    };
    let role = if roles.contains(&"agent") {
        Role::Agent
    } else if roles.contains(&"customer") {
        let raw = match claims.rest.get(&s.customer_id_claim) {
            None => claims.sub.as_str(),
            Some(serde_json::Value::String(id)) => id.as_str(),
            Some(_) => {
                return Err(AuthError::InvalidToken(format!(
                    "`{}` is not a string",
                    s.customer_id_claim
                )));
            }
        };
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
