//! The process server, over the jBPM KIE Server REST API: return requests and their human tasks.
//!
//! HTTP Basic auth as the integration user; the acting user of a task operation is the `user`
//! query parameter. The container and the return process's id come from config. KIE's shapes:
//! start answers the bare instance id, dates are `{"java.util.Date": <epoch ms>}`, instance
//! states are numbers (1 active, 2 completed, 3 aborted), task statuses WS-HumanTask names
//! (`Ready`, `Reserved`, `InProgress`, ...). A task operation the user may not do (not a
//! potential owner, not the owner, wrong status) answers 403, which is `Rejected` with
//! `TASK_NOT_AVAILABLE`.

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use resolvers::ids::{CustomerId, OrderId};
use resolvers::ports::Source;
use resolvers::ports::{ProcessServer, UpstreamResult};
use resolvers::ports::{UpstreamError, UpstreamErrorKind};
use resolvers::records::{ProcessInstanceRecord, ProcessState, TaskRecord, TaskStatus};
use serde::Deserialize;
use serde_json::{Map, Value};
use url::Url;

use super::http::{Answer, UpstreamHttp, check_base_url, endpoint};
use crate::config::{ProcessConfig, Secret};

/// Page size of KIE list queries; lists are read page by page until a short page.
const PAGE_SIZE: usize = 100;
/// Most pages read of one list, so a runaway list cannot keep a request busy forever.
const MAX_PAGES: usize = 20;
/// Task statuses of open work: what a user's task list shows.
const OPEN_TASK_STATUSES: [&str; 3] = ["Ready", "Reserved", "InProgress"];
/// What a customer or agent is told when KIE refuses a task operation.
const TASK_NOT_AVAILABLE: &str =
    "this task cannot be claimed or completed by you in its current state";

/// The process server's client.
pub(crate) struct ProcessClient {
    pub(super) http: UpstreamHttp,
    /// Up to and including `/kie-server/services/rest/server`.
    base: Url,
    user: String,
    password: Secret,
    /// The container holding the return process, e.g. `returns`.
    container: String,
    /// The return process's definition id, e.g. `returns.ReturnRequest`.
    return_process: String,
}

impl std::fmt::Debug for ProcessClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessClient")
            .field("base", &self.base.as_str())
            .field("container", &self.container)
            .field("return_process", &self.return_process)
            .finish_non_exhaustive()
    }
}

impl ProcessClient {
    /// A client for the KIE server at `config.url`.
    pub(super) fn new(config: &ProcessConfig) -> anyhow::Result<Self> {
        check_base_url("upstreams.process.url", &config.url)?;
        Ok(Self {
            http: UpstreamHttp::new(Source::Process, &config.policy)?,
            base: config.url.clone(),
            user: config.user.clone(),
            password: config.password.clone(),
            container: config.container.clone(),
            return_process: config.return_process.clone(),
        })
    }

    async fn call(
        &self,
        route: &'static str,
        request: reqwest::RequestBuilder,
    ) -> UpstreamResult<Answer> {
        let request = request
            .basic_auth(&self.user, Some(self.password.expose()))
            .header(ACCEPT, "application/json");
        self.http.send(route, request).await
    }

    /// A read; `None` on 404.
    async fn get_optional<T: serde::de::DeserializeOwned>(
        &self,
        route: &'static str,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> UpstreamResult<Option<(Answer, T)>> {
        let url = endpoint(&self.base, segments);
        let answer = self
            .call(route, self.http.client().get(url).query(query))
            .await?;
        match answer.status {
            StatusCode::OK => {
                let value = answer.json()?;
                Ok(Some((answer, value)))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(answer.unexpected()),
        }
    }

    /// Every page of a list query: `query` plus `page` and `pageSize`, until a short page.
    async fn list<W: serde::de::DeserializeOwned, R>(
        &self,
        route: &'static str,
        segments: &[&str],
        query: &[(&str, &str)],
        items_of: fn(W) -> Vec<Value>,
        convert: impl Fn(Value) -> Result<Option<R>, String>,
    ) -> UpstreamResult<Vec<R>> {
        let page_size = PAGE_SIZE.to_string();
        let mut records = Vec::new();
        for page in 0..MAX_PAGES {
            let page_number = page.to_string();
            let mut paged = query.to_vec();
            paged.push(("page", &page_number));
            paged.push(("pageSize", &page_size));
            let Some((answer, wrapper)) = self.get_optional(route, segments, &paged).await? else {
                return Err(self
                    .http
                    .unavailable(format!("GET {route}: 404 on a list query")));
            };
            let items = items_of(wrapper);
            let count = items.len();
            for item in items {
                if let Some(record) = convert(item).map_err(|why| answer.malformed(why))? {
                    records.push(record);
                }
            }
            if count < PAGE_SIZE {
                return Ok(records);
            }
        }
        tracing::warn!(
            upstream = "process",
            route,
            pages = MAX_PAGES,
            "list cut short"
        );
        Ok(records)
    }

    /// A task operation (`claimed`, `completed`): 201 on success.
    async fn task_operation(
        &self,
        route: &'static str,
        request: reqwest::RequestBuilder,
    ) -> UpstreamResult<()> {
        let answer = self.call(route, request).await?;
        match answer.status {
            StatusCode::CREATED | StatusCode::OK | StatusCode::NO_CONTENT => Ok(()),
            StatusCode::FORBIDDEN => Err(UpstreamError::rejected(
                Source::Process,
                "TASK_NOT_AVAILABLE",
                TASK_NOT_AVAILABLE,
            )),
            StatusCode::NOT_FOUND => Err(UpstreamError {
                source: Source::Process,
                kind: UpstreamErrorKind::NotFound,
            }),
            _ => Err(answer.unexpected()),
        }
    }

    fn task_url(&self, task: i64, state: &str) -> Url {
        let task = task.to_string();
        endpoint(
            &self.base,
            &[
                "containers",
                &self.container,
                "tasks",
                &task,
                "states",
                state,
            ],
        )
    }
}

#[async_trait::async_trait]
impl ProcessServer for ProcessClient {
    async fn start_return(
        &self,
        customer: &CustomerId,
        order: &OrderId,
        reason: &str,
    ) -> UpstreamResult<i64> {
        let url = endpoint(
            &self.base,
            &[
                "containers",
                &self.container,
                "processes",
                &self.return_process,
                "instances",
            ],
        );
        let variables = serde_json::json!({
            "customerId": customer.as_str(),
            "orderId": order.as_str(),
            "reason": reason,
        });
        let request = self.http.client().post(url).json(&variables);
        let answer = self
            .call(
                "/containers/{container}/processes/{process}/instances",
                request,
            )
            .await?;
        if answer.status != StatusCode::CREATED && answer.status != StatusCode::OK {
            // 404: the container or process of our config is not deployed.
            return Err(answer.unexpected());
        }
        let id: i64 = answer.json()?;
        if id < 0 {
            return Err(answer.malformed(format!("instance id {id}")));
        }
        Ok(id)
    }

    async fn process_instance(&self, id: i64) -> UpstreamResult<Option<ProcessInstanceRecord>> {
        let id = id.to_string();
        let found = self
            .get_optional::<InstanceJson>(
                "/queries/processes/instances/{id}",
                &["queries", "processes", "instances", &id],
                &[("withVars", "true")],
            )
            .await?;
        let Some((answer, instance)) = found else {
            return Ok(None);
        };
        instance_record(instance)
            .map(Some)
            .map_err(|why| answer.malformed(why))
    }

    async fn returns_of_customer(
        &self,
        customer: &CustomerId,
    ) -> UpstreamResult<Vec<ProcessInstanceRecord>> {
        let query = [
            ("varValue", customer.as_str()),
            ("status", "1"),
            ("status", "2"),
            ("status", "3"),
            ("withVars", "true"),
        ];
        let mut returns = self
            .list(
                "/queries/processes/instances/variables/{name}",
                &[
                    "queries",
                    "processes",
                    "instances",
                    "variables",
                    "customerId",
                ],
                &query,
                |list: InstanceListJson| list.instances.unwrap_or_default(),
                |item| {
                    let instance: InstanceJson =
                        serde_json::from_value(item).map_err(|e| e.to_string())?;
                    // Only our return process: other processes may carry a `customerId` too.
                    if instance.process_id != self.return_process {
                        return Ok(None);
                    }
                    instance_record(instance).map(Some)
                },
            )
            .await?;
        returns.sort_by_key(|r| std::cmp::Reverse((r.started_at, r.id)));
        Ok(returns)
    }

    async fn tasks_for_user(&self, user: &str) -> UpstreamResult<Vec<TaskRecord>> {
        let mut query = vec![("user", user)];
        query.extend(OPEN_TASK_STATUSES.iter().map(|s| ("status", *s)));
        self.list(
            "/queries/tasks/instances/pot-owners",
            &["queries", "tasks", "instances", "pot-owners"],
            &query,
            |list: TaskListJson| list.tasks.unwrap_or_default(),
            |item| {
                let task: TaskSummaryJson =
                    serde_json::from_value(item).map_err(|e| e.to_string())?;
                task_summary_record(task).map(Some)
            },
        )
        .await
    }

    async fn task(&self, id: i64) -> UpstreamResult<Option<TaskRecord>> {
        let task = id.to_string();
        let found = self
            .get_optional::<TaskInstanceJson>(
                "/containers/{container}/tasks/{task}",
                &["containers", &self.container, "tasks", &task],
                &[("withInputData", "true")],
            )
            .await?;
        let Some((answer, task)) = found else {
            return Ok(None);
        };
        task_instance_record(task)
            .map(Some)
            .map_err(|why| answer.malformed(why))
    }

    async fn claim_task(&self, id: i64, user: &str) -> UpstreamResult<()> {
        let request = self
            .http
            .client()
            .put(self.task_url(id, "claimed"))
            .query(&[("user", user)]);
        self.task_operation(
            "/containers/{container}/tasks/{task}/states/claimed",
            request,
        )
        .await
    }

    async fn complete_task(
        &self,
        id: i64,
        user: &str,
        outputs: &Map<String, Value>,
    ) -> UpstreamResult<()> {
        let request = self
            .http
            .client()
            .put(self.task_url(id, "completed"))
            .query(&[("user", user), ("auto-progress", "true")])
            .json(outputs);
        self.task_operation(
            "/containers/{container}/tasks/{task}/states/completed",
            request,
        )
        .await
    }
}

// ----- wire types (KIE Server's JSON) ---------------------------------------------------------

/// `{"java.util.Date": 1714557600000}`.
#[derive(Deserialize)]
struct KieDate {
    #[serde(rename = "java.util.Date")]
    millis: i64,
}

impl KieDate {
    fn to_utc(&self) -> Result<DateTime<Utc>, String> {
        DateTime::from_timestamp_millis(self.millis)
            .ok_or_else(|| format!("date {} ms is out of range", self.millis))
    }
}

fn kie_date(date: Option<&KieDate>) -> Result<Option<DateTime<Utc>>, String> {
    date.map(KieDate::to_utc).transpose()
}

#[derive(Deserialize)]
struct InstanceListJson {
    #[serde(rename = "process-instance")]
    instances: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct TaskListJson {
    #[serde(rename = "task-summary")]
    tasks: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct InstanceJson {
    #[serde(rename = "process-instance-id")]
    id: i64,
    #[serde(rename = "process-id")]
    process_id: String,
    #[serde(rename = "process-name")]
    process_name: Option<String>,
    #[serde(rename = "process-instance-state")]
    state: i64,
    #[serde(rename = "start-date")]
    start_date: Option<KieDate>,
    #[serde(rename = "process-instance-variables")]
    variables: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct TaskSummaryJson {
    #[serde(rename = "task-id")]
    id: i64,
    #[serde(rename = "task-name")]
    name: String,
    #[serde(rename = "task-description")]
    description: Option<String>,
    #[serde(rename = "task-status")]
    status: String,
    #[serde(rename = "task-actual-owner")]
    actual_owner: Option<String>,
    #[serde(rename = "task-created-on")]
    created_on: Option<KieDate>,
    #[serde(rename = "task-proc-inst-id")]
    process_instance_id: i64,
    #[serde(rename = "task-container-id")]
    container_id: String,
}

#[derive(Deserialize)]
struct TaskInstanceJson {
    #[serde(rename = "task-id")]
    id: i64,
    #[serde(rename = "task-name")]
    name: String,
    #[serde(rename = "task-description")]
    description: Option<String>,
    #[serde(rename = "task-status")]
    status: String,
    #[serde(rename = "task-actual-owner")]
    actual_owner: Option<String>,
    #[serde(rename = "task-created-on")]
    created_on: Option<KieDate>,
    #[serde(rename = "task-process-instance-id")]
    process_instance_id: i64,
    #[serde(rename = "task-container-id")]
    container_id: String,
    #[serde(rename = "task-input-data")]
    input_data: Option<Map<String, Value>>,
}

fn process_state(code: i64) -> Result<ProcessState, String> {
    match code {
        1 => Ok(ProcessState::Active),
        2 => Ok(ProcessState::Completed),
        3 => Ok(ProcessState::Aborted),
        other => Err(format!("unknown process instance state {other}")),
    }
}

fn task_status(text: &str) -> Result<TaskStatus, String> {
    Ok(match text {
        "Created" => TaskStatus::Created,
        "Ready" => TaskStatus::Ready,
        "Reserved" => TaskStatus::Reserved,
        "InProgress" => TaskStatus::InProgress,
        "Suspended" => TaskStatus::Suspended,
        "Completed" => TaskStatus::Completed,
        "Failed" => TaskStatus::Failed,
        "Error" => TaskStatus::Error,
        "Exited" => TaskStatus::Exited,
        "Obsolete" => TaskStatus::Obsolete,
        other => return Err(format!("unknown task status `{other}`")),
    })
}

/// A text variable: absent or null is `None`; any other type is malformed.
fn text_variable(
    variables: Option<&Map<String, Value>>,
    name: &str,
) -> Result<Option<String>, String> {
    match variables.and_then(|v| v.get(name)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(format!("variable {name} is not text: {other}")),
    }
}

/// KIE leaves empty strings where there is nothing.
fn non_blank(text: Option<String>) -> Option<String> {
    text.filter(|t| !t.trim().is_empty())
}

fn instance_record(i: InstanceJson) -> Result<ProcessInstanceRecord, String> {
    let in_instance = |e: String| format!("process instance {}: {e}", i.id);
    let vars = i.variables.as_ref();
    Ok(ProcessInstanceRecord {
        id: i.id,
        state: process_state(i.state).map_err(in_instance)?,
        started_at: kie_date(i.start_date.as_ref()).map_err(in_instance)?,
        customer_id: text_variable(vars, "customerId")
            .map_err(in_instance)?
            .map(CustomerId::from_upstream),
        order_id: text_variable(vars, "orderId")
            .map_err(in_instance)?
            .map(OrderId::from_upstream),
        reason: text_variable(vars, "reason").map_err(in_instance)?,
        outcome: text_variable(vars, "outcome").map_err(in_instance)?,
        process_name: i.process_name.unwrap_or_else(|| i.process_id.clone()),
        process_id: i.process_id,
    })
}

fn task_summary_record(t: TaskSummaryJson) -> Result<TaskRecord, String> {
    let in_task = |e: String| format!("task {}: {e}", t.id);
    Ok(TaskRecord {
        id: t.id,
        status: task_status(&t.status).map_err(in_task)?,
        created_at: kie_date(t.created_on.as_ref()).map_err(in_task)?,
        name: t.name,
        description: non_blank(t.description),
        actual_owner: non_blank(t.actual_owner),
        process_instance_id: t.process_instance_id,
        container_id: t.container_id,
        customer_id: None,
    })
}

fn task_instance_record(t: TaskInstanceJson) -> Result<TaskRecord, String> {
    let in_task = |e: String| format!("task {}: {e}", t.id);
    Ok(TaskRecord {
        id: t.id,
        status: task_status(&t.status).map_err(in_task)?,
        created_at: kie_date(t.created_on.as_ref()).map_err(in_task)?,
        customer_id: text_variable(t.input_data.as_ref(), "customerId")
            .map_err(in_task)?
            .filter(|c| !c.is_empty())
            .map(CustomerId::from_upstream),
        name: t.name,
        description: non_blank(t.description),
        actual_owner: non_blank(t.actual_owner),
        process_instance_id: t.process_instance_id,
        container_id: t.container_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_parse_kie_dates_states_and_variables() {
        let json = serde_json::json!({
            "process-instance-id": 42, "process-id": "returns.ReturnRequest",
            "process-name": "Return request", "process-instance-state": 2,
            "start-date": {"java.util.Date": 1714557600000_i64},
            "process-instance-variables": {"customerId": "cust-0001", "orderId": "ord-000001",
                                           "reason": "Too small", "outcome": "picked-up"}
        });
        let record = instance_record(serde_json::from_value(json.clone()).unwrap()).unwrap();
        assert_eq!(record.state, ProcessState::Completed);
        assert_eq!(
            record.started_at.unwrap().to_rfc3339(),
            "2024-05-01T10:00:00+00:00"
        );
        assert_eq!(record.customer_id.unwrap().as_str(), "cust-0001");
        assert_eq!(record.outcome.as_deref(), Some("picked-up"));

        let mut suspended = json;
        suspended["process-instance-state"] = 4.into();
        assert!(instance_record(serde_json::from_value(suspended).unwrap()).is_err());
    }

    #[test]
    fn task_statuses_are_kie_names() {
        assert_eq!(task_status("InProgress").unwrap(), TaskStatus::InProgress);
        assert_eq!(task_status("Exited").unwrap(), TaskStatus::Exited);
        assert!(task_status("in_progress").is_err());
    }
}
