//! `POST /credits/charge`: grant credits, optionally expiring.

use super::super::customers::not_found;
use super::super::error::Result;
use super::super::idempotency::{Claimed, claim};
use super::super::journal::{Recorder, event_type};
use super::super::{App, Reply, RequestCtx, new_id};
use super::{Balance, CreditsGranted, GrantCommand, MAX_REASON_LEN, Render, check_text};
use crate::domain::credit::CreditError;
use crate::domain::ledger::LedgerTransaction;
use crate::domain::money::AmountError;
use crate::domain::{CustomerId, DomainError, PositiveCredits, Timestamp};
use crate::store::{GrantCredits, GrantOutcome, Transactions, TxOps};

impl App {
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
        journal.credit_balance_change(
            customer.as_str(),
            after.balance - amount.value(),
            after.balance,
            after.reserved,
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
}
