//! Session inserts, batched across concurrent requests: every `post_task` answers only
//! after its session row is committed, and one multi-row `INSERT` commits many of them
//! at once, the way the publisher settles many confirms with one round trip.
//!
//! A few writers share one queue. A free writer takes everything queued (up to
//! [`MAX_BATCH`]) without waiting for more, so a lone request is written at once, and
//! under load each commit carries the requests that arrived while the others were busy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, Mutex};
use uuid::Uuid;

use super::postgres::failed;
use super::session_ids::{random_id, CREATE_ATTEMPTS};
use crate::dependency::{within, Dependency, Unavailable};

/// Rows per `INSERT` at most.
const MAX_BATCH: usize = 256;

/// Inserts in flight at once, each on its own pooled connection. Each commit carries
/// everything that queued during the other's, so more writers only make smaller
/// batches: measured at 64 clients, 2 spent the least PostgreSQL CPU per request of 1,
/// 2, 4 and 8 for the most requests a second, and 1 leaves a lone request waiting behind
/// a slow commit.
const WRITERS: usize = 2;

/// Requests that may wait for a writer; past it `create` waits for room, bounded by
/// its caller's timeout like everything else.
const QUEUE: usize = 16 * MAX_BATCH;

/// A session to record and where to answer.
struct Request {
    task_id: Uuid,
    owner: Option<i64>,
    answer: oneshot::Sender<Result<i64, Unavailable>>,
}

/// The handle `Sessions::create` sends through.
#[derive(Clone)]
pub struct SessionWriter {
    queue: mpsc::Sender<Request>,
}

impl SessionWriter {
    /// Starts the writers on the current tokio runtime, at most one per pooled
    /// connection.
    pub fn start(rows: Rows, pool_size: usize) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE);
        let requests = Arc::new(Mutex::new(requests));
        for _ in 0..WRITERS.min(pool_size).max(1) {
            tokio::spawn(write(rows.clone(), requests.clone()));
        }
        Self { queue }
    }

    /// Records the session once a writer commits it; returns its id.
    pub async fn create(&self, task_id: Uuid, owner: Option<i64>) -> Result<i64, Unavailable> {
        let (answer, answered) = oneshot::channel();
        let stopped = || Unavailable::new(Dependency::Postgres, "the session writer stopped");
        self.queue
            .send(Request {
                task_id,
                owner,
                answer,
            })
            .await
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// One writer: takes what is queued, inserts it, answers, and again, until every
/// handle is gone.
async fn write(rows: Rows, requests: Arc<Mutex<mpsc::Receiver<Request>>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut requests = requests.lock().await;
            if requests.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
        }
        // A request whose caller gave up (timed out, disconnected) is still written:
        // its task is queued, and a session that can be polled harms no one.
        insert(&rows, &mut batch).await;
    }
}

/// Inserts `batch` under fresh random ids, drawing again for ids already taken, and
/// answers each request; leaves `batch` empty.
async fn insert(rows: &Rows, batch: &mut Vec<Request>) {
    for _ in 0..CREATE_ATTEMPTS {
        let ids: Vec<i64> = batch.iter().map(|_| random_id()).collect();
        let task_ids: Vec<Uuid> = batch.iter().map(|r| r.task_id).collect();
        let owners: Vec<Option<i64>> = batch.iter().map(|r| r.owner).collect();
        let inserted = match rows.insert(&ids, &task_ids, &owners).await {
            Ok(inserted) => inserted,
            Err(e) => {
                for request in batch.drain(..) {
                    let _ = request.answer.send(Err(e.clone()));
                }
                return;
            }
        };
        // Rows come back by task id: an id already taken inserted nothing.
        let mut waiting = Vec::new();
        for request in batch.drain(..) {
            match inserted.get(&request.task_id) {
                Some(&id) => {
                    let _ = request.answer.send(Ok(id));
                }
                None => waiting.push(request),
            }
        }
        *batch = waiting;
        if batch.is_empty() {
            return;
        }
        tracing::warn!(
            taken = batch.len(),
            "drew session ids already taken; drawing again"
        );
    }
    for request in batch.drain(..) {
        let _ = request.answer.send(Err(Unavailable::new(
            Dependency::Postgres,
            format!("{CREATE_ATTEMPTS} random session ids in a row were already taken"),
        )));
    }
}

/// Session rows in bulk, for the writers; holds no handle to the [`SessionWriter`], so
/// the writers stop once the last `Sessions` is gone.
#[derive(Clone)]
pub struct Rows {
    pool: Pool,
    timeout: Duration,
}

impl Rows {
    pub fn new(pool: Pool, timeout: Duration) -> Self {
        Self { pool, timeout }
    }

    /// Inserts one row per index, in one statement (one commit), skipping ids already
    /// taken; returns the id each inserted task got. A taken task id fails the whole
    /// statement, as it must: task ids are fresh UUIDs.
    pub async fn insert(
        &self,
        ids: &[i64],
        task_ids: &[Uuid],
        owners: &[Option<i64>],
    ) -> Result<HashMap<Uuid, i64>, Unavailable> {
        within(Dependency::Postgres, self.timeout, async {
            let client = self
                .pool
                .get()
                .await
                .map_err(|e| Unavailable::from_chain(Dependency::Postgres, &e))?;
            // Taken ids insert nothing instead of failing, so the rest of the batch
            // commits and only those draw again. The id is read back, not assumed: it
            // is what the row holds.
            let stmt = client
                .prepare_cached(
                    "INSERT INTO sessions (id, task_id, owner) \
                     SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::bigint[]) \
                     ON CONFLICT (id) DO NOTHING RETURNING task_id, id",
                )
                .await
                .map_err(failed)?;
            let rows = client
                .query(&stmt, &[&ids, &task_ids, &owners])
                .await
                .map_err(failed)?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })
        .await
    }
}
