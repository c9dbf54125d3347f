//! The `Prefer` header (RFC 7240): how long a request may wait for its result.

use std::time::Duration;

/// Reads `wait=N` (seconds) from a `Prefer` header; other preferences are ignored.
pub fn wait_preference(prefer: Option<&str>) -> Option<Duration> {
    prefer?
        .split([',', ';'])
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("wait"))
        .and_then(|(_, v)| v.trim().trim_matches('"').parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_wait_is_read_in_seconds() {
        assert_eq!(
            wait_preference(Some("wait=5")),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            wait_preference(Some("respond-async, wait=2")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(wait_preference(Some("return=minimal")), None);
        assert_eq!(wait_preference(None), None);
    }
}
