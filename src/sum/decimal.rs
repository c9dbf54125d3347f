//! Exact decimal accumulation: an `i128` with a shared scale for the common case, and
//! columns of base-10^9 digits for everything else.

use std::io::Write;

use super::number::{Mantissa, Number};
use super::parse::Sink;

/// 10^0 ..= 10^38, every power of ten an `i128` holds.
const POW10: [i128; 39] = {
    let mut table = [1i128; 39];
    let mut k = 1;
    while k < 39 {
        table[k] = table[k - 1] * 10;
        k += 1;
    }
    table
};

/// Decimal places per column.
const COLUMN_PLACES: i64 = 9;
/// The base of a column.
const COLUMN_BASE: i128 = 1_000_000_000;
/// Terms added to one column are below 10^28 each; carries are propagated after this
/// many additions so that a column stays far below `i128::MAX` (about 1.7 * 10^38).
const ADDS_BETWEEN_CARRIES: u32 = 1 << 30;

/// An exact decimal number: `(-1)^neg * digits * 10^exp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exact {
    pub neg: bool,
    /// ASCII digits without leading or trailing zeros; empty for zero.
    pub digits: Vec<u8>,
    /// The place of the last digit.
    pub exp: i64,
}

/// Adds numbers exactly.
///
/// Most numbers go into `acc`, which counts units of 10^`scale`: a number whose mantissa
/// fits at that scale costs one `i128` addition. A number that does not fit (its
/// exponent too far from the scale, or the total overflowing) either moves the scale down
/// or goes to the columns, which take any number at a cost proportional to its length.
pub struct Accumulator {
    acc: i128,
    scale: i64,
    columns: Columns,
}

impl Accumulator {
    pub fn new() -> Self {
        Accumulator {
            acc: 0,
            scale: 0,
            columns: Columns::new(),
        }
    }

    #[inline]
    fn add_short(&mut self, neg: bool, m: u64, exp: i64) {
        let term = if neg { -i128::from(m) } else { i128::from(m) };
        if exp == self.scale {
            if let Some(sum) = self.acc.checked_add(term) {
                self.acc = sum;
                return;
            }
        }
        self.add_short_elsewhere(term, exp);
    }

    /// The less common cases of [`Accumulator::add_short`]: another scale or an overflow.
    fn add_short_elsewhere(&mut self, term: i128, exp: i64) {
        if self.acc == 0 {
            // An empty accumulator can take any scale.
            self.scale = exp;
            self.acc = term;
            return;
        }
        if exp > self.scale {
            let up = exp - self.scale;
            if up < POW10.len() as i64 {
                if let Some(sum) = term
                    .checked_mul(POW10[up as usize])
                    .and_then(|t| self.acc.checked_add(t))
                {
                    self.acc = sum;
                    return;
                }
            }
            if up > 19 {
                // Far above the scale: a column takes it without disturbing the scale.
                self.columns.add(exp, term);
                return;
            }
        } else if exp < self.scale {
            let down = self.scale - exp;
            if down < POW10.len() as i64 {
                if let Some(sum) = self
                    .acc
                    .checked_mul(POW10[down as usize])
                    .and_then(|a| a.checked_add(term))
                {
                    self.acc = sum;
                    self.scale = exp;
                    return;
                }
            }
        }
        // Move the total so far to the columns and start again at this number's scale.
        self.flush();
        self.scale = exp;
        self.acc = term;
    }

    /// Moves `acc` to the columns.
    fn flush(&mut self) {
        let mut rest = self.acc;
        let mut place = self.scale;
        while rest != 0 {
            self.columns.add(place, rest % COLUMN_BASE);
            rest /= COLUMN_BASE;
            place += COLUMN_PLACES;
        }
        self.acc = 0;
    }

    /// The exact sum of everything added.
    pub fn finish(mut self) -> Exact {
        if self.columns.is_empty() {
            let mut digits = self.acc.unsigned_abs().to_string().into_bytes();
            if self.acc == 0 {
                digits.clear();
            }
            return Exact::trimmed(self.acc < 0, digits, self.scale);
        }
        self.flush();
        self.columns.finish()
    }
}

impl Sink for Accumulator {
    #[inline]
    fn add(&mut self, n: &Number<'_>) {
        match n.mantissa {
            Mantissa::Short(m) => self.add_short(n.neg, m, n.exp),
            Mantissa::Long { int, frac } => self.columns.add_digits(n.neg, int, frac, n.exp),
        }
    }
}

/// A number as signed base-10^9 digits ("columns"), least significant first, with the
/// carries between them left for later so that adding a term touches one column.
struct Columns {
    /// The place of the lowest digit of `cols[0]`; a multiple of [`COLUMN_PLACES`].
    base: i64,
    cols: Vec<i128>,
    adds: u32,
}

impl Columns {
    fn new() -> Self {
        Columns {
            base: 0,
            cols: Vec::new(),
            adds: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.cols.is_empty()
    }

    /// Adds `value * 10^place`, for `|value| < 10^19`.
    fn add(&mut self, place: i64, value: i128) {
        if value == 0 {
            return;
        }
        let index = self.index_for(place);
        let shift = (place - self.base) % COLUMN_PLACES;
        self.cols[index] += value * POW10[shift as usize];
        self.adds += 1;
        if self.adds == ADDS_BETWEEN_CARRIES {
            self.carry();
            self.adds = 0;
        }
    }

    /// The index of the column holding `place`, growing the columns to reach it.
    fn index_for(&mut self, place: i64) -> usize {
        let floor = place.div_euclid(COLUMN_PLACES) * COLUMN_PLACES;
        if self.cols.is_empty() {
            self.base = floor;
            self.cols.push(0);
            return 0;
        }
        if floor < self.base {
            // Grow downwards by at least as many columns as there are, so that numbers
            // arriving in descending order cost amortised constant time each.
            let needed = ((self.base - floor) / COLUMN_PLACES) as usize;
            let grow = needed.max(self.cols.len());
            self.cols.splice(0..0, std::iter::repeat_n(0, grow));
            self.base -= grow as i64 * COLUMN_PLACES;
        }
        let index = ((floor - self.base) / COLUMN_PLACES) as usize;
        if index >= self.cols.len() {
            self.cols.resize(index + 1, 0);
        }
        index
    }

    /// Adds the digits `int` followed by `frac`, whose last digit is at `exp`.
    fn add_digits(&mut self, neg: bool, int: &[u8], frac: &[u8], exp: i64) {
        // Trailing zeros add nothing; skipping them keeps the columns within the places
        // the span accounts for.
        let int_place = exp + frac.len() as i64;
        let frac = trim_trailing_zeros(frac);
        if frac.is_empty() {
            let trimmed = trim_trailing_zeros(int);
            self.add_slice(neg, trimmed, int_place + (int.len() - trimmed.len()) as i64);
        } else {
            self.add_slice(neg, frac, int_place - frac.len() as i64);
            self.add_slice(neg, int, int_place);
        }
    }

    /// Adds the ASCII digits `digits`, whose last one is at `place`, in chunks that each
    /// fall within one column.
    fn add_slice(&mut self, neg: bool, digits: &[u8], mut place: i64) {
        let mut end = digits.len();
        while end > 0 {
            let room = (COLUMN_PLACES - place.rem_euclid(COLUMN_PLACES)) as usize;
            let start = end.saturating_sub(room);
            let chunk = digits[start..end]
                .iter()
                .fold(0u64, |v, &c| v * 10 + u64::from(c - b'0'));
            let chunk = i128::from(chunk);
            self.add(place, if neg { -chunk } else { chunk });
            place += (end - start) as i64;
            end = start;
        }
    }

    /// Propagates carries so that every column but the last lies in `0..COLUMN_BASE`;
    /// returns the carry out of the last column.
    fn propagate(&mut self) -> i128 {
        let mut carry = 0;
        for col in &mut self.cols {
            let v = *col + carry;
            carry = v.div_euclid(COLUMN_BASE);
            *col = v.rem_euclid(COLUMN_BASE);
        }
        carry
    }

    /// Propagates carries midway, keeping any signed carry in a new top column.
    fn carry(&mut self) {
        let carry = self.propagate();
        if carry != 0 {
            self.cols.push(carry);
        }
    }

    fn push_carry(&mut self, mut carry: i128) {
        while carry != 0 {
            self.cols.push(carry % COLUMN_BASE);
            carry /= COLUMN_BASE;
        }
    }

    fn finish(mut self) -> Exact {
        let carry = self.propagate();
        let neg = carry < 0;
        if neg {
            // The columns now hold total - carry * B^len; a negative carry means a negative
            // total: negate it and propagate again.
            for col in &mut self.cols {
                *col = -*col;
            }
            let carry2 = self.propagate();
            self.push_carry(carry2 - carry);
        } else {
            self.push_carry(carry);
        }

        let mut digits = Vec::with_capacity(self.cols.len() * COLUMN_PLACES as usize);
        let mut cols = self.cols.iter().rev().skip_while(|&&c| c == 0);
        if let Some(top) = cols.next() {
            // Writing to a Vec cannot fail.
            let _ = write!(digits, "{top}");
            for col in cols {
                let _ = write!(digits, "{col:09}");
            }
        }
        Exact::trimmed(neg, digits, self.base)
    }
}

fn trim_trailing_zeros(digits: &[u8]) -> &[u8] {
    let len = digits.iter().rposition(|&c| c != b'0').map_or(0, |i| i + 1);
    &digits[..len]
}

impl Exact {
    /// Builds an `Exact` from digits without leading zeros whose last one is at place
    /// `exp`, removing their trailing zeros.
    fn trimmed(neg: bool, mut digits: Vec<u8>, mut exp: i64) -> Exact {
        if digits.is_empty() {
            return Exact {
                neg: false,
                digits,
                exp: 0,
            };
        }
        // Columns below the top one were written with all their places, so the last
        // digit of `digits` is at `exp` whether or not it came from the top column.
        while digits.last() == Some(&b'0') {
            digits.pop();
            exp += 1;
        }
        Exact { neg, digits, exp }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(neg: bool, digits: &str, exp: i64) -> Exact {
        Exact {
            neg,
            digits: digits.as_bytes().to_vec(),
            exp,
        }
    }

    #[test]
    fn columns_add_a_long_mantissa_digit_by_digit() {
        let mut c = Columns::new();
        c.add_digits(false, b"12345678901234567890", b"123", -3);
        assert_eq!(c.finish(), exact(false, "12345678901234567890123", -3));
    }

    #[test]
    fn columns_turn_a_negative_total_into_a_negative_number() {
        let mut c = Columns::new();
        c.add(0, 5);
        c.add(30, -1);
        let e = c.finish();
        assert_eq!(e, exact(true, "999999999999999999999999999995", 0));
    }

    #[test]
    fn columns_grow_downwards_and_upwards() {
        let mut c = Columns::new();
        c.add(0, 1);
        c.add(-100, 1);
        c.add(100, 1);
        let mut want = String::from("1");
        want.push_str(&"0".repeat(99));
        want.push('1');
        want.push_str(&"0".repeat(99));
        want.push('1');
        assert_eq!(c.finish(), exact(false, &want, -100));
    }

    #[test]
    fn accumulator_moves_its_total_to_the_columns_when_it_overflows() {
        let mut a = Accumulator::new();
        let big = 9_999_999_999_999_999_999u64;
        for _ in 0..100 {
            a.add_short(false, big, 19);
        }
        a.add_short(true, 1, -30);
        // 100 * big * 10^19 - 10^-30 = (100 * big - 1) followed by 49 nines, times 10^-30.
        let mut want = (100 * u128::from(big) - 1).to_string();
        want.push_str(&"9".repeat(49));
        assert_eq!(a.finish(), exact(false, &want, -30));
    }
}
