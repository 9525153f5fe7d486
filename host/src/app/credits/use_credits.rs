//! `POST /credits/use`: the reference implementation of the transaction
//! pattern (see [`crate::app`]): price outside the transaction; claim the
//! key, debit with a guard, validate against the locked state (a verdict
//! reached beforehand on the same values stands), journal and commit the
//! rendered answer inside it.

use super::super::customers::{Customer, not_found};
use super::super::error::{AppError, Result};
use super::super::idempotency::claim_in;
use super::super::journal::{Recorder, event_type};
use super::super::policy::{invalid_output, policy_ref, price, validate};
use super::super::{App, Reply, RequestCtx, new_id};
use super::{Balance, CreditsUsed, Render, UseCommand, check_feature, check_metadata};
use crate::domain::credit::CreditUseKind;
use crate::domain::ledger::LedgerTransaction;
use crate::domain::money::AmountError;
use crate::domain::{Credits, CustomerId, DomainError, PositiveCredits};
use crate::policy::registry::CallContext;
use crate::policy::types;
use crate::store::{DebitCredits, DebitOutcome, Finish, Queries, TxOps, utc_day};

impl App {
    /// Spends credits on a feature use: the tenant's credit policy prices
    /// it, its validation policies check it against the locked balance and
    /// today's spend, and the guarded debit takes it — or nothing happens.
    pub async fn use_credits(
        &self,
        ctx: &RequestCtx,
        cmd: UseCommand,
        render: impl Render<CreditsUsed> + 'static,
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
        let (record, last_seen) = self
            .store()
            .customer_and_account(&ctx.tenant, customer.as_str())
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
        let feature = cmd.feature.clone();
        let subject = move |available: i64, spent_today: i64| {
            types::ValidationSubject::CreditUse(types::CreditUseSubject {
                feature: feature.clone(),
                units: cmd.units,
                credits,
                balance: available,
                spent_today,
                metadata: metadata.clone(),
            })
        };

        // 2. Validate against the account as last committed, outside the
        //    transaction. The verdict is used only if the debit finds
        //    exactly these values (a policy's answer depends on its input
        //    alone): the common case, in which the writer or the row lock is
        //    then held without a policy call.
        let seen = (last_seen.available(), last_seen.spent_on(utc_day(now)));
        let early_verdict =
            (credits > 0).then(|| validate(&validation, &call_ctx, &subject(seen.0, seen.1)));

        // What the debit writes, made before the writer (SQLite) or a row
        // lock (PostgreSQL) is held.
        let use_id = new_id("tx");
        let debit = DebitCredits {
            use_id: use_id.clone(),
            customer_id: customer.to_string(),
            credits,
            kind: CreditUseKind::Use,
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

        // 3. One transaction: claim the key, debit, validate, journal, commit
        //    (on SQLite, on the writer's own thread: `Store::write`).
        let job_ctx = ctx.clone();
        self.store()
            .write(&ctx.tenant, move |tx| {
                Box::pin(async move {
                    let ctx = job_ctx;
                    if let Some(answer) = claim_in(tx, &ctx, now).await? {
                        return answer.map(Finish::Discard);
                    }
                    let Ok(amount) = PositiveCredits::new(credits) else {
                        // Priced at zero: nothing moves, but the rules still
                        // apply and the answer is kept for the idempotency key.
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
                        return Ok(Finish::Commit {
                            response: Some(response.clone()),
                            value: Reply {
                                response,
                                replayed: false,
                            },
                        });
                    };
                    let after = match tx.debit_credits(&debit).await? {
                        DebitOutcome::Debited(after) => after,
                        DebitOutcome::NoAccount => return Err(not_found(customer.as_str())),
                        DebitOutcome::Insufficient(account) => {
                            // The rules are checked first, as for any use: a
                            // use that breaks a rule is refused for that reason.
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
                    // The row is locked: these are exactly the values this use
                    // debits from, so a daily cap holds under any concurrency.
                    let locked = (
                        after.balance - after.reserved + credits,
                        after.spent_today - credits,
                    );
                    match early_verdict {
                        Some(verdict) if locked == seen => verdict?,
                        _ => validate(&validation, &call_ctx, &subject(locked.0, locked.1))?,
                    }

                    let mut journal = Recorder::new(&ctx, &use_id, now);
                    journal.ledger(
                        Some(customer.as_str()),
                        LedgerTransaction::credit_use(&customer, amount),
                    );
                    journal.credit_balance_change(
                        customer.as_str(),
                        after.balance + credits,
                        after.balance,
                        after.reserved,
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
                    Ok(Finish::Commit {
                        response: Some(response.clone()),
                        value: Reply {
                            response,
                            replayed: false,
                        },
                    })
                })
            })
            .await
    }
}
