//! The memory outbox, for a single instance: a bounded queue, a schedule of jobs not due
//! yet with one timer task, and one dispatcher task that hands each job to a sender.
//!
//! Jobs due now go into the queue (`enqueue` waits for room when it is full: the callers
//! slow down rather than memory growing); jobs with a future `not_before`, and retries, go
//! into the schedule (a heap by due time), from which the timer moves them into the queue
//! when due. The dispatcher takes a job only when one of the `senders` permits is free, and
//! spawns its send; the task stores the decision (nothing to store for an ack, the dead
//! letters, or the schedule) and releases the permit. Nothing here survives the process:
//! what is queued, scheduled or in flight at shutdown is lost (counted in a warning).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use super::attempt::{Action, Decision, Sender};
use super::{DeadLetter, Job, Outbox};
use crate::config::OutboxConfig;
use crate::events::memory::SeenIds;

/// Most jobs waiting in the queue; `enqueue` waits for room beyond.
const QUEUE_CAPACITY: usize = 10_000;
/// Most dead letters kept (the newest).
const DEAD_LETTERS_KEPT: usize = 10_000;
/// Most job ids remembered for deduplication (the oldest are forgotten first).
const SEEN_CAPACITY: usize = 100_000;

/// The memory outbox: where jobs are enqueued, its schedule and dead letters.
pub(super) struct MemoryOutbox {
    /// Jobs due now, for the dispatcher. Bounded: a full queue makes `enqueue` wait.
    queue: mpsc::Sender<Job>,
    /// Jobs not due yet, and the timer's wake-up.
    schedule: Arc<Schedule>,
    /// Job ids enqueued recently, to store each once. A plain mutex: checked and updated
    /// without an `.await` in between.
    seen: Mutex<SeenIds>,
    /// The newest dead letters, newest last.
    dead: Mutex<VecDeque<DeadLetter>>,
    /// Turns `true` at shutdown: `enqueue` stops waiting for room then.
    shutdown: watch::Receiver<bool>,
}

/// Jobs not due yet, earliest first.
struct Schedule {
    /// The heap, and a counter that keeps jobs with the same due time in insertion order.
    /// A plain mutex: pushed and popped without an `.await`.
    jobs: Mutex<(BinaryHeap<Reverse<Scheduled>>, u64)>,
    /// Wakes the timer when a job is scheduled (it may be due before the one it waits for).
    wake: Notify,
}

/// One scheduled job.
struct Scheduled {
    due: DateTime<Utc>,
    seq: u64,
    job: Job,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

impl Schedule {
    fn push(&self, due: DateTime<Utc>, job: Job) {
        {
            let mut guard = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
            let (heap, seq) = &mut *guard;
            *seq += 1;
            heap.push(Reverse(Scheduled {
                due,
                seq: *seq,
                job,
            }));
        }
        self.wake.notify_one();
    }

    /// The jobs due at `now`, earliest first, and when the next one is due.
    fn take_due(&self, now: DateTime<Utc>) -> (Vec<Job>, Option<DateTime<Utc>>) {
        let mut guard = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        let heap = &mut guard.0;
        let mut due = Vec::new();
        while heap.peek().is_some_and(|Reverse(first)| first.due <= now) {
            if let Some(Reverse(first)) = heap.pop() {
                due.push(first.job);
            }
        }
        (due, heap.peek().map(|Reverse(first)| first.due))
    }

    fn len(&self) -> usize {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .len()
    }
}

/// Starts the memory outbox: the dispatcher and the timer.
pub(super) fn start(
    config: &OutboxConfig,
    sender: Sender,
    shutdown: watch::Receiver<bool>,
) -> (Arc<MemoryOutbox>, Vec<JoinHandle<()>>) {
    let (queue, jobs) = mpsc::channel(QUEUE_CAPACITY);
    let outbox = Arc::new(MemoryOutbox {
        queue: queue.clone(),
        schedule: Arc::new(Schedule {
            jobs: Mutex::new((BinaryHeap::new(), 0)),
            wake: Notify::new(),
        }),
        seen: Mutex::new(SeenIds::new(
            Duration::from_secs(config.dedup_ttl_secs),
            SEEN_CAPACITY,
        )),
        dead: Mutex::new(VecDeque::new()),
        shutdown: shutdown.clone(),
    });
    let timer = tokio::spawn(timer(Arc::clone(&outbox.schedule), queue, shutdown.clone()));
    let dispatcher = tokio::spawn(dispatch(
        Arc::clone(&outbox),
        Arc::new(sender),
        jobs,
        shutdown,
    ));
    (outbox, vec![dispatcher, timer])
}

#[async_trait]
impl Outbox for MemoryOutbox {
    async fn enqueue(&self, jobs: Vec<Job>) -> anyhow::Result<()> {
        let now = Utc::now();
        for job in jobs {
            let due_now = job.not_before.is_none_or(|due| due <= now);
            // A place in the queue first: waiting for it is the only await, so a caller that
            // gives up (its request timed out) gives up before the job is marked as enqueued,
            // and a later enqueue of the same job stores it.
            let place = if due_now {
                let mut shutdown = self.shutdown.clone();
                tokio::select! {
                    biased;
                    place = self.queue.reserve() => {
                        Some(place.map_err(|_| anyhow::anyhow!("the push outbox is stopped"))?)
                    }
                    () = stopped(&mut shutdown) => {
                        anyhow::bail!("the push outbox is stopping");
                    }
                }
            } else {
                None
            };
            let fresh = self
                .seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(&job.id, tokio::time::Instant::now());
            if !fresh {
                tracing::debug!(job = %job.id, "push outbox: job enqueued already, skipped");
                continue;
            }
            match place {
                Some(place) => place.send(job),
                None => self.schedule.push(job.not_before.unwrap_or(now), job),
            }
        }
        Ok(())
    }
}

impl MemoryOutbox {
    /// The newest dead letters, newest first.
    pub(super) fn dead_letters(&self, limit: usize) -> Vec<DeadLetter> {
        self.dead
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect()
    }

    /// Stores what a send decided.
    fn store(&self, decision: &Decision) {
        match &decision.action {
            Action::Ack => {}
            Action::DeadLetter { reason } => {
                let mut dead = self.dead.lock().unwrap_or_else(PoisonError::into_inner);
                if dead.len() >= DEAD_LETTERS_KEPT {
                    dead.pop_front();
                }
                dead.push_back(DeadLetter {
                    job: Some(decision.job.clone()),
                    reason: reason.clone(),
                    at: Utc::now(),
                });
            }
            Action::Schedule { due, .. } => self.schedule.push(*due, decision.job.clone()),
        }
    }
}

/// Hands each queued job to a sender as permits allow, until shutdown; then waits for the
/// sends in flight and says what is left behind.
async fn dispatch(
    outbox: Arc<MemoryOutbox>,
    sender: Arc<Sender>,
    mut jobs: mpsc::Receiver<Job>,
    mut shutdown: watch::Receiver<bool>,
) {
    let senders = sender.senders();
    let permits = Arc::new(Semaphore::new(senders));
    loop {
        let permit = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let job = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            job = jobs.recv() => match job {
                Some(job) => job,
                None => break,
            },
        };
        let (outbox, sender) = (Arc::clone(&outbox), Arc::clone(&sender));
        tokio::spawn(async move {
            let decision = sender.attempt(job).await;
            outbox.store(&decision);
            sender.settled(&decision).await;
            drop(permit);
        });
    }
    // Every permit back: every send in flight is settled.
    let in_flight = senders - permits.available_permits();
    let _ = permits.acquire_many(senders as u32).await;
    let left = jobs.len() + outbox.schedule.len();
    if left > 0 {
        tracing::warn!(
            jobs = left,
            "push outbox stopped with jobs not sent: the memory outbox does not keep them \
             (configure outbox.redis_url for a durable outbox)"
        );
    }
    tracing::info!(settled_at_shutdown = in_flight, "push outbox stopped");
}

/// Moves scheduled jobs into the queue when due, until shutdown.
async fn timer(
    schedule: Arc<Schedule>,
    queue: mpsc::Sender<Job>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (due, next) = schedule.take_due(Utc::now());
        for job in due {
            tokio::select! {
                biased;
                () = stopped(&mut shutdown) => return,
                sent = queue.send(job) => if sent.is_err() { return },
            }
        }
        let wait = next.map(|next| {
            (next - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                // Wake at least once a minute: a wall clock that jumps is noticed.
                .min(Duration::from_secs(60))
        });
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => return,
            () = schedule.wake.notified() => {}
            () = sleep_or_forever(wait) => {}
        }
    }
}

async fn sleep_or_forever(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

/// Completes when shutdown is signalled, or when its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
