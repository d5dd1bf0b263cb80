//! The CRM, shaped like the Salesforce REST API (v60.0).
//!
//! - `POST /services/oauth2/token`: the client-credentials grant; tokens live
//!   `crm_token_ttl_secs`, then every API call answers 401 `INVALID_SESSION_ID`.
//! - Under `/services/data/{version}/` (any `vNN.N`): SOQL `query` with `nextRecordsUrl` paging,
//!   `composite/sobjects/{Type}` batch retrieve, `sobjects/{Type}` create (Case, CaseComment) and
//!   `sobjects/{Type}/{id}` retrieve. Every answer there carries `Sforce-Limit-Info`, and the
//!   org's daily quota (`crm_daily_api_limit`) ends in 403 `REQUEST_LIMIT_EXCEEDED`.
//!
//! Errors are Salesforce's array `[{"message","errorCode","fields"?}]`; date-times are
//! `2024-05-01T10:00:00.000+0000`. Query cursors live 15 minutes after their last use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_lc_rs::hmac;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::SandboxConfig;
use super::soql::{self, BoundQuery, FieldDef, FieldRef, FieldType, SObjectType};
use super::world::{
    CASE_ORIGINS, CASE_PRIORITIES, CaseStatus, CrmWriteError, NewCase, SharedWorld, World,
    integration_user_id, normalize_salesforce_id, salesforce_id,
};

/// Most ids one composite retrieve takes, as in Salesforce.
const MAX_COMPOSITE_IDS: usize = 2000;
/// How long an unused query cursor lives, as in Salesforce.
const CURSOR_IDLE: Duration = Duration::from_secs(15 * 60);
/// Most open query cursors; the least recently used one goes first.
const MAX_CURSORS: usize = 1000;
/// The org id in identity URLs.
const ORG_ID: &str = "00D000000000001AAA";

/// A CRM user's session.
struct Session {
    issued: Instant,
}

/// API calls made today, against the daily quota.
struct ApiUsage {
    day: NaiveDate,
    used: u64,
}

/// The rest of a query's result, for `nextRecordsUrl`.
struct Cursor {
    records: Arc<Vec<Value>>,
    last_used: Instant,
}

struct CrmState {
    world: SharedWorld,
    /// The CRM's base URL, handed out as `instance_url`.
    instance_url: String,
    client_id: String,
    client_secret: String,
    token_ttl: Duration,
    batch_size: usize,
    daily_limit: u64,
    // Plain mutexes: each is touched for microseconds and never across an `.await`.
    sessions: Mutex<HashMap<String, Session>>,
    usage: Mutex<ApiUsage>,
    cursors: Mutex<HashMap<String, Cursor>>,
    next_cursor_no: Mutex<u64>,
}

/// The CRM's routes.
pub(crate) fn router(world: SharedWorld, config: &SandboxConfig, instance_url: &str) -> Router {
    let state = Arc::new(CrmState {
        world,
        instance_url: instance_url.to_owned(),
        client_id: config.crm_client_id.clone(),
        client_secret: config.crm_client_secret.clone(),
        token_ttl: Duration::from_secs(config.crm_token_ttl_secs),
        batch_size: config.crm_batch_size,
        daily_limit: config.crm_daily_api_limit,
        sessions: Mutex::new(HashMap::new()),
        usage: Mutex::new(ApiUsage {
            day: Utc::now().date_naive(),
            used: 0,
        }),
        cursors: Mutex::new(HashMap::new()),
        next_cursor_no: Mutex::new(1),
    });
    let api = Router::new()
        .route("/services/data/{version}/query", get(query))
        .route("/services/data/{version}/query/{locator}", get(query_more))
        .route(
            "/services/data/{version}/composite/sobjects/{sobject}",
            get(composite_retrieve),
        )
        .route("/services/data/{version}/sobjects/{sobject}", post(create))
        .route(
            "/services/data/{version}/sobjects/{sobject}/{id}",
            get(retrieve),
        )
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), api_gate));
    Router::new()
        .route("/services/oauth2/token", post(token))
        .merge(api)
        .fallback(|| async { resource_not_found().into_response() })
        .with_state(state)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A Salesforce error answer: `[{"message","errorCode","fields"?}]` with its status.
#[derive(Debug)]
struct SfError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// The fields the error is about; left out of the answer when empty.
    fields: Vec<&'static str>,
}

impl IntoResponse for SfError {
    fn into_response(self) -> Response {
        let mut error = json!({"message": self.message, "errorCode": self.code});
        if !self.fields.is_empty() {
            error["fields"] = json!(self.fields);
        }
        (self.status, Json(json!([error]))).into_response()
    }
}

type SfResult = Result<Response, SfError>;

fn sf_error(
    status: StatusCode,
    code: &'static str,
    message: impl Into<String>,
    fields: &[&'static str],
) -> SfError {
    SfError {
        status,
        code,
        message: message.into(),
        fields: fields.to_vec(),
    }
}

fn bad_request(code: &'static str, message: impl Into<String>) -> SfError {
    sf_error(StatusCode::BAD_REQUEST, code, message, &[])
}

fn resource_not_found() -> SfError {
    sf_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "The requested resource does not exist",
        &[],
    )
}

/// Salesforce's date-time format, `2024-05-01T10:00:00.000+0000`.
fn sf_datetime(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// An API version segment, `vNN.N`.
fn valid_version(version: &str) -> bool {
    version
        .strip_prefix('v')
        .and_then(|number| number.split_once('.'))
        .is_some_and(|(major, minor)| {
            !major.is_empty()
                && minor.len() == 1
                && major
                    .bytes()
                    .chain(minor.bytes())
                    .all(|b| b.is_ascii_digit())
        })
}

// ----- OAuth ----------------------------------------------------------------------------------

fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// `POST /services/oauth2/token` with a form body: the client-credentials grant.
async fn token(State(state): State<Arc<CrmState>>, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(_) => return oauth_error("unsupported_grant_type", "grant type not supported"),
        None => return oauth_error("invalid_request", "grant_type is required"),
    }
    let credentials_match = form.get("client_id") == Some(&state.client_id)
        && form.get("client_secret") == Some(&state.client_secret);
    if !credentials_match {
        return oauth_error("invalid_client", "invalid client credentials");
    }

    let mut random = [0u8; 32];
    if aws_lc_rs::rand::fill(&mut random).is_err() {
        return sf_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN_EXCEPTION",
            "could not generate a token",
            &[],
        )
        .into_response();
    }
    let access_token = format!("{}!{}", &ORG_ID[..15], URL_SAFE_NO_PAD.encode(random));
    let now = Instant::now();
    {
        let mut sessions = lock(&state.sessions);
        // Forget sessions that can no longer be used, so the map does not grow forever.
        sessions.retain(|_, session| now.duration_since(session.issued) < state.token_ttl);
        sessions.insert(access_token.clone(), Session { issued: now });
    }
    let issued_at = Utc::now().timestamp_millis().to_string();
    let id = format!(
        "{}/id/{ORG_ID}/{}",
        state.instance_url,
        integration_user_id()
    );
    // As Salesforce: HMAC-SHA256 of id + issued_at with the client secret, base64.
    let key = hmac::Key::new(hmac::HMAC_SHA256, state.client_secret.as_bytes());
    let signature = STANDARD.encode(hmac::sign(&key, format!("{id}{issued_at}").as_bytes()));
    Json(json!({
        "access_token": access_token,
        "instance_url": state.instance_url,
        "id": id,
        "token_type": "Bearer",
        "issued_at": issued_at,
        "signature": signature,
    }))
    .into_response()
}

/// In front of every API call: a live session, then the daily quota; the answer gets
/// `Sforce-Limit-Info`.
async fn api_gate(State(state): State<Arc<CrmState>>, request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("OAuth "))
        });
    let live = token.is_some_and(|token| {
        lock(&state.sessions)
            .get(token)
            .is_some_and(|session| session.issued.elapsed() < state.token_ttl)
    });

    let (mut response, used) = if !live {
        let response = sf_error(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
            &[],
        )
        .into_response();
        (response, current_usage(&state))
    } else {
        match take_api_call(&state) {
            Err(used) => {
                let response = sf_error(
                    StatusCode::FORBIDDEN,
                    "REQUEST_LIMIT_EXCEEDED",
                    "TotalRequests Limit exceeded.",
                    &[],
                )
                .into_response();
                (response, used)
            }
            Ok(used) => (next.run(request).await, used),
        }
    };
    let info = format!("api-usage={used}/{}", state.daily_limit);
    if let Ok(value) = HeaderValue::from_str(&info) {
        response.headers_mut().insert("sforce-limit-info", value);
    }
    response
}

fn current_usage(state: &CrmState) -> u64 {
    let mut usage = lock(&state.usage);
    roll_day(&mut usage);
    usage.used
}

/// Counts one API call against today's quota: the new count, or the count when spent.
fn take_api_call(state: &CrmState) -> Result<u64, u64> {
    let mut usage = lock(&state.usage);
    roll_day(&mut usage);
    if usage.used >= state.daily_limit {
        return Err(usage.used);
    }
    usage.used += 1;
    Ok(usage.used)
}

fn roll_day(usage: &mut ApiUsage) {
    let today = Utc::now().date_naive();
    if usage.day != today {
        usage.day = today;
        usage.used = 0;
    }
}

// ----- records --------------------------------------------------------------------------------

/// One record of the world, seen as an sObject.
#[derive(Clone, Copy)]
enum Record<'a> {
    Contact(&'a super::world::Contact),
    Case(&'a super::world::Case),
    CaseComment(&'a super::world::CaseComment),
}

fn text(value: &str) -> Value {
    Value::String(value.to_owned())
}

fn optional(value: Option<&str>) -> Value {
    value.map_or(Value::Null, text)
}

impl<'a> Record<'a> {
    fn find(world: &'a World, object: SObjectType, id: &str) -> Option<Self> {
        let id = normalize_salesforce_id(id);
        match object {
            SObjectType::Contact => world.contacts.get(&id).map(Record::Contact),
            SObjectType::Case => world.cases.get(&id).map(Record::Case),
            SObjectType::CaseComment => world.comments.get(&id).map(Record::CaseComment),
        }
    }

    fn all(world: &'a World, object: SObjectType) -> Box<dyn Iterator<Item = Record<'a>> + 'a> {
        match object {
            SObjectType::Contact => Box::new(world.contacts.values().map(Record::Contact)),
            SObjectType::Case => Box::new(world.cases.values().map(Record::Case)),
            SObjectType::CaseComment => Box::new(world.comments.values().map(Record::CaseComment)),
        }
    }

    fn object(self) -> SObjectType {
        match self {
            Record::Contact(_) => SObjectType::Contact,
            Record::Case(_) => SObjectType::Case,
            Record::CaseComment(_) => SObjectType::CaseComment,
        }
    }

    fn id(self) -> &'a str {
        match self {
            Record::Contact(contact) => &contact.id,
            Record::Case(case) => &case.id,
            Record::CaseComment(comment) => &comment.id,
        }
    }

    /// The value of one of its own fields.
    fn get(self, field: &FieldDef) -> Value {
        match self {
            Record::Contact(contact) => match field.name {
                "Id" => text(&contact.id),
                "FirstName" => text(&contact.first_name),
                "LastName" => text(&contact.last_name),
                "Email" => text(&contact.email),
                "Customer_Id__c" => optional(contact.customer_id.as_deref()),
                _ => Value::Null,
            },
            Record::Case(case) => match field.name {
                "Id" => text(&case.id),
                "CaseNumber" => text(&case.case_number),
                "Subject" => text(&case.subject),
                "Description" => optional(case.description.as_deref()),
                "Status" => text(case.status.as_str()),
                "Priority" => text(case.priority),
                "Origin" => text(case.origin),
                "ContactId" => optional(case.contact_id.as_deref()),
                "Order_Id__c" => optional(case.order_id.as_deref()),
                "IsClosed" => Value::Bool(case.status == CaseStatus::Closed),
                "CreatedDate" => text(&sf_datetime(case.created_date)),
                "ClosedDate" => case
                    .closed_date
                    .map_or(Value::Null, |date| text(&sf_datetime(date))),
                _ => Value::Null,
            },
            Record::CaseComment(comment) => match field.name {
                "Id" => text(&comment.id),
                "ParentId" => text(&comment.parent_id),
                "CommentBody" => text(&comment.body),
                "IsPublished" => Value::Bool(comment.is_published),
                "CreatedDate" => text(&sf_datetime(comment.created_date)),
                "CreatedById" => text(&comment.created_by_id),
                _ => Value::Null,
            },
        }
    }

    /// The parent through a relationship, if the reference is set and resolves.
    fn parent(self, world: &'a World, relationship: &soql::Relationship) -> Option<Record<'a>> {
        let via = self.object().field(relationship.via)?;
        let parent_id = self.get(via);
        Record::find(world, relationship.target, parent_id.as_str()?)
    }

    /// The value of an own or parent field; null when the parent is missing.
    fn resolve(self, world: &'a World, field: &FieldRef) -> Value {
        match field.relationship {
            None => self.get(field.field),
            Some(relationship) => self
                .parent(world, relationship)
                .map_or(Value::Null, |parent| parent.get(field.field)),
        }
    }

    /// The record as the API answers it: `attributes`, then the selected fields in order;
    /// parent fields nest under the relationship name, as Salesforce does.
    fn to_json(self, world: &World, fields: &[FieldRef], version: &str) -> Value {
        let mut object = Map::new();
        object.insert("attributes".to_owned(), attributes(self, version));
        for field in fields {
            match field.relationship {
                None => {
                    object.insert(field.field.name.to_owned(), self.get(field.field));
                }
                Some(relationship) => {
                    let Some(parent) = self.parent(world, relationship) else {
                        object.insert(relationship.name.to_owned(), Value::Null);
                        continue;
                    };
                    let nested = object
                        .entry(relationship.name.to_owned())
                        .or_insert_with(|| json!({"attributes": attributes(parent, version)}));
                    if let Value::Object(nested) = nested {
                        nested.insert(field.field.name.to_owned(), parent.get(field.field));
                    }
                }
            }
        }
        Value::Object(object)
    }
}

fn attributes(record: Record<'_>, version: &str) -> Value {
    let object = record.object().name();
    json!({
        "type": object,
        "url": format!("/services/data/{version}/sobjects/{object}/{}", record.id()),
    })
}

// ----- SOQL -----------------------------------------------------------------------------------

/// Runs a checked query: matching records, sorted (by Id when unordered), limited, as JSON.
fn run_query(world: &World, query: &BoundQuery, version: &str) -> Vec<Value> {
    let mut rows: Vec<(Vec<Value>, Record<'_>)> = Record::all(world, query.object)
        .filter(|record| query.matches(|field| record.resolve(world, field)))
        .map(|record| {
            let keys = query
                .order_by
                .iter()
                .map(|(field, _)| record.resolve(world, field))
                .collect();
            (keys, record)
        })
        .collect();
    // `Record::all` walks ids in order and the sort is stable: ties stay in id order.
    rows.sort_by(|(a, _), (b, _)| query.compare_keys(a, b));
    let limit = query.limit.map_or(usize::MAX, |limit| {
        usize::try_from(limit).unwrap_or(usize::MAX)
    });
    rows.into_iter()
        .take(limit)
        .map(|(_, record)| record.to_json(world, &query.select, version))
        .collect()
}

fn query_param(query: Option<String>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// `GET query?q=SELECT ...`: the first batch, and a cursor for the rest.
async fn query(
    State(state): State<Arc<CrmState>>,
    Path(version): Path<String>,
    RawQuery(raw): RawQuery,
) -> SfResult {
    if !valid_version(&version) {
        return Err(resource_not_found());
    }
    let text = query_param(raw, "q").ok_or_else(|| {
        bad_request(
            "MALFORMED_QUERY",
            "The q parameter with a SOQL query is required",
        )
    })?;
    let bound = soql::parse(&text)
        .and_then(|query| query.bind())
        .map_err(|error| bad_request(error.code, error.message))?;
    let records = Arc::new(run_query(&state.world.read(), &bound, &version));
    let locator =
        (records.len() > state.batch_size).then(|| open_cursor(&state, Arc::clone(&records)));
    Ok(query_page(
        &version,
        &records,
        0,
        state.batch_size,
        locator.as_deref(),
    ))
}

/// One page of a result from `offset`; `nextRecordsUrl` when more follow.
fn query_page(
    version: &str,
    records: &[Value],
    offset: usize,
    batch_size: usize,
    locator: Option<&str>,
) -> Response {
    let end = offset.saturating_add(batch_size).min(records.len());
    let done = end >= records.len();
    let mut body = json!({
        "totalSize": records.len(),
        "done": done,
        "records": records.get(offset..end).unwrap_or_default(),
    });
    if let (false, Some(locator)) = (done, locator) {
        body["nextRecordsUrl"] = json!(format!("/services/data/{version}/query/{locator}-{end}"));
    }
    Json(body).into_response()
}

fn open_cursor(state: &CrmState, records: Arc<Vec<Value>>) -> String {
    let number = {
        let mut next = lock(&state.next_cursor_no);
        let number = *next;
        *next += 1;
        number
    };
    let locator = salesforce_id("01g", number);
    let now = Instant::now();
    let mut cursors = lock(&state.cursors);
    cursors.retain(|_, cursor| now.duration_since(cursor.last_used) < CURSOR_IDLE);
    if cursors.len() >= MAX_CURSORS
        && let Some(oldest) = cursors
            .iter()
            .min_by_key(|(_, cursor)| cursor.last_used)
            .map(|(locator, _)| locator.clone())
    {
        cursors.remove(&oldest);
    }
    cursors.insert(
        locator.clone(),
        Cursor {
            records,
            last_used: now,
        },
    );
    locator
}

/// `GET query/{locator}-{offset}`: the next batch of an earlier query.
async fn query_more(
    State(state): State<Arc<CrmState>>,
    Path((version, locator)): Path<(String, String)>,
) -> SfResult {
    if !valid_version(&version) {
        return Err(resource_not_found());
    }
    let invalid = || bad_request("INVALID_QUERY_LOCATOR", "invalid query locator");
    let (id, offset) = locator.rsplit_once('-').ok_or_else(invalid)?;
    let offset = offset.parse::<usize>().map_err(|_| invalid())?;
    let records = {
        let mut cursors = lock(&state.cursors);
        let cursor = cursors
            .get_mut(id)
            .filter(|cursor| cursor.last_used.elapsed() < CURSOR_IDLE)
            .ok_or_else(invalid)?;
        cursor.last_used = Instant::now();
        Arc::clone(&cursor.records)
    };
    if offset == 0 || offset >= records.len() {
        return Err(invalid());
    }
    Ok(query_page(
        &version,
        &records,
        offset,
        state.batch_size,
        Some(id),
    ))
}

// ----- retrieve -------------------------------------------------------------------------------

/// `fields=A,B` against an object's own fields; unknown is `INVALID_FIELD`.
fn own_fields(object: SObjectType, list: &str) -> Result<Vec<FieldRef>, SfError> {
    let mut fields: Vec<FieldRef> = Vec::new();
    for name in list
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        let field = object.field(name).ok_or_else(|| {
            bad_request(
                "INVALID_FIELD",
                format!(
                    "No such column '{name}' on entity '{}'. If you are attempting to use a \
                     custom field, be sure to append the '__c' after the custom field name.",
                    object.name()
                ),
            )
        })?;
        let field = FieldRef {
            relationship: None,
            field,
        };
        if !fields.contains(&field) {
            fields.push(field);
        }
    }
    Ok(fields)
}

fn all_fields(object: SObjectType) -> Vec<FieldRef> {
    object
        .fields()
        .iter()
        .map(|field| FieldRef {
            relationship: None,
            field,
        })
        .collect()
}

/// The object named in the path of an API call with a valid version.
fn path_object(version: &str, sobject: &str) -> Result<SObjectType, SfError> {
    SObjectType::parse(sobject)
        .filter(|_| valid_version(version))
        .ok_or_else(resource_not_found)
}

/// `GET composite/sobjects/{Type}?ids=..&fields=..`: records in id order, null for unknown ids.
async fn composite_retrieve(
    State(state): State<Arc<CrmState>>,
    Path((version, sobject)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> SfResult {
    let object = path_object(&version, &sobject)?;
    let ids = query_param(raw.clone(), "ids")
        .ok_or_else(|| bad_request("MISSING_ARGUMENT", "The ids parameter is required"))?;
    let fields = query_param(raw, "fields")
        .map(|list| own_fields(object, &list))
        .transpose()?
        .filter(|fields| !fields.is_empty())
        .ok_or_else(|| bad_request("MISSING_ARGUMENT", "The fields parameter is required"))?;
    let ids: Vec<&str> = ids
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .collect();
    if ids.len() > MAX_COMPOSITE_IDS {
        return Err(bad_request(
            "EXCEEDED_ID_LIMIT",
            format!(
                "record limit reached. cannot submit more than {MAX_COMPOSITE_IDS} records in \
                 this operation"
            ),
        ));
    }
    let world = state.world.read();
    let records: Vec<Value> = ids
        .iter()
        .map(|id| {
            Record::find(&world, object, id).map_or(Value::Null, |record| {
                record.to_json(&world, &fields, &version)
            })
        })
        .collect();
    Ok(Json(records).into_response())
}

/// `GET sobjects/{Type}/{id}[?fields=..]`: one record, all fields unless named.
async fn retrieve(
    State(state): State<Arc<CrmState>>,
    Path((version, sobject, id)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> SfResult {
    let object = path_object(&version, &sobject)?;
    let fields = match query_param(raw, "fields") {
        None => all_fields(object),
        Some(list) => Some(own_fields(object, &list)?)
            .filter(|fields| !fields.is_empty())
            .unwrap_or_else(|| all_fields(object)),
    };
    let world = state.world.read();
    let record = Record::find(&world, object, &id).ok_or_else(resource_not_found)?;
    Ok(Json(record.to_json(&world, &fields, &version)).into_response())
}

// ----- create ---------------------------------------------------------------------------------

/// The checked fields of a create body, by canonical name.
type CreateFields = HashMap<&'static str, Value>;

/// Longest text Salesforce keeps per field; longer is `STRING_TOO_LONG`.
fn max_length(field: &str) -> usize {
    match field {
        "Subject" => 255,
        "Order_Id__c" => 50,
        "CommentBody" => 4000,
        _ => 32_000,
    }
}

/// Parses and checks a create body: a JSON object of createable fields of the right types.
fn create_fields(object: SObjectType, body: &[u8]) -> Result<CreateFields, SfError> {
    let parsed: Value = serde_json::from_slice(body).map_err(|cause| {
        bad_request(
            "JSON_PARSER_ERROR",
            format!("The request body is not valid JSON: {cause}"),
        )
    })?;
    let Value::Object(map) = parsed else {
        return Err(bad_request(
            "JSON_PARSER_ERROR",
            format!(
                "Cannot deserialize instance of {} from a non-object",
                object.name()
            ),
        ));
    };
    let mut fields = CreateFields::new();
    for (name, value) in map {
        if name == "attributes" {
            continue;
        }
        let Some(field) = object.field(&name) else {
            return Err(bad_request(
                "INVALID_FIELD",
                format!(
                    "No such column '{name}' on sobject of type {}",
                    object.name()
                ),
            ));
        };
        if !field.createable {
            return Err(sf_error(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                format!(
                    "Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.",
                    field.name
                ),
                &[field.name],
            ));
        }
        let type_ok = match (field.ty, &value) {
            (_, Value::Null) => true,
            (FieldType::Boolean, value) => value.is_boolean(),
            (_, value) => value.is_string(),
        };
        if !type_ok {
            return Err(bad_request(
                "JSON_PARSER_ERROR",
                format!(
                    "Cannot deserialize the value of {} from {value}",
                    field.name
                ),
            ));
        }
        if let (FieldType::Picklist(values), Value::String(text)) = (field.ty, &value)
            && !values.contains(&text.as_str())
        {
            return Err(sf_error(
                StatusCode::BAD_REQUEST,
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                format!(
                    "{}: bad value for restricted picklist field: {text}",
                    field.name
                ),
                &[field.name],
            ));
        }
        if let Value::String(text) = &value
            && text.chars().count() > max_length(field.name)
        {
            return Err(sf_error(
                StatusCode::BAD_REQUEST,
                "STRING_TOO_LONG",
                format!(
                    "{}: data value too large (max length={})",
                    field.name,
                    max_length(field.name)
                ),
                &[field.name],
            ));
        }
        fields.insert(field.name, value);
    }
    Ok(fields)
}

fn text_field(fields: &CreateFields, name: &str) -> Option<String> {
    fields
        .get(name)
        .and_then(Value::as_str)
        .filter(|text| !text.trim().is_empty())
        .map(str::to_owned)
}

fn require(fields: &CreateFields, names: &[&'static str]) -> Result<(), SfError> {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| text_field(fields, name).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(sf_error(
        StatusCode::BAD_REQUEST,
        "REQUIRED_FIELD_MISSING",
        format!("Required fields are missing: [{}]", missing.join(", ")),
        &missing,
    ))
}

/// The picklist value matching `value` exactly (already checked), or the default.
fn picklist(
    options: &[&'static str],
    value: Option<String>,
    default: &'static str,
) -> &'static str {
    value
        .and_then(|value| options.iter().copied().find(|option| *option == value))
        .unwrap_or(default)
}

/// `POST sobjects/{Type}`: creates a Case or a CaseComment.
async fn create(
    State(state): State<Arc<CrmState>>,
    Path((version, sobject)): Path<(String, String)>,
    body: Bytes,
) -> SfResult {
    let object = path_object(&version, &sobject)?;
    let fields = create_fields(object, &body)?;
    let now = Utc::now();
    let created = match object {
        SObjectType::Case => {
            require(&fields, &["Subject", "ContactId"])?;
            let status = text_field(&fields, "Status")
                .and_then(|status| CaseStatus::ALL.into_iter().find(|s| s.as_str() == status))
                .unwrap_or(CaseStatus::New);
            let new = NewCase {
                subject: text_field(&fields, "Subject").unwrap_or_default(),
                description: text_field(&fields, "Description"),
                status,
                priority: picklist(&CASE_PRIORITIES, text_field(&fields, "Priority"), "Medium"),
                origin: picklist(&CASE_ORIGINS, text_field(&fields, "Origin"), "Web"),
                contact_id: text_field(&fields, "ContactId").unwrap_or_default(),
                order_id: text_field(&fields, "Order_Id__c"),
            };
            let created = state.world.write().create_case(new, now);
            created
                .map(|case| case.id)
                .map_err(|error| (error, "ContactId"))
        }
        SObjectType::CaseComment => {
            require(&fields, &["ParentId", "CommentBody"])?;
            let parent_id = text_field(&fields, "ParentId").unwrap_or_default();
            let body = text_field(&fields, "CommentBody").unwrap_or_default();
            let published = fields
                .get("IsPublished")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let created = state.world.write().add_case_comment(
                &parent_id,
                body,
                published,
                integration_user_id(),
                now,
            );
            created
                .map(|comment| comment.id)
                .map_err(|error| (error, "ParentId"))
        }
        SObjectType::Contact => {
            return Err(bad_request(
                "INVALID_TYPE_FOR_OPERATION",
                "The sandbox CRM creates Case and CaseComment records only",
            ));
        }
    };
    match created {
        Ok(id) => Ok((
            StatusCode::CREATED,
            Json(json!({"id": id, "success": true, "errors": []})),
        )
            .into_response()),
        Err((CrmWriteError::UnknownReference { object, id }, field)) => Err(sf_error(
            StatusCode::BAD_REQUEST,
            "INVALID_CROSS_REFERENCE_KEY",
            format!("invalid cross reference id: no {object} with id {id}"),
            &[field],
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_look_like_salesforce_versions() {
        assert!(valid_version("v60.0"));
        assert!(valid_version("v59.0"));
        assert!(!valid_version("60.0"));
        assert!(!valid_version("v60"));
        assert!(!valid_version("v60.00"));
        assert!(!valid_version("vx.0"));
    }

    #[test]
    fn datetimes_use_salesforce_format() {
        let time = chrono::DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(sf_datetime(time), "2024-05-01T10:00:00.000+0000");
    }
}
