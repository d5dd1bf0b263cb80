//! One send of one job, and what it leads to: the outbox's policy, shared by both backends.
//!
//! [`Sender::attempt`] sends a job once (or finds it is not due yet) and answers a
//! [`Decision`]; the backend stores it (acknowledge, dead-letter, schedule) and then calls
//! [`Sender::settled`], which writes the one log line of the outcome and tells
//! [`Deliveries::settled`]. Keeping the decision apart from storing it is what lets the
//! backends store it atomically with the acknowledgement.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Deliveries, Job, Settlement};
use crate::config::OutboxConfig;
use crate::push::{Channel as _, Channels, SendOutcome};

/// What a send leads to, for the backend to store.
#[derive(Debug)]
pub(super) struct Decision {
    /// The job, its `attempts` counting this send.
    pub(super) job: Job,
    /// What the provider said: `delivered`, `gone`, `rejected`, `retry`; `timeout` for no
    /// answer in time; `early` when the job was not due and nothing was sent.
    pub(super) outcome: &'static str,
    /// What to do with the job.
    pub(super) action: Action,
}

/// What the backend does with a job after a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// Done with it (delivered, or its device gone): acknowledge.
    Ack,
    /// Give up: into the dead letters with `reason`, acknowledge.
    DeadLetter {
        /// Why.
        reason: String,
    },
    /// Send it again at `due`: schedule, acknowledge this copy.
    Schedule {
        /// When, at the earliest.
        due: DateTime<Utc>,
        /// The provider's `Retry-After`, when it gave one (for the logs).
        retry_after: Option<Duration>,
    },
}

/// Sends jobs and decides what becomes of them.
pub(super) struct Sender {
    /// The push channels: providers' clients with their own timeouts and budgets.
    channels: Arc<Channels>,
    /// The rest of the server: forgets gone devices, hears of every settled send.
    deliveries: Arc<dyn Deliveries>,
    /// Retries and their waits.
    retry: RetryPolicy,
    /// Longest a send may take before it counts as unanswered (`Retry`): half of
    /// `claim_idle_ms`, so a job is settled (or abandoned) well before another replica may
    /// take it over.
    deadline: Duration,
    /// Most sends in flight on this replica.
    senders: usize,
    /// Sends in flight per customer (see [`MAX_SENDS_PER_CUSTOMER`]). A plain mutex: held to
    /// count, never across an `.await`.
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
}

/// Most sends of one customer's jobs in flight at once on a replica, so that one customer's
/// devices (endpoints that never answer, say) hold at most this many of the senders, and the
/// other customers' pushes go on. A job over it is put off by [`BUSY_DELAY`], not counted as
/// an attempt.
pub(super) const MAX_SENDS_PER_CUSTOMER: usize = 4;
/// How long a job of a customer with [`MAX_SENDS_PER_CUSTOMER`] sends in flight waits.
const BUSY_DELAY: Duration = Duration::from_millis(250);

/// One send counted in [`Sender::in_flight`], uncounted when dropped.
struct InFlight {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    customer: String,
}

impl InFlight {
    /// Counts a send for `customer`, unless they have [`MAX_SENDS_PER_CUSTOMER`] in flight.
    fn take(counts: &Arc<Mutex<HashMap<String, usize>>>, customer: &str) -> Option<Self> {
        let mut map = counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = map.entry(customer.to_owned()).or_default();
        if *count >= MAX_SENDS_PER_CUSTOMER {
            return None;
        }
        *count += 1;
        Some(Self {
            counts: Arc::clone(counts),
            customer: customer.to_owned(),
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = map.get_mut(&self.customer) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.customer);
            }
        }
    }
}

/// How often and how long apart a job is retried.
#[derive(Debug, Clone, Copy)]
pub(super) struct RetryPolicy {
    /// Most sends of one job.
    pub(super) max_attempts: u32,
    /// The backoff before the second send is at most this.
    pub(super) base: Duration,
    /// No backoff is longer (a `Retry-After` may be).
    pub(super) max: Duration,
}

impl RetryPolicy {
    /// The wait after the `attempts`-th failed send (1 for the first): full jitter over the
    /// exponential backoff, `random` in `[0, 1)` picking the point, and never less than the
    /// provider's `retry_after`.
    pub(super) fn wait(
        &self,
        attempts: u32,
        retry_after: Option<Duration>,
        random: f64,
    ) -> Duration {
        let doublings = attempts.saturating_sub(1);
        let ceiling = match 1u32.checked_shl(doublings) {
            Some(factor) => self.base.saturating_mul(factor).min(self.max),
            None => self.max,
        };
        let jittered = ceiling.mul_f64(random.clamp(0.0, 1.0));
        jittered.max(retry_after.unwrap_or_default())
    }
}

impl Sender {
    /// A sender through `channels`, with the retry policy and deadline of `config`.
    pub(super) fn new(
        config: &OutboxConfig,
        channels: Arc<Channels>,
        deliveries: Arc<dyn Deliveries>,
    ) -> Self {
        Self {
            channels,
            deliveries,
            retry: RetryPolicy {
                max_attempts: config.max_attempts,
                base: Duration::from_millis(config.backoff_base_ms),
                max: Duration::from_millis(config.backoff_max_ms),
            },
            deadline: Duration::from_millis(config.claim_idle_ms / 2),
            senders: config.senders,
            in_flight: Arc::default(),
        }
    }

    /// Most sends in flight on this replica.
    pub(super) fn senders(&self) -> usize {
        self.senders
    }

    /// Sends `job` once, unless it is not due yet, and decides what follows. A Gone device
    /// is reported to [`Deliveries::gone`] here, before the backend acknowledges the job.
    pub(super) async fn attempt(&self, job: Job) -> Decision {
        // Not sent yet, not an attempt: again at `due`.
        let later = |job, due| Decision {
            job,
            outcome: "early",
            action: Action::Schedule {
                due,
                retry_after: None,
            },
        };
        if let Some(due) = job.not_before
            && due > Utc::now()
        {
            return later(job, due);
        }
        let Some(_in_flight) = InFlight::take(&self.in_flight, &job.customer_id) else {
            return later(job, Utc::now() + BUSY_DELAY);
        };
        if (job.attempts > 0 || job.not_before.is_some())
            && !self.deliveries.still_wanted(&job).await
        {
            return Decision {
                job,
                outcome: "unwanted",
                action: Action::Ack,
            };
        }
        let sent =
            tokio::time::timeout(self.deadline, self.channels.send(&job.target, &job.message))
                .await;
        let (outcome, label) = match sent {
            Ok(outcome) => {
                let label = outcome.label();
                (outcome, label)
            }
            Err(_) => {
                tracing::warn!(
                    job = %job.id,
                    channel = job.target.kind(),
                    deadline_ms = self.deadline.as_millis(),
                    "push outbox: no answer from the provider in time (half of \
                     outbox.claim_idle_ms); retrying"
                );
                (SendOutcome::Retry { after: None }, "timeout")
            }
        };
        let job = Job {
            attempts: job.attempts.saturating_add(1),
            ..job
        };
        let action = match outcome {
            SendOutcome::Delivered => Action::Ack,
            SendOutcome::Gone => {
                self.deliveries.gone(&job).await;
                Action::Ack
            }
            SendOutcome::Rejected { reason } => Action::DeadLetter { reason },
            SendOutcome::Retry { after } if job.attempts >= self.retry.max_attempts => {
                Action::DeadLetter {
                    reason: format!(
                        "still failing after {} attempts (last: {label}{})",
                        job.attempts,
                        after.map_or_else(String::new, |after| format!(
                            ", Retry-After {} s",
                            after.as_secs()
                        ))
                    ),
                }
            }
            SendOutcome::Retry { after } => {
                let wait = self.retry.wait(job.attempts, after, random_unit());
                let due =
                    Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
                Action::Schedule {
                    due,
                    retry_after: after,
                }
            }
        };
        Decision {
            job,
            outcome: label,
            action,
        }
    }

    /// After the backend stored `decision`: the one log line of the outcome (job id, channel,
    /// outcome, attempts, what was done; never an address), and [`Deliveries::settled`].
    /// Jobs that were only early are not reported (nothing was sent).
    pub(super) async fn settled(&self, decision: &Decision) {
        let Decision {
            job,
            outcome,
            action,
        } = decision;
        let channel = job.target.kind();
        let settlement = match action {
            Action::Ack if *outcome == "gone" || *outcome == "unwanted" => Settlement::Gone,
            Action::Ack => Settlement::Delivered,
            Action::DeadLetter { reason } => Settlement::DeadLettered {
                reason: reason.clone(),
            },
            Action::Schedule { .. } if *outcome == "early" => {
                tracing::debug!(job = %job.id, channel, "push outbox: not due yet, scheduled");
                return;
            }
            Action::Schedule { due, retry_after } => Settlement::Retrying {
                due: *due,
                retry_after: *retry_after,
            },
        };
        let attempts = job.attempts;
        let label = settlement.label();
        metrics::counter!("switchyard_notifications_total", "channel" => channel, "outcome" => label)
            .increment(1);
        match &settlement {
            Settlement::Delivered | Settlement::Gone => {
                tracing::info!(job = %job.id, channel, outcome, attempts, settled = label, "push outbox: settled");
            }
            Settlement::Retrying { due, .. } => {
                let in_ms = (*due - Utc::now()).num_milliseconds().max(0);
                tracing::info!(job = %job.id, channel, outcome, attempts, settled = label, retry_in_ms = in_ms, "push outbox: settled");
            }
            Settlement::DeadLettered { reason } => {
                tracing::warn!(job = %job.id, channel, outcome, attempts, settled = label, %reason, "push outbox: settled");
            }
        }
        self.deliveries.settled(job, &settlement).await;
    }
}

/// A random number in `[0, 1)`, for the jitter (from the system's generator; the jitter
/// needs no more than spread).
fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        return 0.5;
    }
    // 53 random bits: every double in [0, 1) of that spacing.
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 8,
            base: Duration::from_secs(1),
            max: Duration::from_secs(600),
        }
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let policy = policy();
        let ceilings: Vec<u64> = (1..=12)
            .map(|attempts| policy.wait(attempts, None, 1.0).as_secs())
            .collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        assert_eq!(policy.wait(u32::MAX, None, 1.0), Duration::from_secs(600));
    }

    #[test]
    fn full_jitter_spreads_waits_from_zero_to_the_ceiling() {
        let policy = policy();
        assert_eq!(policy.wait(4, None, 0.0), Duration::ZERO);
        assert_eq!(policy.wait(4, None, 0.5), Duration::from_secs(4));
        let waits: Vec<Duration> = (0..200)
            .map(|_| policy.wait(4, None, random_unit()))
            .collect();
        assert!(waits.iter().all(|w| *w < Duration::from_secs(8)));
        let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
        assert!(
            distinct.len() > 100,
            "jittered: {} distinct",
            distinct.len()
        );
    }

    #[test]
    fn retry_after_is_waited_out_whatever_the_backoff() {
        let policy = policy();
        let after = Some(Duration::from_secs(30));
        assert_eq!(policy.wait(1, after, 0.0), Duration::from_secs(30));
        assert_eq!(policy.wait(1, after, 1.0), Duration::from_secs(30));
        // A longer backoff wins.
        assert_eq!(policy.wait(7, after, 1.0), Duration::from_secs(64));
        // Longer than the cap, too (call.rs bounds Retry-After to a day).
        let long = Some(Duration::from_secs(3600));
        assert_eq!(policy.wait(12, long, 1.0), Duration::from_secs(3600));
    }

    #[test]
    fn random_units_stay_in_range() {
        for _ in 0..1000 {
            let unit = random_unit();
            assert!((0.0..1.0).contains(&unit), "{unit}");
        }
    }
}
