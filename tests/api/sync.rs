//! Delta sync (`Query.sync`) over real HTTP, on the memory bus and on a private Redis: an app
//! takes a snapshot, goes offline while the sandbox moves on (orders ship, parcels move, agents
//! answer cases, a return is approved, a task is done elsewhere), comes back and gets exactly
//! what changed in one call, and nothing in a second; tokens that expired, are forged or are
//! another user's are refused with their codes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sandbox::{SandboxChange, SandboxConfig};
use serde_json::{Value, json};
use switchyard::config::Secret;

use crate::support::redis::RedisServer;
use crate::support::{TestApp, WAIT, operation};

const ADA: &str = "cust-0001";
const BOB: &str = "cust-0002";
const AGENT: &str = "agent-01";

/// An entity as sync names it: (`type`, `id`).
type Key = (String, String);

/// What the app holds after applying sync pages: each entity's latest JSON.
#[derive(Debug, Default)]
struct Pulled {
    changes: BTreeMap<Key, Value>,
    removed: BTreeSet<Key>,
    token: String,
    pages: usize,
    snapshot: bool,
}

fn key(item: &Value) -> Key {
    (
        item["type"].as_str().unwrap().to_owned(),
        item["id"].as_str().unwrap().to_owned(),
    )
}

/// One `sync` call, pages of `first`: the whole body.
async fn sync_page(app: &TestApp, user: &str, token: Option<&str>, first: usize) -> Value {
    let (status, body) = app
        .post(
            Some(user),
            &operation("Sync"),
            json!({ "token": token, "first": first }),
        )
        .await;
    assert_eq!(status, 200, "{body:#}");
    body
}

/// One `sync` call of 50: the whole body.
async fn sync_once(app: &TestApp, user: &str, token: Option<&str>) -> Value {
    sync_page(app, user, token, 50).await
}

/// `sync` from `token` until `hasMore` is false, every page without errors.
async fn sync_all(app: &TestApp, user: &str, token: Option<&str>) -> Pulled {
    sync_by(app, user, token, 50).await
}

/// `sync` from `token` in pages of `first` until `hasMore` is false, every page without
/// errors.
async fn sync_by(app: &TestApp, user: &str, token: Option<&str>, first: usize) -> Pulled {
    let mut pulled = Pulled::default();
    let mut token = token.map(str::to_owned);
    loop {
        let body = sync_page(app, user, token.as_deref(), first).await;
        assert!(body.get("errors").is_none(), "{body:#}");
        let page = &body["data"]["sync"];
        pulled.pages += 1;
        pulled.snapshot = page["snapshot"].as_bool().unwrap();
        for change in page["changes"].as_array().unwrap() {
            pulled.removed.remove(&key(change));
            pulled.changes.insert(key(change), change.clone());
        }
        for gone in page["removed"].as_array().unwrap() {
            pulled.changes.remove(&key(gone));
            pulled.removed.insert(key(gone));
        }
        token = Some(page["token"].as_str().unwrap().to_owned());
        if !page["hasMore"].as_bool().unwrap() {
            break;
        }
        assert!(pulled.pages < 50, "sync keeps saying hasMore");
    }
    pulled.token = token.unwrap();
    pulled
}

fn codes(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["extensions"]["code"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn keys(kind: &str, ids: impl IntoIterator<Item = String>) -> BTreeSet<Key> {
    ids.into_iter().map(|id| (kind.to_owned(), id)).collect()
}

/// Ada's working set as the home screen's own queries show it: every order, every case, her
/// open tasks.
async fn working_set(app: &TestApp, ada: &str) -> BTreeSet<Key> {
    let mut orders = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = app
            .data(
                ada,
                "query($after: String) { me { orders(first: 50, after: $after) { \
                 edges { node { id } } pageInfo { hasNextPage endCursor } } } }",
                json!({ "after": after }),
            )
            .await;
        let orders_page = &page["me"]["orders"];
        for edge in orders_page["edges"].as_array().unwrap() {
            orders.push(edge["node"]["id"].as_str().unwrap().to_owned());
        }
        if !orders_page["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = orders_page["pageInfo"]["endCursor"]
            .as_str()
            .map(str::to_owned);
    }
    let rest = app
        .data(
            ada,
            "{ me { supportCases { id } tasks { id } } }",
            json!({}),
        )
        .await;
    let ids = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|item| item["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut set = keys("ORDER", orders);
    set.extend(keys("SUPPORT_CASE", ids(&rest["me"]["supportCases"])));
    set.extend(keys("TASK", ids(&rest["me"]["tasks"])));
    set
}

/// What one of the sandbox's changes means for Ada's working set: the entity, and whether it
/// is still in it (`false`: a task that left her list).
fn ada_entity(change: &SandboxChange) -> Option<(Key, bool)> {
    let entity = |kind: &str, id: &str| (kind.to_owned(), id.to_owned());
    match change {
        SandboxChange::OrderStatusChanged {
            order_id,
            customer_id,
            ..
        }
        | SandboxChange::ShipmentScanned {
            order_id,
            customer_id,
            ..
        } if customer_id == ADA => Some((entity("ORDER", order_id), true)),
        SandboxChange::CaseChanged {
            case_id,
            customer_id: Some(customer_id),
            ..
        } if customer_id == ADA => Some((entity("SUPPORT_CASE", case_id), true)),
        // Internal notes are not hers to see: no change for her.
        SandboxChange::CaseCommentAdded {
            case_id,
            customer_id: Some(customer_id),
            published: true,
            ..
        } if customer_id == ADA => Some((entity("SUPPORT_CASE", case_id), true)),
        SandboxChange::TaskChanged {
            task_id,
            status,
            actual_owner,
            potential_owners,
            ..
        } if potential_owners.iter().any(|o| o == ADA) || actual_owner.as_deref() == Some(ADA) => {
            let open = matches!(status.as_str(), "Ready" | "Reserved");
            Some((entity("TASK", &task_id.to_string()), open))
        }
        _ => None,
    }
}

/// Ada asks to return one of her shipped or delivered orders (the first the process server
/// takes), and an agent approves it: she gets a ConfirmPickup task.
async fn approved_return(app: &TestApp, ada: &str, agent: &str) {
    let orders = app
        .data(
            ada,
            "{ me { orders(first: 50) { edges { node { id status } } } } }",
            json!({}),
        )
        .await;
    let mut process = None;
    for edge in orders["me"]["orders"]["edges"].as_array().unwrap() {
        if !matches!(
            edge["node"]["status"].as_str(),
            Some("SHIPPED" | "DELIVERED")
        ) {
            continue;
        }
        let (_, started) = app
            .post(
                Some(ada),
                &operation("RequestReturn"),
                json!({ "orderId": edge["node"]["id"], "reason": "Too small" }),
            )
            .await;
        if let Some(id) = started["data"]["requestReturn"]["id"].as_str() {
            process = Some(id.to_owned());
            break;
        }
    }
    let process = process.expect("one of Ada's orders can be returned");
    let tasks = app.data(agent, &operation("AgentTasks"), json!({})).await;
    let approval = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["process"]["id"] == process)
        .expect("the approval waits for the agents")["id"]
        .clone();
    app.data(agent, &operation("ClaimTask"), json!({ "id": approval }))
        .await;
    app.data(
        agent,
        &operation("CompleteTask"),
        json!({ "id": approval, "input": { "approved": true } }),
    )
    .await;
}

/// Ada's open ConfirmPickup task ids.
async fn pickups(app: &TestApp, ada: &str) -> BTreeSet<String> {
    let home = app
        .data(ada, "{ me { tasks { id name } } }", json!({}))
        .await;
    home["me"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == "ConfirmPickup")
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls the delta from `token` until Switchyard has ingested the webhooks of what the
/// sandbox did: until it equals `expected`, or [`WAIT`] passes (then the last one is
/// returned, for the assertion to show).
async fn delta_once_ingested(
    app: &TestApp,
    ada: &str,
    token: &str,
    expected: &(BTreeSet<Key>, BTreeSet<Key>),
) -> Pulled {
    let deadline = Instant::now() + WAIT;
    loop {
        let pulled = sync_all(app, ada, Some(token)).await;
        let got: BTreeSet<Key> = pulled.changes.keys().cloned().collect();
        if (&got, &pulled.removed) == (&expected.0, &expected.1) || Instant::now() > deadline {
            return pulled;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The whole cycle, on whatever bus `app` runs.
async fn offline_and_back(app: TestApp) {
    let ada = app.token(ADA).await;
    let agent = app.token(AGENT).await;

    // Ada has a pick-up to confirm before she goes offline (the seeded one, and one more).
    let start = sync_all(&app, &ada, None).await.token;
    let seeded = pickups(&app, &ada).await;
    approved_return(&app, &ada, &agent).await;
    let before = pickups(&app, &ada).await;
    let new: Vec<Key> = keys("TASK", before.difference(&seeded).cloned())
        .into_iter()
        .collect();
    assert_eq!(new.len(), 1, "{seeded:?} -> {before:?}");
    // Its webhooks must be in before the snapshot, or they would count as offline changes:
    // the new pick-up's creation is the last of them.
    let deadline = Instant::now() + WAIT;
    while !sync_all(&app, &ada, Some(&start))
        .await
        .changes
        .contains_key(&new[0])
    {
        assert!(
            Instant::now() < deadline,
            "the return's webhooks never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Online: the snapshot is the working set the app's queries show.
    let snapshot = sync_by(&app, &ada, None, 5).await;
    assert!(snapshot.snapshot);
    assert!(
        snapshot.pages >= snapshot.changes.len() / 5,
        "paged by 5: {} pages of {}",
        snapshot.pages,
        snapshot.changes.len()
    );
    assert!(snapshot.pages > 2, "{} pages", snapshot.pages);
    assert_eq!(
        snapshot.changes.keys().cloned().collect::<BTreeSet<_>>(),
        working_set(&app, &ada).await
    );
    assert!(snapshot.removed.is_empty());
    let right_after = sync_all(&app, &ada, Some(&snapshot.token)).await;
    assert!(!right_after.snapshot);
    assert_eq!(
        (right_after.changes.len(), right_after.removed.len()),
        (0, 0),
        "nothing changed since the snapshot: {right_after:?}"
    );

    // Offline: the world moves on. Every change is noted as the sandbox announces it.
    let mut announced = app.sandbox.changes();
    let mut expected: BTreeMap<Key, bool> = BTreeMap::new();
    let note = |announced: &mut tokio::sync::broadcast::Receiver<SandboxChange>,
                expected: &mut BTreeMap<Key, bool>| {
        loop {
            match announced.try_recv() {
                Ok(change) => {
                    if let Some((key, open)) = ada_entity(&change) {
                        expected.insert(key, open);
                    }
                }
                Err(tokio::sync::broadcast::error::TryRecvError::Empty) => break,
                Err(other) => panic!("the sandbox's changes were not all seen: {other:?}"),
            }
        }
    };
    // A pick-up confirmed on another device: it leaves her list.
    let done = before.iter().next().unwrap().clone();
    app.data(&ada, &operation("CompleteTask"), json!({ "id": done }))
        .await;
    // Another return approved: a new pick-up appears.
    approved_return(&app, &ada, &agent).await;
    note(&mut announced, &mut expected);
    // Orders ship, parcels move, agents answer: until some of Ada's orders and cases moved.
    let mut steps = 0;
    loop {
        app.sandbox.step();
        steps += 1;
        note(&mut announced, &mut expected);
        let kinds: BTreeSet<&str> = expected.keys().map(|(kind, _)| kind.as_str()).collect();
        let orders = expected.keys().filter(|(kind, _)| kind == "ORDER").count();
        if (kinds.contains("SUPPORT_CASE") && orders >= 2) || steps >= 5000 {
            break;
        }
    }
    assert!(
        steps < 5000,
        "the simulator never moved Ada's orders and cases: {expected:?}"
    );
    let changed: BTreeSet<Key> = expected
        .iter()
        .filter(|(_, open)| **open)
        .map(|(key, _)| key.clone())
        .collect();
    let removed: BTreeSet<Key> = expected
        .iter()
        .filter(|(_, open)| !**open)
        .map(|(key, _)| key.clone())
        .collect();
    assert!(removed.contains(&("TASK".to_owned(), done.clone())));
    assert!(
        changed.iter().any(|(kind, _)| kind == "TASK"),
        "{changed:?}"
    );

    // Back online: one sync call gets exactly what changed, in its current state.
    let back = delta_once_ingested(
        &app,
        &ada,
        &snapshot.token,
        &(changed.clone(), removed.clone()),
    )
    .await;
    assert_eq!(back.pages, 1, "one call");
    assert!(!back.snapshot);
    assert_eq!(
        back.changes.keys().cloned().collect::<BTreeSet<_>>(),
        changed,
        "after {steps} steps"
    );
    assert_eq!(back.removed, removed);
    for ((kind, id), change) in &back.changes {
        let now = match kind.as_str() {
            "ORDER" => app
                .data(
                    &ada,
                    "query($id: ID!) { order(id: $id) { status } }",
                    json!({ "id": id }),
                )
                .await["order"]["status"]
                .clone(),
            "SUPPORT_CASE" => app
                .data(
                    &ada,
                    "query($id: ID!) { supportCase(id: $id) { status } }",
                    json!({ "id": id }),
                )
                .await["supportCase"]["status"]
                .clone(),
            _ => app
                .data(
                    &ada,
                    "query($id: ID!) { task(id: $id) { status } }",
                    json!({ "id": id }),
                )
                .await["task"]["status"]
                .clone(),
        };
        let field = match kind.as_str() {
            "ORDER" => "order",
            "SUPPORT_CASE" => "supportCase",
            _ => "task",
        };
        assert_eq!(change[field]["status"], now, "{kind} {id}");
        assert_eq!(change[field]["id"], id.as_str());
    }
    // The app now holds the working set exactly.
    let mut held: BTreeSet<Key> = snapshot.changes.keys().cloned().collect();
    held.extend(back.changes.keys().cloned());
    for gone in &back.removed {
        held.remove(gone);
    }
    assert_eq!(held, working_set(&app, &ada).await);

    // A second call: nothing.
    let again = sync_all(&app, &ada, Some(&back.token)).await;
    assert_eq!(
        (again.changes.len(), again.removed.len()),
        (0, 0),
        "{again:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn offline_then_back_gets_exactly_the_changes_once_on_the_memory_bus() {
    offline_and_back(TestApp::spawn().await).await;
}

#[tokio::test]
async fn offline_then_back_gets_exactly_the_changes_once_on_redis() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(SandboxConfig::default(), |config| {
        config.events.redis_url = Some(Secret::new(redis.url()));
        config.events.partitions = 3;
    })
    .await;
    offline_and_back(app).await;
}

/// Signed `order.status_changed` webhooks about Bob's orders, `n` of them.
async fn push_events(app: &TestApp, n: usize, tag: &str) {
    for i in 0..n {
        let body = json!({
            "id": format!("evt_{tag}_{i}"), "type": "order.status_changed",
            "occurredAt": "2026-01-01T10:00:00Z",
            "data": { "orderId": "ord-000002", "customerId": BOB, "status": "SHIPPED" }
        });
        let (status, answer) = app.post_webhook("backend", &body).await;
        assert_eq!(status, 202, "{answer}");
    }
}

/// A token older than the log keeps is `SYNC_TOKEN_EXPIRED`, and a snapshot starts over.
async fn expires(app: TestApp, events: usize) {
    let ada = app.token(ADA).await;
    let snapshot = sync_all(&app, &ada, None).await;
    push_events(&app, 3, "few").await;
    let fresh = sync_once(&app, &ada, Some(&snapshot.token)).await;
    assert!(fresh.get("errors").is_none(), "still kept: {fresh:#}");
    push_events(&app, events, "many").await;
    let old = sync_once(&app, &ada, Some(&snapshot.token)).await;
    assert_eq!(codes(&old), ["SYNC_TOKEN_EXPIRED"], "{old:#}");
    assert_eq!(old["data"], Value::Null);
    // The app falls back to a snapshot, and its token works.
    let again = sync_all(&app, &ada, None).await;
    assert!(again.snapshot);
    assert_eq!(again.changes.len(), snapshot.changes.len());
    let after = sync_once(&app, &ada, Some(&again.token)).await;
    assert!(after.get("errors").is_none(), "{after:#}");
    app.stop().await;
}

#[tokio::test]
async fn a_token_past_the_memory_logs_retention_expired() {
    let app = TestApp::spawn_with(SandboxConfig::default(), |config| {
        config.events.stream_max_len = 10;
    })
    .await;
    expires(app, 12).await;
}

#[tokio::test]
async fn a_token_past_the_streams_retention_expired() {
    let redis = RedisServer::start();
    // `MAXLEN ~` trims whole nodes of the stream (100 entries by default): push well past.
    let app = TestApp::spawn_with(SandboxConfig::default(), |config| {
        config.events.redis_url = Some(Secret::new(redis.url()));
        config.events.stream_max_len = 10;
    })
    .await;
    expires(app, 400).await;
}

#[tokio::test]
async fn forged_and_foreign_tokens_are_forbidden() {
    let app = TestApp::spawn().await;
    let other = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    let bob = app.token(BOB).await;
    let agent = app.token(AGENT).await;
    let token = sync_all(&app, &ada, None).await.token;

    // Bob's token, in Ada's app.
    let bobs = sync_all(&app, &bob, None).await.token;
    let foreign = sync_once(&app, &ada, Some(&bobs)).await;
    assert_eq!(codes(&foreign), ["FORBIDDEN"], "{foreign:#}");
    // Ada's own token from another Switchyard (another key).
    let elsewhere = sync_all(&other, &other.token(ADA).await, None).await.token;
    let (body, signature) = token.split_once('.').unwrap();
    let mut flipped = signature.to_owned().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let flipped = format!("{body}.{}", String::from_utf8(flipped).unwrap());
    // Bob's claims with Ada's signature.
    let (bobs_body, _) = bobs.split_once('.').unwrap();
    let swapped = format!("{bobs_body}.{signature}");
    for forged in [
        elsewhere.as_str(),
        flipped.as_str(),
        swapped.as_str(),
        "not-a-token",
        "",
        &"x".repeat(10_000),
    ] {
        let answer = sync_once(&app, &ada, Some(forged)).await;
        assert_eq!(codes(&answer), ["FORBIDDEN"], "{forged:?}: {answer:#}");
        assert_eq!(answer["data"], Value::Null);
    }
    // Her own token still works.
    let fine = sync_once(&app, &ada, Some(&token)).await;
    assert!(fine.get("errors").is_none(), "{fine:#}");
    // Agents have no working set; `first` is bounded.
    assert_eq!(codes(&sync_once(&app, &agent, None).await), ["FORBIDDEN"]);
    for first in [0, 51, -1] {
        let (_, answer) = app
            .post(
                Some(&ada),
                "query($first: Int!) { sync(first: $first) { token } }",
                json!({ "first": first }),
            )
            .await;
        assert_eq!(codes(&answer), ["BAD_USER_INPUT"], "{first}: {answer:#}");
    }
    let (_, anonymous) = app.post(None, &operation("Sync"), json!({})).await;
    assert_eq!(codes(&anonymous), ["UNAUTHENTICATED"]);
    other.stop().await;
    app.stop().await;
}
