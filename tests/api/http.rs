//! GraphQL over HTTP as the spec says: methods, media types, status codes.

use crate::support::{TestApp, doubling_fragments, operation};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};

#[tokio::test]
async fn get_runs_queries_and_refuses_mutations() {
    let app = TestApp::spawn().await;
    let token = app.token("cust-0001").await;

    let ok = app
        .http
        .get(app.url("/graphql"))
        .header("apollo-require-preflight", "true")
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
        .header("apollo-require-preflight", "true")
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

    // A syntax error is a request error: 400 and no `data` with the GraphQL media type...
    let (status, body) = post(r#"{"query":"{ me { id "}"#, "application/json", None).await;
    assert_eq!(status, 400);
    assert!(body.get("data").is_none());
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "GRAPHQL_PARSE_FAILED"
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
    // One order a page, so that only the depth is over its limit, not the cost.
    let deep = "{ me { orders(first: 1) { edges { node { customer { orders(first: 1) { edges { node { customer { orders(first: 1) { edges { node { id } } } } } } } } } } } } }";
    let (status, body) = app.post(Some(&token), deep, json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "MAX_DEPTH_LIMIT");
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
    assert_eq!(body["errors"][0]["extensions"]["code"], "MAX_DEPTH_LIMIT");

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
        .header("apollo-require-preflight", "true")
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

/// Documents an attacker sends without signing in: each is refused with a clear error before
/// anything recurses on it or expands it, and the server keeps serving.
#[tokio::test]
async fn hostile_documents_are_refused_and_the_server_stays_up() {
    let app = TestApp::spawn().await;
    let nested_list = format!(
        "{{ __typename(x: {}1{}) }}",
        "[".repeat(1600),
        "]".repeat(1600)
    );
    let nested_object = format!(
        "{{ __typename(x: {}1{}) }}",
        "{a: ".repeat(1600),
        "}".repeat(1600)
    );
    let nested_default = format!(
        "query($x: [Int] = {}1{}) {{ __typename }}",
        "[".repeat(1600),
        "]".repeat(1600)
    );
    // Under 1 KB, 2^22 fields once expanded.
    // An unclosed `"""` the parser reads as `""`, hiding deep nesting from a careless scan.
    let unclosed = format!(
        "{{ __typename(x: [\"\"\" x\" {}1{}]) }}",
        "[".repeat(400),
        "]".repeat(400)
    );
    // Each fragment spreads the next ten times and the last an unknown one: 10^8 paths.
    let mut fan_out = String::from("{ ...F0 }\n");
    for level in 0..8 {
        let spreads = format!("...F{} ", level + 1).repeat(10);
        fan_out.push_str(&format!("fragment F{level} on Query {{ {spreads} }}\n"));
    }
    fan_out.push_str("fragment F8 on Query { ...Missing }");
    let doubling = doubling_fragments("Query", 22);
    assert!(doubling.len() < 1024);
    let aliases: String = (0..2001).map(|i| format!("a{i}: __typename ")).collect();
    let alias_flood = format!("{{ {aliases} }}");
    for (query, code) in [
        (&nested_list, "MAX_DEPTH_LIMIT"),
        (&nested_object, "MAX_DEPTH_LIMIT"),
        (&nested_default, "MAX_DEPTH_LIMIT"),
        (&unclosed, "MAX_DEPTH_LIMIT"),
        (&fan_out, "GRAPHQL_VALIDATION_FAILED"),
        (&doubling, "MAX_SELECTIONS_LIMIT"),
        (&alias_flood, "MAX_SELECTIONS_LIMIT"),
    ] {
        let (status, body) = app.post(None, query, json!({})).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.get("data").is_none(), "{body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], code, "{body}");
        // The same over GET.
        let res = app
            .http
            .get(app.url("/graphql"))
            .header("apollo-require-preflight", "true")
            .query(&[("query", query.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["errors"][0]["extensions"]["code"], code, "{body}");
    }
    // Still up, and a document within the limits runs.
    let (status, body) = app.post(None, "{ __typename }", json!({})).await;
    assert_eq!(
        (status, body),
        (200, json!({"data": {"__typename": "Query"}}))
    );
    app.stop().await;
}

/// Floods of tokens and of directives are refused with the limit they are over, before any
/// upstream call (the classic 30,000 `@include` on one field is over both; the token count
/// refuses it first, before it is parsed).
#[tokio::test]
async fn token_and_directive_floods_are_refused_naming_their_limit() {
    let app = TestApp::spawn().await;
    let token = app.token("cust-0001").await;
    app.reset_counts();
    let numbers = "1 ".repeat(15_000);
    let tokens = format!("{{ me {{ orders(first: [{numbers}]) {{ edges {{ cursor }} }} }} }}");
    let classic = format!("{{ me {{ id {} }} }}", "@include(if: true) ".repeat(30_000));
    let nine = format!("{{ me {{ id {} }} }}", "@include(if: true) ".repeat(9));
    let spread = format!(
        "{{ me {{ ...F {} }} }} fragment F on Customer {{ id }}",
        "@skip(if: false) ".repeat(9)
    );
    for (query, code, names) in [
        (&tokens, "MAX_TOKENS_LIMIT", "more than 15000 tokens"),
        (&classic, "MAX_TOKENS_LIMIT", "more than 15000 tokens"),
        (&nine, "MAX_DIRECTIVES_LIMIT", "the field `id`"),
        (&spread, "MAX_DIRECTIVES_LIMIT", "the spread of `F`"),
    ] {
        let (status, body) = app.post(Some(&token), query, json!({})).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.get("data").is_none(), "{body}");
        let error = &body["errors"][0];
        assert_eq!(error["extensions"]["code"], code, "{body}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(names), "{message}");
        if code == "MAX_DIRECTIVES_LIMIT" {
            assert!(
                message.contains("carries 9 directives: at most 8"),
                "{message}"
            );
        }
    }
    assert!(app.counts().is_empty(), "{:?}", app.counts());
    // Two directives on a field are what a client sends: they run.
    let (status, body) = app
        .post(
            Some(&token),
            "{ me { id @include(if: true) @skip(if: false) name @skip(if: true) } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["me"], json!({"id": "cust-0001"}));
    app.stop().await;
}

/// An answer over `server.max_response_bytes` is not sent: the client gets `data: null` and a
/// `RESPONSE_TOO_LARGE` error naming the bound (status 200: the operation ran); answers
/// within it are untouched.
#[tokio::test]
async fn an_answer_over_max_response_bytes_is_replaced_by_an_error_naming_the_limit() {
    let app = TestApp::spawn_with(Default::default(), |c| c.server.max_response_bytes = 4096).await;
    let (status, body) = app.post(None, STANDARD_INTROSPECTION, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], Value::Null, "{body}");
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["extensions"]["code"], "RESPONSE_TOO_LARGE");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.contains("larger than 4096 bytes (server.max_response_bytes)"),
        "{message}"
    );
    // In a batch, only the answer that is too large is replaced.
    let token = app.token("cust-0001").await;
    let (status, body) = app
        .post_batch(
            &token,
            json!([{"query": STANDARD_INTROSPECTION}, {"query": "{ me { id } }"}]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body[0]["errors"][0]["extensions"]["code"],
        "RESPONSE_TOO_LARGE"
    );
    assert_eq!(body[1], json!({"data": {"me": {"id": "cust-0001"}}}));

    // The whole batch is bounded too: results each within the bound but together past it
    // are replaced once the total passes it, except a mutation's, which is always sent.
    let home = "{ me { orders(first: 12) { edges { node { id status placedAt total { formatted } } } } } }";
    let (_, one) = app.post(Some(&token), home, json!({})).await;
    let size = one.to_string().len();
    assert!(
        size * 2 + 200 < 4096 && size * 3 > 4096,
        "a page of orders is {size} bytes: {one}"
    );
    let (status, body) = app
        .post_batch(
            &token,
            json!([
                {"query": home},
                {"query": home},
                {"query": "mutation { cancelOrder(id: \"ord-019801\") { status } }"},
                {"query": home},
            ]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let codes: Vec<&Value> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["errors"][0]["extensions"]["code"])
        .collect();
    assert_eq!(body[0]["data"], one["data"]);
    assert_eq!(
        body[2]["data"]["cancelOrder"]["status"], "CANCELLED",
        "{body}"
    );
    assert_eq!(codes[3], "RESPONSE_TOO_LARGE", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn request_errors_have_their_own_codes() {
    let app = TestApp::spawn().await;
    let token = app.token("cust-0001").await;
    // A required variable left out, or null: a request error, nothing runs.
    let query = "query($id: ID!) { order(id: $id) { id } }";
    for variables in [json!({}), json!({"id": null})] {
        let (status, body) = app.post(Some(&token), query, variables).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.get("data").is_none(), "{body}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{body}"
        );
    }
    // A default stands in for a missing variable.
    let (status, body) = app
        .post(
            Some(&token),
            "query($first: Int! = 1) { me { orders(first: $first) { edges { cursor } } } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["me"]["orders"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Several operations and none named; a name that matches none.
    for (query, name) in [
        ("query A { __typename } query B { __typename }", None),
        ("query A { __typename }", Some("B")),
    ] {
        let res = app
            .http
            .post(app.url("/graphql"))
            .json(&json!({"query": query, "operationName": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "OPERATION_RESOLUTION_FAILURE",
            "{body}"
        );
    }
    // A subscription over HTTP, a wrong method, a wrong route: all in the GraphQL shape.
    let (status, body) = app
        .post(None, "subscription { taskAssigned { id } }", json!({}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_REQUEST",
        "{body}"
    );
    for (method, path, status, code) in [
        (reqwest::Method::PUT, "/graphql", 405, "METHOD_NOT_ALLOWED"),
        (reqwest::Method::GET, "/nope", 404, "NOT_FOUND"),
        (reqwest::Method::GET, "/graphql/ws", 400, "BAD_REQUEST"),
    ] {
        let res = app
            .http
            .request(method, app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            body["errors"][0]["extensions"]["code"], code,
            "{path}: {body}"
        );
    }

    // A body over `server.max_body_bytes`: 413 in the GraphQL shape, with a code.
    let big = format!(
        r#"{{"query":"{{ __typename }}","variables":{{"pad":"{}"}}}}"#,
        "x".repeat(2 << 20)
    );
    let res = app
        .http
        .post(app.url("/graphql"))
        .header(CONTENT_TYPE, "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(
        res.headers()[CONTENT_TYPE],
        "application/graphql-response+json"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "PAYLOAD_TOO_LARGE",
        "{body}"
    );
    app.stop().await;
}

/// The GraphQL spec's "Handling Field Errors": a failed field is `null` with its error, and a
/// failed non-null field makes its nearest nullable parent `null` (here `data` itself).
#[tokio::test]
async fn a_failed_field_is_null_and_non_null_failures_propagate() {
    let app = TestApp::spawn().await;
    let agent = app.token("agent-01").await;
    let ada = app.token("cust-0001").await;

    // A nullable root field fails: it is there, null, with its error.
    let (status, body) = app
        .post(Some(&agent), "{ viewer { role } me { id } }", json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"],
        json!({"viewer": {"role": "AGENT"}, "me": null}),
        "{body}"
    );
    assert_eq!(body["errors"][0]["path"], json!(["me"]));
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");

    // A non-null root field fails: `data` is null.
    let (status, body) = app
        .post(
            Some(&ada),
            "{ viewer { role } customers(first: 1) { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], Value::Null, "{body}");
    assert_eq!(body["errors"][0]["path"], json!(["customers"]));
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");
    app.stop().await;
}

/// List items: a field failing in each item is null in each, the rest of the items stand.
#[tokio::test]
async fn a_field_failing_in_list_items_is_null_in_each_item() {
    let app = TestApp::spawn_with(
        sandbox::SandboxConfig {
            carrier: sandbox::UpstreamKnobs {
                error_rate: 1.0,
                ..Default::default()
            },
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let ada = app.token("cust-0001").await;
    let query = "{ me { orders(first: 20, status: SHIPPED) { edges { node { id shipment { status } } } } } }";
    let (status, body) = app.post(Some(&ada), query, json!({})).await;
    assert_eq!(status, 200);
    let edges = body["data"]["me"]["orders"]["edges"]
        .as_array()
        .expect("edges")
        .clone();
    assert!(!edges.is_empty(), "{body}");
    // `shipment.status` fails in every item: it is null there, and each `shipment` stays an
    // object (async-graphql alone answers `shipment: null` when all its fields failed).
    for edge in &edges {
        let node = &edge["node"];
        assert!(node["id"].is_string());
        assert_eq!(node["shipment"], json!({"status": null}), "{body}");
    }
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), edges.len(), "{body}");
    for error in errors {
        assert_eq!(error["extensions"]["code"], "UPSTREAM_UNAVAILABLE");
        assert_eq!(error["extensions"]["source"], "carrier");
        assert_eq!(error["path"][4], "node");
        assert_eq!(error["path"][5], "shipment");
        assert_eq!(error["path"][6], "status");
    }
    app.stop().await;
}

#[tokio::test]
async fn skip_and_include_take_a_boolean() {
    let app = TestApp::spawn().await;
    for (query, variables) in [
        ("{ __typename @include(if: 5) }", json!({})),
        ("{ me { id @skip(if: \"yes\") } }", json!({})),
        (
            "query($x: Int) { __typename @include(if: $x) }",
            json!({"x": 1}),
        ),
        (
            "query($x: Int) { ...F } fragment F on Query { __typename @skip(if: $x) }",
            json!({"x": 1}),
        ),
    ] {
        let (status, body) = app.post(None, query, variables).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
            "{query}: {body}"
        );
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("takes a Boolean"), "{query}: {message}");
    }
    let token = app.token("cust-0001").await;
    let (status, body) = app
        .post(
            Some(&token),
            "query($x: Boolean!) { products(ids: [\"prod-0001\"]) { id @include(if: $x) } }",
            json!({"x": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["products"][0]["id"], "prod-0001", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_batch_answers_in_order_and_its_operations_share_loaders() {
    // No entity cache: every product read reaches the backend, so the count shows batching.
    let app = TestApp::spawn_with(Default::default(), |c| c.cache.enabled = false).await;
    let token = app.token("cust-0001").await;
    let products = "query P($ids: [ID!]!) { products(ids: $ids) { id } }";
    app.reset_counts();
    let (status, body) = app
        .post_batch(
            &token,
            json!([
                {"query": products, "variables": {"ids": ["prod-0001", "prod-0002"]}},
                {"query": "{ me { id } }"},
                {"query": products, "variables": {"ids": ["prod-0003", "prod-0002"]}},
                {"query": "{ me { nope } }"},
                "not a request",
            ]),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body[0],
        json!({"data": {"products": [{"id": "prod-0001"}, {"id": "prod-0002"}]}})
    );
    assert_eq!(body[1], json!({"data": {"me": {"id": "cust-0001"}}}));
    assert_eq!(
        body[2],
        json!({"data": {"products": [{"id": "prod-0003"}, {"id": "prod-0002"}]}})
    );
    assert_eq!(
        body[3]["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );
    assert_eq!(body[4]["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    assert_eq!(body.as_array().unwrap().len(), 5);
    // Both product lists came from one backend call (one loader), the viewer from one more.
    let backend = &app.counts()["backend"];
    assert_eq!(backend.get("GET /products"), Some(&1), "{backend:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_batched_home_screen_and_product_list_read_their_products_in_one_call() {
    // The product list asks for its products at once, the home screen only after the
    // customer and their orders: the products still leave together, in one backend call.
    let app = TestApp::spawn_with(Default::default(), |c| c.cache.enabled = false).await;
    let token = app.token("cust-0001").await;
    let products = "query P($ids: [ID!]!) { products(ids: $ids) { id name } }";
    app.reset_counts();
    let (status, body) = app
        .post_batch(
            &token,
            json!([
                {"query": operation("HomeScreen")},
                {"query": products, "variables": {"ids": ["prod-0001", "prod-0002"]}},
            ]),
        )
        .await;
    assert_eq!(status, 200);
    assert!(body[0]["errors"].is_null(), "{}", body[0]);
    let orders = body[0]["data"]["me"]["orders"]["edges"].as_array().unwrap();
    let line = &orders[0]["node"]["lines"][0];
    assert!(line["product"]["name"].is_string(), "{line}");
    assert_eq!(body[1]["data"]["products"][1]["id"], "prod-0002");
    let backend = &app.counts()["backend"];
    assert_eq!(backend.get("GET /products"), Some(&1), "{backend:?}");
    assert_eq!(backend.get("GET /customers"), Some(&1), "{backend:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_batch_with_a_mutation_runs_in_order() {
    let app = TestApp::spawn().await;
    let token = app.token("cust-0001").await;
    let status_of = "{ order(id: \"ord-019801\") { status } }";
    let (status, body) = app
        .post_batch(
            &token,
            json!([
                {"query": status_of},
                {"query": "mutation { cancelOrder(id: \"ord-019801\") { status } }"},
                {"query": status_of},
            ]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body[0]["data"]["order"]["status"], "CANCELLED", "{body}");
    assert_eq!(
        body[1]["data"]["cancelOrder"]["status"], "CANCELLED",
        "{body}"
    );
    assert_eq!(body[2]["data"]["order"]["status"], "CANCELLED", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn fragments_spread_in_a_cycle_are_refused_as_too_deep_not_as_federation() {
    let app = TestApp::spawn().await;
    for query in [
        "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }",
        "{ ...A } fragment A on Query { __typename ...A }",
    ] {
        // (async-graphql's recursion bound meets the cycle before its cycle rule does.)
        let (_, body) = app.post(None, query, json!({})).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "MAX_DEPTH_LIMIT",
            "{query}: {body}"
        );
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("recursion depth"), "{message}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_batch_past_its_deadline_keeps_the_result_of_its_mutation() {
    let app = TestApp::spawn_with(Default::default(), |c| {
        c.server.request_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let token = app.token("cust-0001").await;
    // Schema walks (no upstream call, no await): together far beyond 300 ms.
    let walk = "__schema { types { name description fields { name description \
                args { name description type { name kind ofType { name kind } } } \
                type { name kind ofType { name kind ofType { name kind } } } } } }";
    let walks = format!("{{ a: {walk} b: {walk} c: {walk} }}");
    let mut batch =
        vec![json!({"query": "mutation { cancelOrder(id: \"ord-019801\") { status } }"})];
    batch.extend(std::iter::repeat_n(json!({"query": walks}), 15));
    let (status, body) = app.post_batch(&token, Value::Array(batch)).await;
    // Not a 504: the cancellation ran, and its result is there.
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body[0]["data"]["cancelOrder"]["status"], "CANCELLED",
        "{body}"
    );
    let timed_out = body
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["errors"][0]["extensions"]["code"] == "TIMEOUT")
        .count();
    assert!(timed_out > 0, "the operations past the deadline say so");
    app.stop().await;
}

#[tokio::test]
async fn batches_are_bounded_and_whole_batches_are_refused_clearly() {
    let app = TestApp::spawn_with(Default::default(), |c| c.server.max_batch_size = 3).await;
    let token = app.token("cust-0001").await;
    let four = Value::Array(vec![json!({"query": "{ __typename }"}); 4]);
    let (status, body) = app.post_batch(&token, four).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "MAX_BATCH_SIZE_LIMIT",
        "{body}"
    );
    let (status, body) = app.post_batch(&token, json!([])).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_REQUEST",
        "{body}"
    );
    let (status, body) = app
        .post_batch("not-a-token", json!([{"query": "{ __typename }"}]))
        .await;
    assert_eq!(status, 401, "{body}");
    // A subscription in a batch is that element's error; the others run.
    let (status, body) = app.post_batch(&token,
        json!([{"query": "subscription { notifications { id } }"}, {"query": "{ __typename }"}]),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body[0]["errors"][0]["extensions"]["code"], "BAD_REQUEST",
        "{body}"
    );
    assert_eq!(body[1], json!({"data": {"__typename": "Query"}}));
    app.stop().await;
}

#[tokio::test]
async fn no_accept_or_any_type_gets_application_json() {
    let app = TestApp::spawn().await;
    // A client that sends no `Accept`, or `*/*` (Apollo Client 3, curl): `application/json`,
    // and a request error is 200, as the GraphQL-over-HTTP spec says for such clients.
    let plain = reqwest::Client::new();
    for accept in [None, Some("*/*"), Some("text/html, */*;q=0.8")] {
        for (query, status) in [("{ __typename }", 200), ("{ nope }", 200)] {
            let mut request = plain
                .post(app.url("/graphql"))
                .json(&json!({ "query": query }));
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), status, "{accept:?} {query}");
            assert_eq!(
                response.headers()[CONTENT_TYPE],
                "application/json",
                "{accept:?}"
            );
        }
    }
    // Naming the GraphQL media type still gets it, with the spec's 400 for a request error.
    let response = plain
        .post(app.url("/graphql"))
        .header(ACCEPT, "application/graphql-response+json")
        .json(&json!({ "query": "{ nope }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()[CONTENT_TYPE],
        "application/graphql-response+json"
    );
    app.stop().await;
}

/// What a raw TCP client reads until the server closes (or `limit` passes: `None`).
async fn read_until_closed(
    stream: &mut tokio::net::TcpStream,
    limit: std::time::Duration,
) -> Option<String> {
    use tokio::io::AsyncReadExt as _;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await;
    read.ok()
        .map(|_| String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn slow_headers_and_slow_bodies_are_cut() {
    use tokio::io::AsyncWriteExt as _;
    let app = TestApp::spawn_with(Default::default(), |c| {
        c.server.header_read_timeout = std::time::Duration::from_millis(500);
        c.server.body_read_timeout = std::time::Duration::from_millis(500);
    })
    .await;
    let addr = app.url("").trim_start_matches("http://").to_owned();

    // Headers trickling in, a byte at a time (slowloris): the connection is closed.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"POST /graphql HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let trickle = async {
        for _ in 0..20 {
            if slow.write_all(b"X").await.is_err() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    trickle.await;
    let answer = read_until_closed(&mut slow, std::time::Duration::from_secs(5)).await;
    assert!(
        answer.is_some(),
        "a connection trickling headers is never cut"
    );

    // A connection that never sends a byte: closed too.
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let answer = read_until_closed(&mut silent, std::time::Duration::from_secs(5)).await;
    assert_eq!(
        answer.as_deref(),
        Some(""),
        "a silent connection is never cut"
    );

    // An HTTP/2 connection (prior knowledge) that opens no stream: shut down (GOAWAY), not
    // kept alive by the pings it would answer.
    // (hyper's client answers the server's pings, as an attacker's would.)
    let idle_h2 = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (_send, connection) = hyper::client::conn::http2::handshake::<_, _, String>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(idle_h2),
    )
    .await
    .unwrap();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), connection).await;
    assert!(closed.is_ok(), "an idle HTTP/2 connection is never closed");

    // A body that stops arriving: 408.
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(
            b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"query\":",
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut stalled, std::time::Duration::from_secs(5))
        .await
        .expect("a stalled body is never answered");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");

    // A body that keeps trickling (a byte every 100 ms, each well within an idle timeout):
    // cut at the total deadline, 408.
    let mut trickling = tokio::net::TcpStream::connect(&addr).await.unwrap();
    trickling
        .write_all(
            b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n",
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    // Up to 8 s of trickle: the server answers and closes long before.
    for _ in 0..80 {
        if trickling.write_all(b" ").await.is_err() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let cut_after = started.elapsed();
    let answer = read_until_closed(&mut trickling, std::time::Duration::from_secs(5))
        .await
        .expect("a trickling body is never answered");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        cut_after < std::time::Duration::from_secs(4),
        "cut after {cut_after:?}"
    );

    // A webhook whose body stops arriving: 408, which its sender retries (not 400).
    let mut webhook = tokio::net::TcpStream::connect(&addr).await.unwrap();
    webhook
        .write_all(
            b"POST /webhooks/backend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"id\":",
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut webhook, std::time::Duration::from_secs(5))
        .await
        .expect("a stalled webhook is never answered");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // The server still answers others.
    let (status, _) = app.post(None, "{ __typename }", json!({})).await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test]
async fn gets_a_browser_could_send_cross_site_are_refused_and_cors_is_from_config() {
    let app = TestApp::spawn_with(Default::default(), |c| {
        c.server.cors_allow_origins = vec!["https://shop.example.com".into()];
    })
    .await;
    let plain = reqwest::Client::new();
    let get = |headers: &[(&'static str, &'static str)]| {
        let mut request = plain
            .get(app.url("/graphql"))
            .query(&[("query", "{ __typename }")]);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    // What an <img> or a form could send: refused before anything runs.
    for headers in [
        vec![],
        vec![("content-type", "text/plain")],
        vec![("content-type", "application/x-www-form-urlencoded")],
        vec![("apollo-require-preflight", "")],
        // Credentials a browser keeps and sends on its own.
        vec![("authorization", "Basic YWRhOmxvdmVsYWNl")],
    ] {
        let response = get(&headers).await.unwrap();
        assert_eq!(response.status(), 400, "{headers:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "CSRF_PREVENTION",
            "{headers:?}"
        );
    }
    // What only a preflighted request (or a non-browser client) sends: served.
    for headers in [
        vec![("content-type", "application/json")],
        vec![("apollo-require-preflight", "true")],
        vec![("x-apollo-operation-name", "Typename")],
    ] {
        let response = get(&headers).await.unwrap();
        assert_eq!(response.status(), 200, "{headers:?}");
    }
    // A bearer token, which only a script sets (urql's persisted GETs carry nothing else).
    let token = app.token("cust-0001").await;
    let response = plain
        .get(app.url("/graphql"))
        .query(&[("query", "{ me { id } }")])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // CORS: the configured origin may call, with the headers GraphQL clients send; another
    // origin gets no CORS headers (its browser refuses).
    let preflight = |origin: &'static str| {
        plain
            .request(reqwest::Method::OPTIONS, app.url("/graphql"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type, authorization",
            )
            .send()
    };
    let allowed = preflight("https://shop.example.com").await.unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    let allowed_headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    let other = preflight("https://evil.example.com").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    app.stop().await;
}

#[tokio::test]
async fn the_production_profile_turns_off_what_a_public_endpoint_should_not_show() {
    let development = TestApp::spawn().await;
    let (_, body) = development
        .post(None, "{ produkts { id } }", json!({}))
        .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Did you mean"),
        "{body}"
    );
    development.stop().await;

    let app = TestApp::spawn_with(Default::default(), |c| {
        c.server.profile = switchyard::config::Profile::Production;
        // Any document, to see what is refused for introspection (`persisted` tests the
        // profile's trusted documents).
        c.persisted_queries.trusted_only = Some(false);
    })
    .await;
    let (_, body) = app
        .post(None, "{ __schema { types { name } } }", json!({}))
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "INTROSPECTION_DISABLED",
        "{body}"
    );
    assert!(body.get("data").is_none(), "{body}");
    let (status, _) = app.post(None, "{ __typename }", json!({})).await;
    assert_eq!(status, 200, "__typename is not introspection");
    let (_, body) = app.post(None, "{ produkts { id } }", json!({})).await;
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(!message.contains("Did you mean"), "{message}");
    let playground = app.http.get(app.url("/playground/")).send().await.unwrap();
    assert_eq!(playground.status(), 404);
    // What is set explicitly wins over the profile.
    app.stop().await;
    let app = TestApp::spawn_with(Default::default(), |c| {
        c.server.profile = switchyard::config::Profile::Production;
        c.server.playground = Some(true);
        c.server.introspection = Some(true);
    })
    .await;
    let playground = app.http.get(app.url("/playground/")).send().await.unwrap();
    assert_eq!(playground.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_document_costs_what_it_fetches_and_a_costly_one_is_refused_before_any_call() {
    let app = TestApp::spawn().await;
    let agent = app.token("agent-01").await;
    app.reset_counts();
    // 50 customers with 50 orders each and their parcels: 2,500 orders, one carrier call per
    // parcel. Each field counts 1, so this was once 12 fields.
    let fan_out = "{ customers(first: 50) { edges { node { orders(first: 50) { edges { node { \
                   shipment { status events { status } } } } } } } } }";
    let (status, body) = app.post(Some(&agent), fan_out, json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "MAX_COMPLEXITY_LIMIT"
    );
    assert!(app.counts().is_empty(), "{:?}", app.counts());
    // A customer's home screen with a long order list stays within the limit.
    let customer = app.token("cust-0001").await;
    let long_home =
        crate::support::operation("HomeScreen").replace("orders(first: 5)", "orders(first: 50)");
    assert!(long_home.contains("orders(first: 50)"));
    let (status, body) = app.post(Some(&customer), &long_home, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("errors").is_none(), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_keeps_the_clients() {
    let app = TestApp::spawn().await;
    let fresh = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    let id = fresh.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let kept = app
        .http
        .post(app.url("/graphql"))
        .header("x-request-id", "app-7f3a")
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "app-7f3a");
    // An id that is no sane id (too long, odd characters) is replaced.
    for odd in ["x".repeat(500), "a b\"} fake=1".to_owned()] {
        let replaced = app
            .http
            .post(app.url("/graphql"))
            .header("x-request-id", odd.as_str())
            .json(&json!({"query": "{ __typename }"}))
            .send()
            .await
            .unwrap();
        assert_eq!(replaced.headers()["x-request-id"].len(), 36, "{odd}");
    }
    app.stop().await;
}

#[tokio::test]
async fn federation_fields_are_bounded_and_off_in_production() {
    let app = TestApp::spawn().await;
    let agent = app.token("agent-01").await;
    let representations: Vec<Value> = (1..=101)
        .map(|i| json!({"__typename": "Product", "id": format!("prod-{i:04}")}))
        .collect();
    let entities =
        "query($r: [_Any!]!) { _entities(representations: $r) { ... on Product { id } } }";
    app.reset_counts();
    let (status, body) = app
        .post(Some(&agent), entities, json!({"r": representations}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "MAX_ENTITIES_LIMIT"
    );
    assert!(app.counts().is_empty(), "{:?}", app.counts());
    let (status, _) = app
        .post(Some(&agent), entities, json!({"r": representations[..100]}))
        .await;
    assert_eq!(status, 200);
    app.stop().await;

    let app = TestApp::spawn_with(Default::default(), |c| {
        c.server.profile = switchyard::config::Profile::Production;
        c.persisted_queries.trusted_only = Some(false);
    })
    .await;
    for query in ["{ _service { sdl } }", "{ a: _service { sdl } }"] {
        let (status, body) = app.post(None, query, json!({})).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "FEDERATION_DISABLED",
            "{query}"
        );
    }
    app.stop().await;
}
