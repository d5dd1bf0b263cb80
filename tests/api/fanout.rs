//! The fan-out of events to subscriptions, end to end: each event reaches exactly the
//! subscribers it concerns, and never another customer's (indexed by customer, order, case and audience at the hub), the
//! connections of one viewer running one document share one view, and nothing is left at the
//! hub once they are gone. `/metrics` says what this server's hub and views hold.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::ws::{Client, signed_in};
use crate::support::{TestApp, WAIT};

const ADA: &str = "cust-0001";
const BOB: &str = "cust-0002";
const AGENT: &str = "agent-01";
const FEED: &str = "subscription { notifications { id summary } }";

/// This server's `(hub subscriptions, shared views)`, from `/metrics`.
async fn live(app: &TestApp) -> (u64, u64) {
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let gauge = |name: &str| -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
            .trim()
            .parse()
            .unwrap()
    };
    (
        gauge("switchyard_hub_subscriptions"),
        gauge("switchyard_shared_views"),
    )
}

/// Waits until `/metrics` says `(hub subscriptions, shared views)`.
async fn until_live(app: &TestApp, expected: (u64, u64)) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = live(app).await;
        if now == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "(hub subscriptions, shared views) stayed {now:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn status_changed(id: &str, order: &str, customer: &str) -> Value {
    json!({"id": id, "type": "order.status_changed", "occurredAt": "2026-01-01T10:00:00Z",
        "data": {"orderId": order, "customerId": customer, "status": "SHIPPED"}})
}

/// The id of the event in a `notifications` result.
fn notified(next: &Value) -> &str {
    assert_eq!(next["type"], "next", "{next:#}");
    assert!(next["payload"].get("errors").is_none(), "{next:#}");
    next["payload"]["data"]["notifications"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{next:#}"))
}

async fn subscribed(app: &TestApp, user: &str, query: &str) -> Client {
    let mut client = signed_in(app, user).await;
    client.subscribe("s", query).await;
    client.expect_quiet().await;
    client
}

#[tokio::test]
async fn events_reach_exactly_the_subscribers_they_concern() {
    let app = TestApp::spawn().await;
    let ada_order = app.first_order(&app.token(ADA).await).await;
    let bob_order = app.first_order(&app.token(BOB).await).await;
    let order_query =
        |order: &str| format!("subscription {{ orderUpdated(id: \"{order}\") {{ id }} }}");
    let follow = |customer: &str| {
        format!("subscription {{ notifications(customerId: \"{customer}\") {{ id summary }} }}")
    };

    // Ada's feed on two connections (one view), Bob's feed, Ada's order, and an agent
    // following Bob and watching Ada's order (watching an order is never shared: it reads
    // the order for each subscriber as it starts).
    let mut ada_phone = subscribed(&app, ADA, FEED).await;
    let mut ada_tab = subscribed(&app, ADA, FEED).await;
    let mut bob = subscribed(&app, BOB, FEED).await;
    let mut ada_watch = subscribed(&app, ADA, &order_query(&ada_order)).await;
    let mut agent_follows_bob = subscribed(&app, AGENT, &follow(BOB)).await;
    let mut agent_watch = subscribed(&app, AGENT, &order_query(&ada_order)).await;
    until_live(&app, (5, 3)).await;

    let ada_event = status_changed("evt_fanout_ada", &ada_order, ADA);
    assert_eq!(app.post_webhook("backend", &ada_event).await.0, 202);
    assert_eq!(notified(&ada_phone.recv().await), "backend:evt_fanout_ada");
    assert_eq!(notified(&ada_tab.recv().await), "backend:evt_fanout_ada");
    for watch in [&mut ada_watch, &mut agent_watch] {
        let next = watch.recv().await;
        assert_eq!(
            next["payload"]["data"]["orderUpdated"]["id"], ada_order,
            "{next:#}"
        );
    }

    let bob_event = status_changed("evt_fanout_bob", &bob_order, BOB);
    assert_eq!(app.post_webhook("backend", &bob_event).await.0, 202);
    assert_eq!(notified(&bob.recv().await), "backend:evt_fanout_bob");
    assert_eq!(
        notified(&agent_follows_bob.recv().await),
        "backend:evt_fanout_bob"
    );

    // Bob's event went nowhere near Ada's subscriptions, nor Ada's near Bob's: what each
    // got next is the next event that concerns it.
    let again = status_changed("evt_fanout_ada_2", &ada_order, ADA);
    assert_eq!(app.post_webhook("backend", &again).await.0, 202);
    assert_eq!(
        notified(&ada_phone.recv().await),
        "backend:evt_fanout_ada_2"
    );
    assert_eq!(notified(&ada_tab.recv().await), "backend:evt_fanout_ada_2");
    for watch in [&mut ada_watch, &mut agent_watch] {
        let next = watch.recv().await;
        assert_eq!(
            next["payload"]["data"]["orderUpdated"]["id"], ada_order,
            "{next:#}"
        );
    }
    for client in [&mut bob, &mut agent_follows_bob] {
        client.expect_quiet().await;
    }
    app.stop().await;
}

#[tokio::test]
async fn connections_of_one_viewer_and_document_share_a_view_and_no_one_else_does() {
    let app = TestApp::spawn().await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(subscribed(&app, ADA, FEED).await);
    }
    // One view, one hub subscription, for Ada's three connections.
    until_live(&app, (1, 1)).await;
    // Another customer, the same document: a view of their own.
    clients.push(subscribed(&app, BOB, FEED).await);
    // Ada again, another document (an alias): a view of its own.
    clients.push(
        subscribed(
            &app,
            ADA,
            "subscription { feed: notifications { id summary } }",
        )
        .await,
    );
    until_live(&app, (3, 3)).await;

    let event = status_changed("evt_fanout_shared", "ord-000001", ADA);
    assert_eq!(app.post_webhook("backend", &event).await.0, 202);
    let mut payloads = Vec::new();
    for client in clients.iter_mut().take(3) {
        payloads.push(client.recv().await["payload"].clone());
    }
    assert_eq!(
        payloads[0]["data"]["notifications"]["id"],
        "backend:evt_fanout_shared"
    );
    assert!(payloads.iter().all(|p| *p == payloads[0]), "{payloads:#?}");
    let aliased = clients[4].recv().await;
    assert_eq!(
        aliased["payload"]["data"]["feed"]["id"],
        "backend:evt_fanout_shared"
    );
    clients[3].expect_quiet().await;

    // One of Ada's connections leaves: the others keep the view.
    clients.remove(0).close().await;
    until_live(&app, (3, 3)).await;
    let event = status_changed("evt_fanout_shared_2", "ord-000001", ADA);
    assert_eq!(app.post_webhook("backend", &event).await.0, 202);
    for client in clients.iter_mut().take(2) {
        assert_eq!(
            notified(&client.recv().await),
            "backend:evt_fanout_shared_2"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn the_hub_is_empty_again_after_subscribers_leave() {
    let app = TestApp::spawn().await;
    let users = [ADA, BOB, "cust-0003", AGENT];
    for round in 0..5 {
        let mut clients = Vec::new();
        for (n, user) in users.iter().enumerate() {
            // Per user, a document of this round on two connections (one view) and another
            // on one: feeds, and an agent's tasks (under two keys at the hub).
            let (shared, own) = match *user {
                AGENT => (
                    format!("subscription {{ r{round}: taskAssigned {{ id }} }}"),
                    "subscription { taskAssigned { id name } }".to_owned(),
                ),
                _ => (
                    format!("subscription {{ r{round}u{n}: notifications {{ id }} }}"),
                    FEED.to_owned(),
                ),
            };
            for _ in 0..2 {
                clients.push(subscribed(&app, user, &shared).await);
            }
            clients.push(subscribed(&app, user, &own).await);
        }
        until_live(&app, (8, 8)).await;
        // They leave every way a client can: stopping the operation, closing the socket,
        // and dropping the connection.
        for (n, mut client) in clients.into_iter().enumerate() {
            match n % 3 {
                0 => {
                    client.send(json!({"type": "complete", "id": "s"})).await;
                    client.expect_quiet().await;
                    drop(client);
                }
                1 => client.close().await,
                _ => drop(client),
            }
        }
        until_live(&app, (0, 0)).await;
    }
    app.stop().await;
}
