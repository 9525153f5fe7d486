//! Metered usage: ingest events (deduplicated by tenant and event id
//! forever), the rated summary, and the period close that turns a
//! customer's usage into an order.
