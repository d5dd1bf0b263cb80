//! One websocket connection, from upgrade to close: its controller, its writer and a task per
//! running operation (the design is in the docs of [`super`]).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::stream::{BoxStream, SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};
use tracing::Instrument as _;

use super::codec::{self, ClientMessage, Invalid, Protocol, ServerMessage};
use crate::auth::Session;
use crate::transport::AppState;
use crate::transport::error::TransportError;
use crate::transport::live::{self, CLOSE_GRACE, ConnectionLog, ConnectionSlot, Refusal};
use crate::transport::pipeline;
use crate::transport::request::GraphQlRequest;
use crate::transport::shape::Outcome;
use crate::transport::views::ViewKey;

/// The close codes we send.
mod code {
    /// The client asked to leave (legacy `connection_terminate`).
    pub(super) const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub(super) const GOING_AWAY: u16 = 1001;
    /// The identity provider could not be asked: the client may retry later.
    pub(super) const TRY_AGAIN_LATER: u16 = 1013;
    /// RFC 6455: a message (or frame) larger than the server takes.
    pub(super) const MESSAGE_TOO_BIG: u16 = 1009;
    /// A message the protocol does not know.
    pub(super) const BAD_REQUEST: u16 = 4400;
    /// `subscribe` before `connection_ack`.
    pub(super) const UNAUTHORIZED: u16 = 4401;
    /// No, a bad or an expired token.
    pub(super) const FORBIDDEN: u16 = 4403;
    /// No `connection_init` in time.
    pub(super) const INIT_TIMEOUT: u16 = 4408;
    /// `subscribe` with the id of a running operation.
    pub(super) const DUPLICATE_ID: u16 = 4409;
    /// A second `connection_init`.
    pub(super) const TOO_MANY_INITS: u16 = 4429;
}

/// Longest one frame may take to be written: a client that takes nothing for this long is
/// dropped (its operations end with it).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest message taken before `connection_init` is accepted (a `connection_init` with its
/// token is about 1 KiB).
const MAX_MESSAGE_BYTES_BEFORE_INIT: usize = 16 * 1024;

/// Most bytes of a close frame's reason (125 bytes of payload, 2 of them the code).
const MAX_CLOSE_REASON: usize = 123;

/// How a connection ends.
#[derive(Debug)]
enum End {
    /// We close the socket with this code and reason.
    Close(u16, String),
    /// The client closed it, or it broke: there is nobody to tell.
    Gone(&'static str),
}

impl End {
    fn close(code: u16, reason: impl Into<String>) -> End {
        End::Close(code, reason.into())
    }

    fn going_away() -> End {
        End::close(code::GOING_AWAY, "Going away")
    }
}

/// `Err` ends the connection.
type Flow = Result<(), End>;

/// Why the controller woke up.
enum Event {
    Shutdown,
    WriterGone,
    Expired,
    InitTimeout,
    KeepAlive,
    Incoming(Option<Result<Message, axum::Error>>),
}

/// Serves one upgraded socket until it closes; `slot` counts it as open meanwhile.
pub(super) async fn serve(
    socket: WebSocket,
    protocol: Protocol,
    state: AppState,
    slot: ConnectionSlot,
    client: Option<String>,
) {
    let log = ConnectionLog::open(protocol.name(), None);
    let (sink, mut incoming) = socket.split();
    let (out, queue) = mpsc::channel(state.subscriptions.send_buffer.max(1));
    let writer = tokio::spawn(write(sink, queue).in_current_span());
    let mut connection = Connection::new(protocol, state, out, log, client);
    let end = connection.run(&mut incoming).await;
    connection.close(end, incoming, writer).await;
    drop(slot);
}

/// The writer: the only task that writes to the socket, in the order frames were queued.
async fn write(mut sink: SplitSink<WebSocket, Message>, mut queue: mpsc::Receiver<Message>) {
    while let Some(frame) = queue.recv().await {
        let closing = matches!(frame, Message::Close(_));
        match tokio::time::timeout(WRITE_TIMEOUT, sink.send(frame)).await {
            Ok(Ok(())) if closing => break,
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "websocket write failed");
                break;
            }
            Err(_) => {
                tracing::info!(
                    timeout_s = WRITE_TIMEOUT.as_secs(),
                    "websocket client took no data in time: dropping it"
                );
                break;
            }
        }
    }
    // Dropping `queue` tells the controller and the operations that nobody writes any more.
}

/// The controller: reads the client's messages, runs the protocol, starts and stops
/// operations, and keeps the timers (init timeout, keep-alive, token expiry).
struct Connection {
    protocol: Protocol,
    state: AppState,
    /// Into the writer's queue.
    out: mpsc::Sender<Message>,
    shutdown: watch::Receiver<bool>,
    /// Set once `connection_init` was accepted.
    session: Option<Session>,
    /// The session's end (once there is a session).
    expiry: Option<Pin<Box<Sleep>>>,
    /// The server's keep-alive (once there is a session, unless disabled).
    keepalive: Option<Interval>,
    operations: Operations,
    log: ConnectionLog,
    /// The client's `apollographql-client-name` at the handshake (trusted documents).
    client: Option<String>,
}

impl Connection {
    fn new(
        protocol: Protocol,
        state: AppState,
        out: mpsc::Sender<Message>,
        log: ConnectionLog,
        client: Option<String>,
    ) -> Self {
        Self {
            client,
            protocol,
            shutdown: state.shutdown.clone(),
            state,
            out,
            session: None,
            expiry: None,
            keepalive: None,
            operations: Operations::default(),
            log,
        }
    }

    /// Runs the protocol until the connection must end.
    async fn run(&mut self, incoming: &mut SplitStream<WebSocket>) -> End {
        let init_timeout = Duration::from_millis(self.state.subscriptions.init_timeout_ms);
        let init_deadline = tokio::time::sleep(init_timeout);
        tokio::pin!(init_deadline);
        loop {
            let initialised = self.session.is_some();
            let event = tokio::select! {
                biased;
                () = live::shutting_down(&mut self.shutdown) => Event::Shutdown,
                () = self.out.closed() => Event::WriterGone,
                () = until(self.expiry.as_mut()) => Event::Expired,
                () = &mut init_deadline, if !initialised => Event::InitTimeout,
                () = tick(self.keepalive.as_mut()) => Event::KeepAlive,
                message = incoming.next() => Event::Incoming(message),
            };
            if let Err(end) = self.on(event).await {
                return end;
            }
        }
    }

    async fn on(&mut self, event: Event) -> Flow {
        match event {
            Event::Shutdown => Err(End::going_away()),
            Event::WriterGone => Err(End::Gone("the socket could not be written to")),
            Event::Expired => Err(End::close(code::FORBIDDEN, "Forbidden: token expired")),
            Event::InitTimeout => Err(End::close(
                code::INIT_TIMEOUT,
                "Connection initialisation timeout",
            )),
            Event::KeepAlive => {
                self.keep_alive();
                Ok(())
            }
            Event::Incoming(None) => Err(End::Gone("the client went away")),
            // tungstenite's `CapacityError` ("Space limit exceeded: Message too long"); axum
            // hands it over only as an opaque error.
            Event::Incoming(Some(Err(e))) if e.to_string().contains("Space limit exceeded") => {
                Err(End::close(code::MESSAGE_TOO_BIG, "Message too big"))
            }
            Event::Incoming(Some(Err(_))) => Err(End::Gone("the socket failed")),
            Event::Incoming(Some(Ok(frame))) => self.on_frame(frame).await,
        }
    }

    /// Queues a keep-alive unless the queue is full: then the connection is busy anyway, and
    /// a keep-alive behind a backlog says nothing.
    fn keep_alive(&self) {
        let frame = text(self.protocol.encode(ServerMessage::KeepAlive));
        let _ = self.out.try_send(frame);
    }

    async fn on_frame(&mut self, frame: Message) -> Flow {
        let text = match &frame {
            Message::Text(text) => text.as_str(),
            Message::Binary(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => text,
                Err(_) => {
                    let reason = "Invalid message: not UTF-8 text".to_owned();
                    return self.on_invalid(Invalid(reason)).await;
                }
            },
            // Websocket pings are answered by the websocket layer itself.
            Message::Ping(_) | Message::Pong(_) => return Ok(()),
            Message::Close(_) => return Err(End::Gone("the client closed the connection")),
        };
        if self.session.is_none() && text.len() > MAX_MESSAGE_BYTES_BEFORE_INIT {
            // Nobody is signed in yet: a stranger gets no room to park large messages.
            let reason = format!(
                "Invalid message: larger than {MAX_MESSAGE_BYTES_BEFORE_INIT} bytes before connection_init"
            );
            return self.on_invalid(Invalid(reason)).await;
        }
        match codec::decode(self.protocol, text) {
            Ok(message) => self.on_message(message).await,
            Err(invalid) => self.on_invalid(invalid).await,
        }
    }

    async fn on_invalid(&mut self, Invalid(reason): Invalid) -> Flow {
        match self.protocol {
            Protocol::TransportWs => Err(End::Close(code::BAD_REQUEST, reason)),
            // subscriptions-transport-ws reports a bad message and carries on.
            Protocol::Legacy => self.send(ServerMessage::ConnectionError(&reason)).await,
        }
    }

    async fn on_message(&mut self, message: ClientMessage) -> Flow {
        match message {
            // Signing in and starting an operation await the identity provider, Redis and the
            // pipeline: boxed, their futures take room only while they run, instead of
            // making every connection's controller task as large as they are for its whole
            // life.
            ClientMessage::Init(payload) => Box::pin(self.on_init(payload.as_ref())).await,
            ClientMessage::Subscribe { id, operation } => {
                Box::pin(self.on_subscribe(id, operation)).await
            }
            ClientMessage::Stop { id } => {
                self.operations.stop(&id);
                Ok(())
            }
            ClientMessage::Ping(payload) => self.send(ServerMessage::Pong(payload)).await,
            ClientMessage::Pong => Ok(()),
            ClientMessage::Terminate => Err(End::close(code::NORMAL, "Normal closure")),
        }
    }

    async fn on_init(&mut self, payload: Option<&Map<String, Value>>) -> Flow {
        if self.session.is_some() {
            return self
                .refuse(
                    code::TOO_MANY_INITS,
                    "Too many initialisation requests",
                    None,
                )
                .await;
        }
        let token = match codec::bearer_token(payload) {
            Ok(token) => token,
            Err(why) => return self.refuse(code::FORBIDDEN, "Forbidden", Some(why)).await,
        };
        match live::authenticate(&self.state, token).await {
            Ok(session) => self.accept(session).await,
            Err(Refusal::Invalid(why)) => {
                self.refuse(code::FORBIDDEN, "Forbidden", Some(&why)).await
            }
            Err(Refusal::Expired) => {
                self.refuse(code::FORBIDDEN, "Forbidden: token expired", None)
                    .await
            }
            Err(Refusal::Unavailable) => {
                let reason = "Try again later: the identity provider is unavailable";
                self.refuse(code::TRY_AGAIN_LATER, reason, None).await
            }
        }
    }

    /// Refuses a `connection_init` (the legacy protocol says why first) and ends.
    async fn refuse(&mut self, code: u16, reason: &str, detail: Option<&str>) -> Flow {
        tracing::debug!(
            protocol = self.protocol.name(),
            reason,
            detail,
            "connection_init refused"
        );
        if self.protocol == Protocol::Legacy {
            let message = match detail {
                Some(detail) => format!("{reason}: {detail}"),
                None => reason.to_owned(),
            };
            self.send(ServerMessage::ConnectionError(&message)).await?;
        }
        Err(End::close(code, reason))
    }

    async fn accept(&mut self, session: Session) -> Flow {
        self.expiry = Some(Box::pin(tokio::time::sleep_until(live::expiry(&session))));
        self.keepalive = keepalive(self.state.subscriptions.keepalive_ms);
        self.log.signed_in(&session.viewer.user_id);
        self.session = Some(session);
        self.send(ServerMessage::Ack).await?;
        if self.protocol == Protocol::Legacy {
            // subscriptions-transport-ws clients expect a first `ka` right after the ack.
            self.send(ServerMessage::KeepAlive).await?;
        }
        Ok(())
    }

    async fn on_subscribe(&mut self, id: String, operation: GraphQlRequest) -> Flow {
        let Some(session) = self.session.clone() else {
            return match self.protocol {
                Protocol::TransportWs => Err(End::close(code::UNAUTHORIZED, "Unauthorized")),
                Protocol::Legacy => self.send_error(&id, &TransportError::NotInitialised).await,
            };
        };
        if self.operations.is_running(&id) {
            match self.protocol {
                Protocol::TransportWs => {
                    let reason = format!("Subscriber for {id} already exists");
                    return Err(End::close(code::DUPLICATE_ID, reason));
                }
                // subscriptions-transport-ws replaces the operation whose id is reused.
                Protocol::Legacy => self.operations.stop(&id),
            }
        }
        let max = self.state.subscriptions.max_subscriptions_per_connection;
        if self.operations.len() >= max {
            let error = TransportError::TooManySubscriptions(max);
            return self.send_error(&id, &error).await;
        }
        if let Err(e) = self
            .state
            .rate_limits
            .user(&session.viewer.user_id, 1)
            .await
        {
            return self.send_error(&id, &e).await;
        }
        let view = ViewKey::of("ws", &operation, &session.viewer);
        let prepared =
            match pipeline::prepare(&self.state, "ws", self.client.as_deref(), operation).await {
                Ok(prepared) => prepared,
                Err(e) => return self.send_error(&id, &e).await,
            };
        let results = self
            .state
            .views
            .stream(&self.state, view, prepared, session.viewer);
        self.operations
            .start(id, results, self.protocol, self.out.clone());
        Ok(())
    }

    /// An `error` message for operation `id`, with this one error.
    async fn send_error(&mut self, id: &str, error: &TransportError) -> Flow {
        let errors = Outcome::errors_json(&[error.to_server_error()]);
        self.send(ServerMessage::Error {
            id,
            errors: &errors,
        })
        .await
    }

    /// Queues a message for the writer, waiting while the queue is full (backpressure on
    /// this client's requests) but not past the start of a shutdown.
    async fn send(&mut self, message: ServerMessage<'_>) -> Flow {
        let frame = text(self.protocol.encode(message));
        tokio::select! {
            sent = self.out.send(frame) => {
                sent.map_err(|_| End::Gone("the socket could not be written to"))
            }
            () = live::shutting_down(&mut self.shutdown) => Err(End::going_away()),
        }
    }

    /// Ends the connection: stops its operations, sends the close frame (if there is anyone
    /// to send it to), completes the closing handshake, and logs.
    async fn close(self, end: End, mut incoming: SplitStream<WebSocket>, writer: JoinHandle<()>) {
        let Connection {
            out,
            operations,
            log,
            ..
        } = self;
        drop(operations);
        if let End::Close(code, reason) = &end {
            let frame = Message::Close(Some(close_frame(*code, reason)));
            let _ = tokio::time::timeout(CLOSE_GRACE, out.send(frame)).await;
        }
        drop(out);
        // Wait for the client's close frame (or for it to go), dropping whatever else it
        // still sends: closing the TCP connection with unread data could cost it our frame.
        let drain = async { while let Some(Ok(_)) = incoming.next().await {} };
        let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
        let abort = writer.abort_handle();
        if tokio::time::timeout(CLOSE_GRACE, writer).await.is_err() {
            abort.abort();
        }
        match end {
            End::Close(code, reason) => log.closed(Some(code), &reason),
            End::Gone(why) => log.closed(None, why),
        }
    }
}

fn text(message: String) -> Message {
    Message::Text(Utf8Bytes::from(message))
}

/// A close frame whose reason fits (cut at a character boundary).
fn close_frame(code: u16, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code,
        reason: Utf8Bytes::from(&reason[..end]),
    }
}

/// The server's keep-alive timer; none when `keepalive_ms` is 0.
fn keepalive(ms: u64) -> Option<Interval> {
    if ms == 0 {
        return None;
    }
    let period = Duration::from_millis(ms);
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    Some(interval)
}

/// Completes at the deadline; never without one.
async fn until(deadline: Option<&mut Pin<Box<Sleep>>>) {
    match deadline {
        Some(deadline) => deadline.await,
        None => std::future::pending().await,
    }
}

/// Completes at the next tick; never without a timer.
async fn tick(interval: Option<&mut Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The operations running on one connection, by id. Each runs in a task of its own, which
/// takes itself out of the table when its results end; stopping one (or dropping the table,
/// when the connection ends) aborts its task, which drops its result stream.
#[derive(Default)]
struct Operations {
    table: Arc<Mutex<Table>>,
}

#[derive(Default)]
struct Table {
    /// Tells apart successive operations that reuse an id.
    last_generation: u64,
    running: HashMap<String, Running>,
}

struct Running {
    generation: u64,
    task: AbortHandle,
}

impl Operations {
    fn is_running(&self, id: &str) -> bool {
        lock(&self.table).running.contains_key(id)
    }

    fn len(&self) -> usize {
        lock(&self.table).running.len()
    }

    /// Starts forwarding an operation's results under `id`.
    fn start(
        &self,
        id: String,
        results: BoxStream<'static, Arc<Outcome>>,
        protocol: Protocol,
        out: mpsc::Sender<Message>,
    ) {
        let mut table = lock(&self.table);
        table.last_generation += 1;
        let generation = table.last_generation;
        let done = Done {
            table: self.table.clone(),
            id: id.clone(),
            generation,
        };
        // Spawned under the lock, so the task cannot take itself out before it is in.
        let task = tokio::spawn(forward(results, protocol, out, done).in_current_span());
        let task = task.abort_handle();
        table.running.insert(id, Running { generation, task });
    }

    /// Stops the operation `id`, if it runs.
    fn stop(&self, id: &str) {
        let stopped = lock(&self.table).running.remove(id);
        if let Some(running) = stopped {
            running.task.abort();
        }
    }
}

impl Drop for Operations {
    fn drop(&mut self) {
        for (_, running) in lock(&self.table).running.drain() {
            running.task.abort();
        }
    }
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    // The table stays consistent whatever panicked while holding it.
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An operation's way out of the table once its results have ended.
struct Done {
    table: Arc<Mutex<Table>>,
    id: String,
    generation: u64,
}

impl Done {
    /// Takes the operation out of the table (unless a newer one took its id), before its
    /// last message is queued: a client may reuse the id as soon as it reads it.
    fn finish(&self) {
        let mut table = lock(&self.table);
        let current = table.running.get(&self.id);
        if current.is_some_and(|r| r.generation == self.generation) {
            table.running.remove(&self.id);
        }
    }
}

/// An operation's task: its results, as they come, into the writer's queue (waiting while
/// the queue is full: that is what makes a slow client lag its own subscriptions only).
async fn forward(
    mut results: BoxStream<'static, Arc<Outcome>>,
    protocol: Protocol,
    out: mpsc::Sender<Message>,
    done: Done,
) {
    let id = done.id.as_str();
    while let Some(outcome) = results.next().await {
        let frame = match outcome.as_ref() {
            Outcome::RequestError(errors) => {
                done.finish();
                let errors = Outcome::errors_json(errors);
                let _ = out
                    .send(text(protocol.encode(ServerMessage::Error {
                        id,
                        errors: &errors,
                    })))
                    .await;
                return;
            }
            Outcome::Executed { json, .. } => {
                text(protocol.encode(ServerMessage::Next { id, result: json }))
            }
        };
        if out.send(frame).await.is_err() {
            return;
        }
    }
    done.finish();
    let _ = out
        .send(text(protocol.encode(ServerMessage::Complete { id })))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let long = format!("Subscriber for {} already exists", "é".repeat(100));
        let frame = close_frame(code::DUPLICATE_ID, &long);
        assert!(frame.reason.as_str().len() <= MAX_CLOSE_REASON);
        assert!(long.starts_with(frame.reason.as_str()));
        assert_eq!(close_frame(4400, "short").reason.as_str(), "short");
    }

    fn response(n: i32) -> Arc<Outcome> {
        let response = async_graphql::Response::new(async_graphql::Value::from(n));
        Arc::new(Outcome::executed(&response, usize::MAX, None))
    }

    #[tokio::test]
    async fn an_operation_leaves_the_table_before_its_complete_is_sent() {
        let operations = Operations::default();
        let (out, mut queue) = mpsc::channel(8);
        let results = futures::stream::iter([response(1)]).boxed();
        operations.start("a".into(), results, Protocol::TransportWs, out);
        let mut kinds = Vec::new();
        while let Some(Message::Text(text)) = queue.recv().await {
            let message: Value = serde_json::from_str(text.as_str()).unwrap();
            kinds.push(message["type"].as_str().unwrap().to_owned());
            if message["type"] == "complete" {
                // By the time a client reads `complete`, the id is free again.
                assert!(!operations.is_running("a"));
            }
        }
        assert_eq!(kinds, ["next", "complete"]);
    }

    #[tokio::test]
    async fn a_slow_client_stalls_only_its_own_operations() {
        // One connection's queue holds one message and nobody reads it: its operation waits
        // at the second result, without a busy loop and without touching anyone else.
        let slow = Operations::default();
        let (slow_out, _unread) = mpsc::channel(1);
        let (polled_tx, mut polled) = mpsc::unbounded_channel();
        let results = futures::stream::iter(0..1000)
            .map(move |n| {
                let _ = polled_tx.send(n);
                response(n)
            })
            .boxed();
        slow.start("s".into(), results, Protocol::TransportWs, slow_out);

        // Another connection's operation runs to its end meanwhile.
        let fast = Operations::default();
        let (fast_out, mut fast_queue) = mpsc::channel(1);
        let results = futures::stream::iter((0..50).map(response)).boxed();
        fast.start("f".into(), results, Protocol::TransportWs, fast_out);
        let mut received = 0;
        while let Some(Message::Text(_)) = fast_queue.recv().await {
            received += 1;
        }
        assert_eq!(received, 51, "50 results and the complete");

        tokio::task::yield_now().await;
        let mut pulled = Vec::new();
        while let Ok(n) = polled.try_recv() {
            pulled.push(n);
        }
        // The first result went into the queue, the second waits for room: no more pulled.
        assert_eq!(pulled, [0, 1]);
        assert!(slow.is_running("s"));
        drop(slow);
        tokio::task::yield_now().await;
    }
}
