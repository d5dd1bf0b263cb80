//! Offline apps: mutations replayed with an idempotency key (`clientMutationId`, or the
//! `Idempotency-Key` header) answer the first result and write once upstream, counted by the
//! sandbox's request counters, with the records in a private Redis (and across two replicas
//! sharing it); and conflicting updates answer typed errors with the current state.

use std::time::Duration;

use sandbox::{Sandbox, SandboxConfig, Upstream, UpstreamKnobs};
use serde_json::{Value, json};
use switchyard::config::Secret;
use tokio::net::TcpListener;

use crate::support::redis::RedisServer;
use crate::support::{TestApp, operation};

const ADA: &str = "cust-0001";
const BEN: &str = "cust-0002";
const PLACE: &str = "POST /orders";

fn codes(body: &Value) -> Vec<&str> {
    body["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|e| e["extensions"]["code"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// Switchyard with its idempotency records in a private Redis.
async fn app_on_redis(redis: &RedisServer) -> TestApp {
    let url = redis.url();
    TestApp::spawn_with(SandboxConfig::default(), move |c| {
        c.notifications.redis_url = Some(Secret::new(url));
    })
    .await
}

fn order_input(key: Option<&str>, quantity: u32) -> Value {
    let mut input = json!({ "lines": [{ "productId": "prod-0003", "quantity": quantity }] });
    if let Some(key) = key {
        input["clientMutationId"] = json!(key);
    }
    json!({ "input": input })
}

/// How many times the backend was asked to place an order since the last reset.
fn placed(app: &TestApp) -> u64 {
    app.sandbox
        .requests(Upstream::Backend)
        .get(PLACE)
        .copied()
        .unwrap_or(0)
}

/// The ids of the customer's orders (the 50 newest).
async fn order_ids(app: &TestApp, token: &str) -> Vec<String> {
    let data = app
        .data(
            token,
            "{ me { orders(first: 50) { edges { node { id } } } } }",
            json!({}),
        )
        .await;
    data["me"]["orders"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
        .collect()
}

/// POSTs `query` with an `Idempotency-Key` header.
async fn post_with_key(
    app: &TestApp,
    token: &str,
    key: &str,
    query: &str,
    variables: Value,
) -> Value {
    app.http
        .post(app.url("/graphql"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_place_order_replayed_three_times_places_one_order() {
    let redis = RedisServer::start();
    let app = app_on_redis(&redis).await;
    let ada = app.token(ADA).await;
    let before = order_ids(&app, &ada).await;
    app.reset_counts();

    let key = "6f1c2b1e-52f4-4c7e-9d1a-7b0e3d5c2a10";
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(
            app.data(&ada, &operation("PlaceOrder"), order_input(Some(key), 2))
                .await["placeOrder"]
                .clone(),
        );
    }

    assert_eq!(placed(&app), 1, "one upstream write: {:?}", app.counts());
    assert_eq!(answers[0]["status"], "CONFIRMED");
    assert_eq!(answers[0]["lines"][0]["quantity"], 2);
    assert_eq!(answers[1], answers[0], "a replay answers the first result");
    assert_eq!(answers[2], answers[0]);
    let after = order_ids(&app, &ada).await;
    assert_eq!(after.len(), before.len() + 1, "one order exists");
    assert_eq!(after[0], answers[0]["id"].as_str().unwrap());

    // The record is in Redis, for the window (24 h by default).
    let mut redis_connection = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*idempotency:*")
        .query_async(&mut redis_connection)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&keys[0])
        .query_async(&mut redis_connection)
        .await
        .unwrap();
    assert!((86_000..=86_400).contains(&ttl), "{ttl}");

    // A new key is a new order.
    let other = app
        .data(
            &ada,
            &operation("PlaceOrder"),
            order_input(Some("second-order"), 2),
        )
        .await;
    assert_ne!(other["placeOrder"]["id"], answers[0]["id"]);
    assert_eq!(placed(&app), 2);
    app.stop().await;
}

#[tokio::test]
async fn the_idempotency_key_header_scopes_each_mutation_field_of_the_operation() {
    let redis = RedisServer::start();
    let app = app_on_redis(&redis).await;
    let ada = app.token(ADA).await;
    app.reset_counts();
    let two = "mutation Two($a: PlaceOrderInput!, $b: PlaceOrderInput!) {
        first: placeOrder(input: $a) { id lines { quantity } }
        second: placeOrder(input: $b) { id lines { quantity } }
    }";
    let variables = json!({
        "a": order_input(None, 1)["input"],
        "b": order_input(None, 3)["input"],
    });

    let answers = [
        post_with_key(&app, &ada, "header-key-1", two, variables.clone()).await,
        post_with_key(&app, &ada, "header-key-1", two, variables.clone()).await,
        post_with_key(&app, &ada, "header-key-1", two, variables).await,
    ];

    assert!(answers[0].get("errors").is_none(), "{:#}", answers[0]);
    let data = &answers[0]["data"];
    assert_ne!(
        data["first"]["id"], data["second"]["id"],
        "two fields, two orders"
    );
    assert_eq!(data["second"]["lines"][0]["quantity"], 3);
    assert_eq!(answers[1], answers[0]);
    assert_eq!(answers[2], answers[0]);
    assert_eq!(placed(&app), 2, "{:?}", app.counts());

    // A request without the header is not a replay.
    app.data(&ada, &operation("PlaceOrder"), order_input(None, 1))
        .await;
    assert_eq!(placed(&app), 3);
    app.stop().await;
}

#[tokio::test]
async fn a_key_is_the_user_s_own_and_its_arguments_must_match() {
    let redis = RedisServer::start();
    let app = app_on_redis(&redis).await;
    let (ada, ben) = (app.token(ADA).await, app.token(BEN).await);
    app.reset_counts();
    let key = "shared-looking-key";

    let adas = app
        .data(&ada, &operation("PlaceOrder"), order_input(Some(key), 1))
        .await;
    // Ben's same key is Ben's: his own order, never Ada's.
    let bens = app
        .data(&ben, &operation("PlaceOrder"), order_input(Some(key), 1))
        .await;
    assert_ne!(bens["placeOrder"]["id"], adas["placeOrder"]["id"]);
    assert!(
        order_ids(&app, &ben)
            .await
            .contains(&bens["placeOrder"]["id"].as_str().unwrap().to_owned())
    );
    assert_eq!(placed(&app), 2);

    // Ada's key with other arguments is refused, not answered with the old order.
    let (status, reused) = app
        .post(
            Some(&ada),
            &operation("PlaceOrder"),
            order_input(Some(key), 5),
        )
        .await;
    assert_eq!(codes(&reused), ["IDEMPOTENCY_KEY_REUSED"], "{reused:#}");
    // An error of the field (it ran, and refused), not of the request.
    assert_eq!(status, 200, "{reused:#}");
    assert_eq!(reused["data"], Value::Null, "{reused:#}");
    assert!(reused.get("data").is_some(), "{reused:#}");
    assert_eq!(
        reused["errors"][0]["path"],
        json!(["placeOrder"]),
        "{reused:#}"
    );
    // And with another selection of the same change.
    let (_, other_selection) = app
        .post(
            Some(&ada),
            "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { id } }",
            order_input(Some(key), 1),
        )
        .await;
    assert_eq!(codes(&other_selection), ["IDEMPOTENCY_KEY_REUSED"]);
    assert_eq!(placed(&app), 2, "nothing more was written");

    // Keys are bounded: too long, or characters outside the set, are bad input.
    for bad in ["x".repeat(129), "with space".to_owned(), String::new()] {
        let (_, body) = app
            .post(
                Some(&ada),
                &operation("PlaceOrder"),
                order_input(Some(&bad), 1),
            )
            .await;
        assert_eq!(codes(&body), ["BAD_USER_INPUT"], "{bad:?}: {body:#}");
    }
    let body = post_with_key(
        &app,
        &ada,
        "naïve",
        &operation("PlaceOrder"),
        order_input(None, 1),
    )
    .await;
    assert_eq!(codes(&body), ["BAD_USER_INPUT"], "{body:#}");
    assert_eq!(placed(&app), 2);
    app.stop().await;
}

#[tokio::test]
async fn replays_while_the_first_is_in_flight_wait_for_its_result() {
    let redis = RedisServer::start();
    let app = app_on_redis(&redis).await;
    let ada = app.token(ADA).await;
    // Every backend answer takes 400 ms: the replays arrive while the first is running.
    app.sandbox
        .set_faults(Upstream::Backend, UpstreamKnobs::slow(400))
        .unwrap();
    app.reset_counts();

    let place = || {
        app.post(
            Some(&ada),
            "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { id status } }",
            order_input(Some("concurrent-key"), 1),
        )
    };
    let (a, b, c) = tokio::join!(place(), place(), place());

    for (status, body) in [&a, &b, &c] {
        assert_eq!(*status, 200);
        assert!(body.get("errors").is_none(), "{body:#}");
    }
    assert_eq!(a.1, b.1);
    assert_eq!(a.1, c.1);
    assert_eq!(placed(&app), 1, "{:?}", app.counts());
    app.stop().await;
}

#[tokio::test]
async fn a_refused_first_attempt_releases_its_key_and_a_cut_off_one_keeps_it() {
    let redis = RedisServer::start();
    let app = app_on_redis(&redis).await;
    let ada = app.token(ADA).await;
    let product = |in_stock: bool| {
        app.http
            .patch(format!("{}/products/prod-0003", app.sandbox.urls().backend))
            .bearer_auth(&app.sandbox.config().backend_token)
            .json(&json!({ "inStock": in_stock }))
            .send()
    };
    assert_eq!(product(false).await.unwrap().status(), 200);
    app.reset_counts();

    // Refused by the backend: nothing was written, the key is free again.
    let (_, refused) = app
        .post(
            Some(&ada),
            &operation("PlaceOrder"),
            order_input(Some("retry-me"), 1),
        )
        .await;
    assert_eq!(codes(&refused), ["OUT_OF_STOCK"], "{refused:#}");
    assert_eq!(product(true).await.unwrap().status(), 200);
    let retried = app
        .data(
            &ada,
            &operation("PlaceOrder"),
            order_input(Some("retry-me"), 1),
        )
        .await;
    assert_eq!(retried["placeOrder"]["status"], "CONFIRMED");
    assert_eq!(placed(&app), 2, "the refused try and the retry");

    // The backend writes the order but its answer arrives broken: Switchyard cannot know
    // whether it was placed, so a replay does not place it again.
    app.sandbox
        .set_faults(
            Upstream::Backend,
            UpstreamKnobs {
                malformed_rate: 1.0,
                ..UpstreamKnobs::default()
            },
        )
        .unwrap();
    let before = placed(&app);
    let (_, cut) = app
        .post(
            Some(&ada),
            &operation("PlaceOrder"),
            order_input(Some("cut-off"), 1),
        )
        .await;
    assert_eq!(codes(&cut), ["UPSTREAM_UNAVAILABLE"], "{cut:#}");
    app.sandbox
        .set_faults(Upstream::Backend, UpstreamKnobs::default())
        .unwrap();
    let (_, replay) = app
        .post(
            Some(&ada),
            &operation("PlaceOrder"),
            order_input(Some("cut-off"), 1),
        )
        .await;
    assert_eq!(
        codes(&replay),
        ["IDEMPOTENCY_OUTCOME_UNKNOWN"],
        "{replay:#}"
    );
    assert_eq!(placed(&app), before + 1, "placed once, never again");
    app.stop().await;
}

#[tokio::test]
async fn every_mutation_takes_a_client_mutation_id() {
    let redis = RedisServer::start();
    let app = app_on_redis(&redis).await;
    let ada = app.token(ADA).await;
    let order = app
        .data(&ada, &operation("PlaceOrder"), order_input(None, 1))
        .await["placeOrder"]["id"]
        .clone();
    app.reset_counts();

    // A mutation of scalar arguments takes it as an argument.
    let cancel_order = operation("CancelOrder");
    let cancel = |key: &'static str| {
        app.post(
            Some(&ada),
            &cancel_order,
            json!({ "id": order, "clientMutationId": key }),
        )
    };
    let (_, first) = cancel("cancel-1").await;
    let (_, again) = cancel("cancel-1").await;
    assert_eq!(
        first["data"]["cancelOrder"]["status"], "CANCELLED",
        "{first:#}"
    );
    assert_eq!(
        again, first,
        "the replay answers the first result, not NOT_CANCELLABLE"
    );
    let cancels = app
        .sandbox
        .requests(Upstream::Backend)
        .get("POST /orders/{id}/cancel")
        .copied();
    assert_eq!(cancels, Some(1), "{:?}", app.counts());

    // A new key: the backend is asked, and the order is cancelled already.
    let (_, conflict) = cancel("cancel-2").await;
    assert_eq!(codes(&conflict), ["NOT_CANCELLABLE"]);
    assert_eq!(
        conflict["errors"][0]["extensions"]["current"]["status"],
        "CANCELLED"
    );
    app.stop().await;
}

/// Two replicas keeping their idempotency records in one private Redis, over one sandbox
/// (its simulator off), and Ada's token; `b_only` is config replica B alone gets.
struct TwoReplicas {
    _redis: RedisServer,
    sandbox: Sandbox,
    a: crate::replicas::Replica,
    b: crate::replicas::Replica,
    ada: String,
}

impl TwoReplicas {
    async fn start(b_only: &str) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let redis = RedisServer::start();
        let sandbox = Sandbox::start(SandboxConfig {
            simulator_interval_ms: 0,
            ..SandboxConfig::default()
        })
        .await
        .unwrap();
        let printed = switchyard::embedded::sandbox_summary(&sandbox).unwrap();
        let shared = format!("[notifications]\nredis_url = \"{}\"\n", redis.url());
        let replica = |config: String| {
            let printed = printed.clone();
            async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let config = crate::support::replica_config(&printed, &config);
                crate::replicas::start(listener, config).await
            }
        };
        let a = replica(shared.clone()).await;
        let b = replica(format!("{shared}{b_only}")).await;
        let ada = crate::support::issuer_token(&sandbox, ADA).await;
        Self {
            _redis: redis,
            sandbox,
            a,
            b,
            ada,
        }
    }

    async fn stop(self) {
        for replica in [self.a, self.b] {
            let _ = replica.stop.send(());
            let stopped = tokio::time::timeout(Duration::from_secs(15), replica.server).await;
            stopped.expect("the replica stops").unwrap().unwrap();
        }
        self.sandbox.shutdown().await;
    }
}

#[tokio::test]
async fn a_mutation_replayed_on_another_replica_writes_once() {
    let replicas = TwoReplicas::start("").await;
    let (sandbox, a, b) = (&replicas.sandbox, &replicas.a, &replicas.b);
    let (http, ada) = (reqwest::Client::new(), replicas.ada.clone());
    sandbox.reset_requests();

    let place = operation("PlaceOrder");
    let variables = order_input(Some("two-replicas"), 1);
    let mut answers = Vec::new();
    for base in [&a.base, &b.base, &a.base] {
        answers.push(crate::replicas::graphql(&http, base, &ada, &place, variables.clone()).await);
    }

    assert_eq!(answers[1], answers[0]);
    assert_eq!(answers[2], answers[0]);
    let placed = sandbox.requests(Upstream::Backend).get(PLACE).copied();
    assert_eq!(placed, Some(1));
    replicas.stop().await;
}

#[tokio::test]
async fn conflicting_updates_answer_typed_errors_with_the_current_state() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    let (agent1, agent2) = (app.token("agent-01").await, app.token("agent-02").await);

    // Cancelling an order that has shipped.
    let shipped = app
        .data(
            &ada,
            "{ me { orders(first: 1, status: SHIPPED) { edges { node { id } } } } }",
            json!({}),
        )
        .await["me"]["orders"]["edges"][0]["node"]["id"]
        .clone();
    assert!(shipped.is_string(), "Ada has a shipped order");
    let (_, body) = app
        .post(
            Some(&ada),
            &operation("CancelOrder"),
            json!({ "id": shipped }),
        )
        .await;
    assert_eq!(codes(&body), ["NOT_CANCELLABLE"], "{body:#}");
    let current = &body["errors"][0]["extensions"]["current"];
    assert_eq!(current["id"], shipped);
    assert_eq!(current["status"], "SHIPPED");
    assert_eq!(current["canCancel"], false);
    assert!(
        current["shipment"]["trackingNumber"].is_string(),
        "{current:#}"
    );

    // Commenting on a closed case: the CRM would take it, Switchyard refuses.
    let cases = app
        .data(&ada, "{ me { supportCases { id status } } }", json!({}))
        .await;
    let closed = cases["me"]["supportCases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["status"] == "CLOSED")
        .expect("Ada has a closed case")["id"]
        .clone();
    app.reset_counts();
    let (_, body) = app
        .post(
            Some(&ada),
            &operation("AddCaseComment"),
            json!({ "caseId": closed, "body": "Any news?" }),
        )
        .await;
    assert_eq!(codes(&body), ["CASE_CLOSED"], "{body:#}");
    let current = &body["errors"][0]["extensions"]["current"];
    assert_eq!(current["id"], closed);
    assert_eq!(current["status"], "CLOSED");
    assert!(current["closedAt"].is_string(), "{current:#}");
    let writes: u64 = app
        .sandbox
        .requests(Upstream::Crm)
        .iter()
        .filter(|(route, _)| route.starts_with("POST") && route.contains("sobjects"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(writes, 0, "no comment was written: {:?}", app.counts());

    // Completing a task another agent completed: who did is in `current`.
    let started = app
        .data(
            &ada,
            &operation("RequestReturn"),
            json!({ "orderId": shipped, "reason": "Too big" }),
        )
        .await["requestReturn"]["id"]
        .clone();
    let tasks = app.data(&agent1, &operation("AgentTasks"), json!({})).await;
    let task = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["process"]["id"] == started)
        .expect("the approval task")["id"]
        .clone();
    let complete = json!({ "id": task, "input": { "approved": true } });
    let done = app
        .data(&agent1, &operation("CompleteTask"), complete.clone())
        .await;
    assert_eq!(done["completeTask"]["status"], "COMPLETED");
    let (_, body) = app
        .post(Some(&agent2), &operation("CompleteTask"), complete)
        .await;
    assert_eq!(codes(&body), ["TASK_ALREADY_COMPLETED"], "{body:#}");
    let current = &body["errors"][0]["extensions"]["current"];
    assert_eq!(current["id"], task);
    assert_eq!(current["status"], "COMPLETED");
    assert_eq!(current["owner"], "agent-01");
    app.stop().await;
}

#[tokio::test]
async fn a_mutation_sent_over_http_and_replayed_over_a_websocket_writes_once() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    app.reset_counts();
    let place = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { id status } }";
    let variables = order_input(Some("http-then-ws"), 1);
    let first = app.data(&ada, place, variables.clone()).await;

    let mut ws = crate::support::ws::signed_in(&app, ADA).await;
    ws.send(json!({"type": "subscribe", "id": "1", "payload": {
        "query": place, "variables": variables,
    }}))
    .await;
    let next = ws.recv().await;
    assert_eq!(next["type"], "next", "{next:#}");
    assert_eq!(
        next["payload"]["data"], first,
        "the first result, in memory too"
    );
    assert_eq!(ws.recv().await["type"], "complete");
    assert_eq!(placed(&app), 1, "{:?}", app.counts());
    ws.close().await;
    app.stop().await;
}

#[tokio::test]
async fn a_replay_that_cannot_wait_for_the_first_result_is_told_the_key_is_in_use() {
    // Replica B answers within a second; A, running the first attempt, has longer.
    let replicas = TwoReplicas::start("[server]\nrequest_timeout_ms = 1000\n").await;
    let (sandbox, a, b) = (&replicas.sandbox, &replicas.a, &replicas.b);
    let (http, ada) = (reqwest::Client::new(), replicas.ada.clone());
    sandbox
        .set_faults(Upstream::Backend, UpstreamKnobs::slow(1500))
        .unwrap();
    sandbox.reset_requests();
    let place = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { id } }";
    let variables = order_input(Some("in-use"), 1);
    let post = |base: String| {
        let (http, ada, variables) = (http.clone(), ada.clone(), variables.clone());
        async move {
            http.post(format!("{base}/graphql"))
                .bearer_auth(ada)
                .json(&json!({ "query": place, "variables": variables }))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };

    let first = tokio::spawn(post(a.base.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let replay = post(b.base.clone()).await;
    assert_eq!(codes(&replay), ["IDEMPOTENCY_KEY_IN_USE"], "{replay:#}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "within B's deadline"
    );
    let first = first.await.unwrap();
    assert!(first.get("errors").is_none(), "{first:#}");

    // Once the first has finished, B answers its result.
    let later = post(b.base.clone()).await;
    assert_eq!(later, first);
    let placed = sandbox.requests(Upstream::Backend).get(PLACE).copied();
    assert_eq!(placed, Some(1));
    replicas.stop().await;
}

#[tokio::test]
async fn in_a_batch_the_header_key_is_scoped_by_the_operation_s_place() {
    let redis = RedisServer::start();
    let app = app_on_redis(&redis).await;
    let ada = app.token(ADA).await;
    app.reset_counts();
    let one = json!({ "query": operation("PlaceOrder"), "variables": order_input(None, 1) });
    let batch = json!([one, one]);
    let send = || {
        app.http
            .post(app.url("/graphql"))
            .bearer_auth(&ada)
            .header("idempotency-key", "batch-key")
            .json(&batch)
            .send()
    };

    let first: Value = send().await.unwrap().json().await.unwrap();
    let again: Value = send().await.unwrap().json().await.unwrap();

    let ids: Vec<&Value> = (0..2)
        .map(|i| &first[i]["data"]["placeOrder"]["id"])
        .collect();
    assert!(ids[0].is_string() && ids[1].is_string(), "{first:#}");
    assert_ne!(ids[0], ids[1], "two operations, two orders");
    assert_eq!(again, first);
    assert_eq!(placed(&app), 2, "{:?}", app.counts());
    app.stop().await;
}

#[tokio::test]
async fn a_mutation_its_breaker_refused_frees_its_key() {
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| {
        let backend = c.upstreams.backend.as_mut().expect("the sandbox backend");
        backend.policy.breaker_open = std::time::Duration::from_millis(1_500);
    })
    .await;
    let ada = app.token(ADA).await;
    // Failures in a row open the backend's breaker (reads are tried twice each).
    app.sandbox
        .set_faults(Upstream::Backend, sandbox::UpstreamKnobs::failing(1.0))
        .unwrap();
    for i in 0..5 {
        let query = format!("{{ order(id: \"ord-01980{i}\") {{ id }} }}");
        app.post(Some(&ada), &query, json!({})).await;
    }
    app.sandbox
        .set_faults(Upstream::Backend, sandbox::UpstreamKnobs::default())
        .unwrap();
    app.reset_counts();
    let key = "refused-by-the-breaker";
    let (_, refused) = app
        .post(
            Some(&ada),
            &operation("PlaceOrder"),
            order_input(Some(key), 1),
        )
        .await;
    assert_eq!(codes(&refused), ["UPSTREAM_UNAVAILABLE"], "{refused:#}");
    assert_eq!(placed(&app), 0, "the breaker sent nothing");

    // Nothing was written, so the key is free: once the breaker lets calls through, the
    // retry places the order (it is not `IDEMPOTENCY_OUTCOME_UNKNOWN`).
    tokio::time::sleep(std::time::Duration::from_millis(1_700)).await;
    let placed_now = app
        .data(&ada, &operation("PlaceOrder"), order_input(Some(key), 1))
        .await;
    assert!(placed_now["placeOrder"]["id"].is_string(), "{placed_now:#}");
    assert_eq!(placed(&app), 1);
    app.stop().await;
}
