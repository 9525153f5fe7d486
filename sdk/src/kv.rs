//! Reading WIT key/value lists (customer attributes, metadata, properties).
//!
//! The contract says such lists keep the caller's order and may repeat a key,
//! and that a policy reads the *first* occurrence; these helpers do exactly that.

use crate::Context;

/// Lookups on a `list<tuple<string, string>>` (`Vec<(String, String)>`).
pub trait KeyValues {
    /// The value of the first pair whose key is `key`.
    fn value(&self, key: &str) -> Option<&str>;

    /// Whether some pair has the key `key` (with any value, even empty).
    fn has_key(&self, key: &str) -> bool {
        self.value(key).is_some()
    }
}

impl KeyValues for [(String, String)] {
    fn value(&self, key: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value.as_str())
    }
}

impl Context {
    /// The customer's attribute `key` (first occurrence), e.g. `ctx.attribute("tier")`.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.customer_attributes.value(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_occurrence_of_a_key_wins() {
        // A Vec, as the generated types hold.
        let pairs = Vec::from([
            ("tier".to_string(), "gold".to_string()),
            ("tier".to_string(), "silver".to_string()),
            ("empty".to_string(), String::new()),
        ]);
        assert_eq!(pairs.value("tier"), Some("gold"));
        assert_eq!(pairs.value("missing"), None);
        assert!(pairs.has_key("empty"));
        assert!(!pairs.has_key("missing"));
    }
}
