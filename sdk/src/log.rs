//! Logging from a policy.
//!
//! In a component each call goes to the host's `log` import, which tags the
//! line with tenant, policy and request and truncates a call's log at its byte
//! limit. In native builds (unit tests) the line goes to stderr instead, so
//! tests run without a host; the test harness captures it.

pub use crate::bindings::fluxpay::policy::host::LogLevel;

/// Writes `message` at `level`.
pub fn log(level: LogLevel, message: impl AsRef<str>) {
    write(level, message.as_ref());
}

/// Writes `message` at debug level: detail for the policy's author.
pub fn debug(message: impl AsRef<str>) {
    write(LogLevel::Debug, message.as_ref());
}

/// Writes `message` at info level: normal operation.
pub fn info(message: impl AsRef<str>) {
    write(LogLevel::Info, message.as_ref());
}

/// Writes `message` at warn level: something looks off but the call goes on.
pub fn warn(message: impl AsRef<str>) {
    write(LogLevel::Warn, message.as_ref());
}

/// Writes `message` at error level: something failed.
pub fn error(message: impl AsRef<str>) {
    write(LogLevel::Error, message.as_ref());
}

#[cfg(target_arch = "wasm32")]
fn write(level: LogLevel, message: &str) {
    crate::bindings::fluxpay::policy::host::log(level, message);
}

#[cfg(not(target_arch = "wasm32"))]
fn write(level: LogLevel, message: &str) {
    let level = match level {
        LogLevel::Debug => "DEBUG",
        LogLevel::Info => "INFO",
        LogLevel::Warn => "WARN",
        LogLevel::Error => "ERROR",
    };
    eprintln!("[policy {level}] {message}");
}
