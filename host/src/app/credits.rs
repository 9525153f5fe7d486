//! Credits: grant, use (priced and checked by the tenant's policies), refund,
//! balance and statement. `use_credits` is the reference implementation of
//! the transaction pattern described in [`super`].

use std::collections::BTreeMap;
use std::sync::Arc;

use super::customers::{Customer, not_found};
use super::error::{AppError, PolicyRef, Result};
use super::idempotency::{Claimed, claim};
use super::journal::{Recorder, credit_account_state, credit_use_state, entity, event_type};
use super::policy::{invalid_output, policy_ref, price, validate};
use super::{App, Reply, RequestCtx, new_id};
use crate::config::PricingKind;
use crate::domain::credit::{CreditError, CreditUse, CreditUseKind};
use crate::domain::ledger::LedgerTransaction;
use crate::domain::money::AmountError;
use crate::domain::{CreditUseId, Credits, CustomerId, DomainError, PositiveCredits, Timestamp};
use crate::policy::registry::{Binding, CallContext};
use crate::policy::types;
use crate::store::{
    CreditTransactionRecord, DebitCredits, DebitOutcome, GrantCredits, GrantOutcome, Queries,
    RefundCredits, RefundOutcome, StoredResponse, Transactions, TxOps, utc_day,
};

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

fn check_text(field: &str, value: &str, max: usize) -> Result<()> {
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

fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<()> {
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
    /// The tenant's credit pricing binding and validation bindings, from one
    /// registry snapshot (a reload mid-request does not mix versions).
    fn credit_policies(&self, tenant: &str) -> Result<(Arc<Binding>, Vec<Arc<Binding>>)> {
        let snapshot = self.registry().snapshot();
        if snapshot.version() == 0 {
            return Err(AppError::NotReady);
        }
        let policies = snapshot.tenant(tenant);
        let pricing = policies
            .and_then(|p| p.pricing(PricingKind::Credit))
            .cloned()
            .ok_or_else(|| AppError::NoPolicy {
                tenant: tenant.to_owned(),
                kind: PricingKind::Credit.as_str(),
            })?;
        let validation = policies.map(|p| p.validation().to_vec()).unwrap_or_default();
        Ok((pricing, validation))
    }

    /// Grants credits.
    pub async fn grant_credits(
        &self,
        ctx: &RequestCtx,
        cmd: GrantCommand,
        render: impl Render<CreditsGranted>,
    ) -> Result<Reply> {
        let customer = CustomerId::new(&cmd.customer_id)?;
        let amount = PositiveCredits::new(cmd.credits)?;
        check_text("reason", &cmd.reason, MAX_REASON_LEN)?;
        let now = self.now();
        if let Some(at) = cmd.expires_at.filter(|at| *at <= now) {
            return Err(DomainError::from(CreditError::ExpiryNotInFuture {
                expires_at: Timestamp::from_unix_millis(at),
                now: Timestamp::from_unix_millis(now),
            })
            .into());
        }
        let grant_id = new_id("tx");

        let tx = self.store().begin(&ctx.tenant).await?;
        let mut tx = match claim(tx, ctx, now).await? {
            Claimed::Proceed(tx) => tx,
            Claimed::Replay(reply) => return Ok(reply),
        };
        let grant = GrantCredits {
            grant_id: grant_id.clone(),
            customer_id: customer.to_string(),
            credits: amount.value(),
            expires_at: cmd.expires_at,
            reason: cmd.reason.clone(),
            now,
        };
        let after = match tx.grant_credits(&grant).await? {
            GrantOutcome::Granted(after) => after,
            GrantOutcome::NoAccount => return Err(not_found(customer.as_str())),
            GrantOutcome::Overflow => return Err(AmountError::Overflow { operation: "add" }.into()),
        };

        let mut journal = Recorder::new(ctx, &grant_id, now);
        journal.ledger(
            Some(customer.as_str()),
            LedgerTransaction::credit_grant(&customer, amount),
        );
        journal.history(
            entity::CREDIT_ACCOUNT,
            customer.as_str(),
            Some(credit_account_state(
                after.balance - amount.value(),
                after.reserved,
            )),
            credit_account_state(after.balance, after.reserved),
            "grant",
            &cmd.reason,
        );
        journal.event(
            event_type::CREDIT_GRANTED,
            customer.as_str(),
            &serde_json::json!({
                "customerId": customer.as_str(),
                "transactionId": &grant_id,
                "credits": amount.value(),
                "reason": &cmd.reason,
                "expiresAt": cmd.expires_at,
                "balance": after.balance,
                "available": after.balance - after.reserved,
            }),
        );
        tx.record(journal.finish());
        let response = render(&CreditsGranted {
            transaction_id: grant_id,
            customer_id: customer.to_string(),
            credits: amount.value(),
            expires_at: cmd.expires_at,
            balance: Balance::new(after.balance, after.reserved),
            created_at: now,
        });
        tx.commit(Some(response.clone())).await?;
        Ok(Reply {
            response,
            replayed: false,
        })
    }

    /// Spends credits on a feature use: the tenant's credit policy prices
    /// it, its validation policies check it against the locked balance and
    /// today's spend, and the guarded debit takes it — or nothing happens.
    pub async fn use_credits(
        &self,
        ctx: &RequestCtx,
        cmd: UseCommand,
        render: impl Render<CreditsUsed>,
    ) -> Result<Reply> {
        let customer = CustomerId::new(&cmd.customer_id)?;
        check_feature(&cmd.feature)?;
        if cmd.units <= 0 {
            return Err(AmountError::NotPositive {
                what: "units",
                value: cmd.units,
            }
            .into());
        }
        check_metadata(&cmd.metadata)?;
        let (pricing, validation) = self.credit_policies(&ctx.tenant)?;

        // 1. Price, outside any transaction: the policy needs the customer's
        //    attributes, not its balance.
        let record = self
            .store()
            .customer(&ctx.tenant, customer.as_str())
            .await?
            .ok_or_else(|| not_found(customer.as_str()))?;
        let attributes = Customer::policy_attributes_of(&record.attributes)?;
        let now = self.now();
        let call_ctx = CallContext {
            customer_id: customer.to_string(),
            customer_attributes: attributes,
            now_ms: now,
        };
        let metadata: Vec<(String, String)> = cmd
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let request = types::PricingRequest::CreditUsage(types::CreditUsage {
            feature: cmd.feature.clone(),
            units: cmd.units,
            metadata: metadata.clone(),
        });
        let quote = price(&pricing, call_ctx.clone(), &request)?;
        let credits = match quote.total {
            types::Amount::Credits(n) if n >= 0 => n,
            types::Amount::Credits(n) => {
                return Err(invalid_output(
                    &pricing,
                    format!("a credit usage was priced at {n} credits"),
                ));
            }
            types::Amount::Money(_) => {
                return Err(invalid_output(
                    &pricing,
                    "a credit usage was priced in money, not credits",
                ));
            }
        };
        let priced_by = policy_ref(&pricing);
        let subject = |available: i64, spent_today: i64| {
            types::ValidationSubject::CreditUse(types::CreditUseSubject {
                feature: cmd.feature.clone(),
                units: cmd.units,
                credits,
                balance: available,
                spent_today,
                metadata: metadata.clone(),
            })
        };

        // 2. One transaction: claim the key, debit, validate, journal, commit.
        let tx = self.store().begin(&ctx.tenant).await?;
        let mut tx = match claim(tx, ctx, now).await? {
            Claimed::Proceed(tx) => tx,
            Claimed::Replay(reply) => return Ok(reply),
        };
        let Ok(amount) = PositiveCredits::new(credits) else {
            // Priced at zero: nothing moves, but the rules still apply and
            // the answer is kept for the idempotency key.
            let account = tx
                .credit_account(customer.as_str())
                .await?
                .ok_or_else(|| not_found(customer.as_str()))?;
            validate(
                &validation,
                &call_ctx,
                &subject(account.available(), account.spent_on(utc_day(now))),
            )?;
            let response = render(&CreditsUsed {
                transaction_id: None,
                customer_id: customer.to_string(),
                feature: cmd.feature,
                units: cmd.units,
                credits_charged: 0,
                balance: Balance::new(account.balance, account.reserved),
                line_items: quote.line_items,
                priced_by,
                created_at: now,
            });
            tx.commit(Some(response.clone())).await?;
            return Ok(Reply {
                response,
                replayed: false,
            });
        };
        let use_id = new_id("tx");
        let debit = DebitCredits {
            use_id: use_id.clone(),
            customer_id: customer.to_string(),
            credits,
            feature: cmd.feature.clone(),
            units: cmd.units,
            metadata: serde_json::to_string(&cmd.metadata)
                .map_err(|err| AppError::Internal(err.to_string()))?,
            quote: serde_json::to_string(&quote)
                .map_err(|err| AppError::Internal(err.to_string()))?,
            policy: priced_by.policy.clone(),
            policy_hash: priced_by.content_hash.clone(),
            now,
        };
        let after = match tx.debit_credits(&debit).await? {
            DebitOutcome::Debited(after) => after,
            DebitOutcome::NoAccount => return Err(not_found(customer.as_str())),
            DebitOutcome::Insufficient(account) => {
                // The rules are checked first, as for any use: a use that
                // breaks a rule is refused for that reason.
                validate(
                    &validation,
                    &call_ctx,
                    &subject(account.available(), account.spent_on(utc_day(now))),
                )?;
                return Err(DomainError::InsufficientCredits {
                    available: Credits(account.available()),
                    requested: Credits(credits),
                }
                .into());
            }
        };
        // The row is locked: these are exactly the values this use debits
        // from, so a daily cap holds under any concurrency.
        let available_before = after.balance - after.reserved + credits;
        let spent_before = after.spent_today - credits;
        validate(
            &validation,
            &call_ctx,
            &subject(available_before, spent_before),
        )?;

        let mut journal = Recorder::new(ctx, &use_id, now);
        journal.ledger(
            Some(customer.as_str()),
            LedgerTransaction::credit_use(&customer, amount),
        );
        journal.history(
            entity::CREDIT_ACCOUNT,
            customer.as_str(),
            Some(credit_account_state(after.balance + credits, after.reserved)),
            credit_account_state(after.balance, after.reserved),
            "use",
            &format!("{} × {}", cmd.feature, cmd.units),
        );
        journal.event(
            event_type::CREDIT_DEDUCTED,
            customer.as_str(),
            &serde_json::json!({
                "customerId": customer.as_str(),
                "transactionId": &use_id,
                "feature": &cmd.feature,
                "units": cmd.units,
                "credits": credits,
                "balance": after.balance,
                "available": after.balance - after.reserved,
                "policy": &priced_by.policy,
                "policyHash": &priced_by.content_hash,
            }),
        );
        tx.record(journal.finish());
        let response = render(&CreditsUsed {
            transaction_id: Some(use_id),
            customer_id: customer.to_string(),
            feature: cmd.feature,
            units: cmd.units,
            credits_charged: credits,
            balance: Balance::new(after.balance, after.reserved),
            line_items: quote.line_items,
            priced_by,
            created_at: now,
        });
        tx.commit(Some(response.clone())).await?;
        Ok(Reply {
            response,
            replayed: false,
        })
    }

    /// Gives back (part of) a use; never more than it charged minus what
    /// was already refunded.
    pub async fn refund_credits(
        &self,
        ctx: &RequestCtx,
        cmd: RefundCommand,
        render: impl Render<CreditsRefunded>,
    ) -> Result<Reply> {
        let use_id = CreditUseId::new(&cmd.transaction_id)?;
        let requested = cmd.credits.map(PositiveCredits::new).transpose()?;
        let reason = cmd.reason.unwrap_or_else(|| "refund".to_owned());
        check_text("reason", &reason, MAX_REASON_LEN)?;
        let now = self.now();
        let refund_id = new_id("tx");

        let tx = self.store().begin(&ctx.tenant).await?;
        let mut tx = match claim(tx, ctx, now).await? {
            Claimed::Proceed(tx) => tx,
            Claimed::Replay(reply) => return Ok(reply),
        };
        let record = tx.credit_use(use_id.as_str()).await?.ok_or_else(|| {
            AppError::NotFound(format!("no credit use with transactionId `{use_id}`"))
        })?;
        let credit_use = restore_use(use_id, &record)?;
        let customer = credit_use.customer().clone();
        let remaining = credit_use.refundable();
        let amount = match requested {
            Some(amount) if amount.get() > remaining => {
                return Err(DomainError::from(CreditError::RefundExceedsRemaining {
                    use_id: credit_use.id().clone(),
                    remaining,
                    requested: amount.get(),
                })
                .into());
            }
            Some(amount) => amount,
            None => PositiveCredits::try_from(remaining).map_err(|_| {
                AppError::StateConflict(format!(
                    "credit use `{}` is already fully refunded",
                    credit_use.id()
                ))
            })?,
        };
        let refund = RefundCredits {
            refund_id: refund_id.clone(),
            use_id: credit_use.id().to_string(),
            customer_id: customer.to_string(),
            credits: amount.value(),
            reason: reason.clone(),
            now,
        };
        let (after, refunded) = match tx.refund_credits(&refund).await? {
            RefundOutcome::Refunded { account, refunded } => (account, refunded),
            RefundOutcome::ExceedsRemaining { remaining } => {
                return Err(DomainError::from(CreditError::RefundExceedsRemaining {
                    use_id: credit_use.id().clone(),
                    remaining: Credits(remaining),
                    requested: amount.get(),
                })
                .into());
            }
            RefundOutcome::Overflow => {
                return Err(AmountError::Overflow { operation: "add" }.into());
            }
        };

        let mut journal = Recorder::new(ctx, &refund_id, now);
        journal.ledger(
            Some(customer.as_str()),
            LedgerTransaction::credit_refund(&customer, amount),
        );
        journal.history(
            entity::CREDIT_ACCOUNT,
            customer.as_str(),
            Some(credit_account_state(
                after.balance - amount.value(),
                after.reserved,
            )),
            credit_account_state(after.balance, after.reserved),
            "refund",
            &reason,
        );
        journal.history(
            entity::CREDIT_USE,
            credit_use.id().as_str(),
            Some(credit_use_state(refunded - amount.value())),
            credit_use_state(refunded),
            "refund",
            &reason,
        );
        journal.event(
            event_type::CREDIT_REFUNDED,
            customer.as_str(),
            &serde_json::json!({
                "customerId": customer.as_str(),
                "transactionId": &refund_id,
                "refundedTransactionId": credit_use.id().as_str(),
                "credits": amount.value(),
                "reason": &reason,
                "balance": after.balance,
                "available": after.balance - after.reserved,
            }),
        );
        tx.record(journal.finish());
        let response = render(&CreditsRefunded {
            transaction_id: refund_id,
            refunded_transaction_id: credit_use.id().to_string(),
            customer_id: customer.to_string(),
            credits_refunded: amount.value(),
            total_refunded: refunded,
            refundable: credit_use.charged().value() - refunded,
            balance: Balance::new(after.balance, after.reserved),
            created_at: now,
        });
        tx.commit(Some(response.clone())).await?;
        Ok(Reply {
            response,
            replayed: false,
        })
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
