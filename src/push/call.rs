//! The call path the HTTP push channels share: one `reqwest::Client` per channel (its timeout,
//! no redirects: a provider that redirects a send is misconfigured, and a redirected POST would
//! lose its body), a concurrency budget held for each call, answers read up to a size limit,
//! and `Retry-After` read as seconds or an HTTP date. Transport failures come back as a
//! detail without the URL (its path holds a device token or a subscription id).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use tokio::sync::Semaphore;

use super::{PushMessage, SendOutcome};
use crate::config::ChannelPolicy;

/// `user-agent` of every push call.
const USER_AGENT: &str = concat!("switchyard/", env!("CARGO_PKG_VERSION"));
/// Longest wait for a TCP (and TLS) connection, within the call's own timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes of an answer read: providers answer a few hundred bytes; more is not theirs.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The longest `Retry-After` passed on (a provider asking for more than a day is broken).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// One channel's HTTP client and concurrency budget.
#[derive(Debug)]
pub(super) struct ProviderHttp {
    /// Which channel, for logs.
    channel: &'static str,
    /// Its own connection pool and timeouts.
    client: reqwest::Client,
    /// Most calls in flight to the provider at once. A tokio semaphore: a permit is held
    /// across the whole call.
    budget: Semaphore,
}

/// What the provider answered.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Vec<u8>,
}

impl ProviderHttp {
    /// The client of `channel` with `policy`; `configure` adds what the channel needs (a CA).
    pub(super) fn new(
        channel: &'static str,
        policy: &ChannelPolicy,
        configure: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
    ) -> anyhow::Result<Self> {
        let builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(policy.timeout)
            .connect_timeout(policy.timeout.min(CONNECT_TIMEOUT))
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(policy.concurrency.max(1));
        let client = configure(builder)
            .build()
            .map_err(|e| anyhow::anyhow!("building the HTTP client of push.{channel}: {e}"))?;
        Ok(Self {
            channel,
            client,
            budget: Semaphore::new(policy.concurrency.max(1)),
        })
    }

    pub(super) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends `request` within the budget and reads the answer; a failure is a detail for the
    /// logs (timeout, connection, an unreadable body).
    pub(super) async fn call(&self, request: reqwest::Request) -> Result<Answer, String> {
        let _permit = self
            .budget
            .acquire()
            .await
            .map_err(|_| "the concurrency budget is closed".to_owned())?;
        self.call_unbudgeted(request).await
    }

    /// Sends `request` outside the budget (the FCM token exchange: sends waiting for the token
    /// hold permits, so the exchange must not need one).
    pub(super) async fn call_unbudgeted(
        &self,
        request: reqwest::Request,
    ) -> Result<Answer, String> {
        let started = Instant::now();
        let result = read(self.client.execute(request).await).await;
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(answer) => tracing::debug!(
                channel = self.channel,
                status = answer.status.as_u16(),
                elapsed_ms,
                "push provider answered"
            ),
            // The channel logs the failure with its notification.
            Err(detail) => tracing::debug!(
                channel = self.channel,
                elapsed_ms,
                %detail,
                "push provider call failed"
            ),
        }
        result
    }
}

async fn read(sent: reqwest::Result<reqwest::Response>) -> Result<Answer, String> {
    let mut response = sent.map_err(|e| describe(&e))?;
    let status = response.status();
    let headers = response.headers().clone();
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= MAX_ANSWER_BYTES {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => return Err(format!("reading a {status} answer: {}", describe(&e))),
        }
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// A reqwest error and its causes, without the URL.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        "failed".to_owned()
    };
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(error);
    while let Some(e) = cause {
        let _ = write!(text, ": {e}");
        cause = e.source();
    }
    text
}

/// `Retry-After` as a duration: delta-seconds or an HTTP date, at most a day.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            let secs = at.timestamp() - chrono::Utc::now().timestamp();
            Duration::from_secs(u64::try_from(secs).unwrap_or(0))
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// One log line for an answer that was not a delivery: the channel, the notification, the
/// status, the provider's words; `host` (Web Push) says which push service.
pub(super) fn log_answer(
    channel: &'static str,
    host: Option<&str>,
    message: &PushMessage,
    answer: &Answer,
    outcome: &SendOutcome,
) {
    let status = answer.status.as_u16();
    match outcome {
        SendOutcome::Delivered => {}
        SendOutcome::Gone => tracing::info!(
            channel, host, notification = %message.id, status, body = %excerpt(&answer.body),
            "the provider says the device is gone"
        ),
        SendOutcome::Rejected { reason } => tracing::warn!(
            channel, host, notification = %message.id, status, %reason,
            "the provider rejected the message"
        ),
        SendOutcome::Retry { after } => tracing::warn!(
            channel, host, notification = %message.id, status,
            retry_after_secs = after.map(|a| a.as_secs()), body = %excerpt(&answer.body),
            "the provider asks to retry"
        ),
    }
}

/// The first characters of a body, for a log line.
pub(super) fn excerpt(body: &[u8]) -> String {
    const CHARS: usize = 200;
    let text = String::from_utf8_lossy(body);
    let mut excerpt: String = text.chars().take(CHARS).collect();
    if text.chars().nth(CHARS).is_some() {
        excerpt.push('…');
    }
    excerpt
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after(&with("30")), Some(Duration::from_secs(30)));
        assert_eq!(retry_after(&with(" 0 ")), Some(Duration::ZERO));
        assert_eq!(retry_after(&HeaderMap::new()), None);
        assert_eq!(retry_after(&with("soon")), None);
        assert_eq!(
            retry_after(&with("Sun, 06 Nov 1994 08:49:37 GMT")),
            Some(Duration::ZERO),
            "a date in the past: now"
        );
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        let wait = retry_after(&with(&later)).unwrap();
        assert!(
            (Duration::from_secs(118)..=Duration::from_secs(120)).contains(&wait),
            "{wait:?}"
        );
        assert_eq!(retry_after(&with("999999999")), Some(MAX_RETRY_AFTER));
    }
}
