//! A minimal OIDC issuer of the tests' own: a JWKS endpoint on `127.0.0.1:0` and a P-256 key,
//! signing tokens with whatever claims a test wants (lifetimes the sandbox's dev issuer does
//! not hand out, a `sub` that is not the customer id, as real identity providers have).
#![allow(dead_code, unreachable_pub)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use axum::Json;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchyard::Config;
use url::Url;

const AUDIENCE: &str = "switchyard-test-issuer";
const KID: &str = "test-issuer";

/// A running issuer; its server stops when it is dropped.
pub struct Issuer {
    /// `http://127.0.0.1:PORT`: the `iss` of its tokens.
    base: String,
    key: EncodingKey,
    server: tokio::task::JoinHandle<()>,
}

impl Issuer {
    /// An issuer with a fresh key, serving its JWKS at `/jwks`.
    pub async fn start() -> Issuer {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": KID,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]});
        let app = axum::Router::new().route("/jwks", get(move || async move { Json(jwks) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Issuer {
            base,
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            server,
        }
    }

    /// Makes Switchyard trust this issuer (only), with this clock-skew leeway.
    pub fn trust(&self, config: &mut Config, leeway_secs: u64) {
        config.auth.issuer = Some(Url::parse(&self.base).unwrap());
        config.auth.jwks_url = Some(Url::parse(&format!("{}/jwks", self.base)).unwrap());
        config.auth.audience = Some(AUDIENCE.to_owned());
        config.auth.leeway_secs = Some(leeway_secs);
    }

    /// A customer's token (`sub` is the customer id) that expires `lifetime_secs` from now
    /// (negative: in the past).
    pub fn token(&self, customer: &str, lifetime_secs: i64) -> String {
        self.sign(json!({
            "sub": customer, "name": customer, "roles": ["customer"], "customer_id": customer,
            "exp": chrono::Utc::now().timestamp() + lifetime_secs,
        }))
    }

    /// A token with these claims, valid for an hour unless they say otherwise: `iss`, `aud`,
    /// `iat` and `exp` are added where `claims` has none.
    pub fn sign(&self, claims: Value) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut full = json!({"iss": self.base, "aud": AUDIENCE, "iat": now, "exp": now + 3600});
        full.as_object_mut()
            .unwrap()
            .extend(claims.as_object().expect("claims are an object").clone());
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(KID.to_owned());
        jsonwebtoken::encode(&header, &full, &self.key).unwrap()
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}
