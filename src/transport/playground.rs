//! The playground (GraphiQL, built offline from `playground/`, embedded in the binary) and the
//! example operations it opens as tabs.
//!
//! Hashed assets (`assets/*`) are cached for a year; `index.html` and `operations.json` are
//! revalidated. Every answer carries a Content-Security-Policy that allows nothing from other
//! hosts, so the page works offline and cannot be made to load foreign scripts.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;
use serde::Serialize;

/// The built playground.
#[derive(RustEmbed)]
#[folder = "playground/dist/"]
struct Assets;

/// The example operations (`Name.graphql`, with optional `Name.variables.json`).
#[derive(RustEmbed)]
#[folder = "schema/operations/"]
pub(crate) struct Operations;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
font-src 'self' data:; img-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; \
frame-ancestors 'none'";

/// One example operation.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ExampleOperation {
    /// The operation's name (the file's stem).
    pub name: String,
    /// The document.
    pub query: String,
    /// Variables as JSON text, when the operation has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variables: Option<String>,
}

/// All example operations, the home screen first, then by name.
pub(crate) fn example_operations() -> Vec<ExampleOperation> {
    let mut ops: Vec<ExampleOperation> = Operations::iter()
        .filter_map(|path| {
            let name = path.strip_suffix(".graphql")?.to_owned();
            let query = String::from_utf8_lossy(&Operations::get(&path)?.data).into_owned();
            let variables = Operations::get(&format!("{name}.variables.json"))
                .map(|f| String::from_utf8_lossy(&f.data).into_owned());
            Some(ExampleOperation {
                name,
                query,
                variables,
            })
        })
        .collect();
    ops.sort_by_key(|op| (op.name != "HomeScreen", op.name.clone()));
    ops
}

/// `GET /playground/operations.json`.
pub(super) async fn operations() -> Response {
    let body = serde_json::to_string(&example_operations()).unwrap_or_else(|_| "[]".into());
    with_headers(
        StatusCode::OK,
        "application/json",
        "no-cache",
        body.into_bytes(),
    )
}

/// `GET /playground/`.
pub(super) async fn index() -> Response {
    asset("index.html")
}

/// `GET /playground/{*path}`.
pub(super) async fn file(Path(path): Path<String>) -> Response {
    asset(&path)
}

fn asset(path: &str) -> Response {
    let Some(file) = Assets::get(path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let mime = if mime.essence_str() == "application/javascript" {
        "text/javascript".to_owned()
    } else {
        mime.essence_str().to_owned()
    };
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    with_headers(StatusCode::OK, &mime, cache, file.data.into_owned())
}

fn with_headers(status: StatusCode, mime: &str, cache: &'static str, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(mime) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
