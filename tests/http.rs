//! GraphQL over HTTP as the spec says: methods, media types, status codes.

mod support;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};
use support::TestApp;

#[tokio::test]
async fn get_runs_queries_and_refuses_mutations() {
    let app = TestApp::spawn().await;
    let token = app.token("cust-0001").await;

    let ok = app
        .http
        .get(app.url("/graphql"))
        .query(&[("query", "{ me { id } }")])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers()[CONTENT_TYPE],
        "application/graphql-response+json"
    );
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["data"]["me"]["id"], "cust-0001");

    let refused = app
        .http
        .get(app.url("/graphql"))
        .query(&[(
            "query",
            "mutation { cancelOrder(id: \"ord-000001\") { id } }",
        )])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 405);
    assert_eq!(refused.headers()["allow"], "POST");
    app.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_clear_errors_and_status_codes() {
    let app = TestApp::spawn().await;
    let post = |body: &'static str, content_type: &'static str, accept: Option<&'static str>| {
        let mut r = app
            .http
            .post(app.url("/graphql"))
            .header(CONTENT_TYPE, content_type)
            .body(body);
        if let Some(a) = accept {
            r = r.header(ACCEPT, a);
        }
        async move {
            let res = r.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    let (status, body) = post("{not json", "application/json", None).await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");

    let (status, _) = post("query { me { id } }", "text/plain", None).await;
    assert_eq!(status, 415);

    let (status, body) = post(r#"[{"query":"{ me { id } }"}]"#, "application/json", None).await;
    assert_eq!(status, 400);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("batch")
    );

    // A syntax error is a request error: 400 and no `data` with the GraphQL media type...
    let (status, body) = post(r#"{"query":"{ me { id "}"#, "application/json", None).await;
    assert_eq!(status, 400);
    assert!(body.get("data").is_none());
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );
    // ...and 200 for clients that accept only application/json.
    let (status, _) = post(
        r#"{"query":"{ me { id "}"#,
        "application/json",
        Some("application/json"),
    )
    .await;
    assert_eq!(status, 200);

    let (status, body) = post(r#"{"query":"{ nope }"}"#, "application/json", None).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );

    let (status, _) = post(
        r#"{"query":"{ me { id } }"}"#,
        "application/json",
        Some("text/html"),
    )
    .await;
    assert_eq!(status, 406);

    let big = Box::leak(format!(r#"{{"query":"{}"}}"#, " ".repeat(2 << 20)).into_boxed_str());
    let (status, _) = post(big, "application/json", None).await;
    assert_eq!(status, 413);
    app.stop().await;
}

#[tokio::test]
async fn too_deep_queries_are_refused_before_any_upstream_call() {
    let app = TestApp::spawn().await;
    let token = app.token("cust-0001").await;
    app.reset_counts();
    let deep = "{ me { orders { edges { node { customer { orders { edges { node { customer { orders { edges { node { id } } } } } } } } } } } } }";
    let (status, body) = app.post(Some(&token), deep, json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );
    assert!(app.counts().is_empty(), "{:?}", app.counts());
    app.stop().await;
}

#[tokio::test]
async fn bad_argument_values_are_bad_user_input() {
    let app = TestApp::spawn().await;
    let token = app.token("cust-0001").await;
    let (status, body) = app
        .post(
            Some(&token),
            "query($n: Int!) { me { orders(first: $n) { edges { node { id } } } } }",
            json!({ "n": "five" }),
        )
        .await;
    // A variable that does not coerce is a request error (400), coded as bad input.
    assert_eq!(status, 400, "{body}");
    assert!(body.get("data").is_none());
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );
    app.stop().await;
}

/// The introspection query GraphiQL and codegen tools send (graphql-js's, with its ten
/// levels of `ofType`).
const STANDARD_INTROSPECTION: &str = r#"query IntrospectionQuery { __schema { queryType { name } mutationType { name } subscriptionType { name }
  types { ...FullType } directives { name description locations args { ...InputValue } } } }
fragment FullType on __Type { kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue } interfaces { ...TypeRef } enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef } }
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } } } }"#;

#[tokio::test]
async fn the_standard_introspection_query_works_and_introspection_bombs_do_not() {
    let app = TestApp::spawn().await;
    let (status, body) = app.post(None, STANDARD_INTROSPECTION, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "Query");
    assert_eq!(
        body["data"]["__schema"]["subscriptionType"]["name"],
        "Subscription"
    );

    let bomb = "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }";
    let (status, body) = app.post(None, bomb, json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );

    // Data queries keep their depth limit even when they also ask for __typename.
    let token = app.token("cust-0001").await;
    let deep = "{ __typename me { orders { edges { node { customer { orders { edges { node { customer { orders { edges { node { id } } } } } } } } } } } } }";
    let (status, _) = app.post(Some(&token), deep, json!({})).await;
    assert_eq!(status, 400);
    app.stop().await;
}

#[tokio::test]
async fn fields_come_back_in_the_order_asked() {
    let app = TestApp::spawn().await;
    let token = app.token("cust-0001").await;
    // Upstream-backed fields finish in any order; the answer follows the query anyway.
    let query =
        "{ me { supportCases { id } orders(first: 1) { edges { node { id } } } name id email } }";
    let (status, body) = app.post(Some(&token), query, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let keys: Vec<&String> = body["data"]["me"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["supportCases", "orders", "name", "id", "email"]);
    app.stop().await;
}

#[tokio::test]
async fn get_picks_the_operation_named_by_operation_name() {
    let app = TestApp::spawn().await;
    let token = app.token("cust-0001").await;
    let body: Value = app
        .http
        .get(app.url("/graphql"))
        .query(&[
            ("query", "query A { me { id } } query B { me { name } }"),
            ("operationName", "B"),
        ])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body,
        json!({ "data": { "me": { "name": "Ada Lovelace" } } })
    );
    app.stop().await;
}
