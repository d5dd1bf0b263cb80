//! `@live` queries over websockets and SSE: a new result when an event changes what the
//! last one showed, only when it differs, one re-run for a burst of events, and one
//! upstream read for a changed entity however many live queries show it.

use std::time::{Duration, Instant};

use sandbox::{SandboxConfig, Upstream};
use serde_json::{Value, json};

use crate::support::sse::sse;
use crate::support::ws::signed_in;
use crate::support::{TestApp, WAIT, operation};

const ADA: &str = "cust-0001";

/// One of Ada's seeded orders that she may still cancel.
async fn cancellable_order(app: &TestApp, token: &str) -> String {
    let mine = app
        .data(
            token,
            "{ me { orders(first: 50) { edges { node { id canCancel } } } } }",
            json!({}),
        )
        .await;
    mine["me"]["orders"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|edge| edge["node"]["canCancel"] == true)
        .and_then(|edge| edge["node"]["id"].as_str())
        .expect("a seeded order Ada may cancel")
        .to_owned()
}

/// A change of `order`'s status to `status`, as the backend's webhook says it.
fn status_changed(id: &str, order: &str, status: &str) -> Value {
    json!({"id": id, "type": "order.status_changed", "occurredAt": "2026-01-01T10:00:00Z",
           "data": {"orderId": order, "customerId": ADA, "status": status}})
}

fn backend_requests(app: &TestApp) -> u64 {
    app.sandbox.requests(Upstream::Backend).values().sum()
}

/// Waits until the backend has had at least one request since the last reset, then a
/// little longer, and answers how many it had.
async fn backend_requests_once_settled(app: &TestApp) -> u64 {
    let deadline = Instant::now() + WAIT;
    while backend_requests(app) == 0 {
        assert!(Instant::now() < deadline, "nothing read the backend");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    backend_requests(app)
}

#[tokio::test]
async fn live_queries_follow_their_order_each_changed_entity_read_once() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    let order = cancellable_order(&app, &ada).await;
    let query = format!("query Watch @live {{ order(id: \"{order}\") {{ id status }} }}");
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut client = signed_in(&app, ADA).await;
        client.subscribe(&format!("l{i}"), &query).await;
        let first = client.recv().await;
        assert_eq!(first["type"], "next", "{first}");
        assert_eq!(first["payload"]["data"]["order"]["id"], order.as_str());
        assert_ne!(first["payload"]["data"]["order"]["status"], "CANCELLED");
        clients.push(client);
    }

    // An event about the order that changes nothing it shows: every live query runs again,
    // reading the order once between them, and sends nothing.
    app.reset_counts();
    let unchanged = status_changed("evt_live_same", &order, "CONFIRMED");
    assert_eq!(app.post_webhook("backend", &unchanged).await.0, 202);
    assert_eq!(
        backend_requests_once_settled(&app).await,
        1,
        "{:?}",
        app.sandbox.requests(Upstream::Backend)
    );
    for client in &mut clients {
        client.expect_quiet().await;
    }

    // The order is cancelled: each live query gets the new result, and keeps running.
    app.data(&ada, &operation("CancelOrder"), json!({"id": order}))
        .await;
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(
            client.recv().await,
            json!({"type": "next", "id": format!("l{i}"), "payload": {"data": {"order": {
                "id": order, "status": "CANCELLED"
            }}}})
        );
        client.expect_quiet().await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_burst_of_events_is_one_run_and_sse_and_http_carry_live_queries_too() {
    // A second to gather each burst: the ten events below all land within it.
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| {
        c.cache.enabled = false;
        c.subscriptions.live_coalesce_ms = 1_000;
    })
    .await;
    let ada = app.token(ADA).await;
    let order = cancellable_order(&app, &ada).await;
    let query = "query Orders @live { me { orders(first: 3) { edges { node { id } } } } }";

    // Over HTTP, a live query is one result.
    let once = app.data(&ada, query, json!({})).await;
    assert_eq!(once["me"]["orders"]["edges"].as_array().unwrap().len(), 3);

    let mut stream = sse(&app, Some(&ada), json!({"query": query}))
        .await
        .stream();
    let first = stream.next().await;
    assert_eq!(first["data"], once, "{first}");

    app.reset_counts();
    let events = (0..10).map(|i| status_changed(&format!("evt_burst_{i}"), &order, "CONFIRMED"));
    let posted = futures::future::join_all(
        events
            .collect::<Vec<_>>()
            .iter()
            .map(|event| app.post_webhook("backend", event)),
    )
    .await;
    assert!(posted.iter().all(|(status, _)| *status == 202));
    // One run for the ten: one read of Ada and of her orders (nothing changed, nothing
    // sent). (The notification rules read the order of each event: `GET /orders`.)
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    backend_requests_once_settled(&app).await;
    let backend = app.sandbox.requests(Upstream::Backend);
    assert_eq!(backend.get("GET /customers"), Some(&1), "{backend:?}");
    assert_eq!(
        backend.get("GET /customers/{id}/orders"),
        Some(&1),
        "{backend:?}"
    );

    // A new order of Ada's names her, not an order the last run read: the query sees it.
    let placed = app
        .data(
            &ada,
            &operation("PlaceOrder"),
            json!({"input": {"lines": [{"productId": "prod-0001", "quantity": 1}]}}),
        )
        .await;
    let new = placed["placeOrder"]["id"].as_str().unwrap();
    let next = stream.next().await;
    assert_eq!(
        next["data"]["me"]["orders"]["edges"][0]["node"]["id"], new,
        "{next}"
    );
    // A live query never completes on its own: the client stops it.
    drop(stream);
    app.stop().await;
}

#[tokio::test]
async fn a_live_query_follows_what_it_read_through_a_failed_run() {
    // No entity cache: a failing backend fails the run (no stale copy to serve).
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| c.cache.enabled = false).await;
    let ada = app.token(ADA).await;
    let order = cancellable_order(&app, &ada).await;
    // An agent: nothing of the order is the viewer's own, only the last run read it.
    let mut client = signed_in(&app, "agent-01").await;
    let query = format!("query Watch @live {{ order(id: \"{order}\") {{ id status }} }}");
    client.subscribe("l", &query).await;
    let first = client.recv().await;
    assert_eq!(
        first["payload"]["data"]["order"]["id"],
        order.as_str(),
        "{first}"
    );

    app.sandbox
        .set_faults(Upstream::Backend, sandbox::UpstreamKnobs::failing(1.0))
        .unwrap();
    let event = status_changed("evt_live_fail_1", &order, "CONFIRMED");
    assert_eq!(app.post_webhook("backend", &event).await.0, 202);
    let failed = client.recv().await;
    assert_eq!(failed["payload"]["data"]["order"], Value::Null, "{failed}");
    assert_eq!(
        failed["payload"]["errors"][0]["extensions"]["code"], "UPSTREAM_UNAVAILABLE",
        "{failed}"
    );

    // The backend is back; the next event about the order shows it again.
    app.sandbox
        .set_faults(Upstream::Backend, sandbox::UpstreamKnobs::default())
        .unwrap();
    let event = status_changed("evt_live_fail_2", &order, "CONFIRMED");
    assert_eq!(app.post_webhook("backend", &event).await.0, 202);
    assert_eq!(client.recv().await, first);
    app.stop().await;
}

#[tokio::test]
async fn a_live_query_that_does_not_validate_gets_its_errors_once_and_ends() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    let body = json!({"query": "query L @live { me { nope } }"});
    let mut stream = sse(&app, Some(&ada), body).await.stream();
    let next = stream.next().await;
    assert_eq!(
        next["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
        "{next}"
    );
    stream.complete().await;
    app.stop().await;
}
