//! Idempotent mutations, for apps that queue their changes while offline and send them again
//! when they are not sure the first try arrived: a mutation replayed with a key already seen
//! answers the first result and writes nothing upstream again.
//!
//! - The key: `clientMutationId` (in the mutation's `input` object, or an argument of that name
//!   for mutations without one), or the HTTP `Idempotency-Key` header ([`HeaderKey`], put in
//!   the request's data by the transport), which applies to each root mutation field of the
//!   operation, scoped by the field's response key (alias or name) and, in a batch, the
//!   operation's place in it, so that two fields never share it. `clientMutationId` wins when
//!   both are given. 1 to [`MAX_KEY_CHARS`] characters of `A-Z a-z 0-9 - _ . :`; anything
//!   else is `BAD_USER_INPUT`.
//! - Per user: the record's key is a hash of the user's id (`sub`) and the key, so another
//!   user's key is never matched. Anonymous mutations take no key (each answers
//!   `UNAUTHENTICATED` anyway: none runs without a user, and an anonymous key would be
//!   everyone's).
//! - What a replay answers: the first run's field as JSON (what the client selected,
//!   nested errors left out), kept for the configured window ([`IdempotencyConfig`],
//!   `[idempotency] window_secs`, 24 h). The record remembers a fingerprint of the field: its
//!   arguments and its selection (fragments expanded, nested aliases, directives). The same key
//!   with other arguments or another selection is `IDEMPOTENCY_KEY_REUSED`, never the old
//!   result (it would not answer what was asked).
//! - Where: the notification store's claims (`[notifications] redis_url`: Redis shared by the
//!   replicas, an atomic `SET NX PX` claim, then the result; else this replica's memory).
//! - In flight: the first run holds a claim; a replay that arrives meanwhile waits for its
//!   result within its own request's deadline, then answers `IDEMPOTENCY_KEY_IN_USE`.
//! - Failures: a run that failed without sending its write (a bad input, a rule, a read
//!   before the write), or whose write was refused for good (a business rule, a conflict,
//!   `NOT_FOUND`), releases the key: a retry runs afresh. A run whose write was sent and then
//!   failed in a way that may have written (the upstream timed out or failed, the request's
//!   deadline stopped it) keeps the key as unknown for the window: replays answer
//!   `IDEMPOTENCY_OUTCOME_UNKNOWN` and nothing runs again (look at the current state, then
//!   retry with a new key); so does a result over [`IdempotencyConfig::max_result_bytes`].
//!   A replica that dies mid-run leaves its claim to expire (the request's deadline and a
//!   minute): a replay after that runs again.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_graphql::{Context, ServerError, ServerResult, Value};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::GraphError;
use crate::notifications::NotificationStore;
use crate::viewer::Viewer;

/// Longest idempotency key (a UUID is 36).
pub const MAX_KEY_CHARS: usize = 128;
/// What a claim outlives the request's deadline by (its answer being sent, clocks).
const CLAIM_MARGIN: Duration = Duration::from_secs(60);
/// How often a replay looks whether the first run has finished.
const POLL: Duration = Duration::from_millis(50);
/// What a waiting replay leaves of its deadline, to answer.
const ANSWER_MARGIN: Duration = Duration::from_millis(300);
/// How long a replay waits for the first run when its request has no deadline (tests).
const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// How long results are kept and how large they may be (schema data; defaults without).
#[derive(Debug, Clone)]
pub struct IdempotencyConfig {
    /// How long a key's result answers replays (`[idempotency] window_secs`).
    pub window: Duration,
    /// Largest result kept, as JSON (`[idempotency] max_result_bytes`); a larger one makes
    /// replays `IDEMPOTENCY_OUTCOME_UNKNOWN`.
    pub max_result_bytes: usize,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(24 * 3600),
            max_result_bytes: 64 * 1024,
        }
    }
}

/// The HTTP request's `Idempotency-Key` header (request data, from the transport).
#[derive(Debug, Clone)]
pub struct HeaderKey {
    /// The header's value (invalid UTF-8 made lossy: it then fails the key's check).
    pub key: String,
    /// The operation's place in a batch; `None` for a request of one operation.
    pub batch_index: Option<usize>,
}

/// What is kept under a key.
#[derive(Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
enum Record {
    /// A run holds the key; `ticket` tells whose.
    Pending { fingerprint: String, ticket: String },
    /// The run's field, as it answered.
    Done { fingerprint: String, result: Value },
    /// The run may have written, but its result is not known (or too large to keep).
    Unknown {
        fingerprint: String,
        too_large: bool,
    },
}

impl Record {
    fn fingerprint(&self) -> &str {
        match self {
            Record::Pending { fingerprint, .. }
            | Record::Done { fingerprint, .. }
            | Record::Unknown { fingerprint, .. } => fingerprint,
        }
    }

    fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What a root mutation field does about its key.
pub(crate) enum Begin {
    /// No key: it runs as it is.
    Unkeyed,
    /// Seen before: the first run's answer.
    Replay(Value),
    /// First time: it runs, holding the claim.
    Run(Claim),
}

/// The claim of a run on its key, until [`Claim::finish`]. Dropped unfinished (the request's
/// deadline stopped the run), it releases the key if nothing was sent, or keeps it as unknown.
pub(crate) struct Claim {
    /// Where the record is kept; an `Arc`, so that `Drop` can still keep it from a task.
    store: Arc<dyn NotificationStore>,
    /// The record's key: a hash of the user and the scoped key.
    key: String,
    /// The run's arguments and selection, hashed: what a replay must match.
    fingerprint: String,
    /// The pending record as claimed, byte for byte: a release takes only our own claim.
    pending: String,
    /// How long the result answers replays.
    window: Duration,
    /// Largest result kept.
    max_result_bytes: usize,
    /// Set when the run sends its write (`crate::serial::sending_write`).
    sent: Arc<AtomicBool>,
    /// Whether the record was kept (then `Drop` has nothing to do).
    finished: bool,
}

impl Claim {
    /// Keeps what the run answered: its result, the key's release (nothing written), or the
    /// unknown outcome. Stopped before it has kept it (the deadline), the claim's `Drop` keeps the key as
    /// unknown instead (or releases it, if nothing was sent).
    pub(crate) async fn finish(mut self, result: &ServerResult<Option<Value>>) {
        let outcome = match result {
            Ok(Some(value)) => {
                let done = Record::Done {
                    fingerprint: self.fingerprint.clone(),
                    result: value.clone(),
                }
                .to_text();
                if done.len() <= self.max_result_bytes {
                    Some(done)
                } else {
                    tracing::warn!(
                        bytes = done.len(),
                        "a mutation's result is too large to keep for replays"
                    );
                    Some(self.unknown(true))
                }
            }
            Err(e) if self.sent.load(Ordering::Acquire) && may_have_written(e) => {
                Some(self.unknown(false))
            }
            _ => None,
        };
        let stored = match outcome {
            Some(text) => self.store.remember(&self.key, &text, self.window).await,
            None => self
                .store
                .release(&self.key, &self.pending)
                .await
                .map(|_| ()),
        };
        self.finished = true;
        if let Err(e) = stored {
            // The claim expires on its own; a replay after that runs again.
            tracing::warn!(error = %e.0, "could not keep a mutation's idempotency record");
        }
    }

    fn unknown(&self, too_large: bool) -> String {
        Record::Unknown {
            fingerprint: self.fingerprint.clone(),
            too_large,
        }
        .to_text()
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, key, pending, window) = (
            self.store.clone(),
            self.key.clone(),
            self.pending.clone(),
            self.window,
        );
        let unknown = self
            .sent
            .load(Ordering::Acquire)
            .then(|| self.unknown(false));
        runtime.spawn(async move {
            let stored = match unknown {
                Some(text) => store.remember(&key, &text, window).await,
                None => store.release(&key, &pending).await.map(|_| ()),
            };
            if let Err(e) = stored {
                tracing::warn!(error = %e.0, "could not keep a stopped mutation's idempotency record");
            }
        });
    }
}

/// Whether a failed run may still have written upstream: its upstream (or our store) gave no
/// usable answer, or something unexpected happened. A refusal (business rule, conflict, not
/// found, bad input, rate limiting) wrote nothing.
fn may_have_written(error: &ServerError) -> bool {
    if error.source::<crate::error::NotSent>().is_some() {
        // Refused before it left (a breaker open, no room in the budget in time).
        return false;
    }
    let code = error
        .extensions
        .as_ref()
        .and_then(|ext| ext.get("code"))
        .and_then(|code| match code {
            Value::String(code) => Some(code.as_str()),
            _ => None,
        });
    // Every other code is a refusal: a business rule, a conflict, not found, bad input,
    // rate limiting.
    code.is_none_or(|code| {
        matches!(
            code,
            "UPSTREAM_UNAVAILABLE" | "UNAVAILABLE" | "INTERNAL" | "TIMEOUT"
        )
    })
}

/// Looks up the key of the root mutation field `ctx` runs, if it has one: the first run's
/// answer, the claim to run, or an error (a bad key, one in use, reused, of unknown outcome).
pub(crate) async fn begin(ctx: &Context<'_>, sent: Arc<AtomicBool>) -> ServerResult<Begin> {
    let error = |e: GraphError| async_graphql::Error::from(e).into_server_error(ctx.item.pos);
    let Some(viewer) = ctx.data_opt::<Viewer>() else {
        return Ok(Begin::Unkeyed);
    };
    let Some(scoped) = scoped_key(ctx).map_err(error)? else {
        return Ok(Begin::Unkeyed);
    };
    let store = ctx
        .data::<Arc<dyn NotificationStore>>()
        .map_err(|e| e.into_server_error(ctx.item.pos))?
        .clone();
    let config = ctx
        .data_opt::<IdempotencyConfig>()
        .cloned()
        .unwrap_or_default();
    let key = format!("idempotency:{}", hash(&[&viewer.user_id, &scoped]));
    let fingerprint = fingerprint(ctx)?;
    let deadline = crate::deadline::current();
    let claim_ttl = deadline
        .map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
        .unwrap_or(DEFAULT_WAIT)
        + CLAIM_MARGIN;
    let wait_until = match deadline {
        Some(d) => d.checked_sub(ANSWER_MARGIN).unwrap_or(d),
        None => tokio::time::Instant::now() + DEFAULT_WAIT,
    };
    let pending = Record::Pending {
        fingerprint: fingerprint.clone(),
        ticket: unique(),
    }
    .to_text();
    let in_use = || {
        error(GraphError::Rejected(
            "IDEMPOTENCY_KEY_IN_USE",
            "the first attempt with this idempotency key is still running: send it again \
             shortly to get its result"
                .to_owned(),
        ))
    };
    let unavailable = |e: crate::notifications::StoreError| {
        error(GraphError::Unavailable("idempotency records", e.0))
    };
    loop {
        if store
            .claim(&key, &pending, claim_ttl)
            .await
            .map_err(unavailable)?
        {
            return Ok(Begin::Run(Claim {
                store,
                key,
                fingerprint,
                pending,
                window: config.window,
                max_result_bytes: config.max_result_bytes,
                sent,
                finished: false,
            }));
        }
        let Some(held) = store.claimed(&key).await.map_err(unavailable)? else {
            // Released or expired meanwhile: claim it again (within the wait, whatever the
            // store does).
            if tokio::time::Instant::now() >= wait_until {
                return Err(in_use());
            }
            continue;
        };
        let record: Record = serde_json::from_str(&held).map_err(|e| {
            error(GraphError::Unavailable(
                "idempotency records",
                format!("unreadable record: {e}"),
            ))
        })?;
        if record.fingerprint() != fingerprint {
            return Err(error(GraphError::Rejected(
                "IDEMPOTENCY_KEY_REUSED",
                "this idempotency key was used for another mutation (other arguments or \
                 another selection): send a new key for a new change"
                    .to_owned(),
            )));
        }
        match record {
            Record::Done { result, .. } => return Ok(Begin::Replay(result)),
            Record::Unknown { too_large, .. } => {
                let why = if too_large {
                    "the first attempt with this idempotency key ran, but its result was too \
                     large to keep"
                } else {
                    "the first attempt with this idempotency key was cut off after its change \
                     was sent, and may have taken effect"
                };
                return Err(error(GraphError::Rejected(
                    "IDEMPOTENCY_OUTCOME_UNKNOWN",
                    format!(
                        "{why}: it is not run again; read the current state, and send a new \
                         key if the change is still wanted"
                    ),
                )));
            }
            Record::Pending { .. } => {
                if tokio::time::Instant::now() + POLL >= wait_until {
                    return Err(in_use());
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// The field's key with its scope, checked: `clientMutationId` (the argument, or the `input`
/// object's field), else the `Idempotency-Key` header scoped to this field.
fn scoped_key(ctx: &Context<'_>) -> Result<Option<String>, GraphError> {
    let arguments = ctx
        .field()
        .arguments()
        .map_err(|e| GraphError::BadInput(e.message))?;
    let named = arguments.iter().find_map(|(name, value)| {
        let value = match name.as_str() {
            "clientMutationId" => value,
            "input" => match value {
                Value::Object(input) => input.get("clientMutationId")?,
                _ => return None,
            },
            _ => return None,
        };
        match value {
            Value::String(id) => Some(id.clone()),
            _ => None,
        }
    });
    if let Some(id) = named {
        check_key(&id, "`clientMutationId`")?;
        return Ok(Some(format!("id:{id}")));
    }
    let Some(header) = ctx.data_opt::<HeaderKey>() else {
        return Ok(None);
    };
    check_key(&header.key, "the `Idempotency-Key` header")?;
    let field = ctx.item.node.response_key().node.as_str();
    let index = header
        .batch_index
        .map(|i| i.to_string())
        .unwrap_or_default();
    Ok(Some(format!("header:{index}:{field}:{}", header.key)))
}

fn check_key(key: &str, what: &str) -> Result<(), GraphError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if key.is_empty() || key.chars().count() > MAX_KEY_CHARS || !key.chars().all(allowed) {
        return Err(GraphError::BadInput(format!(
            "{what} must be 1 to {MAX_KEY_CHARS} characters of A-Z, a-z, 0-9, `-`, `_`, `.` \
             and `:` (a UUID fits)"
        )));
    }
    Ok(())
}

/// What makes two runs of a field the same mutation: its name, arguments and selection (but
/// not its own alias: a replay may name its answer differently).
fn fingerprint(ctx: &Context<'_>) -> ServerResult<String> {
    let field = ctx.field();
    let mut text = field.name().to_owned();
    let mut out = String::new();
    describe_arguments(field.arguments()?, &mut out);
    text.push_str(&out);
    for child in field.selection_set() {
        describe(child, &mut text)?;
    }
    Ok(hash(&[&text]))
}

/// A selected field as text: alias, name, arguments, directives, and its selection (documents
/// are bounded to 2,000 fields, so is this).
fn describe(field: async_graphql::SelectionField<'_>, out: &mut String) -> ServerResult<()> {
    out.push(' ');
    if let Some(alias) = field.alias() {
        out.push_str(alias);
        out.push(':');
    }
    out.push_str(field.name());
    describe_arguments(field.arguments()?, out);
    for directive in field.directives()? {
        let _ = write!(out, "@{}", directive.name.node);
        describe_arguments(
            directive
                .arguments
                .into_iter()
                .map(|(name, value)| (name.node, value.node))
                .collect(),
            out,
        );
    }
    out.push('{');
    for child in field.selection_set() {
        describe(child, out)?;
    }
    out.push('}');
    Ok(())
}

fn describe_arguments(arguments: Vec<(async_graphql::Name, Value)>, out: &mut String) {
    let mut arguments = arguments;
    arguments.sort_by(|a, b| a.0.cmp(&b.0));
    out.push('(');
    for (name, value) in arguments {
        let _ = write!(out, "{name}:");
        canonical(&value, out);
        out.push(',');
    }
    out.push(')');
}

/// A value as text, its objects' keys sorted (variables may come in any order).
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (name, value) in entries {
                let _ = write!(out, "{name}:");
                canonical(value, out);
                out.push(',');
            }
            out.push('}');
        }
        Value::List(items) => {
            out.push('[');
            for item in items {
                canonical(item, out);
                out.push(',');
            }
            out.push(']');
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// SHA-256 of the parts (each ended by a NUL), in hex.
fn hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

/// A value no other run holds.
fn unique() -> String {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    hash(&[
        &std::process::id().to_string(),
        &now.to_string(),
        &NEXT.fetch_add(1, Ordering::Relaxed).to_string(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_in_length_and_characters() {
        assert!(check_key("6f1c2b1e-52f4-4c7e-9d1a-7b0e3d5c2a10", "k").is_ok());
        assert!(check_key("order:42.retry_1", "k").is_ok());
        assert!(check_key(&"a".repeat(MAX_KEY_CHARS), "k").is_ok());
        assert!(check_key(&"a".repeat(MAX_KEY_CHARS + 1), "k").is_err());
        assert!(check_key("", "k").is_err());
        assert!(check_key("a b", "k").is_err());
        assert!(check_key("ключ", "k").is_err());
        assert!(check_key("a\u{fffd}", "k").is_err());
    }

    #[test]
    fn object_keys_are_compared_in_any_order() {
        let a = Value::from_json(serde_json::json!({"b": 1, "a": [{"y": 2, "x": "s"}]})).unwrap();
        let b = Value::from_json(serde_json::json!({"a": [{"x": "s", "y": 2}], "b": 1})).unwrap();
        let (mut ta, mut tb) = (String::new(), String::new());
        canonical(&a, &mut ta);
        canonical(&b, &mut tb);
        assert_eq!(ta, tb);
    }

    fn failure(code: &str) -> ServerError {
        use async_graphql::ErrorExtensions as _;
        async_graphql::Error::new("x")
            .extend_with(|_, e| e.set("code", code))
            .into_server_error(async_graphql::Pos::default())
    }

    #[test]
    fn only_failures_without_an_answer_may_have_written() {
        for code in ["UPSTREAM_UNAVAILABLE", "UNAVAILABLE", "INTERNAL"] {
            assert!(may_have_written(&failure(code)), "{code}");
        }
        for code in [
            "OUT_OF_STOCK",
            "NOT_CANCELLABLE",
            "TASK_ALREADY_COMPLETED",
            "NOT_FOUND",
            "BAD_USER_INPUT",
            "UPSTREAM_RATE_LIMITED",
        ] {
            assert!(!may_have_written(&failure(code)), "{code}");
        }
        let no_code = async_graphql::ServerError::new("x", None);
        assert!(may_have_written(&no_code));
    }
}
