//! `POST /credits/use`: the reference implementation of the transaction
//! pattern (see [`crate::app`]): price and validate outside the
//! transaction; inside it, claim the key, debit with a guard, check that
//! the locked account is what the validation saw (else leave, validate the
//! new values and try again, a bounded number of times), journal and
//! commit the rendered answer.

use std::sync::Arc;

use super::super::customers::{Customer, not_found};
use super::super::error::{AppError, PolicyRef, Result};
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
use crate::store::{DebitCredits, DebitOutcome, Finish, Queries, Tx, TxOps, utc_day};

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

        // Validation decides on a snapshot of the account: this customer's
        // uses take turns from the snapshot to the commit, so that they do
        // not make each other's snapshots stale (`customer_locks`).
        let recheck = !validation.is_empty();
        let _turn = match recheck {
            true => Some(
                self.customer_locks()
                    .lock(&ctx.tenant, customer.as_str())
                    .await,
            ),
            false => None,
        };

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
        let subject = move |(available, spent_today): Seen| {
            types::ValidationSubject::CreditUse(types::CreditUseSubject {
                feature: feature.clone(),
                units: cmd.units,
                credits,
                balance: available,
                spent_today,
                metadata: metadata.clone(),
            })
        };

        // What the debit writes, made before the writer (SQLite) or a row
        // lock (PostgreSQL) is held.
        let use_id = new_id("tx");
        let plan = Arc::new(UsePlan {
            ctx: ctx.clone(),
            customer: customer.clone(),
            feature: cmd.feature.clone(),
            units: cmd.units,
            credits,
            now,
            debit: DebitCredits {
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
                from_reserved: 0,
            },
            line_items: quote.line_items,
            priced_by,
        });

        // 2. Validate against the account as last committed, outside any
        //    transaction; 3. in one transaction, claim the key and debit,
        //    and keep the verdict only if the locked account shows the
        //    values it was reached on (a policy's answer depends on its
        //    input alone). If they moved, leave the transaction, validate
        //    the values it found and try again. Without validation
        //    policies there is nothing to re-check.
        let mut seen = (last_seen.available(), last_seen.spent_on(utc_day(now)));
        let mut render = render;
        for _ in 0..USE_ATTEMPTS {
            let verdict = validate(&validation, &call_ctx, &subject(seen));
            let expect = recheck.then_some(seen);
            let plan = plan.clone();
            // On SQLite the job runs on the writer's own thread
            // (`Store::write`).
            let attempt = self
                .store()
                .write(&ctx.tenant, move |tx| {
                    Box::pin(use_in(tx, plan, expect, verdict, render))
                })
                .await?;
            match attempt {
                Attempt::Done(reply) => return Ok(reply),
                Attempt::Changed(found, back) => (seen, render) = (found, back),
            }
        }
        Err(AppError::Stale(format!(
            "the balance of customer `{customer}` changed under each of {USE_ATTEMPTS} \
             attempts to validate this use; nothing was charged, retry"
        )))
    }
}

/// How often a use is validated and tried against a balance that keeps
/// changing before it gives up with a retryable error (`SYS_006`).
const USE_ATTEMPTS: usize = 4;

/// The account values a credit-use verdict depends on: available credits
/// and credits spent today.
type Seen = (i64, i64);

/// Everything a use's transaction needs, made before it begins.
struct UsePlan {
    ctx: RequestCtx,
    customer: CustomerId,
    feature: String,
    units: i64,
    credits: i64,
    now: i64,
    debit: DebitCredits,
    line_items: Vec<types::LineItem>,
    priced_by: PolicyRef,
}

/// What one attempt came to.
enum Attempt<R> {
    /// Answered (committed, or a replay).
    Done(Reply),
    /// The account no longer shows what the verdict was reached on: these
    /// are its values now; the render comes back for the next attempt.
    Changed(Seen, R),
}

/// One attempt, in the write transaction: claim, debit, check that the
/// account is what the verdict saw (`expect`), journal.
async fn use_in<R: Render<CreditsUsed>>(
    tx: &mut Tx,
    plan: Arc<UsePlan>,
    expect: Option<Seen>,
    verdict: Result<()>,
    render: R,
) -> Result<Finish<Attempt<R>>> {
    let UsePlan {
        ctx,
        customer,
        credits,
        now,
        ..
    } = &*plan;
    let (credits, now, day) = (*credits, *now, utc_day(*now));
    let moved = |found: Seen| expect.is_some_and(|seen| seen != found);
    if let Some(answer) = claim_in(tx, ctx, now).await? {
        return answer.map(|reply| Finish::Discard(Attempt::Done(reply)));
    }
    let Ok(amount) = PositiveCredits::new(credits) else {
        // Priced at zero: nothing moves, but the rules still apply and the
        // answer is kept for the idempotency key.
        let account = tx
            .credit_account(customer.as_str())
            .await?
            .ok_or_else(|| not_found(customer.as_str()))?;
        let found = (account.available(), account.spent_on(day));
        if moved(found) {
            return Ok(Finish::Discard(Attempt::Changed(found, render)));
        }
        verdict?;
        return Ok(commit(
            render,
            &plan,
            None,
            Balance::new(account.balance, account.reserved),
        ));
    };
    let after = match tx.debit_credits(&plan.debit).await? {
        DebitOutcome::Debited(after) => after,
        DebitOutcome::NoAccount => return Err(not_found(customer.as_str())),
        DebitOutcome::Insufficient(account) => {
            let found = (account.available(), account.spent_on(day));
            if moved(found) {
                return Ok(Finish::Discard(Attempt::Changed(found, render)));
            }
            // The rules are checked first, as for any use: a use that
            // breaks a rule is refused for that reason.
            verdict?;
            return Err(DomainError::InsufficientCredits {
                available: Credits(account.available()),
                requested: Credits(credits),
            }
            .into());
        }
    };
    // The row is locked: these are exactly the values this use debits
    // from, so a daily cap holds under any concurrency.
    let found = (
        after.balance - after.reserved + credits,
        after.spent_today - credits,
    );
    if moved(found) {
        return Ok(Finish::Discard(Attempt::Changed(found, render)));
    }
    verdict?;

    let mut journal = Recorder::new(ctx, &plan.debit.use_id, now);
    journal.ledger(
        Some(customer.as_str()),
        LedgerTransaction::credit_use(customer, amount),
    );
    journal.credit_balance_change(
        customer.as_str(),
        after.balance + credits,
        after.balance,
        after.reserved,
        "use",
        &format!("{} × {}", plan.feature, plan.units),
    );
    journal.event(
        event_type::CREDIT_DEDUCTED,
        customer.as_str(),
        &serde_json::json!({
            "customerId": customer.as_str(),
            "transactionId": &plan.debit.use_id,
            "feature": &plan.feature,
            "units": plan.units,
            "credits": credits,
            "balance": after.balance,
            "available": after.balance - after.reserved,
            "policy": &plan.priced_by.policy,
            "policyHash": &plan.priced_by.content_hash,
        }),
    );
    tx.record(journal.finish());
    Ok(commit(
        render,
        &plan,
        Some(plan.debit.use_id.clone()),
        Balance::new(after.balance, after.reserved),
    ))
}

/// The answer of a use that goes through, kept for its idempotency key.
fn commit<R: Render<CreditsUsed>>(
    render: R,
    plan: &UsePlan,
    transaction_id: Option<String>,
    balance: Balance,
) -> Finish<Attempt<R>> {
    let response = render(&CreditsUsed {
        transaction_id: transaction_id.clone(),
        customer_id: plan.customer.to_string(),
        feature: plan.feature.clone(),
        units: plan.units,
        credits_charged: if transaction_id.is_some() {
            plan.credits
        } else {
            0
        },
        balance,
        line_items: plan.line_items.clone(),
        priced_by: plan.priced_by.clone(),
        created_at: plan.now,
    });
    Finish::Commit {
        response: Some(response.clone()),
        value: Attempt::Done(Reply {
            response,
            replayed: false,
        }),
    }
}
