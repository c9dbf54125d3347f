//! The examples the OpenAPI document gives for parameters that several routes take.

use super::body::Numbers;

pub fn session() -> i64 {
    5813027361994815
}

pub fn prefer() -> Option<String> {
    Some("wait=5".into())
}

/// The default: Swagger UI fills examples in, and "Try it out" should answer as a
/// client that asks for nothing gets.
pub fn numbers() -> Option<Numbers> {
    Some(Numbers::Number)
}
