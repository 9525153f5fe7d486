//! Per-call sandbox limits: production defaults, per-binding overrides and
//! their validation against what the engine was sized for.

use serde::{Deserialize, Serialize};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// One wasm page: the smallest memory a module can have.
const WASM_PAGE: u64 = 64 * KIB;

/// Everything one policy call may use. `Default` is production.
///
/// Fuel is the deterministic bound (the same input always burns the same
/// fuel); the deadline is a wall-clock backstop for what fuel does not meter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Instruction budget per call (instantiation included).
    pub fuel: u64,
    /// Wall-clock deadline per call in milliseconds, enforced by epoch ticks
    /// (granularity: `EngineSettings::epoch_tick_ms`).
    pub deadline_ms: u64,
    /// Linear memory a call may grow to.
    pub memory_bytes: u64,
    /// Size of the component file.
    pub module_bytes: u64,
    /// Structural size of the call's input (see `call::ByteSize`).
    pub input_bytes: u64,
    /// Structural size of the call's output.
    pub output_bytes: u64,
    /// Log bytes kept per call; the rest is dropped and the call marked truncated.
    pub log_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 10_000_000,
            deadline_ms: 50,
            memory_bytes: 16 * MIB,
            module_bytes: 4 * MIB,
            input_bytes: 64 * KIB,
            output_bytes: 64 * KIB,
            log_bytes: 4 * KIB,
        }
    }
}

/// Per-binding changes to [`Limits`]; `None` keeps the base value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_bytes: Option<u64>,
}

impl Limits {
    /// These limits with every field `o` sets replaced.
    pub fn with(&self, o: &LimitsOverride) -> Limits {
        Limits {
            fuel: o.fuel.unwrap_or(self.fuel),
            deadline_ms: o.deadline_ms.unwrap_or(self.deadline_ms),
            memory_bytes: o.memory_bytes.unwrap_or(self.memory_bytes),
            module_bytes: o.module_bytes.unwrap_or(self.module_bytes),
            input_bytes: o.input_bytes.unwrap_or(self.input_bytes),
            output_bytes: o.output_bytes.unwrap_or(self.output_bytes),
            log_bytes: o.log_bytes.unwrap_or(self.log_bytes),
        }
    }

    /// Check the limits make sense for an engine whose pool slots hold at
    /// most `engine_max_memory` bytes of linear memory. The message names the
    /// field, as it appears in YAML.
    pub fn validate(&self, engine_max_memory: u64) -> Result<(), String> {
        let non_zero = [
            ("fuel", self.fuel),
            ("deadline_ms", self.deadline_ms),
            ("memory_bytes", self.memory_bytes),
            ("module_bytes", self.module_bytes),
            ("input_bytes", self.input_bytes),
            ("output_bytes", self.output_bytes),
        ];
        if let Some((name, _)) = non_zero.iter().find(|(_, v)| *v == 0) {
            return Err(format!("limits.{name} must be greater than 0"));
        }
        if self.memory_bytes < WASM_PAGE {
            return Err(format!(
                "limits.memory_bytes ({}) is below one wasm page ({WASM_PAGE} bytes)",
                self.memory_bytes
            ));
        }
        if self.memory_bytes > engine_max_memory {
            return Err(format!(
                "limits.memory_bytes ({}) exceeds the engine's per-instance ceiling \
                 max_memory_bytes ({engine_max_memory})",
                self.memory_bytes
            ));
        }
        // A deadline is a backstop for a hung call, not a scheduling tool: past
        // a minute it no longer protects anything.
        if self.deadline_ms > 60_000 {
            return Err(format!(
                "limits.deadline_ms ({}) is above the maximum of 60000",
                self.deadline_ms
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_production_limits() {
        let l = Limits::default();
        assert_eq!(l.fuel, 10_000_000);
        assert_eq!(l.memory_bytes, 16 * MIB);
        assert_eq!(l.module_bytes, 4 * MIB);
        assert_eq!(l.input_bytes, 64 * KIB);
        assert_eq!(l.output_bytes, 64 * KIB);
        assert_eq!(l.log_bytes, 4 * KIB);
        assert!(l.validate(16 * MIB).is_ok());
    }

    #[test]
    fn an_override_replaces_only_the_fields_it_sets() {
        let base = Limits::default();
        let o = LimitsOverride {
            fuel: Some(1_000),
            log_bytes: Some(0),
            ..Default::default()
        };
        let merged = base.with(&o);
        assert_eq!(merged.fuel, 1_000);
        assert_eq!(merged.log_bytes, 0);
        assert_eq!(merged.memory_bytes, base.memory_bytes);
        assert_eq!(merged.deadline_ms, base.deadline_ms);
        assert_eq!(base.with(&LimitsOverride::default()), base);
    }

    #[test]
    fn memory_above_the_engine_ceiling_is_refused_with_the_field_name() {
        let l = Limits {
            memory_bytes: 32 * MIB,
            ..Default::default()
        };
        let err = l.validate(16 * MIB).unwrap_err();
        assert!(err.contains("limits.memory_bytes"), "{err}");
        assert!(err.contains("max_memory_bytes"), "{err}");
    }

    #[test]
    fn zero_limits_are_refused_except_log_bytes() {
        let zero_fuel = Limits {
            fuel: 0,
            ..Default::default()
        };
        assert_eq!(
            zero_fuel.validate(16 * MIB).unwrap_err(),
            "limits.fuel must be greater than 0"
        );
        let no_log = Limits {
            log_bytes: 0,
            ..Default::default()
        };
        assert!(no_log.validate(16 * MIB).is_ok());
    }

    #[test]
    fn memory_below_one_page_and_huge_deadlines_are_refused() {
        let tiny = Limits {
            memory_bytes: 1000,
            ..Default::default()
        };
        assert!(
            tiny.validate(16 * MIB)
                .unwrap_err()
                .contains("one wasm page")
        );
        let slow = Limits {
            deadline_ms: 120_000,
            ..Default::default()
        };
        assert!(slow.validate(16 * MIB).unwrap_err().contains("deadline_ms"));
    }

    #[test]
    fn unknown_yaml_keys_are_errors_and_missing_keys_default() {
        let err = serde_yaml::from_str::<LimitsOverride>("fuel: 5\nfeul: 6\n").unwrap_err();
        assert!(err.to_string().contains("feul"), "{err}");
        let l: Limits = serde_yaml::from_str("fuel: 5\n").unwrap();
        assert_eq!(l.fuel, 5);
        assert_eq!(l.memory_bytes, 16 * MIB);
        assert!(serde_yaml::from_str::<Limits>("memory: 5\n").is_err());
    }
}
