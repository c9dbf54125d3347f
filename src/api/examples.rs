//! The examples the OpenAPI document gives for parameters that several routes take.

use super::body::Numbers;

pub fn session() -> i64 {
    5813027361994815
}

pub fn prefer() -> Option<String> {
    Some("wait=5".into())
}

pub fn numbers() -> Option<Numbers> {
    Some(Numbers::String)
}
