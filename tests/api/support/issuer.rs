//! An OIDC issuer of the tests' own (a discovery document, a JWKS, P-256 keys), for what the
//! sandbox's dev issuer does not do: tokens of any lifetime and any claims (a `sub` that is
//! not the customer id, as real identity providers have), key rotation, a discovery document
//! that names another issuer, and a JWKS endpoint that can be held back to see who waits for
//! a refresh.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use axum::Json;
use axum::extract::State;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchyard::Config;
use tokio::sync::{Mutex, Notify};
use url::Url;

pub const AUDIENCE: &str = "switchyard-test";

/// One signing key: its id, its JWK, and what signs with it.
struct Key {
    kid: String,
    jwk: Value,
    signer: EncodingKey,
}

impl Key {
    fn generate(kid: &str) -> Key {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        Key {
            kid: kid.to_owned(),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
            }),
            signer: EncodingKey::from_ec_der(pkcs8.as_ref()),
        }
    }
}

/// What the issuer's routes share with the test.
#[derive(Default)]
struct Shared {
    /// The JWKS it serves.
    jwks: Mutex<Vec<Value>>,
    /// The `issuer` its discovery document names (default: its own base URL).
    discovery_issuer: Mutex<Option<String>>,
    /// While set, the JWKS answers 500 (a provider that is down).
    failing: std::sync::atomic::AtomicBool,
    /// JWKS requests served (or being served).
    jwks_fetches: AtomicUsize,
    /// While set, JWKS requests wait for `release` before they are answered.
    hold: Mutex<bool>,
    /// Wakes held JWKS requests.
    release: Notify,
    /// Tells the test a JWKS request arrived.
    arrived: Notify,
}

pub struct Issuer {
    /// `http://127.0.0.1:PORT`, exactly as the tokens' `iss` says.
    pub base: String,
    keys: Vec<Key>,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Issuer {
    /// An issuer with one key (`k1`) in its JWKS.
    pub async fn start() -> Issuer {
        let shared = Arc::new(Shared::default());
        let key = Key::generate("k1");
        shared.jwks.lock().await.push(key.jwk.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state((shared.clone(), base.clone()));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Issuer {
            base,
            keys: vec![key],
            shared,
            server,
        }
    }

    /// Makes Switchyard trust this issuer (only), with this clock-skew leeway; the JWKS is
    /// found through the discovery document.
    pub fn trust(&self, config: &mut Config, leeway_secs: u64) {
        config.auth.issuer = Some(self.base.clone());
        config.auth.audience = Some(AUDIENCE.to_owned());
        config.auth.leeway_secs = Some(leeway_secs);
    }

    /// A new signing key `kid`, published in the JWKS.
    pub async fn rotate(&mut self, kid: &str) {
        let key = Key::generate(kid);
        self.shared.jwks.lock().await.push(key.jwk.clone());
        self.keys.push(key);
    }

    /// Takes the key `kid` out of the JWKS (a key retired, or compromised); it still signs.
    pub async fn retire(&self, kid: &str) {
        self.shared
            .jwks
            .lock()
            .await
            .retain(|jwk| jwk["kid"] != kid);
    }

    /// A key `kid` that signs tokens but is not in the JWKS (a forger's).
    pub fn forge_key(&mut self, kid: &str) {
        self.keys.push(Key::generate(kid));
    }

    /// What the discovery document names as its issuer from now on.
    pub async fn discovery_names(&self, issuer: &str) {
        *self.shared.discovery_issuer.lock().await = Some(issuer.to_owned());
    }

    /// Has the JWKS answer 500 from now on (or again 200).
    pub fn fail_jwks(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }

    /// JWKS requests so far.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Holds JWKS requests until [`Issuer::release`]; answers when the next one arrived.
    pub async fn hold_jwks(&self) {
        *self.shared.hold.lock().await = true;
    }

    /// Waits until a JWKS request is being held.
    pub async fn jwks_request_arrived(&self) {
        self.shared.arrived.notified().await;
    }

    /// Answers held JWKS requests, and stops holding.
    pub async fn release(&self) {
        *self.shared.hold.lock().await = false;
        self.shared.release.notify_waiters();
    }

    /// A customer's token (`sub` is the customer id) that expires `lifetime_secs` from now
    /// (negative: in the past).
    pub fn token(&self, customer: &str, lifetime_secs: i64) -> String {
        let mut claims = customer_claims(customer);
        claims["exp"] = json!(chrono::Utc::now().timestamp() + lifetime_secs);
        self.sign(claims)
    }

    /// A token with these claims, signed with the first key, valid for an hour unless they
    /// say otherwise: `iss`, `aud`, `iat` and `exp` are added where `claims` has none.
    pub fn sign(&self, claims: Value) -> String {
        self.sign_with("k1", claims)
    }

    /// The same, signed with the key `kid`.
    pub fn sign_with(&self, kid: &str, claims: Value) -> String {
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .unwrap_or_else(|| panic!("no key {kid}"));
        let now = chrono::Utc::now().timestamp();
        let mut full = json!({"iss": self.base, "aud": AUDIENCE, "iat": now, "exp": now + 3600});
        full.as_object_mut()
            .unwrap()
            .extend(claims.as_object().expect("claims are an object").clone());
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, &full, &key.signer).unwrap()
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> Url {
        Url::parse(&format!("{}/jwks", self.base)).unwrap()
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The claims of a customer whose `sub` is their customer id.
pub fn customer_claims(customer: &str) -> Value {
    json!({"sub": customer, "name": customer, "roles": ["customer"], "customer_id": customer})
}

type IssuerState = (Arc<Shared>, String);

async fn discovery(State((shared, base)): State<IssuerState>) -> Json<Value> {
    let issuer = shared
        .discovery_issuer
        .lock()
        .await
        .clone()
        .unwrap_or_else(|| base.clone());
    Json(json!({ "issuer": issuer, "jwks_uri": format!("{base}/jwks") }))
}

async fn jwks(State((shared, _)): State<IssuerState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if shared.failing.load(Ordering::SeqCst) {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    loop {
        let released = shared.release.notified();
        if !*shared.hold.lock().await {
            break;
        }
        shared.arrived.notify_one();
        released.await;
    }
    Json(json!({ "keys": *shared.jwks.lock().await })).into_response()
}
