//! What one key uses of one serve: its request budget (`auth.rate`, `auth.burst`) and
//! its waiting sync requests (`auth.max_sync_waiters`), counted by the serve for
//! itself. The fleet's counts in Redis ([`super::shared`]) are the ones that apply;
//! these apply while Redis does not answer, so that a key then gets its limits from
//! each serve rather than a 503 for every request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::key_limits::Budget;

/// One key's use of this serve.
#[derive(Debug)]
pub struct Usage {
    bucket: Mutex<Bucket>,
    waiting: AtomicUsize,
}

impl Usage {
    /// A key not used yet: a full budget and nothing waiting.
    pub fn new(burst: usize) -> Self {
        Self {
            bucket: Mutex::new(Bucket::full(burst, Instant::now())),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Spends one request of the budget, unless it is spent; the budget after it.
    /// Spends `cost` requests if `needed` are left.
    pub fn spend(&self, rate: usize, burst: usize, cost: usize, needed: usize) -> Budget {
        let mut bucket = self.bucket.lock().expect("lock");
        let (cost, needed) = (cost as f64, needed as f64);
        bucket.take(Instant::now(), rate as f64, burst as f64, cost, needed)
    }

    /// Counts one more waiting sync request, unless `max` are waiting already; the
    /// slot counts until it is dropped.
    pub fn start_waiting(self: &Arc<Self>, max: usize) -> Option<LocalSlot> {
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(LocalSlot(self.clone()))
    }
}

/// One waiting sync request of a key, counted by this serve; dropping it ends the count.
#[derive(Debug)]
pub struct LocalSlot(Arc<Usage>);

impl Drop for LocalSlot {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A token bucket: `burst` requests at once, refilled at `rate` a second.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: usize, now: Instant) -> Self {
        Self {
            tokens: burst as f64,
            at: now,
        }
    }

    /// Takes `cost` tokens if `needed` are there (the bucket may go into debt); a
    /// refused request takes none, so a client that retries too early does not push its
    /// own recovery back. The budget after it.
    fn take(&mut self, now: Instant, rate: f64, burst: f64, cost: f64, needed: f64) -> Budget {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(burst);
        self.at = now;
        let allowed = self.tokens >= needed;
        if allowed {
            self.tokens -= cost;
        }
        Budget {
            allowed,
            retry_after: match allowed {
                true => Duration::ZERO,
                false => Duration::from_secs_f64((needed - self.tokens) / rate),
            },
            remaining: self.tokens.max(0.0).floor() as u64,
            full_in: Duration::from_secs_f64((burst - self.tokens) / rate),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_one_request_per_refill() {
        let start = Instant::now();
        let mut bucket = Bucket::full(3, start);
        for left in [2, 1, 0] {
            let budget = bucket.take(start, 2.0, 3.0, 1.0, 1.0);
            assert!(budget.allowed);
            assert_eq!(budget.remaining, left);
        }
        let refused = bucket.take(start, 2.0, 3.0, 1.0, 1.0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        assert_eq!(refused.full_in, Duration::from_millis(1500));
        // A refused request took nothing: half a second later there is a token.
        let later = start + Duration::from_millis(500);
        assert!(bucket.take(later, 2.0, 3.0, 1.0, 1.0).allowed);
        assert!(!bucket.take(later, 2.0, 3.0, 1.0, 1.0).allowed);
    }

    #[test]
    fn a_bucket_refills_no_further_than_its_burst() {
        let start = Instant::now();
        let mut bucket = Bucket::full(2, start);
        let much_later = start + Duration::from_secs(3600);
        for _ in 0..2 {
            assert!(bucket.take(much_later, 100.0, 2.0, 1.0, 1.0).allowed);
        }
        assert!(!bucket.take(much_later, 100.0, 2.0, 1.0, 1.0).allowed);
    }

    #[test]
    fn waiting_slots_stop_at_the_maximum_and_free_when_dropped() {
        let usage = Arc::new(Usage::new(1));
        let first = usage.start_waiting(2).unwrap();
        let _second = usage.start_waiting(2).unwrap();
        assert!(usage.start_waiting(2).is_none());
        drop(first);
        assert!(usage.start_waiting(2).is_some());
    }
}
