//! FluxPay host engine.
//!
//! The host owns what must never vary (money movement, state machines,
//! idempotency, the ledger); every price and business rule a tenant can vary
//! runs as a sandboxed WebAssembly policy through [`policy`].

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod crash_points;
pub mod domain;
pub mod events;
pub mod gateway;
pub mod policy;
pub mod store;
pub mod telemetry;
