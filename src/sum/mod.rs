//! Exact sums of JSON numbers.
//!
//! The API calls [`check`] on the JSON text of `args` before it queues anything; the
//! worker calls [`sum_json`] on the same text. Both read the text in one pass with a
//! hand-written scanner that splits each number into sign, mantissa and exponent without
//! rounding and without allocating.
//!
//! # Validation
//!
//! The text must be a JSON array of JSON numbers (RFC 8259 grammar, JSON whitespace
//! around the elements). Problems of the text are reported at the first one in text
//! order: not an array, an element that is not a number (by its 0-based index), more than
//! `max_items` elements (scanning stops there), broken JSON. Problems of the values come
//! after the whole text was found valid: first an exponent beyond ±[`MAX_EXPONENT`]
//! (refused so that all place arithmetic fits an `i64`; zero with such an exponent is
//! still zero and accepted), then the digit limit.
//!
//! # Arithmetic
//!
//! The sum is exact in decimal: every number is `±mantissa × 10^exponent` as written.
//! Mantissas of up to 19 digits are read into a `u64`. The common cases, integers that fit
//! 64 bits and decimals of moderate length and exponent, add into one `i128` counting
//! units of a shared power of ten (the scale): one machine addition per number while the
//! exponent repeats, a multiplication when it differs. Whatever does not fit there (a
//! longer mantissa, an exponent far from the scale, a total beyond `i128`) goes to columns
//! of base-10^9 digits with deferred carries, arbitrary precision in decimal, so adding a
//! number costs time proportional to its own length, not to the size of the total, and
//! turning the total into text needs no base conversion.
//!
//! # The digit limit
//!
//! A sum is refused when its exact value would have more than `max_result_digits`
//! significant digits (from the first nonzero digit to the last). The scan tracks, for
//! the nonzero numbers, the places (powers of ten) of their highest and lowest nonzero
//! digits, from mantissa length, exponent and trailing zeros, never from materialised
//! digits. The sum of `n` numbers has no nonzero digit below the lowest of these, nor above
//! the highest plus `ceil(log10(n))`; that many places bound its significant digits. Then:
//!
//! - bound ≤ `max_result_digits`: accepted, without computing anything;
//! - bound > `max(EXACT_SPAN_BUDGET, max_result_digits)`: refused at once
//!   ([`DigitsFound::Span`]). The numbers could still cancel to a short sum, but finding
//!   out would take work and memory proportional to the bound;
//! - otherwise the sum is computed exactly (time and memory linear in the text and the
//!   bound) and refused if its real digit count exceeds the limit ([`DigitsFound::Exact`]).
//!   This is how `[1e5000, -1e5000]` gives 0.
//!
//! [`check`] and [`sum_json`] apply the same rule to the same numbers, so the worker
//! refuses exactly what the API would have refused, and any task costs the worker time
//! linear in its text: the scan stops feeding the sum once the numbers span more than
//! `max(EXACT_SPAN_BUDGET, max_result_digits)` places, so the columns never cover more
//! than about twice that many (a few megabytes with the defaults).
//!
//! The limit counts significant digits. An integer sum is written with
//! its trailing zeros, so its text can be longer than the limit, but never longer than
//! the longest integer argument plus `ceil(log10(n))` digits.
//!
//! # The length limit
//!
//! [`check`] also refuses a sum whose written text (see Output) would be longer than
//! `max_result_bytes`: `[1000…0]` with a million zeros has one significant digit but a
//! text of a million bytes. The same places bound it without computing anything: an
//! integer sum's first digit is at most at the highest place plus `ceil(log10(n))`, and a
//! decimal sum adds at most 22 bytes to its significant digits (`0.` and five zeros, or
//! `.`, `e` and the exponent) besides its sign. When that bound exceeds the limit, the sum
//! is computed exactly (the digit limit already bounds that work) and its real length
//! decides, so a sum that fits is never refused. [`sum_json`] does not apply this limit:
//! the API refuses before queueing, so a worker never needs it.
//!
//! # Output
//!
//! The result is the exact value written as a person would write it, never rounded:
//!
//! - If every argument is a plain integer (no fraction, no exponent), the sum is an
//!   integer and is written in plain digits: `[1, 2]` gives `3`, `[]` gives `0`.
//! - Otherwise it always shows a fraction or an exponent, so that Python and JavaScript
//!   clients read a float. Let `p` be the place of its first significant digit (the
//!   exponent of scientific notation). When `-6 ≤ p ≤ 20` (the range where JavaScript
//!   prints plain digits) it is written in plain digits, with `.0` added to a whole
//!   number: `0.3`, `123.45`, `3.0`, `0.000001`, `100000000000000000000.0`. Outside that
//!   range it is written `d.ddd…e±N` with no `+` and no needless digit: `2e308`,
//!   `1.5e-7`, `-1.2345678901234567e21`.
//! - Zero is `0` or `0.0`, never `-0.0`.

mod decimal;
mod error;
mod format;
mod number;
mod parse;
mod span;

pub use error::{ArgsError, DigitsFound};

use decimal::Accumulator;
use parse::{scan, Discard, Scanned};

/// The largest written exponent accepted, in absolute value.
pub const MAX_EXPONENT: i64 = 1_000_000_000_000_000_000;

/// Sums whose digit bound exceeds the limit are still computed exactly, to see whether
/// cancellation makes them short enough, up to this many places; beyond it they are
/// refused without computing. It bounds the work of such a sum, beyond reading its text,
/// to tens of milliseconds and a few megabytes.
pub const EXACT_SPAN_BUDGET: u64 = 1_000_000;

/// The largest digit limit a sum may be given: `limits.max_result_digits` may not be
/// configured above it, and a worker holds a task message that asks for more to it, so
/// no message makes a sum work past [`EXACT_SPAN_BUDGET`].
pub const MAX_RESULT_DIGITS_CAP: usize = EXACT_SPAN_BUDGET as usize;

/// Limits on an `args` value; the service's come from its `limits` config
/// (`LimitsConfig::sum_limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most numbers one `args` array may hold.
    pub max_items: usize,
    /// The most significant digits a result may have.
    pub max_result_digits: usize,
    /// The longest a result may be written, in bytes (checked by [`check`] only).
    pub max_result_bytes: usize,
}

/// What [`check`] found about an accepted `args` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// How many numbers the array holds.
    pub count: usize,
    /// An upper bound on the significant digits of the sum (exact when the sum had to be
    /// computed to decide); at most `max_result_digits`.
    pub digits_at_most: u64,
    /// Whether any number has a fraction or an exponent, so the result will too.
    pub decimal: bool,
}

/// Validates `args_json` (the JSON text of the args value, whitespace allowed) and predicts
/// the result size.
///
/// Refuses, at the first problem in text order, anything but an array, an element that is
/// not a number (naming its index) and an element past `max_items` (without reading
/// further); then, once the text is known to be valid, a number whose exponent is beyond
/// ±[`MAX_EXPONENT`], a sum that would exceed `max_result_digits`, and then one whose
/// text would be longer than `max_result_bytes` (see the module docs). Usually one pass
/// that computes nothing.
///
/// # Errors
///
/// The [`ArgsError`] that refuses the value.
pub fn check(args_json: &str, limits: &Limits) -> Result<Checked, ArgsError> {
    let max_digits = limits.max_result_digits;
    let scanned = scan(
        args_json,
        limits.max_items,
        max_span(max_digits),
        &mut Discard,
    )?;
    let exact_sum = || -> Result<decimal::Exact, ArgsError> {
        let mut acc = Accumulator::new();
        scan(args_json, limits.max_items, max_span(max_digits), &mut acc)?;
        Ok(acc.finish())
    };
    let mut exact = None;
    let digits_at_most = match decide(&scanned, max_digits)? {
        Decision::Fits(bound) => bound,
        Decision::Compute => {
            // Rare: the numbers spread wide, so only the exact sum tells.
            let sum = exact.insert(exact_sum()?);
            exact_digits(sum, max_digits)?
        }
    };
    let max_bytes = limits.max_result_bytes as u64;
    let first = scanned.span.sum_first_place();
    if format::len_at_most(first, digits_at_most, scanned.decimal) > max_bytes {
        // Rare: a long result, or one close to the limit; only the exact sum tells.
        let sum = match exact {
            Some(sum) => sum,
            None => exact_sum()?,
        };
        let bytes = format::written_len(&sum, scanned.decimal);
        if bytes > max_bytes {
            return Err(ArgsError::ResultTooLong {
                max: limits.max_result_bytes,
                bytes,
            });
        }
    }
    Ok(Checked {
        count: scanned.count,
        digits_at_most,
        decimal: scanned.decimal,
    })
}

/// The exact sum of the numbers in `args_json`, as JSON number text (e.g. `"0.3"`,
/// `"2e308"`, `"3"`; see the module docs for the rule).
///
/// Gives the same refusals as [`check`] for the digit limit, so a worker never runs long;
/// it does not limit the number of items nor the length of the text.
///
/// # Errors
///
/// The [`ArgsError`] that refuses the value; never one that [`check`] would not give.
pub fn sum_json(args_json: &str, max_result_digits: usize) -> Result<String, ArgsError> {
    let mut acc = Accumulator::new();
    let scanned = scan(args_json, usize::MAX, max_span(max_result_digits), &mut acc)?;
    let decision = decide(&scanned, max_result_digits)?;
    let exact = acc.finish();
    if decision == Decision::Compute {
        exact_digits(&exact, max_result_digits)?;
    }
    Ok(format::to_json(&exact, scanned.decimal))
}

/// The widest span of places that is ever summed.
fn max_span(max_digits: usize) -> u64 {
    EXACT_SPAN_BUDGET.max(max_digits as u64)
}

#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// The sum has at most this many significant digits, within the limit.
    Fits(u64),
    /// Only the exact sum can tell.
    Compute,
}

/// Applies the digit limit to what the scan found, before any exact sum.
fn decide(scanned: &Scanned, max_digits: usize) -> Result<Decision, ArgsError> {
    let bound = scanned.span.sum_places();
    if bound <= max_digits as u64 {
        Ok(Decision::Fits(bound))
    } else if bound > max_span(max_digits) {
        Err(ArgsError::TooManyDigits {
            max: max_digits,
            found: DigitsFound::Span(scanned.span.places()),
        })
    } else {
        // The scan stopped feeding the sink only past `max_span`, so the sum is complete.
        debug_assert!(scanned.complete);
        Ok(Decision::Compute)
    }
}

/// The significant digits of `exact`, or the refusal if there are too many.
fn exact_digits(exact: &decimal::Exact, max_digits: usize) -> Result<u64, ArgsError> {
    let digits = exact.digits.len() as u64;
    if digits > max_digits as u64 {
        return Err(ArgsError::TooManyDigits {
            max: max_digits,
            found: DigitsFound::Exact(digits),
        });
    }
    Ok(digits)
}
