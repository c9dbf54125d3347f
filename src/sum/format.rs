//! How an exact sum is written as a JSON number; the rule is described in the module
//! docs of [`crate::sum`].

use super::decimal::Exact;

/// A decimal result is written in plain digits when the place of its first digit lies in
/// this range, as JavaScript does; otherwise as `d.ddde±N`.
const PLAIN_PLACES: std::ops::RangeInclusive<i64> = -6..=20;

/// Writes `value` as JSON number text. With `decimal` the text always has a fraction or
/// an exponent; without it the value is an integer and is written as one.
pub(crate) fn to_json(value: &Exact, decimal: bool) -> String {
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

/// Digits are ASCII, so any slice of them is a string.
fn text(digits: &[u8]) -> &str {
    std::str::from_utf8(digits).expect("digits are ASCII")
}

fn push_zeros(out: &mut String, n: i64) {
    out.extend(std::iter::repeat('0').take(n.max(0) as usize));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(neg: bool, digits: &str, exp: i64, decimal: bool) -> String {
        let value = Exact {
            neg,
            digits: digits.as_bytes().to_vec(),
            exp,
        };
        to_json(&value, decimal)
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
