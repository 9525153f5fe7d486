//! The credit expiry job: every grant whose `expiresAt` has passed loses
//! what is left of it, each in its own transaction with its ledger posting
//! (Dr customer credits, Cr credits expired), balance history row and
//! `credit.expired` event.
//!
//! Safe to run concurrently (several hosts on one PostgreSQL): each grant is
//! re-read locked and skipped when another run already expired it. Lock
//! order is the account, then the grant — the order a debit takes them in.
//!
//! Between a grant's expiry time and the job's next run its credits are
//! still in the balance and spendable — spent first, having the soonest
//! expiry (see `CreditGrant::allocate`) — so the job never takes credits
//! that do not expire in their place; `serve` runs it every 10 s. Credits a
//! saga has reserved stay on the grant and expire on a later run, once
//! released.

use super::super::error::{AppError, Result};
use super::super::journal::{Recorder, event_type};
use super::super::{App, RequestCtx, new_id};
use crate::domain::credit::{CreditAccount, CreditGrant};
use crate::domain::{CreditGrantId, Credits, CustomerId, PositiveCredits, Timestamp};
use crate::store::{
    CreditExpiryQueries, CreditExpiryTx, DueGrant, ExpireGrant, Transactions, TxOps,
};

/// Grants looked at per tenant and run; the next run takes the rest.
const BATCH: i64 = 500;

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpiryRun {
    /// Grants expired.
    pub grants: u64,
    /// Credits that left balances.
    pub credits: i64,
    /// Grants that failed (logged; retried on the next run).
    pub failed: u64,
}

impl App {
    /// Expires every due grant of every configured tenant.
    pub async fn expire_credits(&self, now: i64) -> Result<ExpiryRun> {
        let mut run = ExpiryRun::default();
        let tenants: Vec<String> = self.tenants().iter().map(|t| t.id.clone()).collect();
        for tenant in tenants {
            let due = self.store().due_grants(&tenant, now, BATCH).await?;
            for grant in due {
                match self.expire_grant(&tenant, &grant, now).await {
                    Ok(Some(credits)) => {
                        run.grants += 1;
                        run.credits += credits;
                    }
                    Ok(None) => {}
                    Err(err) => {
                        run.failed += 1;
                        tracing::warn!(
                            tenant = %tenant,
                            grant = %grant.grant_id,
                            error = %err,
                            "credits.expiry_failed"
                        );
                    }
                }
            }
        }
        Ok(run)
    }

    /// Expires one grant; the credits that left the balance, or `None` when
    /// another run got there first or all that is left is reserved.
    async fn expire_grant(&self, tenant: &str, due: &DueGrant, now: i64) -> Result<Option<i64>> {
        let ctx = RequestCtx::system(tenant, "scheduler:credit_expiry");
        let mut tx = self.store().begin(tenant).await?;
        let Some(account) = tx.credit_account(&due.customer_id).await? else {
            return Err(AppError::Internal(format!(
                "grant {} belongs to customer {} who has no credit account",
                due.grant_id, due.customer_id
            )));
        };
        let Some(grant) = tx.due_grant(&due.grant_id, now).await? else {
            return Ok(None);
        };
        let corrupt = |e: crate::domain::DomainError| {
            AppError::Internal(format!("grant {}: {e}", grant.grant_id))
        };
        let customer = CustomerId::new(&grant.customer_id).map_err(corrupt)?;
        let domain_account = CreditAccount::restore(
            customer.clone(),
            Credits(account.balance),
            Credits(account.reserved),
        )
        .map_err(corrupt)?;
        let domain_grant = CreditGrant::restore(
            CreditGrantId::new(&grant.grant_id).map_err(corrupt)?,
            customer.clone(),
            PositiveCredits::new(grant.credits).map_err(|e| corrupt(e.into()))?,
            Credits(grant.remaining),
            Some(Timestamp::from_unix_millis(grant.expires_at)),
        )
        .map_err(corrupt)?;
        let expiry = domain_account
            .expire(&domain_grant, Timestamp::from_unix_millis(now))
            .map_err(corrupt)?;
        let expiry_id = new_id("tx");
        let after = tx
            .expire_grant(&ExpireGrant {
                expiry_id: expiry_id.clone(),
                grant_id: grant.grant_id.clone(),
                customer_id: grant.customer_id.clone(),
                expired: expiry.expired.value(),
                now,
            })
            .await?;
        let (Some(after), Some(ledger)) = (after, expiry.ledger) else {
            // Everything left on it is reserved: nothing moves yet.
            return Ok(None);
        };
        let expired = expiry.expired.value();
        let mut journal = Recorder::new(&ctx, &expiry_id, now);
        journal.ledger(Some(customer.as_str()), ledger);
        journal.credit_balance_change(
            customer.as_str(),
            after.balance + expired,
            after.balance,
            after.reserved,
            "expire",
            &format!("grant {} expired", grant.grant_id),
        );
        journal.event(
            event_type::CREDIT_EXPIRED,
            customer.as_str(),
            &serde_json::json!({
                "customerId": customer.as_str(),
                "transactionId": &expiry_id,
                "grantTransactionId": &grant.grant_id,
                "credits": expired,
                "unspent": grant.remaining,
                "balance": after.balance,
                "available": after.balance - after.reserved,
                "expiredAt": grant.expires_at,
            }),
        );
        tx.record(journal.finish());
        tx.commit(None).await?;
        Ok(Some(expired))
    }
}
