//! The session routes: a session's state (`GET /async/get_task_result`, and the same
//! at `GET /async/tasks/{session_id}`), waited for with `Prefer: wait=N` (a long poll),
//! and cancelling its task (`DELETE /async/tasks/{session_id}`).
//!
//! A long poll registers with the [`Waiters`](crate::waiters::Waiters), as a sync request
//! does, and adds this serve to the watchers of the task's queued mark
//! ([`Results::watch`](crate::store::Results::watch)): the worker that stores the
//! outcome, or the serve that cancels the task, announces it here, and the poll answers
//! within milliseconds.

use std::time::Duration;

use poem::web::Data;
use poem_openapi::param::{Header, Query};
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Serialize;
use tokio::time::Instant;

use super::body::{ExactJson, Numbers, ResultNumber};
use super::prefer::wait_preference;
use super::problem::{ApiError, OpError, Problem, Statuses};
use super::session_id::{self, SessionId};
use super::{examples, ApiTags, AppState};
use crate::auth::Caller;
use crate::config::TasksConfig;
use crate::store::results::{Final, Stored};
use crate::store::sessions::Session;
use crate::task::{Outcome, Status};

/// Task state as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum, Serialize)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Queued or being computed; `result` is null.
    Pending,
    /// Finished; `result` holds the sum.
    Done,
    /// The task could not be computed; `error` says why.
    Failed,
    /// Cancelled before a worker computed it; `result` is null.
    Cancelled,
}

/// A session's task as it stands now.
#[derive(Debug, Object, Serialize)]
#[oai(example)]
pub struct TaskResult {
    /// The session asked about.
    pub session_id: i64,
    /// The exact sum once `status` is `done`; null until then (and when `failed` or
    /// `cancelled`).
    #[oai(nullable)]
    pub result: Option<ResultNumber>,
    /// `pending`, `done`, `failed` or `cancelled`.
    pub status: TaskStatus,
    /// Why the task failed, when `status` is `failed`.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl poem_openapi::types::Example for TaskResult {
    fn example() -> Self {
        Self {
            session_id: examples::session(),
            result: Some(ResultNumber::example("0.3")),
            status: TaskStatus::Done,
            error: None,
        }
    }
}

impl TaskResult {
    /// The state of session `session_id` whose task ended so.
    pub fn ended(session_id: i64, end: Final, numbers: Option<Numbers>) -> Self {
        match end {
            Final::Finished(Outcome {
                status: Status::Done,
                result,
                ..
            }) => Self {
                session_id,
                result: result.map(|r| ResultNumber::written(r, numbers.unwrap_or_default())),
                status: TaskStatus::Done,
                error: None,
            },
            Final::Finished(Outcome { error, .. }) => Self {
                session_id,
                result: None,
                status: TaskStatus::Failed,
                error,
            },
            Final::Cancelled => Self::without_result(session_id, TaskStatus::Cancelled),
        }
    }

    /// A state with no result: pending or cancelled.
    pub fn without_result(session_id: i64, status: TaskStatus) -> Self {
        Self {
            session_id,
            result: None,
            status,
            error: None,
        }
    }
}

/// A session that does not exist, or whose result expired: the problem a poll of it
/// would get.
#[derive(Debug, Object, Serialize)]
pub struct SessionProblem {
    /// The session named.
    pub session_id: i64,
    /// The problem details a poll of the session answers (404 or 410).
    pub problem: Problem,
}

impl SessionProblem {
    pub fn of(session_id: i64, error: ApiError) -> Self {
        Self {
            session_id,
            problem: error.problem(),
        }
    }
}

#[derive(ApiResponse)]
enum StateResponse {
    /// The task's state, with its result once done.
    #[oai(status = 200)]
    Found(
        ExactJson<TaskResult>,
        /// `wait=N` when the request's `Prefer: wait` made it wait (RFC 7240).
        #[oai(header = "Preference-Applied")]
        Option<String>,
    ),
}

#[derive(ApiResponse)]
enum CancelResponse {
    /// Cancelled (now, or by an earlier request): no worker stores its result, and
    /// polls answer `status: "cancelled"`.
    #[oai(status = 200)]
    Cancelled(ExactJson<TaskResult>),
    /// The task ended before it could be cancelled: done or failed, as the body says,
    /// with its result. Nothing was changed.
    #[oai(status = 409)]
    Ended(ExactJson<TaskResult>),
}

/// How the session routes can fail.
pub struct SessionErrors;

impl Statuses for SessionErrors {
    const LIST: &'static [u16] = &[400, 401, 404, 410, 429, 503];
}

/// The session routes.
pub struct SessionsApi;

#[OpenApi]
impl SessionsApi {
    /// Get a session's result
    ///
    /// `result` is null until the task is done, as `status` says: `pending` for as long
    /// as the task waits in the queue, however long. With `Prefer: wait=N` the request
    /// waits up to N seconds (at most `tasks.sync_timeout`) for the task to end and
    /// answers as soon as it does: a long poll. Answers 404 for an unknown session, and
    /// for another API key's, and 410 once its result expired, `tasks.result_ttl` after
    /// the task ran.
    #[oai(
        path = "/async/get_task_result",
        method = "get",
        tag = "ApiTags::Async"
    )]
    async fn get_task_result(
        &self,
        caller: Caller,
        state: Data<&AppState>,
        /// The `session_id` that `post_task` (or a 202 from `/sync/sum`) returned.
        #[oai(example = "examples::session")]
        session_id: SessionId,
        /// RFC 7240 preference: `wait=N` waits up to N seconds (at most
        /// `tasks.sync_timeout`) for the task to end.
        #[oai(name = "Prefer", example = "examples::prefer")]
        prefer: Header<Option<String>>,
        /// `string` writes the result as a JSON string of its exact text, for clients
        /// whose JSON reader rounds numbers to doubles; `number` (the default) as a number.
        #[oai(example = "examples::numbers")]
        numbers: Query<Option<Numbers>>,
    ) -> Result<StateResponse, OpError<SessionErrors>> {
        let SessionId(id) = session_id;
        Ok(state_of(&state, &caller, id, prefer.0.as_deref(), numbers.0).await?)
    }

    /// Get a session's result
    ///
    /// The same as `GET /async/get_task_result?session_id=...`, with `Prefer: wait=N`
    /// for a long poll, at the session's own URL.
    #[oai(
        path = "/async/tasks/:session_id",
        method = "get",
        tag = "ApiTags::Async"
    )]
    async fn get_task(
        &self,
        caller: Caller,
        state: Data<&AppState>,
        /// The `session_id` that `post_task` (or a 202 from `/sync/sum`) returned.
        #[oai(example = "examples::session")]
        session_id: session_id::Path,
        /// RFC 7240 preference: `wait=N` waits up to N seconds (at most
        /// `tasks.sync_timeout`) for the task to end.
        #[oai(name = "Prefer", example = "examples::prefer")]
        prefer: Header<Option<String>>,
        /// `string` writes the result as a JSON string of its exact text, for clients
        /// whose JSON reader rounds numbers to doubles; `number` (the default) as a number.
        #[oai(example = "examples::numbers")]
        numbers: Query<Option<Numbers>>,
    ) -> Result<StateResponse, OpError<SessionErrors>> {
        let session_id::Path(id) = session_id;
        Ok(state_of(&state, &caller, id, prefer.0.as_deref(), numbers.0).await?)
    }

    /// Cancel a session's task
    ///
    /// A task not computed yet is marked cancelled: a worker that takes it does not
    /// store its result (nor compute it, when it is large), and polls answer
    /// `status: "cancelled"`. Cancelling is
    /// cooperative: a task a worker computes meanwhile keeps its result, and the answer
    /// is then 409 with it. Cancelling a cancelled task answers 200 again.
    #[oai(
        path = "/async/tasks/:session_id",
        method = "delete",
        tag = "ApiTags::Async"
    )]
    async fn cancel_task(
        &self,
        caller: Caller,
        state: Data<&AppState>,
        /// The `session_id` that `post_task` (or a 202 from `/sync/sum`) returned.
        #[oai(example = "examples::session")]
        session_id: session_id::Path,
        /// `string` writes a result as a JSON string of its exact text, for clients
        /// whose JSON reader rounds numbers to doubles; `number` (the default) as a number.
        #[oai(example = "examples::numbers")]
        numbers: Query<Option<Numbers>>,
    ) -> Result<CancelResponse, OpError<SessionErrors>> {
        let session_id::Path(id) = session_id;
        let session = owned_session(&state, &caller, id).await?;
        let ttl = state.config.tasks.result_ttl;
        // A session with no key in Redis is queued still when it is younger than results
        // live: its mark could not be written (see `state_of`).
        let may_be_queued = session.age < ttl;
        match state.results.cancel(session.task_id, may_be_queued).await? {
            Stored::Final(Final::Cancelled) => {
                tracing::info!(task_id = %session.task_id, session_id = id, "task cancelled");
                Ok(CancelResponse::Cancelled(ExactJson::new(
                    TaskResult::without_result(id, TaskStatus::Cancelled),
                )))
            }
            Stored::Final(end) => Ok(CancelResponse::Ended(ExactJson::new(TaskResult::ended(
                id, end, numbers.0,
            )))),
            Stored::Missing | Stored::Queued => Err(expired(id, ttl).into()),
        }
    }
}

/// The session `id`, when the caller owns it. Another key's session is answered as one
/// that does not exist: its id tells the caller nothing. A purged session is gone.
pub async fn owned_session(
    state: &AppState,
    caller: &Caller,
    id: i64,
) -> Result<Session, ApiError> {
    match state.sessions.find(id).await? {
        Some(session) if session.owner == caller.owner() => Ok(session),
        Some(_) => Err(unknown(id)),
        None if !state.sessions.purged(&[id]).await?.is_empty() => {
            Err(removed(id, &state.config.tasks))
        }
        None => Err(unknown(id)),
    }
}

/// The 410 of a session purged (see [`crate::store::purge`]).
pub fn removed(id: i64, tasks: &TasksConfig) -> ApiError {
    ApiError::gone(
        "session-removed",
        format!(
            "session {id} is older than {} (tasks.result_ttl + tasks.session_retention): \
             its result expired and the session was removed; submit the sum again",
            crate::config::format_duration(tasks.result_ttl + tasks.session_retention)
        ),
    )
}

/// The 404 of a session that does not exist (or is another key's).
pub fn unknown(id: i64) -> ApiError {
    ApiError::not_found(
        "unknown-session",
        format!("no session has id {id}: use the id that post_task returned"),
    )
}

/// The 410 of a session whose result expired.
pub fn expired(id: i64, ttl: Duration) -> ApiError {
    ApiError::gone(
        "result-expired",
        format!(
            "the result of session {id} is older than {} (tasks.result_ttl) and was \
             deleted: submit the sum again",
            crate::config::format_duration(ttl)
        ),
    )
}

/// A session's state from what its task's key holds. No outcome and no queued mark:
/// the result expired, unless the session is younger than results live (its mark could
/// not be written, and the task is queued still).
pub fn read_state(
    id: i64,
    session: &Session,
    stored: Stored,
    ttl: Duration,
    numbers: Option<Numbers>,
) -> Result<TaskResult, ApiError> {
    match stored {
        Stored::Final(end) => Ok(TaskResult::ended(id, end, numbers)),
        Stored::Queued => Ok(TaskResult::without_result(id, TaskStatus::Pending)),
        Stored::Missing if session.age >= ttl => Err(expired(id, ttl)),
        Stored::Missing => Ok(TaskResult::without_result(id, TaskStatus::Pending)),
    }
}

/// How often a long poll reads the key of a task it cannot watch (its queued mark was
/// never written, so no notice comes): the poll still answers within this of the end.
pub const UNWATCHED_READ_EVERY: Duration = Duration::from_secs(1);

/// The state of session `id`, at once or, with `Prefer: wait=N`, once its task ended
/// or N seconds passed.
async fn state_of(
    state: &AppState,
    caller: &Caller,
    id: i64,
    prefer: Option<&str>,
    numbers: Option<Numbers>,
) -> Result<StateResponse, ApiError> {
    let session = owned_session(state, caller, id).await?;
    let ttl = state.config.tasks.result_ttl;
    let wait = wait_preference(prefer)
        .map(|w| w.min(state.config.tasks.sync_timeout))
        .filter(|w| !w.is_zero());
    let Some(wait) = wait else {
        let stored = state.results.get(session.task_id).await?;
        let found = read_state(id, &session, stored, ttl, numbers)?;
        return Ok(StateResponse::Found(ExactJson::new(found), None));
    };
    let stored = Box::pin(long_poll(state, caller, &session, Instant::now() + wait)).await?;
    let found = read_state(id, &session, stored, ttl, numbers)?;
    let applied = format!("wait={}", wait.as_secs());
    Ok(StateResponse::Found(ExactJson::new(found), Some(applied)))
}

/// What the session's task key holds once the task ended, or at `deadline`. Holds one
/// of the caller's waiting slots and one of this serve's while it waits.
async fn long_poll(
    state: &AppState,
    caller: &Caller,
    session: &Session,
    deadline: Instant,
) -> Result<Stored, ApiError> {
    let task_id = session.task_id;
    let _slot = caller.start_waiting().await?;
    let mut waiter = state.waiters.register(task_id).map_err(|full| {
        tracing::warn!("refusing a long poll: {full}");
        ApiError::unavailable("too-many-waiting", full.to_string())
    })?;
    // Registered first: a notice that comes once the watch is in place finds the waiter.
    let stored = state
        .results
        .watch(task_id, state.waiters.instance())
        .await?;
    let watched = match stored {
        Stored::Queued => state.waiters.check().is_ok(),
        Stored::Missing if session.age < state.config.tasks.result_ttl => false,
        ended_or_expired => return Ok(ended_or_expired),
    };
    let mut listening = true;
    loop {
        let read_at = if watched && listening {
            deadline
        } else {
            (Instant::now() + UNWATCHED_READ_EVERY).min(deadline)
        };
        tokio::select! {
            end = &mut waiter.end, if listening => match end {
                Ok(end) => return Ok(Stored::Final(end)),
                // The waiters stopped (the serve is shutting down): read the key.
                Err(_) => listening = false,
            },
            _ = tokio::time::sleep_until(read_at) => {}
        }
        // At the deadline (or the next unwatched read) the key is the source of truth:
        // a notice may have been lost while the subscription was down.
        let stored = state.results.get(task_id).await?;
        if matches!(stored, Stored::Final(_)) || Instant::now() >= deadline {
            return Ok(stored);
        }
    }
}
