//! The backend's webhooks (the company's own services): an order was placed or changed status,
//! a product's price or stock changed.
//!
//! ```json
//! {"id":"evt_01JGZ3","type":"order.status_changed","occurredAt":"2026-01-01T10:00:00Z",
//!  "data":{"orderId":"ord-000123","customerId":"cust-0001","status":"SHIPPED"}}
//! ```
//! becomes an `OrderUpdated` event `backend:evt_01JGZ3` about the order, for the customer:
//! "Order ord-000123 is now SHIPPED".
//!
//! ```json
//! {"id":"evt_01JH00","type":"product.updated","occurredAt":"2026-01-01T10:00:00Z",
//!  "data":{"productId":"prod-0042","name":"Trail Runner","price":{"minorUnits":7990,"currency":"EUR"},
//!          "inStock":true,"previous":{"price":{"minorUnits":8990,"currency":"EUR"},"inStock":false}}}
//! ```
//! becomes a `ProductUpdated` event about the product, for no customer in particular (the
//! marketing rule finds who cares). Unknown fields are ignored.

use chrono::{DateTime, Utc};
use resolvers::events::{DomainEvent, EventKind, Subject};
use resolvers::ids::{CustomerId, OrderId, ProductId};
use resolvers::ports::Source;
use serde::Deserialize;
use serde_json::Value;

use super::{EventError, checked_id, decode, discriminator, event_id, label};

const ORDER_STATUS_CHANGED: &str = "order.status_changed";
const PRODUCT_UPDATED: &str = "product.updated";

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

/// What a `product.updated` must carry (the rest is read by the marketing rule from the
/// payload, and checked there).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProductUpdated {
    product_id: String,
}

/// Parses a verified backend webhook.
pub(super) fn normalize(body: &[u8]) -> Result<DomainEvent, EventError> {
    let value = super::parse_object(body)?;
    let kind = discriminator(&value, &["type"])?;
    if kind != ORDER_STATUS_CHANGED && kind != PRODUCT_UPDATED {
        return Err(super::unsupported(
            "event type",
            kind,
            &[ORDER_STATUS_CHANGED, PRODUCT_UPDATED],
        ));
    }
    let product = kind == PRODUCT_UPDATED;
    let envelope: Envelope = decode(value, "")?;
    let id = event_id(Source::Backend, "id", &envelope.id)?;
    if product {
        let data: ProductUpdated = decode(envelope.data, "data")?;
        let product_id = checked_id("data.productId", &data.product_id, ProductId::parse)?;
        return Ok(DomainEvent {
            id,
            kind: EventKind::ProductUpdated,
            source: Source::Backend,
            summary: format!("Product {product_id} changed"),
            customer_id: None,
            subject: Subject {
                product_id: Some(product_id),
                ..Subject::default()
            },
            occurred_at: envelope.occurred_at,
            audience: Vec::new(),
            payload: Value::Null,
        });
    }
    let data: OrderStatusChanged = decode(envelope.data, "data")?;
    let order_id = checked_id("data.orderId", &data.order_id, OrderId::parse)?;
    let customer_id = checked_id("data.customerId", &data.customer_id, CustomerId::parse)?;
    let status = label("data.status", &data.status)?;
    Ok(DomainEvent {
        id,
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
        payload: Value::Null,
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
    fn a_product_update_becomes_product_updated_for_no_customer() {
        let event = parse(json!({"id": "evt_p1", "type": "product.updated",
            "occurredAt": "2026-01-01T10:00:00Z",
            "data": {"productId": "prod-0042", "name": "Trail Runner", "inStock": true}}))
        .unwrap();
        assert_eq!(event.kind, EventKind::ProductUpdated);
        assert_eq!(event.id, "backend:evt_p1");
        assert_eq!(event.customer_id, None);
        assert_eq!(
            event.subject.product_id,
            Some(ProductId::from_upstream("prod-0042"))
        );
        let no_id = parse(json!({"id": "evt_p2", "type": "product.updated",
            "occurredAt": "2026-01-01T10:00:00Z", "data": {"name": "x"}}));
        assert_eq!(
            no_id,
            Err(EventError::Malformed(
                "data: missing field `productId`".into()
            ))
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
                "unsupported event type `order.deleted`; supported: order.status_changed, product.updated".into()
            ))
        );
    }
}
