//! The process server, shaped like the jBPM KIE Server REST API.
//!
//! One container, `returns`, with one process, `returns.ReturnRequest`: an agent approves or
//! rejects a return (`ApproveReturn`, group `agents`), then the customer confirms the pickup
//! (`ConfirmPickup`, the customer as potential owner). HTTP Basic auth as the KIE user; the
//! acting user of a task operation is the `user` query parameter (KIE's "bypass auth user"),
//! defaulting to the authenticated user. Errors are a JSON string; dates are
//! `{"java.util.Date": <epoch ms>}`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::SandboxConfig;
use super::world::{
    ProcessInstance, RETURN_PROCESS_ID, RETURNS_CONTAINER, SharedWorld, Task, TaskError,
    TaskStatus, World,
};

/// Where the KIE REST API lives on the server.
pub(crate) const BASE_PATH: &str = "/kie-server/services/rest/server";
/// KIE's default page size.
const DEFAULT_PAGE_SIZE: usize = 10;
/// Largest page the sandbox answers.
const MAX_PAGE_SIZE: usize = 1000;
/// Longest `reason` of a return request.
const MAX_REASON_CHARS: usize = 2000;

struct ProcessState {
    world: SharedWorld,
    user: String,
    password: String,
}

/// The user who authenticated, for `initiator` and the default acting user.
#[derive(Clone)]
struct KieUser(String);

/// The KIE server's routes, under [`BASE_PATH`], behind Basic auth.
pub(crate) fn router(world: SharedWorld, config: &SandboxConfig) -> Router {
    let state = Arc::new(ProcessState {
        world,
        user: config.kie_user.clone(),
        password: config.kie_password.clone(),
    });
    let routes = Router::new()
        .route(
            "/containers/{container}/processes/{process}/instances",
            post(start_process),
        )
        .route("/queries/processes/instances/{id}", get(get_instance))
        .route(
            "/queries/processes/instances/variables/{name}",
            get(instances_by_variable),
        )
        .route(
            "/queries/tasks/instances/pot-owners",
            get(potential_owner_tasks),
        )
        .route("/containers/{container}/tasks/{task}", get(get_task))
        .route(
            "/containers/{container}/tasks/{task}/states/claimed",
            put(claim),
        )
        .route(
            "/containers/{container}/tasks/{task}/states/started",
            put(start),
        )
        .route(
            "/containers/{container}/tasks/{task}/states/released",
            put(release),
        )
        .route(
            "/containers/{container}/tasks/{task}/states/completed",
            put(complete),
        )
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            basic_auth,
        ))
        .with_state(state);
    Router::new()
        .nest(BASE_PATH, routes)
        .fallback(|uri: axum::http::Uri| async move {
            kie_error(
                StatusCode::NOT_FOUND,
                format!("Could not find resource {}", uri.path()),
            )
            .into_response()
        })
}

/// A KIE error: the status and a JSON string message.
#[derive(Debug)]
struct KieError {
    status: StatusCode,
    message: String,
}

impl IntoResponse for KieError {
    fn into_response(self) -> Response {
        (self.status, Json(Value::String(self.message))).into_response()
    }
}

type KieResult = Result<Response, KieError>;

fn kie_error(status: StatusCode, message: impl Into<String>) -> KieError {
    KieError {
        status,
        message: message.into(),
    }
}

async fn basic_auth(
    State(state): State<Arc<ProcessState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let user = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| STANDARD.decode(encoded.trim()).ok())
        .and_then(|decoded| String::from_utf8(decoded).ok())
        .and_then(|pair| {
            let (user, password) = pair.split_once(':')?;
            (user == state.user && password == state.password).then(|| user.to_owned())
        });
    let Some(user) = user else {
        let mut response = StatusCode::UNAUTHORIZED.into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"KIE Server\""),
        );
        return response;
    };
    request.extensions_mut().insert(KieUser(user));
    next.run(request).await
}

// ----- query parameters -----------------------------------------------------------------------

/// The query string as pairs; KIE repeats `status` for a list.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<String>) -> Self {
        Self(
            url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|value| value.eq_ignore_ascii_case("true"))
    }

    /// `page` and `pageSize` (default 0 and 10, as KIE).
    fn paging(&self) -> Result<(usize, usize), KieError> {
        let number = |name: &str, default: usize, max: usize| match self.get(name) {
            None => Ok(default),
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|value| *value <= max)
                .ok_or_else(|| {
                    kie_error(
                        StatusCode::BAD_REQUEST,
                        format!("{name} must be a number from 0 to {max}, got {text:?}"),
                    )
                }),
        };
        let page = number("page", 0, usize::MAX / MAX_PAGE_SIZE)?;
        let size = number("pageSize", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
        Ok((page, size))
    }
}

fn paginate<T>(items: Vec<T>, (page, size): (usize, usize)) -> Vec<T> {
    items.into_iter().skip(page * size).take(size).collect()
}

fn java_date(time: DateTime<Utc>) -> Value {
    json!({"java.util.Date": time.timestamp_millis()})
}

// ----- process instances ----------------------------------------------------------------------

fn variables(instance: &ProcessInstance) -> Map<String, Value> {
    let mut variables = Map::new();
    variables.insert("customerId".into(), json!(instance.customer_id));
    variables.insert("orderId".into(), json!(instance.order_id));
    variables.insert("reason".into(), json!(instance.reason));
    if let Some(outcome) = &instance.outcome {
        variables.insert("outcome".into(), json!(outcome));
    }
    variables
}

fn instance_json(instance: &ProcessInstance, with_vars: bool) -> Value {
    json!({
        "process-instance-id": instance.id,
        "process-id": RETURN_PROCESS_ID,
        "process-name": "Return request",
        "process-version": "1.0",
        "process-instance-state": instance.state.code(),
        "container-id": RETURNS_CONTAINER,
        "initiator": instance.initiator,
        "start-date": java_date(instance.started_at),
        "process-instance-desc": format!("Return request for {}", instance.order_id),
        "correlation-key": instance.id.to_string(),
        "parent-instance-id": -1,
        "process-instance-variables": if with_vars { Value::Object(variables(instance)) } else { Value::Null },
    })
}

fn unknown_container(container: &str) -> KieError {
    kie_error(
        StatusCode::NOT_FOUND,
        format!(
            "Container '{container}' is not instantiated or cannot find container for alias \
             '{container}'"
        ),
    )
}

/// `POST containers/{c}/processes/{p}/instances` with `{"customerId","orderId","reason"}`:
/// 201 with the bare instance id.
async fn start_process(
    State(state): State<Arc<ProcessState>>,
    axum::Extension(KieUser(user)): axum::Extension<KieUser>,
    Path((container, process)): Path<(String, String)>,
    body: Bytes,
) -> KieResult {
    if container != RETURNS_CONTAINER {
        return Err(unknown_container(&container));
    }
    if process != RETURN_PROCESS_ID {
        return Err(kie_error(
            StatusCode::NOT_FOUND,
            format!("Could not find process definition \"{process}\" in container \"{container}\""),
        ));
    }
    let Ok(Value::Object(variables)) = serde_json::from_slice::<Value>(&body) else {
        return Err(kie_error(
            StatusCode::BAD_REQUEST,
            "The body must be a JSON object of process variables",
        ));
    };
    let text = |name: &str| variables.get(name).and_then(Value::as_str).map(str::trim);
    let (Some(customer_id), Some(order_id)) = (text("customerId"), text("orderId")) else {
        return Err(kie_error(
            StatusCode::BAD_REQUEST,
            "Process variables customerId and orderId are required strings",
        ));
    };
    let reason = match variables.get("reason") {
        None | Some(Value::Null) => "",
        Some(Value::String(reason)) => reason.as_str(),
        Some(_) => {
            return Err(kie_error(
                StatusCode::BAD_REQUEST,
                "Process variable reason must be a string",
            ));
        }
    };
    if customer_id.is_empty() || order_id.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(kie_error(
            StatusCode::BAD_REQUEST,
            format!(
                "customerId and orderId must not be empty, reason at most {MAX_REASON_CHARS} \
                 characters"
            ),
        ));
    }
    let instance =
        state
            .world
            .write()
            .start_return_process(customer_id, order_id, reason, &user, Utc::now());
    Ok((StatusCode::CREATED, Json(json!(instance.id))).into_response())
}

/// `GET queries/processes/instances/{id}[?withVars=true]`.
async fn get_instance(
    State(state): State<Arc<ProcessState>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> KieResult {
    let with_vars = Params::parse(query).flag("withVars");
    let world = state.world.read();
    let instance = id
        .parse::<i64>()
        .ok()
        .and_then(|id| world.processes.get(&id))
        .ok_or_else(|| {
            kie_error(
                StatusCode::NOT_FOUND,
                format!("Could not find process instance with id {id}"),
            )
        })?;
    Ok(Json(instance_json(instance, with_vars)).into_response())
}

/// `GET queries/processes/instances/variables/{name}?varValue=..&status=1..`: instances whose
/// variable has that value (any value without `varValue`), in the given states (active when
/// none is given), by id.
async fn instances_by_variable(
    State(state): State<Arc<ProcessState>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> KieResult {
    let params = Params::parse(query);
    let paging = params.paging()?;
    let mut states = params
        .all("status")
        .map(|text| {
            text.parse::<i32>().map_err(|_| {
                kie_error(
                    StatusCode::BAD_REQUEST,
                    format!("status must be a process instance state number, got {text:?}"),
                )
            })
        })
        .collect::<Result<Vec<i32>, KieError>>()?;
    if states.is_empty() {
        states.push(1);
    }
    let value = params.get("varValue");
    let with_vars = params.flag("withVars");
    let world = state.world.read();
    let matching: Vec<&ProcessInstance> = world
        .processes
        .values()
        .filter(|instance| states.contains(&instance.state.code()))
        .filter(|instance| match variables(instance).get(&name) {
            None => false,
            Some(actual) => value.is_none_or(|value| actual.as_str() == Some(value)),
        })
        .collect();
    let items: Vec<Value> = paginate(matching, paging)
        .into_iter()
        .map(|instance| instance_json(instance, with_vars))
        .collect();
    Ok(Json(json!({"process-instance": items})).into_response())
}

// ----- tasks ----------------------------------------------------------------------------------

fn task_summary(task: &Task) -> Value {
    json!({
        "task-id": task.id,
        "task-name": task.name.as_str(),
        "task-subject": "",
        "task-description": task.description(),
        "task-status": task.status.as_str(),
        "task-priority": 0,
        "task-is-skipable": false,
        "task-actual-owner": task.actual_owner,
        "task-created-by": Value::Null,
        "task-created-on": java_date(task.created_on),
        "task-activation-time": java_date(task.created_on),
        "task-expiration-time": Value::Null,
        "task-proc-inst-id": task.process_instance_id,
        "task-proc-def-id": RETURN_PROCESS_ID,
        "task-container-id": RETURNS_CONTAINER,
        "task-parent-id": -1,
    })
}

/// A task instance: the summary's facts (with `task-process-instance-id` and `task-process-id`
/// for the `proc-` names), the potential owners, and the input and output data.
fn task_instance(task: &Task) -> Value {
    json!({
        "task-id": task.id,
        "task-priority": 0,
        "task-name": task.name.as_str(),
        "task-subject": "",
        "task-description": task.description(),
        "task-status": task.status.as_str(),
        "task-actual-owner": task.actual_owner,
        "task-created-by": Value::Null,
        "task-created-on": java_date(task.created_on),
        "task-activation-time": java_date(task.created_on),
        "task-expiration-time": Value::Null,
        "task-is-skipable": false,
        "task-process-instance-id": task.process_instance_id,
        "task-parent-id": -1,
        "task-process-id": RETURN_PROCESS_ID,
        "task-container-id": RETURNS_CONTAINER,
        "task-pot-owners": [task.potential_owner.id()],
        "task-input-data": {
            "customerId": task.customer_id,
            "orderId": task.order_id,
            "reason": task.reason,
        },
        "task-output-data": task.output,
    })
}

/// `GET queries/tasks/instances/pot-owners?user=U&status=..`: `Ready` tasks U may claim
/// (directly or through a group) and tasks U owns, in the given states, by id.
async fn potential_owner_tasks(
    State(state): State<Arc<ProcessState>>,
    axum::Extension(KieUser(authenticated)): axum::Extension<KieUser>,
    RawQuery(query): RawQuery,
) -> KieResult {
    let params = Params::parse(query);
    let paging = params.paging()?;
    let mut statuses = params
        .all("status")
        .map(|text| {
            TaskStatus::ALL
                .into_iter()
                .find(|status| status.as_str() == text)
                .ok_or_else(|| {
                    kie_error(
                        StatusCode::BAD_REQUEST,
                        format!("Unknown task status {text:?}"),
                    )
                })
        })
        .collect::<Result<Vec<TaskStatus>, KieError>>()?;
    if statuses.is_empty() {
        statuses = vec![
            TaskStatus::Ready,
            TaskStatus::Reserved,
            TaskStatus::InProgress,
        ];
    }
    let user = params.get("user").unwrap_or(&authenticated);
    let world = state.world.read();
    let tasks: Vec<&Task> = world
        .tasks
        .values()
        .filter(|task| statuses.contains(&task.status))
        .filter(|task| {
            let owns = task.actual_owner.as_deref() == Some(user);
            let may_claim =
                task.status == TaskStatus::Ready && World::is_potential_owner(task, user);
            owns || may_claim
        })
        .collect();
    let items: Vec<Value> = paginate(tasks, paging)
        .into_iter()
        .map(task_summary)
        .collect();
    Ok(Json(json!({"task-summary": items})).into_response())
}

/// The task, if it exists in `container`.
fn find_task<'a>(world: &'a World, container: &str, task: &str) -> Result<&'a Task, KieError> {
    if container != RETURNS_CONTAINER {
        return Err(unknown_container(container));
    }
    task.parse::<i64>()
        .ok()
        .and_then(|id| world.tasks.get(&id))
        .ok_or_else(|| {
            kie_error(
                StatusCode::NOT_FOUND,
                format!("Could not find task instance with id {task}"),
            )
        })
}

/// `GET containers/{c}/tasks/{t}`: the task instance, with its input and output data.
async fn get_task(
    State(state): State<Arc<ProcessState>>,
    Path((container, task)): Path<(String, String)>,
) -> KieResult {
    let world = state.world.read();
    let task = find_task(&world, &container, &task)?;
    Ok(Json(task_instance(task)).into_response())
}

/// What a task operation needs: the task id (checked to exist) and the acting user, the
/// `user` parameter or else the authenticated user.
fn operation_target(
    state: &ProcessState,
    (container, task): (&str, &str),
    params: &Params,
    authenticated: &str,
) -> Result<(i64, String), KieError> {
    let id = find_task(&state.world.read(), container, task)?.id;
    let user = params.get("user").unwrap_or(authenticated).to_owned();
    Ok((id, user))
}

/// 201 for a done operation; 404, 403 or 400 with KIE's string message.
fn task_result(result: Result<(), TaskError>) -> KieResult {
    let status = match &result {
        Ok(()) => return Ok(StatusCode::CREATED.into_response()),
        Err(TaskError::NotFound(_)) => StatusCode::NOT_FOUND,
        Err(TaskError::Forbidden(_)) => StatusCode::FORBIDDEN,
        Err(TaskError::BadOutput(_)) => StatusCode::BAD_REQUEST,
    };
    Err(kie_error(
        status,
        result
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default(),
    ))
}

type TaskPath = Path<(String, String)>;
type Caller = axum::Extension<KieUser>;

/// `PUT .../states/claimed?user=U`: Ready -> Reserved.
async fn claim(
    State(state): State<Arc<ProcessState>>,
    axum::Extension(KieUser(authenticated)): Caller,
    Path((container, task)): TaskPath,
    RawQuery(query): RawQuery,
) -> KieResult {
    let params = Params::parse(query);
    let (id, user) = operation_target(&state, (&container, &task), &params, &authenticated)?;
    task_result(state.world.write().claim_task(id, &user))
}

/// `PUT .../states/started?user=U`: Reserved (or Ready) -> InProgress.
async fn start(
    State(state): State<Arc<ProcessState>>,
    axum::Extension(KieUser(authenticated)): Caller,
    Path((container, task)): TaskPath,
    RawQuery(query): RawQuery,
) -> KieResult {
    let params = Params::parse(query);
    let (id, user) = operation_target(&state, (&container, &task), &params, &authenticated)?;
    task_result(state.world.write().start_task(id, &user))
}

/// `PUT .../states/released?user=U`: Reserved or InProgress -> Ready.
async fn release(
    State(state): State<Arc<ProcessState>>,
    axum::Extension(KieUser(authenticated)): Caller,
    Path((container, task)): TaskPath,
    RawQuery(query): RawQuery,
) -> KieResult {
    let params = Params::parse(query);
    let (id, user) = operation_target(&state, (&container, &task), &params, &authenticated)?;
    task_result(state.world.write().release_task(id, &user))
}

/// `PUT .../states/completed?user=U[&auto-progress=true]` with the output variables.
async fn complete(
    State(state): State<Arc<ProcessState>>,
    axum::Extension(KieUser(authenticated)): Caller,
    Path((container, task)): TaskPath,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> KieResult {
    let params = Params::parse(query);
    let output = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice(&body) {
            Ok(Value::Object(map)) => map,
            Ok(Value::Null) => Map::new(),
            _ => {
                return Err(kie_error(
                    StatusCode::BAD_REQUEST,
                    "The body must be a JSON object of output variables",
                ));
            }
        }
    };
    let auto_progress = params.flag("auto-progress");
    let (id, user) = operation_target(&state, (&container, &task), &params, &authenticated)?;
    let now = Utc::now();
    task_result(
        state
            .world
            .write()
            .complete_task(id, &user, output, auto_progress, now),
    )
}
