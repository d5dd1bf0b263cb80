//! The one HTTP call path every adapter shares.
//!
//! An [`UpstreamHttp`] is one upstream's `reqwest::Client` (its timeout, a connect timeout, the
//! `user-agent`), its concurrency budget, and its retry rule. [`UpstreamHttp::send`] sends one
//! request: it holds a permit of the budget for each attempt, goes through the upstream's
//! circuit breaker (`breaker`), retries reads (`GET`) that timed out, could not connect or
//! got a 5xx (within the retry budget), logs and measures every attempt, and hands any other answer to the
//! adapter as an [`Answer`]. Everything an adapter cannot use (transport failures, 5xx, bodies
//! that do not parse) becomes `UpstreamErrorKind::Unavailable` here, with a detail for the logs
//! that names the method, the path (never the query string, which may hold search terms or
//! user ids), the status and the start of the body. Credentials never reach a detail: they
//! travel in headers and form bodies, which are never logged.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode};
use resolvers::deadline;
use resolvers::ports::Source;
use resolvers::ports::UpstreamError;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use url::Url;

use super::breaker::Breaker;
use super::flights::{Flight, Flights, flight_key};
use crate::config::CallPolicy;

/// `user-agent` of every upstream call.
const USER_AGENT: &str = concat!("switchyard/", env!("CARGO_PKG_VERSION"));
/// Longest wait for a TCP (and TLS) connection, within the call's own timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Wait before the first retry; doubles for each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Most characters of an answer's body quoted in an error detail.
const BODY_EXCERPT_CHARS: usize = 200;
/// Time kept back from the request's deadline for answering with what the other calls got.
const ANSWER_RESERVE: Duration = Duration::from_millis(200);
/// Shortest try worth making: with less time left before the deadline, a call gives up.
const MIN_TRY: Duration = Duration::from_millis(20);
/// The deadline of calls made outside any request (ingest, notifications): their own
/// timeouts and the queue timeout bound them.
const NO_REQUEST_DEADLINE: Duration = Duration::from_secs(3600);

/// How one upstream is called: client, concurrency budget, retries.
#[derive(Debug)]
pub(crate) struct UpstreamHttp {
    /// Which upstream, for errors and logs.
    source: Source,
    /// One client per upstream: its own connection pool and its own timeouts.
    client: reqwest::Client,
    /// Most calls in flight to this upstream at once, across every request of every user. A
    /// tokio semaphore because a permit is held across the whole call.
    budget: Semaphore,
    /// Longest a call waits for a permit of the budget.
    queue_timeout: Duration,
    /// Longest one try may take.
    timeout: Duration,
    /// Reads in flight, shared by identical callers.
    flights: Flights<Result<Answer, UpstreamError>>,
    /// Extra tries of a failed `GET`.
    retries: u32,
    /// The circuit breaker and retry budget of this upstream (see `breaker`).
    breaker: Arc<Breaker>,
}

/// An answer the upstream gave: any status but a 5xx.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
    /// `METHOD /path` of the call, for details.
    call: String,
    source: Source,
    /// Leave the body out of details: it may hold a credential (a token answer).
    redact_body: bool,
}

impl UpstreamHttp {
    /// The call path of `source` with `policy`'s timeout, retries and concurrency.
    pub(crate) fn new(source: Source, policy: &CallPolicy) -> anyhow::Result<Self> {
        if policy.timeout.is_zero() {
            anyhow::bail!("upstreams.{source}.policy.timeout_ms must be more than 0");
        }
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(policy.timeout)
            .connect_timeout(policy.timeout.min(CONNECT_TIMEOUT))
            .pool_max_idle_per_host(policy.concurrency.max(1))
            .build()
            .map_err(|e| anyhow::anyhow!("building the HTTP client of {source}: {e}"))?;
        Ok(Self {
            source,
            client,
            budget: Semaphore::new(policy.concurrency.max(1)),
            queue_timeout: policy.queue_timeout,
            timeout: policy.timeout,
            flights: Flights::default(),
            retries: policy.retries,
            breaker: Arc::new(Breaker::new(source, policy)),
        })
    }

    /// The breaker, for readiness.
    pub(crate) fn breaker(&self) -> Arc<Breaker> {
        self.breaker.clone()
    }

    /// The client, to build requests with.
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// An `Unavailable` error of this upstream.
    pub(crate) fn unavailable(&self, detail: impl Into<String>) -> UpstreamError {
        UpstreamError::unavailable(self.source, detail)
    }

    /// Sends `request` and reads the whole answer.
    ///
    /// `route` is the route template (`/customers/{id}/orders`), for logs. A `GET` that times
    /// out, cannot connect or gets a 5xx is tried again after a short backoff, up to the
    /// policy's retries; other methods are sent once. A 5xx or a transport failure that is not
    /// retried any more is `Unavailable`; any other status is the adapter's to judge.
    ///
    /// Identical `GET`s in flight at once are sent once (`flights`): every caller gets the
    /// one answer.
    pub(crate) async fn send(
        &self,
        route: &'static str,
        request: RequestBuilder,
    ) -> Result<Answer, UpstreamError> {
        let request = request.build().map_err(|e| {
            self.unavailable(format!(
                "building a request for {route}: {}",
                e.without_url()
            ))
        })?;
        let deadline = deadline::current()
            .map(|d| d.checked_sub(ANSWER_RESERVE).unwrap_or(d))
            .unwrap_or_else(|| Instant::now() + NO_REQUEST_DEADLINE);
        if request.method() != Method::GET {
            return self.call(route, request, deadline).await;
        }
        let key = flight_key(&request);
        loop {
            match self.flights.join(&key) {
                Flight::Lead(landing) => {
                    let landed = self.call(route, request, deadline).await;
                    landing.land(&landed);
                    return landed;
                }
                Flight::Follow(mut landed) => {
                    let waited = tokio::time::timeout_at(
                        deadline,
                        landed.wait_for(|answer| answer.is_some()),
                    )
                    .await;
                    match waited {
                        Ok(Ok(answer)) => {
                            metrics::counter!(
                                "switchyard_upstream_deduplicated_total",
                                "source" => self.source.as_str()
                            )
                            .increment(1);
                            if let Some(answer) = answer.as_ref() {
                                return answer.clone();
                            }
                        }
                        // The caller that sent it went away before the answer: try again
                        // (one of the callers still waiting sends it).
                        Ok(Err(_)) => continue,
                        Err(_) => return Err(self.refused(Refusal::Deadline, route)),
                    }
                }
            }
        }
    }

    /// `NotSent`, because of `why`.
    fn refused(&self, why: Refusal, route: &'static str) -> UpstreamError {
        let (reason, detail) = match why {
            Refusal::Breaker => (
                "breaker",
                "the circuit breaker is open after repeated failures",
            ),
            Refusal::Queue => (
                "queue",
                "no room in its concurrency budget within queue_timeout_ms",
            ),
            Refusal::Deadline => ("deadline", "the request's deadline leaves no time for it"),
        };
        metrics::counter!(
            "switchyard_upstream_refused_total",
            "source" => self.source.as_str(),
            "reason" => reason,
        )
        .increment(1);
        UpstreamError::not_sent(self.source, format!("{route}: not sent: {detail}"))
    }

    /// Sends `request` (retrying reads) before `deadline`.
    async fn call(
        &self,
        route: &'static str,
        request: reqwest::Request,
        deadline: Instant,
    ) -> Result<Answer, UpstreamError> {
        let method = request.method().clone();
        let call = format!("{method} {}", request.url().path());
        let retries = if method == Method::GET {
            self.retries
        } else {
            0
        };
        let mut attempt = 0;
        self.breaker.first_try();
        loop {
            // A deadline, not a queue: wait for a permit only as long as the request (and
            // the upstream's queue timeout) allows.
            let queue_until = deadline.min(Instant::now() + self.queue_timeout);
            let permit = match tokio::time::timeout_at(queue_until, self.budget.acquire()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => {
                    return Err(
                        self.unavailable(format!("{call}: the concurrency budget is closed"))
                    );
                }
                Err(_) if queue_until < deadline => return Err(self.refused(Refusal::Queue, route)),
                Err(_) => return Err(self.refused(Refusal::Deadline, route)),
            };
            if !self.breaker.admit() {
                return Err(self.refused(Refusal::Breaker, route));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left < MIN_TRY {
                return Err(self.refused(Refusal::Deadline, route));
            }
            let Some(mut this_try) = request.try_clone() else {
                return Err(self.unavailable(format!("{call}: the request cannot be repeated")));
            };
            *this_try.timeout_mut() = Some(self.timeout.min(left));
            let failure = match self.attempt(route, &call, attempt, this_try).await {
                Ok(answer) if !answer.status.is_server_error() => {
                    self.breaker.record(true);
                    return Ok(answer);
                }
                Ok(answer) => Failure {
                    detail: answer.describe(&answer.status.to_string()),
                    retryable: true,
                },
                Err(failure) => failure,
            };
            self.breaker.record(false);
            drop(permit);
            let backoff = FIRST_BACKOFF * 2u32.saturating_pow(attempt);
            let time_for_another = Instant::now() + backoff + MIN_TRY < deadline;
            if !failure.retryable
                || attempt >= retries
                || !time_for_another
                || !self.breaker.take_retry()
            {
                let tries = attempt + 1;
                let suffix = if tries > 1 {
                    format!(" (after {tries} tries)")
                } else {
                    String::new()
                };
                return Err(self.unavailable(format!("{}{suffix}", failure.detail)));
            }
            tokio::time::sleep(backoff).await;
            attempt += 1;
        }
    }

    /// One try: sends, reads the body, logs.
    async fn attempt(
        &self,
        route: &'static str,
        call: &str,
        attempt: u32,
        mut request: reqwest::Request,
    ) -> Result<Answer, Failure> {
        let method = request.method().clone();
        // This try's span; its trace context goes to the upstream in `traceparent`.
        let span = crate::telemetry::upstream_call(
            self.source.as_str(),
            &method,
            route,
            request.headers_mut(),
        );
        let started = Instant::now();
        let outcome = match self.client.execute(request).await {
            Ok(response) => {
                let status = response.status();
                let headers = response.headers().clone();
                response
                    .bytes()
                    .await
                    .map(|body| (status, headers, body.to_vec()))
                    .map_err(|e| (Some(status), e))
            }
            Err(e) => Err((None, e)),
        };
        let elapsed = started.elapsed();
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let upstream = self.source.as_str();
        let status_label = match &outcome {
            Ok((status, _, _)) => status.as_str().to_owned(),
            Err((_, e)) if e.is_timeout() => "timeout".to_owned(),
            Err((_, e)) if e.is_connect() => "connect".to_owned(),
            Err(_) => "failed".to_owned(),
        };
        crate::telemetry::finish_upstream_call(&span, &status_label);
        metrics::histogram!(
            "switchyard_upstream_request_duration_seconds",
            "source" => upstream,
            "status" => status_label,
        )
        .record(elapsed.as_secs_f64());
        match outcome {
            Ok((status, headers, body)) => {
                let status_code = status.as_u16();
                if status.is_server_error() {
                    tracing::warn!(
                        upstream, %method, route, status = status_code, elapsed_ms, attempt,
                        "upstream call failed"
                    );
                } else {
                    tracing::debug!(
                        upstream, %method, route, status = status_code, elapsed_ms, attempt,
                        "upstream call"
                    );
                }
                Ok(Answer {
                    status,
                    headers,
                    body,
                    call: call.to_owned(),
                    source: self.source,
                    redact_body: false,
                })
            }
            Err((status, error)) => {
                let retryable = error.is_timeout() || error.is_connect();
                let what = if error.is_timeout() {
                    "timed out"
                } else if error.is_connect() {
                    "could not connect"
                } else {
                    "failed"
                };
                let status_text = status
                    .map(|s| format!(" reading the body of a {s} answer"))
                    .unwrap_or_default();
                let detail = format!(
                    "{call}: {what}{status_text} after {elapsed_ms} ms: {}",
                    error_chain(&error)
                );
                let status_code = status.map(|s| s.as_u16());
                tracing::warn!(
                    upstream, %method, route, status = status_code, elapsed_ms, attempt, %detail,
                    "upstream call failed"
                );
                Err(Failure { detail, retryable })
            }
        }
    }
}

/// Why a call was not sent (the `reason` of `switchyard_upstream_refused_total`).
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// The upstream's circuit breaker is open.
    Breaker,
    /// No room in the concurrency budget within `queue_timeout_ms`.
    Queue,
    /// No time left before the request's deadline.
    Deadline,
}

/// Why one try failed, and whether trying again may help.
struct Failure {
    detail: String,
    retryable: bool,
}

impl Answer {
    /// Keeps the body out of every detail this answer makes (for answers holding credentials).
    pub(crate) fn redacted(mut self) -> Self {
        self.redact_body = true;
        self
    }

    /// The body as `T`; a body that does not parse is `Unavailable`.
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, UpstreamError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| self.malformed(format!("the body does not parse: {e}")))
    }

    /// `Unavailable`: the body parsed but makes no sense (`why`).
    pub(crate) fn malformed(&self, why: impl std::fmt::Display) -> UpstreamError {
        UpstreamError::unavailable(
            self.source,
            self.describe(&format!("{}: malformed answer: {why}", self.status)),
        )
    }

    /// `Unavailable`: a status the contract does not foresee here.
    pub(crate) fn unexpected(&self) -> UpstreamError {
        UpstreamError::unavailable(
            self.source,
            self.describe(&format!("unexpected {}", self.status)),
        )
    }

    /// A header as text, if present and readable.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `METHOD /path: <what>: <body excerpt>`.
    fn describe(&self, what: &str) -> String {
        let mut detail = format!("{}: {what}", self.call);
        if self.redact_body {
            detail.push_str(" (body withheld)");
        } else if !self.body.is_empty() {
            let text = String::from_utf8_lossy(&self.body);
            let mut excerpt: String = text.chars().take(BODY_EXCERPT_CHARS).collect();
            if text.chars().nth(BODY_EXCERPT_CHARS).is_some() {
                excerpt.push('…');
            }
            let _ = write!(detail, ": {excerpt}");
        }
        detail
    }
}

/// A reqwest error and its causes, without the URL (its query string may hold user data).
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(error);
    while let Some(e) = cause {
        if !text.is_empty() {
            text.push_str(": ");
        }
        let _ = write!(text, "{e}");
        cause = e.source();
    }
    if text.is_empty() {
        text = if error.is_timeout() {
            "operation timed out".to_owned()
        } else {
            "request error".to_owned()
        };
    }
    text
}

/// `base` with `segments` appended as path segments, each percent-encoded (so an id can never
/// leave its segment). A trailing slash of `base` is ignored.
pub(crate) fn endpoint(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// Checks that an upstream's base URL (config key `key`) can carry paths: `http(s)`, a host.
pub(crate) fn check_base_url(key: &str, url: &Url) -> anyhow::Result<()> {
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() || url.host().is_none() {
        anyhow::bail!("{key} must be an http(s) URL with a host, got {url}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_encode_each_segment_and_keep_the_base_path() {
        let base = Url::parse("https://backend.internal/api/").unwrap();
        assert_eq!(
            endpoint(&base, &["customers", "a/b c", "orders"]).as_str(),
            "https://backend.internal/api/customers/a%2Fb%20c/orders"
        );
        let bare = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            endpoint(&bare, &["v1", "trackings", "PC1"]).as_str(),
            "http://127.0.0.1:8080/v1/trackings/PC1"
        );
    }

    #[test]
    fn details_quote_a_short_excerpt_and_can_withhold_the_body() {
        let answer = Answer {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: "x".repeat(500).into_bytes(),
            call: "GET /customers".to_owned(),
            source: Source::Backend,
            redact_body: false,
        };
        let detail = answer.describe("200 OK");
        assert!(detail.starts_with("GET /customers: 200 OK: xxx"));
        assert_eq!(
            detail.chars().count(),
            "GET /customers: 200 OK: ".len() + 200 + 1
        );
        assert_eq!(
            answer.redacted().describe("200 OK"),
            "GET /customers: 200 OK (body withheld)"
        );
    }
}
