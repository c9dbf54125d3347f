//! Removing what is kept past its time: idempotency keys older than
//! `tasks.idempotency_ttl`, and sessions older than `tasks.result_ttl` plus
//! `tasks.session_retention`. `serve` runs a pass every `tasks.purge_every`; `sumsvc
//! purge` runs one when asked (from cron, say) and prints what it removed. Every statement
//! deletes a bounded batch, oldest first, through an index on the creation time, so a
//! pass never holds many rows locked at once.

use std::fmt;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::idempotency::IdempotencyKeys;
use super::Sessions;
use crate::config::{format_duration, TasksConfig};
use crate::dependency::{Dependency, OutageLog, Unavailable};

/// What one pass removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub idempotency_keys: u64,
    pub sessions: u64,
    /// What was kept how long, for the report.
    pub retention: Retention,
}

impl Purged {
    fn nothing(&self) -> bool {
        self.idempotency_keys == 0 && self.sessions == 0
    }
}

impl fmt::Display for Purged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = |n: u64| if n == 1 { "" } else { "s" };
        write!(
            f,
            "removed {} idempotency key{} older than {} (tasks.idempotency_ttl) and {} \
             session{} older than {} (tasks.result_ttl + tasks.session_retention)",
            self.idempotency_keys,
            s(self.idempotency_keys),
            format_duration(self.retention.idempotency_keys),
            self.sessions,
            s(self.sessions),
            format_duration(self.retention.sessions),
        )
    }
}

/// How long each kind of row is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// `tasks.idempotency_ttl`.
    pub idempotency_keys: Duration,
    /// `tasks.result_ttl` plus `tasks.session_retention`.
    pub sessions: Duration,
}

impl Retention {
    pub fn of(tasks: &TasksConfig) -> Self {
        Self {
            idempotency_keys: tasks.idempotency_ttl,
            sessions: tasks.result_ttl + tasks.session_retention,
        }
    }
}

/// Runs passes.
#[derive(Clone)]
pub struct Purger {
    idempotency: IdempotencyKeys,
    sessions: Sessions,
    retention: Retention,
}

impl Purger {
    pub fn new(idempotency: IdempotencyKeys, sessions: Sessions, retention: Retention) -> Self {
        Self {
            idempotency,
            sessions,
            retention,
        }
    }

    /// One pass.
    pub async fn pass(&self) -> Result<Purged, Unavailable> {
        Ok(Purged {
            idempotency_keys: self.idempotency.purge().await?,
            sessions: self.sessions.purge(self.retention.sessions).await?,
            retention: self.retention,
        })
    }

    /// Runs a pass every `every` until `stop`; a pass PostgreSQL cannot answer is tried
    /// again at the next.
    pub async fn every(self, every: Duration, stop: CancellationToken) {
        let mut outages = OutageLog::new("purge");
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match self.pass().await {
                Ok(purged) => {
                    outages.recovered(Dependency::Postgres);
                    if !purged.nothing() {
                        tracing::info!("{purged}");
                    }
                }
                Err(e) => outages.failed(Dependency::Postgres, &e),
            }
        }
    }
}
