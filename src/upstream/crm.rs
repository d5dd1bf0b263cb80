//! The CRM, over the Salesforce REST API: contacts, support cases, case comments.
//!
//! - Auth: the OAuth2 client-credentials grant at `{login_url}/services/oauth2/token`. The
//!   session (token and `instance_url`) is kept and shared; racing calls wait for one token
//!   fetch. Salesforce does not say when a token expires: an API call answers 401 instead, and
//!   the call is sent once more with a new token.
//! - Reads are SOQL (`IN` lists of at most 200 ids, literals quoted and escaped, the query
//!   URL-encoded), following `nextRecordsUrl` until `done`. A customer's cases are filtered
//!   (`IsClosed = false`) and bounded (`LIMIT`, the newest first) in the SOQL.
//! - Writes are sObject creates (`Case`, `CaseComment`).
//! - Every API answer carries `Sforce-Limit-Info: api-usage=USED/MAX`: the last figures are kept
//!   ([`CrmClient::api_usage`]) and a warning is logged past 90 % of the org's daily quota; past
//!   100 % Salesforce answers 403 `REQUEST_LIMIT_EXCEEDED`, which is `RateLimited`.
//! - Errors are arrays `[{"message","errorCode","fields"?}]`: a reference to a record that is gone
//!   is `NotFound`, a refusal a person can fix is `Rejected`, and anything that means our
//!   request was wrong (`MALFORMED_QUERY`, `INVALID_FIELD`, `REQUIRED_FIELD_MISSING`) is
//!   `Unavailable` with the CRM's answer in the detail.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::try_join_all;
use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use resolvers::ids::{CaseId, CustomerId, OrderId};
use resolvers::ports::Source;
use resolvers::ports::{Crm, UpstreamResult};
use resolvers::ports::{UpstreamError, UpstreamErrorKind};
use resolvers::records::{
    CaseCommentRecord, CasePriority, CaseQuery, CaseRecord, CaseStatus, ContactRecord, NewCase,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

use super::http::{Answer, UpstreamHttp, check_base_url, endpoint};
use crate::config::{CrmConfig, Secret};

/// Most ids in one SOQL `IN (...)` list: well inside Salesforce's URI and query length limits.
const MAX_IDS_PER_QUERY: usize = 200;
/// Share of the daily API quota (in percent) past which every new percent is logged as a
/// warning.
const USAGE_WARNING_PERCENT: u64 = 90;
/// How long a failed token fetch is answered from memory, so that calls queued behind it fail
/// at once instead of each waiting for its own timeout.
const TOKEN_FAILURE_MEMORY: Duration = Duration::from_secs(1);

/// The fields of a case we read; `Contact.Customer_Id__c` says whose case it is.
const CASE_FIELDS: &str = "Id, CaseNumber, Subject, Description, Status, Priority, Origin, \
                           Order_Id__c, CreatedDate, ClosedDate, Contact.Customer_Id__c";

/// Route templates, for logs.
const TOKEN_ROUTE: &str = "/services/oauth2/token";
const QUERY_ROUTE: &str = "/services/data/{version}/query";
const QUERY_MORE_ROUTE: &str = "/services/data/{version}/query/{locator}";
const CREATE_ROUTE: &str = "/services/data/{version}/sobjects/{sobject}";

/// The org's API usage, as the last `Sforce-Limit-Info` header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiUsage {
    /// API calls made in the current 24-hour window.
    pub used: u64,
    /// The org's daily quota.
    pub max: u64,
}

impl ApiUsage {
    /// Whole percent of the quota used (0 when the quota is 0).
    pub fn percent(&self) -> u64 {
        self.used
            .saturating_mul(100)
            .checked_div(self.max)
            .unwrap_or(0)
    }
}

/// A CRM session: where to call, and the token to call with.
struct Session {
    access_token: Secret,
    /// The org's API host, from the token answer.
    instance_url: Url,
}

/// The current session, or why the last fetch failed.
#[derive(Default)]
struct SessionSlot {
    current: Option<Arc<Session>>,
    /// The last failed fetch, answered to callers for [`TOKEN_FAILURE_MEMORY`].
    failed: Option<(Instant, UpstreamError)>,
}

/// The CRM's client.
pub struct CrmClient {
    pub(super) http: UpstreamHttp,
    /// Where tokens come from (`https://login.salesforce.com` or the org's My Domain).
    login_url: Url,
    client_id: String,
    client_secret: Secret,
    /// `v60.0`.
    api_version: String,
    /// A tokio mutex, held while a token is fetched: calls that race for a token wait for the
    /// one fetch in flight instead of fetching their own.
    session: tokio::sync::Mutex<SessionSlot>,
    /// The last `Sforce-Limit-Info` figures. A std mutex: touched for nanoseconds, never across
    /// an `.await`.
    usage: Mutex<Option<ApiUsage>>,
}

impl std::fmt::Debug for CrmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrmClient")
            .field("login_url", &self.login_url.as_str())
            .field("api_version", &self.api_version)
            .finish_non_exhaustive()
    }
}

impl CrmClient {
    /// A client for the CRM whose token endpoint is at `config.login_url`.
    pub fn new(config: &CrmConfig) -> anyhow::Result<Self> {
        check_base_url("upstreams.crm.login_url", &config.login_url)?;
        let version_ok = config
            .api_version
            .strip_prefix('v')
            .and_then(|v| v.split_once('.'))
            .is_some_and(|(major, minor)| {
                !major.is_empty()
                    && !minor.is_empty()
                    && major
                        .bytes()
                        .chain(minor.bytes())
                        .all(|b| b.is_ascii_digit())
            });
        if !version_ok {
            anyhow::bail!(
                "upstreams.crm.api_version must look like v60.0, got {:?}",
                config.api_version
            );
        }
        Ok(Self {
            http: UpstreamHttp::new(Source::Crm, &config.policy)?,
            login_url: config.login_url.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            api_version: config.api_version.clone(),
            session: tokio::sync::Mutex::new(SessionSlot::default()),
            usage: Mutex::new(None),
        })
    }

    /// The org's API usage as the last answer reported it; `None` before the first API call.
    pub fn api_usage(&self) -> Option<ApiUsage> {
        *self.usage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // ----- session ----------------------------------------------------------------------------

    /// The current session, fetching a token if there is none.
    async fn session(&self) -> UpstreamResult<Arc<Session>> {
        let mut slot = self.session.lock().await;
        if let Some(session) = &slot.current {
            return Ok(Arc::clone(session));
        }
        self.open_session(&mut slot).await
    }

    /// A session other than `stale` (which the CRM refused): the one another call already got,
    /// or a new one.
    async fn renew(&self, stale: &Arc<Session>) -> UpstreamResult<Arc<Session>> {
        let mut slot = self.session.lock().await;
        if let Some(current) = &slot.current
            && !Arc::ptr_eq(current, stale)
        {
            return Ok(Arc::clone(current));
        }
        slot.current = None;
        self.open_session(&mut slot).await
    }

    async fn open_session(&self, slot: &mut SessionSlot) -> UpstreamResult<Arc<Session>> {
        if let Some((at, error)) = &slot.failed
            && at.elapsed() < TOKEN_FAILURE_MEMORY
        {
            return Err(error.clone());
        }
        match self.fetch_token().await {
            Ok(session) => {
                let session = Arc::new(session);
                slot.current = Some(Arc::clone(&session));
                slot.failed = None;
                Ok(session)
            }
            Err(error) => {
                slot.failed = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    /// The client-credentials grant.
    async fn fetch_token(&self) -> UpstreamResult<Session> {
        let url = endpoint(&self.login_url, &["services", "oauth2", "token"]);
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
        ];
        let request = self
            .http
            .client()
            .post(url)
            .header(ACCEPT, "application/json")
            .form(&form);
        let answer = self.http.send(TOKEN_ROUTE, request).await?;
        if answer.status != StatusCode::OK {
            // `{"error":"invalid_client",...}`: our credentials or the connected app are wrong.
            return Err(answer.unexpected());
        }
        let answer = answer.redacted();
        let token: TokenJson = answer.json()?;
        let instance_url = Url::parse(&token.instance_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| answer.malformed("instance_url is not an http(s) URL"))?;
        if token.access_token.is_empty() {
            return Err(answer.malformed("access_token is empty"));
        }
        tracing::info!(upstream = "crm", instance = %instance_url, "CRM session opened");
        Ok(Session {
            access_token: Secret::new(token.access_token),
            instance_url,
        })
    }

    // ----- API calls --------------------------------------------------------------------------

    /// `{instance_url}/services/data/{version}/{segments...}`.
    fn data_url(&self, session: &Session, segments: &[&str]) -> Url {
        let mut all = vec!["services", "data", self.api_version.as_str()];
        all.extend_from_slice(segments);
        endpoint(&session.instance_url, &all)
    }

    /// An API call with the current session; on 401 once more with a new one. `build` makes
    /// the request for a session (without auth). Quota exhaustion is `RateLimited`; any other
    /// answer is the caller's to judge.
    async fn api(
        &self,
        route: &'static str,
        build: impl Fn(&Session) -> reqwest::RequestBuilder,
    ) -> UpstreamResult<Answer> {
        let session = self.session().await?;
        let mut answer = self.send_api(route, &session, &build).await?;
        if answer.status == StatusCode::UNAUTHORIZED {
            tracing::info!(
                upstream = "crm",
                route,
                "CRM session expired; getting a new token"
            );
            let session = self.renew(&session).await?;
            answer = self.send_api(route, &session, &build).await?;
            if answer.status == StatusCode::UNAUTHORIZED {
                return Err(answer.unexpected());
            }
        }
        if answer.status == StatusCode::FORBIDDEN
            && error_codes(&answer).any(|code| code == "REQUEST_LIMIT_EXCEEDED")
        {
            return Err(UpstreamError {
                source: Source::Crm,
                kind: UpstreamErrorKind::RateLimited {
                    detail: format!(
                        "the org's daily API quota is spent (api usage {:?})",
                        self.api_usage()
                    ),
                },
            });
        }
        Ok(answer)
    }

    async fn send_api(
        &self,
        route: &'static str,
        session: &Session,
        build: &impl Fn(&Session) -> reqwest::RequestBuilder,
    ) -> UpstreamResult<Answer> {
        let request = build(session)
            .bearer_auth(session.access_token.expose())
            .header(ACCEPT, "application/json");
        let answer = self.http.send(route, request).await?;
        self.note_usage(&answer);
        Ok(answer)
    }

    /// Keeps the `Sforce-Limit-Info` figures; warns past 90 %, once per new percent.
    fn note_usage(&self, answer: &Answer) {
        let Some(usage) = answer
            .header("sforce-limit-info")
            .and_then(parse_limit_info)
        else {
            return;
        };
        let previous = self
            .usage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(usage);
        let percent = usage.percent();
        let new_percent = previous.is_none_or(|p| p.percent() < percent);
        if percent >= USAGE_WARNING_PERCENT && usage.used > 0 && new_percent {
            tracing::warn!(
                upstream = "crm",
                used = usage.used,
                max = usage.max,
                percent,
                "the CRM's daily API quota is nearly spent"
            );
        }
    }

    /// Runs a SOQL query and follows `nextRecordsUrl` until `done`; `convert` turns each record
    /// into ours (`None` to leave it out).
    async fn query<W, R>(
        &self,
        soql: &str,
        convert: fn(W) -> Result<Option<R>, String>,
    ) -> UpstreamResult<Vec<R>>
    where
        W: DeserializeOwned,
    {
        let client = self.http.client();
        let mut answer = self
            .api(QUERY_ROUTE, |s| {
                client
                    .get(self.data_url(s, &["query"]))
                    .query(&[("q", soql)])
            })
            .await?;
        let mut records = Vec::new();
        loop {
            if answer.status != StatusCode::OK {
                return Err(refusal(&answer));
            }
            let page: QueryJson<W> = answer.json()?;
            for record in page.records {
                if let Some(record) = convert(record).map_err(|why| answer.malformed(why))? {
                    records.push(record);
                }
            }
            if page.done {
                return Ok(records);
            }
            let Some(next) = page.next_records_url else {
                return Err(answer.malformed("`done` is false but there is no nextRecordsUrl"));
            };
            let (path, query) = next_records_path(&next)
                .ok_or_else(|| answer.malformed("nextRecordsUrl is not a path of the API"))?;
            answer = self
                .api(QUERY_MORE_ROUTE, |s| {
                    let mut url = s.instance_url.clone();
                    url.set_path(path);
                    url.set_query(query);
                    client.get(url)
                })
                .await?;
        }
    }

    /// `soql_for(in_list)` for every 200 of `ids`, concurrently, results in order.
    async fn query_in<W, R>(
        &self,
        ids: &[&str],
        soql_for: impl Fn(&str) -> String,
        convert: fn(W) -> Result<Option<R>, String>,
    ) -> UpstreamResult<Vec<R>>
    where
        W: DeserializeOwned,
    {
        let ids = distinct(ids);
        let queries = ids
            .chunks(MAX_IDS_PER_QUERY)
            .map(|chunk| soql_for(&soql_in_list(chunk)))
            .collect::<Vec<_>>();
        let answers = try_join_all(queries.iter().map(|soql| self.query(soql, convert))).await?;
        Ok(answers.into_iter().flatten().collect())
    }

    /// The newest `query.per_customer` cases that `query` selects of each of `customers` (at
    /// most [`MAX_IDS_PER_QUERY`], distinct), newest first per customer.
    ///
    /// One query, filtered in the SOQL and bounded to `per_customer` times the customers,
    /// newest first. When the CRM had no more than that, the answer holds every case asked
    /// for. When it had more, the answer still holds every case newer than its oldest one, so
    /// a customer with `per_customer` cases in it has their newest; each customer with fewer
    /// is read again on their own (rare: one customer's many recent cases crowding the
    /// others out of the batch).
    async fn newest_cases(
        &self,
        customers: &[&str],
        query: &CaseQuery,
    ) -> UpstreamResult<Vec<CaseRecord>> {
        let per_customer = query.per_customer;
        if per_customer == 0 || customers.is_empty() {
            return Ok(Vec::new());
        }
        let limit = per_customer.saturating_mul(customers.len());
        let in_list = format!("IN {}", soql_in_list(customers));
        let cases = self
            .query(&cases_soql(&in_list, query.open_only, limit), case_record)
            .await?;
        let bounded = cases.len() >= limit;
        let mut by_customer: std::collections::HashMap<String, Vec<CaseRecord>> =
            std::collections::HashMap::new();
        for case in cases {
            by_customer
                .entry(case.customer_id.as_str().to_owned())
                .or_default()
                .push(case);
        }
        let short: Vec<&str> = if bounded {
            customers
                .iter()
                .copied()
                .filter(|c| by_customer.get(*c).map_or(0, Vec::len) < per_customer)
                .collect()
        } else {
            Vec::new()
        };
        let again = try_join_all(short.iter().map(|customer| {
            let one = format!("= {}", soql_literal(customer));
            async move {
                self.query(
                    &cases_soql(&one, query.open_only, per_customer),
                    case_record,
                )
                .await
            }
        }))
        .await?;
        for (customer, cases) in short.iter().zip(again) {
            by_customer.insert((*customer).to_owned(), cases);
        }
        Ok(customers
            .iter()
            .filter_map(|c| by_customer.remove(*c))
            .flat_map(|mut cases| {
                cases.truncate(per_customer);
                cases
            })
            .collect())
    }

    /// Creates an sObject; answers its id.
    async fn create(&self, sobject: &str, fields: &impl Serialize) -> UpstreamResult<String> {
        let client = self.http.client();
        let answer = self
            .api(CREATE_ROUTE, |s| {
                client
                    .post(self.data_url(s, &["sobjects", sobject]))
                    .json(fields)
            })
            .await?;
        if answer.status != StatusCode::CREATED && answer.status != StatusCode::OK {
            return Err(refusal(&answer));
        }
        let created: CreatedJson = answer.json()?;
        if !created.success || created.id.is_empty() {
            return Err(answer.malformed("the create did not succeed"));
        }
        Ok(created.id)
    }
}

#[async_trait::async_trait]
impl Crm for CrmClient {
    #[tracing::instrument(level = "debug", name = "batch", skip_all, fields(loader = "ContactLoader", keys = ids.len()))]
    async fn contacts_by_customer_ids(
        &self,
        ids: &[CustomerId],
    ) -> UpstreamResult<Vec<ContactRecord>> {
        let ids: Vec<&str> = ids.iter().map(CustomerId::as_str).collect();
        self.query_in(
            &ids,
            |list| format!("SELECT Id, Customer_Id__c FROM Contact WHERE Customer_Id__c IN {list}"),
            contact_record,
        )
        .await
    }

    #[tracing::instrument(level = "debug", name = "batch", skip_all, fields(loader = "CustomerCasesLoader", keys = ids.len()))]
    async fn cases_by_customer_ids(
        &self,
        ids: &[CustomerId],
        query: &CaseQuery,
    ) -> UpstreamResult<Vec<CaseRecord>> {
        let ids: Vec<&str> = ids.iter().map(CustomerId::as_str).collect();
        let ids = distinct(&ids);
        let chunks = try_join_all(
            ids.chunks(MAX_IDS_PER_QUERY)
                .map(|chunk| self.newest_cases(chunk, query)),
        )
        .await?;
        Ok(chunks.into_iter().flatten().collect())
    }

    #[tracing::instrument(level = "debug", name = "batch", skip_all, fields(loader = "CaseLoader", keys = ids.len()))]
    async fn cases_by_ids(&self, ids: &[CaseId]) -> UpstreamResult<Vec<CaseRecord>> {
        let ids: Vec<&str> = ids.iter().map(CaseId::as_str).collect();
        self.query_in(
            &ids,
            |list| format!("SELECT {CASE_FIELDS} FROM Case WHERE Id IN {list}"),
            case_record,
        )
        .await
    }

    #[tracing::instrument(level = "debug", name = "batch", skip_all, fields(loader = "CaseCommentsLoader", keys = ids.len()))]
    async fn comments_by_case_ids(&self, ids: &[CaseId]) -> UpstreamResult<Vec<CaseCommentRecord>> {
        let ids: Vec<&str> = ids.iter().map(CaseId::as_str).collect();
        let mut comments = self
            .query_in(
                &ids,
                |list| {
                    format!(
                        "SELECT Id, ParentId, CommentBody, IsPublished, CreatedDate \
                         FROM CaseComment WHERE ParentId IN {list} ORDER BY CreatedDate ASC"
                    )
                },
                comment_record,
            )
            .await?;
        // Oldest first across chunks too (stable: the CRM's order breaks ties).
        comments.sort_by_key(|c| c.created_at);
        Ok(comments)
    }

    async fn create_case(&self, case: &NewCase) -> UpstreamResult<CaseId> {
        let fields = NewCaseJson {
            subject: &case.subject,
            description: case.description.as_deref(),
            priority: priority_name(case.priority),
            origin: "App",
            status: "New",
            contact_id: &case.contact_id,
            order_id: case.order_id.as_ref().map(OrderId::as_str),
        };
        self.create("Case", &fields)
            .await
            .map(CaseId::from_upstream)
    }

    async fn add_comment(&self, case: &CaseId, body: &str) -> UpstreamResult<String> {
        let fields = NewCommentJson {
            parent_id: case.as_str(),
            comment_body: body,
            is_published: true,
        };
        self.create("CaseComment", &fields).await
    }
}

// ----- errors ---------------------------------------------------------------------------------

/// The `errorCode`s of a Salesforce error array (none if the body is not one).
fn error_codes(answer: &Answer) -> impl Iterator<Item = String> {
    serde_json::from_slice::<Vec<SalesforceErrorJson>>(&answer.body)
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.error_code)
}

/// What a failed API answer means.
fn refusal(answer: &Answer) -> UpstreamError {
    if answer.status == StatusCode::BAD_REQUEST {
        let errors: Vec<SalesforceErrorJson> =
            serde_json::from_slice(&answer.body).unwrap_or_default();
        let kind = errors.iter().find_map(|e| match e.error_code.as_str() {
            // A record we point at (the case of a comment, the contact of a case) is gone.
            "INVALID_CROSS_REFERENCE_KEY" | "ENTITY_IS_DELETED" => {
                Some(UpstreamErrorKind::NotFound)
            }
            "STRING_TOO_LONG" => Some(UpstreamErrorKind::Rejected {
                code: "TEXT_TOO_LONG",
                message: "a text is longer than the CRM accepts".to_owned(),
            }),
            // Validation rules: messages the org's admins wrote for the people who type.
            "FIELD_CUSTOM_VALIDATION_EXCEPTION" => Some(UpstreamErrorKind::Rejected {
                code: "CRM_VALIDATION_FAILED",
                message: e.message.clone(),
            }),
            _ => None,
        });
        if let Some(kind) = kind {
            return UpstreamError {
                source: Source::Crm,
                kind,
            };
        }
    }
    // MALFORMED_QUERY, INVALID_FIELD, REQUIRED_FIELD_MISSING, ...: our request was wrong.
    answer.unexpected()
}

// ----- SOQL -----------------------------------------------------------------------------------

/// A SOQL string literal: quoted, with `\` and `'` (and the other escapable characters)
/// escaped, so no value can end the literal.
fn soql_literal(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '\'' => quoted.push_str("\\'"),
            '"' => quoted.push_str("\\\""),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\u{8}' => quoted.push_str("\\b"),
            '\u{c}' => quoted.push_str("\\f"),
            c => quoted.push(c),
        }
    }
    quoted.push('\'');
    quoted
}

/// The cases whose contact's customer id matches `customers` (`IN (...)` or `= '...'`), only
/// those not closed when `open_only`, newest first, at most `limit`.
fn cases_soql(customers: &str, open_only: bool, limit: usize) -> String {
    let open = if open_only {
        " AND IsClosed = false"
    } else {
        ""
    };
    format!(
        "SELECT {CASE_FIELDS} FROM Case WHERE Contact.Customer_Id__c {customers}{open} \
         ORDER BY CreatedDate DESC, Id DESC LIMIT {limit}"
    )
}

/// `('a', 'b')`.
fn soql_in_list(values: &[&str]) -> String {
    let literals: Vec<String> = values.iter().map(|v| soql_literal(v)).collect();
    format!("({})", literals.join(", "))
}

/// Ids without repeats, in their first order.
fn distinct<'a>(ids: &[&'a str]) -> Vec<&'a str> {
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

/// The path and query of a `nextRecordsUrl`, if it is a path of the data API (so the token is
/// only ever sent to the instance it belongs to).
fn next_records_path(next: &str) -> Option<(&str, Option<&str>)> {
    let (path, query) = match next.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (next, None),
    };
    let ok = path.starts_with("/services/data/")
        && !path.contains("..")
        && !path.contains('#')
        && !path.contains("//");
    ok.then_some((path, query))
}

/// The `api-usage=USED/MAX` part of `Sforce-Limit-Info`.
fn parse_limit_info(header: &str) -> Option<ApiUsage> {
    let usage = header
        .split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("api-usage="))?;
    let (used, max) = usage.split_once('/')?;
    Some(ApiUsage {
        used: used.trim().parse().ok()?,
        max: max.trim().parse().ok()?,
    })
}

/// A Salesforce date-time, `2024-05-01T10:00:00.000+0000` (RFC 3339 accepted too).
fn parse_datetime(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("`{text}` is not a Salesforce date-time"))
}

fn case_status(text: &str) -> Result<CaseStatus, String> {
    match text {
        "New" => Ok(CaseStatus::New),
        "Working" => Ok(CaseStatus::Working),
        "Escalated" => Ok(CaseStatus::Escalated),
        "Closed" => Ok(CaseStatus::Closed),
        other => Err(format!("unknown case Status `{other}`")),
    }
}

fn case_priority(text: &str) -> Result<CasePriority, String> {
    match text {
        "Low" => Ok(CasePriority::Low),
        "Medium" => Ok(CasePriority::Medium),
        "High" => Ok(CasePriority::High),
        other => Err(format!("unknown case Priority `{other}`")),
    }
}

fn priority_name(priority: CasePriority) -> &'static str {
    match priority {
        CasePriority::Low => "Low",
        CasePriority::Medium => "Medium",
        CasePriority::High => "High",
    }
}

// ----- wire types (Salesforce's JSON) ---------------------------------------------------------

#[derive(Deserialize)]
struct TokenJson {
    access_token: String,
    instance_url: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SalesforceErrorJson {
    #[serde(default)]
    message: String,
    error_code: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryJson<T> {
    done: bool,
    next_records_url: Option<String>,
    records: Vec<T>,
}

#[derive(Deserialize)]
struct CreatedJson {
    id: String,
    success: bool,
}

#[derive(Deserialize)]
struct ContactJson {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Customer_Id__c")]
    customer_id: Option<String>,
}

#[derive(Deserialize)]
struct CaseJson {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "CaseNumber")]
    case_number: String,
    #[serde(rename = "Subject")]
    subject: Option<String>,
    #[serde(rename = "Description")]
    description: Option<String>,
    #[serde(rename = "Status")]
    status: String,
    #[serde(rename = "Priority")]
    priority: String,
    #[serde(rename = "Origin")]
    origin: Option<String>,
    #[serde(rename = "Order_Id__c")]
    order_id: Option<String>,
    #[serde(rename = "CreatedDate")]
    created_date: String,
    #[serde(rename = "ClosedDate")]
    closed_date: Option<String>,
    /// The parent contact, nested (`{"attributes":..,"Customer_Id__c":".."}`); null without one.
    #[serde(rename = "Contact")]
    contact: Option<ContactRefJson>,
}

#[derive(Deserialize)]
struct ContactRefJson {
    #[serde(rename = "Customer_Id__c")]
    customer_id: Option<String>,
}

#[derive(Deserialize)]
struct CommentJson {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "ParentId")]
    parent_id: String,
    #[serde(rename = "CommentBody")]
    comment_body: Option<String>,
    #[serde(rename = "IsPublished")]
    is_published: bool,
    #[serde(rename = "CreatedDate")]
    created_date: String,
}

#[derive(Serialize)]
struct NewCaseJson<'a> {
    #[serde(rename = "Subject")]
    subject: &'a str,
    #[serde(rename = "Description", skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(rename = "Priority")]
    priority: &'static str,
    #[serde(rename = "Origin")]
    origin: &'static str,
    #[serde(rename = "Status")]
    status: &'static str,
    #[serde(rename = "ContactId")]
    contact_id: &'a str,
    #[serde(rename = "Order_Id__c", skip_serializing_if = "Option::is_none")]
    order_id: Option<&'a str>,
}

#[derive(Serialize)]
struct NewCommentJson<'a> {
    #[serde(rename = "ParentId")]
    parent_id: &'a str,
    #[serde(rename = "CommentBody")]
    comment_body: &'a str,
    #[serde(rename = "IsPublished")]
    is_published: bool,
}

fn contact_record(c: ContactJson) -> Result<Option<ContactRecord>, String> {
    let customer_id = c
        .customer_id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| format!("contact {} has no Customer_Id__c", c.id))?;
    Ok(Some(ContactRecord {
        id: c.id,
        customer_id: CustomerId::from_upstream(customer_id),
    }))
}

fn case_record(c: CaseJson) -> Result<Option<CaseRecord>, String> {
    let Some(customer_id) = c
        .contact
        .and_then(|contact| contact.customer_id)
        .filter(|id| !id.is_empty())
    else {
        // The graph shows cases to the customer they belong to; one without is nobody's.
        tracing::warn!(upstream = "crm", case = %c.id, "case without a contact customer id left out");
        return Ok(None);
    };
    let in_case = |e: String| format!("case {}: {e}", c.id);
    Ok(Some(CaseRecord {
        case_number: c.case_number,
        subject: c.subject.unwrap_or_default(),
        description: c.description,
        status: case_status(&c.status).map_err(in_case)?,
        priority: case_priority(&c.priority).map_err(in_case)?,
        origin: c.origin,
        customer_id: CustomerId::from_upstream(customer_id),
        order_id: c
            .order_id
            .filter(|id| !id.is_empty())
            .map(OrderId::from_upstream),
        created_at: parse_datetime(&c.created_date).map_err(in_case)?,
        closed_at: c
            .closed_date
            .as_deref()
            .map(parse_datetime)
            .transpose()
            .map_err(in_case)?,
        id: CaseId::from_upstream(c.id),
    }))
}

fn comment_record(c: CommentJson) -> Result<Option<CaseCommentRecord>, String> {
    Ok(Some(CaseCommentRecord {
        created_at: parse_datetime(&c.created_date)
            .map_err(|e| format!("comment {}: {e}", c.id))?,
        id: c.id,
        case_id: CaseId::from_upstream(c.parent_id),
        body: c.comment_body.unwrap_or_default(),
        is_published: c.is_published,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_cannot_escape_their_quotes() {
        assert_eq!(soql_literal("cust-0001"), "'cust-0001'");
        assert_eq!(soql_literal("a'b"), r"'a\'b'");
        assert_eq!(soql_literal(r"a\'b"), r"'a\\\'b'");
        assert_eq!(soql_literal("x\ny"), r"'x\ny'");
        assert_eq!(soql_in_list(&["a", "b"]), "('a', 'b')");
    }

    #[test]
    fn salesforce_datetimes_parse() {
        let expected = DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_datetime("2024-05-01T10:00:00.000+0000").unwrap(),
            expected
        );
        assert_eq!(
            parse_datetime("2024-05-01T12:00:00.000+0200").unwrap(),
            expected
        );
        assert_eq!(parse_datetime("2024-05-01T10:00:00Z").unwrap(), expected);
        assert!(parse_datetime("yesterday").is_err());
    }

    #[test]
    fn limit_info_is_read_from_the_header() {
        assert_eq!(
            parse_limit_info("api-usage=18/15000"),
            Some(ApiUsage {
                used: 18,
                max: 15000
            })
        );
        assert_eq!(
            parse_limit_info("per-app-api-usage=17/250(appName=x), api-usage=9/10")
                .map(|u| u.percent()),
            Some(90)
        );
        assert_eq!(parse_limit_info("api-usage=lots"), None);
    }

    #[test]
    fn next_records_urls_must_stay_on_the_data_api() {
        assert_eq!(
            next_records_path("/services/data/v60.0/query/01gx-2000"),
            Some(("/services/data/v60.0/query/01gx-2000", None))
        );
        assert_eq!(
            next_records_path("https://evil.example/services/data/x"),
            None
        );
        assert_eq!(next_records_path("//evil.example/services/data/x"), None);
        assert_eq!(next_records_path("/services/data/../../x"), None);
    }

    #[test]
    fn cases_read_their_customer_from_the_nested_contact() {
        let json = serde_json::json!({
            "attributes": {"type": "Case", "url": "/services/data/v60.0/sobjects/Case/500"},
            "Id": "500000000000001AAA", "CaseNumber": "00001001", "Subject": "Where is my parcel?",
            "Description": null, "Status": "Working", "Priority": "High", "Origin": "App",
            "Order_Id__c": "ord-012601", "CreatedDate": "2025-12-20T09:15:00.000+0000",
            "ClosedDate": null,
            "Contact": {"attributes": {"type": "Contact", "url": ".."}, "Customer_Id__c": "cust-0001"}
        });
        let case = case_record(serde_json::from_value(json.clone()).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(case.customer_id.as_str(), "cust-0001");
        assert_eq!(case.status, CaseStatus::Working);
        assert_eq!(case.order_id.unwrap().as_str(), "ord-012601");

        let mut unknown = json;
        unknown["Status"] = "Pending".into();
        assert!(case_record(serde_json::from_value(unknown).unwrap()).is_err());
    }
}
