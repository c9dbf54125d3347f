//! Work in bulk: many sums submitted in one request (`POST /async/post_tasks`), summed
//! and waited for in one (`POST /sync/sums`), and many sessions read in one
//! (`POST /async/get_task_results`).
//!
//! One request pays one round trip to each store however many tasks it holds: the
//! publishes are in flight together and their confirms come back together, one
//! PostgreSQL statement stores every session, one Redis pipeline marks every task
//! queued, one `MGET` reads every result. A submit is all or nothing: every sum is
//! checked before any is queued, and the session ids are handed out only once every
//! task is confirmed and every session stored. A read answers each session in place,
//! so one unknown or expired id does not fail the others.

use futures_util::future::join_all;
use poem::web::Data;
use poem_openapi::param::{Header, Query};
use poem_openapi::{ApiResponse, Object, OpenApi, Union};
use serde::{Deserialize, Serialize};

use super::body::{BatchRequest, Bounded, ExactJson, Numbers, ResultNumber, Shape};
use super::idempotency::{self, Idempotent};
use super::problem::{ApiError, OpError, Statuses};
use super::sessions::{self, SessionProblem, TaskResult, TaskStatus};
use super::tasks::{
    admit_sync, mark_queued, SubmitErrors, SyncDeadline, AFTER_DEADLINE, READ_AT_DEADLINE,
};
use super::{current, examples, observe, ApiTags, AppState};
use crate::auth::Caller;
use crate::dependency::{within, Dependency};
use crate::metrics::TaskKind;
use crate::store::idempotency::Kept;
use crate::store::results::{Final, Stored};
use crate::task::{Outcome, Status, TaskMessage};
use uuid::Uuid;

/// The answer of a bulk submit.
#[derive(Debug, Object, Serialize)]
#[oai(example)]
pub struct SubmittedBatch {
    /// A session per sum, in the order of `tasks`: poll each as `post_task`'s.
    pub session_ids: Vec<i64>,
    /// Present when the tasks are queued but their results cannot be stored yet (Redis
    /// is down or refuses writes): why, and that they are stored once Redis takes
    /// writes again.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl poem_openapi::types::Example for SubmittedBatch {
    fn example() -> Self {
        Self {
            session_ids: vec![examples::session(), 4827519034627781],
            warning: None,
        }
    }
}

/// The sums of a bulk sync request, every one done by its deadline.
#[derive(Debug, Object, Serialize)]
#[oai(example)]
pub struct SumResults {
    /// The exact sum of each of `tasks`, in order.
    pub results: Vec<ResultNumber>,
}

impl poem_openapi::types::Example for SumResults {
    fn example() -> Self {
        Self {
            results: vec![ResultNumber::example("3.5"), ResultNumber::example("0.3")],
        }
    }
}

/// One sum of a bulk sync request past its deadline: its result, or the session to
/// poll for it.
#[derive(Debug, Object, Serialize)]
pub struct BatchEntry {
    /// The session to poll, for a sum not done by the deadline.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<i64>,
    /// The exact sum once `status` is `done`; null while `pending`.
    #[oai(nullable)]
    pub result: Option<ResultNumber>,
    /// `done` or `pending`.
    pub status: TaskStatus,
}

/// A bulk sync request that passed its deadline with some sums not done: each sum in
/// order, with its result or its session.
#[derive(Debug, Object, Serialize)]
#[oai(example)]
pub struct PendingResults {
    /// One entry per sum of `tasks`, in order: its result when done, else its session.
    pub results: Vec<BatchEntry>,
}

impl poem_openapi::types::Example for PendingResults {
    fn example() -> Self {
        Self {
            results: vec![
                BatchEntry {
                    session_id: None,
                    result: Some(ResultNumber::example("3.5")),
                    status: TaskStatus::Done,
                },
                BatchEntry {
                    session_id: Some(examples::session()),
                    result: None,
                    status: TaskStatus::Pending,
                },
            ],
        }
    }
}

#[derive(ApiResponse)]
enum SyncBatchResponse {
    /// Every sum, in order.
    #[oai(status = 200)]
    Done(
        ExactJson<SumResults>,
        /// `wait=N` when the request's `Prefer: wait` set the deadline (RFC 7240).
        #[oai(header = "Preference-Applied")]
        Option<String>,
        /// `true` when this is the kept answer of an earlier request with the same
        /// `Idempotency-Key`.
        #[oai(header = "Idempotent-Replayed")]
        Option<bool>,
    ),
    /// The deadline passed before every sum was done: the results of those done, and a
    /// session to poll for each of the others, which go on.
    #[oai(status = 202)]
    Pending(
        ExactJson<PendingResults>,
        /// `wait=N` when the request's `Prefer: wait` set the deadline (RFC 7240).
        #[oai(header = "Preference-Applied")]
        Option<String>,
        /// `true` when this is the kept answer of an earlier request with the same
        /// `Idempotency-Key`.
        #[oai(header = "Idempotent-Replayed")]
        Option<bool>,
    ),
}

impl Idempotent for SyncBatchResponse {
    fn kept(&self) -> Kept {
        match self {
            Self::Done(body, ..) => Kept::of(200, body.text()),
            Self::Pending(body, ..) => Kept::of(202, body.text()),
        }
    }

    fn replayed(kept: Kept) -> Self {
        match kept.status {
            202 => Self::Pending(ExactJson::kept(kept.body), None, Some(true)),
            _ => Self::Done(ExactJson::kept(kept.body), None, Some(true)),
        }
    }
}

#[derive(ApiResponse)]
enum SubmitBatchResponse {
    /// Every task is queued and every session stored.
    #[oai(status = 200)]
    Submitted(
        ExactJson<SubmittedBatch>,
        /// `true` when this is the kept answer of an earlier request with the same
        /// `Idempotency-Key`.
        #[oai(header = "Idempotent-Replayed")]
        Option<bool>,
    ),
}

impl Idempotent for SubmitBatchResponse {
    fn kept(&self) -> Kept {
        let Self::Submitted(body, _) = self;
        Kept::of(200, body.text())
    }

    fn replayed(kept: Kept) -> Self {
        Self::Submitted(ExactJson::kept(kept.body), Some(true))
    }
}

/// The body of `POST /async/get_task_results`.
#[derive(Debug, Object, Deserialize)]
#[oai(example)]
pub struct SessionList {
    /// The sessions to read, as `post_task` (or `post_tasks`) returned them: 1 to
    /// `limits.max_batch` (1000 unless configured otherwise) positive integers. Each is
    /// answered in the same place.
    #[oai(validator(min_items = 1, max_items = 1000, minimum(value = "1")))]
    pub session_ids: Vec<i64>,
}

impl Shape for SessionList {
    const SHAPE: &'static str = "send a JSON object with a `session_ids` array of session \
                                 ids, e.g. {\"session_ids\": [5813027361994815]}";
}

impl poem_openapi::types::Example for SessionList {
    fn example() -> Self {
        Self {
            session_ids: vec![examples::session(), 4827519034627781],
        }
    }
}

/// One session's answer in a bulk read: its state, or the problem a poll of it gets.
#[derive(Debug, Union, Serialize)]
#[oai(one_of)]
#[serde(untagged)]
pub enum SessionState {
    /// The session's state, as `get_task_result` answers it.
    Found(TaskResult),
    /// The session does not exist (404), or it expired or was removed (410).
    Problem(SessionProblem),
}

/// The answer of a bulk read: one entry per session named, in the order named.
#[derive(Debug, Object, Serialize)]
pub struct SessionStates {
    /// One entry per id of `session_ids`, in order: the session's state, or the problem
    /// a poll of it would get.
    pub results: Vec<SessionState>,
}

#[derive(ApiResponse)]
enum StatesResponse {
    /// One entry per session named, in order.
    #[oai(status = 200)]
    Found(ExactJson<SessionStates>),
}

/// How a bulk read can fail.
pub struct ReadErrors;

impl Statuses for ReadErrors {
    const LIST: &'static [u16] = &[400, 401, 408, 413, 415, 429, 503];
}

/// The bulk routes.
pub struct BulkApi;

#[OpenApi]
impl BulkApi {
    /// Sum many lists and wait for the results
    ///
    /// The sums of `tasks`, in order, waiting as `sync/sum` does (`tasks.sync_timeout`,
    /// or less with `Prefer: wait=N`) without blocking the server. Answers 200 with
    /// every sum; or, when the deadline passes first, 202 with the results of those
    /// done and a session to poll for each of the others. Checked whole before anything
    /// is queued, as `post_tasks` is; 503 at once when no worker consumes the task
    /// queue, or when Redis refuses writes. Each sum holds one of the server's
    /// `limits.max_sync_waiters`; the request one of its API key's.
    #[oai(path = "/sync/sums", method = "post", tag = "ApiTags::Sync")]
    async fn sync_sums(
        &self,
        caller: Caller,
        state: Data<&AppState>,
        body: BatchRequest,
        /// RFC 7240 preference: `wait=N` caps the wait at N seconds (at most
        /// `tasks.sync_timeout`).
        #[oai(name = "Prefer", example = "examples::prefer")]
        prefer: Header<Option<String>>,
        /// `string` writes results as JSON strings of their exact text, for clients
        /// whose JSON reader rounds numbers to doubles; `number` (the default) as numbers.
        #[oai(example = "examples::numbers")]
        numbers: Query<Option<Numbers>>,
        /// Sending the request again with the same key answers what the first answered,
        /// rather than summing again (IETF draft `Idempotency-Key`). A key of your own
        /// for each request.
        #[oai(
            name = "Idempotency-Key",
            validator(pattern = r#"^"?[ !#-~]{1,255}"?$"#)
        )]
        idempotency_key: Header<Option<String>>,
    ) -> Result<SyncBatchResponse, OpError<SubmitErrors>> {
        let deadline = SyncDeadline::of(prefer.0.as_deref(), state.config.tasks.sync_timeout);
        let key = idempotency_key.0.as_deref();
        let (state, caller) = (*state, &caller);
        let sum = |body| Box::pin(sums_and_wait(state, caller, body, deadline, numbers.0));
        Ok(idempotency::once(state, caller, key, "sync/sums", body, sum).await?)
    }

    /// Queue many sums and get a session id for each
    ///
    /// All or nothing: every sum is checked first (a 400, 413 or 422 names the index of
    /// the first bad one), and the answer is 200, with a session per sum in the order
    /// given, only once RabbitMQ confirmed every task and PostgreSQL stored every
    /// session. On a failure midway no session is handed out. With API keys the request
    /// counts as one request per sum against `auth.rate`; a batch larger than
    /// `auth.burst` goes once the key's whole burst is there, and the key then waits
    /// until its sums are paid for.
    #[oai(path = "/async/post_tasks", method = "post", tag = "ApiTags::Async")]
    async fn post_tasks(
        &self,
        caller: Caller,
        state: Data<&AppState>,
        body: BatchRequest,
        /// Sending the request again with the same key answers what the first answered
        /// (the same `session_ids`), rather than queueing the sums again (IETF draft
        /// `Idempotency-Key`). A key of your own for each request.
        #[oai(
            name = "Idempotency-Key",
            validator(pattern = r#"^"?[ !#-~]{1,255}"?$"#)
        )]
        idempotency_key: Header<Option<String>>,
    ) -> Result<SubmitBatchResponse, OpError<SubmitErrors>> {
        let key = idempotency_key.0.as_deref();
        let (state, caller) = (*state, &caller);
        let submit = |body| Box::pin(submit(state, caller, body));
        Ok(idempotency::once(state, caller, key, "post_tasks", body, submit).await?)
    }

    /// Get many sessions' results
    ///
    /// One entry per session named (up to `limits.max_batch`), in the order named: the
    /// session's state as `get_task_result` answers it, or, for a session that does not
    /// exist (or is another API key's), has expired, or was removed, the problem a poll
    /// of it would get. One bad id does not fail the others.
    #[oai(
        path = "/async/get_task_results",
        method = "post",
        tag = "ApiTags::Async"
    )]
    async fn get_task_results(
        &self,
        caller: Caller,
        state: Data<&AppState>,
        body: Bounded<SessionList>,
        /// `string` writes results as JSON strings of their exact text, for clients
        /// whose JSON reader rounds numbers to doubles; `number` (the default) as numbers.
        #[oai(example = "examples::numbers")]
        numbers: Query<Option<Numbers>>,
    ) -> Result<StatesResponse, OpError<ReadErrors>> {
        let ids = body.0.session_ids;
        check_ids(&ids, state.config.limits.max_batch)?;
        let states = read(&state, &caller, &ids, numbers.0).await?;
        Ok(StatesResponse::Found(ExactJson::new(SessionStates {
            results: states,
        })))
    }
}

/// Refuses an empty list, one longer than `limits.max_batch`, and ids that cannot be
/// session ids, naming the first.
fn check_ids(ids: &[i64], max_batch: usize) -> Result<(), ApiError> {
    if ids.is_empty() {
        return Err(ApiError::bad_request(
            "invalid-session-id",
            "`session_ids` is empty: name 1 to limits.max_batch sessions, e.g. \
             {\"session_ids\": [5813027361994815]}",
        ));
    }
    if ids.len() > max_batch {
        return Err(ApiError::payload_too_large(
            "batch-too-large",
            format!(
                "{} sessions named, more than limits.max_batch ({max_batch}): split them \
                 among several requests",
                ids.len()
            ),
        ));
    }
    if let Some((at, id)) = ids.iter().enumerate().find(|(_, id)| **id <= 0) {
        return Err(ApiError::bad_request(
            "invalid-session-id",
            format!(
                "`session_ids[{at}]` is {id}: session ids are positive integers, as \
                 post_task returned them"
            ),
        ));
    }
    Ok(())
}

/// The state of each session of `ids`, in order: one query and one Redis read for all.
async fn read(
    state: &AppState,
    caller: &Caller,
    ids: &[i64],
    numbers: Option<Numbers>,
) -> Result<Vec<SessionState>, ApiError> {
    let found = state.sessions.find_many(ids).await?;
    let absent: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| !found.contains_key(id))
        .collect();
    let purged = state.sessions.purged(&absent).await?;
    let owned = |id: &i64| found.get(id).filter(|s| s.owner == caller.owner());
    let task_ids: Vec<Uuid> = ids.iter().filter_map(owned).map(|s| s.task_id).collect();
    let mut stored = state.results.get_many(&task_ids).await?.into_iter();
    let ttl = state.config.tasks.result_ttl;
    Ok(ids
        .iter()
        .map(|id| {
            let answer = match owned(id) {
                Some(session) => {
                    let held = stored.next().unwrap_or(Stored::Missing);
                    sessions::read_state(*id, session, held, ttl, numbers)
                }
                None if purged.contains(id) => Err(sessions::removed(*id, &state.config.tasks)),
                None => Err(sessions::unknown(*id)),
            };
            match answer {
                Ok(result) => SessionState::Found(result),
                Err(e) => SessionState::Problem(SessionProblem::of(*id, e)),
            }
        })
        .collect())
}

/// Queues every sum of a batch and stores their sessions; hands the ids out only when
/// all of it is done.
async fn submit(
    state: &AppState,
    caller: &Caller,
    body: BatchRequest,
) -> Result<SubmitBatchResponse, ApiError> {
    let BatchRequest {
        tasks,
        count,
        share,
        ..
    } = body;
    // Admitting the request spent one request of the key's budget: the rest now.
    if let Some(quota) = caller.spend_more(tasks.len() - 1).await? {
        current::set_quota(Some(quota));
    }
    let task_ids: Vec<Uuid> = tasks.iter().map(|_| Uuid::new_v4()).collect();
    let max_digits = state.config.limits.max_result_digits;
    // Published together: the publisher's confirms settle many in one round trip.
    let publishes = tasks.into_iter().zip(&task_ids).map(|(args, task_id)| {
        let task = TaskMessage::new(*task_id, args, None).checked_against(max_digits);
        observe::publish(state, task, TaskKind::Async)
    });
    let published = join_all(publishes).await;
    drop(share);
    // A task confirmed before another failed runs, but no session leads to it.
    published.into_iter().collect::<Result<(), _>>()?;
    let (session_ids, marked) = tokio::join!(
        state.sessions.create_many(&task_ids, caller.owner()),
        mark_queued(state, task_ids.clone())
    );
    let session_ids = session_ids?;
    let warning = marked.err().map(|e| {
        tracing::warn!(error = %e, "accepting tasks whose results cannot be stored yet");
        format!(
            "{e}. The tasks are queued: their results are stored once Redis takes writes \
             again; poll as usual"
        )
    });
    tracing::debug!(tasks = task_ids.len(), items = count, "batch queued");
    let submitted = SubmittedBatch {
        session_ids,
        warning,
    };
    Ok(SubmitBatchResponse::Submitted(
        ExactJson::new(submitted),
        None,
    ))
}

/// Queues the sums of a bulk sync request and waits for them until `deadline`.
async fn sums_and_wait(
    state: &AppState,
    caller: &Caller,
    body: BatchRequest,
    deadline: SyncDeadline,
    numbers: Option<Numbers>,
) -> Result<SyncBatchResponse, ApiError> {
    let _waiting = admit_sync(state, caller).await?;
    let BatchRequest { tasks, share, .. } = body;
    if let Some(quota) = caller.spend_more(tasks.len() - 1).await? {
        current::set_quota(Some(quota));
    }
    let task_ids: Vec<Uuid> = tasks.iter().map(|_| Uuid::new_v4()).collect();
    let mut waiters = Vec::with_capacity(task_ids.len());
    for task_id in &task_ids {
        waiters.push(state.waiters.register(*task_id).map_err(|full| {
            tracing::warn!("refusing a bulk sync request: {full}");
            ApiError::unavailable("too-many-waiting", full.to_string())
        })?);
    }
    let instance = state.waiters.instance().to_owned();
    let max_digits = state.config.limits.max_result_digits;
    let publishes = tasks.into_iter().zip(&task_ids).map(|(args, task_id)| {
        let task =
            TaskMessage::new(*task_id, args, Some(instance.clone())).checked_against(max_digits);
        observe::publish(state, task, TaskKind::Sync)
    });
    let published = join_all(publishes).await;
    drop(share);
    published.into_iter().collect::<Result<(), _>>()?;
    let heard = join_all(
        waiters
            .iter_mut()
            .map(|w| tokio::time::timeout_at(deadline.at, &mut w.end)),
    )
    .await;
    drop(waiters);
    let mut ends: Vec<Option<Final>> = heard
        .into_iter()
        .map(|heard| heard.ok().and_then(Result::ok))
        .collect();
    Box::pin(read_at_deadline(state, &task_ids, &mut ends)).await;
    if ends.iter().all(Option::is_some) {
        return all_done(ends, deadline.applied, numbers);
    }
    Box::pin(pending(state, caller, &task_ids, ends, deadline, numbers)).await
}

/// Reads (and marks queued) the keys of the tasks not heard of by the deadline, in one
/// round trip each way; a Redis that does not answer within [`READ_AT_DEADLINE`] leaves
/// them pending.
async fn read_at_deadline(state: &AppState, task_ids: &[Uuid], ends: &mut [Option<Final>]) {
    let unheard: Vec<Uuid> = task_ids
        .iter()
        .zip(ends.iter())
        .filter(|(_, end)| end.is_none())
        .map(|(id, _)| *id)
        .collect();
    if unheard.is_empty() {
        return;
    }
    let read = within(Dependency::Redis, READ_AT_DEADLINE, async {
        state.results.mark_many(&unheard).await?;
        state.results.get_many(&unheard).await
    });
    match read.await {
        Ok(stored) => {
            let mut stored = stored.into_iter();
            for end in ends.iter_mut().filter(|end| end.is_none()) {
                *end = stored.next().and_then(Stored::ended);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the results at the deadline"),
    }
}

/// The 200 of a bulk sync request whose every sum ended: a sum that could not be
/// computed (or was cancelled) fails the request, naming it.
fn all_done(
    ends: Vec<Option<Final>>,
    applied: Option<String>,
    numbers: Option<Numbers>,
) -> Result<SyncBatchResponse, ApiError> {
    let mut results = Vec::with_capacity(ends.len());
    for (i, end) in ends.into_iter().enumerate() {
        match end {
            Some(Final::Finished(Outcome {
                status: Status::Done,
                result: Some(result),
                ..
            })) => results.push(ResultNumber::written(result, numbers.unwrap_or_default())),
            other => {
                let why = match other {
                    Some(Final::Finished(outcome)) => outcome.error.unwrap_or_default(),
                    _ => "it was cancelled".to_owned(),
                };
                return Err(ApiError::unprocessable(
                    "task-failed",
                    format!("`tasks[{i}]` could not be computed: {why}"),
                ));
            }
        }
    }
    Ok(SyncBatchResponse::Done(
        ExactJson::new(SumResults { results }),
        applied,
        None,
    ))
}

/// The 202 of a bulk sync request past its deadline: the results of the sums done,
/// and a session for each of the others, stored together within [`AFTER_DEADLINE`] of
/// the deadline.
async fn pending(
    state: &AppState,
    caller: &Caller,
    task_ids: &[Uuid],
    ends: Vec<Option<Final>>,
    deadline: SyncDeadline,
    numbers: Option<Numbers>,
) -> Result<SyncBatchResponse, ApiError> {
    let unfinished: Vec<Uuid> = task_ids
        .iter()
        .zip(&ends)
        .filter(|(_, end)| end.is_none())
        .map(|(id, _)| *id)
        .collect();
    let left =
        (deadline.at + AFTER_DEADLINE).saturating_duration_since(tokio::time::Instant::now());
    let session_ids = within(
        Dependency::Postgres,
        left,
        state.sessions.create_many(&unfinished, caller.owner()),
    )
    .await?;
    tracing::info!(
        pending = unfinished.len(),
        "bulk sync deadline passed; answering 202"
    );
    let mut sessions = session_ids.into_iter();
    let results = ends
        .into_iter()
        .map(|end| match end {
            Some(end) => {
                let state = TaskResult::ended(0, end, numbers);
                BatchEntry {
                    session_id: None,
                    result: state.result,
                    status: state.status,
                }
            }
            None => BatchEntry {
                session_id: sessions.next(),
                result: None,
                status: TaskStatus::Pending,
            },
        })
        .collect();
    Ok(SyncBatchResponse::Pending(
        ExactJson::new(PendingResults { results }),
        deadline.applied,
        None,
    ))
}
