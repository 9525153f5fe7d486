//! What a policy may answer, beyond what the canonical ABI already checks.
//! The rules are the ones written in `wit/types.wit`; an answer that breaks
//! them is `invalid_output`, never money.

use super::error::{FailureKind, PolicyFailure};
use super::types::{Amount, Money, Quote, Violation};

/// A quote: upper-case ISO-4217 codes, non-negative quantities, and line
/// items (when there are any) in the total's unit that add up to it.
pub(crate) fn check_quote(quote: Quote) -> Result<Quote, PolicyFailure> {
    check_amount("total", &quote.total)?;
    for (i, line) in quote.line_items.iter().enumerate() {
        if line.quantity < 0 {
            return invalid(format!(
                "line_items[{i}] ({}) has a negative quantity {}",
                line.code, line.quantity
            ));
        }
        check_amount(&format!("line_items[{i}].amount"), &line.amount)?;
    }
    if !quote.line_items.is_empty() {
        let mut sum: i64 = 0;
        for (i, line) in quote.line_items.iter().enumerate() {
            let value = match (&quote.total, &line.amount) {
                (Amount::Money(t), Amount::Money(l)) if t.currency == l.currency => l.amount,
                (Amount::Credits(_), Amount::Credits(c)) => *c,
                _ => {
                    return invalid(format!(
                        "line_items[{i}] ({}) is in {} but the total is in {}",
                        line.code,
                        unit(&line.amount),
                        unit(&quote.total)
                    ));
                }
            };
            sum = match sum.checked_add(value) {
                Some(s) => s,
                None => return invalid("the line items' amounts overflow i64".into()),
            };
        }
        let total = match &quote.total {
            Amount::Money(m) => m.amount,
            Amount::Credits(c) => *c,
        };
        if sum != total {
            return invalid(format!(
                "the line items add up to {sum} but the total is {total}"
            ));
        }
    }
    Ok(quote)
}

/// Violations: every one names its rule.
pub(crate) fn check_violations(
    violations: Vec<Violation>,
) -> Result<Vec<Violation>, PolicyFailure> {
    if let Some(i) = violations.iter().position(|v| v.rule_id.is_empty()) {
        return invalid(format!("violations[{i}] has an empty rule_id"));
    }
    Ok(violations)
}

fn check_amount(field: &str, amount: &Amount) -> Result<(), PolicyFailure> {
    match amount {
        Amount::Money(m) => check_currency(field, m),
        Amount::Credits(_) => Ok(()),
    }
}

fn check_currency(field: &str, money: &Money) -> Result<(), PolicyFailure> {
    let c = money.currency.as_bytes();
    if c.len() == 3 && c.iter().all(u8::is_ascii_uppercase) {
        Ok(())
    } else {
        invalid(format!(
            "{field} has currency {:?}, not an upper-case ISO-4217 code",
            money.currency
        ))
    }
}

fn unit(amount: &Amount) -> String {
    match amount {
        Amount::Money(m) => m.currency.clone(),
        Amount::Credits(_) => "credits".into(),
    }
}

fn invalid<T>(message: String) -> Result<T, PolicyFailure> {
    Err(PolicyFailure::new(FailureKind::InvalidOutput, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::types::LineItem;

    fn usd(amount: i64) -> Amount {
        Amount::Money(Money {
            amount,
            currency: "USD".into(),
        })
    }

    fn line(amount: Amount, quantity: i64) -> LineItem {
        LineItem {
            code: "x".into(),
            description: "x".into(),
            quantity,
            amount,
        }
    }

    fn quote(total: Amount, lines: Vec<LineItem>) -> Quote {
        Quote {
            total,
            line_items: lines,
            metadata: vec![],
            subscription: None,
        }
    }

    #[test]
    fn a_quote_whose_lines_add_up_passes() {
        let q = quote(usd(300), vec![line(usd(100), 1), line(usd(200), 2)]);
        assert!(check_quote(q).is_ok());
        assert!(check_quote(quote(Amount::Credits(5), vec![])).is_ok());
        // A plan change may credit the customer.
        assert!(check_quote(quote(usd(-50), vec![line(usd(-50), 1)])).is_ok());
    }

    #[test]
    fn lines_that_do_not_add_up_are_invalid_output() {
        let err = check_quote(quote(usd(300), vec![line(usd(100), 1)])).unwrap_err();
        assert_eq!(err.kind, FailureKind::InvalidOutput);
        assert!(err.message.contains("add up to 100"), "{}", err.message);
    }

    #[test]
    fn mixed_units_negative_quantities_and_bad_currencies_are_invalid_output() {
        let mixed = quote(Amount::Credits(1), vec![line(usd(1), 1)]);
        assert!(
            check_quote(mixed)
                .unwrap_err()
                .message
                .contains("is in USD")
        );
        let negative = quote(usd(1), vec![line(usd(1), -1)]);
        assert!(
            check_quote(negative)
                .unwrap_err()
                .message
                .contains("negative")
        );
        let lower = Amount::Money(Money {
            amount: 1,
            currency: "usd".into(),
        });
        assert!(check_quote(quote(lower, vec![])).is_err());
    }

    #[test]
    fn overflowing_lines_are_invalid_output_not_a_panic() {
        let q = quote(usd(1), vec![line(usd(i64::MAX), 1), line(usd(1), 1)]);
        assert!(check_quote(q).unwrap_err().message.contains("overflow"));
    }

    #[test]
    fn a_violation_without_a_rule_id_is_invalid_output() {
        let v = vec![Violation {
            rule_id: String::new(),
            message: "m".into(),
        }];
        assert!(check_violations(v).is_err());
    }
}
