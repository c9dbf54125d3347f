//! The three services sumsvc depends on, the error that says one of them failed, and
//! the backoff every reconnect loop uses.

use std::fmt;
use std::future::Future;
use std::time::Duration;

/// A service sumsvc depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dependency {
    Postgres,
    RabbitMq,
    Redis,
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dependency::Postgres => "PostgreSQL",
            Dependency::RabbitMq => "RabbitMQ",
            Dependency::Redis => "Redis",
        })
    }
}

/// A dependency did not answer or failed; the API turns it into 503 with `Retry-After`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{dependency} is unavailable: {cause}")]
pub struct Unavailable {
    pub dependency: Dependency,
    pub cause: String,
}

impl Unavailable {
    pub fn new(dependency: Dependency, cause: impl fmt::Display) -> Self {
        Self {
            dependency,
            cause: cause.to_string(),
        }
    }

    /// For an error whose `Display` hides its cause: the whole chain, joined.
    pub(crate) fn from_chain(
        dependency: Dependency,
        err: &(dyn std::error::Error + 'static),
    ) -> Self {
        let mut cause = err.to_string();
        let mut source = err.source();
        while let Some(s) = source {
            let text = s.to_string();
            if !cause.contains(&text) {
                cause.push_str(": ");
                cause.push_str(&text);
            }
            source = s.source();
        }
        Self { dependency, cause }
    }

    pub(crate) fn timed_out(dependency: Dependency, after: Duration) -> Self {
        Self::new(dependency, format!("no answer within {after:?}"))
    }
}

/// Runs one operation on `dependency`, failing with [`Unavailable`] once `limit` has passed.
pub async fn within<T>(
    dependency: Dependency,
    limit: Duration,
    op: impl Future<Output = Result<T, Unavailable>>,
) -> Result<T, Unavailable> {
    tokio::time::timeout(limit, op)
        .await
        .unwrap_or_else(|_| Err(Unavailable::timed_out(dependency, limit)))
}

/// Exponential backoff with jitter between reconnect attempts: 100 ms doubling to 1 s.
///
/// The cap is what keeps the promise that a route is back within about 2 s of its
/// dependency's return; one refused connection a second per link costs nothing.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(1);

    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The delay before the next attempt; each call doubles the one after.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        // Up to 25% jitter so processes cut off together do not reconnect in lockstep.
        base + base.mul_f64(fastrand::f64() * 0.25)
    }

    /// Back to the first delay after a connection that worked.
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}
