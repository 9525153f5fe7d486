//! Metered usage: ingest events (deduplicated by tenant and event id
//! forever), the rated summary (the live "current usage" view), and the
//! period close that turns a customer's usage into an order — one file per
//! command. This file holds the commands' types, their input checks, the
//! tenant's metered bindings and the summary (a read).

mod close;
mod ingest;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::App;
use super::customers::{Customer, not_found};
use super::error::{AppError, PolicyRef, Result};
use super::policy::{invalid_output, policy_ref, price};
use crate::config::PricingKind;
use crate::domain::{CustomerId, Period, Timestamp};
use crate::policy::registry::{Binding, CallContext};
use crate::policy::types;
use crate::store::{MetricTotal, Queries, UsageQueries};

pub use close::{CloseCommand, PeriodClosed};
pub use ingest::{EventInput, EventOutcome, EventStatus, IngestCommand, UsageIngested};

/// Longest range a summary or close may cover: a year and a bit, so one
/// query never scans a customer's whole history.
pub const MAX_RANGE_MS: i64 = 400 * 24 * 60 * 60 * 1000;
/// Most properties on one event.
pub const MAX_PROPERTIES: usize = 32;
/// Longest property name, in bytes.
pub const MAX_PROPERTY_NAME: usize = 64;
/// Longest property value, in bytes.
pub const MAX_PROPERTY_VALUE: usize = 1024;

/// A customer's usage over a range, rated by the tenant's metered policy.
#[derive(Debug, Clone)]
pub struct UsageSummary {
    /// The customer.
    pub customer_id: String,
    /// Start (inclusive, ms).
    pub from: i64,
    /// End (exclusive, ms).
    pub to: i64,
    /// Σ quantity per metric, by metric name.
    pub usage: Vec<MetricTotal>,
    /// The rated usage.
    pub rated: Rated,
}

/// What the metered policy made of a period's usage.
#[derive(Debug, Clone)]
pub struct Rated {
    /// How the total is made up.
    pub line_items: Vec<types::LineItem>,
    /// Σ lines, in minor units of `currency`.
    pub total: i64,
    /// ISO-4217.
    pub currency: String,
    /// Who rated it.
    pub priced_by: PolicyRef,
    /// The whole quote, as it is stored with a close.
    pub quote: types::Quote,
}

/// The customer and range of a summary or close, checked.
fn check_range(customer_id: &str, from: i64, to: i64) -> Result<(CustomerId, Period)> {
    let customer = CustomerId::new(customer_id)?;
    let period = Period::new(
        Timestamp::from_unix_millis(from),
        Timestamp::from_unix_millis(to),
    )?;
    if to.checked_sub(from).is_none_or(|len| len > MAX_RANGE_MS) {
        return Err(AppError::Invalid(format!(
            "the range may cover at most 400 days ({MAX_RANGE_MS} ms)"
        )));
    }
    Ok((customer, period))
}

impl App {
    /// The tenant's metered pricing binding and its validation bindings,
    /// from one registry snapshot.
    fn metered_policies(&self, tenant: &str) -> Result<(Arc<Binding>, Vec<Arc<Binding>>)> {
        self.policies_for(tenant, PricingKind::Metered)
    }

    /// The tenant's validation bindings (ingest needs no pricing policy).
    fn usage_validation(&self, tenant: &str) -> Result<Vec<Arc<Binding>>> {
        self.validation_policies(tenant)
    }

    /// `GET /usage/summary`: the customer's usage over `[from, to)` per
    /// metric, rated with the tenant's metered policy. Writes nothing.
    pub async fn usage_summary(
        &self,
        tenant: &str,
        customer_id: &str,
        from: i64,
        to: i64,
    ) -> Result<UsageSummary> {
        let (customer, period) = check_range(customer_id, from, to)?;
        let (pricing, _) = self.metered_policies(tenant)?;
        let record = self
            .store()
            .customer(tenant, customer.as_str())
            .await?
            .ok_or_else(|| not_found(customer.as_str()))?;
        let usage = self
            .store()
            .usage_totals(tenant, customer.as_str(), from, to)
            .await?;
        let call_ctx = CallContext {
            customer_id: customer.to_string(),
            customer_attributes: Customer::policy_attributes_of(&record.attributes)?,
            now_ms: self.now(),
        };
        let rated = rate(&pricing, call_ctx, period, &usage)?;
        Ok(UsageSummary {
            customer_id: customer.to_string(),
            from,
            to,
            usage,
            rated,
        })
    }
}

/// Prices a period's totals with the metered binding; the answer must be
/// money whose lines add up to the total.
fn rate(
    pricing: &Arc<Binding>,
    ctx: CallContext,
    period: Period,
    usage: &[MetricTotal],
) -> Result<Rated> {
    let request = types::PricingRequest::Metered(types::MeteredPeriod {
        period_start_ms: period.start().unix_millis(),
        period_end_ms: period.end().unix_millis(),
        usage: usage
            .iter()
            .map(|t| types::MetricUsage {
                metric: t.metric.clone(),
                quantity: t.quantity,
            })
            .collect(),
    });
    let quote = price(pricing, ctx, &request)?;
    let types::Amount::Money(total) = &quote.total else {
        return Err(invalid_output(
            pricing,
            "metered usage was priced in credits, not money",
        ));
    };
    if total.amount < 0 {
        return Err(invalid_output(
            pricing,
            format!("metered usage was priced at {}", total.amount),
        ));
    }
    let mut sum = 0_i64;
    for line in &quote.line_items {
        match &line.amount {
            types::Amount::Money(m) if m.currency == total.currency => {
                sum = sum.checked_add(m.amount).ok_or_else(|| {
                    invalid_output(pricing, "the quote's lines overflow when added")
                })?;
            }
            _ => {
                return Err(invalid_output(
                    pricing,
                    format!("line `{}` is not in {}", line.code, total.currency),
                ));
            }
        }
    }
    if sum != total.amount {
        return Err(invalid_output(
            pricing,
            format!("the lines add up to {sum}, not the total {}", total.amount),
        ));
    }
    Ok(Rated {
        line_items: quote.line_items.clone(),
        total: total.amount,
        currency: total.currency.clone(),
        priced_by: policy_ref(pricing),
        quote,
    })
}

/// Checks an event's properties: bounded in number and size.
fn check_properties(properties: &BTreeMap<String, String>) -> Option<String> {
    if properties.len() > MAX_PROPERTIES {
        return Some(format!("at most {MAX_PROPERTIES} properties"));
    }
    for (key, value) in properties {
        if key.trim().is_empty() || key.len() > MAX_PROPERTY_NAME {
            return Some(format!(
                "property names must be 1-{MAX_PROPERTY_NAME} bytes and not blank"
            ));
        }
        if value.len() > MAX_PROPERTY_VALUE {
            return Some(format!(
                "property `{key}` is longer than {MAX_PROPERTY_VALUE} bytes"
            ));
        }
    }
    None
}
