//! `sumsvc work`: consumer threads that take tasks from RabbitMQ, sum them, store the
//! outcome in Redis and only then ack.
//!
//! - [`consumer`]: one connection's life. Each thread owns its connection and channel
//!   (amiquip channels are not `Sync` and a consumer borrows its channel), takes every
//!   delivery that has arrived (up to `worker.prefetch`), computes them, stores the
//!   outcomes in one Redis pipeline and acks each one Redis took.
//! - [`unstored`]: outcomes Redis has not taken, retried with backoff while the consumer
//!   goes on.
//! - [`compute`]: what one message becomes: an outcome to store, or a dead letter.
//! - [`listener`]: `GET /metrics` and `GET /healthz` at `worker.metrics_listen`.
//! - Supervision, here: a thread that loses RabbitMQ reconnects with backoff, for as
//!   long as it takes. A thread that panics, or whose broker refuses to let it consume
//!   (a queue declared with other arguments, say), is restarted with backoff too; when
//!   that happens [`MAX_FAILURES`] times within [`FAILURE_WINDOW`] the pool gives up
//!   and stops, so `work` exits non-zero and systemd or compose restarts it, as an OTP
//!   supervisor does when its restart intensity is exceeded.
//!
//! The threads share the caller's tokio runtime and one Redis pool. On shutdown each
//! cancels its consumer, finishes and acks every message it already holds, then closes;
//! what it could not store by `worker.drain_timeout` goes back to the queue.

mod compute;
mod consumer;
mod listener;
mod unstored;

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::broker::{AmqpTarget, Topology};
use crate::config::{Config, HttpConfig};
use crate::dependency::{Backoff, Dependency, OutageLog};
use crate::metrics::WorkMetrics;
use crate::store::Results;

use consumer::Ended;
pub use listener::{bind_metrics, MetricsServer};

/// Failures (panics, refusals) of one consumer within [`FAILURE_WINDOW`] that make the
/// pool give up.
pub const MAX_FAILURES: usize = 5;
/// See [`MAX_FAILURES`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// What every consumer thread shares.
struct Ctx {
    target: AmqpTarget,
    /// The broker node the first consumer connects to first.
    first_node: usize,
    topology: Topology,
    prefetch: u16,
    max_result_digits: usize,
    drain_timeout: Duration,
    results: Results,
    metrics: Arc<WorkMetrics>,
    runtime: tokio::runtime::Handle,
    /// Cancelled by the caller's shutdown, or by the pool when it gives up.
    stop: CancellationToken,
    /// Why the pool gave up, once it has.
    failure: Mutex<Option<String>>,
    failed: CancellationToken,
}

impl Ctx {
    fn give_up(&self, cause: String) {
        tracing::error!(%cause, "workers give up; stopping");
        self.failure.lock().expect("lock").get_or_insert(cause);
        self.failed.cancel();
        self.stop.cancel();
    }
}

/// The running consumer threads.
pub struct WorkerPool {
    threads: Vec<JoinHandle<()>>,
    ctx: Arc<Ctx>,
}

impl WorkerPool {
    /// Starts `worker.concurrency` consumer threads on the current tokio runtime; they
    /// stop after `shutdown` is cancelled and they have drained.
    pub fn start(config: &Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .context("the worker pool stores results on a tokio runtime")?;
        let target = AmqpTarget::new(&config.rabbitmq, &config.tls)?;
        let metrics = Arc::new(WorkMetrics::new(
            &(0..target.node_count())
                .map(|n| target.node_name(n))
                .collect::<Vec<_>>(),
        ));
        let ctx = Arc::new(Ctx {
            first_node: target.random_start(),
            target,
            topology: Topology::new(&config.rabbitmq),
            prefetch: config.worker.prefetch,
            max_result_digits: config.limits.max_result_digits,
            drain_timeout: config.worker.drain_timeout,
            results: Results::new(&config.redis, &config.tls, config.tasks.result_ttl)?,
            metrics,
            runtime,
            stop: shutdown.child_token(),
            failure: Mutex::new(None),
            failed: CancellationToken::new(),
        });
        let threads = (0..config.worker_threads())
            .map(|n| {
                let ctx = ctx.clone();
                thread::Builder::new()
                    .name(format!("worker-{n}"))
                    .spawn(move || {
                        // Each consumer starts on a node of its own (the pool's random
                        // start, then one apart), so a fleet spreads over the cluster.
                        let mut node = ctx.first_node + n;
                        let run = |backoff: &mut Backoff, outages: &mut OutageLog| {
                            consumer::run(&ctx, &mut node, backoff, outages)
                        };
                        if let Err(cause) = supervise(n, &ctx.stop, run) {
                            ctx.give_up(cause);
                        }
                    })
            })
            .collect::<Result<_, _>>()?;
        tracing::info!(threads = config.worker_threads(), queue = %config.rabbitmq.queue, "workers started");
        Ok(Self { threads, ctx })
    }

    /// Serves this pool's metrics (and `/healthz`) on `listener` until stopped.
    pub fn serve_metrics(
        &self,
        listener: std::net::TcpListener,
        http: &HttpConfig,
    ) -> anyhow::Result<MetricsServer> {
        MetricsServer::start(listener, self.ctx.metrics.clone(), http)
    }

    /// Resolves when the pool has given up (its threads are then stopping).
    pub async fn failed(&self) {
        self.ctx.failed.cancelled().await;
    }

    /// Waits for every thread to finish draining (after shutdown, or after the pool
    /// gave up); an error says why the pool gave up.
    pub async fn wait(self) -> anyhow::Result<()> {
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        match self.ctx.failure.lock().expect("lock").take() {
            Some(cause) => Err(anyhow::anyhow!(cause)),
            None => Ok(()),
        }
    }
}

/// Runs `body` (one connection's life of consumer `n`) again and again until it ends
/// cleanly or `stop` is cancelled; `Err` when it failed too often to go on.
fn supervise(
    n: usize,
    stop: &CancellationToken,
    mut body: impl FnMut(&mut Backoff, &mut OutageLog) -> Result<(), Ended>,
) -> Result<(), String> {
    let mut backoff = Backoff::new();
    let mut outages = OutageLog::new("consumer");
    let mut failures: VecDeque<Instant> = VecDeque::new();
    while !stop.is_cancelled() {
        let run = || body(&mut backoff, &mut outages);
        let failure = match panic::catch_unwind(AssertUnwindSafe(run)) {
            Ok(Ok(())) => break,
            Ok(Err(ended)) if ended.is_refusal() => Some(ended.to_string()),
            Ok(Err(ended)) if stop.is_cancelled() => {
                tracing::warn!(worker = n, cause = %ended, "worker stopped before it drained");
                break;
            }
            Ok(Err(ended)) => {
                outages.failed(Dependency::RabbitMq, &ended);
                None
            }
            Err(panic) => Some(format!("panicked: {}", panic_message(&*panic))),
        };
        if let Some(cause) = failure {
            let now = Instant::now();
            failures.push_back(now);
            while failures
                .front()
                .is_some_and(|t| now.duration_since(*t) > FAILURE_WINDOW)
            {
                failures.pop_front();
            }
            if failures.len() >= MAX_FAILURES {
                return Err(format!(
                    "consumer {n} failed {MAX_FAILURES} times within {}s; last: {cause}",
                    FAILURE_WINDOW.as_secs()
                ));
            }
            tracing::error!(worker = n, %cause, "consumer failed; restarting it");
        }
        sleep_unless_stopped(stop, backoff.next_delay());
    }
    tracing::debug!(worker = n, "worker stopped");
    Ok(())
}

/// Sleeps for `delay`, waking early when `stop` is cancelled.
fn sleep_unless_stopped(stop: &CancellationToken, delay: Duration) {
    let until = Instant::now() + delay;
    while !stop.is_cancelled() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        thread::sleep(left.min(consumer::POLL));
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with no message".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::BrokerError;

    #[test]
    fn a_consumer_that_panics_now_and_then_is_restarted() {
        let stop = CancellationToken::new();
        let mut runs = 0;
        let ended = supervise(0, &stop, |_, _| {
            runs += 1;
            if runs < 3 {
                panic!("run {runs} fails");
            }
            Ok(())
        });
        assert_eq!(ended, Ok(()));
        assert_eq!(runs, 3);
    }

    #[test]
    fn a_consumer_that_keeps_failing_is_given_up_on_with_its_last_cause() {
        let stop = CancellationToken::new();
        let mut runs = 0;
        let ended = supervise(7, &stop, |_, _| {
            runs += 1;
            Err(BrokerError::Declare {
                queue: format!("queue-{runs}"),
                source: Box::new(amiquip::Error::ServerClosedChannel {
                    channel_id: 1,
                    code: 406,
                    message: "PRECONDITION_FAILED".into(),
                }),
            }
            .into())
        });
        assert_eq!(runs, MAX_FAILURES);
        let cause = ended.unwrap_err();
        assert!(cause.contains("consumer 7"), "{cause}");
        assert!(cause.contains(&format!("queue-{MAX_FAILURES}")), "{cause}");
    }

    #[test]
    fn a_lost_broker_is_retried_for_as_long_as_it_takes() {
        let stop = CancellationToken::new();
        let mut runs = 0;
        let ended = supervise(0, &stop, |backoff, _| {
            runs += 1;
            if runs <= MAX_FAILURES + 2 {
                return Err(BrokerError::NoAddress {
                    host: "broker".into(),
                    port: 5672,
                }
                .into());
            }
            // A connection that worked resets the backoff, as the consumer does.
            backoff.reset();
            Ok(())
        });
        assert_eq!(ended, Ok(()));
        assert_eq!(runs, MAX_FAILURES + 3);
    }

    #[test]
    fn a_stopped_pool_does_not_restart_its_consumers() {
        let stop = CancellationToken::new();
        let mut runs = 0;
        let ended = supervise(0, &stop, |_, _| {
            runs += 1;
            stop.cancel();
            Err(BrokerError::Lost.into())
        });
        assert_eq!(ended, Ok(()));
        assert_eq!(runs, 1);
    }
}
