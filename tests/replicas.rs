//! Two Switchyard replicas on one Redis: an upstream event ingested by one reaches a
//! subscriber on the other, invalidates the other's cache, and survives the other's Redis
//! connection being cut (delivered after it reconnects, none twice).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use sandbox::{Sandbox, SandboxConfig, Upstream};
use serde_json::{Value, json};
use support::redis::{RedisServer, TcpProxy};
use switchyard::Config;
use switchyard::config::Secret;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(15);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Replica {
    base: String,
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(listener: TcpListener, config: Config) -> Replica {
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switchyard::run(listener, config, async {
        let _ = stopped.await;
    }));
    Replica {
        base: format!("http://{addr}"),
        addr,
        stop,
        server,
    }
}

async fn graphql(
    http: &reqwest::Client,
    replica: &Replica,
    token: &str,
    query: &str,
    variables: Value,
) -> Value {
    let body: Value = http
        .post(format!("{}/graphql", replica.base))
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body.get("errors").is_none(), "{body:#}");
    body["data"].clone()
}

async fn subscribe(replica: &Replica, token: &str, query: &str) -> Socket {
    let mut request = format!("ws://{}/graphql/ws", replica.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let init =
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
    ws.send(Message::text(init.to_string())).await.unwrap();
    assert_eq!(next_message(&mut ws).await["type"], "connection_ack");
    let subscribe = json!({"id": "n", "type": "subscribe", "payload": {"query": query}});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    ws
}

/// The next protocol message other than pings (answered).
async fn next_message(ws: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message within the timeout")
            .expect("the socket stays open")
            .unwrap();
        let Message::Text(text) = frame else { continue };
        let message: Value = serde_json::from_str(&text).unwrap();
        if message["type"] == "ping" {
            ws.send(Message::text(r#"{"type":"pong"}"#)).await.unwrap();
            continue;
        }
        return message;
    }
}

/// The notification of the next `next` message.
async fn notification(ws: &mut Socket) -> Value {
    let message = next_message(ws).await;
    assert_eq!(message["type"], "next", "{message:#}");
    message["payload"]["data"]["notifications"].clone()
}

/// Nothing more arrives for a while.
async fn expect_quiet(ws: &mut Socket) {
    if let Ok(Some(Ok(Message::Text(text)))) =
        tokio::time::timeout(Duration::from_millis(700), ws.next()).await
    {
        panic!("expected nothing more, got {text}");
    }
}

const FEED: &str = "subscription { notifications { kind summary order { id status } } }";
const PLACE: &str =
    "mutation { placeOrder(input: { lines: [{ productId: \"prod-0001\", quantity: 1 }] }) { id } }";
const CANCEL: &str = "mutation($id: ID!) { cancelOrder(id: $id) { id status } }";
const READ: &str = "query($id: ID!) { order(id: $id) { status } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_every_replica_through_redis_even_across_a_cut_connection() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(redis.addr()).await;

    // One set of upstreams; its webhooks go to replica A. Replica B reaches Redis through a
    // proxy the test can cut.
    let a_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut sandbox_config = SandboxConfig {
        simulator_interval_ms: 0,
        ..SandboxConfig::default()
    };
    let mut a_config = Config::default();
    switchyard::embedded::connect_sandbox_webhooks(
        &mut sandbox_config,
        &mut a_config.webhooks,
        a_listener.local_addr().unwrap(),
    );
    let sandbox = Sandbox::start(sandbox_config).await.unwrap();
    let (upstreams, auth) = switchyard::embedded::sandbox_wiring(&sandbox).unwrap();
    a_config.upstreams = upstreams;
    a_config.auth = auth;
    a_config.log.filter = "warn".into();
    let mut b_config = a_config.clone();
    a_config.events.redis_url = Some(Secret::new(redis.url()));
    b_config.events.redis_url = Some(Secret::new(proxy.redis_url()));
    let a = start(a_listener, a_config).await;
    let b = start(b_listener, b_config).await;

    let http = reqwest::Client::new();
    let ada = support::issuer_token(&sandbox, "cust-0001").await;

    // Ada listens on B; she orders through A.
    let mut feed = subscribe(&b, &ada, FEED).await;
    expect_quiet(&mut feed).await;
    let first = graphql(&http, &a, &ada, PLACE, json!({})).await["placeOrder"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let seen = notification(&mut feed).await;
    assert_eq!(seen["kind"], "ORDER_UPDATED");
    assert_eq!(seen["order"], json!({ "id": first, "status": "CONFIRMED" }));

    // B caches the order: a second read does not reach the backend.
    let read = graphql(&http, &b, &ada, READ, json!({ "id": first })).await;
    assert_eq!(read["order"]["status"], "CONFIRMED");
    sandbox.reset_requests();
    graphql(&http, &b, &ada, READ, json!({ "id": first })).await;
    assert!(
        sandbox.requests(Upstream::Backend).is_empty(),
        "served from B's cache"
    );

    // B loses Redis; meanwhile A takes a cancellation and a new order.
    proxy.cut().await;
    graphql(&http, &a, &ada, CANCEL, json!({ "id": first })).await;
    let second = graphql(&http, &a, &ada, PLACE, json!({})).await["placeOrder"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    expect_quiet(&mut feed).await;

    // Back online: both arrive, in order, once.
    proxy.restore();
    let cancelled = notification(&mut feed).await;
    assert_eq!(
        cancelled["order"],
        json!({ "id": first, "status": "CANCELLED" })
    );
    assert!(
        cancelled["summary"].as_str().unwrap().contains("CANCELLED"),
        "{cancelled}"
    );
    let placed = notification(&mut feed).await;
    assert_eq!(
        placed["order"],
        json!({ "id": second, "status": "CONFIRMED" })
    );
    expect_quiet(&mut feed).await;

    // The event invalidated B's cached copy (CONFIRMED, good for 30 s): B reads the
    // cancellation (cached afresh when the notification above resolved the order).
    let read = graphql(&http, &b, &ada, READ, json!({ "id": first })).await;
    assert_eq!(read["order"]["status"], "CANCELLED");

    for replica in [a, b] {
        let _ = replica.stop.send(());
        tokio::time::timeout(WAIT, replica.server)
            .await
            .expect("a replica stops within the timeout")
            .unwrap()
            .unwrap();
    }
    sandbox.shutdown().await;
}
