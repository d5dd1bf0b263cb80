//! The CRM's webhooks: Salesforce Change Data Capture events on `Case` and `CaseComment`, as a
//! Pub/Sub API relay forwards them (the Avro event decoded to JSON, one record per webhook).
//!
//! ```json
//! {"schema":"Y1qQ9rSZoUuOLNFy5mcWqw",
//!  "event":{"replayId":1042,"EventUuid":"6f0c1d8e-2b1a-4c57-9e7a-0d3f5b2a9c11"},
//!  "payload":{"ChangeEventHeader":{"entityName":"Case","changeType":"UPDATE",
//!               "recordIds":["500000000000001AAA"],"commitTimestamp":1767261600000,
//!               "transactionKey":"0002e8b1-...","changedFields":["Status","LastModifiedDate"], ...},
//!             "Status":"Closed","CaseNumber":"00001001","Customer_Id__c":"cust-0001"}}
//! ```
//! The relay enriches every event with `CaseNumber` (of the case, or a comment's parent case)
//! and `Customer_Id__c` (the customer behind the case's contact), which change events do not
//! carry by themselves, and splits multi-record events: `recordIds` holds exactly one id.
//!
//! - `Case` `CREATE`/`UPDATE` (and the `GAP_` variants Salesforce sends when it could not
//!   capture the values) -> `CaseUpdated`: "Case 00001001 is now Closed".
//! - `CaseComment` `CREATE` (`GAP_CREATE`) -> `CaseCommentAdded` about `ParentId`: "New comment
//!   on case 00001001". An internal note (`IsPublished` false or absent) is still an event, for
//!   agents, but gets no customer id, so no customer's feed ever shows it.
//!
//! The event id is `crm:<EventUuid>` (`replayId` is per channel and may be reused after a
//! channel reset; the UUID is unique per event).

use resolvers::events::{DomainEvent, EventKind, Subject};
use resolvers::ids::{CaseId, CustomerId};
use resolvers::ports::Source;
use serde::Deserialize;
use serde_json::Value;

use super::{EventError, checked_id, decode, discriminator, event_id, from_millis, label};

const CASE: &str = "Case";
const CASE_COMMENT: &str = "CaseComment";
const CASE_CHANGES: [&str; 4] = ["CREATE", "UPDATE", "GAP_CREATE", "GAP_UPDATE"];
const COMMENT_CHANGES: [&str; 2] = ["CREATE", "GAP_CREATE"];

#[derive(Deserialize)]
struct Relayed {
    event: Value,
    payload: Value,
}

#[derive(Deserialize)]
struct EventMeta {
    #[serde(rename = "EventUuid")]
    event_uuid: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangeEventHeader {
    record_ids: Vec<String>,
    commit_timestamp: i64,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "ChangeEventHeader")]
    header: ChangeEventHeader,
    #[serde(rename = "Status", default)]
    status: Option<String>,
    #[serde(rename = "ParentId", default)]
    parent_id: Option<String>,
    #[serde(rename = "IsPublished", default)]
    is_published: Option<bool>,
    #[serde(rename = "CaseNumber", default)]
    case_number: Option<String>,
    #[serde(rename = "Customer_Id__c", default)]
    customer_id: Option<String>,
}

/// Parses a verified CRM webhook.
pub(super) fn normalize(body: &[u8]) -> Result<DomainEvent, EventError> {
    let value = super::parse_object(body)?;
    let entity = discriminator(&value, &["payload", "ChangeEventHeader", "entityName"])?;
    let change = discriminator(&value, &["payload", "ChangeEventHeader", "changeType"])?;
    let (kind, allowed) = match entity {
        CASE => (EventKind::CaseUpdated, &CASE_CHANGES[..]),
        CASE_COMMENT => (EventKind::CaseCommentAdded, &COMMENT_CHANGES[..]),
        other => {
            return Err(super::unsupported(
                "entityName",
                other,
                &[CASE, CASE_COMMENT],
            ));
        }
    };
    if !allowed.contains(&change) {
        return Err(super::unsupported(
            &format!("changeType for {entity}"),
            change,
            allowed,
        ));
    }
    let change = change.to_owned();
    let relayed: Relayed = decode(value, "")?;
    let meta: EventMeta = decode(relayed.event, "event")?;
    let payload: Payload = decode(relayed.payload, "payload")?;
    let [record_id] = payload.header.record_ids.as_slice() else {
        return Err(EventError::Malformed(
            "`payload.ChangeEventHeader.recordIds` must hold exactly one id (the relay splits \
             multi-record change events)"
                .into(),
        ));
    };
    let record_id = checked_id(
        "payload.ChangeEventHeader.recordIds",
        record_id,
        CaseId::parse,
    )?;
    let occurred_at = from_millis(
        "payload.ChangeEventHeader.commitTimestamp",
        payload.header.commit_timestamp,
    )?;
    let customer_id = payload
        .customer_id
        .as_deref()
        .map(|raw| checked_id("payload.Customer_Id__c", raw, CustomerId::parse))
        .transpose()?;
    let case_number = payload
        .case_number
        .as_deref()
        .map(|raw| label("payload.CaseNumber", raw))
        .transpose()?;
    let status = payload
        .status
        .as_deref()
        .map(|raw| label("payload.Status", raw))
        .transpose()?;

    let (case_id, customer_id, summary) = match kind {
        EventKind::CaseCommentAdded => {
            let parent = payload.parent_id.as_deref().ok_or_else(|| {
                EventError::Malformed("a CaseComment event needs `payload.ParentId`".into())
            })?;
            let case_id = checked_id("payload.ParentId", parent, CaseId::parse)?;
            let named = case_number.unwrap_or(case_id.as_str());
            let published = payload.is_published == Some(true);
            let summary = format!("New comment on case {named}");
            (case_id, customer_id.filter(|_| published), summary)
        }
        _ => {
            let named = case_number.unwrap_or(record_id.as_str()).to_owned();
            let summary = match (change.as_str(), status) {
                ("CREATE", _) => format!("Case {named} was opened"),
                (_, Some(status)) => format!("Case {named} is now {status}"),
                _ => format!("Case {named} was updated"),
            };
            (record_id, customer_id, summary)
        }
    };
    Ok(DomainEvent {
        id: event_id(Source::Crm, "event.EventUuid", &meta.event_uuid)?,
        kind,
        source: Source::Crm,
        customer_id,
        subject: Subject {
            case_id: Some(case_id),
            ..Subject::default()
        },
        occurred_at,
        audience: Vec::new(),
        payload: serde_json::Value::Null,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Result<DomainEvent, EventError> {
        normalize(value.to_string().as_bytes())
    }

    fn header(entity: &str, change: &str, record: &str) -> Value {
        json!({"entityName": entity, "changeType": change, "changeOrigin": "com/salesforce/api/rest/60.0",
               "recordIds": [record], "commitTimestamp": 1_767_261_600_000_i64,
               "transactionKey": "0002e8b1-6d4f-8a2b-1c9e-3f5a7b9d0e12", "sequenceNumber": 1,
               "commitNumber": 11_744_356_791_u64, "commitUser": "005000000000001AAA",
               "changedFields": ["Status", "LastModifiedDate"], "nulledFields": [], "diffFields": []})
    }

    fn case_closed() -> Value {
        json!({"schema": "Y1qQ9rSZoUuOLNFy5mcWqw",
               "event": {"replayId": 1042, "EventUuid": "6f0c1d8e-2b1a-4c57-9e7a-0d3f5b2a9c11"},
               "payload": {"ChangeEventHeader": header("Case", "UPDATE", "500000000000001AAA"),
                           "Status": "Closed", "LastModifiedDate": "2026-01-01T10:00:00.000Z",
                           "CaseNumber": "00001001", "Customer_Id__c": "cust-0001"}})
    }

    fn comment(published: Option<bool>) -> Value {
        let mut payload = json!({"ChangeEventHeader": header("CaseComment", "CREATE", "00a000000000009AAA"),
                                 "ParentId": "500000000000001AAA", "CommentBody": "We are on it.",
                                 "CaseNumber": "00001001", "Customer_Id__c": "cust-0001"});
        if let Some(published) = published {
            payload["IsPublished"] = json!(published);
        }
        json!({"schema": "Zm9vYmFy", "event": {"replayId": 1043, "EventUuid": "0b6a2f4e-1111-4c57-9e7a-0d3f5b2a9c12"},
               "payload": payload})
    }

    #[test]
    fn a_case_change_becomes_case_updated() {
        assert_eq!(
            parse(case_closed()),
            Ok(DomainEvent {
                id: "crm:6f0c1d8e-2b1a-4c57-9e7a-0d3f5b2a9c11".into(),
                kind: EventKind::CaseUpdated,
                source: Source::Crm,
                customer_id: Some(CustomerId::from_upstream("cust-0001")),
                subject: Subject {
                    case_id: Some(CaseId::from_upstream("500000000000001AAA")),
                    ..Subject::default()
                },
                occurred_at: "2026-01-01T10:00:00Z".parse().unwrap(),
                audience: vec![],
                payload: serde_json::Value::Null,
                summary: "Case 00001001 is now Closed".into(),
            })
        );
        let mut created = case_closed();
        created["payload"]["ChangeEventHeader"]["changeType"] = json!("CREATE");
        assert_eq!(parse(created).unwrap().summary, "Case 00001001 was opened");
        let mut gap = case_closed();
        gap["payload"]["ChangeEventHeader"]["changeType"] = json!("GAP_UPDATE");
        let payload = gap["payload"].as_object_mut().unwrap();
        payload.remove("Status");
        payload.remove("CaseNumber");
        assert_eq!(
            parse(gap).unwrap().summary,
            "Case 500000000000001AAA was updated"
        );
    }

    #[test]
    fn a_published_comment_reaches_the_customer_and_an_internal_note_does_not() {
        let published = parse(comment(Some(true))).unwrap();
        assert_eq!(
            published,
            DomainEvent {
                id: "crm:0b6a2f4e-1111-4c57-9e7a-0d3f5b2a9c12".into(),
                kind: EventKind::CaseCommentAdded,
                source: Source::Crm,
                customer_id: Some(CustomerId::from_upstream("cust-0001")),
                subject: Subject {
                    case_id: Some(CaseId::from_upstream("500000000000001AAA")),
                    ..Subject::default()
                },
                occurred_at: "2026-01-01T10:00:00Z".parse().unwrap(),
                audience: vec![],
                payload: serde_json::Value::Null,
                summary: "New comment on case 00001001".into(),
            }
        );
        for internal in [Some(false), None] {
            let note = parse(comment(internal)).unwrap();
            assert_eq!(note.customer_id, None, "{internal:?}");
            assert_eq!(
                note.subject.case_id,
                Some(CaseId::from_upstream("500000000000001AAA"))
            );
        }
    }

    #[test]
    fn says_what_is_wrong() {
        let mut other = case_closed();
        other["payload"]["ChangeEventHeader"]["entityName"] = json!("Account");
        assert_eq!(
            parse(other),
            Err(EventError::Unsupported(
                "unsupported entityName `Account`; supported: Case, CaseComment".into()
            ))
        );
        let mut deleted = comment(Some(true));
        deleted["payload"]["ChangeEventHeader"]["changeType"] = json!("DELETE");
        assert_eq!(
            parse(deleted),
            Err(EventError::Unsupported(
                "unsupported changeType for CaseComment `DELETE`; supported: CREATE, GAP_CREATE"
                    .into()
            ))
        );
        let mut two = case_closed();
        two["payload"]["ChangeEventHeader"]["recordIds"] =
            json!(["500000000000001AAA", "500000000000002AAA"]);
        assert!(
            matches!(parse(two), Err(EventError::Malformed(m)) if m.contains("exactly one id"))
        );
        let mut orphan = comment(Some(true));
        orphan["payload"]
            .as_object_mut()
            .unwrap()
            .remove("ParentId");
        assert_eq!(
            parse(orphan),
            Err(EventError::Malformed(
                "a CaseComment event needs `payload.ParentId`".into()
            ))
        );
        let mut no_uuid = case_closed();
        no_uuid["event"]
            .as_object_mut()
            .unwrap()
            .remove("EventUuid");
        assert_eq!(
            parse(no_uuid),
            Err(EventError::Malformed(
                "event: missing field `EventUuid`".into()
            ))
        );
        let mut no_header = case_closed();
        no_header["payload"]
            .as_object_mut()
            .unwrap()
            .remove("ChangeEventHeader");
        assert_eq!(
            parse(no_header),
            Err(EventError::Malformed(
                "missing string field `payload.ChangeEventHeader.entityName`".into()
            ))
        );
    }
}
