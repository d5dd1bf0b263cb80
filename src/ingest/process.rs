//! The process server's webhooks: a KIE process and task event listener (deployed with the
//! return process's KJAR) posting JSON after each task or process transition.
//!
//! ```json
//! {"eventId":"3d1f6a2e-8c4b-4f0a-9b7e-5a2c1d0e9f33","type":"TaskClaimed","timestamp":1767261600000,
//!  "containerId":"returns","processId":"returns.ReturnRequest","processInstanceId":42,
//!  "taskId":4,"taskName":"ApproveReturn","taskStatus":"Reserved","actualOwner":"agent-01",
//!  "potentialOwners":["agents"],
//!  "processVariables":{"customerId":"cust-0001","orderId":"ord-000123","reason":"Too big"}}
//! ```
//! - `TaskCreated`, `TaskClaimed`, `TaskStarted`, `TaskCompleted`, `TaskReleased` (`taskId`
//!   required) -> `TaskUpdated`, with the task's potential owners (users and groups) and its
//!   actual owner as the audience: "Return approval waiting (task 4)".
//! - `ProcessStarted`, `ProcessCompleted` -> `ProcessUpdated`: "Return request 42 for
//!   ord-000123 started".
//!
//! The customer and order come from the process variables `customerId` and `orderId` (both
//! optional; a process without them concerns no customer).

use resolvers::events::{DomainEvent, EventKind, Subject};
use resolvers::ids::{CustomerId, OrderId};
use resolvers::ports::Source;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    EventError, MAX_OWNERS, checked_id, decode, discriminator, event_id, from_millis, label,
};

const TASK_TYPES: [&str; 5] = [
    "TaskCreated",
    "TaskClaimed",
    "TaskStarted",
    "TaskCompleted",
    "TaskReleased",
];
const PROCESS_TYPES: [&str; 2] = ["ProcessStarted", "ProcessCompleted"];

/// The return process's definition id.
const RETURN_PROCESS: &str = "returns.ReturnRequest";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProcessEvent {
    event_id: String,
    timestamp: i64,
    #[serde(default)]
    process_id: Option<String>,
    process_instance_id: i64,
    #[serde(default)]
    task_id: Option<i64>,
    #[serde(default)]
    task_name: Option<String>,
    #[serde(default)]
    actual_owner: Option<String>,
    #[serde(default)]
    potential_owners: Vec<String>,
    #[serde(default)]
    process_variables: Map<String, Value>,
}

/// Parses a verified process server webhook.
pub(super) fn normalize(body: &[u8]) -> Result<DomainEvent, EventError> {
    let value = super::parse_object(body)?;
    let kind_name = discriminator(&value, &["type"])?.to_owned();
    let is_task = TASK_TYPES.contains(&kind_name.as_str());
    if !is_task && !PROCESS_TYPES.contains(&kind_name.as_str()) {
        let supported: Vec<&str> = TASK_TYPES.iter().chain(&PROCESS_TYPES).copied().collect();
        return Err(super::unsupported("event type", &kind_name, &supported));
    }
    let event: ProcessEvent = decode(value, "")?;
    let variable = |name: &str| match event.process_variables.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.as_str())),
        Some(_) => Err(EventError::Malformed(format!(
            "`processVariables.{name}` must be a string"
        ))),
    };
    let customer_id = variable("customerId")?
        .map(|raw| checked_id("processVariables.customerId", raw, CustomerId::parse))
        .transpose()?;
    let order_id = variable("orderId")?
        .map(|raw| checked_id("processVariables.orderId", raw, OrderId::parse))
        .transpose()?;
    let instance = event.process_instance_id;
    if instance < 0 {
        return Err(EventError::Malformed(
            "`processInstanceId` must not be negative".into(),
        ));
    }

    let (kind, task_id, audience, summary) = if is_task {
        let task_id = event.task_id.filter(|id| *id >= 0).ok_or_else(|| {
            EventError::Malformed(format!("a {kind_name} event needs a `taskId` (0 or more)"))
        })?;
        let task_name = event
            .task_name
            .as_deref()
            .map(|raw| label("taskName", raw))
            .transpose()?;
        let actual_owner = event
            .actual_owner
            .as_deref()
            .map(|raw| label("actualOwner", raw))
            .transpose()?;
        if event.potential_owners.len() > MAX_OWNERS {
            return Err(EventError::Malformed(format!(
                "`potentialOwners` may name at most {MAX_OWNERS} users and groups"
            )));
        }
        let mut audience: Vec<String> = Vec::with_capacity(event.potential_owners.len() + 1);
        for owner in event
            .potential_owners
            .iter()
            .map(String::as_str)
            .chain(actual_owner)
        {
            let owner = label("potentialOwners", owner)?;
            if !audience.iter().any(|known| known == owner) {
                audience.push(owner.to_owned());
            }
        }
        let summary = task_summary(&kind_name, task_name, actual_owner, task_id);
        (EventKind::TaskUpdated, Some(task_id), audience, summary)
    } else {
        let outcome = variable("outcome")?
            .map(|raw| label("processVariables.outcome", raw))
            .transpose()?;
        let process_id = event
            .process_id
            .as_deref()
            .map(|raw| label("processId", raw))
            .transpose()?;
        let summary = process_summary(
            &kind_name,
            process_id,
            instance,
            order_id.as_ref().map(OrderId::as_str),
            outcome,
        );
        (EventKind::ProcessUpdated, None, Vec::new(), summary)
    };
    Ok(DomainEvent {
        id: event_id(Source::Process, "eventId", &event.event_id)?,
        kind,
        source: Source::Process,
        customer_id,
        subject: Subject {
            order_id,
            task_id,
            process_instance_id: Some(instance),
            ..Subject::default()
        },
        occurred_at: from_millis("timestamp", event.timestamp)?,
        audience,
        summary,
        payload: serde_json::Value::Null,
    })
}

/// "Return approval waiting (task 4)".
fn task_summary(kind: &str, name: Option<&str>, owner: Option<&str>, task_id: i64) -> String {
    let what = match name {
        Some("ApproveReturn") => "Return approval",
        Some("ConfirmPickup") => "Return pickup",
        Some(other) => other,
        None => "Task",
    };
    let happened = match (kind, owner) {
        ("TaskCreated", _) => "waiting".to_owned(),
        ("TaskClaimed", Some(owner)) => format!("claimed by {owner}"),
        ("TaskClaimed", None) => "claimed".to_owned(),
        ("TaskStarted", _) => "in progress".to_owned(),
        ("TaskCompleted", _) => "done".to_owned(),
        _ => "waiting again".to_owned(),
    };
    format!("{what} {happened} (task {task_id})")
}

/// "Return request 42 for ord-000123 started".
fn process_summary(
    kind: &str,
    process_id: Option<&str>,
    instance: i64,
    order_id: Option<&str>,
    outcome: Option<&str>,
) -> String {
    let what = match process_id {
        Some(RETURN_PROCESS) | None => format!("Return request {instance}"),
        Some(other) => format!("Process {other} {instance}"),
    };
    let about = order_id.map(|id| format!(" for {id}")).unwrap_or_default();
    let happened = match (kind, outcome) {
        ("ProcessStarted", _) => "started".to_owned(),
        (_, Some(outcome)) => format!("completed: {outcome}"),
        _ => "completed".to_owned(),
    };
    format!("{what}{about} {happened}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Result<DomainEvent, EventError> {
        normalize(value.to_string().as_bytes())
    }

    fn claimed() -> Value {
        json!({"eventId": "3d1f6a2e-8c4b-4f0a-9b7e-5a2c1d0e9f33", "type": "TaskClaimed",
               "timestamp": 1_767_261_600_000_i64, "containerId": "returns",
               "processId": "returns.ReturnRequest", "processInstanceId": 42,
               "taskId": 4, "taskName": "ApproveReturn", "taskStatus": "Reserved",
               "actualOwner": "agent-01", "potentialOwners": ["agents"],
               "processVariables": {"customerId": "cust-0001", "orderId": "ord-000123",
                                    "reason": "Too big"}})
    }

    #[test]
    fn a_task_event_is_for_its_potential_and_actual_owners() {
        assert_eq!(
            parse(claimed()),
            Ok(DomainEvent {
                id: "process:3d1f6a2e-8c4b-4f0a-9b7e-5a2c1d0e9f33".into(),
                kind: EventKind::TaskUpdated,
                source: Source::Process,
                customer_id: Some(CustomerId::from_upstream("cust-0001")),
                subject: Subject {
                    order_id: Some(OrderId::from_upstream("ord-000123")),
                    task_id: Some(4),
                    process_instance_id: Some(42),
                    ..Subject::default()
                },
                occurred_at: "2026-01-01T10:00:00Z".parse().unwrap(),
                audience: vec!["agents".into(), "agent-01".into()],
                payload: serde_json::Value::Null,
                summary: "Return approval claimed by agent-01 (task 4)".into(),
            })
        );
        let mut created = claimed();
        created["type"] = json!("TaskCreated");
        created["actualOwner"] = Value::Null;
        let created = parse(created).unwrap();
        assert_eq!(created.audience, ["agents"]);
        assert_eq!(created.summary, "Return approval waiting (task 4)");

        let mut pickup = claimed();
        pickup["type"] = json!("TaskCompleted");
        pickup["taskName"] = json!("ConfirmPickup");
        pickup["actualOwner"] = json!("cust-0001");
        pickup["potentialOwners"] = json!(["cust-0001"]);
        let pickup = parse(pickup).unwrap();
        assert_eq!(pickup.audience, ["cust-0001"]);
        assert_eq!(pickup.summary, "Return pickup done (task 4)");
        assert_eq!(
            task_summary("TaskStarted", None, Some("agent-02"), 9),
            "Task in progress (task 9)"
        );
        assert_eq!(
            task_summary("TaskReleased", Some("ApproveReturn"), None, 9),
            "Return approval waiting again (task 9)"
        );
    }

    #[test]
    fn a_process_event_concerns_the_instance() {
        let started = json!({"eventId": "e-1", "type": "ProcessStarted", "timestamp": 1_767_261_600_000_i64,
                             "containerId": "returns", "processId": "returns.ReturnRequest",
                             "processInstanceId": 42, "potentialOwners": [],
                             "processVariables": {"customerId": "cust-0001", "orderId": "ord-000123"}});
        assert_eq!(
            parse(started.clone()),
            Ok(DomainEvent {
                id: "process:e-1".into(),
                kind: EventKind::ProcessUpdated,
                source: Source::Process,
                customer_id: Some(CustomerId::from_upstream("cust-0001")),
                subject: Subject {
                    order_id: Some(OrderId::from_upstream("ord-000123")),
                    process_instance_id: Some(42),
                    ..Subject::default()
                },
                occurred_at: "2026-01-01T10:00:00Z".parse().unwrap(),
                audience: vec![],
                payload: serde_json::Value::Null,
                summary: "Return request 42 for ord-000123 started".into(),
            })
        );
        let mut completed = started;
        completed["type"] = json!("ProcessCompleted");
        completed["processVariables"]["outcome"] = json!("rejected");
        assert_eq!(
            parse(completed).unwrap().summary,
            "Return request 42 for ord-000123 completed: rejected"
        );
        assert_eq!(
            process_summary("ProcessCompleted", Some("hr.Onboarding"), 7, None, None),
            "Process hr.Onboarding 7 completed"
        );
    }

    #[test]
    fn says_what_is_wrong() {
        let mut no_task = claimed();
        no_task.as_object_mut().unwrap().remove("taskId");
        assert_eq!(
            parse(no_task),
            Err(EventError::Malformed(
                "a TaskClaimed event needs a `taskId` (0 or more)".into()
            ))
        );
        let mut bad_variable = claimed();
        bad_variable["processVariables"]["customerId"] = json!(17);
        assert_eq!(
            parse(bad_variable),
            Err(EventError::Malformed(
                "`processVariables.customerId` must be a string".into()
            ))
        );
        let mut bad_owner = claimed();
        bad_owner["potentialOwners"] = json!(["agents", ""]);
        assert!(
            matches!(parse(bad_owner), Err(EventError::Malformed(m)) if m.starts_with("`potentialOwners`"))
        );
        let mut wrong_type = claimed();
        wrong_type["timestamp"] = json!("yesterday");
        assert!(
            matches!(parse(wrong_type), Err(EventError::Malformed(m)) if m.starts_with("invalid type: string \"yesterday\", expected i64"))
        );
        let mut other = claimed();
        other["type"] = json!("TaskSkipped");
        assert_eq!(
            parse(other),
            Err(EventError::Unsupported(
                "unsupported event type `TaskSkipped`; supported: TaskCreated, TaskClaimed, \
                 TaskStarted, TaskCompleted, TaskReleased, ProcessStarted, ProcessCompleted"
                    .into()
            ))
        );
    }
}
