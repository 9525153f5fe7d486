//! Validated identifiers.
//!
//! One newtype per kind so a customer id can never be passed where an order
//! id is expected. All share one rule: 1 to [`MAX_ID_LEN`] visible ASCII
//! characters. Ids travel in URLs, log fields and ledger account keys
//! (`customer:{id}:credits`), so whitespace, control characters and
//! non-ASCII (with its look-alike and normalisation traps) are refused;
//! anything else a tenant already uses (`auth0|123`, `a@b.c`, UUIDs) fits.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::DomainError;

/// Longest id we accept, in bytes: enough for any UUID/ULID or prefixed key,
/// small enough to index and log.
pub const MAX_ID_LEN: usize = 128;

/// Why `value` is not an acceptable id, or `None` when it is.
pub(crate) fn id_problem(value: &str, max_len: usize) -> Option<&'static str> {
    if value.is_empty() {
        Some("must not be empty")
    } else if value.len() > max_len {
        Some("is too long")
    } else if !value.bytes().all(|b| b.is_ascii_graphic()) {
        Some("may only contain visible ASCII characters (no spaces or control characters)")
    } else {
        None
    }
}

macro_rules! entity_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `value` as this kind of id.
            pub fn new(value: impl Into<String>) -> Result<Self, DomainError> {
                let value = value.into();
                match id_problem(&value, MAX_ID_LEN) {
                    None => Ok($name(value)),
                    Some(reason) => Err(DomainError::InvalidId { kind: $kind, reason }),
                }
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

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(value: &str) -> Result<Self, DomainError> {
                $name::new(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = DomainError;
            fn try_from(value: String) -> Result<Self, DomainError> {
                $name::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

entity_id!(
    /// The tenant's id for one of its customers.
    CustomerId,
    "customer id"
);
entity_id!(
    /// An order.
    OrderId,
    "order id"
);
entity_id!(
    /// A payment: one attempt to take an order's money through the gateway.
    PaymentId,
    "payment id"
);
entity_id!(
    /// A subscription.
    SubscriptionId,
    "subscription id"
);
entity_id!(
    /// A plan, as the tenant's subscription policy names it.
    PlanId,
    "plan id"
);
entity_id!(
    /// One debit of credits (a use or a subscription charge); refunds point at it.
    CreditUseId,
    "credit use id"
);
entity_id!(
    /// One grant of credits; expiry points at it.
    CreditGrantId,
    "credit grant id"
);
entity_id!(
    /// One hold on credits taken by a saga.
    ReservationId,
    "reservation id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_visible_ascii_up_to_the_limit() {
        for ok in [
            "c",
            "cus_01HZX",
            "auth0|123",
            "a@b.c",
            "x:y",
            &"a".repeat(MAX_ID_LEN),
        ] {
            assert_eq!(CustomerId::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn ids_reject_empty_overlong_blank_and_non_ascii_values() {
        let too_long = "a".repeat(MAX_ID_LEN + 1);
        for bad in ["", too_long.as_str(), "a b", "tab\t", "nl\n", "é", "\u{0}"] {
            let error = CustomerId::new(bad).unwrap_err();
            assert_eq!(error.code(), "REQ_001", "{bad:?}");
            assert!(error.to_string().starts_with("invalid customer id"));
        }
    }

    #[test]
    fn ids_validate_when_deserialised() {
        let ok: OrderId = serde_json::from_str("\"ord_1\"").unwrap();
        assert_eq!(ok.to_string(), "ord_1");
        assert!(serde_json::from_str::<OrderId>("\"\"").is_err());
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"ord_1\"");
    }
}
