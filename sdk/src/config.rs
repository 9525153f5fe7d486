//! Parsing a policy's `config:` block.
//!
//! The host serialises the YAML `config:` block of the tenant's binding as JSON
//! text into [`Context::config`](crate::Context::config) (`"{}"` when the
//! binding has none). The generated `check-config` export and every call parse
//! it with [`parse`], so a config that fails here is refused at load time and
//! can never reach a request.
//!
//! Write the config type with `#[serde(deny_unknown_fields)]` so that a
//! misspelt key is an error rather than silently ignored. Rules serde cannot
//! express (tiers in ascending order, a positive denominator) belong in a
//! `#[serde(try_from = "RawConfig")]` conversion: its error message then shows
//! up in `check-config` like any other.

use serde::de::DeserializeOwned;

/// Parses `json` into the config type `C`. The error names the field that does
/// not fit, e.g. ``plans[1].price: invalid type: string "x", expected i64 at
/// line 1 column 42``, or ``missing field `plans` ``.
///
/// ```
/// #[derive(serde::Deserialize, Debug)]
/// #[serde(deny_unknown_fields)]
/// struct Config { rate: i64 }
///
/// let err = fluxpay_policy_sdk::config::parse::<Config>(r#"{"rate": "x"}"#).unwrap_err();
/// assert!(err.starts_with("rate: invalid type"), "{err}");
/// ```
pub fn parse<C: DeserializeOwned>(json: &str) -> Result<C, String> {
    // Every call parses the config, and a config that reaches a call has
    // already passed `check-config`: parse it without tracking the path
    // (tracking cost about a tenth of a whole reference-policy call), and
    // only when that fails parse again with tracking, to name the field.
    match serde_json::from_str(json) {
        Ok(config) => Ok(config),
        Err(_) => parse_tracking_path(json),
    }
}

/// [`parse`] with the path of every value tracked, for the error message.
#[cold]
fn parse_tracking_path<C: DeserializeOwned>(json: &str) -> Result<C, String> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let config: C = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." || path.is_empty() {
            format!("config: {inner}")
        } else {
            format!("{path}: {inner}")
        }
    })?;
    deserializer
        .end()
        .map_err(|error| format!("config: {error}"))?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Plan {
        id: String,
        price: i64,
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Config {
        plans: Vec<Plan>,
    }

    #[test]
    fn a_type_error_names_the_nested_field() {
        let err = parse::<Config>(r#"{"plans":[{"id":"a","price":1},{"id":"b","price":"x"}]}"#)
            .unwrap_err();
        assert!(err.starts_with("plans[1].price: invalid type"), "{err}");
    }

    #[test]
    fn a_missing_or_unknown_field_is_named() {
        let err = parse::<Config>("{}").unwrap_err();
        assert!(err.contains("missing field `plans`"), "{err}");
        let err = parse::<Config>(r#"{"plans":[],"plan":1}"#).unwrap_err();
        assert!(err.contains("unknown field `plan`"), "{err}");
    }

    #[test]
    fn trailing_text_is_refused() {
        assert!(parse::<Config>(r#"{"plans":[]} x"#).is_err());
        assert_eq!(
            parse::<Config>(r#"{"plans":[]}"#),
            Ok(Config { plans: vec![] })
        );
    }
}
