//! The chart of accounts and the units they hold.
//!
//! | key                               | unit    | normal | what its balance means                          |
//! |-----------------------------------|---------|--------|-------------------------------------------------|
//! | `customer:{id}:credits`           | credits | credit | credits the customer can spend now (available)  |
//! | `customer:{id}:credits_reserved`  | credits | credit | credits held for sagas in flight                |
//! | `customer:{id}:receivable`        | money   | debit  | what the customer owes for unpaid orders        |
//! | `tenant:credits_issued`           | credits | debit  | every credit ever granted (the grants' source)  |
//! | `tenant:credits_consumed`         | credits | credit | credits spent on uses, captures, subscriptions  |
//! | `tenant:credits_refunded`         | credits | debit  | credits given back on refunded uses             |
//! | `tenant:credits_expired`          | credits | credit | credits that lapsed unused (breakage)           |
//! | `tenant:deferred_revenue`         | money   | credit | orders billed but not yet completed             |
//! | `tenant:payments_clearing`        | money   | debit  | payments taken by the gateway, not yet settled  |
//! | `tenant:credit_redemptions`       | money   | debit  | order bills settled with the customer's credits |
//! | `tenant:revenue`                  | money   | credit | completed orders                                |
//! | `tenant:refunds`                  | money   | debit  | money given back on completed orders (contra revenue) |
//!
//! Because every transaction balances, at any time (per tenant):
//! `issued = credits + reserved + consumed + expired − refunded`, and the
//! auditor can check each customer's materialised balance against one or two
//! account balances.

use std::fmt;
use std::str::FromStr;

use super::LedgerError;
use crate::domain::id::CustomerId;
use crate::domain::money::Currency;

/// What a posting counts: money in one currency, or credits. Postings must
/// balance per unit; credits and each currency are separate ledgers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    /// Minor units of a currency.
    Money(Currency),
    /// Prepaid credits.
    Credits,
}

impl Unit {
    /// The unit's stable database form: the currency code (`"USD"`) or
    /// `"CREDITS"`, which can never collide with a three-letter code.
    pub fn as_str(&self) -> &str {
        match self {
            Unit::Money(currency) => currency.code(),
            Unit::Credits => "CREDITS",
        }
    }

    /// Reads the database form back.
    pub fn parse(value: &str) -> Result<Self, LedgerError> {
        if value == "CREDITS" {
            return Ok(Unit::Credits);
        }
        Currency::parse(value)
            .map(Unit::Money)
            .map_err(|_| LedgerError::UnknownUnit {
                value: value.to_string(),
            })
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Unit {
    type Err = LedgerError;
    fn from_str(value: &str) -> Result<Self, LedgerError> {
        Unit::parse(value)
    }
}

/// Which kind of unit an account may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountUnit {
    /// Credits only.
    Credits,
    /// Money, in any currency (one balance per currency).
    Money,
}

/// The side on which an account's balance grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NormalBalance {
    /// Grows with debits (positive postings): assets, counters of outflows.
    Debit,
    /// Grows with credits (negative postings): what is owed, revenue.
    Credit,
}

/// One account of a tenant's chart. A closed set: a new movement that needs
/// a new account is a code change reviewed with the auditor in mind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LedgerAccount {
    /// Credits the customer can spend (balance minus reservations).
    CustomerCredits(CustomerId),
    /// Credits held for the customer's sagas in flight.
    CustomerReservedCredits(CustomerId),
    /// Money the customer owes for orders not yet paid.
    CustomerReceivable(CustomerId),
    /// Counter-account of every grant: where credits come from.
    CreditsIssued,
    /// Credits spent: uses, reservation captures and subscription charges.
    CreditsConsumed,
    /// Credits given back when a use is refunded (contra to consumed).
    CreditsRefunded,
    /// Credits that expired unused.
    CreditsExpired,
    /// Orders billed but not completed: revenue not yet earned.
    DeferredRevenue,
    /// Money the gateway has taken for the tenant, not yet settled.
    PaymentsClearing,
    /// The money value of order bills settled with prepaid credits (the
    /// credits reserved for, then captured by, an order's saga): the money
    /// side of what `tenant:credits_consumed` counts in credits.
    CreditRedemptions,
    /// Earned revenue from completed orders.
    Revenue,
    /// Money refunded through the gateway after an order was completed
    /// (contra to revenue: net revenue is revenue − refunds).
    Refunds,
}

const CUSTOMER_PREFIX: &str = "customer:";

impl LedgerAccount {
    /// The stable key the database stores, e.g. `customer:c_1:credits`.
    pub fn key(&self) -> String {
        match self {
            LedgerAccount::CustomerCredits(id) => format!("{CUSTOMER_PREFIX}{id}:credits"),
            LedgerAccount::CustomerReservedCredits(id) => {
                format!("{CUSTOMER_PREFIX}{id}:credits_reserved")
            }
            LedgerAccount::CustomerReceivable(id) => format!("{CUSTOMER_PREFIX}{id}:receivable"),
            LedgerAccount::CreditsIssued => "tenant:credits_issued".into(),
            LedgerAccount::CreditsConsumed => "tenant:credits_consumed".into(),
            LedgerAccount::CreditsRefunded => "tenant:credits_refunded".into(),
            LedgerAccount::CreditsExpired => "tenant:credits_expired".into(),
            LedgerAccount::DeferredRevenue => "tenant:deferred_revenue".into(),
            LedgerAccount::PaymentsClearing => "tenant:payments_clearing".into(),
            LedgerAccount::CreditRedemptions => "tenant:credit_redemptions".into(),
            LedgerAccount::Revenue => "tenant:revenue".into(),
            LedgerAccount::Refunds => "tenant:refunds".into(),
        }
    }

    /// Reads a key back. Customer keys split at the *last* colon, so a
    /// customer id may itself contain colons.
    pub fn parse(key: &str) -> Result<Self, LedgerError> {
        let unknown = || LedgerError::UnknownAccount {
            key: key.to_string(),
        };
        if let Some(rest) = key.strip_prefix(CUSTOMER_PREFIX) {
            let (id, suffix) = rest.rsplit_once(':').ok_or_else(unknown)?;
            let id = CustomerId::new(id).map_err(|_| unknown())?;
            return match suffix {
                "credits" => Ok(LedgerAccount::CustomerCredits(id)),
                "credits_reserved" => Ok(LedgerAccount::CustomerReservedCredits(id)),
                "receivable" => Ok(LedgerAccount::CustomerReceivable(id)),
                _ => Err(unknown()),
            };
        }
        match key {
            "tenant:credits_issued" => Ok(LedgerAccount::CreditsIssued),
            "tenant:credits_consumed" => Ok(LedgerAccount::CreditsConsumed),
            "tenant:credits_refunded" => Ok(LedgerAccount::CreditsRefunded),
            "tenant:credits_expired" => Ok(LedgerAccount::CreditsExpired),
            "tenant:deferred_revenue" => Ok(LedgerAccount::DeferredRevenue),
            "tenant:payments_clearing" => Ok(LedgerAccount::PaymentsClearing),
            "tenant:credit_redemptions" => Ok(LedgerAccount::CreditRedemptions),
            "tenant:revenue" => Ok(LedgerAccount::Revenue),
            "tenant:refunds" => Ok(LedgerAccount::Refunds),
            _ => Err(unknown()),
        }
    }

    /// Which kind of unit the account holds.
    pub fn unit_kind(&self) -> AccountUnit {
        match self {
            LedgerAccount::CustomerCredits(_)
            | LedgerAccount::CustomerReservedCredits(_)
            | LedgerAccount::CreditsIssued
            | LedgerAccount::CreditsConsumed
            | LedgerAccount::CreditsRefunded
            | LedgerAccount::CreditsExpired => AccountUnit::Credits,
            LedgerAccount::CustomerReceivable(_)
            | LedgerAccount::DeferredRevenue
            | LedgerAccount::PaymentsClearing
            | LedgerAccount::CreditRedemptions
            | LedgerAccount::Revenue
            | LedgerAccount::Refunds => AccountUnit::Money,
        }
    }

    /// Whether a posting in `unit` may go to this account.
    pub fn holds(&self, unit: Unit) -> bool {
        matches!(
            (self.unit_kind(), unit),
            (AccountUnit::Credits, Unit::Credits) | (AccountUnit::Money, Unit::Money(_))
        )
    }

    /// The side on which the balance grows (see the table in this module).
    pub fn normal_balance(&self) -> NormalBalance {
        match self {
            LedgerAccount::CustomerReceivable(_)
            | LedgerAccount::CreditsIssued
            | LedgerAccount::CreditsRefunded
            | LedgerAccount::PaymentsClearing
            | LedgerAccount::CreditRedemptions
            | LedgerAccount::Refunds => NormalBalance::Debit,
            LedgerAccount::CustomerCredits(_)
            | LedgerAccount::CustomerReservedCredits(_)
            | LedgerAccount::CreditsConsumed
            | LedgerAccount::CreditsExpired
            | LedgerAccount::DeferredRevenue
            | LedgerAccount::Revenue => NormalBalance::Credit,
        }
    }

    /// The balance as the account's reader expects it, from the signed sum
    /// of its postings (debit-positive). `i128` because the auditor sums
    /// many `i64` postings.
    pub fn balance_of(&self, posted_sum: i128) -> i128 {
        match self.normal_balance() {
            NormalBalance::Debit => posted_sum,
            NormalBalance::Credit => -posted_sum,
        }
    }

    /// The customer a customer account belongs to.
    pub fn customer(&self) -> Option<&CustomerId> {
        match self {
            LedgerAccount::CustomerCredits(id)
            | LedgerAccount::CustomerReservedCredits(id)
            | LedgerAccount::CustomerReceivable(id) => Some(id),
            _ => None,
        }
    }
}

impl fmt::Display for LedgerAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

impl FromStr for LedgerAccount {
    type Err = LedgerError;
    fn from_str(key: &str) -> Result<Self, LedgerError> {
        LedgerAccount::parse(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(id: &str) -> CustomerId {
        CustomerId::new(id).unwrap()
    }

    fn every_account(id: &CustomerId) -> Vec<LedgerAccount> {
        vec![
            LedgerAccount::CustomerCredits(id.clone()),
            LedgerAccount::CustomerReservedCredits(id.clone()),
            LedgerAccount::CustomerReceivable(id.clone()),
            LedgerAccount::CreditsIssued,
            LedgerAccount::CreditsConsumed,
            LedgerAccount::CreditsRefunded,
            LedgerAccount::CreditsExpired,
            LedgerAccount::DeferredRevenue,
            LedgerAccount::PaymentsClearing,
            LedgerAccount::CreditRedemptions,
            LedgerAccount::Revenue,
        ]
    }

    #[test]
    fn every_account_key_round_trips_even_with_colons_in_the_customer_id() {
        for id in ["c_1", "a:b:credits", "auth0|x"] {
            for account in every_account(&customer(id)) {
                assert_eq!(LedgerAccount::parse(&account.key()), Ok(account.clone()));
            }
        }
    }

    #[test]
    fn account_keys_are_stable() {
        let keys: Vec<String> = every_account(&customer("c_1"))
            .iter()
            .map(LedgerAccount::key)
            .collect();
        assert_eq!(
            keys,
            [
                "customer:c_1:credits",
                "customer:c_1:credits_reserved",
                "customer:c_1:receivable",
                "tenant:credits_issued",
                "tenant:credits_consumed",
                "tenant:credits_refunded",
                "tenant:credits_expired",
                "tenant:deferred_revenue",
                "tenant:payments_clearing",
                "tenant:credit_redemptions",
                "tenant:revenue",
            ]
        );
    }

    #[test]
    fn unknown_account_keys_are_rejected() {
        for bad in [
            "",
            "tenant:cash",
            "customer:c_1",
            "customer::credits",
            "customer:c_1:wallet",
            "customer:a b:credits",
            "Tenant:revenue",
        ] {
            assert!(LedgerAccount::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn credit_accounts_hold_only_credits_and_money_accounts_only_money() {
        let usd = Unit::Money(Currency::USD);
        for account in every_account(&customer("c")) {
            let credits = account.unit_kind() == AccountUnit::Credits;
            assert_eq!(account.holds(Unit::Credits), credits, "{account}");
            assert_eq!(account.holds(usd), !credits, "{account}");
        }
    }

    #[test]
    fn credit_normal_balances_are_the_negated_posting_sum() {
        let wallet = LedgerAccount::CustomerCredits(customer("c"));
        assert_eq!(wallet.balance_of(-70), 70);
        assert_eq!(LedgerAccount::CreditsIssued.balance_of(70), 70);
    }

    #[test]
    fn units_round_trip_through_their_database_form() {
        for unit in [
            Unit::Credits,
            Unit::Money(Currency::USD),
            Unit::Money(Currency::JPY),
        ] {
            assert_eq!(Unit::parse(unit.as_str()), Ok(unit));
        }
        for bad in ["credits", "XXX", "ABC", ""] {
            assert!(Unit::parse(bad).is_err(), "{bad:?}");
        }
    }
}
