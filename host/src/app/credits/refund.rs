//! `POST /credits/refund`: give back (part of) a use, bounded by the
//! domain's refund rule and a guarded update.

use super::super::error::{AppError, Result};
use super::super::idempotency::{Claimed, claim};
use super::super::journal::credit_use_state;
use super::super::journal::{Recorder, entity, event_type};
use super::super::{App, Reply, RequestCtx, new_id};
use super::{
    Balance, CreditsRefunded, MAX_REASON_LEN, RefundCommand, Render, check_text, restore_use,
};
use crate::domain::credit::CreditError;
use crate::domain::ledger::LedgerTransaction;
use crate::domain::money::AmountError;
use crate::domain::{CreditUseId, Credits, DomainError, PositiveCredits};
use crate::store::{RefundCredits, RefundOutcome, Transactions, TxOps};

impl App {
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
        journal.credit_balance_change(
            customer.as_str(),
            after.balance - amount.value(),
            after.balance,
            after.reserved,
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
}
