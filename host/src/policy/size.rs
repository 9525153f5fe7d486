//! A cheap structural size of call inputs and outputs, for the input and
//! output limits: the bytes of every string plus 8 per scalar (integers,
//! discriminants, option tags). No serialisation, no allocation.

use super::types::*;

pub(crate) trait ByteSize {
    fn byte_size(&self) -> u64;
}

const SCALAR: u64 = 8;

impl ByteSize for String {
    fn byte_size(&self) -> u64 {
        self.len() as u64
    }
}

impl ByteSize for str {
    fn byte_size(&self) -> u64 {
        self.len() as u64
    }
}

impl ByteSize for i64 {
    fn byte_size(&self) -> u64 {
        SCALAR
    }
}

impl ByteSize for () {
    fn byte_size(&self) -> u64 {
        0
    }
}

impl<T: ByteSize> ByteSize for Vec<T> {
    fn byte_size(&self) -> u64 {
        self.iter().map(ByteSize::byte_size).sum()
    }
}

impl<T: ByteSize> ByteSize for Option<T> {
    fn byte_size(&self) -> u64 {
        SCALAR + self.as_ref().map_or(0, ByteSize::byte_size)
    }
}

impl<A: ByteSize, B: ByteSize> ByteSize for (A, B) {
    fn byte_size(&self) -> u64 {
        self.0.byte_size() + self.1.byte_size()
    }
}

impl<T: ByteSize, E: ByteSize> ByteSize for Result<T, E> {
    fn byte_size(&self) -> u64 {
        SCALAR
            + match self {
                Ok(v) => v.byte_size(),
                Err(e) => e.byte_size(),
            }
    }
}

/// Records: the sum of their fields.
macro_rules! record {
    ($($ty:ident { $($field:ident),* $(,)? })*) => {$(
        impl ByteSize for $ty {
            fn byte_size(&self) -> u64 {
                0 $(+ self.$field.byte_size())*
            }
        }
    )*};
}

/// Variants whose cases all carry one payload: a tag plus the payload.
macro_rules! variant {
    ($($ty:ident { $($case:ident),* $(,)? })*) => {$(
        impl ByteSize for $ty {
            fn byte_size(&self) -> u64 {
                SCALAR + match self {
                    $($ty::$case(v) => v.byte_size(),)*
                }
            }
        }
    )*};
}

record! {
    Money { amount, currency }
    Context { tenant_id, config, customer_id, customer_attributes, now_ms }
    LineItem { code, description, quantity, amount }
    SubscriptionTerms { plan_id, period_start_ms, period_end_ms, trial_end_ms }
    Quote { total, line_items, metadata, subscription }
    CreditUsage { feature, units, metadata }
    SubscriptionStart { plan_id, start_ms }
    SubscriptionRenewal { plan_id, period_start_ms, anchor_ms }
    PlanChange { from_plan_id, to_plan_id, period_start_ms, period_end_ms, change_at_ms, trial_end_ms }
    MetricUsage { metric, quantity }
    MeteredPeriod { period_start_ms, period_end_ms, usage }
    OrderItem { sku, quantity }
    OrderRequest { currency, items, metadata }
    OrderSubject { currency, items, total, metadata }
    CreditUseSubject { feature, units, credits, balance, spent_today, metadata }
    UsageEvent { event_id, metric, quantity, timestamp_ms, properties }
    PaymentSubject { order_id, amount, method, metadata }
    Violation { rule_id, message }
    Rejection { code, message }
}

variant! {
    Amount { Money, Credits }
    SubscriptionRequest { Start, Renewal, PlanChange }
    PricingRequest { CreditUsage, Subscription, Metered, Order }
    ValidationSubject { Order, CreditUse, Usage, Payment }
    PolicyError { Unsupported, InvalidConfig, Rejected }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_count_their_bytes_and_scalars_eight() {
        let money = Money {
            amount: 1999,
            currency: "USD".into(),
        };
        assert_eq!(money.byte_size(), 8 + 3);
        let amount = Amount::Money(money);
        assert_eq!(amount.byte_size(), 8 + 8 + 3);
        let pairs = vec![("tier".to_owned(), "gold".to_owned())];
        assert_eq!(pairs.byte_size(), 8);
    }

    #[test]
    fn a_large_config_makes_a_large_context() {
        let ctx = Context {
            tenant_id: "t".into(),
            config: "x".repeat(100_000),
            customer_id: "c".into(),
            customer_attributes: vec![],
            now_ms: 0,
        };
        assert_eq!(ctx.byte_size(), 100_000 + 2 + 8);
    }
}
