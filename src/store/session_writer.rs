//! Session inserts, batched across concurrent requests: every `post_task` answers only
//! after its session row is committed, and one multi-row `INSERT` commits many of them
//! at once, the way the publisher settles many confirms with one round trip. A bulk
//! request's sessions are one request here: they go in one statement together, never
//! split across two, so they commit together or not at all.
//!
//! One writer takes its queue in batches ([`super::batches`]: everything queued, up to
//! [`MAX_ROWS`] rows, without waiting for more), so a lone request is written at once,
//! and under load each commit carries the requests that arrived during the one before.
//! One writer rather than several: a second writer's commits only split the same
//! requests into batches half as large, and PostgreSQL's time goes mostly to each
//! statement and commit, not to each row. At 64 clients one writer spent a fifth less of
//! PostgreSQL's time per session than two, and `post_task` ran at a median 0.917 of
//! `sync/sum`'s rate against 0.887 (`cargo bench --bench throughput`, six runs each,
//! alternated); at 1 and 256 clients they were even.
//!
//! One request's rows must not fail the others': when the statement fails for a row
//! (a constraint it breaks), the batch is split in halves and each half inserted on its
//! own, down to the request at fault, which fails alone. And rows are kept only for a
//! request that is still there to hear their ids: a request that gave up (its caller
//! timed out) is not inserted, or its rows are deleted when it left during the insert.
//! Such orphans are counted (`sumsvc_session_orphans_total`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::batches::{Batched, Batches};
use super::postgres::failed;
use super::session_ids::{SessionIds, CREATE_ATTEMPTS};
use crate::dependency::{within, Dependency, Unavailable};

/// Rows per `INSERT` at most, unless one request alone has more.
const MAX_ROWS: usize = 1024;

/// How long an insert that outlived its requests' bound is followed before it is given
/// up on.
const LATE_INSERT_WAIT: Duration = Duration::from_secs(60);

/// Requests that may wait for the writer; past it `create` waits for room, bounded by
/// its caller's timeout like everything else.
const QUEUE: usize = 4096;

/// The sessions of one call to record, and where to answer.
struct Request {
    task_ids: Vec<Uuid>,
    owner: Option<i64>,
    /// The id each task's row got, once inserted: several attempts may each insert
    /// some, when ids drawn were taken.
    ids: Vec<Option<i64>>,
    answer: oneshot::Sender<Result<Vec<i64>, Unavailable>>,
}

impl Request {
    /// The tasks whose rows are still to insert.
    fn missing(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.task_ids
            .iter()
            .zip(&self.ids)
            .filter(|(_, id)| id.is_none())
            .map(|(task_id, _)| *task_id)
    }

    /// The ids of the rows inserted so far.
    fn inserted(&self) -> impl Iterator<Item = i64> + '_ {
        self.ids.iter().flatten().copied()
    }

    /// Answers with every id when each row is in; otherwise keeps the request.
    fn answer_if_complete(self) -> Answered {
        if self.ids.iter().any(Option::is_none) {
            return Answered::Waiting(self);
        }
        let ids: Vec<i64> = self.ids.into_iter().flatten().collect();
        match self.answer.send(Ok(ids)) {
            Ok(()) => Answered::Yes,
            Err(sent) => Answered::Left(sent.unwrap_or_default()),
        }
    }

    /// Fails the request; returns the ids of the rows it had, which are now orphans.
    fn fail(self, cause: Unavailable) -> Vec<i64> {
        let stored = self.inserted().collect();
        let _ = self.answer.send(Err(cause));
        stored
    }
}

impl Batched for Request {
    fn rows(&self) -> usize {
        self.task_ids.len()
    }
}

/// What became of a request after an insert.
enum Answered {
    Yes,
    /// Its caller left: the ids its rows got.
    Left(Vec<i64>),
    Waiting(Request),
}

/// The handle `Sessions::create` sends through.
#[derive(Clone)]
pub struct SessionWriter {
    queue: mpsc::Sender<Request>,
}

impl SessionWriter {
    /// Starts the writer on the current tokio runtime.
    pub fn start(rows: Rows) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE);
        tokio::spawn(write(rows, requests));
        Self { queue }
    }

    /// Records a session for each of `task_ids`, all in one statement, once the writer
    /// commits them; returns their ids in order.
    pub async fn create(
        &self,
        task_ids: Vec<Uuid>,
        owner: Option<i64>,
    ) -> Result<Vec<i64>, Unavailable> {
        let (answer, answered) = oneshot::channel();
        let stopped = || Unavailable::new(Dependency::Postgres, "the session writer stopped");
        self.queue
            .send(Request {
                ids: vec![None; task_ids.len()],
                task_ids,
                owner,
                answer,
            })
            .await
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// The writer: takes what is queued, inserts it, answers, and again, until every handle
/// is gone.
async fn write(rows: Rows, requests: mpsc::Receiver<Request>) {
    let mut batches = Batches::new(requests, MAX_ROWS);
    while let Some(batch) = batches.next().await {
        // A request whose caller gave up (timed out, disconnected) hears no id: its rows
        // would be orphans.
        let (gone, batch): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|request| request.answer.is_closed());
        rows.orphaned(gone.iter().map(|r| r.task_ids.len()).sum());
        let left = insert(&rows, batch).await;
        if !left.is_empty() {
            rows.remove_orphans(&left).await;
        }
    }
}

/// Inserts `batch` under fresh ids, taking others for ids already taken, and
/// answers each request; a statement that fails for one of its rows is split in halves
/// until the request at fault fails alone. Returns the ids of rows that are orphans:
/// inserted for requests that left meanwhile, or that failed after some of their rows
/// were in.
fn insert(rows: &Rows, mut batch: Vec<Request>) -> BoxFuture<'_, Vec<i64>> {
    Box::pin(async move {
        let mut left = Vec::new();
        for _ in 0..CREATE_ATTEMPTS {
            let task_ids: Vec<Uuid> = batch.iter().flat_map(Request::missing).collect();
            let owners: Vec<Option<i64>> = batch
                .iter()
                .flat_map(|r| r.missing().map(|_| r.owner))
                .collect();
            let ids = match rows.ids.take(task_ids.len()).await {
                Ok(ids) => ids,
                Err(e) => {
                    for request in batch {
                        left.extend(request.fail(e.clone()));
                    }
                    return left;
                }
            };
            let inserted = match rows.insert(&ids, &task_ids, &owners).await {
                Ok(inserted) => inserted,
                Err(e) if e.by_row && batch.len() > 1 => {
                    let second = batch.split_off(batch.len() / 2);
                    left.extend(insert(rows, batch).await);
                    left.extend(insert(rows, second).await);
                    return left;
                }
                Err(e) => {
                    if e.by_row {
                        tracing::warn!(error = %e.cause, "a session row was refused");
                    }
                    for request in batch {
                        left.extend(request.fail(e.cause.clone()));
                    }
                    return left;
                }
            };
            // Rows come back by task id: an id already taken inserted nothing.
            let mut waiting = Vec::new();
            for mut request in batch {
                for (task_id, id) in request.task_ids.iter().zip(&mut request.ids) {
                    if id.is_none() {
                        *id = inserted.get(task_id).copied();
                    }
                }
                match request.answer_if_complete() {
                    Answered::Yes => {}
                    Answered::Left(ids) => left.extend(ids),
                    Answered::Waiting(request) => waiting.push(request),
                }
            }
            batch = waiting;
            if batch.is_empty() {
                return left;
            }
            tracing::warn!(
                taken = batch.iter().map(|r| r.missing().count()).sum::<usize>(),
                "session ids already taken (by sessions from before ids were counted); \
                 taking others"
            );
        }
        for request in batch {
            left.extend(request.fail(Unavailable::new(
                Dependency::Postgres,
                format!("{CREATE_ATTEMPTS} session ids in a row were already taken"),
            )));
        }
        left
    })
}

/// Why an insert failed, and whether one of its rows was the cause (a constraint it
/// breaks) rather than the database or the connection.
struct InsertError {
    cause: Unavailable,
    by_row: bool,
}

/// Session rows in bulk, for the writer; holds no handle to the [`SessionWriter`], so
/// the writer stops once the last `Sessions` is gone.
#[derive(Clone)]
pub struct Rows {
    pool: Pool,
    timeout: Duration,
    orphans: Counter,
    ids: Arc<SessionIds>,
}

impl Rows {
    /// Rows through `pool` under ids from `ids`, each statement bounded by `timeout`;
    /// rows not kept because their request left are counted in `orphans`.
    pub fn new(pool: Pool, timeout: Duration, orphans: Counter, ids: Arc<SessionIds>) -> Self {
        Self {
            pool,
            timeout,
            orphans,
            ids,
        }
    }

    /// Inserts one row per index, in one statement (one commit), skipping ids already
    /// taken; returns the id each inserted task got, by task id (fresh UUIDs, one per
    /// task, so no index needs to keep them apart).
    ///
    /// Bounded by `timeout`, after which every request hears an error; but a statement
    /// sent may still commit, so it is followed to its end in the background, and the
    /// rows it stored, which no request heard of, are deleted.
    async fn insert(
        &self,
        ids: &[i64],
        task_ids: &[Uuid],
        owners: &[Option<i64>],
    ) -> Result<HashMap<Uuid, i64>, InsertError> {
        let mut statement = Box::pin(self.clone().insert_unbounded(
            ids.to_vec(),
            task_ids.to_vec(),
            owners.to_vec(),
        ));
        match tokio::time::timeout(self.timeout, &mut statement).await {
            Ok(inserted) => inserted,
            Err(_) => {
                tokio::spawn(self.clone().remove_late_rows(statement));
                Err(InsertError {
                    cause: Unavailable::timed_out(Dependency::Postgres, self.timeout),
                    by_row: false,
                })
            }
        }
    }

    async fn insert_unbounded(
        self,
        ids: Vec<i64>,
        task_ids: Vec<Uuid>,
        owners: Vec<Option<i64>>,
    ) -> Result<HashMap<Uuid, i64>, InsertError> {
        let refused = |cause| InsertError {
            cause,
            by_row: false,
        };
        let client = self.client().await.map_err(refused)?;
        // Taken ids insert nothing instead of failing, so the rest of the batch commits
        // and only those draw again. The id is read back, not assumed: it is what the
        // row holds.
        let stmt = client
            .prepare_cached(
                "INSERT INTO sessions (id, task_id, owner) \
                 SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::bigint[]) \
                 ON CONFLICT (id) DO NOTHING RETURNING task_id, id",
            )
            .await
            .map_err(|e| refused(failed(e)))?;
        let rows = client
            .query(&stmt, &[&ids, &task_ids, &owners])
            .await
            .map_err(|e| InsertError {
                by_row: breaks_a_constraint(&e),
                cause: failed(e),
            })?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// Waits (at most [`LATE_INSERT_WAIT`]) for an insert whose requests were told it
    /// failed, and deletes what it stored.
    async fn remove_late_rows(
        self,
        statement: impl Future<Output = Result<HashMap<Uuid, i64>, InsertError>>,
    ) {
        match tokio::time::timeout(LATE_INSERT_WAIT, statement).await {
            Ok(Ok(inserted)) if !inserted.is_empty() => {
                let ids: Vec<i64> = inserted.into_values().collect();
                self.remove_orphans(&ids).await;
            }
            Ok(_) => {}
            Err(_) => tracing::warn!(
                "an insert of sessions answered as failed has not ended after {}s; if it \
                 commits, its sessions stay without a request that knows them",
                LATE_INSERT_WAIT.as_secs()
            ),
        }
    }

    /// Deletes the rows of requests that left while they were inserted; a failure
    /// leaves them, counted all the same (each still points to a queued task).
    pub async fn remove_orphans(&self, ids: &[i64]) {
        self.orphaned(ids.len());
        let deleted = within(Dependency::Postgres, self.timeout, async {
            let client = self.client().await?;
            client
                .execute("DELETE FROM sessions WHERE id = ANY($1)", &[&ids])
                .await
                .map_err(failed)
        })
        .await;
        if let Err(e) = deleted {
            tracing::warn!(error = %e, rows = ids.len(), "cannot delete the sessions of requests that gave up");
        }
    }

    /// The count of rows not kept for requests that left.
    pub fn orphans(&self) -> Counter {
        self.orphans.clone()
    }

    /// Counts `n` rows not kept for requests that left.
    fn orphaned(&self, n: usize) {
        if n > 0 {
            tracing::debug!(n, "sessions of requests that gave up are not kept");
            self.orphans.inc_by(n as u64);
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, Unavailable> {
        self.pool
            .get()
            .await
            .map_err(|e| Unavailable::from_chain(Dependency::Postgres, &e))
    }
}

/// Whether the database refused the statement for what a row holds (an integrity
/// constraint or a bad value), as opposed to failing it whole.
fn breaks_a_constraint(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|code| code.code().starts_with("23") || code.code().starts_with("22"))
}
