//! A number as the scanner reads it: sign, mantissa digits and power of ten, with no
//! allocation. The scanner ([`super::parse`]) makes them; the span ([`super::span`]) and
//! the accumulator ([`super::decimal`]) read them.

/// Mantissas with at most this many significant digits are read into a `u64`
/// (10^19 - 1 < 2^64).
pub const SHORT_DIGITS: u64 = 19;

/// A number as written: `(-1)^neg * mantissa * 10^exp`.
#[derive(Debug, Clone, Copy)]
pub struct Number<'a> {
    pub neg: bool,
    pub mantissa: Mantissa<'a>,
    /// The power of ten of the last written mantissa digit (trailing zeros included).
    pub exp: i64,
    /// How many mantissa digits follow the first nonzero one (0 for zero); trailing zeros
    /// are counted.
    pub digits: u64,
}

/// The mantissa digits of a [`Number`], without leading zeros.
#[derive(Debug, Clone, Copy)]
pub enum Mantissa<'a> {
    /// At most [`SHORT_DIGITS`] digits, read into an integer.
    Short(u64),
    /// More digits: the ASCII digits before and after the decimal point, left in the text.
    Long { int: &'a [u8], frac: &'a [u8] },
}

impl Mantissa<'_> {
    /// How many trailing zero digits the mantissa has.
    pub fn trailing_zeros(&self) -> u64 {
        match *self {
            Mantissa::Short(mut m) => {
                let mut zeros = 0;
                while m != 0 && m % 10 == 0 {
                    m /= 10;
                    zeros += 1;
                }
                zeros
            }
            Mantissa::Long { int, frac } => frac
                .iter()
                .rev()
                .chain(int.iter().rev())
                .take_while(|&&c| c == b'0')
                .count() as u64,
        }
    }
}
