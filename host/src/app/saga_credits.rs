//! Credits in the order saga: an order may be paid with the customer's
//! prepaid credits, with money through the PG, or both.
//!
//! - **reserve**, with the payment's intent (or, paid with credits only,
//!   with the order's payment): the credits are held (no longer
//!   available, still in the balance) and their money value settles that
//!   much of the order's bill — `credit.reserved`;
//! - **capture**, when the tenant's service completes the order: the held
//!   credits are spent (taken from the soonest-expiring grants, like any
//!   use, and refundable by `POST /credits/refund` with the use's id) —
//!   `credit.deducted`;
//! - **release**, whenever the saga ends `COMPENSATED` (a declined card,
//!   a failed or silent service, a void): the credits are available again
//!   and the bill open again — `credit.released`.
//!
//! Capture and release happen inside [`super::saga::advance`], in the
//! transaction that moves the saga to `COMPLETED` or `COMPENSATED`: the
//! credits can never outlive the saga's outcome (the auditor checks that
//! no finished saga holds any). Each is a business transaction of its own
//! (ledger, credit-account history row, one event).
//!
//! Credits convert to money at the tenant's `credits_per_major_unit`; the
//! credits named must be worth a whole number of minor units.

use super::error::{AppError, Result};
use super::journal::{Recorder, credit_account_state, entity, event_type};
use super::{App, RequestCtx, new_id};
use crate::domain::ledger::LedgerTransaction;
use crate::domain::money::AmountError;
use crate::domain::{Credits, CustomerId, DomainError, Money, PositiveCredits, PositiveMoney};
use crate::store::{
    AccountAfter, DebitCredits, DebitOutcome, ReservationQueries, ReservationRecord, ReservationTx,
    ReserveOutcome, Tx, TxOps,
};

/// Credits an order is to be paid with, and what they are worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditsApplied {
    /// Credits to reserve.
    pub credits: PositiveCredits,
    /// Their value in the order's currency.
    pub value: PositiveMoney,
}

impl App {
    /// The credits `order_id`'s sagas reserved, oldest first.
    pub async fn order_reservations(
        &self,
        tenant: &str,
        order_id: &str,
    ) -> Result<Vec<ReservationRecord>> {
        Ok(self.store().reservations_of_order(tenant, order_id).await?)
    }

    /// What `credits` are worth of an order owing `total` minor units of
    /// `currency`, at the tenant's `credits_per_major_unit`. Refused
    /// (`INVALID_REQUEST`) when the tenant has no rate, the credits are not
    /// worth a whole number of minor units, or worth more than the order.
    pub(super) fn credits_applied(
        &self,
        tenant: &str,
        credits: i64,
        (total, currency): (i64, &str),
    ) -> Result<CreditsApplied> {
        let credits = PositiveCredits::new(credits).map_err(|_| {
            AppError::Invalid(format!("credits must be a positive number, not {credits}"))
        })?;
        let rate = self
            .tenants()
            .get(tenant)
            .and_then(|t| t.credits_per_major_unit)
            .ok_or_else(|| {
                AppError::Invalid(format!(
                    "tenant `{tenant}` does not take credits for orders: it has no \
                     subscriptions.credits_per_major_unit"
                ))
            })?;
        let currency = crate::domain::Currency::parse(currency)
            .map_err(|err| AppError::Internal(format!("order currency: {err}")))?;
        let value = credits_value(credits, rate, currency, total)?;
        Ok(CreditsApplied { credits, value })
    }
}

/// What `credits` are worth in `currency` at `rate` credits per major
/// unit: exactly a whole number of minor units, and at most `total`.
fn credits_value(
    credits: PositiveCredits,
    rate: i64,
    currency: crate::domain::Currency,
    total: i64,
) -> Result<PositiveMoney> {
    let code = currency.code();
    let scale = 10i128.pow(u32::from(currency.exponent()));
    let numerator = i128::from(credits.value()) * scale;
    if numerator % i128::from(rate) != 0 {
        return Err(AppError::Invalid(format!(
            "{credits} credits are not worth a whole number of minor units of {code} at {rate} \
             credits per unit: name a multiple of {} credits",
            i128::from(rate) / gcd(scale, i128::from(rate))
        )));
    }
    let minor = i64::try_from(numerator / i128::from(rate))
        .map_err(|_| AppError::from(AmountError::Overflow { operation: "mul" }))?;
    if minor > total {
        return Err(AppError::Invalid(format!(
            "{credits} credits are worth {minor} minor units of {code}, more than the {total} \
             the order owes"
        )));
    }
    Ok(PositiveMoney::new(
        Money::new(minor, currency),
        "credits' value",
    )?)
}

fn gcd(a: i128, b: i128) -> i128 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Holds `applied` of the customer's credits for `order_id`, in `tx`; the
/// reservation. Too few available is `INSUFFICIENT_BALANCE`, nothing held.
pub(super) async fn reserve(
    tx: &mut Tx,
    ctx: &RequestCtx,
    (order_id, customer_id): (&str, &str),
    applied: CreditsApplied,
    now: i64,
) -> Result<ReservationRecord> {
    let customer = CustomerId::new(customer_id)?;
    let reservation = ReservationRecord {
        reservation_id: new_id("rsv"),
        customer_id: customer_id.to_owned(),
        order_id: order_id.to_owned(),
        credits: applied.credits.value(),
        value: applied.value.minor(),
        currency: applied.value.currency().code().to_owned(),
        status: "HELD".into(),
        use_id: None,
        created_at: now,
        updated_at: now,
    };
    let after = match tx.reserve_credits(&reservation).await? {
        ReserveOutcome::Reserved(after) => after,
        ReserveOutcome::NoAccount => {
            return Err(DomainError::InsufficientCredits {
                available: Credits::ZERO,
                requested: applied.credits.get(),
            }
            .into());
        }
        ReserveOutcome::Insufficient(account) => {
            return Err(DomainError::InsufficientCredits {
                available: Credits(account.available()),
                requested: applied.credits.get(),
            }
            .into());
        }
    };
    let mut journal = Recorder::new(ctx, new_id("tx"), now);
    journal.ledger(
        Some(customer_id),
        LedgerTransaction::order_credits_reserved(&customer, applied.credits, applied.value),
    );
    account_step(
        &mut journal,
        &reservation,
        &after,
        (after.balance, after.reserved - reservation.credits),
        "reserve",
    );
    journal.event(
        event_type::CREDIT_RESERVED,
        customer_id,
        &reservation_event(&reservation, &after, None),
    );
    tx.record(journal.finish());
    Ok(reservation)
}

/// Releases the credits `order_id` holds, if any, in `tx`: its saga is
/// compensated.
pub(super) async fn release(
    tx: &mut Tx,
    ctx: &RequestCtx,
    order_id: &str,
    reason: &str,
    now: i64,
) -> Result<()> {
    let Some(reservation) = tx.held_reservation(order_id).await? else {
        return Ok(());
    };
    let (credits, value) = amounts(&reservation)?;
    let customer = CustomerId::new(&reservation.customer_id)?;
    let after = tx
        .release_credits(&reservation, now)
        .await?
        .ok_or_else(|| corrupt(&reservation, "its account does not hold the credits"))?;
    let mut journal = Recorder::new(ctx, new_id("tx"), now);
    journal.ledger(
        Some(&reservation.customer_id),
        LedgerTransaction::order_credits_released(&customer, credits, value),
    );
    account_step(
        &mut journal,
        &reservation,
        &after,
        (after.balance, after.reserved + reservation.credits),
        "release",
    );
    journal.event(
        event_type::CREDIT_RELEASED,
        &reservation.customer_id,
        &reservation_event(&reservation, &after, Some(reason)),
    );
    tx.record(journal.finish());
    Ok(())
}

/// Spends the credits `order_id` holds, if any, in `tx`: its service
/// completed the order.
pub(super) async fn capture(tx: &mut Tx, ctx: &RequestCtx, order_id: &str, now: i64) -> Result<()> {
    let Some(reservation) = tx.held_reservation(order_id).await? else {
        return Ok(());
    };
    let (credits, _) = amounts(&reservation)?;
    let customer = CustomerId::new(&reservation.customer_id)?;
    let use_id = new_id("tx");
    let debit = DebitCredits {
        use_id: use_id.clone(),
        customer_id: reservation.customer_id.clone(),
        credits: reservation.credits,
        kind: crate::domain::credit::CreditUseKind::Use,
        feature: "order".into(),
        units: 1,
        metadata: serde_json::json!({
            "orderId": &reservation.order_id,
            "reservationId": &reservation.reservation_id,
        })
        .to_string(),
        quote: "null".into(),
        policy: String::new(),
        policy_hash: String::new(),
        now,
        from_reserved: reservation.credits,
    };
    let after = match tx.debit_credits(&debit).await? {
        DebitOutcome::Debited(after) => after,
        DebitOutcome::NoAccount | DebitOutcome::Insufficient(_) => {
            return Err(corrupt(
                &reservation,
                "its account does not hold the credits",
            ));
        }
    };
    if !tx.mark_captured(&reservation, &use_id, now).await? {
        return Err(corrupt(&reservation, "it was no longer held"));
    }
    let mut journal = Recorder::new(ctx, &use_id, now);
    journal.ledger(
        Some(&reservation.customer_id),
        LedgerTransaction::credit_capture(&customer, credits),
    );
    account_step(
        &mut journal,
        &reservation,
        &after,
        (
            after.balance + reservation.credits,
            after.reserved + reservation.credits,
        ),
        "capture",
    );
    journal.event(
        event_type::CREDIT_DEDUCTED,
        &reservation.customer_id,
        &serde_json::json!({
            "customerId": &reservation.customer_id,
            "transactionId": &use_id,
            "orderId": &reservation.order_id,
            "reservationId": &reservation.reservation_id,
            "feature": "order",
            "units": 1,
            "credits": reservation.credits,
            "balance": after.balance,
            "available": after.balance - after.reserved,
        }),
    );
    tx.record(journal.finish());
    Ok(())
}

/// The credit account's history row for a reservation's step.
fn account_step(
    journal: &mut Recorder<'_>,
    reservation: &ReservationRecord,
    after: &AccountAfter,
    (balance_before, reserved_before): (i64, i64),
    event: &str,
) {
    journal.history(
        entity::CREDIT_ACCOUNT,
        &reservation.customer_id,
        Some(credit_account_state(balance_before, reserved_before)),
        credit_account_state(after.balance, after.reserved),
        event,
        &format!(
            "order {} ({})",
            reservation.order_id, reservation.reservation_id
        ),
    );
}

fn reservation_event(
    reservation: &ReservationRecord,
    after: &AccountAfter,
    reason: Option<&str>,
) -> serde_json::Value {
    serde_json::json!({
        "customerId": &reservation.customer_id,
        "orderId": &reservation.order_id,
        "reservationId": &reservation.reservation_id,
        "credits": reservation.credits,
        "value": {"amount": reservation.value, "currency": &reservation.currency},
        "balance": after.balance,
        "reserved": after.reserved,
        "available": after.balance - after.reserved,
        "reason": reason,
    })
}

fn amounts(reservation: &ReservationRecord) -> Result<(PositiveCredits, PositiveMoney)> {
    let credits = PositiveCredits::new(reservation.credits)
        .map_err(|e| corrupt(reservation, &e.to_string()))?;
    let money = Money::parse(reservation.value, &reservation.currency)
        .map_err(|e| corrupt(reservation, &e.to_string()))?;
    let value =
        PositiveMoney::new(money, "value").map_err(|e| corrupt(reservation, &e.to_string()))?;
    Ok((credits, value))
}

fn corrupt(reservation: &ReservationRecord, what: &str) -> AppError {
    AppError::Internal(format!(
        "credit reservation `{}` of order `{}`: {what}",
        reservation.reservation_id, reservation.order_id
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Currency;

    fn value(credits: i64, rate: i64, currency: Currency, total: i64) -> Result<i64> {
        credits_value(
            PositiveCredits::new(credits).unwrap(),
            rate,
            currency,
            total,
        )
        .map(|m| m.minor())
    }

    #[test]
    fn credits_are_worth_exactly_their_minor_units_at_the_rate() {
        // 100 credits per dollar: a credit is a cent.
        assert_eq!(value(250, 100, Currency::USD, 1_000).unwrap(), 250);
        // 1 credit per dollar: a credit is 100 cents.
        assert_eq!(value(3, 1, Currency::USD, 1_000).unwrap(), 300);
        // 1,000 credits per dinar (3 decimals): a credit is one fils.
        assert_eq!(value(7, 1_000, Currency::KWD, 10).unwrap(), 7);
        // The whole order, exactly.
        assert_eq!(value(1_000, 100, Currency::USD, 1_000).unwrap(), 1_000);
    }

    #[test]
    fn credits_worth_a_fraction_of_a_minor_unit_name_the_multiple_that_fits() {
        // 10 credits per yen (no decimals): only multiples of 10 fit.
        let err = value(15, 10, Currency::JPY, 1_000).unwrap_err().to_string();
        assert!(err.contains("multiple of 10 credits"), "{err}");
        assert_eq!(value(20, 10, Currency::JPY, 1_000).unwrap(), 2);
        // 250 credits per dollar: 5 credits are 2 cents.
        let err = value(3, 250, Currency::USD, 1_000).unwrap_err().to_string();
        assert!(err.contains("multiple of 5 credits"), "{err}");
        assert_eq!(value(5, 250, Currency::USD, 1_000).unwrap(), 2);
    }

    #[test]
    fn credits_worth_more_than_the_order_or_beyond_64_bits_are_refused() {
        let err = value(1_001, 100, Currency::USD, 1_000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than the 1000"), "{err}");
        assert!(matches!(
            value(i64::MAX, 1, Currency::KWD, i64::MAX),
            Err(AppError::Domain(_)) | Err(AppError::Invalid(_))
        ));
    }
}
