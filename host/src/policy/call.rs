//! One policy call: a fresh `Store` from the module's `InstancePre`, fuel
//! and epoch deadline set before instantiating, memory capped by a limiter
//! that remembers denials, sizes checked on the way in and out, and every
//! failure classified.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wasmtime::component::{ComponentNamedList, InstancePre, Lift, Lower, TypedFunc};
use wasmtime::{PoolConcurrencyLimitError, ResourceLimiter, Store, Trap, WasmBacktrace};

use super::bindings::host::{self, LogLevel};
use super::bindings::types;
use super::error::{CallError, FailureKind, PolicyFailure};
use super::limits::Limits;
use super::module::{LoadedPolicy, Pre};
use super::output;
use super::size::ByteSize;

/// `pricer.price`, typed as the bindings type it.
type PriceFn<'a> = TypedFunc<
    (&'a types::Context, &'a types::PricingRequest),
    (Result<types::Quote, types::PolicyError>,),
>;

/// `validator.validate`, typed as the bindings type it.
type ValidateFn<'a> = TypedFunc<
    (&'a types::Context, &'a types::ValidationSubject),
    (Result<Vec<types::Violation>, types::PolicyError>,),
>;

/// A call's answer and what it cost; the stats are there even when it failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Call<T> {
    pub result: Result<T, CallError>,
    pub stats: CallStats,
}

impl<T> Call<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Call<U> {
        Call {
            result: self.result.map(f),
            stats: self.stats,
        }
    }

    /// The sandbox failure, if the sandbox stopped the call.
    pub fn failure(&self) -> Option<&PolicyFailure> {
        match &self.result {
            Err(CallError::Failed(f)) => Some(f),
            _ => None,
        }
    }
}

/// What one call used, for logs, metrics and the author's runner.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CallStats {
    /// Fuel burnt, instantiation included.
    pub fuel_used: u64,
    /// Largest linear memory the instance reached.
    pub peak_memory_bytes: u64,
    /// Wall time from the start of the call to the store being dropped.
    pub duration: Duration,
    pub input_bytes: u64,
    /// 0 when the call produced no output.
    pub output_bytes: u64,
    /// Log bytes kept (at most `limits.log_bytes`).
    pub log_bytes: u64,
    /// The guest logged more than `limits.log_bytes`; the rest was dropped.
    pub log_truncated: bool,
}

/// The `T` of every call's `Store`.
pub(crate) struct CallState {
    limiter: MemoryLimiter,
    log: LogBuffer,
}

impl types::Host for CallState {}

impl host::Host for CallState {
    fn log(&mut self, level: LogLevel, message: String) {
        self.log.push(level, message);
    }
}

/// Caps linear memory and remembers a denial: the guest's allocator turns a
/// failed `memory.grow` into `unreachable`, so the trap alone cannot tell a
/// memory bomb from a panic.
struct MemoryLimiter {
    cap: usize,
    peak: usize,
    denied: Option<usize>,
    table_elements: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.denied = Some(desired);
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // Only reachable past the pool's slot size, which `Limits::validate`
        // keeps above `cap`; still a memory limit, not a mystery trap.
        self.denied.get_or_insert(self.cap);
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }
}

/// The guest's log lines for one call, capped; written out after the call.
struct LogBuffer {
    remaining: usize,
    kept: usize,
    truncated: bool,
    lines: Vec<(LogLevel, String)>,
}

impl LogBuffer {
    fn push(&mut self, level: LogLevel, mut message: String) {
        if message.len() > self.remaining {
            self.truncated = true;
            let mut cut = self.remaining;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        if message.is_empty() {
            return;
        }
        self.remaining -= message.len();
        self.kept += message.len();
        self.lines.push((level, message));
    }
}

/// Where a wasmtime error came from; decides what a non-trap error means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Instantiate,
    Call,
}

impl LoadedPolicy {
    /// Ask the policy whether `config_json` is a config it can run with.
    pub fn check_config(&self, config_json: &str, limits: &Limits) -> Call<()> {
        let input = config_json.len() as u64;
        let call = match &self.inner.pre {
            Pre::Pricing(pre) => self.run(
                limits,
                input,
                |store| pre.instantiate(store),
                |inst, store| {
                    inst.fluxpay_policy_pricer()
                        .call_check_config(store, config_json)
                },
            ),
            Pre::Validation(pre) => self.run(
                limits,
                input,
                |store| pre.instantiate(store),
                |inst, store| {
                    inst.fluxpay_policy_validator()
                        .call_check_config(store, config_json)
                },
            ),
        };
        finish(call, types::PolicyError::InvalidConfig, Ok)
    }

    /// Price a request. A validation policy answers `unsupported`.
    pub fn price(
        &self,
        ctx: &types::Context,
        req: &types::PricingRequest,
        limits: &Limits,
    ) -> Call<types::Quote> {
        let Pre::Pricing(pre) = &self.inner.pre else {
            return wrong_kind("a validation policy cannot price requests");
        };
        let input = ctx.byte_size() + req.byte_size();
        let call = self.run(
            limits,
            input,
            |store| self.entry(store, pre.instance_pre()),
            |price: &PriceFn<'_>, store| price.call(store, (ctx, req)).map(|(quote,)| quote),
        );
        finish(call, |e| e, output::check_quote)
    }

    /// Check a subject. A pricing policy answers `unsupported`.
    pub fn validate(
        &self,
        ctx: &types::Context,
        subj: &types::ValidationSubject,
        limits: &Limits,
    ) -> Call<Vec<types::Violation>> {
        let Pre::Validation(pre) = &self.inner.pre else {
            return wrong_kind("a pricing policy cannot validate subjects");
        };
        let input = ctx.byte_size() + subj.byte_size();
        let call = self.run(
            limits,
            input,
            |store| self.entry(store, pre.instance_pre()),
            |validate: &ValidateFn<'_>, store| {
                validate
                    .call(store, (ctx, subj))
                    .map(|(violations,)| violations)
            },
        );
        finish(call, |e| e, output::check_violations)
    }

    /// Instantiate and return the function a call enters (`price` or
    /// `validate`): what the bindings' `instantiate` does, minus the type
    /// check of every export on every call (5 % of a call's instructions).
    /// The entry's type is checked on the first call instead, and
    /// remembered. Only ever called with [`PriceFn`]'s types for a pricing
    /// policy and [`ValidateFn`]'s for a validation policy.
    fn entry<P, R>(
        &self,
        store: &mut Store<CallState>,
        pre: &InstancePre<CallState>,
    ) -> wasmtime::Result<TypedFunc<P, R>>
    where
        P: ComponentNamedList + Lower,
        R: ComponentNamedList + Lift,
    {
        let instance = pre.instantiate(&mut *store)?;
        let inner = &self.inner;
        let func = instance
            .get_func(&mut *store, inner.entry)
            .ok_or_else(|| wasmtime::format_err!("the policy's entry export is not a function"))?;
        if inner.entry_checked.load(Ordering::Acquire) {
            // SAFETY: `func.typed::<P, R>` succeeded for this export of this
            // component on an earlier call (the flag is set only then), and
            // an export's type is a property of the component: it is the
            // same in every instance. `P` and `R` are fixed per policy kind
            // (`price` and `validate` each have one caller) and contain no
            // resources, whose types could differ between instances.
            return Ok(unsafe { TypedFunc::new_unchecked(func) });
        }
        let typed = func.typed::<P, R>(&*store)?;
        inner.entry_checked.store(true, Ordering::Release);
        Ok(typed)
    }

    /// The sandbox around one call. `instantiate` and `call` are the only
    /// parts that differ between exports.
    fn run<I, R: ByteSize>(
        &self,
        limits: &Limits,
        input_bytes: u64,
        instantiate: impl FnOnce(&mut Store<CallState>) -> wasmtime::Result<I>,
        call: impl FnOnce(&I, &mut Store<CallState>) -> wasmtime::Result<R>,
    ) -> Call<R> {
        let started = Instant::now();
        let mut stats = CallStats {
            input_bytes,
            ..CallStats::default()
        };
        if input_bytes > limits.input_bytes {
            stats.duration = started.elapsed();
            let message = format!(
                "input is {input_bytes} bytes, over the limit of {}",
                limits.input_bytes
            );
            return failed(FailureKind::InputTooLarge, message, stats);
        }

        let shared = &self.inner.engine;
        let mut store = Store::new(
            &shared.engine,
            CallState {
                limiter: MemoryLimiter {
                    cap: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
                    peak: 0,
                    denied: None,
                    table_elements: shared.settings.max_table_elements as usize,
                },
                log: LogBuffer {
                    remaining: usize::try_from(limits.log_bytes).unwrap_or(usize::MAX),
                    kept: 0,
                    truncated: false,
                    lines: Vec::new(),
                },
            },
        );
        store.limiter(|state| &mut state.limiter);
        // Both apply to instantiation too, so they are set first.
        if let Err(e) = store.set_fuel(limits.fuel) {
            // Unreachable with consume_fuel on; a clear failure beats a panic.
            return failed(FailureKind::Trap, format!("{e:#}"), stats);
        }
        store.set_epoch_deadline(epoch_ticks(
            limits.deadline_ms,
            shared.settings.epoch_tick_ms,
        ));

        let outcome = match instantiate(&mut store) {
            Ok(instance) => call(&instance, &mut store).map_err(|e| (Phase::Call, e)),
            Err(e) => Err((Phase::Instantiate, e)),
        };

        stats.fuel_used = limits
            .fuel
            .saturating_sub(store.get_fuel().unwrap_or_default());
        let state = store.into_data();
        stats.peak_memory_bytes = state.limiter.peak as u64;
        stats.log_bytes = state.log.kept as u64;
        stats.log_truncated = state.log.truncated;

        let result = match outcome {
            Ok(out) => {
                stats.output_bytes = out.byte_size();
                if stats.output_bytes > limits.output_bytes {
                    Err(PolicyFailure::new(
                        FailureKind::OutputTooLarge,
                        format!(
                            "output is {} bytes, over the limit of {}",
                            stats.output_bytes, limits.output_bytes
                        ),
                    ))
                } else {
                    Ok(out)
                }
            }
            Err((phase, err)) => Err(classify(&err, phase, state.limiter.denied, limits)),
        };
        stats.duration = started.elapsed();
        emit_logs(self.content_hash(), state.log.lines, &stats);
        Call {
            result: result.map_err(CallError::Failed),
            stats,
        }
    }
}

/// Flatten the guest's own `result` into [`CallError::Policy`] and check
/// its answer against the contract.
fn finish<T, E, U>(
    call: Call<Result<T, E>>,
    guest_err: impl FnOnce(E) -> types::PolicyError,
    check: impl FnOnce(T) -> Result<U, PolicyFailure>,
) -> Call<U> {
    let result = match call.result {
        Ok(Ok(value)) => check(value).map_err(CallError::Failed),
        Ok(Err(e)) => Err(CallError::Policy(guest_err(e))),
        Err(e) => Err(e),
    };
    Call {
        result,
        stats: call.stats,
    }
}

/// Deadline in epoch ticks: rounded up, plus one because the current tick
/// may be about to end.
fn epoch_ticks(deadline_ms: u64, tick_ms: u64) -> u64 {
    deadline_ms.div_ceil(tick_ms.max(1)) + 1
}

fn wrong_kind<T>(message: &str) -> Call<T> {
    Call {
        result: Err(CallError::Policy(types::PolicyError::Unsupported(
            message.to_owned(),
        ))),
        stats: CallStats::default(),
    }
}

fn failed<T>(kind: FailureKind, message: String, stats: CallStats) -> Call<T> {
    Call {
        result: Err(CallError::Failed(PolicyFailure::new(kind, message))),
        stats,
    }
}

/// Name what stopped a call. A memory denial wins over the trap it caused;
/// a non-trap error during the call is the canonical ABI refusing what the
/// guest handed back (bad UTF-8, bad discriminant, out-of-bounds list).
pub(crate) fn classify(
    err: &wasmtime::Error,
    phase: Phase,
    memory_denied: Option<usize>,
    limits: &Limits,
) -> PolicyFailure {
    if let Some(desired) = memory_denied {
        return PolicyFailure::new(
            FailureKind::MemoryLimit,
            format!(
                "memory limit of {} bytes reached (the policy asked for {desired} bytes)",
                limits.memory_bytes
            ),
        );
    }
    if let Some(trap) = err.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => PolicyFailure::new(
                FailureKind::OutOfFuel,
                format!("fuel limit of {} exhausted", limits.fuel),
            ),
            Trap::Interrupt => PolicyFailure::new(
                FailureKind::Deadline,
                format!("deadline of {} ms passed", limits.deadline_ms),
            ),
            _ => PolicyFailure::new(FailureKind::Trap, without_backtrace(err)),
        };
    }
    if err.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
        return PolicyFailure::new(
            FailureKind::Overloaded,
            format!("no free instance slot: {err:#}"),
        );
    }
    match phase {
        Phase::Call => PolicyFailure::new(FailureKind::InvalidOutput, without_backtrace(err)),
        Phase::Instantiate => PolicyFailure::new(FailureKind::Trap, without_backtrace(err)),
    }
}

/// `{err:#}` without the wasm backtrace wasmtime puts in front: the reason
/// is what callers and API clients need; the frames go to the debug log.
fn without_backtrace(err: &wasmtime::Error) -> String {
    let full = format!("{err:#}");
    let Some(backtrace) = err.downcast_ref::<WasmBacktrace>() else {
        return full;
    };
    tracing::debug!(target: "fluxpay::policy", error = %full, "policy.call trapped");
    let prefix = format!("{backtrace}: ");
    match full.strip_prefix(&prefix) {
        Some(reason) => reason.to_owned(),
        None => full,
    }
}

/// Write the guest's log lines through `tracing`, after the call, so the
/// call itself never waits on a log writer.
fn emit_logs(policy: &str, lines: Vec<(LogLevel, String)>, stats: &CallStats) {
    for (level, message) in lines {
        match level {
            LogLevel::Debug => {
                tracing::debug!(target: "fluxpay::policy::guest", policy, "{message}")
            }
            LogLevel::Info => tracing::info!(target: "fluxpay::policy::guest", policy, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "fluxpay::policy::guest", policy, "{message}"),
            LogLevel::Error => {
                tracing::error!(target: "fluxpay::policy::guest", policy, "{message}")
            }
        }
    }
    if stats.log_truncated {
        tracing::warn!(
            target: "fluxpay::policy::guest",
            policy,
            kept_bytes = stats.log_bytes,
            "policy log truncated at the log byte limit"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(err: wasmtime::Error, phase: Phase, denied: Option<usize>) -> FailureKind {
        classify(&err, phase, denied, &Limits::default()).kind
    }

    #[test]
    fn traps_are_classified_by_their_code() {
        let call = Phase::Call;
        assert_eq!(
            kind(Trap::OutOfFuel.into(), call, None),
            FailureKind::OutOfFuel
        );
        assert_eq!(
            kind(Trap::Interrupt.into(), call, None),
            FailureKind::Deadline
        );
        assert_eq!(
            kind(Trap::StackOverflow.into(), call, None),
            FailureKind::Trap
        );
        let unreachable = classify(
            &Trap::UnreachableCodeReached.into(),
            call,
            None,
            &Limits::default(),
        );
        assert_eq!(unreachable.kind, FailureKind::Trap);
        assert!(
            unreachable.message.contains("unreachable"),
            "{}",
            unreachable.message
        );
    }

    #[test]
    fn a_memory_denial_wins_over_the_trap_it_caused() {
        let failure = classify(
            &Trap::UnreachableCodeReached.into(),
            Phase::Call,
            Some(32 << 20),
            &Limits::default(),
        );
        assert_eq!(failure.kind, FailureKind::MemoryLimit);
        assert!(failure.message.contains("33554432"), "{}", failure.message);
    }

    #[test]
    fn a_non_trap_error_is_invalid_output_during_a_call_and_a_trap_at_instantiation() {
        let lift = || wasmtime::Error::msg("invalid utf-8 sequence");
        assert_eq!(kind(lift(), Phase::Call, None), FailureKind::InvalidOutput);
        assert_eq!(kind(lift(), Phase::Instantiate, None), FailureKind::Trap);
    }

    #[test]
    fn the_log_keeps_whole_lines_until_the_limit_then_cuts_on_a_char_boundary() {
        let mut log = LogBuffer {
            remaining: 10,
            kept: 0,
            truncated: false,
            lines: Vec::new(),
        };
        log.push(LogLevel::Info, "12345".into());
        assert!(!log.truncated);
        // "ééé" is 6 bytes; 5 remain, so 2 characters (4 bytes) fit.
        log.push(LogLevel::Warn, "ééé".into());
        assert!(log.truncated);
        assert_eq!(log.lines[1].1, "éé");
        log.push(LogLevel::Info, "x".into());
        log.push(LogLevel::Info, "more".into());
        assert_eq!(log.kept, 10);
        assert_eq!(log.lines.len(), 3);
    }

    #[test]
    fn the_deadline_rounds_up_to_whole_ticks_plus_one() {
        assert_eq!(epoch_ticks(50, 2), 26);
        assert_eq!(epoch_ticks(5, 2), 4);
        assert_eq!(epoch_ticks(1, 5), 2);
    }
}
