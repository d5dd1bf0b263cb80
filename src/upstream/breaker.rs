//! A circuit breaker per upstream, and the retry budget that keeps retries from multiplying
//! the load on an upstream that is failing.
//!
//! The breaker counts the upstream's failures (5xx answers, timeouts, failed connections) in
//! a row, and the share of failures among its last [`WINDOW`] calls. At `breaker_failures`
//! in a row, or a share of `breaker_failure_rate` or more (an upstream failing every other
//! call never fails five times in a row), it opens: for `breaker_open_ms` every call fails at once,
//! without reaching the upstream, so that requests get their `UPSTREAM_UNAVAILABLE` fields at
//! once instead of waiting for timeouts, and the upstream gets room to recover. Then it is
//! half-open: one call at a time goes through as a probe; a success closes it, a failure
//! opens it again. Any answer that is not a 5xx counts as a success (a 404 is an upstream
//! that works). `breaker_failures = 0` switches it off.
//!
//! The retry budget (as Finagle's): every first try deposits a tenth of a retry, every retry
//! withdraws one, with a floor of [`MIN_RETRIES_PER_SECOND`] a second. While an upstream
//! fails, retries are at most about 10% more calls, not one more per call.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use resolvers::ports::Source;
use tokio::time::Instant;

use crate::config::CallPolicy;

/// Retries a failing upstream always gets, per second, whatever the traffic.
const MIN_RETRIES_PER_SECOND: f64 = 10.0;
/// Retries earned by each first try.
const RETRY_RATIO: f64 = 0.1;
/// Most retries saved up.
const MAX_SAVED_RETRIES: f64 = 100.0;
/// The last calls whose failure rate is judged (a full window is needed to judge it).
const WINDOW: u32 = 20;

const CLOSED: State = State::Closed {
    failures: 0,
    recent: 0,
    seen: 0,
};

/// One upstream's breaker and retry budget.
#[derive(Debug)]
pub(crate) struct Breaker {
    source: Source,
    /// Failures in a row that open it; 0: never opens.
    failures_to_open: u32,
    /// Failures among the last [`WINDOW`] calls that open it (0: never by rate).
    window_failures_to_open: u32,
    /// How long it stays open before a probe.
    open_for: Duration,
    /// A plain mutex: held for a few instructions, never across an `.await`.
    state: Mutex<State>,
    budget: Mutex<RetryBudget>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed {
        /// Failures in a row.
        failures: u32,
        /// The last calls, newest in the lowest bit: 1 a failure.
        recent: u32,
        /// How many calls `recent` holds (up to [`WINDOW`]).
        seen: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe went through at `since` (another may go once `open_for` has passed, in case
    /// the first one's caller gave up without an answer).
    HalfOpen {
        since: Instant,
    },
}

#[derive(Debug)]
struct RetryBudget {
    tokens: f64,
    refilled: Instant,
}

impl Breaker {
    pub(crate) fn new(source: Source, policy: &CallPolicy) -> Self {
        let rate = policy.breaker_failure_rate.clamp(0.0, 1.0);
        Self {
            source,
            failures_to_open: policy.breaker_failures,
            window_failures_to_open: (rate * f64::from(WINDOW)).ceil() as u32,
            open_for: policy.breaker_open,
            state: Mutex::new(CLOSED),
            budget: Mutex::new(RetryBudget {
                tokens: MIN_RETRIES_PER_SECOND,
                refilled: Instant::now(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a call may go to the upstream now.
    pub(crate) fn admit(&self) -> bool {
        let now = Instant::now();
        let mut state = self.state();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if now < until => false,
            State::HalfOpen { since } if now < since + self.open_for => false,
            State::Open { .. } | State::HalfOpen { .. } => {
                *state = State::HalfOpen { since: now };
                true
            }
        }
    }

    /// Records how an admitted call went: `true` for any answer but a 5xx.
    pub(crate) fn record(&self, success: bool) {
        if self.failures_to_open == 0 {
            return;
        }
        let mut state = self.state();
        let was_closed = matches!(*state, State::Closed { .. });
        let next = match (*state, success) {
            (
                State::Closed {
                    failures,
                    recent,
                    seen,
                },
                _,
            ) => {
                let recent = ((recent << 1) | u32::from(!success)) & ((1 << WINDOW) - 1);
                let seen = (seen + 1).min(WINDOW);
                let failures = if success { 0 } else { failures + 1 };
                let by_rate = self.window_failures_to_open > 0
                    && seen == WINDOW
                    && recent.count_ones() >= self.window_failures_to_open;
                if failures >= self.failures_to_open || by_rate {
                    State::Open {
                        until: Instant::now() + self.open_for,
                    }
                } else {
                    State::Closed {
                        failures,
                        recent,
                        seen,
                    }
                }
            }
            (_, true) => CLOSED,
            // A call admitted before it opened: it stays open as it is.
            (State::Open { until }, false) => State::Open { until },
            (State::HalfOpen { .. }, false) => State::Open {
                until: Instant::now() + self.open_for,
            },
        };
        *state = next;
        let now_closed = matches!(next, State::Closed { .. });
        drop(state);
        let upstream = self.source.as_str();
        if was_closed != now_closed {
            if now_closed {
                tracing::info!(
                    upstream,
                    "circuit breaker closed: the upstream answers again"
                );
            } else {
                tracing::warn!(
                    upstream,
                    open_ms = self.open_for.as_millis() as u64,
                    "circuit breaker open: calls fail at once until a probe succeeds"
                );
            }
        }
    }

    /// Whether it is open or half-open (for readiness).
    pub(crate) fn is_open(&self) -> bool {
        !matches!(*self.state(), State::Closed { .. })
    }

    /// The upstream it guards.
    pub(crate) fn source(&self) -> Source {
        self.source
    }

    /// Notes a first try (it earns a tenth of a retry).
    pub(crate) fn first_try(&self) {
        let mut budget = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
        budget.tokens = (budget.tokens + RETRY_RATIO).min(MAX_SAVED_RETRIES);
    }

    /// Takes a retry from the budget, if one is left.
    pub(crate) fn take_retry(&self) -> bool {
        let mut budget = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let refill = now.duration_since(budget.refilled).as_secs_f64() * MIN_RETRIES_PER_SECOND;
        budget.tokens = (budget.tokens + refill).min(MAX_SAVED_RETRIES);
        budget.refilled = now;
        if budget.tokens >= 1.0 {
            budget.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32, rate: f64) -> Breaker {
        let policy = CallPolicy {
            breaker_failures: failures,
            breaker_failure_rate: rate,
            breaker_open: Duration::from_secs(5),
            ..CallPolicy::default()
        };
        Breaker::new(Source::Crm, &policy)
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_failures_in_a_row_probes_then_closes() {
        let breaker = breaker(3, 0.0);
        for _ in 0..2 {
            assert!(breaker.admit());
            breaker.record(false);
        }
        // A success in between starts the count again.
        breaker.record(true);
        for _ in 0..3 {
            assert!(breaker.admit());
            breaker.record(false);
        }
        assert!(breaker.is_open());
        assert!(!breaker.admit(), "open: calls fail at once");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(breaker.admit(), "one probe after open_for");
        assert!(!breaker.admit(), "only one probe at a time");
        breaker.record(false);
        assert!(!breaker.admit(), "a failed probe opens it again");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(breaker.admit());
        breaker.record(true);
        assert!(!breaker.is_open());
        assert!(breaker.admit() && breaker.admit());
    }

    #[tokio::test(start_paused = true)]
    async fn opens_when_half_of_the_last_calls_failed_though_never_five_in_a_row() {
        let breaker = breaker(5, 0.5);
        for call in 0..19 {
            assert!(breaker.admit());
            breaker.record(call % 2 == 0);
        }
        assert!(!breaker.is_open(), "19 calls: the window is not full yet");
        breaker.record(false);
        assert!(breaker.is_open(), "10 failures of the last 20");
        // Fewer failures than that keep it closed.
        let healthy = self::breaker(5, 0.5);
        for call in 0..100 {
            healthy.record(call % 3 != 0);
        }
        assert!(!healthy.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn switched_off_it_never_opens() {
        let breaker = breaker(0, 0.5);
        for _ in 0..100 {
            assert!(breaker.admit());
            breaker.record(false);
        }
        assert!(!breaker.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_tenth_of_first_tries_past_a_floor() {
        let breaker = breaker(5, 0.5);
        let mut retried = 0;
        for _ in 0..1000 {
            breaker.first_try();
            if breaker.take_retry() {
                retried += 1;
            }
        }
        // The 10 it starts with, and a tenth of 1,000 first tries (no time passed).
        assert!((105..=111).contains(&retried), "{retried}");
    }
}
