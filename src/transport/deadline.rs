//! The request's deadline (`server.request_timeout_ms`), the one bound on an operation
//! whichever transport carries it.

use super::AppState;
use super::error::TransportError;

/// Runs `work` by `deadline` (from `server.request_timeout_ms`): its upstream calls keep
/// the deadline (`resolvers::deadline`), and past it the work is stopped and logged:
/// `TIMEOUT`.
pub(crate) async fn by_deadline<T>(
    state: &AppState,
    deadline: tokio::time::Instant,
    operation: Option<&str>,
    work: impl Future<Output = T>,
) -> Result<T, TransportError> {
    tokio::time::timeout_at(deadline, resolvers::deadline::within(deadline, work))
        .await
        .map_err(|_| {
            tracing::warn!(
                ?operation,
                timeout_ms = state.request_timeout.as_millis() as u64,
                "request timed out"
            );
            TransportError::Timeout
        })
}
