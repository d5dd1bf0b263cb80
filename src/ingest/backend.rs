//! The backend's webhooks (the company's own services): an order was placed or changed status.
//!
//! ```json
//! {"id":"evt_01JGZ3","type":"order.status_changed","occurredAt":"2026-01-01T10:00:00Z",
//!  "data":{"orderId":"ord-000123","customerId":"cust-0001","status":"SHIPPED"}}
//! ```
//! becomes an `OrderUpdated` event `backend:evt_01JGZ3` about the order, for the customer:
//! "Order ord-000123 is now SHIPPED". Unknown fields are ignored.

use chrono::{DateTime, Utc};
use resolvers::events::{DomainEvent, EventKind, Subject};
use resolvers::ids::{CustomerId, OrderId};
use resolvers::ports::Source;
use serde::Deserialize;
use serde_json::Value;

use super::{EventError, checked_id, decode, discriminator, event_id, label};

/// The one event type the backend sends.
const ORDER_STATUS_CHANGED: &str = "order.status_changed";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    id: String,
    occurred_at: DateTime<Utc>,
    data: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderStatusChanged {
    order_id: String,
    customer_id: String,
    status: String,
}

/// Parses a verified backend webhook.
pub(super) fn normalize(body: &[u8]) -> Result<DomainEvent, EventError> {
    let value = super::parse_object(body)?;
    let kind = discriminator(&value, &["type"])?;
    if kind != ORDER_STATUS_CHANGED {
        return Err(super::unsupported(
            "event type",
            kind,
            &[ORDER_STATUS_CHANGED],
        ));
    }
    let envelope: Envelope = decode(value, "")?;
    let data: OrderStatusChanged = decode(envelope.data, "data")?;
    let order_id = checked_id("data.orderId", &data.order_id, OrderId::parse)?;
    let customer_id = checked_id("data.customerId", &data.customer_id, CustomerId::parse)?;
    let status = label("data.status", &data.status)?;
    Ok(DomainEvent {
        id: event_id(Source::Backend, "id", &envelope.id)?,
        kind: EventKind::OrderUpdated,
        source: Source::Backend,
        summary: format!("Order {order_id} is now {status}"),
        customer_id: Some(customer_id),
        subject: Subject {
            order_id: Some(order_id),
            ..Subject::default()
        },
        occurred_at: envelope.occurred_at,
        audience: Vec::new(),
        payload: serde_json::Value::Null,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Result<DomainEvent, EventError> {
        normalize(value.to_string().as_bytes())
    }

    fn shipped() -> Value {
        json!({"id": "evt_01JGZ3", "type": "order.status_changed",
               "occurredAt": "2026-01-01T11:00:00+01:00",
               "data": {"orderId": "ord-000123", "customerId": "cust-0001", "status": "SHIPPED"},
               "apiVersion": "2025-06-01"})
    }

    #[test]
    fn an_order_status_change_becomes_order_updated() {
        assert_eq!(
            parse(shipped()),
            Ok(DomainEvent {
                id: "backend:evt_01JGZ3".into(),
                kind: EventKind::OrderUpdated,
                source: Source::Backend,
                customer_id: Some(CustomerId::from_upstream("cust-0001")),
                subject: Subject {
                    order_id: Some(OrderId::from_upstream("ord-000123")),
                    ..Subject::default()
                },
                occurred_at: "2026-01-01T10:00:00Z".parse().unwrap(),
                audience: vec![],
                payload: serde_json::Value::Null,
                summary: "Order ord-000123 is now SHIPPED".into(),
            })
        );
    }

    #[test]
    fn says_what_is_wrong() {
        let mut missing = shipped();
        missing["data"].as_object_mut().unwrap().remove("status");
        assert_eq!(
            parse(missing),
            Err(EventError::Malformed("data: missing field `status`".into()))
        );
        let mut bad_time = shipped();
        bad_time["occurredAt"] = json!("yesterday");
        assert!(
            matches!(parse(bad_time), Err(EventError::Malformed(m)) if m.contains("input contains invalid characters"))
        );
        let mut bad_id = shipped();
        bad_id["data"]["orderId"] = json!("ord 1'");
        assert_eq!(
            parse(bad_id),
            Err(EventError::Malformed(
                "`data.orderId` is not a valid id: `ord 1'` (letters, digits, `-`, `_`, at most 64)"
                    .into()
            ))
        );
        let mut no_type = shipped();
        no_type.as_object_mut().unwrap().remove("type");
        assert_eq!(
            parse(no_type),
            Err(EventError::Malformed("missing string field `type`".into()))
        );
        assert_eq!(
            normalize(b"[1]"),
            Err(EventError::Malformed(
                "the body must be a JSON object".into()
            ))
        );
        let mut other = shipped();
        other["type"] = json!("order.deleted");
        assert_eq!(
            parse(other),
            Err(EventError::Unsupported(
                "unsupported event type `order.deleted`; supported: order.status_changed".into()
            ))
        );
    }
}
