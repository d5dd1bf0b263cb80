//! The Redis outbox: one stream read by one consumer group that every replica joins.
//!
//! **Keys** (all beside `stream_key`, default `switchyard:outbox`):
//! - `<stream_key>`: the jobs due now, one entry each (field `job`: the job's JSON). Entries
//!   are deleted once settled, so the stream holds what is waiting or being sent.
//! - consumer group `senders` on it: each replica is a consumer of its own
//!   (`<host>-<pid>-<random>`, new for every process).
//! - `<stream_key>:delayed`: a sorted set of jobs not due yet (`not_before`, retries), the
//!   score their due time in milliseconds since the epoch, the member their JSON.
//! - `<stream_key>:dead`: the dead letters, a stream (fields `job` or `raw`, `reason`, `at`),
//!   trimmed to about 100,000 entries.
//! - `<stream_key>:job:<job id>`: a marker that the job was enqueued, expiring after
//!   `dedup_ttl_secs`.
//!
//! **Enqueueing** runs one Lua script per batch of up to 200 jobs: for each job, `SET NX EX`
//! its marker and, only when it is new, `XADD` it to the stream (or `ZADD` it to the delayed
//! set when its `not_before` is in the future). A failed add removes its marker again, so a
//! failure never makes a retried enqueue look like a duplicate.
//!
//! **Sending.** The reader task, on a connection of its own (a blocking read would hold up
//! every command queued behind it on a shared connection), waits for free senders, then
//! reads (`XREADGROUP GROUP senders <consumer> COUNT <free senders> BLOCK 2000 STREAMS
//! <stream_key> >`) and spawns one send per entry. A send settles its entry with one `MULTI`/`EXEC` on the
//! shared, auto-reconnecting connection: `XACK` and `XDEL`, with the `XADD` to the dead
//! letters or the `ZADD` of the retry in the same transaction, so a crash never leaves a
//! job both acknowledged and not rescheduled, or rescheduled and still pending. When Redis
//! cannot be reached, the settlement is retried (100 ms doubling to 5 s) until it can, the
//! entry staying pending meanwhile; the reader reconnects with the same backoff. A read
//! that gets no answer within the block time plus 5 s counts as a lost connection, so a
//! half-open TCP connection cannot stall it. When the group is missing (Redis came back
//! empty, or the key was deleted) the reader creates it again (`XGROUP CREATE .. 0
//! MKSTREAM`).
//!
//! **Claiming.** At start and every half `claim_idle_ms`, between two reads, the reader
//! takes over entries that have been pending longer than `claim_idle_ms` in any consumer
//! (`XAUTOCLAIM`), as many as it has free senders, and sends them (reading and claiming in
//! one task, each only for free senders, so that neither starves the other). Those are the
//! entries of a replica that died or hung, and entries this replica read but whose reply it
//! lost with a connection. A sender never holds an entry that long while alive: a send is
//! abandoned (`Retry`) after half of `claim_idle_ms`. Entries this replica is still sending
//! are never sent twice by it. Once every ten minutes the reader also removes consumers that
//! have had nothing pending and done nothing for an hour (replicas that are gone), in a
//! script, so a consumer that just read something is never removed.
//!
//! **Moving.** The mover task runs a Lua script at least every 250 ms (sooner when this
//! replica schedules a job due sooner): it takes the delayed jobs that are due (up to 256
//! at a time), `XADD`s each to the stream and removes it from the set, atomically: a job is
//! never lost or duplicated by a mover dying half-way. Every replica runs one; the script
//! makes them safe to run at once.
//!
//! **Shutdown.** The reader stops reading, the sends in flight finish and settle (a
//! settlement is retried for at most 5 s more), and the entries this consumer still holds
//! unsettled (a read cut short by shutdown, a settlement that failed) are marked idle for
//! `claim_idle_ms` (`XCLAIM .. IDLE`), so another replica takes them over at its next claim
//! rather than after the idle time.
//!
//! The Redis user needs `EVAL`/`EVALSHA`/`SCRIPT`, `SET`, `DEL`, `XADD`, `XACK`, `XDEL`,
//! `XREADGROUP`, `XAUTOCLAIM`, `XCLAIM`, `XPENDING`, `XGROUP`, `XINFO`, `XREVRANGE`, `ZADD`,
//! `ZRANGE`, `ZRANGEBYSCORE`, `ZREM`, `MULTI`/`EXEC`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, RedisError, Value};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::attempt::{Action, Decision, Sender};
use super::{DeadLetter, Job, Outbox};
use crate::config::OutboxConfig;

/// The consumer group every replica joins.
const GROUP: &str = "senders";
/// The stream entry field holding a job's JSON (also named in the scripts).
const JOB_FIELD: &str = "job";
/// How long one `XREADGROUP` waits for new entries before it returns empty and is sent
/// again.
const READ_BLOCK_MS: u64 = 2_000;
/// How much longer than the block time a read may take before its connection counts as
/// dead.
const READ_GRACE: Duration = Duration::from_secs(5);
/// The id before any entry: where a pass of `XAUTOCLAIM` starts and ends.
const STREAM_START: &str = "0-0";
/// Most entries one read (or claim) takes, whatever the free senders.
const READ_COUNT: usize = 256;
/// Longest a connection attempt (TCP, TLS, handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a command on the shared connection may take before it fails (and the connection
/// is made again).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// First wait after a failed read, reconnect or settlement; it doubles with each failure in
/// a row.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between two tries.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Most jobs one enqueue script stores.
const ENQUEUE_BATCH: usize = 200;
/// Most delayed jobs one mover run moves.
const MOVE_BATCH: usize = 256;
/// Longest the mover waits between two runs.
const MOVER_POLL: Duration = Duration::from_millis(250);
/// Shortest wait between two mover runs, however often it is woken.
const MOVER_MIN_PAUSE: Duration = Duration::from_millis(10);
/// Roughly how many dead letters the dead-letter stream keeps (`XADD MAXLEN ~`).
const DEAD_MAX_LEN: usize = 100_000;
/// How long a settlement is still retried once shutdown began.
const SETTLE_GRACE: Duration = Duration::from_secs(5);
/// How long a consumer must have had nothing pending and done nothing before it is removed.
const RETIRE_IDLE_MS: u64 = 3_600_000;
/// How often the reader looks for consumers to remove.
const RETIRE_EVERY: Duration = Duration::from_secs(600);

/// Stores new jobs, once per id within the marker's TTL.
///
/// `KEYS[1]` the stream, `KEYS[2]` the delayed set, `KEYS[2 + k]` the marker of job `k`;
/// `ARGV[1]` the markers' TTL in seconds, then for job `k` `ARGV[2k]` its due time in ms
/// (empty: now) and `ARGV[2k + 1]` its JSON. Returns how many were stored.
const ENQUEUE_SCRIPT: &str = r"
local stored = 0
for i = 3, #KEYS do
  local k = i - 2
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    local due, job = ARGV[2 * k], ARGV[2 * k + 1]
    local added
    if due == '' then
      added = redis.pcall('XADD', KEYS[1], '*', 'job', job)
    else
      added = redis.pcall('ZADD', KEYS[2], due, job)
    end
    if type(added) == 'table' and added.err then
      redis.call('DEL', KEYS[i])
      return added
    end
    stored = stored + 1
  end
end
return stored
";

/// Moves due jobs from the delayed set to the stream, atomically.
///
/// `KEYS[1]` the delayed set, `KEYS[2]` the stream; `ARGV[1]` now in ms, `ARGV[2]` the most
/// to move. Returns `{moved, due time of the next job in ms or nil}`.
const MOVE_SCRIPT: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, job in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'job', job)
  redis.call('ZREM', KEYS[1], job)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then
  return {#due, tonumber(first[2])}
end
return {#due, false}
";

/// Removes the consumers of the group that have nothing pending and have been idle long
/// enough, never the caller itself. One script, so that a consumer cannot read something
/// between the check and its removal.
///
/// `KEYS[1]` the stream; `ARGV[1]` the group, `ARGV[2]` the least idle time in ms,
/// `ARGV[3]` the caller's consumer name. Returns how many were removed.
const RETIRE_SCRIPT: &str = r"
local retired = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local name, pending, idle
  for i = 1, #consumer, 2 do
    if consumer[i] == 'name' then name = consumer[i + 1]
    elseif consumer[i] == 'pending' then pending = consumer[i + 1]
    elseif consumer[i] == 'idle' then idle = consumer[i + 1] end
  end
  if name and name ~= ARGV[3] and pending == 0 and idle and idle >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    retired = retired + 1
  end
end
return retired
";

/// The outbox's keys.
#[derive(Debug)]
struct Keys {
    /// The stream of jobs due now.
    stream: String,
    /// The sorted set of jobs not due yet.
    delayed: String,
    /// The stream of dead letters.
    dead: String,
    /// Prefix of the enqueued-job markers.
    job_prefix: String,
}

impl Keys {
    fn new(stream_key: &str) -> Self {
        Self {
            stream: stream_key.to_owned(),
            delayed: format!("{stream_key}:delayed"),
            dead: format!("{stream_key}:dead"),
            job_prefix: format!("{stream_key}:job:"),
        }
    }
}

/// The enqueueing side, and what [`super::Started`] asks of the Redis outbox.
pub(super) struct RedisOutbox {
    /// Shared with the senders; reconnects by itself after a lost connection.
    connection: ConnectionManager,
    /// The keys.
    keys: Arc<Keys>,
    /// This replica's consumer name.
    consumer: String,
    /// TTL of the enqueued-job markers.
    dedup_ttl_secs: u64,
    /// Wakes this replica's mover for a job scheduled to be due soon.
    mover_wake: Arc<Notify>,
}

/// The reader's state, shared with its sends: the sends in flight and how to settle them.
struct Senders {
    /// Sends one job and decides what follows.
    sender: Sender,
    /// For settlements, shared with the enqueueing side.
    connection: ConnectionManager,
    /// The keys.
    keys: Arc<Keys>,
    /// This replica's consumer name.
    consumer: String,
    /// One permit per send in flight: the reader reads and claims only as many entries
    /// as they hold permits for, so every entry this consumer holds is being sent.
    permits: Arc<Semaphore>,
    /// The stream ids of the entries this replica is sending, so that one it claims (its own
    /// entry, idle because settling it waits for Redis) is not sent twice by it. A plain
    /// mutex: never held across an `.await`.
    in_flight: Mutex<HashSet<String>>,
    /// Wakes the mover for a retry due soon.
    mover_wake: Arc<Notify>,
    /// `claim_idle_ms`.
    claim_idle_ms: u64,
    /// Turns `true` at shutdown.
    shutdown: watch::Receiver<bool>,
}

/// Connects to Redis at `url`, makes sure the group exists, and spawns the reader (which
/// also claims) and the mover.
pub(super) async fn start(
    config: &OutboxConfig,
    url: &str,
    sender: Sender,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(Arc<RedisOutbox>, Vec<JoinHandle<()>>)> {
    // The parse error of the redis crate does not repeat the URL, which may hold a password.
    let client = Client::open(url).map_err(|error| {
        anyhow!(
            "outbox.redis_url is not a usable Redis URL (redis://, rediss:// or redis+unix://): {error}"
        )
    })?;
    let address = client.get_connection_info().addr().to_string();
    let unreachable = || format!("cannot reach Redis at {address} (outbox.redis_url)");
    let keys = Arc::new(Keys::new(&config.stream_key));

    let mut reader_connection = connect_reader(&client).await.with_context(unreachable)?;
    create_group(&mut reader_connection, &keys.stream)
        .await
        .with_context(|| {
            format!(
                "cannot create the consumer group of the push outbox stream {:?} in Redis at \
                 {address}",
                keys.stream
            )
        })?;
    let connection = client
        .get_connection_manager_with_config(
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(COMMAND_TIMEOUT))
                .set_min_delay(BACKOFF_FIRST)
                .set_max_delay(BACKOFF_MAX),
        )
        .await
        .with_context(unreachable)?;
    let consumer = consumer_name();
    tracing::info!(
        redis = %address,
        stream = %keys.stream,
        group = GROUP,
        %consumer,
        senders = config.senders,
        "push outbox: Redis stream"
    );

    let mover_wake = Arc::new(Notify::new());
    let outbox = Arc::new(RedisOutbox {
        connection: connection.clone(),
        keys: Arc::clone(&keys),
        consumer: consumer.clone(),
        dedup_ttl_secs: config.dedup_ttl_secs,
        mover_wake: Arc::clone(&mover_wake),
    });
    let senders = Arc::new(Senders {
        permits: Arc::new(Semaphore::new(sender.senders())),
        sender,
        connection: connection.clone(),
        keys: Arc::clone(&keys),
        consumer,
        in_flight: Mutex::new(HashSet::new()),
        mover_wake: Arc::clone(&mover_wake),
        claim_idle_ms: config.claim_idle_ms,
        shutdown: shutdown.clone(),
    });
    let reader = tokio::spawn(Arc::clone(&senders).read(client, reader_connection));
    let mover = tokio::spawn(move_due(connection, keys, mover_wake, shutdown));
    Ok((outbox, vec![reader, mover]))
}

#[async_trait]
impl Outbox for RedisOutbox {
    async fn enqueue(&self, jobs: Vec<Job>) -> anyhow::Result<()> {
        let now_ms = Utc::now().timestamp_millis();
        let mut soonest: Option<i64> = None;
        let mut connection = self.connection.clone();
        for batch in jobs.chunks(ENQUEUE_BATCH) {
            let mut markers = Vec::with_capacity(batch.len());
            let mut args = Vec::with_capacity(1 + 2 * batch.len());
            args.push(self.dedup_ttl_secs.to_string());
            for job in batch {
                let json = serde_json::to_string(job).context("encoding a push job")?;
                let due = job
                    .not_before
                    .map(|due| due.timestamp_millis())
                    .filter(|due| *due > now_ms);
                if let Some(due) = due {
                    soonest = Some(soonest.map_or(due, |soonest| soonest.min(due)));
                }
                markers.push(format!("{}{}", self.keys.job_prefix, job.id));
                args.push(due.map(|due| due.to_string()).unwrap_or_default());
                args.push(json);
            }
            let mut keys = vec![self.keys.stream.clone(), self.keys.delayed.clone()];
            keys.extend(markers);
            let script = eval(ENQUEUE_SCRIPT, &keys, &args);
            let stored = store(&script, &mut connection)
                .await
                .context("the push outbox could not store the jobs in Redis")?;
            if stored < batch.len() {
                tracing::debug!(
                    jobs = batch.len(),
                    stored,
                    "push outbox: jobs enqueued already were skipped"
                );
            }
        }
        if soonest.is_some_and(|due| due - now_ms < MOVER_POLL.as_millis() as i64) {
            self.mover_wake.notify_one();
        }
        Ok(())
    }
}

/// Runs the enqueue `script`, again after a lost connection (the connection manager makes a
/// new one; the markers make a second run store nothing twice), for at most
/// [`COMMAND_TIMEOUT`] in all.
async fn store(script: &redis::Cmd, connection: &mut ConnectionManager) -> anyhow::Result<usize> {
    let give_up_at = Instant::now() + COMMAND_TIMEOUT;
    let mut backoff = Backoff::default();
    loop {
        let left = give_up_at.saturating_duration_since(Instant::now());
        let error = match tokio::time::timeout(left, script.query_async::<usize>(connection)).await
        {
            Ok(Ok(stored)) => return Ok(stored),
            Ok(Err(error)) => error,
            Err(_) => return Err(CommandError::Timeout.into()),
        };
        let lost = error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_timeout();
        let delay = backoff.next_delay();
        if !lost || Instant::now() + delay >= give_up_at {
            return Err(error.into());
        }
        tokio::time::sleep(delay).await;
    }
}

impl RedisOutbox {
    /// This replica's consumer name.
    pub(super) fn consumer(&self) -> &str {
        &self.consumer
    }

    /// The newest dead letters, newest first.
    pub(super) async fn dead_letters(&self, limit: usize) -> anyhow::Result<Vec<DeadLetter>> {
        let reply: StreamRangeReply = bounded(
            redis::cmd("XREVRANGE")
                .arg(&self.keys.dead)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(limit)
                .query_async(&mut self.connection.clone()),
        )
        .await
        .context("reading the push outbox's dead letters")?;
        Ok(reply
            .ids
            .iter()
            .map(|entry| DeadLetter {
                job: entry
                    .get::<Vec<u8>>(JOB_FIELD)
                    .and_then(|json| serde_json::from_slice(&json).ok()),
                reason: entry.get("reason").unwrap_or_default(),
                at: entry
                    .get::<String>("at")
                    .and_then(|at| DateTime::parse_from_rfc3339(&at).ok())
                    .map_or_else(Utc::now, |at| at.with_timezone(&Utc)),
            })
            .collect())
    }
}

impl Senders {
    /// Follows the stream until shutdown, starting on `connection`, and every half
    /// `claim_idle_ms` takes over entries pending too long; then waits for the sends in
    /// flight and hands back what this consumer still holds.
    ///
    /// Reading and claiming take turns in this one task, each only for senders that are
    /// free, so neither starves the other of senders.
    async fn read(self: Arc<Self>, client: Client, connection: MultiplexedConnection) {
        let mut shutdown = self.shutdown.clone();
        let mut connection = Some(connection);
        let mut backoff = Backoff::default();
        let claim_every = Duration::from_millis(self.claim_idle_ms / 2);
        // Claim at once: a replica that starts (say, in place of one that died) picks up
        // what is waiting for a new owner before anything else.
        let mut next_claim = Instant::now();
        let mut claim_cursor = STREAM_START.to_owned();
        let mut retired_at = Instant::now();
        loop {
            let permits = tokio::select! {
                biased;
                () = stopped(&mut shutdown) => break,
                permits = free_senders(&self.permits, READ_COUNT) => match permits {
                    Some(permits) => permits,
                    None => break,
                },
            };
            let open = match connection.as_mut() {
                Some(open) => open,
                None => {
                    let attempt = tokio::select! {
                        biased;
                        () = stopped(&mut shutdown) => break,
                        attempt = connect_reader(&client) => attempt,
                    };
                    match attempt {
                        Ok(reconnected) => {
                            tracing::info!(
                                stream = %self.keys.stream,
                                consumer = %self.consumer,
                                "push outbox reader reconnected to Redis"
                            );
                            connection.insert(reconnected)
                        }
                        Err(error) => {
                            let delay = backoff.next_delay();
                            tracing::warn!(
                                %error,
                                retry_in_ms = delay.as_millis(),
                                "push outbox reader cannot reconnect to Redis"
                            );
                            drop(permits);
                            if !pause(&mut shutdown, delay).await {
                                break;
                            }
                            continue;
                        }
                    }
                }
            };
            let now = Instant::now();
            let result = if now >= next_claim {
                let claimed = tokio::select! {
                    biased;
                    () = stopped(&mut shutdown) => break,
                    claimed = self.claim(open, &claim_cursor, permits.num_permits()) => claimed,
                };
                claimed.map(|(entries, cursor)| {
                    // A whole pass over the pending entries: the next one in half
                    // claim_idle_ms; a pass cut short by the free senders goes on at once.
                    next_claim = if cursor == STREAM_START {
                        now + claim_every
                    } else {
                        now
                    };
                    claim_cursor = cursor;
                    entries
                })
            } else {
                let block = (next_claim - now).min(Duration::from_millis(READ_BLOCK_MS));
                let read = xreadgroup(
                    &self.keys.stream,
                    &self.consumer,
                    permits.num_permits(),
                    block,
                );
                tokio::select! {
                    biased;
                    () = stopped(&mut shutdown) => break,
                    reply = read.query_async::<Option<StreamReadReply>>(open) => reply.map(|reply| {
                        reply
                            .map(|reply| reply.keys.into_iter().flat_map(|key| key.ids).collect())
                            .unwrap_or_default()
                    }),
                }
            };
            match result {
                Ok(entries) => {
                    backoff.reset();
                    self.dispatch(entries, permits);
                }
                Err(error) if error.code() == Some("NOGROUP") => {
                    drop(permits);
                    tracing::warn!(
                        stream = %self.keys.stream,
                        "the push outbox's consumer group is missing (Redis lost its data?): \
                         creating it again"
                    );
                    if let Err(error) = create_group(open, &self.keys.stream).await {
                        connection = None;
                        tracing::warn!(%error, "creating the push outbox's consumer group failed");
                        if !pause(&mut shutdown, backoff.next_delay()).await {
                            break;
                        }
                    }
                }
                Err(error) => {
                    connection = None;
                    drop(permits);
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        %error,
                        stream = %self.keys.stream,
                        retry_in_ms = delay.as_millis(),
                        "reading the push outbox stream failed, reconnecting"
                    );
                    if !pause(&mut shutdown, delay).await {
                        break;
                    }
                }
            }
            if retired_at.elapsed() >= RETIRE_EVERY {
                retired_at = Instant::now();
                self.retire_consumers().await;
            }
        }
        // Every permit back: every send in flight is settled (or given up).
        let senders = self.sender.senders();
        let _ = self.permits.acquire_many(senders as u32).await;
        self.hand_back().await;
        tracing::info!(consumer = %self.consumer, "push outbox senders stopped");
    }

    /// One `XAUTOCLAIM` from `cursor`: up to `count` entries pending longer than
    /// `claim_idle_ms` in any consumer, now this one's; and where the next one goes on.
    async fn claim(
        &self,
        connection: &mut MultiplexedConnection,
        cursor: &str,
        count: usize,
    ) -> Result<(Vec<StreamId>, String), RedisError> {
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(self.claim_idle_ms)
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .query_async(connection)
            .await?;
        if !reply.claimed.is_empty() {
            tracing::info!(
                entries = reply.claimed.len(),
                consumer = %self.consumer,
                "push outbox: took over jobs pending longer than outbox.claim_idle_ms"
            );
        }
        Ok((reply.claimed, reply.next_stream_id))
    }

    /// Spawns the send of each entry with one of `permits`; entries already being sent here
    /// are skipped. Unused permits go back.
    fn dispatch(self: &Arc<Self>, entries: Vec<StreamId>, mut permits: OwnedSemaphorePermit) {
        for entry in entries {
            let fresh = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(entry.id.clone());
            if !fresh {
                continue;
            }
            let Some(permit) = permits.split(1) else {
                // More entries than permits: cannot happen (COUNT is the permits); the
                // entry stays pending and is claimed later.
                self.done(&entry.id);
                continue;
            };
            tokio::spawn(Arc::clone(self).send(entry, permit));
        }
    }

    /// Sends one entry's job and settles the entry.
    async fn send(self: Arc<Self>, entry: StreamId, permit: OwnedSemaphorePermit) {
        let decoded = entry
            .get::<Vec<u8>>(JOB_FIELD)
            .ok_or_else(|| format!("no `{JOB_FIELD}` field"))
            .and_then(|json| {
                serde_json::from_slice::<Job>(&json).map_err(|error| error.to_string())
            });
        match decoded {
            Ok(job) => {
                let decision = self.sender.attempt(job).await;
                if self.settle(&entry.id, &decision).await {
                    self.sender.settled(&decision).await;
                }
            }
            Err(reason) => {
                tracing::warn!(
                    entry_id = %entry.id,
                    %reason,
                    "push outbox: an entry that does not decode as a job, dead-lettered"
                );
                let raw = entry.get::<Vec<u8>>(JOB_FIELD).unwrap_or_default();
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .cmd("XADD")
                    .arg(&self.keys.dead)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(DEAD_MAX_LEN)
                    .arg("*")
                    .arg("raw")
                    .arg(raw)
                    .arg("reason")
                    .arg(format!("the entry does not decode as a job: {reason}"))
                    .arg("at")
                    .arg(Utc::now().to_rfc3339())
                    .ignore();
                self.ack_in(&mut pipe, &entry.id);
                self.run_settlement(&entry.id, &pipe).await;
            }
        }
        self.done(&entry.id);
        drop(permit);
    }

    /// Stores `decision` for entry `id` and acknowledges the entry, in one transaction;
    /// `false` when that could not be done before shutdown (the entry stays pending, for
    /// another replica to take over).
    async fn settle(&self, id: &str, decision: &Decision) -> bool {
        let mut pipe = redis::pipe();
        pipe.atomic();
        match &decision.action {
            Action::Ack => {}
            Action::DeadLetter { reason } => {
                let json = match serde_json::to_string(&decision.job) {
                    Ok(json) => json,
                    Err(error) => format!("{{\"unencodable\": \"{error}\"}}"),
                };
                pipe.cmd("XADD")
                    .arg(&self.keys.dead)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(DEAD_MAX_LEN)
                    .arg("*")
                    .arg(JOB_FIELD)
                    .arg(json)
                    .arg("reason")
                    .arg(reason)
                    .arg("at")
                    .arg(Utc::now().to_rfc3339())
                    .ignore();
            }
            Action::Schedule { due, .. } => {
                let Ok(json) = serde_json::to_string(&decision.job) else {
                    // A job that was read from JSON encodes again; should it not, leave the
                    // entry pending rather than lose the job.
                    tracing::error!(job = %decision.job.id, "push outbox: cannot encode a job to reschedule");
                    return false;
                };
                pipe.cmd("ZADD")
                    .arg(&self.keys.delayed)
                    .arg(due.timestamp_millis())
                    .arg(json)
                    .ignore();
                if (*due - Utc::now()).num_milliseconds() < MOVER_POLL.as_millis() as i64 {
                    self.mover_wake.notify_one();
                }
            }
        }
        self.ack_in(&mut pipe, id);
        self.run_settlement(id, &pipe).await
    }

    /// Adds `XACK` and `XDEL` of entry `id` to `pipe`.
    fn ack_in(&self, pipe: &mut redis::Pipeline, id: &str) {
        pipe.cmd("XACK")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg(id)
            .ignore()
            .cmd("XDEL")
            .arg(&self.keys.stream)
            .arg(id)
            .ignore();
    }

    /// Runs a settlement until Redis took it, or until [`SETTLE_GRACE`] after shutdown.
    async fn run_settlement(&self, id: &str, pipe: &redis::Pipeline) -> bool {
        let mut connection = self.connection.clone();
        let mut backoff = Backoff::default();
        let mut give_up_at: Option<Instant> = None;
        loop {
            let error = match bounded(pipe.query_async::<()>(&mut connection)).await {
                Ok(()) => return true,
                Err(error) => error,
            };
            if *self.shutdown.borrow() {
                let give_up_at = *give_up_at.get_or_insert_with(|| Instant::now() + SETTLE_GRACE);
                if Instant::now() >= give_up_at {
                    tracing::warn!(
                        entry_id = %id,
                        %error,
                        "push outbox: stopping with a job sent but not settled; another \
                         replica will send it again"
                    );
                    return false;
                }
            }
            let delay = backoff.next_delay();
            tracing::warn!(
                entry_id = %id,
                %error,
                retry_in_ms = delay.as_millis(),
                "push outbox: settling a sent job in Redis failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// The entry is no longer being sent here.
    fn done(&self, id: &str) {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// At shutdown: marks the entries this consumer still holds as idle for `claim_idle_ms`,
    /// so that other replicas take them over at their next claim. Best effort.
    async fn hand_back(&self) {
        let mut connection = self.connection.clone();
        let pending = bounded(
            redis::cmd("XPENDING")
                .arg(&self.keys.stream)
                .arg(GROUP)
                .arg("-")
                .arg("+")
                .arg(1000)
                .arg(&self.consumer)
                .query_async::<redis::streams::StreamPendingCountReply>(&mut connection),
        )
        .await;
        let ids: Vec<String> = match pending {
            Ok(reply) => reply.ids.into_iter().map(|pending| pending.id).collect(),
            Err(error) => {
                tracing::debug!(%error, "push outbox: cannot list what this consumer holds");
                return;
            }
        };
        if ids.is_empty() {
            return;
        }
        let handed = bounded(
            redis::cmd("XCLAIM")
                .arg(&self.keys.stream)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(0)
                .arg(&ids)
                .arg("IDLE")
                .arg(self.claim_idle_ms)
                .arg("JUSTID")
                .query_async::<Value>(&mut connection),
        )
        .await;
        match handed {
            Ok(_) => tracing::info!(
                entries = ids.len(),
                "push outbox: handed unsent jobs back for other replicas to take over"
            ),
            Err(error) => tracing::debug!(%error, "push outbox: handing jobs back failed"),
        }
    }

    /// Removes consumers that are gone (nothing pending, idle an hour). Best effort.
    async fn retire_consumers(&self) {
        let retired = bounded(
            eval(
                RETIRE_SCRIPT,
                std::slice::from_ref(&self.keys.stream),
                &[
                    GROUP.to_owned(),
                    RETIRE_IDLE_MS.to_string(),
                    self.consumer.clone(),
                ],
            )
            .query_async::<u64>(&mut self.connection.clone()),
        )
        .await;
        match retired {
            Ok(0) => {}
            Ok(retired) => {
                tracing::info!(
                    retired,
                    "push outbox: removed consumers of replicas that are gone"
                );
            }
            Err(error) => tracing::debug!(%error, "push outbox: removing idle consumers failed"),
        }
    }
}

/// Moves due jobs from the delayed set into the stream until shutdown.
async fn move_due(
    mut connection: ConnectionManager,
    keys: Arc<Keys>,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    let script_keys = [keys.delayed.clone(), keys.stream.clone()];
    loop {
        let now_ms = Utc::now().timestamp_millis();
        let moved = bounded(
            eval(
                MOVE_SCRIPT,
                &script_keys,
                &[now_ms.to_string(), MOVE_BATCH.to_string()],
            )
            .query_async::<(usize, Option<i64>)>(&mut connection),
        )
        .await;
        let wait = match moved {
            Ok((moved, _)) if moved >= MOVE_BATCH => {
                backoff.reset();
                MOVER_MIN_PAUSE
            }
            Ok((_, next)) => {
                backoff.reset();
                next.map_or(MOVER_POLL, |next| {
                    Duration::from_millis(u64::try_from(next - now_ms).unwrap_or(0))
                        .clamp(MOVER_MIN_PAUSE, MOVER_POLL)
                })
            }
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::debug!(%error, retry_in_ms = delay.as_millis(), "moving due push jobs failed");
                delay
            }
        };
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {
                // Woken for a job due soon: still no more often than MOVER_MIN_PAUSE.
                if !pause(&mut shutdown, MOVER_MIN_PAUSE).await {
                    break;
                }
            }
        }
    }
}

/// Why a command on the shared connection failed.
#[derive(Debug, thiserror::Error)]
enum CommandError {
    /// Redis could not be reached, or refused the command.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// No answer in time (reconnecting included).
    #[error("no answer from Redis within {} s", COMMAND_TIMEOUT.as_secs())]
    Timeout,
}

/// `command`, failing after [`COMMAND_TIMEOUT`] (the connection manager's own timeout is per
/// attempt; this bounds its reconnects too).
async fn bounded<T>(
    command: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, CommandError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, command).await {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(CommandError::Timeout),
    }
}

/// `EVAL <script> <number of keys> <keys> <args>`. Scripts are sent whole every time (they
/// are small, and Redis caches their compiled form): there is no script cache to lose
/// after a Redis restart or failover.
fn eval(script: &str, keys: &[String], args: &[String]) -> redis::Cmd {
    let mut command = redis::cmd("EVAL");
    command.arg(script).arg(keys.len()).arg(keys).arg(args);
    command
}

/// `XREADGROUP GROUP senders <consumer> COUNT <count> BLOCK <block> STREAMS <stream> >`.
fn xreadgroup(stream: &str, consumer: &str, count: usize, block: Duration) -> redis::Cmd {
    let mut command = redis::cmd("XREADGROUP");
    command
        .arg("GROUP")
        .arg(GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        // At least 1 ms: `BLOCK 0` would block forever.
        .arg(block.as_millis().max(1))
        .arg("STREAMS")
        .arg(stream)
        .arg(">");
    command
}

/// Creates the consumer group at the start of the stream (and the stream), unless it exists.
async fn create_group(
    connection: &mut MultiplexedConnection,
    stream: &str,
) -> Result<(), RedisError> {
    let created = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async::<()>(connection)
        .await;
    match created {
        Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// A connection for the reader alone, whose reads may block for [`READ_BLOCK_MS`].
async fn connect_reader(client: &Client) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(Duration::from_millis(READ_BLOCK_MS) + READ_GRACE));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Waits for at least one free sender and takes up to `most`; `None` once the semaphore is
/// closed.
async fn free_senders(permits: &Arc<Semaphore>, most: usize) -> Option<OwnedSemaphorePermit> {
    let mut held = Arc::clone(permits).acquire_owned().await.ok()?;
    if let Some(more) = try_free_senders(permits, most.saturating_sub(1)) {
        held.merge(more);
    }
    Some(held)
}

/// Takes up to `most` free senders without waiting; `None` when none is free.
fn try_free_senders(permits: &Arc<Semaphore>, most: usize) -> Option<OwnedSemaphorePermit> {
    let free = permits.available_permits().min(most);
    if free == 0 {
        return None;
    }
    Arc::clone(permits)
        .try_acquire_many_owned(u32::try_from(free).unwrap_or(u32::MAX))
        .ok()
}

/// A consumer name of this process alone: host, pid and a random part (two outboxes in one
/// process, as in tests, differ too).
fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "switchyard".to_owned());
    let mut random = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut random);
    format!(
        "{host}-{}-{}",
        std::process::id(),
        random
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>()
    )
}

/// Waits `delay`; `false` when shutdown came first.
async fn pause(shutdown: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        biased;
        () = stopped(shutdown) => false,
        () = tokio::time::sleep(delay) => true,
    }
}

/// Completes when shutdown is signalled, or when its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The wait between failures: 100 ms, doubling up to 5 s, reset by a success.
struct Backoff {
    /// The next wait.
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: BACKOFF_FIRST,
        }
    }
}

impl Backoff {
    /// The wait before the next attempt; the one after it is twice as long.
    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(BACKOFF_MAX);
        delay
    }

    /// Back to the first wait, after a success.
    fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sit_beside_the_stream() {
        let keys = Keys::new("switchyard:outbox");
        assert_eq!(keys.delayed, "switchyard:outbox:delayed");
        assert_eq!(keys.dead, "switchyard:outbox:dead");
        assert_eq!(keys.job_prefix, "switchyard:outbox:job:");
    }

    #[test]
    fn consumer_names_differ_within_one_process() {
        let (a, b) = (consumer_name(), consumer_name());
        assert_ne!(a, b);
        assert!(a.contains(&std::process::id().to_string()), "{a}");
    }

    #[tokio::test]
    async fn free_senders_takes_what_is_free_up_to_the_most() {
        let permits = Arc::new(Semaphore::new(5));
        let held = free_senders(&permits, 3).await.unwrap();
        assert_eq!(held.num_permits(), 3);
        let rest = try_free_senders(&permits, 10).unwrap();
        assert_eq!(rest.num_permits(), 2);
        assert!(try_free_senders(&permits, 10).is_none());
        drop(held);
        assert_eq!(permits.available_permits(), 3);
    }
}
