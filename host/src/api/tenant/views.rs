//! The tenant API's JSON: request bodies and response views, camelCase.
//! The policy contract's types never appear here as they are; quotes are
//! rendered into [`LineItemView`]s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::PolicyRef;
use crate::app::credits::{
    Balance, BalanceView, CreditsGranted, CreditsRefunded, CreditsUsed, Statement,
};
use crate::app::customers::Customer;
use crate::app::events::EventPage;
use crate::policy::types;
use crate::store::{CreditEntry, EventRecord};

// ── Requests ───────────────────────────────────────────────────────────────

/// `PUT /api/v1/customers/{customerId}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutCustomerBody {
    /// Replaces the customer's attributes (absent = none).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// `POST /api/v1/credits/charge`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChargeBody {
    /// Who receives the credits.
    pub customer_id: String,
    /// How many (> 0).
    pub credits: i64,
    /// Why.
    pub reason: String,
    /// When unspent credits lapse (ms since the epoch).
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// `POST /api/v1/credits/use`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UseBody {
    /// Whose credits.
    pub customer_id: String,
    /// The tenant's feature name.
    pub feature: String,
    /// Units used (> 0).
    pub units: i64,
    /// Handed to the policies.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// `POST /api/v1/credits/refund`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefundBody {
    /// The use's transaction id.
    pub transaction_id: String,
    /// Credits to give back (absent = all that is left).
    #[serde(default)]
    pub credits: Option<i64>,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `GET /api/v1/credits/balance`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BalanceQuery {
    /// The customer.
    pub customer_id: String,
}

/// `GET /api/v1/credits/transactions`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransactionsQuery {
    /// The customer.
    pub customer_id: String,
    /// A previous `nextCursor`.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Page size (1-200, default 50).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// `GET /api/v1/events`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventsQuery {
    /// A previous `nextCursor` (absent = from the start).
    #[serde(default)]
    pub after: Option<String>,
    /// Page size (1-1000, default 100).
    #[serde(default)]
    pub limit: Option<i64>,
}

// ── Responses ──────────────────────────────────────────────────────────────

/// A customer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerView {
    customer_id: String,
    attributes: BTreeMap<String, String>,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

impl From<Customer> for CustomerView {
    fn from(c: Customer) -> Self {
        CustomerView {
            customer_id: c.customer_id,
            attributes: c.attributes,
            version: c.version,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// Balance fields shared by several answers.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BalanceFields {
    balance: i64,
    reserved: i64,
    available: i64,
}

impl From<Balance> for BalanceFields {
    fn from(b: Balance) -> Self {
        BalanceFields {
            balance: b.balance,
            reserved: b.reserved,
            available: b.available,
        }
    }
}

/// `GET /credits/balance`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BalanceResponse {
    customer_id: String,
    #[serde(flatten)]
    balance: BalanceFields,
    spent_today: i64,
}

impl From<BalanceView> for BalanceResponse {
    fn from(b: BalanceView) -> Self {
        BalanceResponse {
            customer_id: b.customer_id,
            balance: b.balance.into(),
            spent_today: b.spent_today,
        }
    }
}

/// `POST /credits/charge`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantView {
    transaction_id: String,
    customer_id: String,
    credits_granted: i64,
    expires_at: Option<i64>,
    #[serde(flatten)]
    balance: BalanceFields,
    created_at: i64,
}

impl From<&CreditsGranted> for GrantView {
    fn from(g: &CreditsGranted) -> Self {
        GrantView {
            transaction_id: g.transaction_id.clone(),
            customer_id: g.customer_id.clone(),
            credits_granted: g.credits,
            expires_at: g.expires_at,
            balance: g.balance.into(),
            created_at: g.created_at,
        }
    }
}

/// One line of a quote.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LineItemView {
    code: String,
    description: String,
    quantity: i64,
    /// For credit lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    credits: Option<i64>,
    /// For money lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    money: Option<MoneyView>,
}

/// Minor units and currency.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MoneyView {
    amount: i64,
    currency: String,
}

impl From<&types::LineItem> for LineItemView {
    fn from(line: &types::LineItem) -> Self {
        let (credits, money) = match &line.amount {
            types::Amount::Credits(n) => (Some(*n), None),
            types::Amount::Money(m) => (
                None,
                Some(MoneyView {
                    amount: m.amount,
                    currency: m.currency.clone(),
                }),
            ),
        };
        LineItemView {
            code: line.code.clone(),
            description: line.description.clone(),
            quantity: line.quantity,
            credits,
            money,
        }
    }
}

/// `POST /credits/use`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UseView {
    transaction_id: Option<String>,
    customer_id: String,
    feature: String,
    units: i64,
    credits_charged: i64,
    #[serde(flatten)]
    balance: BalanceFields,
    line_items: Vec<LineItemView>,
    priced_by: PolicyRef,
    created_at: i64,
}

impl From<&CreditsUsed> for UseView {
    fn from(u: &CreditsUsed) -> Self {
        UseView {
            transaction_id: u.transaction_id.clone(),
            customer_id: u.customer_id.clone(),
            feature: u.feature.clone(),
            units: u.units,
            credits_charged: u.credits_charged,
            balance: u.balance.into(),
            line_items: u.line_items.iter().map(LineItemView::from).collect(),
            priced_by: u.priced_by.clone(),
            created_at: u.created_at,
        }
    }
}

/// `POST /credits/refund`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundView {
    transaction_id: String,
    refunded_transaction_id: String,
    customer_id: String,
    credits_refunded: i64,
    total_refunded: i64,
    refundable: i64,
    #[serde(flatten)]
    balance: BalanceFields,
    created_at: i64,
}

impl From<&CreditsRefunded> for RefundView {
    fn from(r: &CreditsRefunded) -> Self {
        RefundView {
            transaction_id: r.transaction_id.clone(),
            refunded_transaction_id: r.refunded_transaction_id.clone(),
            customer_id: r.customer_id.clone(),
            credits_refunded: r.credits_refunded,
            total_refunded: r.total_refunded,
            refundable: r.refundable,
            balance: r.balance.into(),
            created_at: r.created_at,
        }
    }
}

/// One line of a credit statement.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatementLine {
    transaction_id: String,
    /// `grant`, `use`, `refund` or `expiry`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// Signed change of the balance: + for grants and refunds, − for uses
    /// and expiries.
    credits: i64,
    balance_after: i64,
    created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    feature: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    units: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refunded: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refunded_transaction_id: Option<String>,
    /// For expiries: the grant that lapsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    grant_transaction_id: Option<String>,
}

/// `GET /credits/transactions`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatementView {
    customer_id: String,
    items: Vec<StatementLine>,
    next_cursor: Option<String>,
}

impl From<Statement> for StatementView {
    fn from(s: Statement) -> Self {
        let items = s
            .items
            .into_iter()
            .map(|item| {
                let mut line = StatementLine {
                    transaction_id: item.transaction_id,
                    kind: "",
                    credits: 0,
                    balance_after: item.balance_after,
                    created_at: item.created_at,
                    reason: None,
                    expires_at: None,
                    feature: None,
                    units: None,
                    refunded: None,
                    refunded_transaction_id: None,
                    grant_transaction_id: None,
                };
                match item.entry {
                    CreditEntry::Grant {
                        credits,
                        reason,
                        expires_at,
                    } => {
                        line.kind = "grant";
                        line.credits = credits;
                        line.reason = Some(reason);
                        line.expires_at = expires_at;
                    }
                    CreditEntry::Use {
                        charged,
                        refunded,
                        feature,
                        units,
                    } => {
                        line.kind = "use";
                        line.credits = -charged;
                        line.refunded = Some(refunded);
                        line.feature = feature;
                        line.units = units;
                    }
                    CreditEntry::Refund {
                        credits,
                        use_id,
                        reason,
                    } => {
                        line.kind = "refund";
                        line.credits = credits;
                        line.reason = Some(reason);
                        line.refunded_transaction_id = Some(use_id);
                    }
                    CreditEntry::Expiry { credits, grant_id } => {
                        line.kind = "expiry";
                        line.credits = -credits;
                        line.grant_transaction_id = Some(grant_id);
                    }
                }
                line
            })
            .collect();
        StatementView {
            customer_id: s.customer_id,
            items,
            next_cursor: s.next_cursor,
        }
    }
}

/// One event, CloudEvents 1.0 JSON format, plus its feed `position`.
#[derive(Debug, Serialize)]
pub struct CloudEventView {
    specversion: &'static str,
    id: String,
    source: String,
    #[serde(rename = "type")]
    event_type: String,
    subject: String,
    /// RFC 3339, UTC, milliseconds.
    time: String,
    datacontenttype: &'static str,
    data: Value,
    /// Extension attribute: the event's position in the feed.
    position: i64,
    /// Extension attribute: the business transaction that emitted it.
    transactionid: String,
    /// Extension attribute: the request that caused it (`X-Request-Id`),
    /// absent on events stored before it was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    requestid: Option<String>,
}

impl From<EventRecord> for CloudEventView {
    fn from(e: EventRecord) -> Self {
        CloudEventView {
            specversion: "1.0",
            id: e.event_id,
            source: e.source,
            event_type: e.event_type,
            subject: e.subject,
            time: rfc3339_millis(e.time),
            datacontenttype: "application/json",
            data: serde_json::from_str(&e.data).unwrap_or(Value::String(e.data)),
            position: e.feed_seq,
            transactionid: e.transaction_id,
            requestid: e.request_id,
        }
    }
}

/// `GET /events`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsView {
    events: Vec<CloudEventView>,
    next_cursor: String,
}

impl From<EventPage> for EventsView {
    fn from(p: EventPage) -> Self {
        EventsView {
            events: p.events.into_iter().map(CloudEventView::from).collect(),
            next_cursor: p.next_cursor,
        }
    }
}

/// `2026-11-20T10:00:00.123Z` from ms since the epoch (proleptic Gregorian,
/// days-from-civil inverted as in H. Hinnant's date algorithms).
pub fn rfc3339_millis(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_render_as_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(rfc3339_millis(-1), "1969-12-31T23:59:59.999Z");
    }
}
