//! The task protocol: what travels through RabbitMQ and what a result looks like in Redis.
//!
//! A task message is versioned JSON:
//! `{"v":1,"task_id":"<uuid>","args":[...],"max_result_digits":4300,"reply_to":"<instance>"}`.
//! `args` is the JSON text exactly as the client wrote it, so no number is rounded on the
//! way; `max_result_digits` is the limit the API checked it against, so a worker
//! configured otherwise still computes what the API accepted; `reply_to` names the
//! `serve` instance whose sync request waits for the result.
//! An outcome is `{"status":"done","result":<number>}` or `{"status":"failed","error":"..."}`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// The protocol version this build writes and reads.
pub(crate) const VERSION: u32 = 1;

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
}

impl TaskMessage {
    pub fn new(task_id: Uuid, args: Box<RawValue>, reply_to: Option<String>) -> Self {
        Self {
            v: VERSION,
            task_id,
            args,
            max_result_digits: None,
            reply_to,
        }
    }

    /// Records the digit limit the API checked `args` against.
    pub(crate) fn checked_against(mut self, max_result_digits: usize) -> Self {
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

/// Whether a task finished well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Done,
    Failed,
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

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("outcome serializes")
    }

    pub(crate) fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
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
    fn garbage_is_refused() {
        assert!(TaskMessage::from_bytes(b"\xff not json").is_err());
    }
}
