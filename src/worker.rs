//! `sumsvc work`: consumer threads that take tasks from RabbitMQ, sum them, store the
//! outcome in Redis and only then ack.
//!
//! Each thread owns its own connection and channel (amiquip channels are not `Sync` and
//! a consumer borrows its channel) and its own single-threaded tokio runtime and Redis
//! pool for storing outcomes, so it needs no runtime from its caller. A thread takes
//! every delivery that has arrived (up to `worker.prefetch`), computes them, stores the
//! outcomes in one Redis pipeline and acks them; batching is what makes prefetch pay.
//!
//! A thread reconnects with backoff, and on shutdown cancels its consumer, finishes and
//! acks every message it already holds, then closes. A message that cannot be parsed is
//! rejected without requeue and so lands in the dead-letter queue; a failed Redis write
//! is retried, and a message whose result could not be stored is never acked, so the
//! broker delivers it again.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use amiquip::{Channel, ConsumerMessage, ConsumerOptions, Delivery};
use crossbeam_channel::RecvTimeoutError;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::broker::{AmqpTarget, Topology};
use crate::config::Config;
use crate::dependency::Backoff;
use crate::store::Results;
use crate::sum;
use crate::task::{Outcome, TaskMessage};

/// The largest digit limit a task message may carry; `limits.max_result_digits` may
/// not be configured above it either.
pub const MAX_RESULT_DIGITS_CAP: usize = sum::EXACT_SPAN_BUDGET as usize;

/// How often an idle consumer looks at the shutdown token.
const POLL: Duration = Duration::from_millis(100);

/// What becomes of one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The outcome is in Redis (or will be, while the batch is being stored); ack.
    Stored,
    /// The message is not a task; dead-letter it.
    Unparseable(String),
    /// Redis did not take the outcome before the drain deadline; leave it unacked.
    NotStored(String),
}

struct Ctx {
    target: AmqpTarget,
    topology: Topology,
    prefetch: u16,
    max_result_digits: usize,
    drain_timeout: Duration,
    redis: crate::config::RedisConfig,
    result_ttl: Duration,
    shutdown: CancellationToken,
}

/// The running consumer threads.
pub struct WorkerPool {
    threads: Vec<JoinHandle<()>>,
}

impl WorkerPool {
    /// Starts `worker.concurrency` consumer threads; they stop after `shutdown` is
    /// cancelled and they have drained.
    pub fn start(config: &Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        // Fail at start, not in every thread, on a bad URL.
        Results::new(&config.redis, config.tasks.result_ttl)?;
        let ctx = Arc::new(Ctx {
            target: AmqpTarget::new(&config.rabbitmq)?,
            topology: Topology::new(&config.rabbitmq),
            prefetch: config.worker.prefetch,
            max_result_digits: config.limits.max_result_digits,
            drain_timeout: config.worker.drain_timeout,
            redis: config.redis.clone(),
            result_ttl: config.tasks.result_ttl,
            shutdown,
        });
        let threads = (0..config.worker_threads())
            .map(|n| {
                let ctx = ctx.clone();
                thread::Builder::new()
                    .name(format!("worker-{n}"))
                    .spawn(move || consume_until_shutdown(&ctx, n))
            })
            .collect::<Result<_, _>>()?;
        tracing::info!(threads = config.worker_threads(), queue = %config.rabbitmq.queue, "workers started");
        Ok(Self { threads })
    }

    /// Waits for every thread to finish draining (after shutdown was cancelled).
    pub async fn wait(self) {
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// What one thread stores outcomes with.
struct Store {
    runtime: tokio::runtime::Runtime,
    results: Results,
}

fn consume_until_shutdown(ctx: &Ctx, n: usize) {
    let store = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            Ok(Store {
                runtime,
                results: Results::new(&ctx.redis, ctx.result_ttl)?,
            })
        });
    let store = match store {
        Ok(store) => store,
        Err(e) => {
            tracing::error!(worker = n, error = %format!("{e:#}"), "worker cannot start");
            return;
        }
    };
    let mut backoff = Backoff::new();
    while !ctx.shutdown.is_cancelled() {
        match consume(ctx, &store, &mut backoff) {
            Ok(()) => break,
            Err(cause) => tracing::warn!(worker = n, %cause, "worker lost RabbitMQ; reconnecting"),
        }
        let until = Instant::now() + backoff.next_delay();
        while Instant::now() < until && !ctx.shutdown.is_cancelled() {
            thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
        }
    }
    tracing::debug!(worker = n, "worker stopped");
}

/// One connection's life: consume until shutdown has drained it (Ok) or it fails.
fn consume(ctx: &Ctx, store: &Store, backoff: &mut Backoff) -> Result<(), String> {
    let mut connection = ctx.target.open()?;
    let channel = connection
        .open_channel(None)
        .map_err(|e| format!("cannot open a channel: {e}"))?;
    let result = consume_on(ctx, store, &channel, backoff);
    let _ = channel.close();
    let _ = connection.close();
    result
}

fn consume_on(
    ctx: &Ctx,
    store: &Store,
    channel: &Channel,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let queue = ctx.topology.declare(channel)?;
    channel
        .qos(0, ctx.prefetch, false)
        .map_err(|e| format!("cannot set prefetch: {e}"))?;
    let consumer = queue
        .consume(ConsumerOptions::default())
        .map_err(|e| format!("cannot consume {}: {e}", ctx.topology.queue))?;
    backoff.reset();

    let mut drain_deadline = None;
    loop {
        if drain_deadline.is_none() && ctx.shutdown.is_cancelled() {
            // Stop new deliveries; those already sent still arrive before ClientCancelled.
            consumer
                .cancel()
                .map_err(|e| format!("cannot cancel consumer: {e}"))?;
            drain_deadline = Some(Instant::now() + ctx.drain_timeout);
        }
        let first = match consumer.receiver().recv_timeout(POLL) {
            Ok(ConsumerMessage::Delivery(delivery)) => delivery,
            Ok(other) => return end_of_stream(ctx, other),
            Err(RecvTimeoutError::Timeout) => continue,
            // amiquip ends the stream with no message when a heartbeat is missed.
            Err(RecvTimeoutError::Disconnected) => return Err("connection lost".into()),
        };
        // Take whatever else has arrived, so one Redis round trip stores them all.
        let mut batch = vec![first];
        let mut after = None;
        while batch.len() < usize::from(ctx.prefetch) {
            match consumer.receiver().try_recv() {
                Ok(ConsumerMessage::Delivery(delivery)) => batch.push(delivery),
                Ok(other) => {
                    after = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        handle(ctx, store, &consumer, batch, drain_deadline)?;
        if let Some(other) = after {
            return end_of_stream(ctx, other);
        }
    }
}

/// Any message but a delivery ends the consumer: Ok once our own cancel has drained it.
fn end_of_stream(ctx: &Ctx, message: ConsumerMessage) -> Result<(), String> {
    match message {
        ConsumerMessage::ClientCancelled => Ok(()),
        ConsumerMessage::ServerCancelled => Err(format!(
            "the broker cancelled the consumer (queue {} deleted?)",
            ctx.topology.queue
        )),
        ConsumerMessage::ServerClosedChannel(e) | ConsumerMessage::ServerClosedConnection(e) => {
            Err(e.to_string())
        }
        ConsumerMessage::ClientClosedChannel | ConsumerMessage::ClientClosedConnection => {
            Err("channel closed".into())
        }
        ConsumerMessage::Delivery(_) => unreachable!("deliveries are handled by the caller"),
    }
}

/// Settles a batch of deliveries: acks the stored, dead-letters the unparseable, and
/// fails (leaving the rest unacked, for redelivery) when results could not be stored.
fn handle(
    ctx: &Ctx,
    store: &Store,
    consumer: &amiquip::Consumer<'_>,
    batch: Vec<Delivery>,
    drain_deadline: Option<Instant>,
) -> Result<(), String> {
    let bodies: Vec<&[u8]> = batch.iter().map(|d| d.body.as_slice()).collect();
    let steps = process(ctx, store, &bodies, drain_deadline);
    let mut not_stored = None;
    for (delivery, step) in batch.into_iter().zip(steps) {
        match step {
            Step::Stored => consumer
                .ack(delivery)
                .map_err(|e| format!("ack failed: {e}"))?,
            Step::Unparseable(reason) => {
                tracing::warn!(%reason, queue = %ctx.topology.dead_letter_queue, "dead-lettering a message that is not a task");
                consumer
                    .reject(delivery, false)
                    .map_err(|e| format!("reject failed: {e}"))?;
            }
            Step::NotStored(cause) => not_stored = Some(cause),
        }
    }
    match not_stored {
        // Dropping the connection returns the messages to the queue for another worker.
        Some(cause) => Err(format!(
            "results not stored, tasks left for redelivery: {cause}"
        )),
        None => Ok(()),
    }
}

/// Computes the outcomes of a batch of messages and stores them in one pipeline,
/// retrying Redis with backoff; after shutdown it gives up at the drain deadline and
/// reports the tasks as not stored.
fn process(
    ctx: &Ctx,
    store: &Store,
    bodies: &[&[u8]],
    drain_deadline: Option<Instant>,
) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::with_capacity(bodies.len());
    let mut tasks = Vec::with_capacity(bodies.len());
    for body in bodies {
        match TaskMessage::from_bytes(body) {
            Ok(task) => {
                // The limit the API applied, so a worker configured otherwise does not
                // fail what was accepted; capped, so a forged message cannot make it
                // compute without bound.
                let max_digits = task
                    .max_result_digits
                    .map_or(ctx.max_result_digits, |m| m.min(MAX_RESULT_DIGITS_CAP));
                let outcome = match sum::sum_json(task.args.get(), max_digits) {
                    Ok(number) => Outcome::done(number),
                    // The API checked the input; this is here so a hand-made message cannot loop.
                    Err(e) => Outcome::failed(e.to_string()),
                };
                tasks.push((task, outcome));
                steps.push(Step::Stored);
            }
            Err(reason) => steps.push(Step::Unparseable(reason)),
        }
    }
    if tasks.is_empty() {
        return steps;
    }
    let items: Vec<(Uuid, &Outcome, Option<&str>)> = tasks
        .iter()
        .map(|(task, outcome)| (task.task_id, outcome, task.reply_to.as_deref()))
        .collect();
    let mut backoff = Backoff::new();
    let mut deadline = drain_deadline;
    loop {
        let cause = match store.runtime.block_on(store.results.put_many(&items)) {
            Ok(()) => {
                tracing::debug!(tasks = items.len(), "tasks done");
                return steps;
            }
            Err(e) => e.to_string(),
        };
        if deadline.is_none() && ctx.shutdown.is_cancelled() {
            deadline = Some(Instant::now() + ctx.drain_timeout);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            for step in steps.iter_mut().filter(|s| **s == Step::Stored) {
                *step = Step::NotStored(cause.clone());
            }
            return steps;
        }
        tracing::warn!(tasks = items.len(), %cause, "cannot store results; retrying");
        thread::sleep(backoff.next_delay());
    }
}
