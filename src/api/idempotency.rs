//! `Idempotency-Key` on `post_task` and `sync/sum`, after the IETF httpapi draft
//! (draft-ietf-httpapi-idempotency-key-header): a client that does not know whether its
//! request was taken (it timed out, its connection dropped) sends it again with the
//! same key, and gets the first answer rather than a second task.
//!
//! - the same key with the same request (route and numbers, per API key in keys mode)
//!   answers what the first answered, with `Idempotent-Replayed: true`;
//! - the same key with another request: 422;
//! - while the first request with the key runs: 409, with `Retry-After`;
//! - a request that failed (a 4xx or 5xx) keeps no answer: the key is free again, so a
//!   retry runs it anew.
//!
//! Keys and their answers are kept for `tasks.idempotency_ttl` in PostgreSQL
//! ([`IdempotencyKeys`]), then purged.

use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::problem::ApiError;
use super::AppState;
use crate::auth::Caller;
use crate::store::idempotency::{Claim, IdempotencyKeys, Kept};

/// The longest key taken: a UUID is 36 characters; room for any client's scheme.
const MAX_KEY_LEN: usize = 255;

/// A key taken by a request, for as long as it runs.
pub struct Running {
    keys: IdempotencyKeys,
    owner: i64,
    key: String,
}

/// What a request with an `Idempotency-Key` does.
pub enum Start {
    /// Runs, under the key when it has one.
    Run(Option<Running>),
    /// Answers what the first request with the key answered.
    Replay(Kept),
}

/// Reads the request's `Idempotency-Key` (None without one) and takes it for the
/// request to `route` with numbers `args`; or says why the request must not run.
pub async fn start(
    state: &AppState,
    caller: &Caller,
    header: Option<&str>,
    route: &str,
    args: &RawValue,
) -> Result<Start, ApiError> {
    let Some(header) = header else {
        return Ok(Start::Run(None));
    };
    let key = parse(header)?;
    let owner = caller.owner().unwrap_or(0);
    let fingerprint = fingerprint(route, args);
    let running_for = state.config.tasks.sync_timeout
        + state.config.rabbitmq.timeout * 2
        + state.config.postgres.timeout * 2;
    match state
        .idempotency
        .claim(owner, &key, &fingerprint, running_for)
        .await?
    {
        Claim::Taken => Ok(Start::Run(Some(Running {
            keys: state.idempotency.clone(),
            owner,
            key,
        }))),
        Claim::Answered(kept) => Ok(Start::Replay(kept)),
        Claim::Running => Err(ApiError::conflict(
            "idempotency-key-in-use",
            format!(
                "a request with Idempotency-Key {key:?} is still being answered: retry after \
                 the Retry-After seconds to get its answer"
            ),
        )),
        Claim::Mismatch => Err(ApiError::unprocessable(
            "idempotency-key-reused",
            format!(
                "Idempotency-Key {key:?} was sent with another request (another route or \
                 other numbers): use a new key for a new request"
            ),
        )),
    }
}

impl Running {
    /// Keeps the answer the request gave, for retries to get (a failure keeps nothing,
    /// so a retry runs again).
    pub async fn finish(self, answer: Option<Kept>) {
        let done = match &answer {
            Some(kept) => self.keys.keep(self.owner, &self.key, kept).await,
            None => self.keys.release(self.owner, &self.key).await,
        };
        if let Err(e) = done {
            // The key stays taken until its request could have run at the latest; a
            // retry then runs again.
            tracing::warn!(key = %self.key, error = %e, "cannot record the answer of an idempotent request");
        }
    }
}

/// The key of an `Idempotency-Key` field: a structured-field string (`"..."`), or,
/// leniently, the bare text; printable ASCII, at most [`MAX_KEY_LEN`] characters.
fn parse(header: &str) -> Result<String, ApiError> {
    let text = header.trim();
    let key = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    let printable = |c: char| c.is_ascii_graphic() || c == ' ';
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.chars().all(printable) || key.contains('"')
    {
        return Err(ApiError::bad_request(
            "invalid-idempotency-key",
            format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters, as a \
                 quoted string, e.g. Idempotency-Key: \"8e03978e-40d5-43e8-bc93-6894a57f9324\""
            ),
        ));
    }
    Ok(key.to_owned())
}

/// What tells two requests apart: the route, and the numbers as written.
fn fingerprint(route: &str, args: &RawValue) -> Vec<u8> {
    let mut hash = Sha256::new();
    hash.update(route.as_bytes());
    hash.update([0]);
    hash.update(args.get().as_bytes());
    hash.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_a_quoted_string_or_its_bare_text() {
        assert_eq!(parse(r#""abc-123""#).unwrap(), "abc-123");
        assert_eq!(parse("abc-123").unwrap(), "abc-123");
        assert_eq!(parse(&"k".repeat(255)).unwrap().len(), 255);
        for bad in [r#""""#, "", "é", &"k".repeat(256), "a\"b", "tab\there"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requests_differ_by_route_and_numbers() {
        let args = |t: &str| RawValue::from_string(t.into()).unwrap();
        let a = fingerprint("post_task", &args("[1, 2]"));
        assert_eq!(a, fingerprint("post_task", &args("[1, 2]")));
        assert_ne!(a, fingerprint("sync/sum", &args("[1, 2]")));
        assert_ne!(a, fingerprint("post_task", &args("[1, 3]")));
    }
}
