//! The behaviour of `sumsvc::sum` on named examples: the semantics, the output format
//! rule, validation, the digit limit and the byte limit.

use std::time::{Duration, Instant};

use sumsvc::sum::{check, sum_json, ArgsError, Checked, DigitsFound, Limits, MAX_EXPONENT};

const DEFAULT_DIGITS: usize = 4300;

/// The sum with the default limits, after checking that `check` accepts it.
fn sum(args: &str) -> String {
    let checked = check(args, &service_limits());
    assert!(checked.is_ok(), "check refused {args}: {checked:?}");
    sum_json(args, DEFAULT_DIGITS).unwrap_or_else(|e| panic!("sum of {args} failed: {e}"))
}

/// The refusal of `args` by `check` with `limits`, after checking that `sum_json` refuses
/// it the same way when the error is not about the item count.
fn refusal(args: &str, limits: &Limits) -> ArgsError {
    let err = check(args, limits).expect_err("check should refuse");
    if !matches!(err, ArgsError::TooManyItems { .. }) {
        assert_eq!(sum_json(args, limits.max_result_digits), Err(err.clone()));
    }
    err
}

fn limits_with_digits(max_result_digits: usize) -> Limits {
    Limits {
        max_result_digits,
        ..service_limits()
    }
}

// --- semantics -------------------------------------------------------------------------

#[test]
fn point_one_plus_point_two_is_exactly_point_three() {
    assert_eq!(sum("[0.1, 0.2]"), "0.3");
}

#[test]
fn one_survives_between_two_large_opposite_numbers() {
    assert_eq!(sum("[1e16, 1.0, -1e16]"), "1.0");
}

#[test]
fn integers_beyond_two_to_the_fifty_three_are_summed_exactly() {
    assert_eq!(sum("[9007199254740993, 1]"), "9007199254740994");
}

#[test]
fn sums_beyond_the_double_range_are_exact() {
    assert_eq!(sum("[1e308, 1e308]"), "2e308");
}

#[test]
fn negative_zero_sums_to_a_float_zero_without_a_sign() {
    assert_eq!(sum("[-0.0]"), "0.0");
}

#[test]
fn an_empty_list_sums_to_integer_zero() {
    assert_eq!(sum("[]"), "0");
}

#[test]
fn zero_alone_sums_to_integer_zero() {
    assert_eq!(sum("[0]"), "0");
}

#[test]
fn one_float_argument_makes_the_result_a_float() {
    assert_eq!(sum("[1, 2.0]"), "3.0");
    assert_eq!(sum("[1, 2e0]"), "3.0");
}

#[test]
fn integers_of_any_size_are_summed_exactly() {
    let big = "9".repeat(100);
    let mut want = String::from("1");
    want.push_str(&"0".repeat(100));
    assert_eq!(sum(&format!("[{big}, 1]")), want);
    assert_eq!(sum(&format!("[-{big}, {big}]")), "0");
}

#[test]
fn decimals_of_any_length_are_summed_exactly() {
    let args =
        "[0.1234567890123456789012345678901234567890, 0.0000000000000000000000000000000000000001]";
    assert_eq!(sum(args), "0.1234567890123456789012345678901234567891");
}

#[test]
fn numbers_far_apart_are_summed_exactly() {
    let mut want = String::from("1.");
    want.push_str(&"0".repeat(599));
    want.push_str("1e300");
    assert_eq!(sum("[1e300, 1e-300]"), want);
}

#[test]
fn opposite_numbers_cancel_to_zero() {
    assert_eq!(sum("[1e5000, -1e5000]"), "0.0");
    assert_eq!(sum("[0.1, -0.1]"), "0.0");
    assert_eq!(sum("[7, -7]"), "0");
}

#[test]
fn negative_sums_keep_their_sign() {
    assert_eq!(sum("[-5, 2]"), "-3");
    assert_eq!(sum("[-0.5, 0.25]"), "-0.25");
}

#[test]
fn zero_with_any_exponent_is_zero() {
    assert_eq!(sum("[0e99999999999999999999999]"), "0.0");
    assert_eq!(sum("[0.000e-5, 0]"), "0.0");
}

// --- output format ---------------------------------------------------------------------

#[test]
fn the_format_writes_integer_sums_in_plain_digits() {
    assert_eq!(sum("[100]"), "100");
    let mut want = String::from("1");
    want.push_str(&"0".repeat(40));
    assert_eq!(sum(&format!("[{want}]")), want);
}

#[test]
fn the_format_drops_needless_zeros() {
    assert_eq!(sum("[1.50]"), "1.5");
    assert_eq!(sum("[0.10, 0.20]"), "0.3");
    assert_eq!(sum("[1.000e2]"), "100.0");
}

#[test]
fn the_format_writes_plain_digits_from_the_millionths_to_the_1e20_place() {
    assert_eq!(sum("[1e20]"), "100000000000000000000.0");
    assert_eq!(sum("[1.5e20]"), "150000000000000000000.0");
    assert_eq!(sum("[0.000001]"), "0.000001");
    assert_eq!(sum("[-1.25e-6]"), "-0.00000125");
    assert_eq!(sum("[123.45]"), "123.45");
}

#[test]
fn the_format_switches_to_an_exponent_outside_that_range() {
    assert_eq!(sum("[1e21]"), "1e21");
    assert_eq!(sum("[1e-7]"), "1e-7");
    assert_eq!(sum("[1.5e-7]"), "1.5e-7");
    assert_eq!(sum("[-1.2345678901234567e21]"), "-1.2345678901234567e21");
    assert_eq!(sum("[1E+400, 2e400]"), "3e400");
}

#[test]
fn the_format_never_rounds() {
    let digits = "1".repeat(50);
    let args = format!("[{}.{}e30]", &digits[..1], &digits[1..]);
    assert_eq!(sum(&args), format!("1.{}e30", &digits[1..]));
}

// --- validation ------------------------------------------------------------------------

#[test]
fn a_value_that_is_not_an_array_is_refused() {
    for args in ["{}", "1", "\"[1]\"", "null", "", "  "] {
        assert_eq!(
            refusal(args, &service_limits()),
            ArgsError::NotAnArray,
            "{args:?}"
        );
    }
}

#[test]
fn a_non_number_is_refused_naming_its_index() {
    let cases = [
        ("[\"1\"]", 0),
        ("[1, \"2\", 3]", 1),
        ("[1, 2, null]", 2),
        ("[true]", 0),
        ("[1, [2]]", 1),
        ("[{\"a\": 1}]", 0),
        ("[1, NaN]", 1),
        ("[-Infinity]", 0),
        ("[01]", 0),
        ("[1.]", 0),
        ("[.5]", 0),
        ("[+1]", 0),
        ("[1e]", 0),
        ("[1x]", 0),
    ];
    for (args, index) in cases {
        assert_eq!(
            refusal(args, &service_limits()),
            ArgsError::NotANumber { index },
            "{args}"
        );
    }
}

#[test]
fn the_refusal_of_a_non_number_says_which_element() {
    let err = refusal("[1, \"2\"]", &service_limits());
    assert_eq!(
        err.to_string(),
        "`args[1]` is not a JSON number (elements count from 0): `args` must be an array of \
         numbers only"
    );
}

#[test]
fn broken_json_is_refused_with_its_offset() {
    for (args, offset) in [
        ("[1 2]", 3),
        ("[1,]", 3),
        ("[1", 2),
        ("[1] 2", 4),
        ("[,1]", 1),
    ] {
        assert_eq!(
            refusal(args, &service_limits()),
            ArgsError::InvalidJson { offset },
            "{args}"
        );
    }
}

#[test]
fn whitespace_around_and_between_numbers_is_allowed() {
    assert_eq!(sum(" \n[ 1 ,\t2\r\n, 3 ] \n"), "6");
    assert_eq!(sum("[ ]"), "0");
}

#[test]
fn more_items_than_the_limit_are_refused_without_reading_further() {
    let limits = Limits {
        max_items: 3,
        ..service_limits()
    };
    assert_eq!(
        refusal("[1, 2, 3, 4, \"the rest is not read", &limits),
        ArgsError::TooManyItems { max: 3 }
    );
    assert!(check("[1, 2, 3]", &limits).is_ok());
}

#[test]
fn check_reports_the_count_and_the_result_type() {
    let checked = check("[1, 2.5, -3]", &service_limits()).unwrap();
    assert_eq!(
        checked,
        Checked {
            count: 3,
            digits_at_most: 3,
            decimal: true
        }
    );
}

#[test]
fn exponents_beyond_the_limit_are_refused_without_panicking() {
    let cases = [
        ("[1e99999999999999999999]", 0),
        ("[1, -1e-9223372036854775808]", 1),
        ("[1e1000000000000000001]", 0),
    ];
    for (args, index) in cases {
        assert_eq!(
            refusal(args, &service_limits()),
            ArgsError::ExponentOutOfRange { index },
            "{args}"
        );
    }
    let largest = format!("[1e{MAX_EXPONENT}]");
    assert_eq!(sum(&largest), format!("1e{MAX_EXPONENT}"));
    assert_eq!(sum("[1e-0000000000000000000000000000007]"), "1e-7");
}

// --- the digit limit -------------------------------------------------------------------

#[test]
fn numbers_spanning_two_billion_places_are_refused_in_microseconds() {
    let args = "[1e1000000000, 1e-1000000000]";
    let start = Instant::now();
    let err = check(args, &service_limits()).unwrap_err();
    let took = start.elapsed();
    assert_eq!(
        err,
        ArgsError::TooManyDigits {
            max: DEFAULT_DIGITS,
            found: DigitsFound::Span(2_000_000_001),
        }
    );
    // Microseconds in fact; the margin is for a busy machine.
    assert!(took < Duration::from_millis(20), "took {took:?}");
    assert_eq!(sum_json(args, DEFAULT_DIGITS), Err(err));
}

#[test]
fn the_digit_refusal_names_the_limit_and_what_was_found() {
    let err = refusal("[1e1000000000, 1e-1000000000]", &service_limits());
    assert_eq!(
        err.to_string(),
        "the numbers spread their nonzero digits over 2000000001 decimal places, too many to \
         sum exactly within the limit of 4300 significant digits"
    );
    let err = refusal("[1e20, 1]", &limits_with_digits(10));
    assert_eq!(
        err.to_string(),
        "the exact sum has 21 significant digits, more than the limit of 10"
    );
}

#[test]
fn a_result_with_more_digits_than_the_limit_is_refused() {
    let digits = "7".repeat(DEFAULT_DIGITS + 1);
    assert_eq!(
        refusal(&format!("[{digits}]"), &service_limits()),
        ArgsError::TooManyDigits {
            max: DEFAULT_DIGITS,
            found: DigitsFound::Exact(DEFAULT_DIGITS as u64 + 1),
        }
    );
    let digits = "7".repeat(DEFAULT_DIGITS);
    assert_eq!(sum(&format!("[{digits}]")), digits);
}

#[test]
fn a_sum_that_carries_past_the_limit_is_refused() {
    let nines = "9".repeat(10);
    assert_eq!(
        refusal(&format!("[{nines}, 2]"), &limits_with_digits(10)),
        ArgsError::TooManyDigits {
            max: 10,
            found: DigitsFound::Exact(11),
        }
    );
    assert_eq!(
        sum_json(&format!("[{nines}, 2]"), 11).unwrap(),
        "10000000001"
    );
    // Ten billion has one significant digit.
    assert!(check(&format!("[{nines}, 1]"), &limits_with_digits(10)).is_ok());
    assert_eq!(
        sum_json(&format!("[{nines}, 1]"), 10).unwrap(),
        "10000000000"
    );
}

#[test]
fn numbers_that_cancel_are_accepted_although_they_span_more_than_the_limit() {
    let limits = limits_with_digits(5);
    assert_eq!(
        check("[1e20, 1, -1e20]", &limits).unwrap().digits_at_most,
        1
    );
    assert_eq!(sum_json("[1e20, 1, -1e20]", 5).unwrap(), "1.0");
    let wide = "[1e900000, 1e-90000, -1e900000]";
    assert_eq!(check(wide, &service_limits()).unwrap().digits_at_most, 1);
    assert_eq!(sum_json(wide, DEFAULT_DIGITS).unwrap(), "1e-90000");
}

#[test]
fn numbers_beyond_the_exact_budget_are_refused_even_if_they_would_cancel() {
    let args = "[1e5000000, 1, -1e5000000]";
    assert_eq!(
        refusal(args, &service_limits()),
        ArgsError::TooManyDigits {
            max: DEFAULT_DIGITS,
            found: DigitsFound::Span(5_000_001),
        }
    );
}

#[test]
fn trailing_zeros_do_not_count_as_significant_digits() {
    let mut zeros = String::from("1");
    zeros.push_str(&"0".repeat(DEFAULT_DIGITS * 2));
    assert_eq!(
        check(&format!("[{zeros}]"), &service_limits())
            .unwrap()
            .digits_at_most,
        1
    );
    assert_eq!(sum(&format!("[{zeros}]")), zeros);
    let long_point = format!("[1.{}]", "0".repeat(DEFAULT_DIGITS * 2));
    assert_eq!(sum(&long_point), "1.0");
}

#[test]
fn numbers_that_cancel_within_the_exact_budget_are_computed() {
    let args = "[1e999998, 1, -1e999998]";
    assert_eq!(check(args, &service_limits()).unwrap().digits_at_most, 1);
    assert_eq!(sum_json(args, DEFAULT_DIGITS).unwrap(), "1.0");
}

#[test]
fn numbers_one_place_beyond_the_exact_budget_are_refused() {
    let args = "[1e999999, 1, -1e999999]";
    assert_eq!(
        refusal(args, &service_limits()),
        ArgsError::TooManyDigits {
            max: DEFAULT_DIGITS,
            found: DigitsFound::Span(1_000_000),
        }
    );
}

#[test]
fn widely_spread_numbers_are_decided_in_linear_time() {
    // Each number nine places below the last: the exact sum has to be computed, and it
    // grows the columns downwards once per number.
    let numbers: Vec<String> = (0..100_000).map(|i| format!("1e-{}", i * 9)).collect();
    let args = format!("[{}]", numbers.join(","));
    let start = Instant::now();
    let err = refusal(&args, &service_limits());
    assert_eq!(
        err,
        ArgsError::TooManyDigits {
            max: DEFAULT_DIGITS,
            found: DigitsFound::Exact(899_992),
        }
    );
    // Tens of milliseconds in a debug build; quadratic growth would take minutes.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
}

/// The limits the service applies by default.
#[test]
fn a_result_longer_than_the_byte_limit_is_refused_although_its_digits_fit() {
    let million_zeros = format!("[1{}]", "0".repeat(1_000_000));
    let err = check(&million_zeros, &service_limits()).unwrap_err();
    assert_eq!(
        err,
        ArgsError::ResultTooLong {
            max: 65536,
            bytes: 1_000_001
        }
    );
    assert_eq!(
        err.to_string(),
        "the sum would be written in 1000001 bytes, more than the limit of 65536 bytes"
    );
    // That is the length the worker would write; it never sees such a task.
    let written = sum_json(&million_zeros, DEFAULT_DIGITS).map(|text| text.len());
    assert_eq!(written, Ok(1_000_001));
}

#[test]
fn a_result_exactly_at_the_byte_limit_is_accepted_and_one_byte_more_is_refused() {
    let limits = Limits {
        max_result_bytes: 10,
        ..service_limits()
    };
    let cases = [
        ("[1000000000]", 10),
        ("[-999999999]", 10),
        ("[9999999998, 1]", 10),
        ("[9999999999, 1]", 11),
        ("[-9999999999, 1]", 11),
        ("[0.12345678]", 10),
        ("[0.123456789]", 11),
        ("[-0.1234567]", 10),
        ("[1.23456e-7]", 10),
        ("[1.234567e-7]", 11),
        ("[1e21, 2e21]", 4),
        ("[100000000.0]", 11),
        ("[99999999.5, 0.5]", 11),
        ("[99999999.5, -0.5]", 10),
    ];
    for (args, bytes) in cases {
        let written = sum_json(args, DEFAULT_DIGITS).unwrap();
        assert_eq!(written.len() as u64, bytes, "{args} gives {written}");
        let checked = check(args, &limits);
        if bytes <= 10 {
            assert!(checked.is_ok(), "{args}: {checked:?}");
        } else {
            assert_eq!(
                checked,
                Err(ArgsError::ResultTooLong { max: 10, bytes }),
                "{args}"
            );
        }
    }
}

fn service_limits() -> Limits {
    sumsvc::Config::default().limits.sum_limits()
}
