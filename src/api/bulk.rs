//! Work in bulk: many sessions read in one request (`POST /async/get_task_results`).
//!
//! One request pays one round trip to each store however many sessions it names: one
//! PostgreSQL query finds every session, one Redis `MGET` reads every result. Each
//! session answers for itself, so one unknown or expired id does not fail the read.

use poem::web::Data;
use poem_openapi::param::Query;
use poem_openapi::{ApiResponse, Object, OpenApi, Union};
use serde::{Deserialize, Serialize};

use super::body::{Bounded, ExactJson, Numbers, Shape};
use super::problem::{ApiError, OpError, Statuses};
use super::sessions::{self, SessionProblem, TaskResult};
use super::{examples, ApiTags, AppState};
use crate::auth::Caller;
use crate::store::results::Stored;

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
