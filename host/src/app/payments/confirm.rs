//! `POST /payments/confirm`: intent, PG call, outcome (see the module docs
//! of [`super`]).

use std::time::Instant;

use super::super::credits::{Render, check_metadata};
use super::super::customers::Customer;
use super::super::error::{AppError, Result};
use super::super::idempotency::{Claimed, claim, stored_answer};
use super::super::journal::{Recorder, event_type};
use super::super::orders::{record_order_step, restore_order};
use super::super::policy::validate;
use super::super::{App, Reply, RequestCtx, new_id};
use super::{PaymentDetails, store_payment_change};
use crate::domain::order::OrderStatus;
use crate::domain::payment::{Payment, PaymentChange, PaymentStatus, StoredPayment};
use crate::domain::{CustomerId, Money, OrderId, PaymentId, PositiveMoney};
use crate::gateway::{ConfirmRequest, GatewayError, PaymentGateway, PgPayment, codes};
use crate::policy::registry::CallContext;
use crate::policy::types;
use crate::store::{
    NewPayment, OrderQueries, OrderTx, PaymentAttemptRecord, PaymentQueries, PaymentRecord,
    PaymentTx, Queries, Transactions, Tx, TxOps,
};

/// Longest payment key accepted from a client (Toss: 200).
const MAX_PAYMENT_KEY_LEN: usize = 200;

/// `POST /payments/confirm`.
#[derive(Debug, Clone)]
pub struct ConfirmCommand {
    /// The order to pay.
    pub order_id: String,
    /// What the PG's checkout returned.
    pub payment_key: String,
    /// Minor units: must equal what the order owes.
    pub amount: i64,
    /// What the tenant's validation policies see with the payment (e.g.
    /// an invoice number).
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// What the PG's answer means for the payment.
pub(super) enum Outcome {
    /// Approved under the PG's key.
    Approved(String),
    /// Declined for good (a card decline), with the PG's code and message.
    Declined(String, String),
    /// The PG refused the request itself (an unknown payment key, an amount
    /// or order that differs from the checkout): nothing was taken, and the
    /// client must fix the request.
    Rejected(String, String),
    /// Certainly not taken, for now (transient, unreachable, breaker open).
    NotTaken(String, String),
    /// The PG's answer was lost.
    Lost(String),
}

impl Outcome {
    pub(super) fn attempt_outcome(&self) -> &'static str {
        match self {
            Outcome::Approved(_) => "approved",
            Outcome::Declined(..) => "declined",
            Outcome::Rejected(..) => "refused",
            Outcome::NotTaken(..) => "transient",
            Outcome::Lost(_) => "unknown",
        }
    }

    pub(super) fn pg_code(&self) -> Option<String> {
        match self {
            Outcome::Declined(code, _)
            | Outcome::Rejected(code, _)
            | Outcome::NotTaken(code, _) => Some(code.clone()),
            _ => None,
        }
    }
}

impl App {
    /// Takes an order's money through the tenant's PG (module docs).
    pub async fn confirm_payment(
        &self,
        ctx: &RequestCtx,
        cmd: ConfirmCommand,
        render: impl Render<PaymentDetails>,
    ) -> Result<Reply> {
        let order_id = OrderId::new(&cmd.order_id)?;
        if cmd.payment_key.is_empty() || cmd.payment_key.len() > MAX_PAYMENT_KEY_LEN {
            return Err(AppError::Invalid(format!(
                "paymentKey must be 1-{MAX_PAYMENT_KEY_LEN} bytes"
            )));
        }
        check_metadata(&cmd.metadata)?;
        let gateway = self.gateway(&ctx.tenant)?;
        if let Some(answer) = stored_answer(self.store(), ctx).await? {
            return answer;
        }
        let order = self
            .store()
            .order(&ctx.tenant, order_id.as_str())
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no order `{order_id}`")))?;
        // A payment left unresolved (lost answer, or a host that stopped
        // between intent and outcome) is resolved before anything else.
        let payments = self
            .store()
            .payments_of_order(&ctx.tenant, order_id.as_str())
            .await?;
        if let Some(pending) = payments
            .into_iter()
            .find(|p| p.status == "READY" || p.status == "UNKNOWN")
        {
            return self.resolve(ctx, &*gateway, (pending, false), render).await;
        }
        if order.status != OrderStatus::Pending.as_str() {
            return Err(AppError::StateConflict(format!(
                "order `{order_id}` is {}: only a PENDING order can be paid",
                order.status
            )));
        }
        let amount = Money::parse(cmd.amount, &order.currency)
            .map_err(|err| AppError::Internal(format!("order currency: {err}")))?;
        if cmd.amount != order.total {
            return Err(AppError::Invalid(format!(
                "amount {} does not equal what order `{order_id}` owes ({} {}); nothing was sent \
                 to the payment gateway",
                cmd.amount, order.total, order.currency
            )));
        }
        let amount = PositiveMoney::new(amount, "amount")?;

        // The tenant's validation policies see the payment first.
        let validation = self.validation_policies(&ctx.tenant)?;
        if !validation.is_empty() {
            let customer = self
                .store()
                .customer(&ctx.tenant, &order.customer_id)
                .await?
                .ok_or_else(|| AppError::Internal("the order's customer vanished".into()))?;
            let call_ctx = CallContext {
                customer_id: order.customer_id.clone(),
                customer_attributes: Customer::policy_attributes_of(&customer.attributes)?,
                now_ms: self.now(),
            };
            validate(
                &validation,
                &call_ctx,
                &types::ValidationSubject::Payment(types::PaymentSubject {
                    order_id: order_id.to_string(),
                    amount: types::Money {
                        amount: cmd.amount,
                        currency: order.currency.clone(),
                    },
                    method: "card".into(),
                    metadata: cmd
                        .metadata
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                }),
            )?;
        }

        // 1. Intent.
        let created = self
            .open_payment(
                ctx,
                &order_id,
                &order.customer_id,
                amount,
                "confirm requested",
                (Some(&cmd.payment_key), true),
            )
            .await?;
        let payment_id = created.id().clone();
        crate::crash_points::reached("payment.intent", order_id.as_str());

        // 2. The PG call, with the payment's one approval key.
        let request = ConfirmRequest {
            payment_key: cmd.payment_key,
            order_id: order_id.to_string(),
            amount: cmd.amount,
        };
        let started = Instant::now();
        let answer = gateway.confirm(&request, created.approval_key()).await;
        let outcome = match answer {
            // Approved before, under another key: ask and adopt.
            Err(GatewayError::Refused { code, .. }) if code == codes::ALREADY_PROCESSED_PAYMENT => {
                outcome_of_query(
                    gateway.payment_by_order(order_id.as_str()).await,
                    cmd.amount,
                    &order.currency,
                )
            }
            answer => outcome_of_confirm(answer, cmd.amount, &order.currency),
        };
        crate::crash_points::reached("payment.confirm_answered", order_id.as_str());
        let latency = started.elapsed();

        // 3. Outcome.
        let attempt = PaymentAttemptRecord {
            attempt: 0,
            kind: "approve".into(),
            idempotency_key: Some(created.approval_key().to_owned()),
            outcome: outcome.attempt_outcome().into(),
            pg_code: outcome.pg_code(),
            latency_ms: latency.as_millis() as i64,
            created_at: self.now(),
        };
        let settled = self
            .settle(ctx, payment_id.as_str(), outcome, (attempt, false), render)
            .await;
        crate::crash_points::reached("payment.outcome", order_id.as_str());
        settled
    }

    /// Step 1: stores a `READY` payment of `amount` for the still
    /// `PENDING` order, with the approval key every PG call for it sends
    /// (at most one payment of an order is in flight: a unique index).
    pub(super) async fn open_payment(
        &self,
        ctx: &RequestCtx,
        order_id: &OrderId,
        customer_id: &str,
        amount: PositiveMoney,
        reason: &str,
        (checkout_key, saga): (Option<&str>, bool),
    ) -> Result<Payment> {
        let payment_id = PaymentId::new(new_id("pay"))?;
        let customer = CustomerId::new(customer_id)?;
        let created = Payment::create(
            payment_id.clone(),
            order_id.clone(),
            customer,
            amount,
            payment_id.as_str(),
            reason,
        )?;
        let now = self.now();
        let mut tx = self.store().begin(&ctx.tenant).await?;
        let locked = tx
            .order_for_update(order_id.as_str())
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no order `{order_id}`")))?;
        if locked.status != OrderStatus::Pending.as_str() {
            return Err(AppError::StateConflict(format!(
                "order `{order_id}` is {}: only a PENDING order can be paid",
                locked.status
            )));
        }
        tx.insert_payment(&NewPayment {
            payment_id: payment_id.to_string(),
            order_id: order_id.to_string(),
            customer_id: customer_id.to_owned(),
            amount: amount.minor(),
            currency: amount.currency().code().to_owned(),
            approval_key: created.payment.approval_key().to_owned(),
            pg_payment_key: checkout_key.map(str::to_owned),
            // Asked about by the recovery scheduler if no outcome is
            // recorded by then (the host stopped during the PG call).
            next_check_at: now + super::CHECK_SCHEDULE_MS[0],
            now,
        })
        .await?;
        let transaction_id = new_id("tx");
        let mut journal = Recorder::new(ctx, &transaction_id, now);
        journal.transition(&created.transition);
        journal.event(
            event_type::PAYMENT_CREATED,
            customer_id,
            &payment_event(&created.payment, None),
        );
        tx.record(journal.finish());
        if saga {
            super::super::saga::start(
                &mut tx,
                ctx,
                (order_id.as_str(), customer_id, payment_id.as_str()),
                &transaction_id,
                now,
            )
            .await?;
        }
        tx.commit(None).await?;
        Ok(created.payment)
    }

    /// Asks the PG what became of a payment left `READY` or `UNKNOWN`, and
    /// adopts its answer.
    pub(super) async fn resolve<G: PaymentGateway>(
        &self,
        ctx: &RequestCtx,
        gateway: &G,
        (pending, scheduled): (PaymentRecord, bool),
        render: impl Render<PaymentDetails>,
    ) -> Result<Reply> {
        let started = Instant::now();
        let found = gateway.payment_by_order(&pending.order_id).await;
        let checkout = pending.pg_payment_key.clone();
        let (outcome, attempt_kind, key) = match (&found, checkout) {
            // Checked out but never confirmed: the confirm did not reach
            // the PG (the host stopped before the call, or the request was
            // lost on the way). Sent again with the payment's one approval
            // key, it cannot take the money twice.
            (Ok(pg), Some(payment_key)) if pg.status == crate::gateway::PgStatus::Ready => {
                let request = ConfirmRequest {
                    payment_key,
                    order_id: pending.order_id.clone(),
                    amount: pending.amount,
                };
                let again = gateway.confirm(&request, &pending.approval_key).await;
                (
                    outcome_of_confirm(again, pending.amount, &pending.currency),
                    "approve",
                    Some(pending.approval_key.clone()),
                )
            }
            _ => (
                outcome_of_query(found, pending.amount, &pending.currency),
                "query",
                None,
            ),
        };
        let attempt = PaymentAttemptRecord {
            attempt: 0,
            kind: attempt_kind.into(),
            idempotency_key: key,
            outcome: outcome.attempt_outcome().into(),
            pg_code: outcome.pg_code(),
            latency_ms: started.elapsed().as_millis() as i64,
            created_at: self.now(),
        };
        // A PG that cannot say does not make a pending payment failed: it
        // stays unresolved, and so does the answer.
        let outcome = match outcome {
            Outcome::NotTaken(_, message) => Outcome::Lost(message),
            other => other,
        };
        // Only the recovery schedule's own asks use it up: a client's retry
        // or a PG notification (unauthenticated) cannot flag a payment.
        self.settle(
            ctx,
            &pending.payment_id,
            outcome,
            (attempt, scheduled),
            render,
        )
        .await
    }

    /// Step 3: records the call and moves the payment (and its order) as
    /// the outcome says, in one transaction. `check`: the call was the
    /// recovery schedule's (a step along it when the outcome stays
    /// unknown).
    pub(super) async fn settle(
        &self,
        ctx: &RequestCtx,
        payment_id: &str,
        outcome: Outcome,
        (attempt, check): (PaymentAttemptRecord, bool),
        render: impl Render<PaymentDetails>,
    ) -> Result<Reply> {
        let now = self.now();
        // Only a final answer is kept for the Idempotency-Key. Whatever the
        // claim finds, the PG's outcome is recorded: a key taken meanwhile
        // (a replay, another request's body) only changes what this
        // request answers.
        let keeps_answer = matches!(outcome, Outcome::Approved(_) | Outcome::Declined(..));
        // Locks are taken order first, then payment, then saga, as every
        // other step of an order takes them (two steps locking the same
        // rows in opposite order would deadlock on PostgreSQL).
        let order_id = self
            .store()
            .payment(&ctx.tenant, payment_id)
            .await?
            .ok_or_else(|| AppError::Internal(format!("payment `{payment_id}` vanished")))?
            .order_id;
        let tx = self.store().begin(&ctx.tenant).await?;
        let (mut tx, taken) = if keeps_answer && ctx.idempotency.is_some() {
            match claim(tx, ctx, now).await {
                Ok(Claimed::Proceed(tx)) => (tx, None),
                Ok(Claimed::Replay(reply)) => {
                    (self.store().begin(&ctx.tenant).await?, Some(Ok(reply)))
                }
                Err(err @ AppError::IdempotencyConflict(_)) => {
                    (self.store().begin(&ctx.tenant).await?, Some(Err(err)))
                }
                Err(err) => return Err(err),
            }
        } else {
            (tx, None)
        };
        tx.order_for_update(&order_id).await?;
        let record = tx
            .payment_for_update(payment_id)
            .await?
            .ok_or_else(|| AppError::Internal(format!("payment `{payment_id}` vanished")))?;
        tx.record_payment_attempt(payment_id, &attempt).await?;
        if record.status != "READY" && record.status != "UNKNOWN" {
            // Settled meanwhile (another request, the janitor): it stays as
            // it is, and this request answers with it.
            return self.answer_with(tx, record, taken, render).await;
        }
        let payment = restore_payment(&record)?;
        let (change, failure) = match &outcome {
            Outcome::Approved(pg_key) => (payment.approve(pg_key, "approved by the PG")?, None),
            Outcome::Declined(code, message)
            | Outcome::Rejected(code, message)
            | Outcome::NotTaken(code, message) => (
                payment.decline(format!("{code}: {message}"))?,
                Some((code.clone(), message.clone())),
            ),
            Outcome::Lost(reason) => match payment.status() {
                // Already unknown: the query said nothing new; the next
                // check moves on along the schedule (or the payment is
                // flagged for an operator once it is used up).
                PaymentStatus::Unknown => {
                    // Only the schedule's own asks move it on (or use it
                    // up); anyone else's leaves it as it was.
                    let (next, checks, flagged) = if check {
                        next_check(&record, check, now)
                    } else {
                        (record.next_check_at, record.checks, record.flagged_at)
                    };
                    tx.reschedule_payment(payment_id, next, checks, flagged)
                        .await?;
                    tx.commit(None).await?;
                    if check && flagged.is_some() {
                        tracing::warn!(
                            tenant = %ctx.tenant,
                            payment_id,
                            checks,
                            "payments.flagged_for_operator"
                        );
                    }
                    return Err(AppError::PaymentPending {
                        payment_id: payment_id.to_owned(),
                    });
                }
                _ => (payment.lose(reason.clone())?, None),
            },
        };
        let (next_check_at, checks, flagged_at) = match change.payment.status() {
            PaymentStatus::Unknown => next_check(&record, check, now),
            // Voided by the scheduler if its order is not fulfilled in time.
            PaymentStatus::Approved => (
                Some(now + self.payment_settings(&ctx.tenant).void_unconfirmed_after_ms),
                record.checks,
                None,
            ),
            _ => (None, record.checks, None),
        };
        let version = store_payment_change(
            &mut tx,
            &record,
            &change,
            failure.clone(),
            (next_check_at, checks, flagged_at),
            now,
        )
        .await?;

        let transaction_id = new_id("tx");
        let mut journal = Recorder::new(ctx, &transaction_id, now);
        record_change(&mut journal, &record.customer_id, &change, failure.as_ref());
        tx.record(journal.finish());
        if let Outcome::Approved(_) = outcome {
            // The order's step is a business transaction of its own (its
            // history row and event), in the same database transaction.
            pay_order(&mut tx, ctx, &record, now).await?;
        }
        // The order's saga (orders paid through the confirm API) moves with
        // its payment: waiting for the service, or nothing to undo.
        let saga_step = match &outcome {
            Outcome::Approved(_) => Some(Ok(
                now + self.payment_settings(&ctx.tenant).service_timeout_ms
            )),
            Outcome::Declined(code, message)
            | Outcome::Rejected(code, message)
            | Outcome::NotTaken(code, message) => Some(Err(format!(
                "payment {payment_id} not taken: {code}: {message}"
            ))),
            Outcome::Lost(_) => None,
        };
        if let Some(step) = saga_step {
            super::super::saga::payment_settled(
                &mut tx,
                ctx,
                &record.order_id,
                step,
                &transaction_id,
                now,
            )
            .await?;
        }

        let mut stored = record.clone();
        stored.status = change.payment.status().as_str().to_owned();
        stored.pg_payment_key = change.payment.pg_payment_key().map(str::to_owned);
        stored.version = version;
        stored.updated_at = now;
        stored.next_check_at = next_check_at;
        stored.checks = checks;
        stored.flagged_at = flagged_at;
        if let Some((code, message)) = &failure {
            stored.failure_code = Some(code.clone());
            stored.failure_message = Some(message.clone());
        }
        match outcome {
            Outcome::Approved(_) | Outcome::Declined(..) => {
                self.answer_with(tx, stored, taken, render).await
            }
            Outcome::Rejected(code, message) => {
                tx.commit(None).await?;
                Err(AppError::Invalid(format!(
                    "the payment gateway refused the request ({code}: {message}); nothing was \
                     charged"
                )))
            }
            Outcome::NotTaken(code, message) => {
                tx.commit(None).await?;
                Err(AppError::GatewayUnavailable(format!("{code}: {message}")))
            }
            Outcome::Lost(_) => {
                tx.commit(None).await?;
                Err(AppError::PaymentPending {
                    payment_id: payment_id.to_owned(),
                })
            }
        }
    }

    /// Commits `tx` and answers with `payment` as it now stands (kept for
    /// the key when this request claimed it), or with what the key's
    /// earlier request was answered.
    async fn answer_with(
        &self,
        mut tx: Tx,
        payment: PaymentRecord,
        taken: Option<Result<Reply>>,
        render: impl Render<PaymentDetails>,
    ) -> Result<Reply> {
        if let Some(answer) = taken {
            tx.commit(None).await?;
            return answer;
        }
        if payment.status == "READY" || payment.status == "UNKNOWN" {
            tx.commit(None).await?;
            return Err(AppError::PaymentPending {
                payment_id: payment.payment_id,
            });
        }
        // Read in the transaction: it sees the attempt it records.
        let attempts = tx.attempts_in_tx(&payment.payment_id).await?;
        let response = render(&PaymentDetails { payment, attempts });
        tx.commit(Some(response.clone())).await?;
        Ok(Reply {
            response,
            replayed: false,
        })
    }
}

/// Where an unresolved payment goes next on the recovery schedule: a
/// status query counts as a check; past the last one the payment is
/// flagged for an operator and no longer asked about.
fn next_check(record: &PaymentRecord, check: bool, now: i64) -> (Option<i64>, i64, Option<i64>) {
    let checks = record.checks + i64::from(check);
    match super::CHECK_SCHEDULE_MS.get(checks as usize) {
        Some(wait) => (Some(now + wait), checks, None),
        None => (None, checks, Some(now)),
    }
}

/// The order becomes `PAID` with its payment's approval.
async fn pay_order(tx: &mut Tx, ctx: &RequestCtx, payment: &PaymentRecord, now: i64) -> Result<()> {
    let order = tx
        .order_for_update(&payment.order_id)
        .await?
        .ok_or_else(|| AppError::Internal(format!("order `{}` vanished", payment.order_id)))?;
    let change = restore_order(&order)?.pay(format!("payment {}", payment.payment_id))?;
    let data = serde_json::json!({
        "orderId": &order.order_id,
        "customerId": &order.customer_id,
        "status": change.order.status().as_str(),
        "currency": &order.currency,
        "total": order.total,
        "paymentId": &payment.payment_id,
    });
    record_order_step(tx, ctx, &order, change, event_type::ORDER_PAID, data, now).await?;
    Ok(())
}

/// The payment's history row, its ledger movement and its event.
pub(super) fn record_change(
    journal: &mut Recorder<'_>,
    customer_id: &str,
    change: &PaymentChange,
    failure: Option<&(String, String)>,
) {
    if let Some(ledger) = change.ledger.clone() {
        journal.ledger(Some(customer_id), ledger);
    }
    journal.transition(&change.transition);
    let event = match change.payment.status() {
        PaymentStatus::Approved => event_type::PAYMENT_APPROVED,
        PaymentStatus::Unknown => event_type::PAYMENT_UNKNOWN,
        _ => event_type::PAYMENT_FAILED,
    };
    journal.event(event, customer_id, &payment_event(&change.payment, failure));
}

fn payment_event(payment: &Payment, failure: Option<&(String, String)>) -> serde_json::Value {
    serde_json::json!({
        "paymentId": payment.id().as_str(),
        "orderId": payment.order().as_str(),
        "customerId": payment.customer().as_str(),
        "status": payment.status().as_str(),
        "amount": payment.amount().minor(),
        "currency": payment.amount().currency().code(),
        "pgPaymentKey": payment.pg_payment_key(),
        "failureCode": failure.map(|f| &f.0),
        "failureMessage": failure.map(|f| &f.1),
    })
}

/// What a confirm's (or billing charge's) answer means.
pub(super) fn outcome_of_confirm(
    answer: Result<PgPayment, GatewayError>,
    amount: i64,
    currency: &str,
) -> Outcome {
    match answer {
        Ok(pg) => adopt(pg, amount, currency),
        Err(GatewayError::Refused { code, message }) => match code.as_str() {
            // FluxPay's own key was refused: a configuration fault, and
            // certainly nothing taken.
            codes::UNAUTHORIZED_KEY => Outcome::NotTaken(code, message),
            codes::INVALID_REQUEST | codes::NOT_FOUND_PAYMENT => Outcome::Rejected(code, message),
            _ => Outcome::Declined(code, message),
        },
        Err(GatewayError::Transient { code, message }) => Outcome::NotTaken(code, message),
        Err(GatewayError::Unreachable(message)) => {
            Outcome::NotTaken("GATEWAY_UNREACHABLE".into(), message)
        }
        Err(GatewayError::CircuitOpen) => Outcome::NotTaken(
            "GATEWAY_CIRCUIT_OPEN".into(),
            "calls to the payment gateway are paused after repeated failures".into(),
        ),
        Err(GatewayError::Unknown(reason)) => Outcome::Lost(reason),
    }
}

/// What a status query's answer means.
pub(super) fn outcome_of_query(
    answer: Result<PgPayment, GatewayError>,
    amount: i64,
    currency: &str,
) -> Outcome {
    match answer {
        Ok(pg) => adopt(pg, amount, currency),
        // Not even "not found" settles it: an approval may still be on
        // its way to the PG. The schedule asks again, then an operator.
        Err(err) => Outcome::Lost(err.to_string()),
    }
}

/// What the PG's view of a payment means for FluxPay's.
fn adopt(pg: PgPayment, amount: i64, currency: &str) -> Outcome {
    if pg.status == crate::gateway::PgStatus::Done {
        if pg.total_amount != amount || pg.balance_amount != amount || pg.currency != currency {
            // Never adopt an approval of another amount: an operator looks.
            return Outcome::Lost(format!(
                "the PG approved {} {} (balance {}) for a payment of {amount} {currency}",
                pg.total_amount, pg.currency, pg.balance_amount
            ));
        }
        return Outcome::Approved(pg.payment_key);
    }
    if pg.status.holds_money() || pg.status == crate::gateway::PgStatus::Canceled {
        // Taken, then given back in part or whole, by someone else.
        return Outcome::Lost(format!(
            "the PG reports the payment {:?}: cancelled outside FluxPay",
            pg.status
        ));
    }
    if pg.status.failed() {
        return Outcome::Declined(
            format!("{:?}", pg.status).to_uppercase(),
            "the PG reports the payment did not go through".into(),
        );
    }
    Outcome::Lost(format!("the PG reports the payment {:?}", pg.status))
}

pub(super) fn restore_payment(record: &PaymentRecord) -> Result<Payment> {
    let corrupt =
        |what: String| AppError::Internal(format!("payment {}: {what}", record.payment_id));
    let currency =
        crate::domain::Currency::parse(&record.currency).map_err(|e| corrupt(e.to_string()))?;
    let amount = PositiveMoney::new(Money::new(record.amount, currency), "amount")
        .map_err(|e| corrupt(e.to_string()))?;
    Payment::restore(StoredPayment {
        id: PaymentId::new(&record.payment_id).map_err(|e| corrupt(e.to_string()))?,
        order: OrderId::new(&record.order_id).map_err(|e| corrupt(e.to_string()))?,
        customer: CustomerId::new(&record.customer_id).map_err(|e| corrupt(e.to_string()))?,
        amount,
        approval_key: record.approval_key.clone(),
        pg_payment_key: record.pg_payment_key.clone(),
        refunded: Money::new(record.refunded, currency),
        status: record
            .status
            .parse()
            .map_err(|e: crate::domain::DomainError| corrupt(e.to_string()))?,
    })
    .map_err(|e| corrupt(e.to_string()))
}
