//! ISO-4217 currencies, validated against a built-in table.
//!
//! The table is ISO 4217 "list one" (current currency and funds codes) as
//! published by the maintenance agency (SIX) on 2026-01-01: 178 codes. Codes
//! ISO has withdrawn (e.g. ANG → XCG, BGN → EUR, HRK → EUR, SLL → SLE,
//! ZWL → ZWG, CUC) are unknown here on purpose: a billing platform should
//! not open new amounts in a currency that no longer exists. When ISO
//! publishes an amendment, edit [`ISO_4217`] and its count test.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A currency from the ISO-4217 table, with its minor-unit exponent.
///
/// Only [`Currency::parse`] and the constants make one, so holding a
/// `Currency` proves the code is known. `Copy` and three bytes wide, so it
/// costs nothing to pass around.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency {
    code: [u8; 3],
    /// `None` where ISO lists "N.A." (precious metals, SDR, bond-market
    /// units, XTS): the smallest amount is one whole unit.
    minor_units: Option<u8>,
}

/// Why a currency code was refused. All are client errors (`REQ_001`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurrencyError {
    /// Not three upper-case ASCII letters.
    #[error(
        "`{code}` is not a currency code: expected three upper-case letters (ISO 4217), e.g. USD"
    )]
    Malformed {
        /// The code as given (cut to a short prefix).
        code: String,
    },
    /// Well-formed but not an active ISO-4217 code.
    #[error("`{code}` is not an active ISO-4217 currency code")]
    Unknown {
        /// The code as given.
        code: String,
    },
    /// `XXX` is ISO's code for "no currency": it cannot denominate an amount.
    #[error("`XXX` means \"no currency\" in ISO 4217 and cannot denominate an amount")]
    NoCurrency,
}

impl Currency {
    /// US dollar.
    pub const USD: Currency = Currency::known(*b"USD", Some(2));
    /// Euro.
    pub const EUR: Currency = Currency::known(*b"EUR", Some(2));
    /// Pound sterling.
    pub const GBP: Currency = Currency::known(*b"GBP", Some(2));
    /// Japanese yen (no minor unit).
    pub const JPY: Currency = Currency::known(*b"JPY", Some(0));
    /// Kuwaiti dinar (three decimals).
    pub const KWD: Currency = Currency::known(*b"KWD", Some(3));

    const fn known(code: [u8; 3], minor_units: Option<u8>) -> Self {
        Currency { code, minor_units }
    }

    /// Looks `code` up in the ISO-4217 table. Case-sensitive: ISO codes are
    /// upper-case and the policy contract says so, and accepting `usd` would
    /// give one currency two spellings in idempotency fingerprints.
    pub fn parse(code: &str) -> Result<Self, CurrencyError> {
        let bytes = code.as_bytes();
        let [a, b, c] = bytes else {
            return Err(CurrencyError::Malformed { code: clip(code) });
        };
        if !bytes.iter().all(u8::is_ascii_uppercase) {
            return Err(CurrencyError::Malformed { code: clip(code) });
        }
        if code == "XXX" {
            return Err(CurrencyError::NoCurrency);
        }
        match ISO_4217.binary_search_by(|(known, _)| known.cmp(&code)) {
            Ok(index) => Ok(Currency::known([*a, *b, *c], ISO_4217[index].1)),
            Err(_) => Err(CurrencyError::Unknown {
                code: code.to_string(),
            }),
        }
    }

    /// The three-letter code, e.g. `"USD"`.
    pub fn code(&self) -> &str {
        // The bytes come from the table or a literal: always ASCII.
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    /// Decimal places of the minor unit: 2 for USD (cents), 0 for JPY,
    /// 3 for KWD. Codes ISO lists without a minor unit count whole units (0).
    pub fn exponent(&self) -> u8 {
        self.minor_units.unwrap_or(0)
    }

    /// Whether ISO defines a minor unit at all (false for XAU, XDR, XTS, …).
    pub fn has_minor_unit(&self) -> bool {
        self.minor_units.is_some()
    }

    /// Every currency `parse` accepts, in code order.
    pub fn all() -> impl Iterator<Item = Currency> {
        ISO_4217
            .iter()
            .filter(|(code, _)| *code != "XXX")
            .map(|(code, minor)| {
                let b = code.as_bytes();
                Currency::known([b[0], b[1], b[2]], *minor)
            })
    }
}

/// Keeps error messages short when a client sends a huge "code".
fn clip(code: &str) -> String {
    code.chars().take(16).collect()
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = CurrencyError;
    fn from_str(code: &str) -> Result<Self, CurrencyError> {
        Currency::parse(code)
    }
}

impl TryFrom<String> for Currency {
    type Error = CurrencyError;
    fn try_from(code: String) -> Result<Self, CurrencyError> {
        Currency::parse(&code)
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> String {
        currency.code().to_string()
    }
}

/// ISO 4217 list one: (alphabetic code, minor units), sorted by code for
/// binary search. `None` is ISO's "N.A.".
#[rustfmt::skip]
const ISO_4217: &[(&str, Option<u8>)] = &[
    ("AED", Some(2)), ("AFN", Some(2)), ("ALL", Some(2)), ("AMD", Some(2)),
    ("AOA", Some(2)), ("ARS", Some(2)), ("AUD", Some(2)), ("AWG", Some(2)),
    ("AZN", Some(2)), ("BAM", Some(2)), ("BBD", Some(2)), ("BDT", Some(2)),
    ("BHD", Some(3)), ("BIF", Some(0)), ("BMD", Some(2)), ("BND", Some(2)),
    ("BOB", Some(2)), ("BOV", Some(2)), ("BRL", Some(2)), ("BSD", Some(2)),
    ("BTN", Some(2)), ("BWP", Some(2)), ("BYN", Some(2)), ("BZD", Some(2)),
    ("CAD", Some(2)), ("CDF", Some(2)), ("CHE", Some(2)), ("CHF", Some(2)),
    ("CHW", Some(2)), ("CLF", Some(4)), ("CLP", Some(0)), ("CNY", Some(2)),
    ("COP", Some(2)), ("COU", Some(2)), ("CRC", Some(2)), ("CUP", Some(2)),
    ("CVE", Some(2)), ("CZK", Some(2)), ("DJF", Some(0)), ("DKK", Some(2)),
    ("DOP", Some(2)), ("DZD", Some(2)), ("EGP", Some(2)), ("ERN", Some(2)),
    ("ETB", Some(2)), ("EUR", Some(2)), ("FJD", Some(2)), ("FKP", Some(2)),
    ("GBP", Some(2)), ("GEL", Some(2)), ("GHS", Some(2)), ("GIP", Some(2)),
    ("GMD", Some(2)), ("GNF", Some(0)), ("GTQ", Some(2)), ("GYD", Some(2)),
    ("HKD", Some(2)), ("HNL", Some(2)), ("HTG", Some(2)), ("HUF", Some(2)),
    ("IDR", Some(2)), ("ILS", Some(2)), ("INR", Some(2)), ("IQD", Some(3)),
    ("IRR", Some(2)), ("ISK", Some(0)), ("JMD", Some(2)), ("JOD", Some(3)),
    ("JPY", Some(0)), ("KES", Some(2)), ("KGS", Some(2)), ("KHR", Some(2)),
    ("KMF", Some(0)), ("KPW", Some(2)), ("KRW", Some(0)), ("KWD", Some(3)),
    ("KYD", Some(2)), ("KZT", Some(2)), ("LAK", Some(2)), ("LBP", Some(2)),
    ("LKR", Some(2)), ("LRD", Some(2)), ("LSL", Some(2)), ("LYD", Some(3)),
    ("MAD", Some(2)), ("MDL", Some(2)), ("MGA", Some(2)), ("MKD", Some(2)),
    ("MMK", Some(2)), ("MNT", Some(2)), ("MOP", Some(2)), ("MRU", Some(2)),
    ("MUR", Some(2)), ("MVR", Some(2)), ("MWK", Some(2)), ("MXN", Some(2)),
    ("MXV", Some(2)), ("MYR", Some(2)), ("MZN", Some(2)), ("NAD", Some(2)),
    ("NGN", Some(2)), ("NIO", Some(2)), ("NOK", Some(2)), ("NPR", Some(2)),
    ("NZD", Some(2)), ("OMR", Some(3)), ("PAB", Some(2)), ("PEN", Some(2)),
    ("PGK", Some(2)), ("PHP", Some(2)), ("PKR", Some(2)), ("PLN", Some(2)),
    ("PYG", Some(0)), ("QAR", Some(2)), ("RON", Some(2)), ("RSD", Some(2)),
    ("RUB", Some(2)), ("RWF", Some(0)), ("SAR", Some(2)), ("SBD", Some(2)),
    ("SCR", Some(2)), ("SDG", Some(2)), ("SEK", Some(2)), ("SGD", Some(2)),
    ("SHP", Some(2)), ("SLE", Some(2)), ("SOS", Some(2)), ("SRD", Some(2)),
    ("SSP", Some(2)), ("STN", Some(2)), ("SVC", Some(2)), ("SYP", Some(2)),
    ("SZL", Some(2)), ("THB", Some(2)), ("TJS", Some(2)), ("TMT", Some(2)),
    ("TND", Some(3)), ("TOP", Some(2)), ("TRY", Some(2)), ("TTD", Some(2)),
    ("TWD", Some(2)), ("TZS", Some(2)), ("UAH", Some(2)), ("UGX", Some(0)),
    ("USD", Some(2)), ("USN", Some(2)), ("UYI", Some(0)), ("UYU", Some(2)),
    ("UYW", Some(4)), ("UZS", Some(2)), ("VED", Some(2)), ("VES", Some(2)),
    ("VND", Some(0)), ("VUV", Some(0)), ("WST", Some(2)), ("XAD", Some(2)),
    ("XAF", Some(0)), ("XAG", None), ("XAU", None), ("XBA", None),
    ("XBB", None), ("XBC", None), ("XBD", None), ("XCD", Some(2)),
    ("XCG", Some(2)), ("XDR", None), ("XOF", Some(0)), ("XPD", None),
    ("XPF", Some(0)), ("XPT", None), ("XSU", None), ("XTS", None),
    ("XUA", None), ("XXX", None), ("YER", Some(2)), ("ZAR", Some(2)),
    ("ZMW", Some(2)), ("ZWG", Some(2)),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_unique_and_well_formed() {
        for pair in ISO_4217.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} then {}", pair[0].0, pair[1].0);
        }
        for (code, minor) in ISO_4217 {
            assert!(code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()));
            assert!(matches!(minor, None | Some(0 | 2 | 3 | 4)), "{code}");
        }
    }

    #[test]
    fn the_table_holds_the_178_codes_of_list_one() {
        assert_eq!(ISO_4217.len(), 178);
        assert_eq!(Currency::all().count(), 177, "all but XXX");
    }

    #[test]
    fn known_codes_parse_with_their_exponent() {
        let cases = [
            ("USD", 2),
            ("EUR", 2),
            ("JPY", 0),
            ("KRW", 0),
            ("KWD", 3),
            ("BHD", 3),
            ("TND", 3),
            ("CLF", 4),
            ("UYW", 4),
            ("CLP", 0),
            ("ISK", 0),
            ("XOF", 0),
            ("XCG", 2),
            ("ZWG", 2),
            ("SLE", 2),
            ("VED", 2),
            ("XAD", 2),
            ("HUF", 2),
        ];
        for (code, exponent) in cases {
            let currency = Currency::parse(code).unwrap();
            assert_eq!(currency.code(), code);
            assert_eq!(currency.exponent(), exponent, "{code}");
            assert!(currency.has_minor_unit());
        }
    }

    #[test]
    fn codes_without_a_minor_unit_count_whole_units() {
        for code in [
            "XAU", "XAG", "XPT", "XPD", "XDR", "XTS", "XSU", "XUA", "XBA",
        ] {
            let currency = Currency::parse(code).unwrap();
            assert_eq!(currency.exponent(), 0);
            assert!(!currency.has_minor_unit());
        }
    }

    #[test]
    fn the_constants_agree_with_the_table() {
        for constant in [
            Currency::USD,
            Currency::EUR,
            Currency::GBP,
            Currency::JPY,
            Currency::KWD,
        ] {
            assert_eq!(Currency::parse(constant.code()).unwrap(), constant);
        }
    }

    #[test]
    fn malformed_codes_are_rejected() {
        for bad in [
            "", "US", "USDD", "usd", "Usd", "US1", "U$D", " USD", "ÜSD", "€",
        ] {
            assert!(
                matches!(Currency::parse(bad), Err(CurrencyError::Malformed { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn unknown_and_withdrawn_codes_are_rejected() {
        for unknown in [
            "ABC", "ZZZ", "BTC", "HRK", "ANG", "BGN", "SLL", "ZWL", "CUC", "DEM",
        ] {
            assert_eq!(
                Currency::parse(unknown),
                Err(CurrencyError::Unknown {
                    code: unknown.into()
                })
            );
        }
    }

    #[test]
    fn xxx_is_refused_because_it_means_no_currency() {
        assert_eq!(Currency::parse("XXX"), Err(CurrencyError::NoCurrency));
    }

    #[test]
    fn error_messages_are_short_even_for_huge_input() {
        let huge = "A".repeat(10_000);
        let message = Currency::parse(&huge).unwrap_err().to_string();
        assert!(message.len() < 120, "{message}");
    }

    #[test]
    fn currencies_serialise_as_their_code_and_validate_on_the_way_in() {
        assert_eq!(serde_json::to_string(&Currency::EUR).unwrap(), "\"EUR\"");
        assert_eq!(
            serde_json::from_str::<Currency>("\"JPY\"").unwrap(),
            Currency::JPY
        );
        assert!(serde_json::from_str::<Currency>("\"ABC\"").is_err());
    }
}
