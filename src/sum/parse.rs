//! One pass over the JSON text of `args`: validates it and hands each number, split into
//! sign, mantissa and exponent, to a [`Sink`].
//!
//! The scanner is written by hand rather than with serde_json because serde_json would
//! round every number to `f64` (or, with `arbitrary_precision`, allocate a `String` per
//! number); here a number costs no allocation and is read exactly.

use super::number::{Mantissa, Number, SHORT_DIGITS};
use super::span::Span;
use super::{ArgsError, MAX_EXPONENT};

/// Receives every nonzero number while the span of the numbers stays within the limit.
pub trait Sink {
    fn add(&mut self, number: &Number<'_>);
}

/// A sink that ignores the numbers, for validation alone.
pub struct Discard;

impl Sink for Discard {
    #[inline]
    fn add(&mut self, _: &Number<'_>) {}
}

/// What a successful scan found.
#[derive(Debug, Clone, Copy)]
pub struct Scanned {
    pub count: usize,
    /// Whether any number was written with a fraction or an exponent.
    pub decimal: bool,
    pub span: Span,
    /// Whether every nonzero number reached the sink; false once the numbers spanned more
    /// than `max_span` places, which makes the sum too long whatever follows.
    pub complete: bool,
}

/// An element is not a JSON number.
struct NotANumber;

/// One number read from the text.
struct Parsed<'a> {
    number: Number<'a>,
    /// Whether it has a fraction or an exponent.
    decimal: bool,
    /// Whether its exponent is beyond ±MAX_EXPONENT (and it is not zero).
    out_of_range: bool,
    /// The index just past it.
    end: usize,
}

/// Scans `text`, which must be a JSON array of at most `max_items` numbers, and feeds its
/// nonzero numbers to `sink` until their digits span more than `max_span` places.
///
/// Errors about the text (not an array, not a number, not JSON, too many items) are
/// returned at the first one in text order. An exponent out of range is a problem of the
/// value, like the digit limit, so it is reported only once the whole text is known to
/// be valid.
pub fn scan<S: Sink>(
    text: &str,
    max_items: usize,
    max_span: u64,
    sink: &mut S,
) -> Result<Scanned, ArgsError> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'[') {
        return Err(ArgsError::NotAnArray);
    }
    i = skip_ws(b, i + 1);

    let mut out_of_range = None;
    let mut scanned = Scanned {
        count: 0,
        decimal: false,
        span: Span::new(),
        complete: true,
    };
    if b.get(i) == Some(&b']') {
        i += 1;
    } else {
        loop {
            let index = scanned.count;
            if index == max_items {
                return Err(ArgsError::TooManyItems { max: max_items });
            }
            match b.get(i) {
                None | Some(b',') | Some(b']') => {
                    return Err(ArgsError::InvalidJson { offset: i });
                }
                _ => {}
            }
            let parsed =
                parse_number(b, i).map_err(|NotANumber| ArgsError::NotANumber { index })?;
            let number = parsed.number;
            scanned.count += 1;
            scanned.decimal |= parsed.decimal;
            if parsed.out_of_range {
                out_of_range.get_or_insert(index);
            } else if number.digits != 0 {
                scanned.span.include(&number);
                if scanned.complete {
                    if scanned.span.places() > max_span {
                        scanned.complete = false;
                    } else {
                        sink.add(&number);
                    }
                }
            }
            i = skip_ws(b, parsed.end);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b']') => {
                    i += 1;
                    break;
                }
                _ => return Err(ArgsError::InvalidJson { offset: i }),
            }
        }
    }
    i = skip_ws(b, i);
    if i != b.len() {
        return Err(ArgsError::InvalidJson { offset: i });
    }
    if let Some(index) = out_of_range {
        return Err(ArgsError::ExponentOutOfRange { index });
    }
    Ok(scanned)
}

#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(i) {
        i += 1;
    }
    i
}

/// Reads one JSON number starting at `b[i]`. The number must end at whitespace, `,`, `]`
/// or the end of the text.
#[inline]
fn parse_number(b: &[u8], mut i: usize) -> Result<Parsed<'_>, NotANumber> {
    let neg = b.get(i) == Some(&b'-');
    if neg {
        i += 1;
    }

    let mut m: u64 = 0;
    let mut digits: u64 = 0;

    // Integer part: "0" or a nonzero digit followed by digits.
    let int_start = i;
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = take_digits(b, i, &mut m, &mut digits),
        _ => return Err(NotANumber),
    }
    let int_end = i;

    // Fraction: "." and at least one digit. Leading zeros of a number below one are
    // skipped, so `digits` counts significant digits only.
    let mut decimal = false;
    let mut frac_len: u64 = 0;
    let mut frac_start = i;
    let mut frac_end = i;
    if b.get(i) == Some(&b'.') {
        decimal = true;
        i += 1;
        let start = i;
        if digits == 0 {
            while b.get(i) == Some(&b'0') {
                i += 1;
            }
        }
        frac_start = i;
        i = take_digits(b, i, &mut m, &mut digits);
        if i == start {
            return Err(NotANumber);
        }
        frac_end = i;
        frac_len = (i - start) as u64;
    }

    // Exponent: "e" or "E", an optional sign, at least one digit. Its value saturates
    // just above MAX_EXPONENT, so any number of exponent digits reads without overflow
    // (leading zeros are valid JSON, so the digit count alone says nothing).
    let mut exp: i64 = 0;
    let mut out_of_range = false;
    if let Some(b'e' | b'E') = b.get(i) {
        decimal = true;
        i += 1;
        let exp_neg = match b.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let start = i;
        let mut e: u64 = 0;
        while let Some(&c) = b.get(i) {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            e = (e * 10 + u64::from(d)).min(MAX_EXPONENT as u64 + 1);
            i += 1;
        }
        if i == start {
            return Err(NotANumber);
        }
        out_of_range = e > MAX_EXPONENT as u64 && digits != 0;
        exp = if exp_neg { -(e as i64) } else { e as i64 };
    }

    match b.get(i) {
        None | Some(b' ' | b'\n' | b'\r' | b'\t' | b',' | b']') => {}
        _ => return Err(NotANumber),
    }

    let mantissa = if digits <= SHORT_DIGITS {
        Mantissa::Short(m)
    } else {
        // A long mantissa always starts with a nonzero digit: either the integer part
        // does, or it is "0" and the fraction's leading zeros were skipped.
        let int = if b[int_start] == b'0' {
            &b[int_end..int_end]
        } else {
            &b[int_start..int_end]
        };
        Mantissa::Long {
            int,
            frac: &b[frac_start..frac_end],
        }
    };
    // A text is far shorter than 2^62 bytes, and |exp| <= MAX_EXPONENT, so this cannot
    // overflow; saturating keeps it panic-free all the same.
    let exp = if digits == 0 {
        0
    } else {
        exp.saturating_sub(frac_len as i64)
    };
    Ok(Parsed {
        number: Number {
            neg,
            mantissa,
            exp,
            digits,
        },
        decimal,
        out_of_range,
        end: i,
    })
}

/// Reads a run of digits from `i`, folding the first [`SHORT_DIGITS`] significant ones
/// into `m` and counting all of them in `digits`; returns the index after the run.
#[inline(always)]
fn take_digits(b: &[u8], mut i: usize, m: &mut u64, digits: &mut u64) -> usize {
    while let Some(&c) = b.get(i) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        if *digits < SHORT_DIGITS {
            *m = *m * 10 + u64::from(d);
        }
        *digits += 1;
        i += 1;
    }
    i
}
