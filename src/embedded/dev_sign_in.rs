//! The demo sign-in: `GET /dev/users` lists the demo users and `POST /dev/token`
//! (`{"user":"cust-0001"}`) answers a token from the sandbox's dev OIDC issuer. The playground
//! uses them to set the bearer header (and hides its sign-in when `/dev/users` is 404). They
//! forward to the issuer, so the tokens are validated exactly like a real provider's.
//!
//! And the demo's push devices: `POST /dev/webpush-subscription` mints a subscription of the
//! sandbox's Web Push service, as a browser's `pushManager.subscribe` would (answered as the
//! `input` of `registerDevice`), `POST /dev/apns-device` mints an APNs device token of the
//! demo iOS app (`com.example.retail`, development environment: a debug build's) the same
//! way, and `GET /dev/pushes` lists what the sandbox's providers
//! received (Web Push payloads decrypted), newest last.
//!
//! Only a Switchyard that runs a sandbox itself mounts these routes: a [`DevSignIn`] comes from
//! a running [`Sandbox`], never from configuration.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sandbox::Sandbox;
use tower_http::trace::TraceLayer;

/// The demo sign-in of a sandbox running in this process: where its dev issuer listens.
#[derive(Debug, Clone)]
pub struct DevSignIn {
    /// The issuer's base URL, without a trailing slash.
    issuer: String,
    /// The sandbox's push providers.
    push: sandbox::SandboxPush,
}

impl DevSignIn {
    /// The demo sign-in of `sandbox`, whose dev OIDC issuer signs the tokens.
    pub fn of(sandbox: &Sandbox) -> Self {
        Self {
            issuer: sandbox.urls().oidc.trim_end_matches('/').to_owned(),
            push: sandbox.push().clone(),
        }
    }

    /// `GET /dev/users` and `POST /dev/token`.
    pub(crate) fn routes(&self) -> anyhow::Result<Router> {
        let state = Arc::new(Forward {
            issuer: self.issuer.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .context("building the demo sign-in's HTTP client")?,
        });
        let pushes = self.push.clone();
        let subscriptions = self.push.clone();
        let apns = self.push.clone();
        Ok(Router::new()
            .route("/dev/users", get(users))
            .route("/dev/token", post(token))
            .with_state(state)
            .route(
                "/dev/webpush-subscription",
                post(move || webpush_subscription(subscriptions.clone())),
            )
            .route(
                "/dev/apns-device",
                post(move || async move { apns_device(&apns) }),
            )
            .route(
                "/dev/pushes",
                get(move || async move { axum::Json(pushes.received()) }),
            )
            .layer(TraceLayer::new_for_http()))
    }
}

/// What the two handlers share.
struct Forward {
    /// The issuer's base URL.
    issuer: String,
    /// For forwarding to the issuer (a client of its own: a stuck issuer cannot hold up
    /// anything else).
    http: reqwest::Client,
}

/// `GET /dev/users`.
async fn users(State(state): State<Arc<Forward>>) -> Response {
    forward(state.http.get(format!("{}/users", state.issuer))).await
}

/// `POST /dev/token`.
async fn token(State(state): State<Arc<Forward>>, body: Bytes) -> Response {
    forward(
        state
            .http
            .post(format!("{}/token", state.issuer))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body),
    )
    .await
}

/// `POST /dev/webpush-subscription`: a new subscription of the sandbox's Web Push service,
/// shaped as `registerDevice`'s input.
async fn webpush_subscription(push: sandbox::SandboxPush) -> Response {
    match push.webpush_subscribe(None) {
        Ok(subscription) => axum::Json(serde_json::json!({
            "platform": "WEB",
            "webPush": {
                "endpoint": subscription.endpoint,
                "p256dh": subscription.keys.p256dh,
                "auth": subscription.keys.auth,
            },
        }))
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "the sandbox's Web Push service could not subscribe");
            (StatusCode::INTERNAL_SERVER_ERROR, "could not subscribe").into_response()
        }
    }
}

/// The demo iOS app's bundle id.
const DEMO_IOS_APP: &str = "com.example.retail";

/// `POST /dev/apns-device`: a device token of the sandbox's APNs for the demo iOS app, shaped
/// as `registerDevice`'s input.
fn apns_device(push: &sandbox::SandboxPush) -> Response {
    let token = push.apns_device(DEMO_IOS_APP, sandbox::ApnsEnvironment::Development);
    axum::Json(serde_json::json!({
        "platform": "IOS",
        "apns": {"token": token, "bundleId": DEMO_IOS_APP, "environment": "SANDBOX"},
    }))
    .into_response()
}

async fn forward(request: reqwest::RequestBuilder) -> Response {
    match request.send().await {
        Ok(answer) => {
            let status =
                StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let body = answer.bytes().await.unwrap_or_default();
            (
                status,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "the sandbox issuer did not answer");
            (StatusCode::BAD_GATEWAY, "the sandbox issuer did not answer").into_response()
        }
    }
}
