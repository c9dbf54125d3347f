//! The three services sumsvc depends on, the error that says one of them failed, and
//! the backoff and outage log every reconnect loop uses.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::episode::Episode;

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

impl Dependency {
    /// The configuration key of its URL.
    pub fn url_key(self) -> &'static str {
        match self {
            Dependency::Postgres => "postgres.url",
            Dependency::RabbitMq => "rabbitmq.url",
            Dependency::Redis => "redis.url",
        }
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

    /// For an error whose `Display` hides its cause: the whole chain, joined, and what to
    /// do when it is a TLS failure.
    pub fn from_chain(dependency: Dependency, err: &(dyn std::error::Error + 'static)) -> Self {
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
        if let Some(advice) = crate::tls::advice(&dependency, dependency.url_key(), &cause) {
            cause = format!("{cause}; {advice}");
        }
        Self { dependency, cause }
    }

    pub fn timed_out(dependency: Dependency, after: Duration) -> Self {
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

/// Exponential backoff with jitter between reconnect attempts: 100 ms doubling to 500 ms.
///
/// The cap is what keeps the promise that a route is back within 2 s of its
/// dependency's return, with room for a slow handshake on a loaded host; two refused
/// connections a second per link cost nothing. [`OutageLog`] keeps the logs quiet.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_millis(500);

    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The delay before the next attempt; each call doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
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

/// The log of one link's outages: a warning when one starts, again every 30 s while it
/// lasts, and a line when it ends, rather than a warning for each attempt.
#[derive(Debug)]
pub struct OutageLog {
    link: &'static str,
    outage: Episode,
}

impl OutageLog {
    /// `link` names the connection in the logs, e.g. "publisher".
    pub fn new(link: &'static str) -> Self {
        Self {
            link,
            outage: Episode::default(),
        }
    }

    /// A connection failed, an attempt to make one did, or a request on it.
    pub fn failed(&mut self, dependency: Dependency, cause: &dyn fmt::Display) {
        match self.outage.happened() {
            Some(lasting) => {
                let down_for = format!("{}s", lasting.as_secs());
                tracing::warn!(link = self.link, %dependency, %cause, %down_for, "unavailable; retrying");
            }
            None => tracing::debug!(link = self.link, %dependency, %cause, "still unavailable"),
        }
    }

    /// The dependency works again (a connection was made, a write went through);
    /// true when that ends an outage.
    pub fn recovered(&mut self, dependency: Dependency) -> bool {
        let Some(lasted) = self.outage.ended() else {
            return false;
        };
        let down_for = format!("{:.1}s", lasted.as_secs_f64());
        tracing::info!(link = self.link, %dependency, %down_for, "available again");
        true
    }
}
