//! A byte budget: memory that many requests draw from at once, each holding its share
//! until it drops it. The API's request bodies (`limits.body_budget_bytes`) and the
//! publisher's queue of tasks (`rabbitmq.publish_backlog_bytes`) each have one, so that
//! a burst of large requests is refused with a 503 before it exhausts memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A budget of `limit` bytes; cheap to clone, every clone draws from the same budget.
#[derive(Clone, Debug)]
pub struct ByteBudget(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    limit: usize,
    held: AtomicUsize,
}

impl ByteBudget {
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(Inner {
            limit,
            held: AtomicUsize::new(0),
        }))
    }

    /// The most bytes held at once.
    pub fn limit(&self) -> usize {
        self.0.limit
    }

    /// The bytes held now.
    pub fn held(&self) -> usize {
        self.0.held.load(Ordering::Acquire)
    }

    /// A share of no bytes, to grow as bytes arrive.
    pub fn share(&self) -> Share {
        Share {
            budget: self.clone(),
            bytes: 0,
        }
    }

    /// A share of `n` bytes, unless that would overrun the budget.
    pub fn take(&self, n: usize) -> Option<Share> {
        let mut share = self.share();
        share.grow(n).then_some(share)
    }
}

/// Bytes taken from a [`ByteBudget`], given back when dropped.
#[derive(Debug)]
pub struct Share {
    budget: ByteBudget,
    bytes: usize,
}

impl Share {
    /// Takes `n` more bytes, unless that would overrun the budget; a refusal takes
    /// nothing, so what is held never exceeds the limit.
    pub fn grow(&mut self, n: usize) -> bool {
        let limit = self.budget.0.limit;
        let taken = self
            .budget
            .0
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|&total| total <= limit)
            })
            .is_ok();
        if taken {
            self.bytes += n;
        }
        taken
    }

    /// The bytes this share holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.budget.0.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_given_back_on_drop() {
        let budget = ByteBudget::new(100);
        let (mut a, mut b) = (budget.share(), budget.share());
        assert!(a.grow(60));
        assert!(!b.grow(41), "60 + 41 is over 100");
        assert!(b.grow(40));
        assert!(!a.grow(1));
        drop(b);
        assert!(a.grow(40));
        assert_eq!(budget.held(), 100);
        drop(a);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_share_too_large_is_refused_whole_and_takes_nothing() {
        let budget = ByteBudget::new(10);
        let held = budget.take(8).unwrap();
        assert!(budget.take(3).is_none());
        assert_eq!(budget.held(), 8);
        assert_eq!(held.bytes(), 8);
        assert!(budget.take(2).is_some());
    }
}
