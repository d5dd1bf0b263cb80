//! Reading a GraphQL request off the wire, the same way for every transport: a JSON body
//! (`POST /graphql`, `POST /graphql/stream`), a query string (`GET` of both) or a websocket
//! `subscribe` payload all become one [`GraphQlRequest`]; and the `Accept` negotiation the
//! HTTP endpoints share.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::TransportError;

/// A GraphQL request as it arrives, before anything is parsed: the GraphQL-over-HTTP
/// request parameters.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GraphQlRequest {
    /// The document; empty when absent (a persisted query's hash stands for it).
    #[serde(default)]
    pub(crate) query: String,
    /// Which operation of the document runs.
    #[serde(default)]
    pub(crate) operation_name: Option<String>,
    /// The variables, as JSON.
    #[serde(default)]
    pub(crate) variables: Option<Map<String, Value>>,
    /// Passed on to the request (persisted queries and the like read it).
    #[serde(default)]
    pub(crate) extensions: Option<Map<String, Value>>,
    /// The HTTP `Idempotency-Key` header, for the operation's mutation fields (never in a
    /// body: `http.rs` sets it). Boxed: most requests have none.
    #[serde(skip)]
    pub(crate) idempotency_key: Option<Box<resolvers::idempotency::HeaderKey>>,
}

/// A JSON body: one request, or a batch of them (an array, as Apollo's `BatchHttpLink` and
/// urql send), each of which may be malformed on its own.
pub(crate) enum Body {
    /// One request.
    One(GraphQlRequest),
    /// The elements of an array body, in order.
    Batch(Vec<Result<GraphQlRequest, TransportError>>),
}

impl GraphQlRequest {
    /// The request of a JSON body (`Content-Type: application/json`, one operation).
    pub(crate) fn from_body(
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
        max_body_bytes: usize,
    ) -> Result<GraphQlRequest, TransportError> {
        match Self::read_body(headers, body, max_body_bytes)? {
            Body::One(request) => Ok(request),
            Body::Batch(_) => Err(TransportError::BadRequest(
                "batched requests are taken by POST /graphql only: send one operation".into(),
            )),
        }
    }

    /// The request or batch of a JSON body (`Content-Type: application/json`).
    pub(crate) fn read_body(
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
        max_body_bytes: usize,
    ) -> Result<Body, TransportError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media = content_type.split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case("application/json") {
            return Err(TransportError::UnsupportedMediaType);
        }
        let body = body.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                TransportError::PayloadTooLarge(max_body_bytes)
            } else if timed_out(&rejection) {
                TransportError::BodyTimeout
            } else {
                TransportError::BadRequest(format!("could not read the body: {rejection}"))
            }
        })?;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| TransportError::BadRequest(format!("the body is not valid JSON: {e}")))?;
        match value {
            Value::Array(items) => Ok(Body::Batch(
                items.into_iter().map(Self::from_json).collect(),
            )),
            value => Self::from_json(value).map(Body::One),
        }
    }

    /// The request of a JSON object (a body, or a websocket message's payload).
    pub(crate) fn from_json(value: Value) -> Result<GraphQlRequest, TransportError> {
        if !value.is_object() {
            return Err(TransportError::BadRequest(
                "a GraphQL request is a JSON object (`query`, `variables`, `operationName`)".into(),
            ));
        }
        serde_json::from_value(value).map_err(|e| {
            TransportError::BadRequest(format!(
                "not a GraphQL request (`query`, `variables`, `operationName`): {e}"
            ))
        })
    }

    /// The request of `?query=...&variables=<JSON>&operationName=...&extensions=<JSON>`.
    pub(crate) fn from_query_string(query: &str) -> Result<GraphQlRequest, TransportError> {
        let mut fields = Map::new();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let value = match key.as_ref() {
                "query" | "operationName" => Value::String(value.into_owned()),
                "variables" | "extensions" => serde_json::from_str(&value)
                    .map_err(|e| TransportError::BadRequest(format!("`{key}` is not JSON: {e}")))?,
                _ => continue,
            };
            fields.insert(key.into_owned(), value);
        }
        Self::from_json(Value::Object(fields))
    }

    /// The request async-graphql executes.
    pub(crate) fn into_request(self) -> async_graphql::Request {
        let mut request = async_graphql::Request::new(self.query);
        if let Some(name) = self.operation_name {
            request = request.operation_name(name);
        }
        if let Some(variables) = self.variables {
            request = request.variables(async_graphql::Variables::from_json(Value::Object(
                variables,
            )));
        }
        if let Some(extensions) = self.extensions {
            // Any JSON object is a map of GraphQL values.
            request.extensions =
                serde_json::from_value(Value::Object(extensions)).unwrap_or_default();
        }
        if let Some(key) = self.idempotency_key {
            request = request.data(*key);
        }
        request
    }
}

/// Whether the body failed because it did not arrive within `server.body_read_timeout_ms`.
fn timed_out(rejection: &BytesRejection) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(error) = cause {
        if error.is::<BodyDeadlinePassed>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// The body did not arrive in full within `server.body_read_timeout_ms`.
#[derive(Debug, thiserror::Error)]
#[error("the body did not arrive in full within server.body_read_timeout_ms")]
pub(crate) struct BodyDeadlinePassed;

/// A request body that must arrive in full by a deadline: a total, not an idle timeout
/// between chunks (a body trickling a byte every few seconds is cut too).
pub(crate) struct BodyWithDeadline {
    inner: axum::body::Body,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl BodyWithDeadline {
    /// `body`, due within `timeout` from now.
    pub(crate) fn new(body: axum::body::Body, timeout: std::time::Duration) -> Self {
        Self {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl http_body::Body for BodyWithDeadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::BoxError>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(Some(Err(Box::new(BodyDeadlinePassed))));
        }
        std::pin::Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// What to answer with: the first of `offers` (in the server's order of preference) that the
/// `Accept` header names; if it names none, `unnamed` when a `*/*` or `type/*` range takes it,
/// and also when there is no `Accept` at all (the GraphQL-over-HTTP spec's SHOULD:
/// `application/json` then). `q=0` refuses a type, even one a wildcard would take.
pub(crate) fn negotiate(
    headers: &HeaderMap,
    offers: &[&'static str],
    unnamed: &'static str,
) -> Option<&'static str> {
    let Some(accept) = headers.get(header::ACCEPT) else {
        return Some(unnamed);
    };
    let accept = accept.to_str().unwrap_or("");
    let (mut taken, mut refused) = (Vec::new(), Vec::new());
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let zero = parts.any(|p| {
            let p = p.trim().replace(' ', "");
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        if zero {
            refused.push(media)
        } else {
            taken.push(media)
        }
    }
    if let Some(named) = offers
        .iter()
        .copied()
        .find(|offer| taken.iter().any(|r| r == offer))
    {
        return Some(named);
    }
    let kind = unnamed.split('/').next().unwrap_or("");
    let wildcard = taken
        .iter()
        .any(|range| range == "*/*" || *range == format!("{kind}/*"));
    (wildcard && !refused.iter().any(|r| r == unnamed)).then_some(unnamed)
}

/// The client's name, as Apollo's clients send it (`apollographql-client-name`).
pub(crate) fn client_name(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("apollographql-client-name")
        .and_then(|v| v.to_str().ok())
}

/// The `Idempotency-Key` header, for the operation at `batch_index` of a batch (`None`: a
/// request of one operation); not UTF-8, it is made lossy and then fails the key's check.
pub(crate) fn idempotency_key(
    headers: &HeaderMap,
    batch_index: Option<usize>,
) -> Option<Box<resolvers::idempotency::HeaderKey>> {
    let value = headers.get("idempotency-key")?;
    Some(Box::new(resolvers::idempotency::HeaderKey {
        key: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        batch_index,
    }))
}

/// The bearer token of the `Authorization` header, if any; `Err` for a header that is not a
/// bearer token.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<Option<&str>, TransportError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| {
        TransportError::Unauthenticated("the Authorization header is not text".into())
    })?;
    bearer_value(value).map(Some)
}

/// The token of an `Authorization` value (`Bearer <token>`), as headers and websocket
/// `connection_init` payloads carry it.
pub(crate) fn bearer_value(value: &str) -> Result<&str, TransportError> {
    let refused = || TransportError::Unauthenticated("use `Authorization: Bearer <token>`".into());
    let (scheme, token) = value.split_once(' ').ok_or_else(refused)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(refused());
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        h
    }

    const OFFERS: [&str; 2] = ["application/graphql-response+json", "application/json"];

    #[test]
    fn negotiates_the_media_type() {
        let json = "application/json";
        let http = |value: &str| negotiate(&accept(value), &OFFERS, json);
        assert_eq!(negotiate(&HeaderMap::new(), &OFFERS, json), Some(json));
        assert_eq!(http("application/json"), Some(json));
        assert_eq!(
            http("application/graphql-response+json, application/json;q=0.9"),
            Some(OFFERS[0])
        );
        assert_eq!(http("*/*"), Some(json));
        assert_eq!(http("application/*"), Some(json));
        assert_eq!(http("text/html, */*;q=0.8"), Some(json));
        assert_eq!(http("application/json;q=0, */*"), None);
        assert_eq!(http("text/html"), None);
        let sse = ["text/event-stream"];
        let stream = |value: &str| negotiate(&accept(value), &sse, sse[0]);
        assert_eq!(stream("application/json, */*;q=0.5"), Some(sse[0]));
        assert_eq!(stream("text/event-stream;q=0"), None);
        assert_eq!(stream("text/event-stream; q=0.0"), None);
        assert_eq!(stream("text/event-stream;q=0.5"), Some(sse[0]));
        assert_eq!(stream("application/json"), None);
    }

    #[test]
    fn reads_query_strings() {
        let request = GraphQlRequest::from_query_string(
            "query=query%20Me%20%7B%20me%20%7B%20id%20%7D%20%7D&operationName=Me&variables=%7B%22a%22%3A1%7D",
        )
        .unwrap()
        .into_request();
        assert_eq!(request.query, "query Me { me { id } }");
        assert_eq!(request.operation_name.as_deref(), Some("Me"));
        let refused =
            GraphQlRequest::from_query_string("query=%7Ba%7D&variables=nope").unwrap_err();
        assert_eq!(refused.code(), "BAD_REQUEST");
    }

    #[test]
    fn takes_nullable_fields_and_refuses_wrong_shapes() {
        let request = GraphQlRequest::from_json(json!({
            "query": "{ me { id } }", "operationName": null, "variables": null, "extensions": null
        }))
        .unwrap()
        .into_request();
        assert_eq!(request.operation_name, None);
        let request = GraphQlRequest::from_json(json!({
            "query": "{ a }", "extensions": {"persistedQuery": {"version": 1}}
        }))
        .unwrap()
        .into_request();
        assert!(request.extensions.0.contains_key("persistedQuery"));
        assert!(GraphQlRequest::from_json(json!({"query": 1})).is_err());
        assert!(GraphQlRequest::from_json(json!({"query": "{a}", "variables": []})).is_err());
    }
}
