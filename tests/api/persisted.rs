//! Automatic persisted queries, as Apollo Client's `createPersistedQueryLink` and urql's
//! `persistedExchange` use them: the hash-only request misses, the retry with the document
//! registers it, later hash-only requests are served (POST, GET, websockets, SSE), and the
//! registrations are shared by replicas through Redis.

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use switchyard::config::Secret;

use crate::support::redis::RedisServer;
use crate::support::sse::sse;
use crate::support::{TestApp, ws};

const ME: &str = "query Me { me { id name } }";

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn persisted(hash: &str) -> Value {
    json!({"persistedQuery": {"version": 1, "sha256Hash": hash}})
}

/// POSTs `body` as Apollo Client 3 does (`Accept: */*`): status, content type, body.
async fn post(app: &TestApp, token: &str, body: Value) -> (u16, String, Value) {
    let response = app
        .http
        .post(app.url("/graphql"))
        .header(ACCEPT, "*/*")
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    (status, content_type, response.json().await.unwrap())
}

/// A hash-only GET, as `useGETForHashedQueries` sends it.
async fn get_hashed(app: &TestApp, token: &str, hash: &str) -> (u16, Value) {
    let response = app
        .http
        .get(app.url("/graphql"))
        // As Apollo Client sends it: with a content type, so CSRF prevention lets it by.
        .header(CONTENT_TYPE, "application/json")
        .query(&[
            ("operationName", "Me"),
            ("variables", "{}"),
            ("extensions", &persisted(hash).to_string()),
        ])
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn ada() -> Value {
    json!({"me": {"id": "cust-0001", "name": "Ada Lovelace"}})
}

#[tokio::test]
async fn a_hash_misses_then_registers_then_is_served_over_every_transport() {
    let app = TestApp::spawn().await;
    let token = app.token("cust-0001").await;
    let hash = sha256(ME);

    // 1. Hash only: unknown. HTTP 200, application/json, the code and message the clients test.
    let hash_only = json!({"operationName": "Me", "extensions": persisted(&hash)});
    let (status, content_type, body) = post(&app, &token, hash_only.clone()).await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    assert_eq!(
        body["errors"][0]["message"], "PersistedQueryNotFound",
        "{body}"
    );
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );
    assert!(body.get("data").is_none(), "{body}");
    let (status, body) = get_hashed(&app, &token, &hash).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );

    // 2. The retry with the document runs it and registers it.
    let with_document = json!({"query": ME, "operationName": "Me", "extensions": persisted(&hash)});
    let (status, _, body) = post(&app, &token, with_document).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"data": ada()}));

    // 3. Hash only now runs: POST, GET (what a CDN caches), websockets, SSE.
    let (status, _, body) = post(&app, &token, hash_only.clone()).await;
    assert_eq!((status, body), (200, json!({"data": ada()})));
    let (status, body) = get_hashed(&app, &token, &hash).await;
    assert_eq!((status, body), (200, json!({"data": ada()})));
    let mut socket = ws::signed_in(&app, "cust-0001").await;
    socket
        .send(json!({"type": "subscribe", "id": "1", "payload": hash_only.clone()}))
        .await;
    assert_eq!(
        socket.recv().await,
        json!({"type": "next", "id": "1", "payload": {"data": ada()}})
    );
    assert_eq!(socket.recv().await, json!({"type": "complete", "id": "1"}));
    socket.close().await;
    let mut stream = sse(&app, Some(&token), hash_only).await.stream();
    assert_eq!(stream.next().await, json!({"data": ada()}));
    stream.complete().await;
    app.stop().await;
}

#[tokio::test]
async fn a_document_that_is_not_its_hash_is_refused_and_not_registered() {
    let app = TestApp::spawn().await;
    let token = app.token("cust-0001").await;
    let hash = sha256(ME);
    // A document passed off under another document's hash.
    let forged = json!({
        "query": "query Me { me { id email } }",
        "extensions": persisted(&hash),
    });
    let response = app
        .http
        .post(app.url("/graphql"))
        .header(ACCEPT, "application/graphql-response+json")
        .bearer_auth(&token)
        .json(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_HASH_MISMATCH",
        "{body}"
    );
    let (_, _, body) = post(&app, &token, json!({"extensions": persisted(&hash)})).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );

    // A document that does not parse is not registered either.
    let broken = "query Me { me { id ";
    let (_, _, body) = post(
        &app,
        &token,
        json!({"query": broken, "extensions": persisted(&sha256(broken))}),
    )
    .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "GRAPHQL_PARSE_FAILED"
    );
    let (_, _, body) = post(
        &app,
        &token,
        json!({"extensions": persisted(&sha256(broken))}),
    )
    .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );

    // Nor one that does not validate.
    let invalid = "{ nosuchfield }";
    let (_, _, body) = post(
        &app,
        &token,
        json!({"query": invalid, "extensions": persisted(&sha256(invalid))}),
    )
    .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );
    let (_, _, body) = post(
        &app,
        &token,
        json!({"extensions": persisted(&sha256(invalid))}),
    )
    .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );

    // Malformed persisted queries are bad requests that say what to send.
    let (status, _, body) = post(
        &app,
        &token,
        json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "abc"}}}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    app.stop().await;
}

#[tokio::test]
async fn switched_off_persisted_queries_are_not_supported() {
    let app = TestApp::spawn_with(Default::default(), |c| {
        c.persisted_queries.enabled = false;
    })
    .await;
    let token = app.token("cust-0001").await;
    let (status, _, body) = post(
        &app,
        &token,
        json!({"query": ME, "extensions": persisted(&sha256(ME))}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotSupported");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_SUPPORTED"
    );
    app.stop().await;
}

#[tokio::test]
async fn replicas_share_registrations_through_redis() {
    let redis = RedisServer::start();
    let on_redis = |c: &mut switchyard::config::Config| {
        c.persisted_queries.redis_url = Some(Secret::new(redis.url()));
    };
    let first = TestApp::spawn_with(Default::default(), on_redis).await;
    let second = TestApp::spawn_with(Default::default(), on_redis).await;
    let hash = sha256(ME);
    let token = first.token("cust-0001").await;
    let (_, _, body) = post(
        &first,
        &token,
        json!({"query": ME, "extensions": persisted(&hash)}),
    )
    .await;
    assert_eq!(body, json!({"data": ada()}));
    // The other replica never saw the document, and serves its hash.
    let token = second.token("cust-0001").await;
    let (status, body) = get_hashed(&second, &token, &hash).await;
    assert_eq!((status, body), (200, json!({"data": ada()})));
    first.stop().await;
    second.stop().await;
}

/// The id of an operation in the checked-in manifest of trusted documents.
fn manifest_id(name: &str) -> String {
    let manifest: Value =
        serde_json::from_str(&switchyard::app::persisted_query_manifest()).unwrap();
    manifest["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|op| op["name"] == name)
        .map(|op| op["id"].as_str().unwrap().to_owned())
        .unwrap()
}

#[tokio::test]
async fn the_apps_trusted_documents_are_served_by_hash_without_registration() {
    let app = TestApp::spawn().await;
    let token = app.token("cust-0001").await;
    let (status, _, body) = post(
        &app,
        &token,
        json!({"extensions": persisted(&manifest_id("HomeScreen"))}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["me"]["id"], "cust-0001", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn in_production_only_trusted_documents_run_but_for_trusted_clients() {
    let app = TestApp::spawn_with(Default::default(), |c| {
        c.server.profile = switchyard::config::Profile::Production;
        c.persisted_queries.trusted_clients = vec!["support-console".into()];
    })
    .await;
    let token = app.token("cust-0001").await;
    // The apps' operations: by hash, or in full.
    let (_, _, body) = post(
        &app,
        &token,
        json!({"extensions": persisted(&manifest_id("HomeScreen"))}),
    )
    .await;
    assert_eq!(body["data"]["me"]["id"], "cust-0001", "{body}");
    let home = crate::support::operation("HomeScreen");
    let (_, _, body) = post(&app, &token, json!({"query": home})).await;
    assert_eq!(body["data"]["me"]["id"], "cust-0001", "{body}");
    // Anything else is refused, registered or not.
    for request in [
        json!({"query": ME}),
        json!({"query": ME, "extensions": persisted(&sha256(ME))}),
        json!({"extensions": persisted(&sha256(ME))}),
    ] {
        let (status, _, body) = post(&app, &token, request.clone()).await;
        assert_eq!(status, 200, "application/json: request errors are 200");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_IN_LIST",
            "{request}: {body}"
        );
    }
    // A trusted client may send any document.
    let response = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(&token)
        .header("apollographql-client-name", "support-console")
        .json(&json!({"query": ME}))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"data": ada()}));
    app.stop().await;
}
