//! The dead-letter queue: messages the workers rejected as not a task, which RabbitMQ
//! routes to `<queue>.dead` (the task queue's `x-dead-letter-*` arguments, see
//! [`Topology`]). `sumsvc dead list` shows them, `sumsvc dead replay` moves them back.
//!
//! Listing takes each message with `basic.get` and never acks it: when the channel
//! closes, or the process dies halfway, the broker puts every message back where it
//! was, so a list removes nothing and keeps the order.
//!
//! Replaying publishes a copy to the task queue (persistent, `mandatory`, confirmed) and
//! acks the dead copy only once the broker confirmed the new one, so a crash between
//! the two leaves a duplicate, never a loss. It moves at most what the queue held when
//! it started: a message the workers still cannot read comes straight back while it
//! runs, and must not go round forever.

use std::fmt;
use std::time::{Duration, Instant, UNIX_EPOCH};

use amiquip::{
    AmqpProperties, AmqpValue, Channel, Confirm, ConfirmSmoother, Connection, Delivery, FieldTable,
    Publish,
};
use serde::Serialize;

use super::connect::{AmqpTarget, Topology};
use super::error::BrokerError;
use crate::config::{RabbitConfig, TlsConfig};
use crate::task::{amqp_text, TaskMessage};

/// Characters of a body shown in a listing.
const EXCERPT_CHARS: usize = 64;
/// Messages replayed per confirm round trip.
const REPLAY_BATCH: u64 = 100;

/// What stops `dead list` or `dead replay`, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("cannot reach RabbitMQ at {target} (rabbitmq.url): {source}")]
    Unreachable { target: String, source: BrokerError },
    #[error(
        "queue {0} does not exist: check rabbitmq.queue, or start serve or work once to \
         declare it"
    )]
    MissingQueue(String),
    #[error("RabbitMQ: {0}")]
    Topology(#[from] BrokerError),
    #[error("RabbitMQ: {0}")]
    Broker(String),
}

/// Lists and replays the dead-letter queue of one task queue. Blocking: run it on a
/// thread of its own (`spawn_blocking`), never on a tokio worker.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    target: AmqpTarget,
    topology: Topology,
    confirm_timeout: Duration,
}

/// What `dead list` saw.
#[derive(Debug)]
pub struct Listing {
    /// The dead-letter queue.
    pub queue: String,
    /// Messages it held when the listing started.
    pub total: u32,
    /// The first of them, in queue order (all unless a limit was given).
    pub letters: Vec<DeadLetter>,
}

/// One dead-lettered message.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// 1 for the head of the queue.
    pub position: u64,
    /// The AMQP `message-id` property (the API sets it to the task id).
    pub message_id: Option<String>,
    /// The body's `task_id`, when the body is JSON that has one.
    pub task_id: Option<String>,
    /// From RabbitMQ's `x-death` header, most recent first; empty for a message that
    /// was published to the dead-letter queue directly.
    pub deaths: Vec<Death>,
    /// Whether this build's workers can process it now.
    pub readable: bool,
    /// Why they cannot: the error a worker gets reading it.
    pub error: Option<String>,
    /// Body size in bytes.
    pub size: usize,
    /// The start of the body, printable: control characters and bytes that are not
    /// UTF-8 are escaped.
    pub excerpt: String,
}

/// One entry of the `x-death` header: RabbitMQ keeps one per queue and reason.
#[derive(Debug, Clone, Serialize)]
pub struct Death {
    /// The queue the message was dead-lettered from.
    pub queue: Option<String>,
    /// `rejected` for a message a worker could not read.
    pub reason: Option<String>,
    /// When it last happened (RFC 3339, UTC).
    pub time: Option<String>,
    /// How many times it happened.
    pub count: Option<i64>,
}

impl DeadLetters {
    pub fn new(config: &RabbitConfig, tls: &TlsConfig) -> anyhow::Result<Self> {
        Ok(Self {
            target: AmqpTarget::new(config, tls)?,
            topology: Topology::new(config),
            confirm_timeout: config.timeout,
        })
    }

    /// The dead-letter queue's name.
    pub fn dead_letter_queue(&self) -> &str {
        &self.topology.dead_letter_queue
    }

    /// Reads up to `limit` messages (default: all the queue holds) and leaves every one
    /// where it was.
    pub fn list(&self, limit: Option<u64>) -> Result<Listing, DeadLetterError> {
        let link = self.open()?;
        let total = link.dead_count()?;
        let wanted = limit.map_or(u64::from(total), |l| l.min(u64::from(total)));
        let mut letters = Vec::new();
        while (letters.len() as u64) < wanted {
            let Some(get) = link.get()? else { break };
            letters.push(DeadLetter::read(letters.len() as u64 + 1, &get.delivery));
        }
        // Nothing was acked: closing hands every message back, in its place.
        link.close();
        Ok(Listing {
            queue: self.dead_letter_queue().to_owned(),
            total,
            letters,
        })
    }

    /// Moves up to `limit` messages (default: all the queue holds now) to the task
    /// queue, in order; returns how many it moved.
    pub fn replay(&self, limit: Option<u64>) -> Result<u64, DeadLetterError> {
        let link = self.open()?;
        let held = link.dead_count()?;
        let budget = limit.map_or(u64::from(held), |l| l.min(u64::from(held)));
        // Also makes sure the task queue exists, with the arguments workers expect.
        self.topology.declare(&link.channel)?;
        let mut publisher = ConfirmedPublisher::new(&link.channel, self.confirm_timeout)?;
        let mut moved = 0;
        while moved < budget {
            let mut batch = Vec::new();
            while (batch.len() as u64) < REPLAY_BATCH.min(budget - moved) {
                let Some(get) = link.get()? else { break };
                batch.push(get.delivery);
            }
            if batch.is_empty() {
                break;
            }
            publisher
                .publish_all(&self.topology.queue, &batch)
                .map_err(|cause| {
                    DeadLetterError::Broker(format!(
                        "{cause}; {moved} moved before, the rest is still in {}",
                        self.dead_letter_queue()
                    ))
                })?;
            moved += batch.len() as u64;
            // Every copy is confirmed: the dead ones up to the last may go.
            if let Some(last) = batch.pop() {
                last.ack_multiple(&link.channel)
                    .map_err(|e| DeadLetterError::Broker(format!("ack failed: {e}")))?;
            }
        }
        link.close();
        Ok(moved)
    }

    fn open(&self) -> Result<Link<'_>, DeadLetterError> {
        let unreachable = |source| DeadLetterError::Unreachable {
            target: format!("{:?}", self.target),
            source,
        };
        let mut connection = self.target.open().map_err(unreachable)?;
        let channel = connection
            .open_channel(None)
            .map_err(|e| unreachable(BrokerError::call("cannot open a channel")(e)))?;
        Ok(Link {
            channel,
            connection,
            queue: self.dead_letter_queue(),
        })
    }
}

/// A connection and channel to the dead-letter queue.
struct Link<'a> {
    // Field order matters: the channel closes before its connection.
    channel: Channel,
    connection: Connection,
    queue: &'a str,
}

impl Link<'_> {
    /// How many messages the queue holds, or that it does not exist. Passive, so a
    /// mistyped `rabbitmq.queue` is reported rather than created.
    fn dead_count(&self) -> Result<u32, DeadLetterError> {
        match self.channel.queue_declare_passive(self.queue) {
            Ok(queue) => Ok(queue.declared_message_count().unwrap_or(0)),
            Err(amiquip::Error::ServerClosedChannel { code: 404, .. }) => {
                Err(DeadLetterError::MissingQueue(self.queue.to_owned()))
            }
            Err(e) => Err(DeadLetterError::Broker(format!(
                "cannot look at queue {}: {e}",
                self.queue
            ))),
        }
    }

    /// The next message, unacked, so it stays the broker's until acked.
    fn get(&self) -> Result<Option<amiquip::Get>, DeadLetterError> {
        self.channel
            .basic_get(self.queue, false)
            .map_err(|e| DeadLetterError::Broker(format!("cannot read {}: {e}", self.queue)))
    }

    /// Closes the channel: the broker takes back what was not acked, in its place.
    fn close(self) {
        let _ = self.channel.close();
        let _ = self.connection.close();
    }
}

/// Publishes on a channel in confirm mode and waits until the broker stored each copy.
struct ConfirmedPublisher<'a> {
    channel: &'a Channel,
    confirms: crossbeam_channel::Receiver<Confirm>,
    returns: crossbeam_channel::Receiver<amiquip::Return>,
    smoother: ConfirmSmoother,
    timeout: Duration,
}

impl<'a> ConfirmedPublisher<'a> {
    fn new(channel: &'a Channel, timeout: Duration) -> Result<Self, DeadLetterError> {
        let broker = |e: amiquip::Error| DeadLetterError::Broker(e.to_string());
        let confirms = channel.listen_for_publisher_confirms().map_err(broker)?;
        let returns = channel.listen_for_returns().map_err(broker)?;
        channel.enable_publisher_confirms().map_err(broker)?;
        Ok(Self {
            channel,
            confirms,
            returns,
            smoother: ConfirmSmoother::new(),
            timeout,
        })
    }

    /// Publishes copies of `deliveries` (body and properties, made persistent) to
    /// `queue` and returns once the broker confirmed every one.
    fn publish_all(&mut self, queue: &str, deliveries: &[Delivery]) -> Result<(), String> {
        let mut published = 0;
        for delivery in deliveries {
            let publish = Publish {
                body: &delivery.body,
                routing_key: queue.to_owned(),
                // A missing queue returns the copy instead of dropping it.
                mandatory: true,
                immediate: false,
                properties: persistent(&delivery.properties),
            };
            self.channel
                .basic_publish("", publish)
                .map_err(|e| format!("publish failed: {e}"))?;
            published += 1;
        }
        let deadline = Instant::now() + self.timeout;
        let mut confirmed = 0;
        while confirmed < published {
            let confirm = self
                .confirms
                .recv_deadline(deadline)
                .map_err(|_| format!("the broker did not confirm within {:?}", self.timeout))?;
            for confirm in self.smoother.process(confirm) {
                if let Confirm::Nack(_) = confirm {
                    return Err("the broker refused a copy (nack)".into());
                }
                confirmed += 1;
            }
        }
        // The broker sends basic.return before the confirm of the same message.
        if let Ok(returned) = self.returns.try_recv() {
            return Err(format!(
                "queue {queue} did not take a copy: {}",
                returned.reply_text
            ));
        }
        Ok(())
    }
}

/// The properties of a dead letter, delivery mode persistent. Headers stay, `x-death`
/// included, so a message dead-lettered again shows how often it came back.
fn persistent(properties: &AmqpProperties) -> AmqpProperties {
    properties.clone().with_delivery_mode(2)
}

impl DeadLetter {
    fn read(position: u64, delivery: &Delivery) -> Self {
        let body = &delivery.body;
        // Exactly what a worker runs on it.
        let parsed = TaskMessage::from_bytes(body);
        let task_id = match &parsed {
            Ok(task) => Some(task.task_id.to_string()),
            Err(_) => serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| match v.get("task_id")? {
                    serde_json::Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                }),
        };
        Self {
            position,
            message_id: delivery.properties.message_id().clone(),
            task_id,
            deaths: deaths(delivery.properties.headers()),
            readable: parsed.is_ok(),
            error: parsed.err().map(|e| e.to_string()),
            size: body.len(),
            excerpt: excerpt(body, EXCERPT_CHARS),
        }
    }
}

fn deaths(headers: &Option<FieldTable>) -> Vec<Death> {
    let Some(AmqpValue::FieldArray(entries)) = headers.as_ref().and_then(|h| h.get("x-death"))
    else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| match entry {
            AmqpValue::FieldTable(t) => Some(Death {
                queue: amqp_text(t.get("queue")),
                reason: amqp_text(t.get("reason")),
                time: match t.get("time") {
                    Some(AmqpValue::Timestamp(secs)) => Some(
                        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(*secs))
                            .to_string(),
                    ),
                    _ => None,
                },
                count: match t.get("count") {
                    Some(AmqpValue::LongLongInt(n)) => Some(*n),
                    Some(AmqpValue::LongInt(n)) => Some(i64::from(*n)),
                    Some(AmqpValue::LongUInt(n)) => Some(i64::from(*n)),
                    _ => None,
                },
            }),
            _ => None,
        })
        .collect()
}

/// The first `max` characters of `body`, with control characters and invalid UTF-8
/// escaped so a listing stays one readable line; `…` marks a cut.
fn excerpt(body: &[u8], max: usize) -> String {
    let mut out = String::new();
    let mut shown = 0;
    for chunk in body.utf8_chunks() {
        let valid = chunk.valid().chars().map(|c| {
            if c.is_control() {
                c.escape_default().collect()
            } else {
                c.to_string()
            }
        });
        let invalid = chunk.invalid().iter().map(|b| format!("\\x{b:02x}"));
        for piece in valid.chain(invalid) {
            if shown == max {
                out.push('…');
                return out;
            }
            out.push_str(&piece);
            shown += 1;
        }
    }
    out
}

/// The human-readable listing: a count line, then a paragraph per message.
impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.total == 1 { "" } else { "s" };
        write!(f, "{} message{plural} in {}", self.total, self.queue)?;
        if (self.letters.len() as u64) < u64::from(self.total) {
            write!(f, " (showing the first {})", self.letters.len())?;
        }
        writeln!(f)?;
        for letter in &self.letters {
            write!(f, "{letter}")?;
        }
        Ok(())
    }
}

impl fmt::Display for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_none = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
        writeln!(
            f,
            "\n#{}  message id {}  task id {}",
            self.position,
            or_none(&self.message_id),
            or_none(&self.task_id)
        )?;
        if self.deaths.is_empty() {
            writeln!(f, "   not dead-lettered by RabbitMQ (no x-death header)")?;
        }
        for d in &self.deaths {
            let times = match d.count {
                Some(1) => "once".to_owned(),
                Some(n) => format!("{n} times"),
                None => "count unknown".to_owned(),
            };
            writeln!(
                f,
                "   dead-lettered from {} ({}), {times}, last at {}",
                or_none(&d.queue),
                or_none(&d.reason),
                or_none(&d.time)
            )?;
        }
        match &self.error {
            None => writeln!(f, "   readable now: a replay sends it to the workers")?,
            Some(e) => writeln!(f, "   cannot be processed: {e}")?,
        }
        writeln!(f, "   body ({} bytes): {}", self.size, self.excerpt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_excerpt_escapes_what_would_break_the_line() {
        assert_eq!(excerpt(b"a\nb\x00\xffc", 10), "a\\nb\\u{0}\\xffc");
        assert_eq!(excerpt("é€".as_bytes(), 10), "é€");
    }

    #[test]
    fn an_excerpt_is_cut_at_its_length_and_says_so() {
        assert_eq!(excerpt(b"abcdef", 3), "abc…");
        assert_eq!(excerpt(b"abc", 3), "abc");
        assert_eq!(excerpt(b"", 3), "");
    }

    #[test]
    fn deaths_are_read_from_the_x_death_header() {
        let mut entry = FieldTable::new();
        entry.insert("queue".into(), AmqpValue::LongString("q".into()));
        entry.insert("reason".into(), AmqpValue::LongString("rejected".into()));
        entry.insert("time".into(), AmqpValue::Timestamp(86_400));
        entry.insert("count".into(), AmqpValue::LongLongInt(2));
        let mut headers = FieldTable::new();
        headers.insert(
            "x-death".into(),
            AmqpValue::FieldArray(vec![AmqpValue::FieldTable(entry)]),
        );
        let d = &deaths(&Some(headers))[0];
        assert_eq!(d.queue.as_deref(), Some("q"));
        assert_eq!(d.reason.as_deref(), Some("rejected"));
        assert_eq!(d.time.as_deref(), Some("1970-01-02T00:00:00Z"));
        assert_eq!(d.count, Some(2));
        assert!(deaths(&None).is_empty());
    }
}
