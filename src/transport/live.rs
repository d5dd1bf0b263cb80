//! What the two live transports share: the websockets of `transport::ws` and the
//! Server-Sent Events of `transport::sse`.
//!
//! - [`ConnectionSlot`]: the one place that counts open long-lived connections against
//!   `subscriptions.max_connections`.
//! - [`authenticate`]: a bearer token to a [`Session`] that has not expired yet, and
//!   [`expiry`]: when its connection must end.
//! - [`ConnectionLog`]: the open/close log lines (transport, user, duration, why it ended).
//!
//! Running an operation is the pipeline's (`transport::pipeline`), as over HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::AppState;
use super::error::TransportError;
use crate::auth::Session;

/// Longest we wait for a `complete` or a close frame to be taken by a client while closing.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Longest a session is timed: a token that claims to last longer is timed out after this
/// (and the client reconnects), which keeps deadlines far from any timer's range limit.
const LONGEST_SESSION: Duration = Duration::from_secs(7 * 24 * 3600);

/// One open websocket or SSE connection, counted in `AppState::open_connections` while it
/// lives (the count drops when the slot is dropped, however the connection ends).
pub(crate) struct ConnectionSlot {
    open: Arc<AtomicUsize>,
}

impl ConnectionSlot {
    /// A slot, or `TooManyConnections` when `max_connections` are open already.
    pub(crate) fn acquire(state: &AppState) -> Result<Self, TransportError> {
        let max = state.subscriptions.max_connections;
        state
            .open_connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .map_err(|_| TransportError::TooManyConnections)?;
        metrics::gauge!("switchyard_live_connections").increment(1);
        Ok(Self {
            open: state.open_connections.clone(),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("switchyard_live_connections").decrement(1);
    }
}

/// Why a token was not taken for a live connection.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Malformed, forged, for someone else, or not a bearer token (the message says which;
    /// it is safe to show the client).
    Invalid(String),
    /// Valid, but its `exp` has passed.
    Expired,
    /// The identity provider's keys could not be read: not the client's fault.
    Unavailable,
}

impl From<Refusal> for TransportError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Invalid(why) => TransportError::Unauthenticated(why),
            Refusal::Expired => {
                TransportError::Unauthenticated("invalid token: the token has expired".into())
            }
            Refusal::Unavailable => TransportError::AuthUnavailable,
        }
    }
}

/// The session of a bearer token that has not expired yet.
pub(crate) async fn authenticate(state: &AppState, token: &str) -> Result<Session, Refusal> {
    let session = state.auth.authenticate(token).await.map_err(|e| match e {
        crate::auth::AuthError::InvalidToken(_) => Refusal::Invalid(e.to_string()),
        crate::auth::AuthError::KeysUnavailable => Refusal::Unavailable,
    })?;
    // The validator tolerates some clock skew on `exp`; a live connection ends at `exp` itself.
    if time_left(&session).is_zero() {
        return Err(Refusal::Expired);
    }
    Ok(session)
}

/// How long the session's token is still valid.
fn time_left(session: &Session) -> Duration {
    session
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default()
}

/// When a connection of this session must end (the token's `exp`), on tokio's clock.
pub(crate) fn expiry(session: &Session) -> tokio::time::Instant {
    tokio::time::Instant::now() + time_left(session).min(LONGEST_SESSION)
}

/// Completes when the server starts shutting down (or is gone).
pub(crate) async fn shutting_down(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: the server is not running any more either.
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

/// The log lines of one live connection: opened, and closed with how long it lived and why.
pub(crate) struct ConnectionLog {
    protocol: &'static str,
    user: Option<String>,
    opened: Instant,
}

impl ConnectionLog {
    /// Logs the opening.
    pub(crate) fn open(protocol: &'static str, user: Option<&str>) -> Self {
        tracing::info!(protocol, user, "live connection opened");
        Self {
            protocol,
            user: user.map(str::to_owned),
            opened: Instant::now(),
        }
    }

    /// Who is connected, once known.
    pub(crate) fn signed_in(&mut self, user: &str) {
        tracing::debug!(protocol = self.protocol, user, "live connection signed in");
        self.user = Some(user.to_owned());
    }

    /// Logs the end.
    pub(crate) fn closed(self, code: Option<u16>, reason: &str) {
        tracing::info!(
            protocol = self.protocol,
            user = self.user.as_deref(),
            duration_ms = self.opened.elapsed().as_millis() as u64,
            code,
            reason,
            "live connection closed"
        );
    }
}
