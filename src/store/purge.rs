//! Removing what is kept past its time: idempotency keys older than
//! `tasks.idempotency_ttl`. `serve` runs a pass every `tasks.purge_every`; `sumsvc purge`
//! runs one when asked (from cron, say) and prints what it removed. Every statement
//! deletes a bounded batch, oldest first, through an index on the creation time, so a
//! pass never holds many rows locked at once.

use std::fmt;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::idempotency::IdempotencyKeys;
use crate::config::format_duration;
use crate::dependency::{Dependency, OutageLog, Unavailable};

/// What one pass removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub idempotency_keys: u64,
    /// `tasks.idempotency_ttl`, for the report.
    pub idempotency_ttl: Duration,
}

impl fmt::Display for Purged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.idempotency_keys == 1 { "" } else { "s" };
        write!(
            f,
            "removed {} idempotency key{plural} older than {} (tasks.idempotency_ttl)",
            self.idempotency_keys,
            format_duration(self.idempotency_ttl)
        )
    }
}

/// Runs passes.
#[derive(Clone)]
pub struct Purger {
    idempotency: IdempotencyKeys,
    idempotency_ttl: Duration,
}

impl Purger {
    pub fn new(idempotency: IdempotencyKeys, idempotency_ttl: Duration) -> Self {
        Self {
            idempotency,
            idempotency_ttl,
        }
    }

    /// One pass.
    pub async fn pass(&self) -> Result<Purged, Unavailable> {
        Ok(Purged {
            idempotency_keys: self.idempotency.purge().await?,
            idempotency_ttl: self.idempotency_ttl,
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
                    if purged.idempotency_keys > 0 {
                        tracing::info!("{purged}");
                    }
                }
                Err(e) => outages.failed(Dependency::Postgres, &e),
            }
        }
    }
}
