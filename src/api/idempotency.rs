//! `Idempotency-Key` on `post_task`, `sync/sum` and their bulk forms, after the IETF httpapi draft
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

use std::future::Future;

use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::body::{BatchRequest, SumRequest};
use super::problem::ApiError;
use super::AppState;
use crate::auth::Caller;
use crate::store::idempotency::{Claim, IdempotencyKeys, Kept};

/// The longest key taken: a UUID is 36 characters; room for any client's scheme.
const MAX_KEY_LEN: usize = 255;

/// A request body a key is tied to.
pub trait Keyed {
    /// The numbers as sent: a key sent again must come with the same.
    fn numbers(&self) -> &RawValue;
}

impl Keyed for SumRequest {
    fn numbers(&self) -> &RawValue {
        &self.args
    }
}

impl Keyed for BatchRequest {
    fn numbers(&self) -> &RawValue {
        &self.raw
    }
}

/// An answer a key keeps and gives again.
pub trait Idempotent: Sized {
    /// The answer as the key keeps it.
    fn kept(&self) -> Kept;
    /// A kept answer, given again with `Idempotent-Replayed: true`.
    fn replayed(kept: Kept) -> Self;
}

/// Answers the request to `route` with `body` by `work`, once per `Idempotency-Key`
/// (`header`, None without one): the first request with a key runs and its success is
/// kept; the same request again gets the kept answer; see the module for the rest.
/// The key's reads and writes are boxed, so a waiting request does not carry their room.
pub async fn once<B, R, F>(
    state: &AppState,
    caller: &Caller,
    header: Option<&str>,
    route: &str,
    body: B,
    work: impl FnOnce(B) -> F,
) -> Result<R, ApiError>
where
    B: Keyed,
    R: Idempotent,
    F: Future<Output = Result<R, ApiError>>,
{
    let started = Box::pin(start(state, caller, header, route, body.numbers())).await?;
    let running = match started {
        Start::Replay(kept) => return Ok(R::replayed(kept)),
        Start::Run(running) => running,
    };
    let answer = work(body).await;
    if let Some(running) = running {
        Box::pin(running.finish(answer.as_ref().ok().map(R::kept))).await;
    }
    answer
}

/// A key taken by a request, for as long as it runs.
struct Running {
    keys: IdempotencyKeys,
    owner: i64,
    key: String,
}

/// What a request with an `Idempotency-Key` does.
enum Start {
    /// Runs, under the key when it has one.
    Run(Option<Running>),
    /// Answers what the first request with the key answered.
    Replay(Kept),
}

/// Reads the request's `Idempotency-Key` (None without one) and takes it for the
/// request to `route` with numbers `args`; or says why the request must not run.
async fn start(
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
    async fn finish(self, answer: Option<Kept>) {
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
