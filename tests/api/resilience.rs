//! Failing upstreams, as a platform team watches them: partial data with the right codes,
//! circuit breakers opening and closing (in `/readyz` and `/metrics`), and the metrics
//! endpoint read by a Prometheus text-format parser; deadlines, and stale copies served while
//! an upstream fails.

use std::time::Duration;

use sandbox::{Upstream, UpstreamKnobs};
use serde_json::{Value, json};
use switchyard::config::Secret;

use crate::support::redis::RedisServer;
use crate::support::ws::signed_in;
use crate::support::{TestApp, operation};

/// `/metrics`, parsed as Prometheus parses it.
async fn scrape(app: &TestApp) -> prometheus_parse::Scrape {
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses")
}

/// The value of the sample `metric` with these labels (a histogram's: its count).
fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

async fn ready(app: &TestApp) -> (u16, Value) {
    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn home(app: &TestApp, token: &str) -> Value {
    let (status, body) = app
        .post(Some(token), &operation("HomeScreen"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn a_failing_crm_opens_its_breaker_the_home_screen_still_answers_and_it_closes_again() {
    let app = TestApp::spawn_with(Default::default(), |c| {
        let crm = c.upstreams.crm.as_mut().expect("the sandbox CRM");
        // Long enough that a loaded machine's home screens below stay inside it.
        crm.policy.breaker_open = Duration::from_secs(2);
    })
    .await;
    let token = app.token("cust-0001").await;
    let healthy = home(&app, &token).await;
    assert!(healthy.get("errors").is_none(), "{healthy}");
    let (status, body) = ready(&app).await;
    assert_eq!((status, &body["ready"]), (200, &json!(true)), "{body}");
    assert_eq!(body["checks"]["breakers"]["crm"], "closed");

    app.sandbox
        .set_faults(Upstream::Crm, UpstreamKnobs::failing(1.0))
        .unwrap();
    // The CRM fields are null with UPSTREAM_UNAVAILABLE; the rest of the screen stands.
    let failing = home(&app, &token).await;
    assert!(
        failing["data"]["me"]["orders"]["edges"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    );
    assert_eq!(
        failing["data"]["me"]["supportCases"],
        Value::Null,
        "{failing}"
    );
    let crm_errors: Vec<&Value> = failing["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["extensions"]["source"] == "crm")
        .collect();
    assert!(!crm_errors.is_empty(), "{failing}");
    assert!(
        crm_errors
            .iter()
            .all(|e| e["extensions"]["code"] == "UPSTREAM_UNAVAILABLE")
    );

    // Five failures in a row open the breaker: the CRM is no longer called.
    for _ in 0..4 {
        home(&app, &token).await;
    }
    let (status, body) = ready(&app).await;
    assert_eq!(status, 200, "the CRM is not required: {body}");
    assert_eq!(body["checks"]["breakers"]["crm"], "open", "{body}");
    assert!(
        body["degraded"]
            .as_array()
            .unwrap()
            .contains(&json!("upstream(crm)"))
    );
    let metrics = scrape(&app).await;
    assert_eq!(
        value(
            &metrics,
            "switchyard_upstream_breaker_open",
            &[("source", "crm")]
        ),
        Some(1.0)
    );
    app.reset_counts();
    let refused = home(&app, &token).await;
    assert_eq!(refused["data"]["me"]["supportCases"], Value::Null);
    assert!(
        !app.counts().contains_key("crm"),
        "an open breaker sends nothing: {:?}",
        app.counts()
    );

    // The CRM recovers (as a demo does it: `PUT /_sandbox/faults`); after the open time a
    // probe goes through and closes the breaker.
    let faults = format!("{}/_sandbox/faults", app.sandbox.urls().crm);
    let refused = app
        .http
        .put(&faults)
        .json(&json!({"error_rate": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let put = app
        .http
        .put(&faults)
        .json(&json!({"error_rate": 0.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let recovered = home(&app, &token).await;
    assert!(recovered.get("errors").is_none(), "{recovered}");
    assert!(recovered["data"]["me"]["supportCases"].is_array());
    let (_, body) = ready(&app).await;
    assert_eq!(body["checks"]["breakers"]["crm"], "closed", "{body}");
    let metrics = scrape(&app).await;
    assert_eq!(
        value(
            &metrics,
            "switchyard_upstream_breaker_open",
            &[("source", "crm")]
        ),
        Some(0.0)
    );
    app.stop().await;
}

#[tokio::test]
async fn an_open_breaker_on_the_backend_makes_the_replica_not_ready() {
    let app = TestApp::spawn().await;
    let token = app.token("cust-0001").await;
    app.sandbox
        .set_faults(Upstream::Backend, UpstreamKnobs::failing(1.0))
        .unwrap();
    for _ in 0..5 {
        app.post(Some(&token), "{ me { id } }", json!({})).await;
    }
    let (status, body) = ready(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["checks"]["breakers"]["backend"], "open");
    app.stop().await;
}

#[tokio::test]
async fn metrics_show_requests_errors_upstream_calls_and_the_cache() {
    let app = TestApp::spawn().await;
    let token = app.token("cust-0001").await;
    home(&app, &token).await;
    home(&app, &token).await;
    app.post(Some(&token), "query Broken { me { nope } }", json!({}))
        .await;
    let metrics = scrape(&app).await;
    let at_least = |metric: &str, labels: &[(&str, &str)], least: f64| {
        let found = value(&metrics, metric, labels);
        assert!(
            found.is_some_and(|v| v >= least),
            "{metric} {labels:?}: {found:?}"
        );
    };
    at_least(
        "switchyard_graphql_request_duration_seconds",
        &[
            ("operation", "HomeScreen"),
            ("transport", "http"),
            ("type", "query"),
        ],
        2.0,
    );
    at_least(
        "switchyard_graphql_errors_total",
        &[("code", "GRAPHQL_VALIDATION_FAILED")],
        1.0,
    );
    at_least(
        "switchyard_upstream_request_duration_seconds",
        &[("source", "backend"), ("status", "200")],
        1.0,
    );
    // The second home screen read the customer and products from the cache.
    at_least("switchyard_cache_requests_total", &[("result", "hit")], 1.0);
    at_least(
        "switchyard_cache_requests_total",
        &[("result", "miss")],
        1.0,
    );
    assert!(
        metrics
            .docs
            .contains_key("switchyard_graphql_request_duration_seconds")
    );

    // Live: a subscription running, and an event ingested and delivered to it.
    let order = app.first_order(&token).await;
    let mut client = signed_in(&app, "cust-0001").await;
    client
        .subscribe(
            "o",
            &format!("subscription {{ orderUpdated(id: \"{order}\") {{ id }} }}"),
        )
        .await;
    client.expect_quiet().await;
    let event = json!({"id": "evt_metrics_1", "type": "order.status_changed",
        "occurredAt": "2026-01-01T10:00:00Z",
        "data": {"orderId": order, "customerId": "cust-0001", "status": "SHIPPED"}});
    assert_eq!(app.post_webhook("backend", &event).await.0, 202);
    assert_eq!(
        client.recv().await["payload"]["data"]["orderUpdated"]["id"],
        order.as_str()
    );
    let metrics = scrape(&app).await;
    let at_least = |metric: &str, labels: &[(&str, &str)], least: f64| {
        let found = value(&metrics, metric, labels);
        assert!(
            found.is_some_and(|v| v >= least),
            "{metric} {labels:?}: {found:?}"
        );
    };
    at_least("switchyard_live_connections", &[], 1.0);
    at_least(
        "switchyard_subscriptions_total",
        &[("transport", "ws")],
        1.0,
    );
    at_least(
        "switchyard_subscriptions_active",
        &[("transport", "ws")],
        1.0,
    );
    at_least(
        "switchyard_webhooks_total",
        &[("source", "backend"), ("outcome", "accepted")],
        1.0,
    );
    at_least("switchyard_events_total", &[], 1.0);
    at_least("switchyard_events_delivered_total", &[], 1.0);
    drop(client);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while value(
        &scrape(&app).await,
        "switchyard_subscriptions_active",
        &[("transport", "ws")],
    ) != Some(0.0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the subscription ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

/// Waits for a new minute when the current one is about to end, so that a test's requests
/// all fall in one rate-limit window.
async fn fresh_window() {
    let into = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        % 60.0;
    if into > 50.0 {
        tokio::time::sleep(Duration::from_secs_f64(60.1 - into)).await;
    }
}

#[tokio::test]
async fn a_user_over_the_rate_limit_gets_429_over_http_and_an_error_over_websockets() {
    fresh_window().await;
    let app = TestApp::spawn_with(Default::default(), |c| {
        c.rate_limit.enabled = true;
        c.rate_limit.per_user_per_minute = 3;
        c.rate_limit.per_ip_per_minute = 1_000;
    })
    .await;
    let token = app.token("cust-0001").await;
    for _ in 0..3 {
        let (status, body) = app.post(Some(&token), "{ me { id } }", json!({})).await;
        assert_eq!(status, 200, "{body}");
    }
    let response = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(&token)
        .json(&json!({"query": "{ me { id } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "RATE_LIMITED",
        "{body}"
    );
    // Another user is not held back.
    let other = app.token("cust-0002").await;
    let (status, _) = app.post(Some(&other), "{ me { id } }", json!({})).await;
    assert_eq!(status, 200);
    // A subscribe counts too.
    let mut socket = crate::support::ws::signed_in(&app, "cust-0001").await;
    socket
        .subscribe("1", "subscription { notifications { kind } }")
        .await;
    let error = socket.recv().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(
        error["payload"][0]["extensions"]["code"], "RATE_LIMITED",
        "{error}"
    );
    app.stop().await;
}

#[tokio::test]
async fn replicas_share_the_client_address_limit_through_redis() {
    fresh_window().await;
    let redis = crate::support::redis::RedisServer::start();
    let limited = |c: &mut switchyard::config::Config| {
        c.rate_limit.enabled = true;
        c.rate_limit.per_ip_per_minute = 4;
        c.rate_limit.redis_url = Some(switchyard::config::Secret::new(redis.url()));
    };
    let (first, second) = (
        TestApp::spawn_with(Default::default(), limited).await,
        TestApp::spawn_with(Default::default(), limited).await,
    );
    // Anonymous requests from this machine's address, two to each replica.
    for app in [&first, &second, &first, &second] {
        let (status, _) = app.post(None, "{ __typename }", json!({})).await;
        assert_eq!(status, 200);
    }
    let (status, body) = second.post(None, "{ __typename }", json!({})).await;
    assert_eq!(status, 429, "{body}");
    // A batch counts as many as it holds, and is refused whole.
    let response = first
        .http
        .post(first.url("/graphql"))
        .json(&json!([{"query": "{ __typename }"}, {"query": "{ __typename }"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn a_stalled_carrier_costs_its_fields_not_the_home_screen() {
    // Requests end after 2 s; the carrier takes 10 s. Thirty home screens at once, with a
    // carrier budget of 8 calls in flight: calls wait for it, or for room in the budget, at
    // most until their request's deadline (the queue timeout alone is tested in `upstream`).
    let app = TestApp::spawn_with(Default::default(), |c| {
        c.server.request_timeout = Duration::from_secs(2);
        c.cache.enabled = false;
        let carrier = c.upstreams.carrier.as_mut().expect("the sandbox carrier");
        carrier.policy.concurrency = 8;
    })
    .await;
    // Thirty customers: their parcels differ (identical reads would be sent once).
    let mut tokens = Vec::new();
    for i in 1..=30 {
        tokens.push(app.token(&format!("cust-{i:04}")).await);
    }
    let stalled = UpstreamKnobs::slow(10_000);
    app.sandbox.set_faults(Upstream::Carrier, stalled).unwrap();

    let document = operation("HomeScreen");
    let screens = || {
        futures::future::join_all(
            tokens
                .iter()
                .map(|token| app.post(Some(token), &document, json!({}))),
        )
    };
    let started = std::time::Instant::now();
    let answers = screens().await;
    let elapsed = started.elapsed();
    partial_with_the_carrier_missing(&answers);
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");

    // The failures are remembered: with the breaker open, the next screens do not wait for
    // the carrier, nor call it.
    app.reset_counts();
    let answers = screens().await;
    partial_with_the_carrier_missing(&answers);
    assert!(!app.counts().contains_key("carrier"), "{:?}", app.counts());
    let (_, body) = ready(&app).await;
    assert_eq!(body["checks"]["breakers"]["carrier"], "open", "{body}");
    app.stop().await;
}

/// In a batch too, a stalled carrier costs only its fields: the batch's loads keep the
/// request's deadline, so its carrier calls give up in time and the home screen answers
/// with its orders (not a `TIMEOUT` for the whole operation).
#[tokio::test]
async fn a_stalled_carrier_costs_its_fields_in_a_batch_too() {
    let app = TestApp::spawn_with(Default::default(), |c| {
        c.server.request_timeout = Duration::from_secs(2);
        c.cache.enabled = false;
    })
    .await;
    let token = app.token("cust-0001").await;
    app.sandbox
        .set_faults(Upstream::Carrier, UpstreamKnobs::slow(10_000))
        .unwrap();
    let batch = json!([
        {"query": operation("HomeScreen")},
        {"query": "{ viewer { __typename } }"},
    ]);
    let started = std::time::Instant::now();
    let (status, body) = app.post_batch(&token, batch).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 200, "{body}");
    let answers = body.as_array().expect("an array of results");
    only_the_carrier_failed(&answers[0]);
    assert!(answers[0].get("errors").is_some(), "Ada's parcels: {body}");
    assert_eq!(
        answers[1]["data"]["viewer"]["__typename"], "ViewerInfo",
        "{body}"
    );
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    app.stop().await;
}

/// Every answer is a 200 with the orders, and only carrier fields failed (on most screens).
fn partial_with_the_carrier_missing(answers: &[(u16, Value)]) {
    for (status, body) in answers {
        // Partial data, not a 504: the orders are there, their tracking is null.
        assert_eq!(*status, 200, "{body}");
        only_the_carrier_failed(body);
    }
    assert!(
        answers
            .iter()
            .filter(|(_, body)| body.get("errors").is_some())
            .count()
            >= 20,
        "most screens show a parcel"
    );
}

/// A home screen with its orders, whose errors (if any: a customer without a parcel has no
/// tracking to miss) are all the carrier's.
fn only_the_carrier_failed(body: &Value) {
    let orders = body["data"]["me"]["orders"]["edges"].as_array();
    assert!(orders.is_some_and(|o| !o.is_empty()), "{body}");
    let errors = body["errors"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    assert!(
        errors
            .iter()
            .all(|e| e["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
                && e["extensions"]["source"] == "carrier"),
        "{body}"
    );
}

/// Ages the cached copy under `key` (in the test Redis) by `by`.
async fn age_entry(redis: &RedisServer, key: &str, by: Duration) {
    let mut connection = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stored: String = redis::cmd("GET")
        .arg(key)
        .query_async(&mut connection)
        .await
        .unwrap_or_else(|e| panic!("{key} is cached: {e}"));
    let mut entry: Value = serde_json::from_str(&stored).unwrap();
    let at = entry["at"].as_u64().unwrap();
    entry["at"] = json!(at - u64::try_from(by.as_millis()).unwrap());
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(entry.to_string())
        .arg("EX")
        .arg(3600)
        .query_async(&mut connection)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_order_past_its_ttl_is_served_stale_and_marked_while_the_backend_fails() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(Default::default(), |c| {
        c.cache.redis_url = Some(Secret::new(redis.url()));
        c.cache.key_prefix = "stale:".to_owned();
    })
    .await;
    let ada = app.token("cust-0001").await;
    let bob = app.token("cust-0002").await;
    let order = app.first_order(&ada).await;
    let query = "query($id: ID!) { order(id: $id) { id status total { formatted } } }";
    let (_, fresh) = app.post(Some(&ada), query, json!({"id": order})).await;
    assert!(
        fresh.get("errors").is_none() && fresh.get("extensions").is_none(),
        "{fresh}"
    );
    let (_, bobs_fresh) = app.post(Some(&bob), query, json!({"id": order})).await;

    // Two minutes old: past the orders' 30 s TTL, within the 10 min grace.
    let key = format!("stale:entity:v2:order:{order}");
    age_entry(&redis, &key, Duration::from_secs(120)).await;
    app.sandbox
        .set_faults(Upstream::Backend, UpstreamKnobs::failing(1.0))
        .unwrap();
    let (status, stale) = app.post(Some(&ada), query, json!({"id": order})).await;
    assert_eq!(status, 200);
    assert_eq!(stale["data"], fresh["data"], "{stale}");
    assert!(stale.get("errors").is_none(), "{stale}");
    let marked = stale["extensions"]["stale"].as_array().unwrap();
    assert_eq!(marked.len(), 1, "{stale}");
    assert_eq!(marked[0]["type"], "Order");
    assert_eq!(marked[0]["id"], order.as_str());
    let age = marked[0]["ageSeconds"].as_u64().unwrap();
    assert!((120..180).contains(&age), "{age}");

    // Another customer gets from the stale copy exactly what the fresh one gave them.
    let (_, bobs_stale) = app.post(Some(&bob), query, json!({"id": order})).await;
    assert_eq!(bobs_stale["data"], bobs_fresh["data"], "{bobs_stale}");
    assert_eq!(bobs_stale["errors"], bobs_fresh["errors"], "{bobs_stale}");

    // Past the grace, the copy is not served: the field fails as the backend does.
    age_entry(&redis, &key, Duration::from_secs(600)).await;
    let (_, failed) = app.post(Some(&ada), query, json!({"id": order})).await;
    assert_eq!(failed["data"]["order"], Value::Null, "{failed}");
    assert_eq!(
        failed["errors"][0]["extensions"]["code"],
        "UPSTREAM_UNAVAILABLE"
    );
    assert!(failed["extensions"].get("stale").is_none(), "{failed}");
    app.stop().await;
}

#[tokio::test]
async fn redis_going_away_costs_the_cache_not_the_service_and_it_comes_back() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let app = TestApp::spawn_with(Default::default(), move |c| {
        c.cache.redis_url = Some(Secret::new(url.clone()));
        c.persisted_queries.redis_url = Some(Secret::new(url.clone()));
        c.events.redis_url = Some(Secret::new(url));
    })
    .await;
    let token = app.token("cust-0001").await;
    let healthy = home(&app, &token).await;
    assert!(healthy.get("errors").is_none(), "{healthy}");
    let features = "events,cache,persisted_queries";
    let (status, body) = ready(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["redis"][features], "ok", "{body}");

    redis.kill();
    // The screen is read from the upstreams: the same data, no error, in good time.
    let started = std::time::Instant::now();
    let without = home(&app, &token).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(without.get("errors").is_none(), "{without}");
    assert_eq!(without["data"], healthy["data"]);
    // Degraded, and said so, but still ready: every replica shares this Redis, so taking
    // them all out of the load balancer would turn a degraded service into no service.
    let (status, body) = ready(&app).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["degraded"]
            .as_array()
            .unwrap()
            .contains(&json!(format!("redis({features})"))),
        "{body}"
    );
    assert_ne!(body["checks"]["redis"][features], "ok", "{body}");
    // A webhook cannot be put on the bus: refused, so that its sender delivers it again.
    let event = json!({"id": "evt_redis_down_1", "type": "order.status_changed",
        "occurredAt": "2026-01-01T10:00:00Z",
        "data": {"orderId": "ord-000001", "customerId": "cust-0001", "status": "SHIPPED"}});
    let (status, refused) = app.post_webhook("backend", &event).await;
    assert_eq!(status, 503, "{refused}");

    redis.start_again();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = ready(&app).await;
        if body["checks"]["redis"][features] == "ok" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The cache fills and serves again; the webhook is taken.
    home(&app, &token).await;
    let hits = |m: &prometheus_parse::Scrape| {
        value(m, "switchyard_cache_requests_total", &[("result", "hit")]).unwrap_or(0.0)
    };
    let before = hits(&scrape(&app).await);
    let again = home(&app, &token).await;
    assert_eq!(again["data"], healthy["data"]);
    assert!(hits(&scrape(&app).await) > before, "the cache serves again");
    assert_eq!(app.post_webhook("backend", &event).await.0, 202);
    app.stop().await;
}
