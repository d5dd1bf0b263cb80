//! The push outbox: every delivery of a notification (one notification to one device, or to
//! one e-mail address: a [`Job`]) waits here until a provider has answered for it.
//!
//! The code that turns a notification into jobs calls [`Outbox::enqueue`]; this replica's
//! senders ([`start`]) take jobs out, send each through [`crate::push::Channels`], and act on
//! the provider's answer ([`SendOutcome`]):
//!
//! | answer | what the outbox does |
//! |---|---|
//! | `Delivered` | acknowledges the job (it is gone from the outbox) |
//! | `Gone` | tells [`Deliveries::gone`] (the store forgets the device), acknowledges |
//! | `Rejected` | moves the job to the dead letters with the reason, acknowledges |
//! | `Retry { after }` | counts the attempt; after `max_attempts` sends, dead-letters it; else schedules it again for now + max(`after`, a backoff) and acknowledges this copy |
//!
//! A send that gets no answer within half of `claim_idle_ms` counts as `Retry` (the provider
//! may or may not have taken it). The backoff is exponential with full jitter: a random wait
//! between 0 and `backoff_base_ms` × 2^(attempts − 1), at most `backoff_max_ms`; a provider's
//! `Retry-After` (up to a day) is waited out whatever the backoff. A job with `not_before`
//! in the future (quiet hours) waits until then, and so does a retry: both sit in a schedule
//! of jobs not due yet, and are moved back to the queue when due.
//!
//! # Layout
//! - [`start`] picks the backend from [`OutboxConfig`]: Redis when `redis_url` is set, memory
//!   otherwise, and returns a [`Started`] outbox (where to enqueue, the dead letters, the
//!   sender tasks to join at shutdown).
//! - `attempt`: one send of one job and what it leads to (the table above), the backoff, the
//!   one log line per outcome; shared by both backends.
//! - `redis`: a Redis stream read by a consumer group every replica joins (module docs there:
//!   the keys, the scripts, claiming, reconnects).
//! - `memory`: a bounded queue and a timer, for one instance.
//!
//! # Guarantees
//! - **Stored before acknowledged.** [`Outbox::enqueue`] returns `Ok` only once every job is
//!   stored: with Redis, once Redis answered the script that added them; in memory, once
//!   they are queued.
//! - **Enqueued once per id.** A job whose [`Job::id`] was enqueued within `dedup_ttl_secs`
//!   is not stored again (on every replica, with Redis). A failed enqueue may be retried
//!   whole, and replicas that turn one event into the same jobs store them once.
//! - **At least once.** A job leaves the outbox only after a provider answered for it (or it
//!   was dead-lettered): with Redis, the entry is acknowledged (`XACK`) only after the
//!   answer, and a job being sent when its replica dies, or loses Redis, stays pending in the
//!   consumer group until a replica takes it over (after `claim_idle_ms`) and sends it. A
//!   lost connection to Redis loses nothing: the stream is the truth.
//! - **Each job to one replica.** The consumer group hands each entry to one replica; two
//!   replicas send the same job only when the first held it past `claim_idle_ms` (it died,
//!   hung, or could not reach Redis to acknowledge it).
//! - **Duplicates are bounded and recognisable.** The one case of a second send is a sender
//!   that died (or lost Redis) after the provider accepted the job and before acknowledging
//!   it, and the job is then sent at most once more per such failure. Every send of a job
//!   carries the same identity, taken from its stored message (`PushMessage::id`, the
//!   notification id): APNs gets the same `apns-id` (a UUID derived from it), FCM the same
//!   `data.notificationId`, Web Push the same `Topic` (the collapse key, else derived from
//!   the id: the push service replaces an undelivered copy), e-mail the same `Message-ID`;
//!   apps drop a notification whose `notificationId` they have shown.
//! - **Bounded retries.** A job is sent at most `max_attempts` times for transient failures,
//!   then dead-lettered with the last reason: with Redis in the stream `<stream_key>:dead`
//!   (the newest 100,000 kept), in memory the newest 10,000 ([`Started::dead_letters`]).
//! - **Bounded work.** At most `senders` sends are in flight on a replica; a replica reads
//!   (or claims) only as many jobs as it has free senders, so what it holds is being sent.
//! - **Prompt shutdown.** When `shutdown` turns `true`, the senders take no new job, finish
//!   and settle the sends in flight (each bounded by half of `claim_idle_ms`), and stop;
//!   [`Started::join`] waits for them.
//!
//! # Not guaranteed
//! - **Exactly once.** See above: at least once, duplicates recognisable by their id.
//! - **Order.** Jobs are sent concurrently; retries and `not_before` reorder them.
//! - **The memory outbox across a restart.** It serves one instance; jobs queued, scheduled
//!   or being sent when it stops are lost (a warning says how many).
//! - **Durability beyond Redis.** "Stored" means in Redis' memory: surviving a Redis crash
//!   depends on its persistence (`appendonly`); a Redis that comes back empty has lost the
//!   jobs it held (the group is created again and sending resumes).
//! - **A stopped clock.** Due times (`not_before`, retries) are the replicas' wall clocks:
//!   keep them in sync (NTP).
//! - **Redis Cluster.** One Redis endpoint (standalone, or a primary behind a stable
//!   address).

mod attempt;
mod memory;
mod redis;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::OutboxConfig;
use crate::push::{Channels, PushMessage, Target};

#[cfg(doc)]
use crate::push::SendOutcome;

/// One delivery: one notification to one device (or one e-mail address).
///
/// Its `Debug` shows the ids, the kind of target and the attempts, never the device's
/// address or the message's text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Unique per delivery, stable across retries and replicas:
    /// `"<notification id>/<device id or 'email'>"`. Enqueueing an id again within
    /// `dedup_ttl_secs` stores nothing.
    pub id: String,
    /// The notification this delivers (the notification centre's id).
    pub notification_id: String,
    /// Whose notification it is.
    pub customer_id: String,
    /// The device's `PushAddress::key()`, to forget it when its provider says Gone; `None`
    /// for e-mail.
    pub address_key: Option<String>,
    /// Where it goes.
    pub target: Target,
    /// What is sent. Its `id` is what every send carries (`apns-id`, FCM
    /// `data.notificationId`, Web Push `Topic`, the e-mail's `Message-ID`): the notification
    /// id, so that an app recognises a repeat.
    pub message: PushMessage,
    /// Not before this time (quiet hours); `None`: now.
    pub not_before: Option<DateTime<Utc>>,
    /// Sends tried so far.
    pub attempts: u32,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("notification_id", &self.notification_id)
            .field("customer_id", &self.customer_id)
            .field("target", &self.target)
            .field("not_before", &self.not_before)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Where notifications are queued for sending.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Durably queues jobs: `Ok` only once they are stored (Redis acknowledged, or in
    /// memory). Jobs whose id was enqueued within `dedup_ttl_secs` are skipped; on an error
    /// some jobs may be stored already, and enqueueing all of them again is safe.
    async fn enqueue(&self, jobs: Vec<Job>) -> anyhow::Result<()>;
}

/// What the senders tell the rest of the server.
#[async_trait]
pub trait Deliveries: Send + Sync {
    /// The provider said the device is gone: forget it (the store's
    /// `forget_address(key)`). Called once per Gone answer, before the job is acknowledged.
    async fn gone(&self, job: &Job);

    /// Whether `job` is still to be sent: its device is still registered, to its customer.
    /// Asked before a send that was put off (quiet hours) or is a retry, since the device may
    /// have been unregistered or moved to someone else meanwhile; the default says yes. A job
    /// that is no longer wanted is settled as [`Settlement::Gone`] without a send.
    async fn still_wanted(&self, job: &Job) -> bool {
        let _ = job;
        true
    }

    /// A send of `job` was settled as `settlement` (after the outbox stored what follows
    /// from it). `job.attempts` counts this send. For metrics, the notification centre's
    /// delivery status, and tests; the default does nothing.
    async fn settled(&self, job: &Job, settlement: &Settlement) {
        let _ = (job, settlement);
    }
}

/// What became of one send of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// The provider took it; the job is done.
    Delivered,
    /// The device is gone ([`Deliveries::gone`] was told); the job is done.
    Gone,
    /// Refused for good, or still failing after `max_attempts`: in the dead letters.
    DeadLettered {
        /// Why.
        reason: String,
    },
    /// A transient failure: it will be sent again, not before `due`.
    Retrying {
        /// When it is sent again at the earliest.
        due: DateTime<Utc>,
        /// The provider's `Retry-After`, when it gave one.
        retry_after: Option<Duration>,
    },
}

impl Settlement {
    /// `delivered`, `gone`, `dead_lettered`, `retrying`: for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Settlement::Delivered => "delivered",
            Settlement::Gone => "gone",
            Settlement::DeadLettered { .. } => "dead_lettered",
            Settlement::Retrying { .. } => "retrying",
        }
    }
}

/// A job the outbox gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The job, with the attempts it had; `None` when what was stored did not decode as a
    /// job (Redis keeps the raw entry in the dead-letter stream's `raw` field).
    pub job: Option<Job>,
    /// Why it was given up.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// The running outbox of this replica.
pub struct Started {
    /// Where jobs are enqueued: hand a clone to whatever turns notifications into jobs.
    pub outbox: Arc<dyn Outbox>,
    /// The backend, for [`Started::dead_letters`].
    backend: Backend,
    /// The sender tasks (the Redis reader, which also claims, and the mover; or the memory
    /// dispatcher and timer), kept so that [`Started::join`] can wait for them at shutdown.
    tasks: Vec<JoinHandle<()>>,
}

/// The store behind a [`Started`] outbox.
enum Backend {
    Memory(Arc<memory::MemoryOutbox>),
    Redis(Arc<redis::RedisOutbox>),
}

/// Starts this replica's senders; they stop when `shutdown` turns `true` (or its sender is
/// dropped).
///
/// With `redis_url` set, connects to Redis (an error if it cannot be reached, naming the
/// address but never the credentials) and creates the consumer group when it does not exist;
/// without it, starts the memory outbox. `deliveries` hears of every Gone device and every
/// settled send.
pub async fn start(
    config: &OutboxConfig,
    channels: Arc<Channels>,
    deliveries: Arc<dyn Deliveries>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Started> {
    config.validate()?;
    let sender = attempt::Sender::new(config, channels, deliveries);
    match &config.redis_url {
        None => {
            tracing::info!(
                senders = config.senders,
                "push outbox: in memory (one instance only, not durable across a restart)"
            );
            let (outbox, tasks) = memory::start(config, sender, shutdown);
            Ok(Started {
                outbox: outbox.clone(),
                backend: Backend::Memory(outbox),
                tasks,
            })
        }
        Some(url) => {
            let (outbox, tasks) = redis::start(config, url.expose(), sender, shutdown).await?;
            Ok(Started {
                outbox: outbox.clone(),
                backend: Backend::Redis(outbox),
                tasks,
            })
        }
    }
}

impl Started {
    /// The newest dead letters, newest first, at most `limit`.
    pub async fn dead_letters(&self, limit: usize) -> anyhow::Result<Vec<DeadLetter>> {
        match &self.backend {
            Backend::Memory(outbox) => Ok(outbox.dead_letters(limit)),
            Backend::Redis(outbox) => outbox.dead_letters(limit).await,
        }
    }

    /// This replica's consumer name in the group (`None` for the memory outbox).
    pub fn consumer(&self) -> Option<&str> {
        match &self.backend {
            Backend::Memory(_) => None,
            Backend::Redis(outbox) => Some(outbox.consumer()),
        }
    }

    /// Waits for the senders to stop; call after the shutdown signal turned `true`.
    pub async fn join(self) {
        for task in self.tasks {
            if let Err(error) = task.await {
                tracing::error!(%error, "a push outbox task ended abnormally");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn jobs_round_trip_through_json() {
        let job = Job {
            id: "n-1/dev-1".into(),
            notification_id: "n-1".into(),
            customer_id: "cust-0001".into(),
            address_key: Some("fcm:abc".into()),
            target: Target::Fcm {
                token: "abc".into(),
            },
            message: PushMessage {
                id: "n-1".into(),
                title: "Shipped".into(),
                body: "On its way".into(),
                data: BTreeMap::new(),
                deep_link: None,
                collapse_key: None,
                urgent: false,
                ttl: Duration::from_secs(60),
            },
            not_before: Some(DateTime::from_timestamp_millis(1_700_000_000_123).unwrap()),
            attempts: 2,
        };
        let json = serde_json::to_string(&job).unwrap();
        let back: Job = serde_json::from_str(&json).unwrap();
        assert_eq!(back, job);
        let shown = format!("{job:?}");
        assert!(shown.contains("n-1/dev-1"), "{shown}");
        for hidden in ["abc", "Shipped", "On its way"] {
            assert!(!shown.contains(hidden), "{shown}");
        }
    }
}
