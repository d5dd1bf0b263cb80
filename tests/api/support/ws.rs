//! A websocket client for `/graphql/ws`, speaking JSON messages of either subprotocol, with
//! every wait bounded by [`WAIT`].

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{TestApp, WAIT};

/// The graphql-transport-ws subprotocol.
pub const MODERN: &str = "graphql-transport-ws";
/// The legacy subscriptions-transport-ws subprotocol.
pub const LEGACY: &str = "graphql-ws";

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A websocket to `/graphql/ws`, speaking JSON messages.
pub struct Client {
    socket: Socket,
    /// The subprotocol the server chose.
    pub protocol: Option<String>,
}

/// Opens a websocket offering these subprotocols (none: no header).
pub async fn try_connect(app: &TestApp, protocols: &[&str]) -> Result<Client, tungstenite::Error> {
    try_connect_to(&app.base, protocols).await
}

/// Opens a websocket to the Switchyard at `base` (`http://host:port`), offering these
/// subprotocols.
pub async fn try_connect_to(base: &str, protocols: &[&str]) -> Result<Client, tungstenite::Error> {
    let url = format!("{base}/graphql/ws").replacen("http", "ws", 1);
    let mut request = url.into_client_request()?;
    if !protocols.is_empty() {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(&protocols.join(", ")).unwrap(),
        );
    }
    let (socket, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("the handshake within the timeout")?;
    let protocol = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    Ok(Client { socket, protocol })
}

pub async fn connect(app: &TestApp, protocol: &str) -> Client {
    let client = try_connect(app, &[protocol])
        .await
        .expect("websocket opens");
    assert_eq!(client.protocol.as_deref(), Some(protocol));
    client
}

/// A graphql-transport-ws websocket whose TCP receive buffer is tiny: when the test does not
/// read it, the server's writes stall after a few frames, as with a slow client.
pub async fn connect_slow_reader(app: &TestApp) -> Client {
    let addr: SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let tcp = TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let stream = tcp.connect(addr).await.unwrap();
    let url = app.url("/graphql/ws").replacen("http", "ws", 1);
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(MODERN));
    let (socket, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
        .await
        .expect("websocket opens");
    Client {
        socket,
        protocol: Some(MODERN.to_owned()),
    }
}

/// A graphql-transport-ws connection, acknowledged for `user`.
pub async fn signed_in(app: &TestApp, user: &str) -> Client {
    let mut client = connect(app, MODERN).await;
    client.init(&app.token(user).await).await;
    client
}

/// The HTTP status of a refused websocket handshake.
pub fn refused_status(result: Result<Client, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected an HTTP refusal, the websocket opened"),
    }
}

impl Client {
    pub async fn send(&mut self, message: Value) {
        self.send_text(&message.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket
            .send(Message::text(text))
            .await
            .expect("send to the server");
    }

    /// Sends `connection_init` with the token and expects `connection_ack`.
    pub async fn init(&mut self, token: &str) {
        self.send(json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}))
            .await;
        assert_eq!(self.recv().await, json!({"type": "connection_ack"}));
    }

    pub async fn subscribe(&mut self, id: &str, query: &str) {
        self.send(json!({"type": "subscribe", "id": id, "payload": {"query": query}}))
            .await;
    }

    /// The next frame, whatever it is.
    pub async fn frame(&mut self) -> Message {
        match tokio::time::timeout(WAIT, self.socket.next()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(e))) => panic!("the websocket failed: {e}"),
            Ok(None) => panic!("the websocket ended without a close frame"),
            Err(_) => panic!("nothing from the server within {WAIT:?}"),
        }
    }

    /// The next message, which must be a JSON text message.
    pub async fn recv(&mut self) -> Value {
        match self.frame().await {
            Message::Text(text) => serde_json::from_str(text.as_str()).expect("JSON message"),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next frame must be a close frame with exactly this code and reason.
    pub async fn expect_close(&mut self, code: u16, reason: &str) {
        assert_eq!(self.close_frame().await, (code, reason.to_owned()));
    }

    /// The next frame, which must be a close frame: its code and reason.
    pub async fn close_frame(&mut self) -> (u16, String) {
        match self.frame().await {
            Message::Close(Some(frame)) => {
                (u16::from(frame.code), frame.reason.as_str().to_owned())
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    /// The next protocol message, answering (and skipping) the server's keep-alive pings.
    pub async fn recv_skipping_pings(&mut self) -> Value {
        loop {
            let message = self.recv().await;
            if message["type"] != "ping" {
                return message;
            }
            self.send(json!({"type": "pong"})).await;
        }
    }

    /// Nothing but keep-alive pings (answered) arrives for `duration`: for what may still be on
    /// its way from elsewhere (another replica), where [`Client::expect_quiet`] proves nothing.
    pub async fn expect_nothing_for(&mut self, duration: Duration) {
        let deadline = tokio::time::Instant::now() + duration;
        while let Ok(frame) = tokio::time::timeout_at(deadline, self.socket.next()).await {
            let Some(Ok(Message::Text(text))) = frame else {
                panic!("the websocket ended while quiet: {frame:?}");
            };
            let message: Value = serde_json::from_str(text.as_str()).expect("JSON message");
            assert_eq!(message["type"], "ping", "expected nothing, got {message}");
            self.send(json!({"type": "pong"})).await;
        }
    }

    /// Closes the connection from the client's side and waits until the server has let go.
    pub async fn close(mut self) {
        self.socket.close(None).await.unwrap();
        while self.socket.next().await.is_some() {}
    }

    /// Proves the server has sent nothing else (no `complete`, no `error`) before answering a
    /// ping sent now: it handles messages in order, and answers them in order.
    pub async fn expect_quiet(&mut self) {
        self.send(json!({"type": "ping", "payload": {"quiet": true}}))
            .await;
        assert_eq!(
            self.recv().await,
            json!({"type": "pong", "payload": {"quiet": true}})
        );
    }
}
