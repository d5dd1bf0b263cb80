//! Incremental results over HTTP: `multipart/mixed` as Apollo Client reads it
//! (`deferSpec=20220824`; its `readMultipartBody`).
//!
//! Apollo Client sends `Accept: multipart/mixed;deferSpec=20220824,application/json` for an
//! operation with `@defer`. The answer is `200` with
//! `Content-Type: multipart/mixed; boundary="-"; deferSpec=20220824`, and a body of parts,
//! each `\r\n---\r\ncontent-type: application/json; charset=utf-8\r\n\r\n<payload>`,
//! closed by `\r\n-----\r\n`. Each part is written with the boundary after it, since a reader
//! takes a part only once the next boundary has come. A client whose `Accept` does not name
//! `multipart/mixed` (or names another `deferSpec`) gets the whole result as one JSON answer,
//! the same as without `@defer`.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use futures::stream::BoxStream;

use super::shape::Outcome;

/// The content type of an incremental answer.
const CONTENT_TYPE: &str = "multipart/mixed; boundary=\"-\"; deferSpec=20220824";
/// The only `deferSpec` spoken.
const DEFER_SPEC: &str = "20220824";

/// Whether the client takes incremental results: its `Accept` names `multipart/mixed`
/// (without `q=0`) with `deferSpec=20220824` or no `deferSpec`.
pub(super) fn accepted(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        if !parts
            .next()
            .is_some_and(|media| media.eq_ignore_ascii_case("multipart/mixed"))
        {
            return false;
        }
        parts.all(|param| {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            let value = value.trim().trim_matches('"');
            match name.trim().to_ascii_lowercase().as_str() {
                "q" => value.parse::<f32>().is_ok_and(|q| q > 0.0),
                "deferspec" => value == DEFER_SPEC,
                _ => true,
            }
        })
    })
}

/// The answer whose parts are `payloads` (the first of them already known to be a result).
pub(super) fn response(payloads: BoxStream<'static, Outcome>) -> Response {
    let parts = payloads.map(|payload| {
        Ok::<_, Infallible>(Bytes::from(format!(
            "\r\ncontent-type: application/json; charset=utf-8\r\n\r\n{}\r\n---",
            payload.into_json()
        )))
    });
    let body = futures::stream::once(async { Ok(Bytes::from_static(b"\r\n---")) })
        .chain(parts)
        .chain(futures::stream::once(async {
            Ok(Bytes::from_static(b"--\r\n"))
        }));
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // Tell buffering proxies (nginx) to pass parts on as they come.
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(value: &str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        accepted(&headers)
    }

    #[test]
    fn apollo_clients_accept_header_takes_incremental_results() {
        assert!(accepts(
            "multipart/mixed;deferSpec=20220824,application/json"
        ));
        assert!(accepts("application/json, multipart/mixed"));
        assert!(!accepts("application/json"));
        assert!(!accepts("multipart/mixed;deferSpec=20230621"));
        assert!(!accepts("multipart/mixed;q=0, application/json"));
        assert!(!accepts("*/*"));
    }
}
