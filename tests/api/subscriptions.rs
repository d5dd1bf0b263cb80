//! Subscriptions end to end, as clients see them: graphql-transport-ws and the legacy
//! graphql-ws over a real websocket client, GraphQL over SSE over real HTTP, against the real
//! server and its sandbox.
//!
//! Most tests cover the protocols without any event (queries over `subscribe`, every close
//! code, limits, expiry, shutdown); the tests at the end need the event pipeline (sandbox
//! webhooks -> ingest -> bus -> hub) and cover results driven by changes upstream, including
//! what a slow client does to its own subscriptions (and to nobody else's).

use std::time::{Duration, Instant};

use sandbox::{SandboxConfig, Upstream, UpstreamKnobs};
use serde_json::{Value, json};

use crate::support::issuer::{Issuer, customer_claims};
use crate::support::sse::{SseResponse, sse};
use crate::support::ws::{
    LEGACY, MODERN, connect, connect_slow_reader, refused_status, signed_in, try_connect,
};
use crate::support::{TestApp, WAIT, doubling_fragments, operation};

const ADA: &str = "cust-0001";
const AGENT: &str = "agent-01";
/// A subscription that stays open without events (agents see every task offered to them).
const TASKS: &str = "subscription { taskAssigned { id name } }";

fn codes(errors: &Value) -> Vec<&str> {
    errors
        .as_array()
        .expect("an array of errors")
        .iter()
        .map(|e| {
            e["extensions"]["code"]
                .as_str()
                .expect("every error has a code")
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// graphql-transport-ws
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_connection_is_acknowledged_and_pings_are_answered() {
    let app = TestApp::spawn().await;
    let mut client = signed_in(&app, ADA).await;

    client
        .send(json!({"type": "ping", "payload": {"at": 1}}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "pong", "payload": {"at": 1}})
    );
    client.send(json!({"type": "ping"})).await;
    assert_eq!(client.recv().await, json!({"type": "pong"}));
    // A pong needs no answer (it is a client's heartbeat) and closes nothing.
    client.send(json!({"type": "pong"})).await;
    client.expect_quiet().await;
    app.stop().await;
}

#[tokio::test]
async fn the_subprotocol_is_negotiated() {
    let app = TestApp::spawn().await;
    let both = try_connect(&app, &[LEGACY, MODERN]).await.unwrap();
    assert_eq!(
        both.protocol.as_deref(),
        Some(MODERN),
        "the spec'd one is preferred"
    );
    let legacy = try_connect(&app, &[LEGACY]).await.unwrap();
    assert_eq!(legacy.protocol.as_deref(), Some(LEGACY));
    assert_eq!(refused_status(try_connect(&app, &[]).await), 400);
    assert_eq!(
        refused_status(try_connect(&app, &["graphql-sse"]).await),
        400
    );
    app.stop().await;
}

#[tokio::test]
async fn the_token_is_read_where_clients_put_it() {
    let app = TestApp::spawn().await;
    let token = app.token(ADA).await;
    for payload in [
        json!({"authorization": format!("Bearer {token}")}),
        json!({"headers": {"Authorization": format!("Bearer {token}")}}),
    ] {
        let mut client = connect(&app, MODERN).await;
        client
            .send(json!({"type": "connection_init", "payload": payload}))
            .await;
        assert_eq!(client.recv().await, json!({"type": "connection_ack"}));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_query_over_subscribe_is_one_next_then_complete() {
    let app = TestApp::spawn().await;
    let mut client = signed_in(&app, ADA).await;
    client.subscribe("q1", "{ me { id } }").await;
    assert_eq!(
        client.recv().await,
        json!({"type": "next", "id": "q1", "payload": {"data": {"me": {"id": ADA}}}})
    );
    assert_eq!(client.recv().await, json!({"type": "complete", "id": "q1"}));
    // A completed id may be used again at once.
    client.subscribe("q1", "{ me { id } }").await;
    assert_eq!(client.recv().await["type"], "next");
    assert_eq!(client.recv().await, json!({"type": "complete", "id": "q1"}));
    app.stop().await;
}

#[tokio::test]
async fn a_mutation_over_subscribe_runs_once() {
    let app = TestApp::spawn().await;
    let mut client = signed_in(&app, ADA).await;
    client
        .send(json!({"type": "subscribe", "id": "m1", "payload": {
            "query": operation("PlaceOrder"),
            "operationName": "PlaceOrder",
            "variables": {"input": {"lines": [{"productId": "prod-0001", "quantity": 1}]}},
        }}))
        .await;
    let next = client.recv().await;
    assert_eq!(next["type"], "next", "{next:#}");
    assert_eq!(next["id"], "m1");
    assert_eq!(next["payload"]["data"]["placeOrder"]["status"], "CONFIRMED");
    assert!(next["payload"].get("errors").is_none(), "{next:#}");
    assert_eq!(client.recv().await, json!({"type": "complete", "id": "m1"}));
    app.stop().await;
}

#[tokio::test]
async fn a_document_that_does_not_validate_gets_one_error_and_no_complete() {
    let app = TestApp::spawn().await;
    let mut client = signed_in(&app, ADA).await;
    client.subscribe("v1", "subscription { nope }").await;
    let error = client.recv().await;
    assert_eq!(error["type"], "error", "{error:#}");
    assert_eq!(error["id"], "v1");
    assert_eq!(codes(&error["payload"]), ["GRAPHQL_VALIDATION_FAILED"]);
    let message = error["payload"][0]["message"].as_str().unwrap();
    assert!(message.contains("Unknown field \"nope\""), "{message}");
    client.expect_quiet().await;

    client.subscribe("v2", "{ me { id }").await;
    let error = client.recv().await;
    assert_eq!(
        error["type"], "error",
        "a syntax error is a request error too"
    );
    assert_eq!(codes(&error["payload"]), ["GRAPHQL_PARSE_FAILED"]);
    client.expect_quiet().await;

    // The id is free again after its error.
    client.subscribe("v1", "{ me { id } }").await;
    assert_eq!(client.recv().await["type"], "next");
    app.stop().await;
}

#[tokio::test]
async fn an_execution_error_is_a_next_then_complete() {
    let app = TestApp::spawn().await;
    let mut client = signed_in(&app, ADA).await;
    // No such order: the operation ran, and its one result carries the error.
    client
        .subscribe(
            "e1",
            "subscription { orderUpdated(id: \"ord-999999\") { id } }",
        )
        .await;
    let next = client.recv().await;
    assert_eq!(next["type"], "next", "{next:#}");
    assert_eq!(next["payload"]["data"], Value::Null);
    assert_eq!(codes(&next["payload"]["errors"]), ["NOT_FOUND"]);
    assert_eq!(
        next["payload"]["errors"][0]["path"],
        json!(["orderUpdated"])
    );
    assert_eq!(client.recv().await, json!({"type": "complete", "id": "e1"}));
    app.stop().await;
}

#[tokio::test]
async fn client_complete_stops_a_subscription() {
    let app = TestApp::spawn().await;
    let mut client = signed_in(&app, AGENT).await;
    client.subscribe("t", TASKS).await;
    client.expect_quiet().await;
    client.send(json!({"type": "complete", "id": "t"})).await;
    // The id is free: reusing it is no 4409, and the server says nothing about the stop.
    client.subscribe("t", TASKS).await;
    client.expect_quiet().await;
    // Completing an unknown id is ignored.
    client.send(json!({"type": "complete", "id": "zzz"})).await;
    client.expect_quiet().await;
    app.stop().await;
}

#[tokio::test]
async fn the_server_pings_every_keepalive() {
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| {
        c.subscriptions.keepalive_ms = 100;
    })
    .await;
    let mut client = signed_in(&app, ADA).await;
    let started = Instant::now();
    assert_eq!(client.recv().await, json!({"type": "ping"}));
    client.send(json!({"type": "pong"})).await;
    assert_eq!(client.recv().await, json!({"type": "ping"}));
    assert!(started.elapsed() >= Duration::from_millis(150));
    app.stop().await;
}

#[tokio::test]
async fn too_many_subscriptions_on_one_connection_get_an_error() {
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| {
        c.subscriptions.max_subscriptions_per_connection = 2;
    })
    .await;
    let mut client = signed_in(&app, AGENT).await;
    client.subscribe("a", TASKS).await;
    client.subscribe("b", TASKS).await;
    client.subscribe("c", TASKS).await;
    let error = client.recv().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["id"], "c");
    assert_eq!(codes(&error["payload"]), ["TOO_MANY_SUBSCRIPTIONS"]);
    assert_eq!(
        error["payload"][0]["message"],
        "at most 2 operations may run at once on one connection: complete one first"
    );
    // Completing one makes room.
    client.send(json!({"type": "complete", "id": "a"})).await;
    client.subscribe("c", TASKS).await;
    client.expect_quiet().await;
    app.stop().await;
}

#[tokio::test]
async fn invalid_messages_close_with_4400() {
    let app = TestApp::spawn().await;
    let token = app.token(ADA).await;
    let cases = [
        ("not json", "Invalid message: not a JSON object"),
        (r#"{"payload":{}}"#, "Invalid message: no `type`"),
        (
            r#"{"type":"start","id":"1"}"#,
            r#"Invalid message: unknown type "start""#,
        ),
        (
            r#"{"type":"subscribe","payload":{"query":"{ me { id } }"}}"#,
            "Invalid message: `subscribe` needs a non-empty string `id`",
        ),
        (
            r#"{"type":"subscribe","id":"1"}"#,
            "Invalid message: `subscribe` needs a payload",
        ),
    ];
    for (text, reason) in cases {
        let mut client = connect(&app, MODERN).await;
        client.init(&token).await;
        client.send_text(text).await;
        client.expect_close(4400, reason).await;
    }
    // Before the ack too, and with a reason cut to what a close frame carries.
    let mut client = connect(&app, MODERN).await;
    let kind = "x".repeat(300);
    client.send(json!({"type": kind})).await;
    let (code, reason) = client.close_frame().await;
    assert_eq!(code, 4400);
    assert!(reason.len() <= 123, "{} bytes", reason.len());
    assert!(
        reason.starts_with("Invalid message: unknown type \"xxx"),
        "{reason}"
    );
    app.stop().await;
}

#[tokio::test]
async fn subscribe_before_the_ack_closes_with_4401() {
    let app = TestApp::spawn().await;
    let mut client = connect(&app, MODERN).await;
    client.subscribe("1", "{ me { id } }").await;
    client.expect_close(4401, "Unauthorized").await;
    app.stop().await;
}

#[tokio::test]
async fn a_missing_or_bad_token_closes_with_4403() {
    let app = TestApp::spawn().await;
    for payload in [
        json!({"Authorization": "Bearer not-a-jwt"}),
        json!({"Authorization": "Basic YWRhOmFkYQ=="}),
        json!({}),
        Value::Null,
    ] {
        let mut client = connect(&app, MODERN).await;
        client
            .send(json!({"type": "connection_init", "payload": payload}))
            .await;
        client.expect_close(4403, "Forbidden").await;
    }
    app.stop().await;
}

#[tokio::test]
async fn no_init_in_time_closes_with_4408() {
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| {
        c.subscriptions.init_timeout_ms = 200;
    })
    .await;
    let started = Instant::now();
    let mut client = connect(&app, MODERN).await;
    client
        .expect_close(4408, "Connection initialisation timeout")
        .await;
    assert!(started.elapsed() >= Duration::from_millis(200));

    // An initialised connection outlives the timeout.
    let mut client = signed_in(&app, ADA).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    client.expect_quiet().await;
    app.stop().await;
}

#[tokio::test]
async fn a_running_id_reused_closes_with_4409() {
    let app = TestApp::spawn().await;
    let mut client = signed_in(&app, AGENT).await;
    client.subscribe("dup", TASKS).await;
    client.subscribe("dup", TASKS).await;
    client
        .expect_close(4409, "Subscriber for dup already exists")
        .await;

    // A long id still makes a close frame that fits.
    let mut client = signed_in(&app, AGENT).await;
    let id = "i".repeat(200);
    client.subscribe(&id, TASKS).await;
    client.subscribe(&id, TASKS).await;
    let (code, reason) = client.close_frame().await;
    assert_eq!(code, 4409);
    assert!(reason.len() <= 123, "{} bytes", reason.len());
    assert!(reason.starts_with("Subscriber for iii"));
    app.stop().await;
}

#[tokio::test]
async fn a_second_init_closes_with_4429() {
    let app = TestApp::spawn().await;
    let token = app.token(ADA).await;
    let mut client = connect(&app, MODERN).await;
    client.init(&token).await;
    client
        .send(json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}))
        .await;
    client
        .expect_close(4429, "Too many initialisation requests")
        .await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Token expiry: tokens of our own issuer, with lifetimes of our choosing (the sandbox's dev
// issuer signs hour-long tokens).
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_connection_closes_with_4403_when_the_token_expires() {
    let issuer = Issuer::start().await;
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| issuer.trust(c, 0)).await;
    let mut client = connect(&app, MODERN).await;
    client.init(&issuer.token(ADA, 2)).await;
    let acked = Instant::now();
    client
        .subscribe("n", "subscription { notifications { id } }")
        .await;
    client.expect_close(4403, "Forbidden: token expired").await;
    let lived = acked.elapsed();
    assert!(
        lived >= Duration::from_millis(500) && lived < Duration::from_secs(4),
        "closed after {lived:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_expired_token_is_refused_even_within_the_leeway() {
    let issuer = Issuer::start().await;
    // 30 s of clock skew tolerated: the validator takes a token 5 s past `exp`, a live
    // connection does not.
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| issuer.trust(c, 30)).await;
    let mut client = connect(&app, MODERN).await;
    client
        .send(json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {}", issuer.token(ADA, -5))}}))
        .await;
    client.expect_close(4403, "Forbidden: token expired").await;

    let (status, body) = sse(
        &app,
        Some(&issuer.token(ADA, -5)),
        json!({"query": "{ me { id } }"}),
    )
    .await
    .json_error()
    .await;
    assert_eq!(status, 401);
    assert_eq!(codes(&body["errors"]), ["UNAUTHENTICATED"]);
    app.stop().await;
}

#[tokio::test]
async fn an_sse_stream_completes_when_the_token_expires() {
    let issuer = Issuer::start().await;
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| issuer.trust(c, 0)).await;
    let started = Instant::now();
    let mut stream = sse(
        &app,
        Some(&issuer.token(ADA, 3)),
        json!({"query": "subscription { notifications { id } }"}),
    )
    .await
    .stream();
    assert_eq!(
        stream.event().await,
        Some(("complete".to_owned(), String::new()))
    );
    assert_eq!(stream.event().await, None, "the stream ends after complete");
    let lived = started.elapsed();
    assert!(
        lived >= Duration::from_millis(500),
        "completed after {lived:?}"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// The legacy protocol (subscriptions-transport-ws)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_legacy_protocol_round_trip() {
    let app = TestApp::spawn().await;
    let token = app.token(ADA).await;
    let mut client = connect(&app, LEGACY).await;
    client
        .send(json!({"type": "connection_init", "payload": {"authToken": "ignored", "Authorization": format!("Bearer {token}")}}))
        .await;
    assert_eq!(client.recv().await, json!({"type": "connection_ack"}));
    assert_eq!(client.recv().await, json!({"type": "ka"}));

    client
        .send(json!({"type": "start", "id": "1", "payload": {"query": "{ me { id } }", "variables": {}}}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "data", "id": "1", "payload": {"data": {"me": {"id": ADA}}}})
    );
    assert_eq!(client.recv().await, json!({"type": "complete", "id": "1"}));

    client
        .send(json!({"type": "start", "id": "2", "payload": {"query": "subscription { nope }"}}))
        .await;
    let error = client.recv().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["id"], "2");
    assert_eq!(codes(&error["payload"]), ["GRAPHQL_VALIDATION_FAILED"]);

    client
        .send(json!({"type": "start", "id": "3", "payload": {"query": "subscription { notifications { id } }"}}))
        .await;
    client.send(json!({"type": "stop", "id": "3"})).await;
    // A bad message is reported, and the connection carries on.
    client.send_text("{").await;
    assert_eq!(
        client.recv().await,
        json!({"type": "connection_error", "payload": {"message": "Invalid message: not a JSON object"}})
    );
    client.send(json!({"type": "connection_terminate"})).await;
    client.expect_close(1000, "Normal closure").await;
    app.stop().await;
}

#[tokio::test]
async fn the_legacy_protocol_refuses_bad_tokens_with_connection_error() {
    let app = TestApp::spawn().await;
    let mut client = connect(&app, LEGACY).await;
    client
        .send(json!({"type": "connection_init", "payload": {"Authorization": "Bearer nope"}}))
        .await;
    let error = client.recv().await;
    assert_eq!(error["type"], "connection_error");
    let message = error["payload"]["message"].as_str().unwrap();
    assert!(message.starts_with("Forbidden: invalid token"), "{message}");
    client.expect_close(4403, "Forbidden").await;

    let mut client = connect(&app, LEGACY).await;
    client
        .send(json!({"type": "start", "id": "1", "payload": {"query": "{ me { id } }"}}))
        .await;
    let error = client.recv().await;
    assert_eq!(error["type"], "error");
    assert_eq!(codes(&error["payload"]), ["UNAUTHENTICATED"]);
    app.stop().await;
}

#[tokio::test]
async fn the_legacy_keepalive_repeats() {
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| {
        c.subscriptions.keepalive_ms = 100;
    })
    .await;
    let token = app.token(ADA).await;
    let mut client = connect(&app, LEGACY).await;
    client
        .send(json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}))
        .await;
    assert_eq!(client.recv().await, json!({"type": "connection_ack"}));
    for _ in 0..3 {
        assert_eq!(client.recv().await, json!({"type": "ka"}));
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// GraphQL over SSE
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_sse_query_is_one_next_then_complete() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    let mut stream = sse(&app, Some(&ada), json!({"query": "{ me { id } }"}))
        .await
        .stream();
    assert_eq!(stream.next().await, json!({"data": {"me": {"id": ADA}}}));
    stream.complete().await;

    // GET, with the operation in the query string.
    let response = app
        .http
        .get(app.url("/graphql/stream"))
        .query(&[
            (
                "query",
                "query Me($withId: Boolean!) { me { id @include(if: $withId) } }",
            ),
            ("operationName", "Me"),
            ("variables", r#"{"withId": true}"#),
        ])
        .header("accept", "text/event-stream")
        .bearer_auth(&ada)
        .send()
        .await
        .unwrap();
    let mut stream = SseResponse(response).stream();
    assert_eq!(stream.next().await, json!({"data": {"me": {"id": ADA}}}));
    stream.complete().await;
    app.stop().await;
}

#[tokio::test]
async fn sse_needs_a_valid_token() {
    let app = TestApp::spawn().await;
    let body = json!({"query": "{ me { id } }"});
    for token in [None, Some("not-a-jwt")] {
        let response = sse(&app, token, body.clone()).await;
        assert_eq!(
            response.0.headers()["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
        let (status, body) = response.json_error().await;
        assert_eq!(status, 401);
        assert_eq!(codes(&body["errors"]), ["UNAUTHENTICATED"]);
    }
    app.stop().await;
}

#[tokio::test]
async fn sse_request_errors() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;

    // A document that does not validate: reported in the stream, as the protocol says.
    let mut stream = sse(&app, Some(&ada), json!({"query": "subscription { nope }"}))
        .await
        .stream();
    let next = stream.next().await;
    assert!(next.get("data").is_none(), "{next:#}");
    assert_eq!(codes(&next["errors"]), ["GRAPHQL_VALIDATION_FAILED"]);
    stream.complete().await;

    // Before the stream starts: JSON, as GraphQL over HTTP answers.
    let (status, body) = sse(&app, Some(&ada), json!({"query": "{ me { id }"}))
        .await
        .json_error()
        .await;
    assert_eq!(status, 400);
    assert_eq!(codes(&body["errors"]), ["GRAPHQL_PARSE_FAILED"]);
    let (status, body) = sse(&app, Some(&ada), json!({"variables": {}}))
        .await
        .json_error()
        .await;
    assert_eq!(status, 400);
    assert_eq!(codes(&body["errors"]), ["BAD_REQUEST"]);
    let (status, _) = sse(
        &app,
        Some(&ada),
        json!({"query": "query A { me { id } }", "operationName": "B"}),
    )
    .await
    .json_error()
    .await;
    assert_eq!(status, 400);

    let get = |query: &'static str| {
        app.http
            .get(app.url("/graphql/stream"))
            .query(&[("query", query)])
            .header("accept", "text/event-stream")
            .bearer_auth(&ada)
            .send()
    };
    let response = get("mutation { cancelOrder(id: \"ord-000001\") { id } }")
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "POST");
    let (status, body) = SseResponse(response).json_error().await;
    assert_eq!(status, 405);
    assert_eq!(codes(&body["errors"]), ["METHOD_NOT_ALLOWED"]);

    let response = app
        .http
        .post(app.url("/graphql/stream"))
        .header("accept", "text/event-stream")
        .header("content-type", "text/plain")
        .bearer_auth(&ada)
        .body("{ me { id } }")
        .send()
        .await
        .unwrap();
    assert_eq!(SseResponse(response).json_error().await.0, 415);

    let response = app
        .http
        .post(app.url("/graphql/stream"))
        .header("accept", "application/json")
        .bearer_auth(&ada)
        .json(&json!({"query": "{ me { id } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(SseResponse(response).json_error().await.0, 406);
    app.stop().await;
}

#[tokio::test]
async fn sse_keeps_the_stream_alive() {
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| {
        c.subscriptions.keepalive_ms = 100;
    })
    .await;
    let agent = app.token(AGENT).await;
    let mut stream = sse(&app, Some(&agent), json!({"query": TASKS}))
        .await
        .stream();
    for _ in 0..3 {
        assert_eq!(stream.block().await.as_deref(), Some(":\n\n"));
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Both transports: the connection limit, and shutdown
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_with_503() {
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| {
        c.subscriptions.max_connections = 1;
    })
    .await;
    let ada = app.token(ADA).await;
    let first = connect(&app, MODERN).await;
    assert_eq!(refused_status(try_connect(&app, &[MODERN]).await), 503);
    let response = sse(&app, Some(&ada), json!({"query": "{ me { id } }"})).await;
    assert_eq!(response.0.headers()["retry-after"], "5");
    let (status, body) = response.json_error().await;
    assert_eq!(status, 503);
    assert_eq!(codes(&body["errors"]), ["TOO_MANY_CONNECTIONS"]);

    // A closed connection frees its place.
    first.close().await;
    let deadline = Instant::now() + WAIT;
    loop {
        match try_connect(&app, &[MODERN]).await {
            Ok(_) => break,
            Err(tokio_tungstenite::tungstenite::Error::Http(r))
                if r.status() == 503 && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the place was not freed: {e}"),
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1001_and_completes_sse_streams() {
    let app = TestApp::spawn().await;
    let mut modern = signed_in(&app, AGENT).await;
    modern.subscribe("t", TASKS).await;
    modern.expect_quiet().await;
    let mut legacy = connect(&app, LEGACY).await;
    let agent = app.token(AGENT).await;
    let mut stream = sse(&app, Some(&agent), json!({"query": TASKS}))
        .await
        .stream();

    let stopped = tokio::spawn(app.stop());
    modern.expect_close(1001, "Going away").await;
    legacy.expect_close(1001, "Going away").await;
    assert_eq!(
        stream.event().await,
        Some(("complete".to_owned(), String::new()))
    );
    assert_eq!(stream.event().await, None);
    tokio::time::timeout(WAIT, stopped)
        .await
        .expect("the server stops within the timeout")
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// Results driven by upstream events: they need the whole event pipeline (sandbox webhooks ->
// ingest -> event bus -> hub) to deliver a change upstream to the subscriptions.
// ---------------------------------------------------------------------------------------

/// Places an order over HTTP, for the customer the token signs in; answers its id.
async fn place_order(app: &TestApp, token: &str) -> String {
    let placed = app
        .data(
            token,
            &operation("PlaceOrder"),
            json!({"input": {"lines": [{"productId": "prod-0001", "quantity": 1}]}}),
        )
        .await;
    placed["placeOrder"]["id"].as_str().unwrap().to_owned()
}

/// Places an order for `customer` and waits until the news of it has gone by (webhooks are
/// delivered asynchronously), so that a subscription made afterwards cannot see it.
async fn placed_order(app: &TestApp, customer: &str) -> String {
    let mut watcher = signed_in(app, customer).await;
    watcher
        .subscribe("w", "subscription { notifications { summary } }")
        .await;
    watcher.expect_quiet().await;
    let order = place_order(app, &app.token(customer).await).await;
    loop {
        let next = watcher.recv().await;
        let summary = &next["payload"]["data"]["notifications"]["summary"];
        if summary.as_str().is_some_and(|s| s.contains(&order)) {
            return order;
        }
    }
}

/// How many requests the sandbox backend has answered so far.
fn backend_requests(app: &TestApp) -> u64 {
    app.sandbox.requests(Upstream::Backend).values().sum()
}

/// A Switchyard without the entity cache, so that a subscription's first read of its order
/// always reaches the backend, where [`until_listening`] sees it.
async fn uncached() -> TestApp {
    TestApp::spawn_with(SandboxConfig::default(), |c| c.cache.enabled = false).await
}

/// Waits until an `orderUpdated` subscription made after `before` backend requests is
/// listening: it reads its order from the backend first (with no cache: see [`uncached`]),
/// then listens to the hub (with no more waiting in between), so a change made from now on
/// reaches it.
async fn until_listening(app: &TestApp, before: u64) {
    let deadline = Instant::now() + WAIT;
    while backend_requests(app) == before {
        assert!(
            Instant::now() < deadline,
            "the subscription never read its order"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn an_order_update_reaches_a_websocket_subscriber() {
    let app = uncached().await;
    let ada = app.token(ADA).await;
    let order = placed_order(&app, ADA).await;
    let mut client = signed_in(&app, ADA).await;
    let before = backend_requests(&app);
    client
        .subscribe(
            "o",
            &format!("subscription {{ orderUpdated(id: \"{order}\") {{ id status canCancel }} }}"),
        )
        .await;
    until_listening(&app, before).await;
    client.expect_quiet().await;

    app.data(&ada, &operation("CancelOrder"), json!({"id": order}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "next", "id": "o", "payload": {"data": {"orderUpdated": {
            "id": order, "status": "CANCELLED", "canCancel": false
        }}}})
    );
    app.stop().await;
}

/// Resolving one event of a subscription is bounded by `server.request_timeout_ms`, as a
/// query is: an event whose order the backend is too slow to read, or whose selected parcel
/// status the carrier is too slow to tell, gets a `TIMEOUT` error on the subscription's field
/// instead of its data; the subscription goes on, and the next event has its data.
#[tokio::test]
async fn an_event_that_resolves_too_slowly_gets_a_timeout_and_the_subscription_goes_on() {
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| {
        c.cache.enabled = false;
        c.server.request_timeout = Duration::from_millis(500);
    })
    .await;
    let ada = app.token(ADA).await;
    // One of Ada's orders with a parcel (its status is the carrier's).
    let mine = app
        .data(
            &ada,
            "{ me { orders(first: 50) { edges { node { id shipment { trackingNumber } } } } } }",
            json!({}),
        )
        .await;
    let order = mine["me"]["orders"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|edge| !edge["node"]["shipment"].is_null())
        .and_then(|edge| edge["node"]["id"].as_str())
        .expect("a seeded order of Ada's with a parcel")
        .to_owned();
    let mut client = signed_in(&app, ADA).await;
    let before = backend_requests(&app);
    client
        .subscribe(
            "o",
            &format!(
                "subscription {{ orderUpdated(id: \"{order}\") {{ id shipment {{ status }} }} }}"
            ),
        )
        .await;
    until_listening(&app, before).await;
    client.expect_quiet().await;
    let changed = |n: u32| {
        json!({"id": format!("evt_slow_{n}"), "type": "order.status_changed",
               "occurredAt": "2026-01-01T10:00:00Z",
               "data": {"orderId": order, "customerId": ADA, "status": "SHIPPED"}})
    };
    let timed_out = |next: &Value| {
        assert_eq!(next["type"], "next", "{next:#}");
        assert_eq!(next["payload"]["data"], Value::Null, "{next:#}");
        assert_eq!(codes(&next["payload"]["errors"]), ["TIMEOUT"]);
        assert_eq!(
            next["payload"]["errors"][0]["path"],
            json!(["orderUpdated"])
        );
        let message = next["payload"]["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("500 ms (server.request_timeout_ms)"),
            "{message}"
        );
    };

    // The order itself is slow to read.
    app.sandbox
        .set_faults(Upstream::Backend, slow_upstream())
        .unwrap();
    let started = Instant::now();
    assert_eq!(app.post_webhook("backend", &changed(1)).await.0, 202);
    timed_out(&client.recv().await);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );

    // The order is quick, the parcel's status (a selected field) is slow.
    app.sandbox
        .set_faults(Upstream::Backend, UpstreamKnobs::default())
        .unwrap();
    app.sandbox
        .set_faults(Upstream::Carrier, slow_upstream())
        .unwrap();
    let started = Instant::now();
    assert_eq!(app.post_webhook("backend", &changed(2)).await.0, 202);
    timed_out(&client.recv().await);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );

    // Everything quick again: the subscription went on.
    app.sandbox
        .set_faults(Upstream::Carrier, UpstreamKnobs::default())
        .unwrap();
    assert_eq!(app.post_webhook("backend", &changed(3)).await.0, 202);
    let next = client.recv().await;
    assert_eq!(
        next["payload"]["data"]["orderUpdated"]["id"], order,
        "{next:#}"
    );
    assert!(next["payload"].get("errors").is_none(), "{next:#}");
    app.stop().await;
}

#[tokio::test]
async fn subscribers_re_reading_a_changed_order_make_one_backend_call() {
    // No entity cache: only single-flight keeps the re-reads from reaching the backend. No
    // simulator: nothing else reads orders meanwhile.
    let quiet = SandboxConfig {
        simulator_interval_ms: 0,
        ..SandboxConfig::default()
    };
    let app = TestApp::spawn_with(quiet, |c| c.cache.enabled = false).await;
    let order = placed_order(&app, ADA).await;
    let query = format!("subscription {{ orderUpdated(id: \"{order}\") {{ id status }} }}");
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut client = signed_in(&app, ADA).await;
        let before = backend_requests(&app);
        client.subscribe("o", &query).await;
        until_listening(&app, before).await;
        clients.push(client);
    }
    // A slow backend, so that every subscription's re-read starts while the first is in
    // flight (what a busy backend is, for thousands of subscribers).
    let slow = UpstreamKnobs::slow(1_000);
    app.sandbox.set_faults(Upstream::Backend, slow).unwrap();
    app.reset_counts();

    let event = json!({"id": "evt_flight_1", "type": "order.status_changed",
        "occurredAt": "2026-01-01T10:00:00Z",
        "data": {"orderId": order, "customerId": ADA, "status": "SHIPPED"}});
    assert_eq!(app.post_webhook("backend", &event).await.0, 202);
    for client in &mut clients {
        let next = client.recv().await;
        assert_eq!(
            next["payload"]["data"]["orderUpdated"]["id"], order,
            "{next}"
        );
    }
    // (The notifier may read the customer for its push meanwhile: only order reads count.)
    assert_eq!(
        app.counts()["backend"]["GET /orders"],
        1,
        "twenty subscribers, one read of the order: {:?}",
        app.counts()
    );
    app.stop().await;
}

#[tokio::test]
async fn an_order_update_reaches_a_legacy_subscriber() {
    let app = uncached().await;
    let ada = app.token(ADA).await;
    let order = placed_order(&app, ADA).await;
    let mut client = connect(&app, LEGACY).await;
    client
        .send(json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {ada}")}}))
        .await;
    assert_eq!(client.recv().await, json!({"type": "connection_ack"}));
    assert_eq!(client.recv().await, json!({"type": "ka"}));
    let query = format!("subscription {{ orderUpdated(id: \"{order}\") {{ status }} }}");
    let before = backend_requests(&app);
    client
        .send(json!({"type": "start", "id": "o", "payload": {"query": query}}))
        .await;
    until_listening(&app, before).await;

    app.data(&ada, &operation("CancelOrder"), json!({"id": order}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "data", "id": "o", "payload": {"data": {"orderUpdated": {"status": "CANCELLED"}}}})
    );
    app.stop().await;
}

#[tokio::test]
async fn an_order_update_reaches_an_sse_subscriber() {
    let app = uncached().await;
    let ada = app.token(ADA).await;
    let order = placed_order(&app, ADA).await;
    let query = format!("subscription {{ orderUpdated(id: \"{order}\") {{ id status }} }}");
    let before = backend_requests(&app);
    let mut stream = sse(&app, Some(&ada), json!({"query": query}))
        .await
        .stream();
    until_listening(&app, before).await;

    app.data(&ada, &operation("CancelOrder"), json!({"id": order}))
        .await;
    assert_eq!(
        stream.next().await,
        json!({"data": {"orderUpdated": {"id": order, "status": "CANCELLED"}}})
    );
    app.stop().await;
}

#[tokio::test]
async fn a_customer_sees_only_their_own_notifications() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    let other = app.token("cust-0002").await;
    let mut ada_client = signed_in(&app, ADA).await;
    ada_client
        .subscribe("n", "subscription { notifications { kind order { id } } }")
        .await;
    ada_client.expect_quiet().await;

    // Another customer's order first, then Ada's: Ada's feed has only hers.
    place_order(&app, &other).await;
    let order = place_order(&app, &ada).await;
    let next = ada_client.recv().await;
    assert_eq!(next["type"], "next", "{next:#}");
    assert_eq!(
        next["payload"]["data"]["notifications"]["kind"],
        "ORDER_UPDATED"
    );
    assert_eq!(
        next["payload"]["data"]["notifications"]["order"]["id"],
        order
    );
    app.stop().await;
}

/// The first `n` products in stock.
async fn products_in_stock(app: &TestApp, token: &str, n: usize) -> Vec<String> {
    let ids: Vec<String> = (1..=100).map(|i| format!("prod-{i:04}")).collect();
    let data = app
        .data(
            token,
            "query($ids: [ID!]!) { products(ids: $ids) { id inStock } }",
            json!({ "ids": ids }),
        )
        .await;
    let products = data["products"].as_array().unwrap();
    let in_stock: Vec<String> = products
        .iter()
        .filter(|p| p["inStock"] == true)
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .take(n)
        .collect();
    assert_eq!(in_stock.len(), n, "not enough products in stock");
    in_stock
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_lags_alone() {
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| {
        c.events.hub_capacity = 4;
        c.subscriptions.send_buffer = 1;
    })
    .await;
    let ada = app.token(ADA).await;
    let lines: Vec<Value> = products_in_stock(&app, &ada, 50)
        .await
        .into_iter()
        .map(|id| json!({"productId": id, "quantity": 1}))
        .collect();
    // Results of about a megabyte (50 lines, each product's description 200 times), so that
    // a few fill the socket buffers of a client that does not read.
    let aliases: String = (0..200).map(|i| format!("d{i}: description ")).collect();
    let big = format!(
        "subscription {{ notifications {{ summary order {{ lines {{ product {{ {aliases} }} }} }} }} }}"
    );

    let mut slow = connect_slow_reader(&app).await;
    slow.init(&ada).await;
    slow.subscribe("slow", &big).await;
    slow.expect_quiet().await;
    // The same subscription on a client that reads.
    let mut reading = signed_in(&app, ADA).await;
    reading.subscribe("reading", &big).await;
    reading.expect_quiet().await;

    // The slow client reads nothing while orders are placed; the mutations, the hub and the
    // other client do not wait for it. (One order at a time, each read by the other client
    // first: what sets the two apart is reading, not how fast results are made.)
    let mut orders = Vec::new();
    for _ in 0..20 {
        let placed = app
            .data(
                &ada,
                &operation("PlaceOrder"),
                json!({"input": {"lines": lines}}),
            )
            .await;
        let order = placed["placeOrder"]["id"].as_str().unwrap().to_owned();
        loop {
            let next = reading.recv_skipping_pings().await;
            assert_eq!(next["type"], "next", "{next:#}");
            assert!(
                next["payload"].get("errors").is_none(),
                "the reading client lagged"
            );
            let update = &next["payload"]["data"]["notifications"];
            assert_eq!(update["order"]["lines"].as_array().unwrap().len(), 50);
            if update["summary"].as_str().unwrap().contains(&order) {
                break;
            }
        }
        orders.push(order);
    }

    // Now the slow client reads: the results that fit in its queues, then one lag error, and
    // the subscription is over. Its connection stays usable.
    let mut results = 0;
    let lagged = loop {
        let message = slow.recv().await;
        assert_eq!(message["type"], "next", "{message:#}");
        if message["payload"].get("errors").is_some() {
            break message;
        }
        results += 1;
    };
    assert_eq!(lagged["payload"]["data"], Value::Null, "{lagged:#}");
    assert_eq!(codes(&lagged["payload"]["errors"]), ["SUBSCRIPTION_LAGGED"]);
    assert!(
        results < orders.len(),
        "{results} results reached a client that lagged"
    );
    assert_eq!(slow.recv().await, json!({"type": "complete", "id": "slow"}));
    slow.expect_quiet().await;
    app.stop().await;
}

#[tokio::test]
async fn agents_are_told_of_return_approvals_and_customers_of_their_pickups() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    let agent_token = app.token(AGENT).await;
    let mut agent = signed_in(&app, AGENT).await;
    agent
        .subscribe("t", "subscription { taskAssigned { id name status } }")
        .await;
    agent.expect_quiet().await;
    let mut customer = signed_in(&app, ADA).await;
    customer
        .subscribe("t", "subscription { taskAssigned { id name status } }")
        .await;
    customer.expect_quiet().await;

    // Ada asks to return a delivered order: the agents' group is offered the approval.
    app.data(
        &ada,
        &operation("RequestReturn"),
        json!({"orderId": "ord-010801", "reason": "Too big"}),
    )
    .await;
    let offered = agent.recv().await;
    assert_eq!(offered["type"], "next", "{offered:#}");
    let task = &offered["payload"]["data"]["taskAssigned"];
    assert_eq!(task["name"], "ApproveReturn");
    assert_eq!(task["status"], "READY");

    // An agent approves it: Ada is asked to confirm the pick-up.
    let id = task["id"].as_str().unwrap().to_owned();
    app.data(
        &agent_token,
        &operation("CompleteTask"),
        json!({"id": id, "input": {"approved": true}}),
    )
    .await;
    let asked = customer.recv().await;
    assert_eq!(asked["type"], "next", "{asked:#}");
    assert_eq!(
        asked["payload"]["data"]["taskAssigned"]["name"],
        "ConfirmPickup"
    );
    assert_eq!(asked["payload"]["data"]["taskAssigned"]["status"], "READY");
    app.stop().await;
}

/// Another customer's things, as an agent reads them: their email, one of their orders, a
/// case they open now, and a return approval task about one of their orders.
struct Others {
    email: String,
    order: String,
    case: String,
    case_number: String,
    task: String,
    task_process: String,
}

// ---------------------------------------------------------------------------------------
// The same pipeline as HTTP: hostile documents, null semantics
// ---------------------------------------------------------------------------------------

/// Documents that would crash or stall the server are refused on the live transports too,
/// before anything recurses on them: an `error` message (websockets), a JSON 400 (SSE).
#[tokio::test]
async fn hostile_documents_are_refused_on_websockets_and_sse() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    let nested = format!(
        "subscription {{ taskAssigned(x: {}1{}) {{ id }} }}",
        "[".repeat(1600),
        "]".repeat(1600)
    );
    let doubling = doubling_fragments("Subscription", 22);
    let tokens = format!(
        "subscription {{ taskAssigned {{ {} }} }}",
        "id ".repeat(15_000)
    );
    let directives = format!(
        "subscription {{ taskAssigned {{ id {} }} }}",
        "@include(if: true) ".repeat(9)
    );
    for (query, code) in [
        (&nested, "MAX_DEPTH_LIMIT"),
        (&doubling, "MAX_SELECTIONS_LIMIT"),
        (&tokens, "MAX_TOKENS_LIMIT"),
        (&directives, "MAX_DIRECTIVES_LIMIT"),
    ] {
        let mut client = signed_in(&app, ADA).await;
        client.subscribe("1", query).await;
        let error = client.recv().await;
        assert_eq!(error["type"], "error", "{error:#}");
        assert_eq!(codes(&error["payload"]), [code]);
        // The connection carries on.
        client.subscribe("2", "{ me { id } }").await;
        assert_eq!(client.recv().await["payload"]["data"]["me"]["id"], ADA);

        let (status, body) = sse(&app, Some(&ada), json!({ "query": query }))
            .await
            .json_error()
            .await;
        assert_eq!(status, 400);
        assert_eq!(codes(&body["errors"]), [code]);
    }
}

/// An answer over `server.max_response_bytes` is replaced by a `RESPONSE_TOO_LARGE` error
/// naming the bound on websockets and SSE as over HTTP (one place shapes every result).
#[tokio::test]
async fn an_answer_over_max_response_bytes_is_an_error_on_websockets_and_sse() {
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| {
        c.server.max_response_bytes = 2048
    })
    .await;
    let ada = app.token(ADA).await;
    let large = "{ __schema { types { name description fields { name description } } } }";
    let assert_too_large = |payload: &Value| {
        assert_eq!(payload["data"], Value::Null, "{payload}");
        assert_eq!(codes(&payload["errors"]), ["RESPONSE_TOO_LARGE"]);
        let message = payload["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("larger than 2048 bytes (server.max_response_bytes)"),
            "{message}"
        );
    };
    let mut client = signed_in(&app, ADA).await;
    client.subscribe("big", large).await;
    let next = client.recv().await;
    assert_eq!(next["type"], "next", "{next:#}");
    assert_too_large(&next["payload"]);
    assert_eq!(
        client.recv().await,
        json!({"type": "complete", "id": "big"})
    );
    // A small answer on the same connection is untouched.
    client.subscribe("small", "{ me { id } }").await;
    assert_eq!(
        client.recv().await["payload"],
        json!({"data": {"me": {"id": ADA}}})
    );

    let mut stream = sse(&app, Some(&ada), json!({ "query": large }))
        .await
        .stream();
    assert_too_large(&stream.next().await);
    stream.complete().await;
    app.stop().await;
}

/// A query over a websocket keeps the request's deadline (`server.request_timeout_ms`), as
/// over HTTP: the slow upstream's call gives up at it, so one `next` comes in time, with the
/// field failed (`UPSTREAM_UNAVAILABLE`), then `complete`.
#[tokio::test]
async fn a_query_over_a_websocket_keeps_the_request_deadline() {
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| {
        c.cache.enabled = false;
        c.server.request_timeout = Duration::from_millis(300);
    })
    .await;
    let mut client = signed_in(&app, ADA).await;
    app.sandbox
        .set_faults(Upstream::Backend, slow_upstream())
        .unwrap();
    let started = Instant::now();
    client.subscribe("slow", "{ me { name } }").await;
    let next = client.recv().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(next["type"], "next", "{next:#}");
    assert_eq!(codes(&next["payload"]["errors"]), ["UPSTREAM_UNAVAILABLE"]);
    assert_eq!(
        next["payload"]["errors"][0]["extensions"]["source"],
        "backend"
    );
    assert_eq!(
        client.recv().await,
        json!({"type": "complete", "id": "slow"})
    );
    app.stop().await;
}

/// An upstream that answers after 3 s (later than the tests' request timeouts, sooner than the
/// upstream call's own timeout).
fn slow_upstream() -> UpstreamKnobs {
    UpstreamKnobs::slow(3000)
}

/// A failed field is `null` with its error, and a failed non-null root field nulls `data`,
/// over websockets and SSE exactly as over HTTP.
#[tokio::test]
async fn a_failed_field_is_null_on_websockets_and_sse() {
    let app = TestApp::spawn().await;
    let agent = app.token(AGENT).await;
    let ada = app.token(ADA).await;
    let cases = [
        (
            &agent,
            "{ viewer { role } me { id } }",
            json!({"viewer": {"role": "AGENT"}, "me": null}),
            "me",
        ),
        (
            &ada,
            "{ viewer { role } customers { edges { cursor } } }",
            Value::Null,
            "customers",
        ),
    ];
    for (token, query, data, failed) in cases {
        let mut client = connect(&app, MODERN).await;
        client.init(token).await;
        client.subscribe("1", query).await;
        let next = client.recv().await;
        assert_eq!(next["type"], "next", "{next:#}");
        assert_eq!(next["payload"]["data"], data, "{next:#}");
        assert!(
            next["payload"].get("data").is_some(),
            "`data` is there, even when null"
        );
        assert_eq!(next["payload"]["errors"][0]["path"], json!([failed]));
        assert_eq!(codes(&next["payload"]["errors"]), ["FORBIDDEN"]);

        let mut stream = sse(&app, Some(token), json!({ "query": query }))
            .await
            .stream();
        let next = stream.next().await;
        assert_eq!(next["data"], data, "{next:#}");
        assert!(next.get("data").is_some());
        assert_eq!(next["errors"][0]["path"], json!([failed]));
    }
}

/// Ada's claims with this `exp`.
fn with_exp(exp: u64) -> Value {
    let mut claims = customer_claims(ADA);
    claims["exp"] = json!(exp);
    claims
}

/// A validly signed token whose `exp` is beyond any clock is refused, not a crash.
#[tokio::test]
async fn a_token_with_an_absurd_expiry_is_refused_cleanly() {
    let issuer = Issuer::start().await;
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| issuer.trust(c, 0)).await;
    let token = issuer.sign(with_exp(u64::MAX));
    let (status, body) = app.post(Some(&token), "{ me { id } }", json!({})).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(codes(&body["errors"]), ["UNAUTHENTICATED"]);
    let mut client = connect(&app, MODERN).await;
    client
        .send(json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}))
        .await;
    client.expect_close(4403, "Forbidden").await;
    // A far but representable expiry is fine: live connections are timed at most a week.
    let token = issuer.sign(with_exp(253_402_300_799));
    let (status, body) = app.post(Some(&token), "{ me { id } }", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["me"]["id"], ADA);
    let mut client = connect(&app, MODERN).await;
    client.init(&token).await;
}

async fn another_customers_things(app: &TestApp, other: &str) -> Others {
    let agent = app.token(AGENT).await;
    let customer = app
        .data(
            &agent,
            "query($id: ID!) { customer(id: $id) { email orders(first: 1) { edges { node { id } } } } }",
            json!({"id": other}),
        )
        .await;
    let opened = app
        .data(
            &app.token(other).await,
            &operation("OpenSupportCase"),
            json!({"input": {"subject": "Not Ada's"}}),
        )
        .await;
    let tasks = app.data(&agent, &operation("AgentTasks"), json!({})).await;
    let task = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            let customer = &t["process"]["order"]["customer"]["id"];
            customer.is_string() && customer != ADA
        })
        .expect("a return approval about another customer");
    Others {
        email: customer["customer"]["email"].as_str().unwrap().to_owned(),
        order: customer["customer"]["orders"]["edges"][0]["node"]["id"]
            .as_str()
            .unwrap()
            .to_owned(),
        case: opened["openSupportCase"]["id"].as_str().unwrap().to_owned(),
        case_number: opened["openSupportCase"]["caseNumber"]
            .as_str()
            .unwrap()
            .to_owned(),
        task: task["id"].as_str().unwrap().to_owned(),
        task_process: task["process"]["id"].as_str().unwrap().to_owned(),
    }
}

/// The error paths of a result, with their codes.
fn error_paths(payload: &Value) -> Vec<(Value, String)> {
    payload["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    (
                        e["path"].clone(),
                        e["extensions"]["code"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A notification of this kind whose order, case and task are all null (or left out: a field
/// that failed may be missing from `data`).
#[tokio::test]
async fn what_an_event_names_is_authorized_for_the_subscriber_as_in_a_query() {
    let app = TestApp::spawn().await;
    let others = another_customers_things(&app, "cust-0002").await;
    let mut feed = signed_in(&app, ADA).await;
    feed.subscribe(
        "n",
        "subscription { notifications { kind summary \
           order { id status customer { email } } \
           supportCase { id subject customer { email } } \
           task { id name } } }",
    )
    .await;
    feed.expect_quiet().await;
    let mut offers = signed_in(&app, ADA).await;
    offers
        .subscribe("t", "subscription { taskAssigned { id name status } }")
        .await;
    offers.expect_quiet().await;
    let forbidden = |path: Value| (path, "FORBIDDEN".to_owned());
    let ms = chrono::Utc::now().timestamp_millis();

    // Signed webhooks that say "Ada" but name another customer's order, case and task: not
    // one reaches her feed (their summaries alone would tell her of someone else's things).
    let order_event = json!({"id": "evt_mismatch_1", "type": "order.status_changed",
        "occurredAt": "2026-01-01T10:00:00Z",
        "data": {"orderId": others.order, "customerId": ADA, "status": "SHIPPED"}});
    assert_eq!(app.post_webhook("backend", &order_event).await.0, 202);
    let case_event = json!({"schema": "CaseChangeEvent-v60",
        "event": {"replayId": 1, "EventUuid": "0b9e4a52-6f1c-4d2e-8a7b-3c5d9e1f2a40"},
        "payload": {"ChangeEventHeader": {"entityName": "Case", "changeType": "UPDATE",
                        "recordIds": [others.case], "commitTimestamp": ms,
                        "changedFields": ["Status"]},
                    "Status": "Working", "CaseNumber": others.case_number,
                    "Customer_Id__c": ADA}});
    assert_eq!(app.post_webhook("crm", &case_event).await.0, 202);
    // The process server offers Ada a task (she is its potential owner, by the event) that is
    // about another customer's return.
    let task_event = json!({"eventId": "5e2d7c1a-9b3f-4a6e-8d0c-1f4b7a2e6c93",
        "type": "TaskCreated", "timestamp": ms, "containerId": "returns",
        "processId": "returns.ReturnRequest",
        "processInstanceId": others.task_process.parse::<i64>().unwrap(),
        "taskId": others.task.parse::<i64>().unwrap(), "taskName": "ConfirmPickup",
        "taskStatus": "Ready", "potentialOwners": [ADA],
        "processVariables": {"customerId": ADA}});
    assert_eq!(app.post_webhook("process", &task_event).await.0, 202);
    // Then one about her own order: the first thing her feed shows (events keep their order).
    let own = app
        .data(
            &app.token(ADA).await,
            "{ me { orders(first: 1) { edges { node { id } } } } }",
            json!({}),
        )
        .await["me"]["orders"]["edges"][0]["node"]["id"]
        .clone();
    let own_event = json!({"id": "evt_own_1", "type": "order.status_changed",
        "occurredAt": "2026-01-01T10:00:00Z",
        "data": {"orderId": own, "customerId": ADA, "status": "CONFIRMED"}});
    assert_eq!(app.post_webhook("backend", &own_event).await.0, 202);
    let next = feed.recv().await;
    assert_eq!(next["type"], "next", "{next:#}");
    assert_eq!(
        next["payload"]["data"]["notifications"]["order"]["id"], own,
        "{next:#}"
    );
    assert!(next["payload"].get("errors").is_none(), "{next:#}");
    for theirs in [&others.order, &others.case_number, &others.email] {
        assert!(
            !next.to_string().contains(theirs.as_str()),
            "{theirs}: {next:#}"
        );
    }

    // A task offered to her about someone else's return: null with FORBIDDEN, as `task(id)`.
    let offered = offers.recv().await;
    assert_eq!(offered["type"], "next", "{offered:#}");
    assert_eq!(offered["payload"]["data"], Value::Null, "{offered:#}");
    assert_eq!(
        error_paths(&offered["payload"]),
        [forbidden(json!(["taskAssigned"]))]
    );
    feed.expect_quiet().await;
    offers.expect_quiet().await;
    app.stop().await;
}

/// A stranger (no `connection_init` yet) gets no room to park large messages, and nobody gets
/// a large `ping` echoed back: the server's queue never holds what a client sent it.
#[tokio::test]
async fn large_messages_before_init_are_refused_and_large_pings_not_echoed() {
    let app = TestApp::spawn().await;
    let mut stranger = connect(&app, MODERN).await;
    let big = "x".repeat(64 * 1024);
    stranger
        .send(json!({"type": "ping", "payload": {"pad": big}}))
        .await;
    let (code, reason) = stranger.close_frame().await;
    assert_eq!(code, 4400);
    assert!(reason.contains("before connection_init"), "{reason}");

    let mut client = signed_in(&app, ADA).await;
    client
        .send(json!({"type": "ping", "payload": {"pad": big}}))
        .await;
    assert_eq!(client.recv().await, json!({"type": "pong"}));
    client
        .send(json!({"type": "ping", "payload": {"n": 1}}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "pong", "payload": {"n": 1}})
    );
    app.stop().await;
}

#[tokio::test]
async fn an_oversized_websocket_message_closes_with_1009() {
    let app = TestApp::spawn().await;
    let mut client = signed_in(&app, "cust-0001").await;
    // Over the 1 MiB a message may be.
    let query = format!("{{ __typename }} # {}", "x".repeat(1 << 20));
    client.subscribe("1", &query).await;
    let (code, reason) = client.close_frame().await;
    assert_eq!((code, reason.as_str()), (1009, "Message too big"));
    app.stop().await;
}
