//! The order saga: one per order, from the first confirm to the order's
//! completion or to the compensation of everything done for it.
//!
//! Forward, the saga takes the order's money — credits **reserved**, the
//! rest **approved** by the PG — waits for the tenant's service to fulfil
//! the order, then **captures** (the reserved credits deducted, the payment
//! captured at the PG and confirmed, the order completed). When the service fails, does not answer
//! by its deadline, or the capture is refused, the saga **compensates in
//! reverse**: the payment voided (or refunded once confirmed), the order
//! cancelled, the credits released.
//!
//! | from \ event          | started  | approved            | declined    | service_completed | service_failed / deadline | captured  | capture_refused | compensated | parked               | retry        | resolve     |
//! |-----------------------|----------|---------------------|-------------|-------------------|---------------------------|-----------|-----------------|-------------|----------------------|--------------|-------------|
//! | RUNNING               | —        | WAITING_FOR_SERVICE | COMPENSATING| —                 | —                         | —         | —               | —           | —                    | —            | —           |
//! | WAITING_FOR_SERVICE   | —        | —                   | —           | COMPLETING        | COMPENSATING              | —         | —               | —           | —                    | —            | —           |
//! | COMPLETING            | —        | —                   | —           | —                 | —                         | COMPLETED | COMPENSATING    | —           | —                    | —            | —           |
//! | COMPLETED             | —        | —                   | —           | —                 | —                         | —         | —               | —           | —                    | —            | —           |
//! | COMPENSATING          | —        | —                   | —           | —                 | —                         | —         | —               | COMPENSATED | COMPENSATION_FAILED  | —            | —           |
//! | COMPENSATED           | RUNNING¹ | —                   | —           | —                 | —                         | —         | —               | —           | —                    | —            | —           |
//! | COMPENSATION_FAILED   | —        | —                   | —           | —                 | —                         | —         | —               | —           | —                    | COMPENSATING | COMPENSATED |
//!
//! ¹ Only when the compensation left the order open (a declined card:
//! nothing was fulfilled, the order is still `PENDING`): the customer tries
//! again, and the saga runs once more.
//!
//! Every "—" is [`DomainError::IllegalTransition`] (`PAY_004`): a callback
//! after compensation began, a second `completed`, a late deadline, all
//! find no transition and change nothing.

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::{DomainError, Result};
use super::history::{EntityKind, Transition};

/// Where a saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SagaState {
    /// Taking the order's money (credits reserved, the PG asked).
    Running,
    /// The money is held; the tenant's service is fulfilling the order.
    WaitingForService,
    /// Fulfilled: capturing (credits deducted, payment confirmed).
    Completing,
    /// The order is completed. Terminal.
    Completed,
    /// Undoing, in reverse, what was done.
    Compensating,
    /// Everything done was undone. Terminal (but see `started`).
    Compensated,
    /// A compensation keeps failing: parked for an operator.
    CompensationFailed,
}

/// What can happen to a saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SagaEvent {
    /// A confirm (re)starts a compensated saga whose order is still open.
    Started,
    /// The order's money is held (credits reserved, payment approved).
    Approved,
    /// The PG declined, or the credits were short: nothing to fulfil.
    Declined,
    /// The tenant's service fulfilled the order.
    ServiceCompleted,
    /// The tenant's service failed, or did not answer by its deadline.
    ServiceFailed,
    /// Credits deducted, payment confirmed, order completed.
    Captured,
    /// The capture was refused (e.g. the PG refused the confirmation).
    CaptureRefused,
    /// Every compensation succeeded.
    Compensated,
    /// A compensation kept failing: parked for an operator.
    Parked,
    /// An operator retries the compensation.
    Retry,
    /// An operator resolved it by hand.
    Resolve,
}

impl SagaState {
    /// Every state, for exhaustive checks.
    pub const ALL: [SagaState; 7] = [
        SagaState::Running,
        SagaState::WaitingForService,
        SagaState::Completing,
        SagaState::Completed,
        SagaState::Compensating,
        SagaState::Compensated,
        SagaState::CompensationFailed,
    ];

    /// The stable database and API form, e.g. `"WAITING_FOR_SERVICE"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SagaState::Running => "RUNNING",
            SagaState::WaitingForService => "WAITING_FOR_SERVICE",
            SagaState::Completing => "COMPLETING",
            SagaState::Completed => "COMPLETED",
            SagaState::Compensating => "COMPENSATING",
            SagaState::Compensated => "COMPENSATED",
            SagaState::CompensationFailed => "COMPENSATION_FAILED",
        }
    }

    /// Whether the orchestrator has nothing more to do on its own.
    pub fn is_terminal(self) -> bool {
        matches!(self, SagaState::Completed | SagaState::Compensated)
    }

    /// Whether the orchestrator moves it on by itself (after a crash too).
    pub fn is_resumable(self) -> bool {
        matches!(
            self,
            SagaState::Running
                | SagaState::WaitingForService
                | SagaState::Completing
                | SagaState::Compensating
        )
    }

    /// The transition table (module docs).
    pub fn on(self, event: SagaEvent) -> Result<SagaState> {
        use SagaEvent as E;
        use SagaState as S;
        match (self, event) {
            (S::Compensated, E::Started) => Ok(S::Running),
            (S::Running, E::Approved) => Ok(S::WaitingForService),
            (S::Running, E::Declined) => Ok(S::Compensating),
            (S::WaitingForService, E::ServiceCompleted) => Ok(S::Completing),
            (S::WaitingForService, E::ServiceFailed) => Ok(S::Compensating),
            (S::Completing, E::Captured) => Ok(S::Completed),
            (S::Completing, E::CaptureRefused) => Ok(S::Compensating),
            (S::Compensating, E::Compensated) => Ok(S::Compensated),
            (S::Compensating, E::Parked) => Ok(S::CompensationFailed),
            (S::CompensationFailed, E::Retry) => Ok(S::Compensating),
            (S::CompensationFailed, E::Resolve) => Ok(S::Compensated),
            _ => Err(DomainError::IllegalTransition {
                entity: EntityKind::Saga,
                action: event.as_str(),
                from: self.as_str(),
                to: Some(event.target().as_str()),
            }),
        }
    }

    /// The step of `self --event--> to`, as its history row.
    pub fn transition(
        self,
        order_id: &str,
        event: SagaEvent,
        reason: impl Into<String>,
    ) -> Result<Transition> {
        let to = self.on(event)?;
        Ok(Transition {
            entity: EntityKind::Saga,
            entity_id: order_id.to_owned(),
            from: Some(self.as_str()),
            to: to.as_str(),
            event: event.as_str(),
            reason: reason.into(),
        })
    }
}

impl fmt::Display for SagaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SagaState {
    type Err = DomainError;
    fn from_str(value: &str) -> Result<Self> {
        SagaState::ALL
            .into_iter()
            .find(|s| s.as_str() == value)
            .ok_or_else(|| DomainError::Invariant(format!("`{value}` is not a saga state")))
    }
}

impl SagaEvent {
    /// Every event, for exhaustive checks.
    pub const ALL: [SagaEvent; 11] = [
        SagaEvent::Started,
        SagaEvent::Approved,
        SagaEvent::Declined,
        SagaEvent::ServiceCompleted,
        SagaEvent::ServiceFailed,
        SagaEvent::Captured,
        SagaEvent::CaptureRefused,
        SagaEvent::Compensated,
        SagaEvent::Parked,
        SagaEvent::Retry,
        SagaEvent::Resolve,
    ];

    /// The event's stable name, used in errors and history rows.
    pub fn as_str(self) -> &'static str {
        match self {
            SagaEvent::Started => "start",
            SagaEvent::Approved => "approve",
            SagaEvent::Declined => "decline",
            SagaEvent::ServiceCompleted => "service_completed",
            SagaEvent::ServiceFailed => "service_failed",
            SagaEvent::Captured => "capture",
            SagaEvent::CaptureRefused => "capture_refused",
            SagaEvent::Compensated => "compensate",
            SagaEvent::Parked => "park",
            SagaEvent::Retry => "retry",
            SagaEvent::Resolve => "resolve",
        }
    }

    /// The state the event leads to where it is legal.
    pub fn target(self) -> SagaState {
        match self {
            SagaEvent::Started => SagaState::Running,
            SagaEvent::Approved => SagaState::WaitingForService,
            SagaEvent::Declined
            | SagaEvent::ServiceFailed
            | SagaEvent::CaptureRefused
            | SagaEvent::Retry => SagaState::Compensating,
            SagaEvent::ServiceCompleted => SagaState::Completing,
            SagaEvent::Captured => SagaState::Completed,
            SagaEvent::Compensated | SagaEvent::Resolve => SagaState::Compensated,
            SagaEvent::Parked => SagaState::CompensationFailed,
        }
    }
}

/// A step the saga did forward, undone by its compensation in reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStep {
    /// Credits reserved; undone by releasing them.
    ReserveCredits,
    /// The PG approved the payment; undone by a void (a refund once
    /// confirmed).
    ApprovePayment,
    /// The order was paid; undone by cancelling it.
    PayOrder,
}

impl SagaStep {
    /// The order in which forward steps happen.
    pub const FORWARD: [SagaStep; 3] = [
        SagaStep::ReserveCredits,
        SagaStep::ApprovePayment,
        SagaStep::PayOrder,
    ];

    /// The compensations of `done` (forward steps that happened), in the
    /// order they run: the reverse.
    pub fn compensations(done: &[SagaStep]) -> Vec<SagaStep> {
        let mut steps: Vec<SagaStep> = SagaStep::FORWARD
            .into_iter()
            .filter(|step| done.contains(step))
            .collect();
        steps.reverse();
        steps
    }
}
