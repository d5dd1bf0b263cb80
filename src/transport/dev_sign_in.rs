//! Demo sign-in for the sandbox: `GET /dev/users` lists the demo users and `POST /dev/token`
//! (`{"user":"cust-0001"}`) answers a token from the sandbox's dev OIDC issuer. The playground
//! uses them to set the bearer header. Both exist only when the embedded sandbox runs; they
//! forward to the issuer, so the tokens are validated exactly like a real provider's.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;

/// `GET /dev/users`.
pub(super) async fn users(State(state): State<AppState>) -> Response {
    let Some(issuer) = &state.dev_issuer else {
        return StatusCode::NOT_FOUND.into_response();
    };
    forward(state.http.get(format!("{issuer}/users"))).await
}

/// `POST /dev/token`.
pub(super) async fn token(State(state): State<AppState>, body: Bytes) -> Response {
    let Some(issuer) = &state.dev_issuer else {
        return StatusCode::NOT_FOUND.into_response();
    };
    forward(
        state
            .http
            .post(format!("{issuer}/token"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body),
    )
    .await
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
