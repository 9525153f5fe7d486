//! Credits: grant, use (priced and checked by the tenant's policies), refund,
//! balance and statement — one file per command; `use_credits` is the
//! reference implementation of the transaction pattern described in
//! [`crate::app`]. This file holds the commands' types, their input checks
//! and the reads.

mod expire;
mod grant;
mod refund;
mod use_credits;

pub use expire::ExpiryRun;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::App;
use super::customers::not_found;
use super::error::{AppError, PolicyRef, Result};
use crate::config::PricingKind;
use crate::domain::credit::{CreditUse, CreditUseKind};
use crate::domain::{CreditUseId, Credits, CustomerId, PositiveCredits};
use crate::policy::registry::Binding;
use crate::policy::types;
use crate::store::{CreditTransactionRecord, Queries, StoredResponse, utc_day};

/// Longest feature name, in bytes.
pub const MAX_FEATURE_LEN: usize = 64;
/// Longest reason, in bytes.
pub const MAX_REASON_LEN: usize = 500;
/// Most metadata entries on a use.
pub const MAX_METADATA: usize = 32;
/// Default and largest page of `credits/transactions`.
pub const DEFAULT_PAGE: i64 = 50;
/// Largest page of `credits/transactions`.
pub const MAX_PAGE: i64 = 200;

/// `POST /credits/charge`.
#[derive(Debug, Clone)]
pub struct GrantCommand {
    /// Who receives them.
    pub customer_id: String,
    /// How many (> 0).
    pub credits: i64,
    /// Why (shown on statements).
    pub reason: String,
    /// When unspent credits lapse (ms since the epoch), after now.
    pub expires_at: Option<i64>,
}

/// What a grant did.
#[derive(Debug, Clone)]
pub struct CreditsGranted {
    /// The grant's ledger transaction.
    pub transaction_id: String,
    /// The customer.
    pub customer_id: String,
    /// Credits added.
    pub credits: i64,
    /// When they lapse.
    pub expires_at: Option<i64>,
    /// The account after.
    pub balance: Balance,
    /// When (ms since the epoch).
    pub created_at: i64,
}

/// `POST /credits/use`.
#[derive(Debug, Clone)]
pub struct UseCommand {
    /// Whose credits.
    pub customer_id: String,
    /// The tenant's feature name.
    pub feature: String,
    /// Units used (> 0).
    pub units: i64,
    /// Passed to the policies.
    pub metadata: BTreeMap<String, String>,
}

/// What a use did.
#[derive(Debug, Clone)]
pub struct CreditsUsed {
    /// The use's ledger transaction (refund by this); `None` when the
    /// policy priced it at zero credits and nothing moved.
    pub transaction_id: Option<String>,
    /// The customer.
    pub customer_id: String,
    /// The feature.
    pub feature: String,
    /// Units.
    pub units: i64,
    /// Credits debited.
    pub credits_charged: i64,
    /// The account after.
    pub balance: Balance,
    /// How the policy arrived at the price.
    pub line_items: Vec<types::LineItem>,
    /// Who priced it.
    pub priced_by: PolicyRef,
    /// When (ms since the epoch).
    pub created_at: i64,
}

/// `POST /credits/refund`.
#[derive(Debug, Clone)]
pub struct RefundCommand {
    /// The use's transaction id.
    pub transaction_id: String,
    /// Credits to give back; all that is left when absent.
    pub credits: Option<i64>,
    /// Why.
    pub reason: Option<String>,
}

/// What a refund did.
#[derive(Debug, Clone)]
pub struct CreditsRefunded {
    /// The refund's ledger transaction.
    pub transaction_id: String,
    /// The use refunded.
    pub refunded_transaction_id: String,
    /// The customer.
    pub customer_id: String,
    /// Credits given back now.
    pub credits_refunded: i64,
    /// Refunded on the use so far.
    pub total_refunded: i64,
    /// Still refundable on the use.
    pub refundable: i64,
    /// The account after.
    pub balance: Balance,
    /// When (ms since the epoch).
    pub created_at: i64,
}

/// A customer's credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    /// All credits held.
    pub balance: i64,
    /// On hold for sagas.
    pub reserved: i64,
    /// Spendable now (balance − reserved).
    pub available: i64,
}

impl Balance {
    fn new(balance: i64, reserved: i64) -> Self {
        Balance {
            balance,
            reserved,
            available: balance - reserved,
        }
    }
}

/// `GET /credits/balance`.
#[derive(Debug, Clone)]
pub struct BalanceView {
    /// The customer.
    pub customer_id: String,
    /// Its credits.
    pub balance: Balance,
    /// Credits used in the current UTC day.
    pub spent_today: i64,
}

/// `GET /credits/transactions`: newest first.
#[derive(Debug, Clone)]
pub struct Statement {
    /// The customer.
    pub customer_id: String,
    /// One page.
    pub items: Vec<CreditTransactionRecord>,
    /// Pass as `cursor` for the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// Renders a command's outcome into the response that is stored with it.
pub trait Render<T>: FnOnce(&T) -> StoredResponse + Send {}
impl<T, F: FnOnce(&T) -> StoredResponse + Send> Render<T> for F {}

pub(super) fn check_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() || value.len() > max {
        return Err(AppError::Invalid(format!(
            "{field} must be 1-{max} bytes and not blank"
        )));
    }
    Ok(())
}

fn check_feature(feature: &str) -> Result<()> {
    if feature.is_empty()
        || feature.len() > MAX_FEATURE_LEN
        || !feature.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(AppError::Invalid(format!(
            "feature must be 1-{MAX_FEATURE_LEN} visible ASCII characters"
        )));
    }
    Ok(())
}

pub(in crate::app) fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<()> {
    if metadata.len() > MAX_METADATA {
        return Err(AppError::Invalid(format!(
            "metadata: at most {MAX_METADATA} entries"
        )));
    }
    for (key, value) in metadata {
        check_text("metadata keys", key, 64)?;
        if value.len() > 1024 {
            return Err(AppError::Invalid(format!(
                "metadata.{key}: at most 1024 bytes"
            )));
        }
    }
    Ok(())
}

impl App {
    /// The tenant's credit pricing binding and validation bindings.
    fn credit_policies(&self, tenant: &str) -> Result<(Arc<Binding>, Vec<Arc<Binding>>)> {
        self.policies_for(tenant, PricingKind::Credit)
    }

    /// A customer's credits.
    pub async fn credit_balance(&self, tenant: &str, customer_id: &str) -> Result<BalanceView> {
        let customer = CustomerId::new(customer_id)?;
        let account = self
            .store()
            .credit_account(tenant, customer.as_str())
            .await?
            .ok_or_else(|| not_found(customer.as_str()))?;
        Ok(BalanceView {
            customer_id: customer.to_string(),
            balance: Balance::new(account.balance, account.reserved),
            spent_today: account.spent_on(utc_day(self.now())),
        })
    }

    /// A page of a customer's credit statement, newest first.
    pub async fn credit_statement(
        &self,
        tenant: &str,
        customer_id: &str,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Statement> {
        let customer = CustomerId::new(customer_id)?;
        let before = match cursor {
            None | Some("") => i64::MAX,
            Some(text) => text.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                AppError::Invalid("cursor must be a value returned as nextCursor".into())
            })?,
        };
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(AppError::Invalid(format!(
                "limit must be within 1..={MAX_PAGE}"
            )));
        }
        if self
            .store()
            .credit_account(tenant, customer.as_str())
            .await?
            .is_none()
        {
            return Err(not_found(customer.as_str()));
        }
        let items = self
            .store()
            .credit_transactions(tenant, customer.as_str(), before, limit)
            .await?;
        let next_cursor = (items.len() as i64 == limit)
            .then(|| items.last().map(|item| item.seq.to_string()))
            .flatten();
        Ok(Statement {
            customer_id: customer.to_string(),
            items,
            next_cursor,
        })
    }
}

/// A stored use as the domain's [`CreditUse`], whose rules bound refunds.
fn restore_use(use_id: CreditUseId, record: &crate::store::CreditUseRecord) -> Result<CreditUse> {
    let corrupt = |what: String| AppError::Internal(format!("credit use {use_id}: {what}"));
    let customer = CustomerId::new(&record.customer_id).map_err(|e| corrupt(e.to_string()))?;
    let kind = match record.kind.as_str() {
        "use" => CreditUseKind::Use,
        "subscription_charge" => CreditUseKind::SubscriptionCharge,
        other => return Err(corrupt(format!("unknown kind `{other}`"))),
    };
    let charged = PositiveCredits::new(record.charged).map_err(|e| corrupt(e.to_string()))?;
    CreditUse::restore(
        use_id.clone(),
        customer,
        kind,
        charged,
        Credits(record.refunded),
    )
    .map_err(|e| corrupt(e.to_string()))
}
