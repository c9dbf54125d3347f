//! Work in bulk: many sums submitted in one request (`POST /async/post_tasks`), and
//! many sessions read in one (`POST /async/get_task_results`).
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

use super::body::{BatchRequest, Bounded, ExactJson, Numbers, Shape};
use super::idempotency::{self, Start};
use super::problem::{ApiError, OpError, Statuses};
use super::sessions::{self, SessionProblem, TaskResult};
use super::tasks::SubmitErrors;
use super::{current, examples, observe, ApiTags, AppState};
use crate::auth::Caller;
use crate::dependency::{within, Dependency};
use crate::metrics::TaskKind;
use crate::store::idempotency::Kept;
use crate::store::results::Stored;
use crate::task::TaskMessage;

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
        let started = idempotency::start(&state, &caller, key, "post_tasks", &body.raw);
        let running = match Box::pin(started).await? {
            Start::Replay(kept) => {
                return Ok(SubmitBatchResponse::Submitted(
                    ExactJson::kept(kept.body),
                    Some(true),
                ))
            }
            Start::Run(running) => running,
        };
        let answer = Box::pin(submit(&state, &caller, body)).await;
        if let Some(running) = running {
            let kept = answer.as_ref().ok().map(|submitted| Kept {
                status: 200,
                body: submitted.text(),
                location: None,
            });
            Box::pin(running.finish(kept)).await;
        }
        Ok(SubmitBatchResponse::Submitted(answer?, None))
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
    let task_ids: Vec<uuid::Uuid> = ids.iter().filter_map(owned).map(|s| s.task_id).collect();
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
) -> Result<ExactJson<SubmittedBatch>, ApiError> {
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
    let task_ids: Vec<uuid::Uuid> = tasks.iter().map(|_| uuid::Uuid::new_v4()).collect();
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
    let (session_ids, warning) = tokio::join!(
        state.sessions.create_many(&task_ids, caller.owner()),
        mark_queued(state, &task_ids)
    );
    let session_ids = session_ids?;
    tracing::debug!(tasks = task_ids.len(), items = count, "batch queued");
    Ok(ExactJson::new(SubmittedBatch {
        session_ids,
        warning,
    }))
}

/// Marks a batch's tasks queued in one round trip, unless Redis is known not to take
/// writes; when it does not, the answer's warning says so (the tasks wait in the queue
/// meanwhile).
async fn mark_queued(state: &AppState, task_ids: &[uuid::Uuid]) -> Option<String> {
    let marked = match state.waiters.writable() {
        Ok(()) => within(
            Dependency::Redis,
            state.config.redis.timeout,
            state.results.mark_many(task_ids),
        )
        .await
        .and_then(|each| each.into_iter().collect::<Result<Vec<()>, _>>().map(drop)),
        Err(e) => Err(e),
    };
    let e = marked.err()?;
    tracing::warn!(error = %e, "accepting tasks whose results cannot be stored yet");
    Some(format!(
        "{e}. The tasks are queued: their results are stored once Redis takes writes \
         again; poll as usual"
    ))
}
