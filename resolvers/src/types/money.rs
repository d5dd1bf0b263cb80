use async_graphql::Object;

use crate::records::MoneyRecord;

/// An amount of money in a currency.
pub(crate) struct Money(pub(crate) MoneyRecord);

/// Digits after the decimal point of a currency's minor unit (ISO 4217).
fn minor_digits(currency: &str) -> u32 {
    match currency {
        "JPY" | "KRW" | "ISK" => 0,
        "BHD" | "KWD" | "OMR" | "TND" | "JOD" => 3,
        _ => 2,
    }
}

impl Money {
    fn display(&self) -> String {
        let symbol = match self.0.currency.as_str() {
            "EUR" => "€",
            "USD" => "$",
            "GBP" => "£",
            "JPY" => "¥",
            _ => "",
        };
        let amount = self.decimal();
        if symbol.is_empty() {
            format!("{amount} {}", self.0.currency)
        } else if let Some(rest) = amount.strip_prefix('-') {
            format!("-{symbol}{rest}")
        } else {
            format!("{symbol}{amount}")
        }
    }

    fn decimal(&self) -> String {
        let digits = minor_digits(&self.0.currency);
        let minor = self.0.minor_units;
        if digits == 0 {
            return minor.to_string();
        }
        let scale = 10i64.pow(digits);
        let sign = if minor < 0 { "-" } else { "" };
        let abs = minor.unsigned_abs();
        format!(
            "{sign}{}.{:0width$}",
            abs / scale as u64,
            abs % scale as u64,
            width = digits as usize
        )
    }
}

/// An amount of money in a currency.
#[Object]
impl Money {
    /// The amount as a decimal string, exact (no floating point), e.g. `"89.99"`.
    async fn amount(&self) -> String {
        self.decimal()
    }

    /// ISO 4217 currency code, e.g. `EUR`.
    async fn currency_code(&self) -> &str {
        &self.0.currency
    }

    /// The amount in the currency's minor unit (e.g. cents), for arithmetic in apps.
    async fn minor_units(&self) -> i64 {
        self.0.minor_units
    }

    /// Ready to display, e.g. `€89.99`.
    async fn formatted(&self) -> String {
        self.display()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(minor_units: i64, currency: &str) -> Money {
        Money(MoneyRecord {
            minor_units,
            currency: currency.to_owned(),
        })
    }

    #[tokio::test]
    async fn formats_exactly_per_currency() {
        assert_eq!(money(8999, "EUR").decimal(), "89.99");
        assert_eq!(money(5, "EUR").decimal(), "0.05");
        assert_eq!(money(-150, "USD").display(), "-$1.50");
        assert_eq!(money(1200, "JPY").display(), "¥1200");
        assert_eq!(money(1234, "CHF").display(), "12.34 CHF");
    }
}
