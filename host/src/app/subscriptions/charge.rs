//! Paying what the subscription policy quoted: from the customer's credits
//! (tenant setting `subscriptions.pay_from_credits`) or by leaving a
//! `PENDING` order for the payment step. Every payment is its own business
//! transaction (own id, ledger postings, history row and event) inside the
//! caller's open transaction, so it commits or rolls back with the
//! subscription change it pays for.

use std::collections::BTreeMap;

use serde_json::json;

use super::super::customers::not_found;
use super::super::error::{AppError, PolicyRef, Result};
use super::super::journal::{Recorder, event_type};
use super::super::orders::{PendingOrder, order_lines, place_order};
use super::super::policy::invalid_output;
use super::super::{App, RequestCtx, new_id};
use crate::domain::credit::CreditUseKind;
use crate::domain::ledger::LedgerTransaction;
use crate::domain::money::AmountError;
use crate::domain::order::OrderItem;
use crate::domain::{Currency, CustomerId, PositiveCredits};
use crate::policy::registry::Binding;
use crate::policy::types;
use crate::store::{
    DebitCredits, DebitOutcome, GrantCredits, GrantOutcome, OrderSource, SubscriptionRecord, Tx,
    TxOps,
};

/// How a subscription charge was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentMethod {
    /// Debited from (or, for a credit owed, granted to) the customer's credits.
    Credits,
    /// Left as a `PENDING` order for the payment step.
    Order,
    /// Nothing to pay (a trial, a zero total), or a credit owed that the
    /// tenant settles outside FluxPay.
    None,
}

impl PaymentMethod {
    /// `credits`, `order`, `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Credits => "credits",
            PaymentMethod::Order => "order",
            PaymentMethod::None => "none",
        }
    }
}

/// What was charged for one quote.
#[derive(Debug, Clone)]
pub struct ChargeInfo {
    /// How it was settled.
    pub method: PaymentMethod,
    /// The quoted total (negative: a credit owed to the customer).
    pub total: types::Amount,
    /// Credits debited.
    pub credits_charged: i64,
    /// Credits granted back (a credit owed, paid from credits).
    pub credits_granted: i64,
    /// A credit owed that was not paid out (the tenant does not pay from
    /// credits): reported here and in the event.
    pub credit_owed: Option<types::Money>,
    /// The debit's or grant's ledger transaction.
    pub transaction_id: Option<String>,
    /// The order left for payment.
    pub order_id: Option<String>,
    /// How the policy arrived at the total.
    pub line_items: Vec<types::LineItem>,
    /// Who priced it.
    pub priced_by: PolicyRef,
}

impl ChargeInfo {
    /// The charge as events carry it.
    pub(super) fn summary(&self) -> serde_json::Value {
        json!({
            "method": self.method.as_str(),
            "total": amount_json(&self.total),
            "creditsCharged": self.credits_charged,
            "creditsGranted": self.credits_granted,
            "creditOwed": self.credit_owed.as_ref().map(|m| json!({
                "amount": m.amount, "currency": &m.currency,
            })),
            "transactionId": &self.transaction_id,
            "orderId": &self.order_id,
            "policy": &self.priced_by.policy,
            "policyHash": &self.priced_by.content_hash,
        })
    }
}

fn amount_json(amount: &types::Amount) -> serde_json::Value {
    match amount {
        types::Amount::Money(m) => json!({ "amount": m.amount, "currency": &m.currency }),
        types::Amount::Credits(n) => json!({ "credits": n }),
    }
}

/// A charge's outcome.
pub(super) enum Paid {
    /// Settled (or nothing to settle).
    Done(Box<ChargeInfo>),
    /// Paying from credits, and the customer has too few.
    Insufficient {
        /// Spendable credits.
        available: i64,
        /// What the charge needs.
        requested: i64,
    },
}

/// What a charge is for: the subscription, and a sentence for history.
pub(super) struct ChargeFor<'a> {
    pub subscription: &'a SubscriptionRecord,
    pub plan_id: &'a str,
    pub purpose: &'a str,
    /// Whether the quote may owe the customer (a prorated downgrade). A
    /// first period or a renewal priced below zero is a policy fault, not
    /// credits to hand out.
    pub may_credit: bool,
}

/// `minor` units of `currency` in credits at `per_major` credits per major
/// unit, rounded up to a whole credit (`up`) or down.
pub(super) fn money_to_credits(
    minor: i64,
    currency: Currency,
    per_major: i64,
    up: bool,
) -> Result<i64> {
    let scale = 10i128.pow(u32::from(currency.exponent()));
    let numerator = i128::from(minor)
        .checked_mul(i128::from(per_major))
        .ok_or(AmountError::Overflow { operation: "mul" })?;
    let credits = if up {
        (numerator + scale - 1).div_euclid(scale)
    } else {
        numerator.div_euclid(scale)
    };
    i64::try_from(credits).map_err(|_| AmountError::Overflow { operation: "mul" }.into())
}

impl App {
    /// Pays `quote` for `what` in the open transaction, as the tenant pays.
    pub(super) async fn pay(
        &self,
        tx: &mut Tx,
        ctx: &RequestCtx,
        now: i64,
        binding: &Binding,
        quote: &types::Quote,
        what: ChargeFor<'_>,
    ) -> Result<Paid> {
        let settings = self.tenants().get(&ctx.tenant);
        let rate = settings
            .filter(|s| s.pay_from_credits)
            .and_then(|s| s.credits_per_major_unit);
        let mut info = ChargeInfo {
            method: PaymentMethod::None,
            total: quote.total.clone(),
            credits_charged: 0,
            credits_granted: 0,
            credit_owed: None,
            transaction_id: None,
            order_id: None,
            line_items: quote.line_items.clone(),
            priced_by: super::super::policy::policy_ref(binding),
        };
        let customer = CustomerId::new(&what.subscription.customer_id)?;
        let negative = match &quote.total {
            types::Amount::Credits(n) => *n < 0,
            types::Amount::Money(m) => m.amount < 0,
        };
        if negative && !what.may_credit {
            return Err(invalid_output(
                binding,
                format!("a {} was priced below zero", what.purpose),
            ));
        }
        // Credits owed or due, in credits (when paying from credits).
        let (sign, credits) = match (&quote.total, rate) {
            (types::Amount::Credits(n), Some(_)) => (n.signum(), n.checked_abs().unwrap_or(0)),
            (types::Amount::Credits(_), None) => {
                return Err(invalid_output(
                    binding,
                    "a subscription was priced in credits, but the tenant does not pay \
                     subscriptions from credits",
                ));
            }
            (types::Amount::Money(money), rate) => {
                let currency = Currency::parse(&money.currency)
                    .map_err(|e| invalid_output(binding, e.to_string()))?;
                match rate {
                    None if money.amount < 0 => {
                        info.credit_owed = Some(types::Money {
                            amount: money.amount.checked_neg().ok_or_else(|| {
                                invalid_output(binding, "the amount owed does not fit 64 bits")
                            })?,
                            currency: money.currency.clone(),
                        });
                        return Ok(Paid::Done(Box::new(info)));
                    }
                    None if money.amount == 0 => return Ok(Paid::Done(Box::new(info))),
                    None => {
                        return self
                            .leave_order(
                                tx, ctx, now, binding, quote, &customer, currency, what, info,
                            )
                            .await;
                    }
                    Some(rate) => (
                        money.amount.signum(),
                        money_to_credits(
                            money.amount.checked_abs().ok_or_else(|| {
                                invalid_output(binding, "the amount does not fit 64 bits")
                            })?,
                            currency,
                            rate,
                            money.amount > 0,
                        )?,
                    ),
                }
            }
        };
        let Ok(amount) = PositiveCredits::new(credits) else {
            return Ok(Paid::Done(Box::new(info)));
        };
        info.method = PaymentMethod::Credits;
        if sign < 0 {
            return grant_back(tx, ctx, now, &customer, amount, what, info).await;
        }
        let use_id = new_id("tx");
        let debit = DebitCredits {
            use_id: use_id.clone(),
            customer_id: customer.to_string(),
            credits,
            kind: CreditUseKind::SubscriptionCharge,
            feature: format!("subscription:{}", what.plan_id),
            units: 1,
            metadata: json!({
                "subscriptionId": &what.subscription.subscription_id,
                "planId": what.plan_id,
            })
            .to_string(),
            quote: serde_json::to_string(quote)
                .map_err(|err| AppError::Internal(err.to_string()))?,
            policy: info.priced_by.policy.clone(),
            policy_hash: info.priced_by.content_hash.clone(),
            now,
            from_reserved: 0,
        };
        let after = match tx.debit_credits(&debit).await? {
            DebitOutcome::Debited(after) => after,
            DebitOutcome::NoAccount => return Err(not_found(customer.as_str())),
            DebitOutcome::Insufficient(account) => {
                return Ok(Paid::Insufficient {
                    available: account.available(),
                    requested: credits,
                });
            }
        };
        let mut journal = Recorder::new(ctx, &use_id, now);
        journal.ledger(
            Some(customer.as_str()),
            LedgerTransaction::subscription_charge(&customer, amount),
        );
        journal.credit_balance_change(
            customer.as_str(),
            after.balance + credits,
            after.balance,
            after.reserved,
            "subscription_charge",
            what.purpose,
        );
        journal.event(
            event_type::CREDIT_DEDUCTED,
            customer.as_str(),
            &json!({
                "customerId": customer.as_str(),
                "transactionId": &use_id,
                "subscriptionId": &what.subscription.subscription_id,
                "feature": &debit.feature,
                "credits": credits,
                "balance": after.balance,
                "available": after.balance - after.reserved,
                "policy": &info.priced_by.policy,
                "policyHash": &info.priced_by.content_hash,
            }),
        );
        tx.record(journal.finish());
        info.credits_charged = credits;
        info.transaction_id = Some(use_id);
        Ok(Paid::Done(Box::new(info)))
    }

    /// The tenant does not pay from credits: a `PENDING` order, priced by
    /// the quote's lines, carries the charge to the payment step.
    #[allow(clippy::too_many_arguments)]
    async fn leave_order(
        &self,
        tx: &mut Tx,
        ctx: &RequestCtx,
        now: i64,
        binding: &Binding,
        quote: &types::Quote,
        customer: &CustomerId,
        currency: Currency,
        what: ChargeFor<'_>,
        mut info: ChargeInfo,
    ) -> Result<Paid> {
        let subscription_id = &what.subscription.subscription_id;
        let pending = PendingOrder {
            customer: customer.clone(),
            currency,
            items: vec![OrderItem::new(format!("plan:{}", what.plan_id), 1)?],
            lines: order_lines(binding, currency, quote)?,
            quote: quote.clone(),
            priced_by: info.priced_by.clone(),
            metadata: BTreeMap::from([("subscriptionId".to_owned(), subscription_id.clone())]),
            source: OrderSource::Subscription,
            source_id: Some(subscription_id.clone()),
            reason: format!("{} of {subscription_id}", what.purpose),
        };
        let order = place_order(tx, ctx, now, pending).await?;
        info.method = PaymentMethod::Order;
        info.order_id = Some(order.order_id);
        Ok(Paid::Done(Box::new(info)))
    }
}

/// A credit owed, paid back as credits (rounded down: never more than owed).
async fn grant_back(
    tx: &mut Tx,
    ctx: &RequestCtx,
    now: i64,
    customer: &CustomerId,
    amount: PositiveCredits,
    what: ChargeFor<'_>,
    mut info: ChargeInfo,
) -> Result<Paid> {
    let grant_id = new_id("tx");
    let grant = GrantCredits {
        grant_id: grant_id.clone(),
        customer_id: customer.to_string(),
        credits: amount.value(),
        expires_at: None,
        reason: what.purpose.to_owned(),
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
        LedgerTransaction::credit_grant(customer, amount),
    );
    journal.credit_balance_change(
        customer.as_str(),
        after.balance - amount.value(),
        after.balance,
        after.reserved,
        "grant",
        what.purpose,
    );
    journal.event(
        event_type::CREDIT_GRANTED,
        customer.as_str(),
        &json!({
            "customerId": customer.as_str(),
            "transactionId": &grant_id,
            "subscriptionId": &what.subscription.subscription_id,
            "credits": amount.value(),
            "reason": what.purpose,
            "expiresAt": null,
            "balance": after.balance,
            "available": after.balance - after.reserved,
        }),
    );
    tx.record(journal.finish());
    info.credits_granted = amount.value();
    info.transaction_id = Some(grant_id);
    Ok(Paid::Done(Box::new(info)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_converts_to_credits_by_the_currency_exponent_rounding_up_charges() {
        // 19.99 USD at 100 credits per dollar.
        assert_eq!(
            money_to_credits(1999, Currency::USD, 100, true).unwrap(),
            1999
        );
        // 0.01 USD at 1 credit per dollar: a charge rounds up, a credit down.
        assert_eq!(money_to_credits(1, Currency::USD, 1, true).unwrap(), 1);
        assert_eq!(money_to_credits(1, Currency::USD, 1, false).unwrap(), 0);
        // JPY has no minor unit; KWD has three.
        assert_eq!(money_to_credits(500, Currency::JPY, 2, true).unwrap(), 1000);
        assert_eq!(money_to_credits(1500, Currency::KWD, 10, true).unwrap(), 15);
        assert!(money_to_credits(i64::MAX, Currency::JPY, 2, true).is_err());
    }
}
