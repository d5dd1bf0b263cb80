//! The parcel carrier's webhooks: a parcel was scanned.
//!
//! ```json
//! {"id":"whk_9f2c41","event":"tracking.updated","created_at":"2026-01-01T10:00:00Z",
//!  "data":{"tracking_number":"PC100000123","carrier":"PARCELCO","status":"OUT_FOR_DELIVERY",
//!          "location":"London, GB","description":"Out for delivery",
//!          "reference":"ord-000123","customer_reference":"cust-0001"}}
//! ```
//! becomes a `ShipmentUpdated` event `carrier:whk_9f2c41` about the parcel and, through
//! `reference` (the order id we booked the shipment with), the order, for the customer in
//! `customer_reference`: "Parcel PC100000123 is out for delivery". Both references are
//! optional (a parcel booked without them is still an event, just about no order).

use chrono::{DateTime, Utc};
use resolvers::events::{DomainEvent, EventKind, Subject};
use resolvers::ids::{CustomerId, OrderId};
use resolvers::ports::Source;
use serde::Deserialize;
use serde_json::Value;

use super::{EventError, checked_id, decode, discriminator, event_id, label};

/// The one event type the carrier sends.
const TRACKING_UPDATED: &str = "tracking.updated";

/// Longest tracking number the carrier issues.
const MAX_TRACKING_NUMBER_LEN: usize = 40;

#[derive(Deserialize)]
struct Envelope {
    id: String,
    created_at: DateTime<Utc>,
    data: Value,
}

#[derive(Deserialize)]
struct TrackingUpdated {
    tracking_number: String,
    status: String,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    customer_reference: Option<String>,
}

/// Parses a verified carrier webhook.
pub(super) fn normalize(body: &[u8]) -> Result<DomainEvent, EventError> {
    let value = super::parse_object(body)?;
    let kind = discriminator(&value, &["event"])?;
    if kind != TRACKING_UPDATED {
        return Err(super::unsupported("event", kind, &[TRACKING_UPDATED]));
    }
    let envelope: Envelope = decode(value, "")?;
    let data: TrackingUpdated = decode(envelope.data, "data")?;
    let tracking_number = data.tracking_number;
    if tracking_number.is_empty()
        || tracking_number.len() > MAX_TRACKING_NUMBER_LEN
        || !tracking_number.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(EventError::Malformed(format!(
            "`data.tracking_number` must be 1 to {MAX_TRACKING_NUMBER_LEN} letters and digits"
        )));
    }
    let status = label("data.status", &data.status)?;
    let order_id = data
        .reference
        .as_deref()
        .map(|raw| checked_id("data.reference", raw, OrderId::parse))
        .transpose()?;
    let customer_id = data
        .customer_reference
        .as_deref()
        .map(|raw| checked_id("data.customer_reference", raw, CustomerId::parse))
        .transpose()?;
    Ok(DomainEvent {
        id: event_id(Source::Carrier, "id", &envelope.id)?,
        kind: EventKind::ShipmentUpdated,
        source: Source::Carrier,
        summary: summary(&tracking_number, status),
        customer_id,
        subject: Subject {
            order_id,
            tracking_number: Some(tracking_number),
            ..Subject::default()
        },
        occurred_at: envelope.created_at,
        audience: Vec::new(),
        payload: serde_json::Value::Null,
    })
}

fn summary(tracking_number: &str, status: &str) -> String {
    let what = match status {
        "LABEL_CREATED" => "has a shipping label".to_owned(),
        "IN_TRANSIT" => "is on its way".to_owned(),
        "OUT_FOR_DELIVERY" => "is out for delivery".to_owned(),
        "DELIVERED" => "was delivered".to_owned(),
        "EXCEPTION" => "could not be delivered".to_owned(),
        other => format!("is now {other}"),
    };
    format!("Parcel {tracking_number} {what}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Result<DomainEvent, EventError> {
        normalize(value.to_string().as_bytes())
    }

    fn out_for_delivery() -> Value {
        json!({"id": "whk_9f2c41", "event": "tracking.updated",
               "created_at": "2026-01-01T10:00:00Z",
               "data": {"tracking_number": "PC100000123", "carrier": "PARCELCO",
                        "status": "OUT_FOR_DELIVERY", "location": "London, GB",
                        "description": "Out for delivery",
                        "reference": "ord-000123", "customer_reference": "cust-0001"}})
    }

    #[test]
    fn a_scan_becomes_shipment_updated_about_the_order() {
        assert_eq!(
            parse(out_for_delivery()),
            Ok(DomainEvent {
                id: "carrier:whk_9f2c41".into(),
                kind: EventKind::ShipmentUpdated,
                source: Source::Carrier,
                customer_id: Some(CustomerId::from_upstream("cust-0001")),
                subject: Subject {
                    order_id: Some(OrderId::from_upstream("ord-000123")),
                    tracking_number: Some("PC100000123".into()),
                    ..Subject::default()
                },
                occurred_at: "2026-01-01T10:00:00Z".parse().unwrap(),
                audience: vec![],
                payload: serde_json::Value::Null,
                summary: "Parcel PC100000123 is out for delivery".into(),
            })
        );
    }

    #[test]
    fn references_are_optional_and_every_status_reads_well() {
        let mut bare = out_for_delivery();
        let data = bare["data"].as_object_mut().unwrap();
        data.remove("reference");
        data.remove("customer_reference");
        data.insert("status".into(), json!("DELIVERED"));
        let event = parse(bare).unwrap();
        assert_eq!(event.customer_id, None);
        assert_eq!(event.subject.order_id, None);
        assert_eq!(event.summary, "Parcel PC100000123 was delivered");
        assert_eq!(
            summary("PC1", "LABEL_CREATED"),
            "Parcel PC1 has a shipping label"
        );
        assert_eq!(summary("PC1", "IN_TRANSIT"), "Parcel PC1 is on its way");
        assert_eq!(
            summary("PC1", "EXCEPTION"),
            "Parcel PC1 could not be delivered"
        );
        assert_eq!(summary("PC1", "RETURNED"), "Parcel PC1 is now RETURNED");
    }

    #[test]
    fn says_what_is_wrong() {
        let mut bad = out_for_delivery();
        bad["data"]["tracking_number"] = json!("PC1/../x");
        assert_eq!(
            parse(bad),
            Err(EventError::Malformed(
                "`data.tracking_number` must be 1 to 40 letters and digits".into()
            ))
        );
        let mut missing = out_for_delivery();
        missing.as_object_mut().unwrap().remove("created_at");
        assert_eq!(
            parse(missing),
            Err(EventError::Malformed("missing field `created_at`".into()))
        );
        let mut other = out_for_delivery();
        other["event"] = json!("shipment.created");
        assert_eq!(
            parse(other),
            Err(EventError::Unsupported(
                "unsupported event `shipment.created`; supported: tracking.updated".into()
            ))
        );
    }
}
