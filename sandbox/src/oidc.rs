//! A dev OpenID issuer: signs ES256 access tokens for the demo users, no passwords.
//!
//! The key pair is generated at start (P-256), so tokens from an earlier run do not verify.
//! `GET /.well-known/openid-configuration` and `GET /jwks` are what a verifier needs;
//! `GET /users` lists the demo users and `POST /token {"user":"cust-0001"}` signs in as one.
//! Tokens last an hour; `iss` is the issuer's base URL exactly, `aud` is `oidc_audience`.

use std::sync::Arc;

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::SandboxConfig;
use super::world::SharedWorld;

/// Lifetime of a token, in seconds.
const TOKEN_LIFETIME_SECS: i64 = 3600;
/// How many customers are demo users: `cust-0001`..`cust-0005`.
const DEMO_CUSTOMERS: usize = 5;

/// A user one can sign in as.
#[derive(Debug, Clone, Serialize)]
struct DemoUser {
    id: String,
    name: String,
    /// `customer` or `agent`.
    role: &'static str,
}

struct OidcState {
    issuer: String,
    audience: String,
    /// The demo users `GET /users` lists (the first customers and the agents).
    users: Vec<DemoUser>,
    /// Every seeded customer may sign in too (load tests, benchmarks), by id.
    customers: std::collections::HashMap<String, String>,
    key: EncodingKey,
    kid: String,
    /// The public key's affine coordinates, base64url without padding.
    x: String,
    y: String,
}

/// The issuer's routes. Generates the signing key; fails only if key generation does.
pub(crate) fn router(
    world: &SharedWorld,
    config: &SandboxConfig,
    issuer: &str,
) -> anyhow::Result<Router> {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("generating the sandbox OIDC signing key failed"))?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .map_err(|cause| anyhow::anyhow!("reading the sandbox OIDC signing key: {cause}"))?;
    // Uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
    let point = pair.public_key().as_ref();
    anyhow::ensure!(
        point.len() == 65 && point[0] == 0x04,
        "unexpected P-256 public key encoding"
    );
    let (x, y) = point[1..].split_at(32);
    let fingerprint = digest::digest(&digest::SHA256, &point[1..]);
    let kid: String = fingerprint
        .as_ref()
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect();

    let customers = world
        .read()
        .customers
        .values()
        .map(|c| (c.id.clone(), format!("{} {}", c.first_name, c.last_name)))
        .collect();
    let mut users: Vec<DemoUser> = world
        .read()
        .customers
        .values()
        .take(DEMO_CUSTOMERS)
        .map(|customer| DemoUser {
            id: customer.id.clone(),
            name: format!("{} {}", customer.first_name, customer.last_name),
            role: "customer",
        })
        .collect();
    users.extend(
        [("agent-01", "Grace Hopper"), ("agent-02", "Alan Turing")].map(|(id, name)| DemoUser {
            id: id.to_owned(),
            name: name.to_owned(),
            role: "agent",
        }),
    );

    let state = Arc::new(OidcState {
        issuer: issuer.to_owned(),
        audience: config.oidc_audience.clone(),
        users,
        customers,
        // jsonwebtoken's aws-lc-rs backend reads this DER as PKCS#8 (`EcdsaKeyPair::from_pkcs8`).
        key: EncodingKey::from_ec_der(pkcs8.as_ref()),
        kid,
        x: URL_SAFE_NO_PAD.encode(x),
        y: URL_SAFE_NO_PAD.encode(y),
    });
    Ok(Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/users", get(users_list))
        .route("/token", post(token))
        .fallback(|| async { oauth_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(state))
}

fn oauth_error(status: StatusCode, error: &str, description: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description.into()})),
    )
        .into_response()
}

async fn discovery(State(state): State<Arc<OidcState>>) -> Response {
    Json(json!({
        "issuer": state.issuer,
        "jwks_uri": format!("{}/jwks", state.issuer),
        "token_endpoint": format!("{}/token", state.issuer),
        "id_token_signing_alg_values_supported": ["ES256"],
        "subject_types_supported": ["public"],
        "response_types_supported": ["token"],
        "claims_supported": ["iss", "aud", "sub", "iat", "exp", "name", "roles", "customer_id"],
    }))
    .into_response()
}

async fn jwks(State(state): State<Arc<OidcState>>) -> Response {
    Json(json!({"keys": [{
        "kty": "EC",
        "crv": "P-256",
        "x": state.x,
        "y": state.y,
        "kid": state.kid,
        "alg": "ES256",
        "use": "sig",
    }]}))
    .into_response()
}

async fn users_list(State(state): State<Arc<OidcState>>) -> Response {
    Json(&state.users).into_response()
}

#[derive(Deserialize)]
struct TokenRequest {
    user: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    iat: i64,
    exp: i64,
    name: &'a str,
    roles: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    customer_id: Option<&'a str>,
}

/// `POST /token {"user":"cust-0001"}`: an hour-long ES256 token for a demo user or any
/// seeded customer.
async fn token(State(state): State<Arc<OidcState>>, body: Bytes) -> Response {
    let request: TokenRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(cause) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("send {{\"user\": \"<demo user id>\"}}: {cause}"),
            );
        }
    };
    let seeded = state.customers.get(&request.user).map(|name| DemoUser {
        id: request.user.clone(),
        name: name.clone(),
        role: "customer",
    });
    let Some(user) = state
        .users
        .iter()
        .find(|user| user.id == request.user)
        .cloned()
        .or(seeded)
    else {
        return oauth_error(
            StatusCode::NOT_FOUND,
            "unknown_user",
            format!(
                "{:?} is neither a seeded customer nor a demo agent; the issuer's GET /users lists the demo users",
                request.user
            ),
        );
    };
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        iss: &state.issuer,
        aud: &state.audience,
        sub: &user.id,
        iat: now,
        exp: now + TOKEN_LIFETIME_SECS,
        name: &user.name,
        roles: [user.role],
        customer_id: (user.role == "customer").then_some(user.id.as_str()),
    };
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(state.kid.clone());
    match jsonwebtoken::encode(&header, &claims, &state.key) {
        Ok(access_token) => Json(json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECS,
        }))
        .into_response(),
        Err(cause) => {
            tracing::error!(%cause, "the sandbox OIDC issuer could not sign a token");
            oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "could not sign the token",
            )
        }
    }
}
