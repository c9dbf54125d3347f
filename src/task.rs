//! The task protocol: what travels through RabbitMQ and what a result looks like in Redis.
//!
//! A task message is versioned JSON:
//! `{"v":1,"task_id":"<uuid>","args":[...],"max_result_digits":4300,"reply_to":"<instance>"}`.
//! `args` is the JSON text exactly as the client wrote it, so no number is rounded on the
//! way; `max_result_digits` is the limit the API checked it against, so a worker
//! configured otherwise still computes what the API accepted; `reply_to` names the
//! `serve` instance whose sync request waits for the result.
//! The message's AMQP headers carry what is not the task itself ([`TaskHeaders`]): the
//! W3C trace context of the request that queued it, and when it was published. A
//! message without them is a task all the same.
//!
//! An outcome is `{"status":"done","result":<number>}` or `{"status":"failed","error":"..."}`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amiquip::{AmqpValue, FieldTable};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::telemetry::trace::TraceHeaders;

/// The protocol version this build writes and reads.
pub const VERSION: u32 = 1;

/// Why a message body is not a task this build can run.
#[derive(Debug, thiserror::Error)]
pub enum NotATask {
    #[error("not a task message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("task message version {0} is not supported (this build reads {VERSION})")]
    Version(u32),
}

/// One task on the queue.
#[derive(Debug, Serialize, Deserialize)]
pub struct TaskMessage {
    pub v: u32,
    pub task_id: Uuid,
    pub args: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_result_digits: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// The trace the task belongs to; it travels in the headers, not in the body.
    #[serde(skip)]
    pub trace: TraceHeaders,
}

impl TaskMessage {
    pub fn new(task_id: Uuid, args: Box<RawValue>, reply_to: Option<String>) -> Self {
        Self {
            v: VERSION,
            task_id,
            args,
            max_result_digits: None,
            reply_to,
            trace: TraceHeaders::default(),
        }
    }

    /// Makes the span `trace` names the parent of the worker's.
    pub fn traced(mut self, trace: TraceHeaders) -> Self {
        self.trace = trace;
        self
    }

    /// Records the digit limit the API checked `args` against.
    pub fn checked_against(mut self, max_result_digits: usize) -> Self {
        self.max_result_digits = Some(max_result_digits);
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("task message serializes")
    }

    /// Parses a message body; an error means the message goes to the dead-letter queue.
    pub fn from_bytes(body: &[u8]) -> Result<Self, NotATask> {
        let message: TaskMessage = serde_json::from_slice(body)?;
        if message.v != VERSION {
            return Err(NotATask::Version(message.v));
        }
        Ok(message)
    }
}

/// What travels in a task message's AMQP headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskHeaders {
    pub trace: TraceHeaders,
    /// When the message was published, to the millisecond.
    pub published_at: Option<SystemTime>,
}

impl TaskHeaders {
    /// Milliseconds since the Unix epoch at publish. The AMQP `timestamp` property
    /// holds whole seconds only; this is the header RabbitMQ's message-timestamp plugin
    /// writes, so either may set it.
    pub const PUBLISHED_AT: &'static str = "timestamp_in_ms";

    pub fn to_amqp(&self) -> FieldTable {
        let mut headers = FieldTable::new();
        let trace = [
            (TraceHeaders::TRACEPARENT, &self.trace.traceparent),
            (TraceHeaders::TRACESTATE, &self.trace.tracestate),
        ];
        for (name, value) in trace {
            if let Some(value) = value {
                headers.insert(name.into(), AmqpValue::LongString(value.clone()));
            }
        }
        if let Some(at) = self.published_at {
            let ms = at
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            let ms = i64::try_from(ms).unwrap_or(i64::MAX);
            headers.insert(Self::PUBLISHED_AT.into(), AmqpValue::LongLongInt(ms));
        }
        headers
    }

    /// Reads the headers of a delivery; what is missing or malformed is left out.
    pub fn from_amqp(headers: Option<&FieldTable>) -> Self {
        let Some(headers) = headers else {
            return Self::default();
        };
        let text = |name: &str| amqp_text(headers.get(name));
        let ms = match headers.get(Self::PUBLISHED_AT) {
            Some(AmqpValue::LongLongInt(ms)) => u64::try_from(*ms).ok(),
            Some(AmqpValue::Timestamp(ms)) => Some(*ms),
            Some(AmqpValue::LongUInt(ms)) => Some(u64::from(*ms)),
            _ => None,
        };
        Self {
            trace: TraceHeaders {
                traceparent: text(TraceHeaders::TRACEPARENT),
                tracestate: text(TraceHeaders::TRACESTATE),
            },
            published_at: ms.map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }
}

/// Whether a task finished well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Done,
    Failed,
}

impl Status {
    /// As JSON writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Done => "done",
            Status::Failed => "failed",
        }
    }
}

/// What a worker stored for a task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Outcome {
    /// A finished sum; `number` is JSON number text produced by [`crate::sum`].
    pub fn done(number: String) -> Self {
        Self {
            status: Status::Done,
            result: Some(RawValue::from_string(number).expect("sum writes JSON numbers")),
            error: None,
        }
    }

    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            status: Status::Failed,
            result: None,
            error: Some(error.into()),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("outcome serializes")
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// The text of a header or table value, if it is a string.
pub fn amqp_text(value: Option<&AmqpValue>) -> Option<String> {
    match value? {
        AmqpValue::LongString(s) => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_keeps_its_numbers_as_written() {
        let args = RawValue::from_string("[9007199254740993, 0.1, 1e400]".into()).unwrap();
        let msg = TaskMessage::new(Uuid::nil(), args, Some("abc".into()));
        let back = TaskMessage::from_bytes(&msg.to_bytes()).unwrap();
        assert_eq!(back.args.get(), "[9007199254740993, 0.1, 1e400]");
        assert_eq!(back.reply_to.as_deref(), Some("abc"));
    }

    #[test]
    fn a_message_of_another_version_is_refused() {
        let body = br#"{"v":2,"task_id":"00000000-0000-0000-0000-000000000000","args":[]}"#;
        let err = TaskMessage::from_bytes(body).unwrap_err();
        assert!(matches!(err, NotATask::Version(2)), "{err}");
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    #[test]
    fn headers_read_back_as_written_and_a_message_without_them_has_none() {
        let headers = TaskHeaders {
            trace: TraceHeaders {
                traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
                tracestate: None,
            },
            published_at: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
        };
        let table = headers.to_amqp();
        assert_eq!(
            table.get("timestamp_in_ms"),
            Some(&AmqpValue::LongLongInt(1_700_000_000_123))
        );
        assert_eq!(TaskHeaders::from_amqp(Some(&table)), headers);
        assert_eq!(TaskHeaders::from_amqp(None), TaskHeaders::default());
    }

    #[test]
    fn garbage_is_refused() {
        assert!(TaskMessage::from_bytes(b"\xff not json").is_err());
    }
}
