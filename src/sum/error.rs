//! Why an `args` value is refused.

use super::MAX_EXPONENT;

/// Why an `args` value is refused. `Display` gives a sentence a user can act on.
///
/// Suggested HTTP statuses: `NotAnArray`, `NotANumber` and `InvalidJson` 400,
/// `TooManyItems` 413, `TooManyDigits`, `ResultTooLong` and `ExponentOutOfRange` 422.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// The value is not a JSON array.
    #[error("`args` must be a JSON array of numbers")]
    NotAnArray,

    /// The element at `index` (0-based) is not a JSON number.
    #[error("`args[{index}]` is not a JSON number (elements count from 0): `args` must be an array of numbers only")]
    NotANumber { index: usize },

    /// The array holds more than `max` elements; scanning stopped at element `max`.
    #[error("`args` holds more than {max} numbers, the most this service sums in one task")]
    TooManyItems { max: usize },

    /// The exact sum would have more than `max` significant digits.
    #[error("{}", too_many_digits(*max, found))]
    TooManyDigits { max: usize, found: DigitsFound },

    /// The sum would be written in `bytes` bytes, more than `max`.
    #[error("the sum would be written in {bytes} bytes, more than the limit of {max} bytes")]
    ResultTooLong { max: usize, bytes: u64 },

    /// The element at `index` has an exponent beyond ±[`MAX_EXPONENT`].
    #[error(
        "`args[{index}]` has an exponent beyond ±{MAX_EXPONENT}, the largest this service accepts"
    )]
    ExponentOutOfRange { index: usize },

    /// The text is not valid JSON; the HTTP layer only passes valid JSON, so this means
    /// a corrupted task message or a caller that skipped JSON parsing.
    #[error("`args` is not valid JSON (at byte {offset})")]
    InvalidJson { offset: usize },
}

/// What was found when the digit limit refused a sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigitsFound {
    /// The exact sum was computed and has this many significant digits.
    Exact(u64),
    /// The nonzero digits of the numbers spread over this many decimal places, more than
    /// the sum is ever computed over, so the sum was not computed.
    Span(u64),
}

fn too_many_digits(max: usize, found: &DigitsFound) -> String {
    match found {
        DigitsFound::Exact(digits) => {
            format!("the exact sum has {digits} significant digits, more than the limit of {max}")
        }
        DigitsFound::Span(places) => format!(
            "the numbers spread their nonzero digits over {places} decimal places, too many \
             to sum exactly within the limit of {max} significant digits"
        ),
    }
}
