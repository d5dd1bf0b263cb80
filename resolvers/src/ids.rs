//! Identifier types, parsed once at the edge.
//!
//! Every id that reaches a port has been checked here: non-empty, at most 64 characters, and
//! only ASCII letters, digits, `-` and `_`. That keeps ids safe to place in a URL path or a SOQL
//! string literal, so nothing behind the edge has to re-validate them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::GraphError;

/// Longest id accepted from a client.
const MAX_ID_LEN: usize = 64;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses an id given by a client; a malformed one is a `BAD_USER_INPUT` error.
            pub fn parse(raw: &str) -> Result<Self, GraphError> {
                if is_valid_id(raw) {
                    Ok(Self(raw.to_owned()))
                } else {
                    Err(GraphError::BadInput(format!(
                        "`{}` is not a valid {} id",
                        truncate(raw),
                        $what
                    )))
                }
            }

            /// Wraps an id that came from an upstream (trusted as it is).
            pub fn from_upstream(raw: impl Into<String>) -> Self {
                Self(raw.into())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A customer of the company (the backend's customer id, e.g. `cust-0001`).
    CustomerId,
    "customer"
);
id_type!(
    /// An order (the backend's order id).
    OrderId,
    "order"
);
id_type!(
    /// A product of the catalogue (the backend's product id).
    ProductId,
    "product"
);
id_type!(
    /// A support case (the CRM's Case record id).
    CaseId,
    "support case"
);

/// A process task or process instance id: KIE Server numbers them.
pub(crate) fn parse_numeric_id(raw: &str, what: &str) -> Result<i64, GraphError> {
    raw.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
        GraphError::BadInput(format!("`{}` is not a valid {what} id", truncate(raw)))
    })
}

fn is_valid_id(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= MAX_ID_LEN
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Keeps an echoed bad id short in error messages.
fn truncate(raw: &str) -> String {
    raw.chars().take(MAX_ID_LEN).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_ids_and_rejects_anything_that_could_escape() {
        assert!(CustomerId::parse("cust-0001").is_ok());
        assert!(CaseId::parse("500000000000001AAA").is_ok());
        for bad in ["", "a'b", "a b", "../x", "x%27", &"a".repeat(65)] {
            assert!(CustomerId::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse_numeric_id("42", "task").unwrap(), 42);
        assert!(parse_numeric_id("-1", "task").is_err());
        assert!(parse_numeric_id("4x", "task").is_err());
    }
}
