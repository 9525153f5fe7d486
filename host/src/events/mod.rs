//! Events out: the outbox relay and its sinks.
//!
//! Every effect writes its event to the outbox in the transaction that
//! makes it, and the feed numbers them in commit order per tenant
//! (`GET /api/v1/events`). The relay publishes the same events, by the same
//! positions, to Kafka ([`kafka`]), as CloudEvents in the Kafka binding's
//! binary mode ([`cloudevents`]), keyed by the customer so that one
//! customer's events stay in order.
//!
//! One host publishes a tenant at a time: it holds the tenant's lease on
//! the sink's cursor (`store::RelayTx`), produces a batch from the cursor,
//! waits until the broker acknowledged each record, and only then moves
//! the cursor past them. A host that stops anywhere leaves the cursor at
//! the last acknowledged event; whoever holds the lease next publishes
//! from there (at least once: a record acknowledged after the last move is
//! published again, with the same `ce_id`).

pub mod cloudevents;
pub mod kafka;
