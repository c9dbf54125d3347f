//! How an exact sum is written as a JSON number; the rule is described in the module
//! docs of [`crate::sum`].

use super::decimal::Exact;

/// A decimal result is written in plain digits when the place of its first digit lies in
/// this range, as JavaScript does; otherwise as `d.ddde±N`.
const PLAIN_PLACES: std::ops::RangeInclusive<i64> = -6..=20;

/// Writes `value` as JSON number text. With `decimal` the text always has a fraction or
/// an exponent; without it the value is an integer and is written as one.
pub fn to_json(value: &Exact, decimal: bool) -> String {
    let digits = &value.digits;
    if digits.is_empty() {
        return if decimal { "0.0" } else { "0" }.to_owned();
    }
    let len = digits.len() as i64;
    let first = value.exp + len - 1;

    let mut out = String::with_capacity(digits.len() + 24);
    if value.neg {
        out.push('-');
    }
    if !decimal {
        // Every argument was a plain integer, so the sum is one: its last digit is at a
        // place >= 0.
        out.push_str(text(digits));
        push_zeros(&mut out, value.exp);
    } else if PLAIN_PLACES.contains(&first) {
        if value.exp >= 0 {
            out.push_str(text(digits));
            push_zeros(&mut out, value.exp);
            out.push_str(".0");
        } else if first >= 0 {
            let (int, frac) = digits.split_at((first + 1) as usize);
            out.push_str(text(int));
            out.push('.');
            out.push_str(text(frac));
        } else {
            out.push_str("0.");
            push_zeros(&mut out, -first - 1);
            out.push_str(text(digits));
        }
    } else {
        out.push_str(text(&digits[..1]));
        if digits.len() > 1 {
            out.push('.');
            out.push_str(text(&digits[1..]));
        }
        out.push('e');
        out.push_str(&first.to_string());
    }
    out
}

/// The length of [`to_json`]'s text for `value`, without writing it.
pub fn written_len(value: &Exact, decimal: bool) -> u64 {
    let digits = value.digits.len() as u64;
    if digits == 0 {
        return if decimal { 3 } else { 1 };
    }
    let first = value.exp + digits as i64 - 1;
    let body = if !decimal {
        digits + value.exp.max(0).unsigned_abs()
    } else if PLAIN_PLACES.contains(&first) {
        if value.exp >= 0 {
            digits + value.exp.unsigned_abs() + 2
        } else if first >= 0 {
            digits + 1
        } else {
            // "0.", then the zeros before the first digit.
            2 + (-first - 1).unsigned_abs() + digits
        }
    } else {
        let point = u64::from(digits > 1);
        digits + point + 1 + first.to_string().len() as u64
    };
    u64::from(value.neg) + body
}

/// An upper bound on [`written_len`] for a sum of at most `digits` significant digits
/// whose first digit is at place `first` or below (`None`: the sum is zero).
///
/// An integer is written from its first digit down to place 0. A decimal adds to its
/// digits at most 22 bytes: `0.` and five zeros, `.0` after a whole number of at most 21
/// digits, or `.`, `e` and an exponent of at most 20 characters.
pub fn len_at_most(first: Option<i64>, digits: u64, decimal: bool) -> u64 {
    let Some(first) = first else {
        return if decimal { 3 } else { 1 };
    };
    let sign = 1;
    if decimal {
        sign + digits.saturating_add(22)
    } else {
        sign + first.max(0).unsigned_abs().saturating_add(1)
    }
}

/// Digits are ASCII, so any slice of them is a string.
fn text(digits: &[u8]) -> &str {
    std::str::from_utf8(digits).expect("digits are ASCII")
}

fn push_zeros(out: &mut String, n: i64) {
    out.extend(std::iter::repeat_n('0', n.max(0) as usize));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text of a value, after checking that `written_len` and `len_at_most` agree
    /// with it.
    fn fmt(neg: bool, digits: &str, exp: i64, decimal: bool) -> String {
        let value = Exact {
            neg,
            digits: digits.as_bytes().to_vec(),
            exp,
        };
        let text = to_json(&value, decimal);
        assert_eq!(written_len(&value, decimal), text.len() as u64, "{text}");
        let first = (!digits.is_empty()).then(|| exp + digits.len() as i64 - 1);
        let bound = len_at_most(first, digits.len() as u64, decimal);
        assert!(bound >= text.len() as u64, "{text}: bound {bound}");
        text
    }

    #[test]
    fn lengths_are_predicted_at_the_edges_of_each_form() {
        for exp in [-30, -27, -26, -25, -7, -6, -5, -1, 0, 1, 19, 20, 21, 22, 60] {
            for digits in ["1", "12", "1234567", &"9".repeat(25)] {
                for neg in [false, true] {
                    fmt(neg, digits, exp, true);
                    if exp >= 0 {
                        fmt(neg, digits, exp, false);
                    }
                }
            }
        }
        fmt(false, "1", i64::MIN / 2, true);
        fmt(true, "12", 1_000_000_000_000_000_000, true);
        // The bound is tight where the text is longest for its digits.
        let longest = fmt(true, "12", -9_223_372_036_854_775_000, true);
        assert_eq!(
            longest.len() as u64,
            len_at_most(Some(0), 2, true),
            "{longest}"
        );
    }

    #[test]
    fn zero_is_an_integer_or_a_float_zero_without_a_sign() {
        assert_eq!(fmt(false, "", 0, false), "0");
        assert_eq!(fmt(false, "", 0, true), "0.0");
    }

    #[test]
    fn integers_are_written_in_full() {
        assert_eq!(fmt(false, "123", 0, false), "123");
        assert_eq!(fmt(true, "1", 30, false), format!("-1{}", "0".repeat(30)));
    }

    #[test]
    fn decimals_switch_to_an_exponent_outside_places_minus_6_to_20() {
        assert_eq!(fmt(false, "1", 20, true), format!("1{}.0", "0".repeat(20)));
        assert_eq!(fmt(false, "1", 21, true), "1e21");
        assert_eq!(fmt(false, "1", -6, true), "0.000001");
        assert_eq!(fmt(false, "1", -7, true), "1e-7");
        assert_eq!(fmt(true, "12345", -11, true), "-1.2345e-7");
        assert_eq!(fmt(false, "12345", 19, true), "1.2345e23");
    }

    #[test]
    fn plain_decimals_put_the_point_where_the_place_says() {
        assert_eq!(fmt(false, "3", -1, true), "0.3");
        assert_eq!(fmt(false, "12345", -2, true), "123.45");
        assert_eq!(fmt(false, "12345", 0, true), "12345.0");
        assert_eq!(fmt(false, "12", 2, true), "1200.0");
        assert_eq!(fmt(true, "5", -3, true), "-0.005");
    }
}
