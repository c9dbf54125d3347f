//! One connection's life: open, declare, consume, compute, store, ack.
//!
//! Outcomes Redis did not take (unreachable, or refusing writes when full) stay
//! *held*: unacked, retried with backoff, while the consumer goes on with what else
//! arrives, so a message that needs no Redis (a dead letter) is not stuck behind them.
//! Prefetch bounds what a consumer holds. After shutdown the held outcomes are retried
//! until `worker.drain_timeout`; what is still held then goes back to the queue when the
//! connection closes.

use std::collections::HashSet;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use amiquip::{Channel, Consumer, ConsumerMessage, ConsumerOptions, Delivery};
use crossbeam_channel::RecvTimeoutError;
use opentelemetry::trace::{SpanBuilder, SpanKind};
use opentelemetry::KeyValue;
use uuid::Uuid;

use super::compute::{compute, Computed};
use super::unstored::Unstored;
use super::Ctx;
use crate::broker::BrokerError;
use crate::dependency::{Backoff, Dependency, OutageLog};
use crate::metrics::Processed;
use crate::store::results::{Final, Put, Stored};
use crate::task::TaskHeaders;
use crate::telemetry::trace::Span;

/// How often an idle consumer looks at the shutdown token.
pub const POLL: Duration = Duration::from_millis(100);

/// Messages larger than this (some ten thousand numbers) are computed only once their
/// key says they were not cancelled.
const CHECK_CANCELLED_BYTES: usize = 64 * 1024;

/// The task id a message carries as its AMQP `message_id`.
fn task_id(delivery: &Delivery) -> Option<Uuid> {
    delivery.properties.message_id().as_deref()?.parse().ok()
}

/// Why a connection's life ended, when not by a drained shutdown.
#[derive(Debug, thiserror::Error)]
pub enum Ended {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("the broker cancelled the consumer (queue {0} deleted?)")]
    Cancelled(String),
    #[error(
        "{count} results not stored by the drain deadline (worker.drain_timeout); \
         they go back to the queue: {cause}"
    )]
    NotStored { count: usize, cause: String },
}

impl Ended {
    /// Whether the broker answered and would not let this consumer consume (a queue
    /// declared with other arguments, refused credentials): no reconnect fixes that,
    /// so it counts against the supervisor's restart intensity. Anything else means
    /// the broker went away: reconnect, however long it takes.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Ended::Broker(e) if e.is_refusal())
    }
}

/// Connects and consumes until shutdown has drained the consumer (Ok) or it ends.
/// Connects to the first broker node that takes it from `node` on; after a lost
/// connection, `node` is the next one, so the consumer moves off a node that stopped.
pub fn run(
    ctx: &Ctx,
    node: &mut usize,
    backoff: &mut Backoff,
    outages: &mut OutageLog,
) -> Result<(), Ended> {
    let (mut connection, at) = match ctx.target.open_from(*node) {
        Ok(opened) => opened,
        Err(e) => {
            *node += 1;
            return Err(e.into());
        }
    };
    *node = at;
    let name = ctx.target.node_name(at);
    tracing::debug!(node = %name, "consumer connected");
    let _connected = ctx.metrics.broker_connection(&name);
    let result = match connection.open_channel(None) {
        Ok(channel) => {
            let result = consume_on(ctx, &channel, backoff, outages);
            let _ = channel.close();
            result
        }
        Err(e) => Err(BrokerError::call("cannot open a channel")(e).into()),
    };
    let _ = connection.close();
    if result.is_err() {
        *node = at + 1;
    }
    result
}

fn consume_on(
    ctx: &Ctx,
    channel: &Channel,
    backoff: &mut Backoff,
    outages: &mut OutageLog,
) -> Result<(), Ended> {
    let queue = ctx.topology.declare(channel)?;
    channel
        .qos(0, ctx.prefetch, false)
        .map_err(BrokerError::call("cannot set prefetch"))?;
    let consumer = queue
        .consume(ConsumerOptions::default())
        .map_err(BrokerError::call("cannot consume the task queue"))?;
    backoff.reset();
    outages.recovered(Dependency::RabbitMq);
    Session {
        ctx,
        consumer: &consumer,
        held: Unstored::new(),
        drain_deadline: None,
    }
    .run()
}

/// A delivery with its computed outcome, not yet stored, and its span, which ends once
/// the outcome is stored and the delivery acked.
struct Unacked {
    delivery: Delivery,
    computed: Computed,
    span: Span,
}

/// Whether one ack with `multiple` up to the highest tag may settle a stored batch
/// whose outcomes got `verdicts` while `held` others wait for a retry: only when Redis
/// took every outcome and nothing is held, for then every delivery the channel has not
/// settled is in the batch. One frame for the batch instead of one a task; an ack that
/// also covered a held delivery would lose its task.
fn ack_at_once<T, E>(held: usize, verdicts: &[Result<T, E>]) -> bool {
    held == 0 && verdicts.iter().all(Result::is_ok)
}

/// One consumer between its start and its end.
struct Session<'a> {
    ctx: &'a Ctx,
    consumer: &'a Consumer<'a>,
    held: Unstored<Unacked>,
    drain_deadline: Option<Instant>,
}

impl Drop for Session<'_> {
    /// What is still held goes back to the queue with the connection.
    fn drop(&mut self) {
        self.ctx.metrics.held(-(self.held.len() as i64));
    }
}

impl Session<'_> {
    fn run(mut self) -> Result<(), Ended> {
        loop {
            if self.drain_deadline.is_none() && self.ctx.stop.is_cancelled() {
                // Stop new deliveries; those already sent arrive before ClientCancelled.
                self.consumer
                    .cancel()
                    .map_err(BrokerError::call("cannot cancel the consumer"))?;
                self.drain_deadline = Some(Instant::now() + self.ctx.drain_timeout);
            }
            self.give_up_at_drain_deadline()?;
            let wait = self.held.until_retry().map_or(POLL, |left| left.min(POLL));
            let (batch, end) = self.receive(wait)?;
            let mut work = self.settle_new(batch)?;
            work.extend(self.retry_due());
            self.store(work)?;
            if let Some(end) = end {
                return self.finish(end);
            }
        }
    }

    /// Waits up to `wait` for a delivery, then takes whatever else has arrived (up to
    /// the prefetch), so one Redis round trip stores them all. Also returns the message
    /// that ended the stream, if one came.
    fn receive(&self, wait: Duration) -> Result<(Vec<Delivery>, Option<ConsumerMessage>), Ended> {
        let receiver = self.consumer.receiver();
        let mut batch = Vec::new();
        match receiver.recv_timeout(wait) {
            Ok(ConsumerMessage::Delivery(delivery)) => batch.push(delivery),
            Ok(end) => return Ok((batch, Some(end))),
            Err(RecvTimeoutError::Timeout) => return Ok((batch, None)),
            // amiquip ends the stream with no message when a heartbeat is missed.
            Err(RecvTimeoutError::Disconnected) => return Err(BrokerError::Lost.into()),
        }
        while batch.len() < usize::from(self.ctx.prefetch) {
            match receiver.try_recv() {
                Ok(ConsumerMessage::Delivery(delivery)) => batch.push(delivery),
                Ok(end) => return Ok((batch, Some(end))),
                Err(_) => break,
            }
        }
        Ok((batch, None))
    }

    /// Computes new deliveries; dead-letters those that are not tasks at once, and acks
    /// large ones that were cancelled without computing them.
    fn settle_new(&self, batch: Vec<Delivery>) -> Result<Vec<Unacked>, Ended> {
        let cancelled = self.cancelled_among(&batch);
        let mut work = Vec::with_capacity(batch.len());
        for delivery in batch {
            let span = self.arrived(&delivery);
            if task_id(&delivery).is_some_and(|id| cancelled.contains(&id)) {
                self.consumer
                    .ack(delivery)
                    .map_err(BrokerError::call("ack failed"))?;
                self.ctx.metrics.processed(Processed::Cancelled);
                span.end(
                    || vec![KeyValue::new("sumsvc.task.status", "cancelled")],
                    None,
                );
                continue;
            }
            let started = Instant::now();
            let computed = compute(&delivery.body, self.ctx.max_result_digits);
            self.ctx.metrics.computed(started.elapsed());
            match computed {
                Ok(computed) => work.push(Unacked {
                    delivery,
                    computed,
                    span,
                }),
                Err(reason) => {
                    tracing::warn!(%reason, trace_id = %span.trace_id(), queue = %self.ctx.topology.dead_letter_queue, "dead-lettering a message that is not a task");
                    self.consumer
                        .reject(delivery, false)
                        .map_err(BrokerError::call("reject failed"))?;
                    self.ctx.metrics.processed(Processed::DeadLettered);
                    span.end(Vec::new, Some(reason.to_string()));
                }
            }
        }
        Ok(work)
    }

    /// The large tasks of `batch` (over [`CHECK_CANCELLED_BYTES`]) that were cancelled,
    /// from one read of their keys: computing one costs more than the read. Smaller
    /// tasks are computed, and their outcome is not stored (see `Results::put_many`). A
    /// Redis that cannot say leaves every task to be computed.
    fn cancelled_among(&self, batch: &[Delivery]) -> HashSet<Uuid> {
        let large: Vec<Uuid> = batch
            .iter()
            .filter(|d| d.body.len() > CHECK_CANCELLED_BYTES)
            .filter_map(task_id)
            .collect();
        if large.is_empty() {
            return HashSet::new();
        }
        match self.ctx.runtime.block_on(self.ctx.results.get_many(&large)) {
            Ok(stored) => large
                .into_iter()
                .zip(stored)
                .filter(|(_, s)| matches!(s, Stored::Final(Final::Cancelled)))
                .map(|(id, _)| id)
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read whether large tasks were cancelled");
                HashSet::new()
            }
        }
    }

    /// Counts how long a delivery waited in the queue and starts its span, the child of
    /// the publish its headers name.
    fn arrived(&self, delivery: &Delivery) -> Span {
        let headers = TaskHeaders::from_amqp(delivery.properties.headers().as_ref());
        if let Some(published) = headers.published_at {
            // A clock behind the publisher's reads as no wait at all.
            let waited = SystemTime::now().duration_since(published);
            self.ctx.metrics.queue_wait(waited.unwrap_or_default());
        }
        let queue = &self.ctx.topology.queue;
        Span::start(headers.trace.parent().as_ref(), || {
            let mut attributes = vec![
                KeyValue::new("messaging.system", "rabbitmq"),
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.destination.name", queue.clone()),
            ];
            if let Some(id) = delivery.properties.message_id() {
                attributes.push(KeyValue::new("messaging.message.id", id.clone()));
            }
            SpanBuilder::from_name(format!("process {queue}"))
                .with_kind(SpanKind::Consumer)
                .with_attributes(attributes)
        })
    }

    /// Holds outcomes Redis did not take, for a retry.
    fn hold(&mut self, items: Vec<Unacked>, cause: String) {
        self.ctx.metrics.held(items.len() as i64);
        self.held.hold(items, cause);
    }

    /// The held outcomes whose retry is due.
    fn retry_due(&mut self) -> Vec<Unacked> {
        let due = self.held.take_if_due();
        self.ctx.metrics.held(-(due.len() as i64));
        self.ctx.metrics.write_retries(due.len());
        due
    }

    /// Stores outcomes in one round trip, acks each one Redis took and holds the rest.
    fn store(&mut self, work: Vec<Unacked>) -> Result<(), Ended> {
        if work.is_empty() {
            return Ok(());
        }
        let items: Vec<_> = work
            .iter()
            .map(|p| {
                let c = &p.computed;
                (c.task_id, &c.outcome, c.reply_to.as_deref())
            })
            .collect();
        let stored = self.ctx.runtime.block_on(self.ctx.results.put_many(&items));
        drop(items);
        let verdicts = match stored {
            Ok(verdicts) => verdicts,
            Err(e) => {
                self.hold(work, e.to_string());
                return Ok(());
            }
        };
        let at_once = ack_at_once(self.held.len(), &verdicts);
        let mut last: Option<Delivery> = None;
        let mut refused = Vec::new();
        let mut cause = None;
        for (pending, verdict) in work.into_iter().zip(verdicts) {
            match verdict {
                Ok(put) => {
                    let Unacked {
                        delivery,
                        computed,
                        span,
                    } = pending;
                    if !at_once {
                        self.consumer
                            .ack(delivery)
                            .map_err(BrokerError::call("ack failed"))?;
                    } else if last
                        .as_ref()
                        .is_none_or(|l| l.delivery_tag() < delivery.delivery_tag())
                    {
                        last = Some(delivery);
                    }
                    let status = match put {
                        Put::Stored => {
                            let status = computed.outcome.status;
                            self.ctx.metrics.processed(Processed::Stored(status));
                            status.as_str()
                        }
                        Put::Cancelled => {
                            self.ctx.metrics.processed(Processed::Cancelled);
                            "cancelled"
                        }
                    };
                    span.end(|| vec![KeyValue::new("sumsvc.task.status", status)], None);
                }
                Err(e) => {
                    cause.get_or_insert(e);
                    refused.push(pending);
                }
            }
        }
        if let Some(last) = last {
            self.consumer
                .ack_multiple(last)
                .map_err(BrokerError::call("ack failed"))?;
        }
        match cause {
            Some(cause) => self.hold(refused, format!("Redis refused the write: {cause}")),
            None => self.held.stored(),
        }
        Ok(())
    }

    /// The stream ended. After our own cancel the channel still acks: store what is
    /// held (until the drain deadline) and finish cleanly. Otherwise the channel is
    /// gone and the broker requeues whatever was unacked.
    fn finish(mut self, end: ConsumerMessage) -> Result<(), Ended> {
        match end {
            ConsumerMessage::ClientCancelled => {
                while !self.held.is_empty() {
                    self.give_up_at_drain_deadline()?;
                    thread::sleep(self.held.until_retry().unwrap_or(POLL).min(POLL));
                    let due = self.retry_due();
                    self.store(due)?;
                }
                Ok(())
            }
            ConsumerMessage::ServerCancelled => {
                Err(Ended::Cancelled(self.ctx.topology.queue.clone()))
            }
            ConsumerMessage::ServerClosedChannel(e)
            | ConsumerMessage::ServerClosedConnection(e) => {
                Err(BrokerError::call("the broker closed the consumer")(e).into())
            }
            ConsumerMessage::ClientClosedChannel | ConsumerMessage::ClientClosedConnection => {
                Err(BrokerError::Lost.into())
            }
            ConsumerMessage::Delivery(_) => unreachable!("deliveries are handled by receive"),
        }
    }

    /// Past the drain deadline, what is held goes back to the queue.
    fn give_up_at_drain_deadline(&self) -> Result<(), Ended> {
        match self.drain_deadline {
            Some(deadline) if Instant::now() >= deadline && !self.held.is_empty() => {
                Err(Ended::NotStored {
                    count: self.held.len(),
                    cause: self.held.cause().to_owned(),
                })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ack_at_once;

    #[test]
    fn a_batch_is_acked_at_once_only_when_it_holds_every_unsettled_delivery() {
        let taken: [Result<(), ()>; 3] = [Ok(()), Ok(()), Ok(())];
        let one_refused: [Result<(), ()>; 3] = [Ok(()), Err(()), Ok(())];
        assert!(ack_at_once(0, &taken));
        // Held deliveries have lower tags: a multiple ack would settle them too.
        assert!(!ack_at_once(1, &taken));
        // The refused one stays held, unacked.
        assert!(!ack_at_once(0, &one_refused));
        assert!(!ack_at_once(2, &one_refused));
    }
}
