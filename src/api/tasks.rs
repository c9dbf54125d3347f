//! The sum routes: synchronous (`/sync/sum`) and asynchronous (`/async/...`).

use std::time::Duration;

use poem::web::Data;
use poem_openapi::param::{Header, Query};
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Serialize;
use uuid::Uuid;

use super::body::{ExactJson, Numbers, ResultNumber, SumRequest};
use super::idempotency::{self, Idempotent};
use super::observe;
use super::prefer::wait_preference;
use super::problem::{ApiError, OpError, Statuses};
use super::sessions::TaskStatus;
use super::{examples, ApiTags, AppState};
use crate::auth::{Caller, WaitSlot};
use crate::dependency::{within, Dependency, Unavailable};
use crate::metrics::TaskKind;
use crate::store::idempotency::Kept;
use crate::store::results::Final;
use crate::task::{Outcome, Status, TaskMessage};
use crate::waiters::Waiter;

/// The sum of a synchronous request.
#[derive(Debug, Object, Serialize)]
#[oai(example)]
pub struct SumResult {
    /// The exact sum of `args`, as a JSON number.
    pub result: ResultNumber,
}

impl poem_openapi::types::Example for SumResult {
    fn example() -> Self {
        Self {
            result: ResultNumber::example("3.8"),
        }
    }
}

/// A synchronous request that passed its deadline: poll `Location` for the result.
#[derive(Debug, Object, Serialize)]
#[oai(example)]
pub struct Pending {
    /// The session to poll with `GET /async/get_task_result?session_id=...`.
    pub session_id: i64,
    /// Always null here: the sum is not finished yet.
    #[oai(nullable)]
    pub result: Option<ResultNumber>,
    /// Always `pending` here.
    pub status: TaskStatus,
}

impl poem_openapi::types::Example for Pending {
    fn example() -> Self {
        Self {
            session_id: examples::session(),
            result: None,
            status: TaskStatus::Pending,
        }
    }
}

/// A submitted task.
#[derive(Debug, Object, Serialize)]
#[oai(example)]
pub struct Submitted {
    /// The session to poll with `GET /async/get_task_result?session_id=...`.
    pub session_id: i64,
    /// Present when the task is queued but its result cannot be stored yet (Redis is
    /// down or refuses writes): why, and that it is stored once Redis takes writes again.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl poem_openapi::types::Example for Submitted {
    fn example() -> Self {
        Self {
            session_id: examples::session(),
            warning: None,
        }
    }
}

#[derive(ApiResponse)]
enum SyncResponse {
    /// The exact sum.
    #[oai(status = 200)]
    Done(
        ExactJson<SumResult>,
        /// `wait=N` when the request's `Prefer: wait` set the deadline (RFC 7240).
        #[oai(header = "Preference-Applied")]
        Option<String>,
        /// `true` when this is the kept answer of an earlier request with the same
        /// `Idempotency-Key`.
        #[oai(header = "Idempotent-Replayed")]
        Option<bool>,
    ),
    /// The deadline passed before a worker finished; the task goes on. Poll the
    /// `Location` for its result.
    #[oai(status = 202)]
    Pending(
        ExactJson<Pending>,
        /// Where to poll for the result.
        #[oai(header = "Location")]
        String,
        /// `wait=N` when the request's `Prefer: wait` set the deadline (RFC 7240).
        #[oai(header = "Preference-Applied")]
        Option<String>,
        /// `true` when this is the kept answer of an earlier request with the same
        /// `Idempotency-Key`.
        #[oai(header = "Idempotent-Replayed")]
        Option<bool>,
    ),
}

impl Idempotent for SyncResponse {
    fn kept(&self) -> Kept {
        match self {
            Self::Done(body, ..) => Kept::of(200, body.text()),
            Self::Pending(body, location, ..) => Kept {
                location: Some(location.clone()),
                ..Kept::of(202, body.text())
            },
        }
    }

    fn replayed(kept: Kept) -> Self {
        match kept.location {
            Some(location) if kept.status == 202 => {
                Self::Pending(ExactJson::kept(kept.body), location, None, Some(true))
            }
            _ => Self::Done(ExactJson::kept(kept.body), None, Some(true)),
        }
    }
}

#[derive(ApiResponse)]
enum SubmitResponse {
    /// The task is queued and its session stored.
    #[oai(status = 200)]
    Submitted(
        ExactJson<Submitted>,
        /// `true` when this is the kept answer of an earlier request with the same
        /// `Idempotency-Key`.
        #[oai(header = "Idempotent-Replayed")]
        Option<bool>,
    ),
}

impl Idempotent for SubmitResponse {
    fn kept(&self) -> Kept {
        let Self::Submitted(body, _) = self;
        Kept::of(200, body.text())
    }

    fn replayed(kept: Kept) -> Self {
        Self::Submitted(ExactJson::kept(kept.body), Some(true))
    }
}

/// How `/sync/sum` and `/async/post_task` can fail.
pub struct SubmitErrors;

impl Statuses for SubmitErrors {
    const LIST: &'static [u16] = &[400, 401, 408, 409, 413, 415, 422, 429, 503];
}

/// The sum routes.
pub struct TasksApi;

#[OpenApi]
impl TasksApi {
    /// Sum numbers and wait for the result
    ///
    /// Queues the sum and waits for a worker to compute it, without blocking the server
    /// while it waits. Answers 200 with the exact sum; or, when the deadline passes first
    /// (`tasks.sync_timeout`, or less with `Prefer: wait=N`), 202 with a session to poll,
    /// within 2 s of the deadline. Answers 503 at once when no worker consumes the task
    /// queue, when Redis refuses writes, or when `limits.max_sync_waiters` requests wait
    /// on this server already.
    #[oai(path = "/sync/sum", method = "post", tag = "ApiTags::Sync")]
    async fn sync_sum(
        &self,
        caller: Caller,
        state: Data<&AppState>,
        body: SumRequest,
        /// RFC 7240 preference: `wait=N` caps the wait at N seconds (at most
        /// `tasks.sync_timeout`).
        #[oai(name = "Prefer", example = "examples::prefer")]
        prefer: Header<Option<String>>,
        /// `string` writes the result as a JSON string of its exact text, for clients
        /// whose JSON reader rounds numbers to doubles; `number` (the default) as a number.
        #[oai(example = "examples::numbers")]
        numbers: Query<Option<Numbers>>,
        /// Sending the request again with the same key answers what the first answered,
        /// rather than summing again (IETF draft `Idempotency-Key`). A key of your own
        /// for each request, e.g. `"8e03978e-40d5-43e8-bc93-6894a57f9324"`.
        #[oai(
            name = "Idempotency-Key",
            validator(pattern = r#"^"?[ !#-~]{1,255}"?$"#)
        )]
        idempotency_key: Header<Option<String>>,
    ) -> Result<SyncResponse, OpError<SubmitErrors>> {
        let deadline = SyncDeadline::of(prefer.0.as_deref(), state.config.tasks.sync_timeout);
        let key = idempotency_key.0.as_deref();
        let (state, caller) = (*state, &caller);
        let sum = |body| sum_and_wait(state, caller, body, deadline, numbers.0);
        Ok(idempotency::once(state, caller, key, "sync/sum", body, sum).await?)
    }

    /// Queue a sum and get a session id
    ///
    /// Answers once RabbitMQ confirmed the task and PostgreSQL stored its session; poll
    /// `GET /async/get_task_result` with the session id for the result. A task is taken
    /// while Redis is down or refuses writes too: it waits in the queue, and `warning`
    /// says that its result will be stored once Redis takes writes again.
    #[oai(path = "/async/post_task", method = "post", tag = "ApiTags::Async")]
    async fn post_task(
        &self,
        caller: Caller,
        state: Data<&AppState>,
        body: SumRequest,
        /// Sending the request again with the same key answers what the first answered
        /// (the same `session_id`), rather than queueing a second task (IETF draft
        /// `Idempotency-Key`). A key of your own for each request, e.g.
        /// `"8e03978e-40d5-43e8-bc93-6894a57f9324"`.
        #[oai(
            name = "Idempotency-Key",
            validator(pattern = r#"^"?[ !#-~]{1,255}"?$"#)
        )]
        idempotency_key: Header<Option<String>>,
    ) -> Result<SubmitResponse, OpError<SubmitErrors>> {
        let key = idempotency_key.0.as_deref();
        let (state, caller) = (*state, &caller);
        let submit = |body| submit(state, caller, body);
        Ok(idempotency::once(state, caller, key, "post_task", body, submit).await?)
    }
}

/// Queues the sum of a sync request and waits for it until `deadline`.
async fn sum_and_wait(
    state: &AppState,
    caller: &Caller,
    body: SumRequest,
    deadline: SyncDeadline,
    numbers: Option<Numbers>,
) -> Result<SyncResponse, ApiError> {
    let _waiting = Box::pin(admit_sync(state, caller)).await?;
    let SumRequest { args, count, share } = body;
    let task_id = Uuid::new_v4();
    let waiter = state.waiters.register(task_id).map_err(|full| {
        tracing::warn!("refusing a sync request: {full}");
        ApiError::unavailable("too-many-waiting", full.to_string())
    })?;
    let task = TaskMessage::new(task_id, args, Some(state.waiters.instance().to_owned()))
        .checked_against(state.config.limits.max_result_digits);
    // The calls before and after the wait are boxed: a future is as large as its
    // largest state, and inline they would make every waiting request carry the room a
    // publish, a Redis read or an insert needs (see benches/waiters.rs).
    let published = Box::pin(observe::publish(state, task, TaskKind::Sync)).await;
    // The numbers are the broker's now (or refused): the body's memory is free.
    drop(share);
    published?;
    tracing::debug!(%task_id, items = count, "sync task queued");
    match end_by(state, waiter, deadline.at).await {
        Some(Final::Finished(outcome)) => sync_outcome(outcome, deadline.applied, numbers),
        // Only a session's task can be cancelled, and this one has none yet.
        Some(Final::Cancelled) => Err(ApiError::unprocessable(
            "task-cancelled",
            "the task was cancelled before a worker computed it: submit the sum again",
        )),
        None => Box::pin(pending(state, task_id, caller, deadline)).await,
    }
}

/// Queues a submitted task and stores its session.
async fn submit(
    state: &AppState,
    caller: &Caller,
    body: SumRequest,
) -> Result<SubmitResponse, ApiError> {
    let SumRequest { args, count, share } = body;
    let task_id = Uuid::new_v4();
    // Publish first: a session must never point to a task that was not queued.
    let task = TaskMessage::new(task_id, args, None)
        .checked_against(state.config.limits.max_result_digits);
    let published = observe::publish(state, task, TaskKind::Async).await;
    drop(share);
    published?;
    let (session_id, marked) = tokio::join!(
        state.sessions.create(task_id, caller.owner()),
        mark_queued(state, vec![task_id])
    );
    let session_id = session_id?;
    let warning = marked.err().map(|e| {
        tracing::warn!(%task_id, error = %e, "accepting a task whose result cannot be stored yet");
        format!(
            "{e}. The task is queued: its result is stored once Redis takes writes again; \
             poll as usual"
        )
    });
    tracing::debug!(%task_id, session_id, items = count, "async task queued");
    let submitted = Submitted {
        session_id,
        warning,
    };
    Ok(SubmitResponse::Submitted(ExactJson::new(submitted), None))
}

/// When a sync request stops waiting: `tasks.sync_timeout` after it arrived, or sooner
/// when its `Prefer: wait=N` asks, which is then echoed as `Preference-Applied`.
pub struct SyncDeadline {
    pub at: tokio::time::Instant,
    pub applied: Option<String>,
}

impl SyncDeadline {
    pub fn of(prefer: Option<&str>, longest: Duration) -> Self {
        let preferred = wait_preference(prefer).map(|w| w.min(longest));
        Self {
            at: tokio::time::Instant::now() + preferred.unwrap_or(longest),
            applied: preferred.map(|w| format!("wait={}", w.as_secs())),
        }
    }
}

/// Whether a sync request may wait here: its key has a waiting slot free, and results
/// can reach this instance, the broker takes tasks and a worker consumes them. Fails at
/// once rather than after the deadline.
pub async fn admit_sync(state: &AppState, caller: &Caller) -> Result<Option<WaitSlot>, ApiError> {
    state.waiters.check()?;
    state.publisher.check()?;
    if state.publisher.status().consumers == Some(0) {
        return Err(ApiError::unavailable(
            "no-workers",
            format!(
                "RabbitMQ has no worker consuming the task queue {}: start `sumsvc work`, \
                 or use POST /async/post_task to queue the sum for later",
                state.publisher.queue()
            ),
        ));
    }
    Ok(caller.start_waiting().await?)
}

/// How long after its deadline a sync request still reads its result (and marks its task
/// queued, in the same round trip): a Redis that does not answer by then cannot say
/// whether the task is done, and the request answers with a session to poll.
pub const READ_AT_DEADLINE: Duration = Duration::from_millis(500);

/// How long after its deadline a sync request may take to answer: the read above and
/// the session's insert together. Past it, 503 names the dependency that did not answer.
pub const AFTER_DEADLINE: Duration = Duration::from_secs(2);

/// How the waited-for task ended, heard by `deadline` or read from Redis then; None
/// while it has not (or Redis cannot say). Reading at the deadline marks the task
/// queued, so the session the request then gets answers pending until it runs.
async fn end_by(
    state: &AppState,
    mut waiter: Waiter,
    deadline: tokio::time::Instant,
) -> Option<Final> {
    if let Ok(Ok(end)) = tokio::time::timeout_at(deadline, &mut waiter.end).await {
        return Some(end);
    }
    // Timed out (or the notice was lost): the key is the source of truth. If Redis
    // cannot say, the task is still queued: answer with a session to poll.
    let task_id = waiter.task_id();
    drop(waiter);
    let read = within(
        Dependency::Redis,
        READ_AT_DEADLINE,
        Box::pin(state.results.mark_queued(task_id)),
    );
    match read.await {
        Ok(stored) => stored.ended(),
        Err(e) => {
            tracing::warn!(%task_id, error = %e, "cannot read the result at the deadline");
            None
        }
    }
}

/// Marks submitted tasks queued, so their sessions answer pending until a worker
/// stores their outcomes; fails at once when Redis is known not to take writes. A
/// failure does not refuse the tasks: they wait in the queue, and the answer's warning
/// says so.
pub async fn mark_queued(state: &AppState, task_ids: Vec<Uuid>) -> Result<(), Unavailable> {
    state.waiters.writable()?;
    // Through the mark writer, whose pipelines carry many requests' marks.
    within(
        Dependency::Redis,
        state.config.redis.timeout,
        state.marks.mark(task_ids),
    )
    .await
}

/// The 202 of a sync request past its deadline: a session to poll, stored within
/// [`AFTER_DEADLINE`] of the deadline.
async fn pending(
    state: &AppState,
    task_id: Uuid,
    caller: &Caller,
    deadline: SyncDeadline,
) -> Result<SyncResponse, ApiError> {
    let by = deadline.at + AFTER_DEADLINE;
    let left = by.saturating_duration_since(tokio::time::Instant::now());
    let session_id = within(
        Dependency::Postgres,
        left,
        state.sessions.create(task_id, caller.owner()),
    )
    .await?;
    tracing::info!(%task_id, session_id, "sync deadline passed; answering 202");
    Ok(SyncResponse::Pending(
        ExactJson::new(Pending {
            session_id,
            result: None,
            status: TaskStatus::Pending,
        }),
        format!("/async/get_task_result?session_id={session_id}"),
        deadline.applied,
        None,
    ))
}

fn sync_outcome(
    outcome: Outcome,
    applied: Option<String>,
    numbers: Option<Numbers>,
) -> Result<SyncResponse, ApiError> {
    match (outcome.status, outcome.result) {
        (Status::Done, Some(result)) => Ok(SyncResponse::Done(
            ExactJson::new(SumResult {
                result: ResultNumber::written(result, numbers.unwrap_or_default()),
            }),
            applied,
            None,
        )),
        (_, _) => Err(ApiError::unprocessable(
            "task-failed",
            format!(
                "the sum could not be computed: {}",
                outcome.error.as_deref().unwrap_or("no reason given")
            ),
        )),
    }
}
