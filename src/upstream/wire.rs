//! Wire pieces more than one adapter reads: money, enum names, plain checks.
//!
//! Everything here validates strictly: a value outside the contract is an error message that the
//! adapter turns into `Unavailable` (a malformed answer), never a panic or a silent default.

use resolvers::records::{MoneyRecord, OrderStatus};
use serde::Deserialize;

/// Money on the wire: `{"minorUnits": 1999, "currency": "EUR"}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MoneyJson {
    pub(crate) minor_units: i64,
    pub(crate) currency: String,
}

impl MoneyJson {
    /// The record, if the currency is an ISO 4217 code (three upper-case letters).
    pub(crate) fn into_record(self) -> Result<MoneyRecord, String> {
        let iso = self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_uppercase());
        if !iso {
            return Err(format!(
                "`{}` is not an ISO 4217 currency code",
                self.currency
            ));
        }
        Ok(MoneyRecord {
            minor_units: self.minor_units,
            currency: self.currency,
        })
    }
}

/// The backend's name of an order status (`SHIPPED`).
pub(crate) fn order_status_name(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Pending => "PENDING",
        OrderStatus::Confirmed => "CONFIRMED",
        OrderStatus::Shipped => "SHIPPED",
        OrderStatus::Delivered => "DELIVERED",
        OrderStatus::Cancelled => "CANCELLED",
    }
}

/// An error unless `value` has some text.
pub(crate) fn non_empty(what: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("{what} is empty"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_needs_an_iso_currency() {
        let ok = MoneyJson {
            minor_units: 1999,
            currency: "EUR".into(),
        };
        assert_eq!(
            ok.into_record().unwrap(),
            MoneyRecord {
                minor_units: 1999,
                currency: "EUR".into()
            }
        );
        for bad in ["eur", "EURO", "", "E1R"] {
            let money = MoneyJson {
                minor_units: 1,
                currency: bad.into(),
            };
            assert!(money.into_record().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn order_status_names_round_trip_through_serde() {
        for status in [
            OrderStatus::Pending,
            OrderStatus::Confirmed,
            OrderStatus::Shipped,
            OrderStatus::Delivered,
            OrderStatus::Cancelled,
        ] {
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json, order_status_name(status));
        }
    }
}
