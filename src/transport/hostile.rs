//! Property tests: whatever arrives (random bytes, malformed or deeply nested JSON, wrong
//! types, invalid UTF-8, huge or deeply nested documents), the readers of every transport
//! answer a value or a clear error, never a panic: the HTTP body and query string readers,
//! and the document's bounds and parser (the websocket codec has its own, in `ws::codec`).

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, header};
use proptest::prelude::*;

use super::error::TransportError;
use super::limits;
use super::request::GraphQlRequest;

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers
}

/// A document as the pipeline reads one: bounded first, then parsed, then counted.
fn read_document(text: &str) -> Result<(), TransportError> {
    limits::check_text(text)?;
    let document = async_graphql::parser::parse_query(text)
        .map_err(|e| TransportError::BadRequest(e.to_string()))?;
    limits::check_parsed(&document)
}

/// Text made of GraphQL's punctuation, names and strings, nested at random: close enough to
/// documents to get past the lexer, far enough to reach every error.
fn documentish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just("...".to_owned()),
        Just("fragment F on Query".to_owned()),
        Just("query".to_owned()),
        Just("\"\"\"".to_owned()),
        Just("\"".to_owned()),
        Just("#".to_owned()),
        Just("\n".to_owned()),
        Just("$v: [Int!]! = ".to_owned()),
        "[a-z_]{1,8}",
        "[a-z]{1,4}: [a-z]{1,4}",
    ];
    proptest::collection::vec(token, 0..400).prop_map(|tokens| tokens.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_body_is_a_request_or_a_clear_error(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = GraphQlRequest::read_body(&json_headers(), Ok(Bytes::from(body)), 1 << 20);
    }

    #[test]
    fn any_json_value_is_a_request_or_a_clear_error(json in any_json(4)) {
        let body = serde_json::to_vec(&json).unwrap_or_default();
        let _ = GraphQlRequest::read_body(&json_headers(), Ok(Bytes::from(body)), 1 << 20);
    }

    #[test]
    fn any_query_string_is_a_request_or_a_clear_error(query in ".{0,600}") {
        let _ = GraphQlRequest::from_query_string(&query);
    }

    #[test]
    fn any_document_is_parsed_or_refused(text in documentish()) {
        let _ = read_document(&text);
    }

    #[test]
    fn deep_nesting_is_refused_before_the_parser(depth in 65usize..20_000, open in "[\\[{(]") {
        let text = format!("{{ a(b: {}) }}", open.repeat(depth));
        let refused = matches!(read_document(&text), Err(TransportError::Limit { .. }));
        prop_assert!(refused, "nested {} deep", depth);
    }
}

#[test]
fn deeply_nested_json_bodies_are_refused_clearly() {
    for nested in ["[".repeat(100_000), "{\"a\":".repeat(100_000)] {
        let body = Bytes::from(nested.into_bytes());
        let Err(TransportError::BadRequest(message)) =
            GraphQlRequest::read_body(&json_headers(), Ok(body), 1 << 20)
        else {
            panic!("a body nested 100,000 deep must be a bad request");
        };
        assert!(message.contains("not valid JSON"), "{message}");
    }
}

/// JSON values of any shape, nested up to `depth`.
pub(crate) fn any_json(depth: u32) -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        ".{0,40}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("query"),
            Just("variables"),
            Just("extensions"),
            Just("operationName"),
            Just("{ __typename }"),
            Just("subscribe"),
            Just("connection_init"),
            Just("type"),
            Just("id"),
            Just("payload"),
            Just("persistedQuery"),
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(depth, 64, 8, |inner| {
        let key = prop_oneof![
            Just("query".to_owned()),
            Just("variables".to_owned()),
            Just("extensions".to_owned()),
            Just("operationName".to_owned()),
            Just("type".to_owned()),
            Just("id".to_owned()),
            Just("payload".to_owned()),
            Just("persistedQuery".to_owned()),
            Just("sha256Hash".to_owned()),
            Just("version".to_owned()),
            "[a-z]{1,6}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(key, inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
