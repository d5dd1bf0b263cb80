//! The deadline of the request an upstream call is made for.
//!
//! The transport runs each operation [`within`] its deadline (`server.request_timeout_ms`
//! from its start); the loaders carry it into the batch tasks they spawn, so every upstream
//! call made for the request can read it with [`current`]. An upstream call cuts its waits and
//! its tries to what is left, and gives up (its fields `null` with `UPSTREAM_UNAVAILABLE`)
//! rather than outlive the request: the answer then still goes out with the rest of its data,
//! instead of the whole request ending in a timeout.

use std::future::Future;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `work` with `deadline` as the deadline of every upstream call it makes.
pub async fn within<F: Future>(deadline: Instant, work: F) -> F::Output {
    DEADLINE.scope(deadline, work).await
}

/// The deadline of the request being served here, if any.
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|deadline| *deadline).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_deadline_is_seen_inside_its_scope_only() {
        assert_eq!(current(), None);
        let deadline = Instant::now() + Duration::from_secs(3);
        assert_eq!(within(deadline, async { current() }).await, Some(deadline));
        assert_eq!(current(), None);
    }
}
