//! Subscriptions (and queries and mutations) over websockets: `GET /graphql/ws`.
//!
//! Two subprotocols, picked from `Sec-WebSocket-Protocol` and echoed in the handshake:
//! - `graphql-transport-ws`, exactly as
//!   [its spec](https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md) says
//!   (preferred when a client offers both);
//! - `graphql-ws`, Apollo's legacy `subscriptions-transport-ws`, for older clients.
//!
//! A request that offers neither is answered `400` (no upgrade), one beyond
//! `subscriptions.max_connections` `503`. We speak the protocols ourselves over axum's
//! websocket, and run each operation through the same pipeline as HTTP
//! (`transport::pipeline`): async-graphql's own websocket handler closes with the wrong codes
//! (1002 instead of 4403 for a refused `connection_init`, 1011 instead of 4401 for `subscribe`
//! before the ack), has no init timeout (4408) and no duplicate-id check (4409), and its close
//! reason for an invalid message is longer than a close frame carries.
//!
//! # The connection
//! The client sends `connection_init` within `init_timeout_ms` with its token in the payload:
//! `{"Authorization": "Bearer <jwt>"}` (or `authorization`, or the same inside `"headers"`).
//! Every operation then runs for that viewer with request data of its own (fresh loaders),
//! until the token's `exp`, when the connection closes. graphql-transport-ws closes with:
//!
//! | code | reason | when |
//! |---|---|---|
//! | 4400 | `Invalid message: <why>` | bad JSON, unknown `type`, missing `id` / `payload` |
//! | 4401 | `Unauthorized` | `subscribe` before `connection_ack` |
//! | 4403 | `Forbidden` | no token, or one that does not validate |
//! | 4403 | `Forbidden: token expired` | the token's `exp` passed |
//! | 4408 | `Connection initialisation timeout` | no `connection_init` in time |
//! | 4409 | `Subscriber for <id> already exists` | `subscribe` reusing a running id |
//! | 4429 | `Too many initialisation requests` | a second `connection_init` |
//! | 1001 | `Going away` | the server shuts down |
//! | 1013 | `Try again later: ...` | the identity provider's keys could not be read |
//!
//! Reasons are cut to the 123 bytes a close frame carries. A request error (the document does
//! not parse or validate) is one `error` message and no `complete`; results are `next`
//! messages, then `complete`. More than `max_subscriptions_per_connection` running operations:
//! an `error` with `extensions.code` `TOO_MANY_SUBSCRIPTIONS` for the one too many. The
//! server sends `ping` every `keepalive_ms` (and ignores `pong`s); a client's `ping` gets a
//! `pong` with the same payload.
//!
//! The legacy protocol: `connection_init` → `connection_ack` and `ka` (then every
//! `keepalive_ms`); a refused init is `connection_error` then the same close codes;
//! `start` → `data`… `complete` (or `error`); `stop` cancels; `connection_terminate` closes
//! (1000). As in subscriptions-transport-ws, a bad message is answered `connection_error`
//! without closing, and `start` with a running id replaces that operation.
//!
//! # Tasks and channels
//! Each connection is three kinds of tasks:
//! - the controller (the upgrade's task) reads the client's messages, runs the protocol,
//!   keeps the timers (init timeout, keep-alive, token expiry, server shutdown) and starts
//!   and stops operations;
//! - one writer per connection owns the socket's sending half and writes what it is given,
//!   in order, from a bounded `tokio::sync::mpsc` queue of `subscriptions.send_buffer`
//!   messages;
//! - one task per operation polls its result stream and `send().await`s each result into
//!   the queue. A subscription's results come from its shared view (`transport::views`):
//!   the connections of one viewer running the same document share one execution, and each
//!   reads its results from a queue of its own. Completing an operation (client
//!   `complete`/`stop`, or the connection's end) aborts its task, which drops the stream and
//!   with it its place in the view; the last to leave a view stops it, which drops its hub
//!   subscription.
//!
//! # What happens when a client is slow
//! The writer writes as fast as the client reads. When the client reads slower than its
//! subscriptions produce, the queue fills, and each of its operation tasks waits at
//! `send().await`: it stops reading its view's results, which pile up in its own queue. The
//! view never waits for anyone: each of its subscribers may fall `subscriptions.send_buffer`
//! results behind, and one that falls further is told so (the hub does the same to a view
//! that falls `events.hub_capacity` events behind, resolving slower than they come). When its task gets room again, that
//! subscription yields one error with `extensions.code` `SUBSCRIPTION_LAGGED` and ends
//! (`next`, then `complete`): the client resubscribes and refetches. Nothing else waits: not
//! the hub, not the view, not other subscriptions (of the same view or not), not other
//! clients.
//! Keep-alives are skipped while the queue is full. A client that takes no frame at all for
//! 30 s is dropped. The controller only ever waits for room to answer the client itself
//! (`pong`, `connection_ack`, `error`), which slows down a client that floods us, and never
//! past a shutdown.

mod codec;
mod connection;

use super::rate_limit::Peer;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use self::codec::Protocol;
use super::AppState;
use super::error::TransportError;
use super::live::ConnectionSlot;

/// Largest message a client may send (a `subscribe` with its document and variables).
const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Initial read buffer of a connection (see the handler): a `connection_init` with a typical
/// token fits, and a larger message grows it.
const READ_BUFFER_BYTES: usize = 1024;

/// `GET /graphql/ws`.
pub(super) async fn handler(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(e) = state.rate_limits.client(&headers, peer, 1).await {
        return e.into_response();
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade.protocols(Protocol::ALL.map(Protocol::name)),
        Err(rejection) => {
            return TransportError::BadRequest(format!(
                "not a websocket handshake ({rejection}): /graphql/ws speaks graphql-transport-ws"
            ))
            .into_response();
        }
    };
    let Some(protocol) = upgrade
        .selected_protocol()
        .and_then(|p| p.to_str().ok())
        .and_then(Protocol::from_name)
    else {
        return TransportError::BadRequest(
            "offer the websocket subprotocol graphql-transport-ws (or the legacy graphql-ws)"
                .into(),
        )
        .into_response();
    };
    let client = super::request::client_name(&headers).map(str::to_owned);
    let span = tracing::Span::current();
    let slot = match ConnectionSlot::acquire(&state) {
        Ok(slot) => slot,
        Err(e) => return e.into_response(),
    };
    upgrade
        // tungstenite preallocates its read buffer (128 KiB by default) for every connection
        // and zero-fills it on its first read, so all of it is resident: GraphQL messages
        // are small, and the buffer grows for the rare large one (to the message's size;
        // reads take at most this much at a time).
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(MAX_MESSAGE_BYTES)
        // A frame is no larger than a message may be (tungstenite would buffer 16 MiB).
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "websocket upgrade failed"))
        // The connection runs in a task of its own: in the request's span still, so that its
        // log lines (and its operations' upstream calls) carry the request id.
        .on_upgrade(move |socket| {
            connection::serve(socket, protocol, state, slot, client).instrument(span)
        })
}
