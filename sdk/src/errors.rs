//! Short constructors for the answers a policy gives besides a quote.

use crate::{PolicyError, Rejection, Violation};

impl PolicyError {
    /// The rules refuse the request: `PolicyError::Rejected` with a stable
    /// `code` (e.g. `"unknown-plan"`) and a sentence for the caller.
    pub fn rejected(code: impl Into<String>, message: impl Into<String>) -> PolicyError {
        PolicyError::Rejected(Rejection::new(code, message))
    }

    /// This policy does not handle this kind of request; `handles` says what it
    /// does handle (e.g. `"credit-usage requests"`).
    pub fn unsupported(handles: impl Into<String>) -> PolicyError {
        PolicyError::Unsupported(handles.into())
    }

    /// The `config:` block does not fit; the message names the field.
    pub fn invalid_config(message: impl Into<String>) -> PolicyError {
        PolicyError::InvalidConfig(message.into())
    }

    /// The rejection code, if this is a rejection (handy in tests).
    pub fn rejection_code(&self) -> Option<&str> {
        match self {
            PolicyError::Rejected(rejection) => Some(&rejection.code),
            _ => None,
        }
    }
}

impl Rejection {
    /// A rejection with a stable `code` and a readable `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Rejection {
        Rejection {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl From<Rejection> for PolicyError {
    fn from(rejection: Rejection) -> Self {
        PolicyError::Rejected(rejection)
    }
}

impl Violation {
    /// A broken rule: a stable `rule_id` (e.g. `"max-order-amount"`) and a
    /// sentence the end user can read.
    pub fn new(rule_id: impl Into<String>, message: impl Into<String>) -> Violation {
        Violation {
            rule_id: rule_id.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_builds_a_rejection_with_code_and_message() {
        let error = PolicyError::rejected("unknown-plan", "no plan `gold`");
        assert_eq!(error.rejection_code(), Some("unknown-plan"));
        assert_eq!(
            error,
            PolicyError::Rejected(Rejection {
                code: "unknown-plan".into(),
                message: "no plan `gold`".into()
            })
        );
        assert_eq!(PolicyError::unsupported("x").rejection_code(), None);
    }
}
