//! Where the nonzero digits of the numbers lie, and so how long their sum can be.

use super::number::Number;

/// The decimal places covered by the nonzero digits of the numbers seen so far.
///
/// A place is a power of ten: place 0 holds units, place -1 tenths. Every number lies
/// between its lowest and its highest nonzero digit, so their sum has no nonzero digit
/// below the lowest of all, and none above the highest of all plus ceil(log10(count)):
/// `count` numbers below 10^(h+1) add up to less than 10^(h+1+ceil(log10(count))).
#[derive(Debug, Clone, Copy)]
pub struct Span {
    lowest: i64,
    highest: i64,
    /// How many nonzero numbers were included.
    count: u64,
}

impl Span {
    pub fn new() -> Self {
        Span {
            lowest: i64::MAX,
            highest: i64::MIN,
            count: 0,
        }
    }

    /// Includes a nonzero number.
    #[inline]
    pub fn include(&mut self, n: &Number<'_>) {
        self.count += 1;
        let highest = n.exp.saturating_add(n.digits as i64 - 1);
        if highest > self.highest {
            self.highest = highest;
        }
        // The lowest nonzero digit is at or above the last written one; counting trailing
        // zeros costs a loop, so it is done only when it could lower the span.
        if n.exp < self.lowest {
            let lowest = n.exp.saturating_add(n.mantissa.trailing_zeros() as i64);
            if lowest < self.lowest {
                self.lowest = lowest;
            }
        }
    }

    /// Places between the lowest and the highest nonzero digit seen, both included; a
    /// lower bound of [`Span::sum_places`] that never falls as numbers are added.
    #[inline]
    pub fn places(&self) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let places = i128::from(self.highest) - i128::from(self.lowest) + 1;
        u64::try_from(places).unwrap_or(u64::MAX)
    }

    /// An upper bound on the significant digits of the sum: the places from the lowest
    /// nonzero digit to the highest one a sum of `count` numbers can reach.
    pub fn sum_places(&self) -> u64 {
        if self.count == 0 {
            return 0;
        }
        self.places()
            .saturating_add(u64::from(ceil_log10(self.count)))
    }

    /// The highest place the first digit of the sum can reach; `None` when no nonzero
    /// number was included (the sum is zero).
    pub fn sum_first_place(&self) -> Option<i64> {
        if self.count == 0 {
            return None;
        }
        Some(
            self.highest
                .saturating_add(i64::from(ceil_log10(self.count))),
        )
    }
}

/// The smallest `k` with `10^k >= n`, for `n >= 1`.
fn ceil_log10(n: u64) -> u32 {
    let mut k = 0;
    let mut p: u64 = 1;
    while p < n {
        k += 1;
        match p.checked_mul(10) {
            Some(next) => p = next,
            None => break,
        }
    }
    k
}

#[cfg(test)]
mod tests {
    use super::ceil_log10;

    #[test]
    fn ceil_log10_counts_the_digits_needed_for_carries() {
        assert_eq!(ceil_log10(1), 0);
        assert_eq!(ceil_log10(2), 1);
        assert_eq!(ceil_log10(10), 1);
        assert_eq!(ceil_log10(11), 2);
        assert_eq!(ceil_log10(1_000_000), 6);
        assert_eq!(ceil_log10(u64::MAX), 20);
    }
}
