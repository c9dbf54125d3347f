//! What each key uses of the whole fleet: its checks go to Redis ([`KeyLimits`]), many in
//! one round trip, so that `auth.rate` and `auth.max_sync_waiters` hold across every
//! serve behind a load balancer rather than per serve.
//!
//! While Redis does not answer, a serve counts for itself again ([`super::usage`]): a
//! key then gets its limits from each serve, as before the fleet, rather than a 503 for
//! every request of every key. The switch is quick both ways: a check that fails sends
//! the next second's checks straight to the serve's own counts, then Redis is asked
//! again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::dependency::{within, Dependency, OutageLog, Unavailable};
use crate::store::key_limits::{Check, KeyLimits, Verdict};

/// Checks per pipeline at most.
const MAX_BATCH: usize = 1024;

/// How long after a failed check the serve counts for itself without asking Redis.
const FALLBACK_FOR: Duration = Duration::from_secs(1);

type Answer = oneshot::Sender<Result<Verdict, Unavailable>>;

/// The fleet's counts of every key, as this serve reaches them; cheap to clone.
#[derive(Clone)]
pub struct SharedLimits {
    queue: mpsc::Sender<(Check, Option<Answer>)>,
    state: Arc<Mutex<State>>,
    /// How long a check may take before the serve counts for itself.
    bound: Duration,
}

struct State {
    /// Until when checks go to the serve's own counts, after a failure.
    fallback_until: Option<Instant>,
    outages: OutageLog,
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedLimits")
    }
}

impl SharedLimits {
    /// Starts the task that sends checks to Redis; a check waits at most `bound`.
    pub fn start(limits: KeyLimits, bound: Duration) -> Self {
        let (queue, checks) = mpsc::channel(16 * MAX_BATCH);
        tokio::spawn(send(limits, checks));
        Self {
            queue,
            state: Arc::new(Mutex::new(State {
                fallback_until: None,
                outages: OutageLog::new("shared key limits"),
            })),
            bound,
        }
    }

    /// What the fleet's counts say of `check`; None while Redis does not answer, when
    /// the caller counts for itself.
    pub async fn check(&self, check: Check) -> Option<Verdict> {
        if self
            .state
            .lock()
            .expect("lock")
            .fallback_until
            .is_some_and(|until| Instant::now() < until)
        {
            return None;
        }
        let (answer, answered) = oneshot::channel();
        let asked = async {
            self.queue.try_send((check, Some(answer))).map_err(|_| {
                Unavailable::new(Dependency::Redis, "the limit checks queue is full")
            })?;
            answered
                .await
                .map_err(|_| Unavailable::new(Dependency::Redis, "the limit checks stopped"))?
        };
        let answer = within(Dependency::Redis, self.bound, asked).await;
        let mut state = self.state.lock().expect("lock");
        match answer {
            Ok(verdict) => {
                state.fallback_until = None;
                state.outages.recovered(Dependency::Redis);
                Some(verdict)
            }
            Err(e) => {
                state.outages.failed(
                    Dependency::Redis,
                    &format_args!("{e}; each serve counts each key's use for itself meanwhile"),
                );
                state.fallback_until = Some(Instant::now() + FALLBACK_FOR);
                None
            }
        }
    }

    /// Ends a waiting request's count, without waiting for Redis: a count that is not
    /// ended expires when the request would have ended at the latest.
    pub fn stop_waiting(&self, key: i64, waiter: Uuid) {
        let _ = self
            .queue
            .try_send((Check::StopWaiting { key, waiter }, None));
    }
}

/// Takes what is queued, runs it in one pipeline, answers, and again, until every
/// handle is gone.
async fn send(limits: KeyLimits, mut checks: mpsc::Receiver<(Check, Option<Answer>)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while checks.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // A caller that gave up needs no answer, and its check must not count.
        batch.retain(|(_, answer)| answer.as_ref().is_none_or(|a| !a.is_closed()));
        let asked: Vec<Check> = batch.iter().map(|(check, _)| check.clone()).collect();
        match limits.run(&asked).await {
            Ok(verdicts) => {
                for ((_, answer), verdict) in batch.drain(..).zip(verdicts) {
                    if let Some(answer) = answer {
                        let _ = answer.send(verdict);
                    }
                }
            }
            Err(e) => {
                for (_, answer) in batch.drain(..) {
                    if let Some(answer) = answer {
                        let _ = answer.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}
