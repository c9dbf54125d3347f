//! What one message becomes: a task with the outcome to store, or a reason to
//! dead-letter it. No I/O here, so it is tested without a broker.

use std::panic::{self, AssertUnwindSafe};

use uuid::Uuid;

use crate::sum::{self, MAX_RESULT_DIGITS_CAP};
use crate::task::{NotATask, Outcome, TaskMessage};

/// A task whose outcome is computed and waits to be stored.
#[derive(Debug)]
pub struct Computed {
    pub task_id: Uuid,
    pub outcome: Outcome,
    /// The `serve` instance whose sync request waits for it.
    pub reply_to: Option<String>,
}

/// Parses a message body and computes its sum; `Err` carries why the message is not a
/// task, for the dead-letter log.
///
/// `default_digits` is this worker's `limits.max_result_digits`, for messages that do
/// not carry the limit the API checked them against.
pub fn compute(body: &[u8], default_digits: usize) -> Result<Computed, NotATask> {
    let task = TaskMessage::from_bytes(body)?;
    // The limit the API applied, so a worker configured otherwise does not fail what
    // was accepted; capped, so a forged message cannot make it compute without bound.
    let max_digits = task
        .max_result_digits
        .map_or(default_digits, |m| m.min(MAX_RESULT_DIGITS_CAP));
    // A bug in the sum must fail its task, not kill the consumer and come back on
    // every redelivery.
    let summed = panic::catch_unwind(AssertUnwindSafe(|| {
        sum::sum_json(task.args.get(), max_digits)
    }));
    let outcome = match summed {
        Ok(Ok(number)) => Outcome::done(number),
        // The API checked the input; this is here so a hand-made message cannot loop.
        Ok(Err(e)) => Outcome::failed(e.to_string()),
        Err(_) => Outcome::failed("the worker failed computing this sum (a bug: please report it)"),
    };
    Ok(Computed {
        task_id: task.task_id,
        outcome,
        reply_to: task.reply_to,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Status;

    fn body(args: &str, digits: Option<usize>) -> Vec<u8> {
        let raw = serde_json::value::RawValue::from_string(args.into()).unwrap();
        let mut task = TaskMessage::new(Uuid::new_v4(), raw, Some("me".into()));
        task.max_result_digits = digits;
        task.to_bytes()
    }

    #[test]
    fn a_task_is_summed_exactly_and_keeps_its_reply_address() {
        let c = compute(&body("[0.1, 0.2]", Some(10)), 10).unwrap();
        assert_eq!(c.outcome.to_json(), r#"{"status":"done","result":0.3}"#);
        assert_eq!(c.reply_to.as_deref(), Some("me"));
    }

    #[test]
    fn the_limit_the_api_applied_wins_over_the_workers_own() {
        let c = compute(&body("[123456789, 1]", Some(4300)), 3).unwrap();
        assert_eq!(c.outcome.status, Status::Done);
    }

    #[test]
    fn a_forged_limit_is_capped() {
        let huge = format!("[1e{}, 1]", MAX_RESULT_DIGITS_CAP * 2);
        let c = compute(&body(&huge, Some(usize::MAX)), 10).unwrap();
        assert_eq!(c.outcome.status, Status::Failed, "{:?}", c.outcome);
    }

    #[test]
    fn a_message_that_is_not_a_task_is_refused_with_its_reason() {
        let err = compute(b"not json", 10).unwrap_err();
        assert!(err.to_string().contains("not a task message"), "{err}");
    }
}
