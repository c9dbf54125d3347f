//! Outcomes Redis has not taken yet: held unacked, retried with backoff, and logged as
//! every outage is ([`OutageLog`]). Generic over what is held, so its timing is tested
//! without a broker.

use std::time::{Duration, Instant};

use crate::dependency::{Backoff, Dependency, OutageLog};

/// What a consumer holds because Redis did not store it, and when to try again.
pub struct Unstored<T> {
    items: Vec<T>,
    backoff: Backoff,
    retry_at: Option<Instant>,
    cause: String,
    outages: OutageLog,
}

impl<T> Unstored<T> {
    /// Nothing held.
    pub fn new() -> Self {
        Self {
            items: Vec::new(),
            backoff: Backoff::new(),
            retry_at: None,
            cause: String::new(),
            outages: OutageLog::new("results"),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Why the last attempt failed.
    pub fn cause(&self) -> &str {
        &self.cause
    }

    /// Time left before the next retry; None when nothing is held.
    pub fn until_retry(&self) -> Option<Duration> {
        self.retry_at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Everything held, once its retry is due; nothing before.
    pub fn take_if_due(&mut self) -> Vec<T> {
        match self.until_retry() {
            Some(left) if left.is_zero() => {
                self.retry_at = None;
                std::mem::take(&mut self.items)
            }
            _ => Vec::new(),
        }
    }

    /// Holds `items` that failed to be stored because of `cause`.
    pub fn hold(&mut self, items: Vec<T>, cause: String) {
        self.items.extend(items);
        let held = self.items.len();
        self.outages.failed(
            Dependency::Redis,
            &format_args!("{cause}; {held} tasks held unacked"),
        );
        self.cause = cause;
        // New refusals join the next retry; they must not push it back for the rest.
        if self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + self.backoff.next_delay());
        }
    }

    /// A store went through: once nothing is held, the next failure starts afresh.
    pub fn stored(&mut self) {
        if self.is_empty() && self.outages.recovered(Dependency::Redis) {
            self.backoff.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_until_due(unstored: &Unstored<u32>) {
        std::thread::sleep(unstored.until_retry().unwrap());
    }

    #[test]
    fn nothing_is_retried_before_its_time() {
        let mut unstored = Unstored::new();
        assert_eq!(unstored.until_retry(), None);
        unstored.hold(vec![1, 2], "OOM".into());
        assert!(unstored.until_retry().unwrap() > Duration::ZERO);
        assert!(unstored.take_if_due().is_empty());
        assert_eq!(unstored.len(), 2);
        wait_until_due(&unstored);
        assert_eq!(unstored.take_if_due(), [1, 2]);
        assert!(unstored.is_empty());
    }

    #[test]
    fn new_refusals_join_the_next_retry_without_pushing_it_back() {
        let mut unstored = Unstored::new();
        unstored.hold(vec![1], "OOM".into());
        let first = unstored.until_retry().unwrap();
        std::thread::sleep(first / 2);
        unstored.hold(vec![2], "OOM again".into());
        assert!(unstored.until_retry().unwrap() <= first / 2 + Duration::from_millis(5));
        assert_eq!(unstored.cause(), "OOM again");
        wait_until_due(&unstored);
        assert_eq!(unstored.take_if_due(), [1, 2]);
    }

    #[test]
    fn retries_back_off_while_failures_last_and_start_afresh_after_a_store() {
        let mut unstored = Unstored::new();
        let mut delays = Vec::new();
        for _ in 0..3 {
            unstored.hold(vec![1], "down".into());
            delays.push(unstored.until_retry().unwrap());
            wait_until_due(&unstored);
            unstored.take_if_due();
        }
        // Jitter is at most 25%, so each delay is longer than the last.
        assert!(delays[0] < delays[1] && delays[1] < delays[2], "{delays:?}");
        unstored.stored();
        unstored.hold(vec![1], "down".into());
        assert!(unstored.until_retry().unwrap() < delays[1], "{delays:?}");
    }
}
