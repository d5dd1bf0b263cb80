//! `@defer`: incremental delivery over HTTP (`multipart/mixed`, Apollo's deferSpec=20220824),
//! websockets and SSE, checked part by part, with the carrier slowed by the sandbox's knob;
//! what it costs upstream; the whole result for clients that do not take parts; Apollo
//! Client in Node against it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{TestApp, WAIT, operation, sse, ws};

const ADA: &str = "cust-0001";
/// What Apollo Client sends for an operation with `@defer`.
const APOLLO_ACCEPT: &str = "multipart/mixed;deferSpec=20220824,application/json";
/// The carrier's added latency in the slow tests.
const SLOW_CARRIER: Duration = Duration::from_millis(2000);

/// A Switchyard whose carrier answers after [`SLOW_CARRIER`], without the entity cache (so
/// that every request's upstream calls can be counted).
async fn slow_carrier_app() -> TestApp {
    TestApp::spawn_with(
        sandbox::SandboxConfig {
            carrier: sandbox::UpstreamKnobs::slow(SLOW_CARRIER.as_millis() as u64),
            ..Default::default()
        },
        |c| c.cache.enabled = false,
    )
    .await
}

/// One part of a multipart answer, and when it had arrived (since the request was sent).
struct Part {
    at: Duration,
    body: Value,
}

/// POSTs `query` accepting multipart; answers the status, content type and parts as they
/// came.
async fn post_multipart(app: &TestApp, token: &str, query: &str) -> (u16, String, Vec<Part>) {
    let sent = Instant::now();
    let mut response = app
        .http
        .post(app.url("/graphql"))
        .header("accept", APOLLO_ACCEPT)
        .bearer_auth(token)
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut parts = Vec::new();
    let mut buffer = String::new();
    let delimiter = "\r\n---";
    loop {
        let chunk = tokio::time::timeout(WAIT, response.chunk())
            .await
            .expect("the answer goes on")
            .expect("the body reads");
        let Some(chunk) = chunk else { break };
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        // Each part is complete once the delimiter after it has come.
        while let Some(start) = buffer.find(delimiter) {
            let rest = &buffer[start + delimiter.len()..];
            let Some(end) = rest.find(delimiter) else {
                break;
            };
            let message = &rest[..end];
            let (headers, body) = message
                .split_once("\r\n\r\n")
                .unwrap_or_else(|| panic!("a part without headers: {message:?}"));
            assert_eq!(
                headers.trim().to_ascii_lowercase(),
                "content-type: application/json; charset=utf-8"
            );
            parts.push(Part {
                at: sent.elapsed(),
                body: serde_json::from_str(body).unwrap(),
            });
            buffer.drain(..start + delimiter.len() + end);
        }
    }
    assert_eq!(buffer, "\r\n-----\r\n", "the body closes the multipart");
    (status, content_type, parts)
}

/// The whole result from an initial payload and incremental ones, merged as Apollo Client
/// merges them: each item's `data` into the object at its `path`.
fn merged(payloads: &[Value]) -> Value {
    let mut data = payloads[0]["data"].clone();
    for payload in &payloads[1..] {
        for item in payload["incremental"].as_array().into_iter().flatten() {
            let mut at = &mut data;
            for key in item["path"].as_array().unwrap() {
                at = match key {
                    Value::Number(i) => &mut at[i.as_u64().unwrap() as usize],
                    Value::String(k) => &mut at[k.as_str()],
                    other => panic!("a path segment {other}"),
                };
            }
            for (key, value) in item["data"].as_object().unwrap() {
                at[key.as_str()] = value.clone();
            }
        }
    }
    data
}

/// The paths of the shipped orders' shipments in a home screen's data.
fn shipment_paths(data: &Value) -> Vec<Value> {
    data["me"]["orders"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, edge)| !edge["node"]["shipment"].is_null())
        .map(|(i, _)| json!(["me", "orders", "edges", i, "node", "shipment"]))
        .collect()
}

/// Checks the payloads of HomeScreenDeferred: the initial one without tracking, then one
/// `tracking` item per shipped order, the last with `hasNext: false`; answers the merged data.
fn check_home_screen_payloads(payloads: &[Value]) -> Value {
    let first = &payloads[0];
    assert_eq!(first["hasNext"], true, "{first}");
    assert!(first.get("errors").is_none(), "{first}");
    assert_eq!(first["data"]["me"]["id"], ADA);
    let expected = shipment_paths(&first["data"]);
    assert!(!expected.is_empty(), "Ada has shipped orders: {first}");
    for path in &expected {
        let shipment = &first["data"]["me"]["orders"]["edges"][path[3].as_u64().unwrap() as usize]
            ["node"]["shipment"];
        assert!(shipment["trackingNumber"].is_string(), "{shipment}");
        assert!(
            shipment.get("status").is_none(),
            "tracking came first: {shipment}"
        );
    }
    let mut paths = Vec::new();
    for (n, payload) in payloads[1..].iter().enumerate() {
        let last = n + 2 == payloads.len();
        assert_eq!(payload["hasNext"], !last, "{payload}");
        assert!(payload.get("data").is_none(), "{payload}");
        for item in payload["incremental"].as_array().into_iter().flatten() {
            assert_eq!(item["label"], "tracking", "{item}");
            assert!(item.get("errors").is_none(), "{item}");
            assert!(item["data"]["status"].is_string(), "{item}");
            assert!(
                !item["data"]["events"].as_array().unwrap().is_empty(),
                "{item}"
            );
            paths.push(item["path"].clone());
        }
    }
    paths.sort_by_key(Value::to_string);
    let mut expected = expected;
    expected.sort_by_key(Value::to_string);
    assert_eq!(paths, expected, "one item per shipped order");
    merged(payloads)
}

#[tokio::test]
async fn the_first_part_comes_before_the_slow_carrier_and_the_parts_cost_no_extra_call() {
    let app = slow_carrier_app().await;
    let token = app.token(ADA).await;
    // Once for the CRM's token, so that both runs below count the same calls.
    let whole = app.data(&token, &operation("HomeScreen"), json!({})).await;

    app.reset_counts();
    app.data(&token, &operation("HomeScreen"), json!({})).await;
    let whole_counts = app.counts();
    assert!(whole_counts.contains_key("carrier"), "{whole_counts:?}");

    app.reset_counts();
    let (status, content_type, parts) =
        post_multipart(&app, &token, &operation("HomeScreenDeferred")).await;
    assert_eq!(status, 200);
    assert_eq!(
        content_type,
        "multipart/mixed; boundary=\"-\"; deferSpec=20220824"
    );
    assert!(parts.len() >= 2, "an initial part and deferred ones");
    // The first part did not wait for the carrier; the last one did.
    assert!(
        parts[0].at < SLOW_CARRIER,
        "first part after {:?}",
        parts[0].at
    );
    assert!(parts.last().unwrap().at >= SLOW_CARRIER);
    let payloads: Vec<Value> = parts.into_iter().map(|p| p.body).collect();
    let data = check_home_screen_payloads(&payloads);
    // The parts put together are the whole home screen, and cost the same upstream calls.
    assert_eq!(data, whole);
    assert_eq!(app.counts(), whole_counts);
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_take_multipart_gets_the_whole_result_at_once() {
    let app = TestApp::spawn_with(Default::default(), |c| c.cache.enabled = false).await;
    let token = app.token(ADA).await;
    let whole = app.data(&token, &operation("HomeScreen"), json!({})).await;
    // The modern client's Accept (graphql-response+json, json): one JSON result.
    let response = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(&token)
        .json(&json!({ "query": operation("HomeScreenDeferred") }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/graphql-response+json"
    );
    let body: Value = response.json().await.unwrap();
    assert!(body.get("hasNext").is_none(), "{body}");
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(body["data"], whole);
    app.stop().await;
}

#[tokio::test]
async fn over_websockets_the_parts_are_next_messages_then_complete() {
    let app = slow_carrier_app().await;
    let mut client = ws::signed_in(&app, ADA).await;
    let sent = Instant::now();
    client
        .subscribe("1", &operation("HomeScreenDeferred"))
        .await;
    let mut payloads = Vec::new();
    let mut first_at = None;
    loop {
        let message = client.recv_skipping_pings().await;
        match message["type"].as_str() {
            Some("next") => {
                assert_eq!(message["id"], "1");
                first_at.get_or_insert(sent.elapsed());
                payloads.push(message["payload"].clone());
            }
            Some("complete") => break,
            _ => panic!("unexpected {message}"),
        }
    }
    let last_at = sent.elapsed();
    assert!(first_at.unwrap() < SLOW_CARRIER, "first after {first_at:?}");
    assert!(last_at >= SLOW_CARRIER);
    check_home_screen_payloads(&payloads);
    client.close().await;
    app.stop().await;
}

#[tokio::test]
async fn over_sse_the_parts_are_next_events_then_complete() {
    let app = slow_carrier_app().await;
    let token = app.token(ADA).await;
    let sent = Instant::now();
    let mut events = sse::sse(
        &app,
        Some(&token),
        json!({ "query": operation("HomeScreenDeferred") }),
    )
    .await
    .stream();
    let first = events.next().await;
    assert!(
        sent.elapsed() < SLOW_CARRIER,
        "first after {:?}",
        sent.elapsed()
    );
    let mut payloads = vec![first];
    while payloads.last().unwrap()["hasNext"] == true {
        payloads.push(events.next().await);
    }
    assert!(sent.elapsed() >= SLOW_CARRIER);
    events.complete().await;
    check_home_screen_payloads(&payloads);
    app.stop().await;
}

#[tokio::test]
async fn nested_defers_come_after_their_parent_with_labels_and_if_false_is_not_deferred() {
    let app = TestApp::spawn().await;
    let token = app.token(ADA).await;
    let query = r#"query Nested($now: Boolean! = false) {
        me {
            id
            ... @defer(if: $now) { email }
            ... Orders @defer(label: "orders")
        }
    }
    fragment Orders on Customer {
        name
        orders(first: 2) { edges { node { id ... @defer(label: "lines") { lines { lineNo } } } } }
    }"#;
    let (_, _, parts) = post_multipart(&app, &token, query).await;
    let payloads: Vec<Value> = parts.into_iter().map(|p| p.body).collect();
    // `if: false`: email comes first, with the id.
    assert!(
        payloads[0]["data"]["me"]["email"].is_string(),
        "{}",
        payloads[0]
    );
    assert!(payloads[0]["data"]["me"].get("name").is_none());
    let items: Vec<&Value> = payloads[1..]
        .iter()
        .flat_map(|p| p["incremental"].as_array().unwrap().iter())
        .collect();
    let labels: Vec<&str> = items.iter().map(|i| i["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["orders", "lines", "lines"], "{payloads:?}");
    assert_eq!(items[0]["path"], json!(["me"]));
    assert!(items[0]["data"]["name"].is_string());
    assert_eq!(
        items[1]["path"],
        json!(["me", "orders", "edges", 0, "node"])
    );
    assert_eq!(
        items[2]["path"],
        json!(["me", "orders", "edges", 1, "node"])
    );
    assert!(items[1]["data"]["lines"].is_array());
    assert_eq!(payloads.last().unwrap()["hasNext"], false);
    app.stop().await;
}

#[tokio::test]
async fn a_failing_deferred_part_reports_its_errors_in_its_items() {
    let app = TestApp::spawn_with(
        sandbox::SandboxConfig {
            carrier: sandbox::UpstreamKnobs::failing(1.0),
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let token = app.token(ADA).await;
    let (status, _, parts) = post_multipart(&app, &token, &operation("HomeScreenDeferred")).await;
    assert_eq!(status, 200);
    let payloads: Vec<Value> = parts.into_iter().map(|p| p.body).collect();
    assert!(payloads[0].get("errors").is_none(), "{}", payloads[0]);
    let items: Vec<&Value> = payloads[1..]
        .iter()
        .flat_map(|p| p["incremental"].as_array().unwrap().iter())
        .collect();
    assert!(!items.is_empty());
    for item in items {
        assert_eq!(item["data"]["status"], Value::Null, "{item}");
        let errors = item["errors"].as_array().expect("the item's errors");
        assert!(!errors.is_empty());
        for error in errors {
            assert_eq!(
                error["extensions"]["code"], "UPSTREAM_UNAVAILABLE",
                "{error}"
            );
            assert_eq!(error["extensions"]["source"], "carrier");
            let path = error["path"].as_array().unwrap();
            assert!(
                path.starts_with(item["path"].as_array().unwrap()),
                "{error}"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn the_request_deadline_holds_for_the_deferred_parts() {
    let app = TestApp::spawn_with(
        sandbox::SandboxConfig {
            carrier: sandbox::UpstreamKnobs::slow(SLOW_CARRIER.as_millis() as u64),
            ..Default::default()
        },
        |c| c.server.request_timeout = Duration::from_millis(700),
    )
    .await;
    let token = app.token(ADA).await;
    let (_, _, parts) = post_multipart(&app, &token, &operation("HomeScreenDeferred")).await;
    assert_eq!(parts[0].body["hasNext"], true);
    let last = parts.last().unwrap();
    assert!(last.at < SLOW_CARRIER, "the stream ended at {:?}", last.at);
    assert_eq!(last.body["hasNext"], false, "{}", last.body);
    let errors: Vec<&Value> = last.body["incremental"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["errors"].as_array().into_iter().flatten())
        .collect();
    assert!(
        errors.iter().any(|e| e["extensions"]["code"] == "TIMEOUT"
            || e["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"),
        "{}",
        last.body
    );
    app.stop().await;
}

#[tokio::test]
async fn labels_are_short_unique_strings_of_the_document() {
    let app = TestApp::spawn().await;
    let token = app.token(ADA).await;
    let long = "l".repeat(129);
    for (query, variables, code) in [
        (
            format!("{{ me {{ ... @defer(label: \"{long}\") {{ id }} }} }}"),
            json!({}),
            "MAX_DEFER_LABEL_LIMIT",
        ),
        (
            "query($l: String) { me { ... @defer(label: $l) { id } } }".to_owned(),
            json!({"l": "x"}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "{ me { ... @defer(label: \"a\") { id } ... @defer(label: \"a\") { name } } }"
                .to_owned(),
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
    ] {
        let (status, body) = app.post(Some(&token), &query, variables).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], code,
            "{query}: {body}"
        );
    }
    // A label of the longest length is fine.
    let label = "l".repeat(128);
    let (status, body) = app
        .post(
            Some(&token),
            &format!("{{ me {{ ... @defer(label: \"{label}\") {{ id }} }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["me"]["id"], ADA, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn too_many_deferred_fragments_are_refused_and_defer_on_a_field_is_invalid() {
    let app = TestApp::spawn().await;
    let token = app.token(ADA).await;
    let many: String = (0..17)
        .map(|i| format!("... @defer(label: \"d{i}\") {{ id }} "))
        .collect();
    let (status, body) = app
        .post(Some(&token), &format!("{{ me {{ {many} }} }}"), json!({}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "MAX_DEFERRED_FRAGMENTS_LIMIT"
    );
    let (status, body) = app
        .post(Some(&token), "{ me { id @defer } }", json!({}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );
    // Introspection knows the directive.
    let (_, body) = app
        .post(
            Some(&token),
            r#"{ __schema { directives { name locations args { name type { kind name ofType { name } } defaultValue } } } }"#,
            json!({}),
        )
        .await;
    let defer = body["data"]["__schema"]["directives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "defer")
        .cloned()
        .expect("@defer in introspection");
    assert_eq!(
        defer["locations"],
        json!(["FRAGMENT_SPREAD", "INLINE_FRAGMENT"])
    );
    assert_eq!(defer["args"][0]["name"], "label");
    assert_eq!(defer["args"][1]["name"], "if");
    assert_eq!(defer["args"][1]["defaultValue"], "true");
    app.stop().await;
}

#[tokio::test]
async fn a_mutation_with_defer_is_answered_in_one_result() {
    let app = TestApp::spawn().await;
    let token = app.token(ADA).await;
    let response = app
        .http
        .post(app.url("/graphql"))
        .header("accept", APOLLO_ACCEPT)
        .bearer_auth(&token)
        .json(&json!({
            "query": r#"mutation { registerDevice(input: {platform: ANDROID, fcmToken: "defer-test", appVersion: "1.0", locale: "en"}) { platform ... @defer { id } } }"#
        }))
        .send()
        .await
        .unwrap();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(content_type, "application/json", "{body}");
    assert!(body.get("hasNext").is_none(), "{body}");
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(body["data"]["registerDevice"]["platform"], "ANDROID");
    assert!(body["data"]["registerDevice"]["id"].is_string(), "{body}");
    app.stop().await;
}

/// Where the Node client lives.
fn apollo_client_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/apollo-defer")
}

#[tokio::test]
async fn apollo_client_in_node_gets_the_home_screen_before_the_slow_carrier_answers() {
    let dir = apollo_client_dir();
    if !dir.join("node_modules/@apollo/client").is_dir() {
        // Installed once, as the lockfile pins it (only this test uses the folder).
        let npm = tokio::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .await
            .expect("`npm` runs (node 20 and npm are needed for this test)");
        assert!(
            npm.status.success(),
            "`npm ci --prefix tests/clients/apollo-defer` failed (the npm registry is needed): {}",
            String::from_utf8_lossy(&npm.stderr)
        );
    }
    let app = slow_carrier_app().await;
    let token = app.token(ADA).await;
    let operation_file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schema/operations/HomeScreenDeferred.graphql");
    let mut node = tokio::process::Command::new("node");
    node.arg(dir.join("home-screen-deferred.mjs"))
        .arg(app.url("/graphql"))
        .arg(&token)
        .arg(&operation_file)
        .current_dir(&dir)
        .kill_on_drop(true);
    let output = tokio::time::timeout(WAIT, node.output())
        .await
        .expect("the Node client ends")
        .expect("`node` runs (node 20 is needed for this test)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the Node client failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    // The first result the app sees has the home screen without the tracking, before the
    // carrier has answered; the last has every shipment tracked, after.
    let first = results
        .iter()
        .find(|r| r["customer"] == ADA)
        .unwrap_or_else(|| panic!("no result with data: {stdout}"));
    assert!(first["shipments"].as_u64().unwrap() > 0, "{stdout}");
    assert_eq!(first["tracked"], 0, "{stdout}");
    assert_eq!(first["errors"], json!([]), "{stdout}");
    assert!(
        first["at_ms"].as_u64().unwrap() < SLOW_CARRIER.as_millis() as u64,
        "{stdout}"
    );
    let last = results.last().unwrap();
    assert_eq!(last["tracked"], last["shipments"], "{stdout}");
    assert_eq!(last["errors"], json!([]), "{stdout}");
    assert!(
        last["at_ms"].as_u64().unwrap() >= SLOW_CARRIER.as_millis() as u64,
        "{stdout}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_goes_away_stops_the_deferred_work() {
    // Each backend answer takes 400 ms: the deferred fragment reads the orders, then (a wave
    // later) their products.
    let app = TestApp::spawn_with(
        sandbox::SandboxConfig {
            backend: sandbox::UpstreamKnobs::slow(400),
            ..Default::default()
        },
        |c| c.cache.enabled = false,
    )
    .await;
    let token = app.token(ADA).await;
    let query = r#"{ me { id ... @defer { orders(first: 2) { edges { node { lines { product { name } } } } } } } }"#;
    let products = |app: &TestApp| {
        app.counts()
            .get("backend")
            .and_then(|routes| routes.get("GET /products").copied())
            .unwrap_or(0)
    };
    // Read to the end, it reads the products.
    app.reset_counts();
    let (_, _, parts) = post_multipart(&app, &token, query).await;
    assert_eq!(parts.last().unwrap().body["hasNext"], false);
    assert_eq!(products(&app), 1);
    // Gone after the first part (with the orders on their way): the products are never read.
    app.reset_counts();
    let mut response = app
        .http
        .post(app.url("/graphql"))
        .header("accept", APOLLO_ACCEPT)
        .bearer_auth(&token)
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    while seen.matches("\r\n---").count() < 2 {
        let chunk = tokio::time::timeout(WAIT, response.chunk())
            .await
            .unwrap()
            .unwrap()
            .expect("a first part");
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(seen.contains(r#""hasNext":true"#), "{seen}");
    drop(response);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(products(&app), 0, "{:?}", app.counts());
    app.stop().await;
}
