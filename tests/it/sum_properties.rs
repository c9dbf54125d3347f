//! Property tests of `sumsvc::sum` against an exact oracle (`bigdecimal`): generated lists
//! with long mantissas, extreme exponents, mixed signs that cancel, negative zero and
//! integer/decimal mixes. For every list, `check` and `sum_json` must agree with each other
//! and with the oracle on the result, its text and every refusal, and `check` must refuse
//! exactly the results whose text is longer than the byte limit.

use std::str::FromStr;

use bigdecimal::num_bigint::Sign;
use bigdecimal::BigDecimal;
use proptest::prelude::*;
use proptest::test_runner::RngAlgorithm;
use sumsvc::sum::{
    check, sum_json, ArgsError, DigitsFound, Limits, EXACT_SPAN_BUDGET, MAX_EXPONENT,
};

/// A generated JSON number, kept in parts so that it can be rewritten.
#[derive(Debug, Clone)]
struct Num {
    neg: bool,
    /// "0" or digits starting with a nonzero one.
    int: String,
    frac: Option<String>,
    /// Marker ('e' or 'E'), sign ("", "+" or "-") and digits.
    exp: Option<(char, &'static str, String)>,
}

impl Num {
    fn text(&self) -> String {
        let mut s = String::new();
        if self.neg {
            s.push('-');
        }
        s.push_str(&self.int);
        if let Some(frac) = &self.frac {
            s.push('.');
            s.push_str(frac);
        }
        if let Some((marker, sign, digits)) = &self.exp {
            s.push(*marker);
            s.push_str(sign);
            s.push_str(digits);
        }
        s
    }

    fn is_zero(&self) -> bool {
        let frac = self.frac.as_deref().unwrap_or("");
        self.int.chars().chain(frac.chars()).all(|c| c == '0')
    }

    fn is_decimal(&self) -> bool {
        self.frac.is_some() || self.exp.is_some()
    }

    /// The written exponent, if it is within ±MAX_EXPONENT.
    fn exponent(&self) -> Option<i64> {
        match &self.exp {
            None => Some(0),
            Some((_, sign, digits)) => {
                let value = digits.parse::<u128>().ok()?;
                if value > MAX_EXPONENT as u128 {
                    return None;
                }
                Some(if *sign == "-" {
                    -(value as i64)
                } else {
                    value as i64
                })
            }
        }
    }

    /// The same value with the opposite sign, written as all its digits and an exponent
    /// (`123.45` becomes `-12345e-2`), so that cancelling terms are not written alike.
    fn negated_rewritten(&self) -> Num {
        let frac = self.frac.clone().unwrap_or_default();
        let exp = self.exponent().expect("exponent in range") - frac.len() as i64;
        let digits = format!("{}{}", self.int, frac);
        let digits = digits.trim_start_matches('0');
        let int = if digits.is_empty() { "0" } else { digits };
        Num {
            neg: !self.neg,
            int: int.to_owned(),
            frac: None,
            exp: Some(('e', if exp < 0 { "-" } else { "" }, exp.abs().to_string())),
        }
    }
}

/// `len` digits drawn from `seed`, zeros and nines more often than their share (for
/// trailing zeros and carries). One seed per string keeps generation cheap: a strategy per
/// digit made the value trees, not the sums, the cost of a run.
fn digits(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    (len, any::<u64>()).prop_map(|(len, mut seed)| {
        (0..len)
            .map(|_| {
                // xorshift64*; a zero seed gives zeros, which is where shrinking ends.
                seed ^= seed >> 12;
                seed ^= seed << 25;
                seed ^= seed >> 27;
                let r = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 60;
                char::from(match r {
                    0..=9 => b'0' + r as u8,
                    10..=12 => b'0',
                    _ => b'9',
                })
            })
            .collect()
    })
}

fn int_part() -> impl Strategy<Value = String> {
    let nonzero = |len| {
        (1u8..10, digits(len))
            .prop_map(|(first, rest)| format!("{}{rest}", char::from(b'0' + first)))
    };
    prop_oneof![
        2 => Just("0".to_owned()),
        8 => nonzero(0..=18),
        1 => nonzero(19..=60),
    ]
}

fn exponent() -> impl Strategy<Value = (char, &'static str, String)> {
    let value = prop_oneof![
        16 => (0u64..=25).prop_map(|e| e.to_string()),
        8 => (0u64..=400).prop_map(|e| e.to_string()),
        2 => (0u64..=5000).prop_map(|e| e.to_string()),
        2 => (0u64..=30).prop_map(|e| format!("000{e}")),
        1 => (MAX_EXPONENT as u64 / 10..=MAX_EXPONENT as u64).prop_map(|e| e.to_string()),
        1 => (MAX_EXPONENT as u64 + 1..=u64::MAX).prop_map(|e| e.to_string()),
    ];
    (
        prop_oneof![Just('e'), Just('E')],
        prop_oneof![Just(""), Just("+"), Just("-")],
        value,
    )
}

fn num() -> impl Strategy<Value = Num> {
    (
        any::<bool>(),
        int_part(),
        proptest::option::weighted(0.5, prop_oneof![4 => digits(1..=18), 1 => digits(19..=60)]),
        proptest::option::weighted(0.4, exponent()),
    )
        .prop_map(|(neg, int, frac, exp)| Num {
            neg,
            int,
            frac,
            exp,
        })
}

/// Lists of any mix of numbers.
fn list() -> impl Strategy<Value = Vec<Num>> {
    proptest::collection::vec(num(), 0..=10)
}

/// Lists in which some numbers appear again negated (and written differently), shuffled,
/// so that large terms cancel and leave small or zero sums.
fn cancelling_list() -> impl Strategy<Value = Vec<Num>> {
    (
        proptest::collection::vec((num(), any::<bool>()), 1..=8),
        proptest::collection::vec(num(), 0..=2),
    )
        .prop_filter_map("exponents in range", |(picked, extra)| {
            let mut out = Vec::new();
            for (n, cancel) in picked {
                if cancel {
                    n.exponent()?;
                    out.push(n.negated_rewritten());
                }
                out.push(n);
            }
            out.extend(extra);
            Some(out)
        })
        .prop_shuffle()
}

fn max_digits() -> impl Strategy<Value = usize> {
    prop_oneof![0usize..=60, Just(4300)]
}

/// The byte limit relative to the length of the result: just below it, at it, and up
/// to a little more than the 22 bytes by which `check` may overestimate a decimal.
fn bytes_slack() -> impl Strategy<Value = i64> {
    prop_oneof![-3i64..=2, 3i64..=30]
}

fn json(list: &[Num]) -> String {
    let texts: Vec<String> = list.iter().map(Num::text).collect();
    format!("[{}]", texts.join(", "))
}

/// The smallest `k` with `10^k >= n`.
fn ceil_log10(n: u64) -> u64 {
    let mut k = 0;
    while 10u128.pow(k as u32) < u128::from(n) {
        k += 1;
    }
    k
}

/// What the oracle expects: the exact sum and whether it is decimal, or the refusal.
fn oracle(list: &[Num], max_digits: usize) -> Result<(BigDecimal, bool), ArgsError> {
    let decimal = list.iter().any(Num::is_decimal);
    let mut values = Vec::new();
    for (index, n) in list.iter().enumerate() {
        if n.is_zero() {
            continue;
        }
        if n.exponent().is_none() {
            return Err(ArgsError::ExponentOutOfRange { index });
        }
        let value = BigDecimal::from_str(&n.text()).expect("the oracle parses the number");
        values.push(value.normalized());
    }

    // Places of the highest and lowest nonzero digits; `scale` counts places after the
    // point, so the last digit of a normalised value is at place -scale.
    let places: Vec<(i128, i128)> = values
        .iter()
        .map(|v| {
            let (int, scale) = v.as_bigint_and_exponent();
            let low = -i128::from(scale);
            let len = int.magnitude().to_string().len() as i128;
            (low, low + len - 1)
        })
        .collect();
    if let (Some(low), Some(high)) = (
        places.iter().map(|p| p.0).min(),
        places.iter().map(|p| p.1).max(),
    ) {
        let span = (high - low + 1) as u64;
        let bound = span + ceil_log10(values.len() as u64);
        if bound > EXACT_SPAN_BUDGET.max(max_digits as u64) {
            return Err(ArgsError::TooManyDigits {
                max: max_digits,
                found: DigitsFound::Span(span),
            });
        }
    }

    // Start from the first value rather than from zero: adding to a zero of scale 0 would
    // rescale a value with a huge exponent.
    let mut values = values.into_iter();
    let sum = match values.next() {
        None => BigDecimal::from(0),
        Some(first) => values.fold(first, |acc, v| acc + v),
    };
    let sum = sum.normalized();
    if sum.sign() != Sign::NoSign && sum.digits() > max_digits as u64 {
        return Err(ArgsError::TooManyDigits {
            max: max_digits,
            found: DigitsFound::Exact(sum.digits()),
        });
    }
    Ok((sum, decimal))
}

/// The oracle's text of a normalised value, following the documented rule.
fn oracle_text(value: &BigDecimal, decimal: bool) -> String {
    if value.sign() == Sign::NoSign {
        return if decimal { "0.0" } else { "0" }.to_owned();
    }
    let (int, scale) = value.as_bigint_and_exponent();
    let sign = if int.sign() == Sign::Minus { "-" } else { "" };
    let digits = int.magnitude().to_string();
    let last = -scale;
    let first = last + digits.len() as i64 - 1;
    let body = if !decimal {
        format!("{digits}{}", "0".repeat(last as usize))
    } else if (-6..=20).contains(&first) {
        if last >= 0 {
            format!("{digits}{}.0", "0".repeat(last as usize))
        } else {
            let frac_len = (-last) as usize;
            let padded = format!(
                "{}{digits}",
                "0".repeat((frac_len + 1).saturating_sub(digits.len()))
            );
            let (i, f) = padded.split_at(padded.len() - frac_len);
            format!("{i}.{f}")
        }
    } else {
        let (lead, rest) = digits.split_at(1);
        let rest = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        format!("{lead}{rest}e{first}")
    };
    format!("{sign}{body}")
}

/// Runs both entry points on `list` and compares them with the oracle. The byte limit is
/// the length of the oracle's text plus `bytes_slack`, so that both sides of it are tried
/// for every kind of sum.
fn agrees_with_oracle(
    list: &[Num],
    max_digits: usize,
    bytes_slack: i64,
) -> Result<(), TestCaseError> {
    let text = json(list);
    let expected = oracle(list, max_digits);
    let written = expected
        .as_ref()
        .map_or(0, |(sum, decimal)| oracle_text(sum, *decimal).len());
    let max_bytes = (written as i64 + bytes_slack).max(1) as usize;
    let limits = Limits {
        max_items: usize::MAX,
        max_result_digits: max_digits,
        max_result_bytes: max_bytes,
    };
    let checked = check(&text, &limits);
    let summed = sum_json(&text, max_digits);
    match expected {
        Ok((sum, decimal)) => {
            let want = oracle_text(&sum, decimal);
            // The worker does not apply the byte limit: the API refused before queueing.
            prop_assert_eq!(summed, Ok(want.clone()), "sum of {}", text);
            // The text is JSON and reads back as the exact sum.
            prop_assert!(serde_json::from_str::<serde::de::IgnoredAny>(&want).is_ok());
            prop_assert_eq!(BigDecimal::from_str(&want).unwrap(), sum.clone());
            if want.len() > max_bytes {
                let err = ArgsError::ResultTooLong {
                    max: max_bytes,
                    bytes: want.len() as u64,
                };
                prop_assert_eq!(checked, Err(err), "check of {}", text);
                return Ok(());
            }
            let checked =
                checked.map_err(|e| TestCaseError::fail(format!("check of {text}: {e:?}")))?;
            prop_assert_eq!(checked.count, list.len());
            prop_assert_eq!(checked.decimal, decimal);
            prop_assert!(checked.digits_at_most >= sum.digits() || sum.sign() == Sign::NoSign);
            prop_assert!(checked.digits_at_most <= max_digits as u64);
        }
        Err(err) => {
            prop_assert_eq!(checked, Err(err.clone()), "check of {}", text);
            prop_assert_eq!(summed, Err(err), "sum of {}", text);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 70_000,
        failure_persistence: None,
        // The default ChaCha generator dominates the run time of a debug build.
        rng_algorithm: RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    })]

    #[test]
    fn sums_of_any_numbers_match_the_exact_oracle(
        list in list(),
        max_digits in max_digits(),
        bytes_slack in bytes_slack(),
    ) {
        agrees_with_oracle(&list, max_digits, bytes_slack)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 35_000,
        failure_persistence: None,
        // The default ChaCha generator dominates the run time of a debug build.
        rng_algorithm: RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    })]

    #[test]
    fn sums_of_cancelling_numbers_match_the_exact_oracle(
        list in cancelling_list(),
        max_digits in max_digits(),
        bytes_slack in bytes_slack(),
    ) {
        agrees_with_oracle(&list, max_digits, bytes_slack)?;
    }
}
