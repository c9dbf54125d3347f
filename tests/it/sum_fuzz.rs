//! Fuzzing the `args` scanner with property tests: arbitrary bytes and JSON-like text must
//! never panic, `check` and `sum_json` must agree, and the scanner must accept exactly the
//! JSON arrays of numbers, as serde_json judges JSON.

use proptest::prelude::*;
use proptest::test_runner::RngAlgorithm;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use sumsvc::sum::{check, sum_json, ArgsError, Limits};

/// What serde_json makes of `text`.
enum Json {
    Invalid,
    NotAnArray,
    /// A valid array; the index of its first element that is not a number, if any.
    Array(Option<usize>),
}

fn serde_view(text: &str) -> Json {
    if serde_json::from_str::<IgnoredAny>(text).is_err() {
        return Json::Invalid;
    }
    match serde_json::from_str::<Vec<&RawValue>>(text) {
        Err(_) => Json::NotAnArray,
        Ok(elements) => Json::Array(
            elements
                .iter()
                .position(|e| !matches!(e.get().as_bytes()[0], b'-' | b'0'..=b'9')),
        ),
    }
}

/// Runs both entry points on `text` and checks them against each other and serde_json.
fn consistent(text: &str) -> Result<(), TestCaseError> {
    let limits = Limits {
        max_items: usize::MAX,
        max_result_digits: 4300,
        max_result_bytes: usize::MAX,
    };
    let checked = check(text, &limits);
    let summed = sum_json(text, limits.max_result_digits);
    match &checked {
        Ok(_) => {
            let sum = summed.map_err(|e| TestCaseError::fail(format!("{text:?}: {e:?}")))?;
            prop_assert!(
                serde_json::from_str::<IgnoredAny>(&sum).is_ok(),
                "{:?}",
                sum
            );
        }
        Err(err) => prop_assert_eq!(&summed, &Err(err.clone()), "{:?}", text),
    }
    let structural = |r: &Result<_, ArgsError>| {
        matches!(
            r,
            Err(ArgsError::NotAnArray
                | ArgsError::NotANumber { .. }
                | ArgsError::InvalidJson { .. })
        )
    };
    match serde_view(text) {
        Json::Invalid => prop_assert!(structural(&checked), "{:?} gave {:?}", text, checked),
        Json::NotAnArray => prop_assert_eq!(checked, Err(ArgsError::NotAnArray), "{:?}", text),
        Json::Array(Some(index)) => {
            prop_assert_eq!(checked, Err(ArgsError::NotANumber { index }), "{:?}", text)
        }
        Json::Array(None) => prop_assert!(!structural(&checked), "{:?} gave {:?}", text, checked),
    }
    Ok(())
}

/// JSON-like fragments, so that generated text is often nearly valid.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "-?(0|[1-9][0-9]{0,25})(\\.[0-9]{1,25})?([eE][+-]?[0-9]{1,22})?",
        2 => prop_oneof![
            Just(","), Just("["), Just("]"), Just(" "), Just("\n"), Just("\t"), Just("\r"),
            Just("-"), Just("."), Just("e"), Just("E"), Just("+"), Just("0"), Just("00"),
            Just("null"), Just("true"), Just("\"1\""), Just("{}"), Just("{\"a\":1}"),
            Just("\u{a0}"), Just("\u{feff}"), Just("NaN"), Just("Infinity"), Just("[]"),
        ].prop_map(str::to_owned),
        1 => "[ -~]{0,3}",
    ]
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    }
}

/// Bytes, half of them from the JSON number and array alphabet.
fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        proptest::sample::select(b"0123456789-+.eE[], \t\n".to_vec())
    ]
}

proptest! {
    #![proptest_config(config(20_000))]

    #[test]
    fn arbitrary_bytes_never_panic_and_both_entry_points_agree(
        open in any::<bool>(),
        bytes in proptest::collection::vec(byte(), 0..64),
    ) {
        // Half the cases open an array, so that the bytes reach the number scanner.
        let text = String::from_utf8_lossy(&bytes);
        consistent(&if open { format!("[{text}") } else { text.into_owned() })?;
    }
}

proptest! {
    #![proptest_config(config(10_000))]

    #[test]
    fn json_like_text_is_accepted_exactly_when_it_is_an_array_of_numbers(
        open in proptest::bool::weighted(0.9),
        tokens in proptest::collection::vec(token(), 0..12),
    ) {
        let text = tokens.concat();
        consistent(&if open { format!("[{text}") } else { text })?;
    }

    #[test]
    fn arrays_with_broken_elements_are_refused_at_the_right_element(
        tokens in proptest::collection::vec(token(), 0..8),
    ) {
        consistent(&format!("[{}]", tokens.join(",")))?;
    }
}
