//! Queued marks, written in batches across concurrent requests: every `post_task` marks
//! its task queued in Redis (see [`super::results`]), and one pipeline writes the marks
//! of every request that came meanwhile, the way the session writer commits many
//! sessions at once. One mark a request, each on a pooled connection of its own, would
//! cost a round trip (and the pool's check of the connection, another) per request.

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::results::Results;
use crate::dependency::{Dependency, Unavailable};

/// Marks per pipeline at most.
const MAX_BATCH: usize = 1024;

/// Requests that may wait for the writer; past it `mark` waits for room, bounded by its
/// caller's timeout like everything else.
const QUEUE: usize = 16 * MAX_BATCH;

type Answer = oneshot::Sender<Result<(), Unavailable>>;

/// The handle requests mark through; the writer stops when the last one is dropped.
#[derive(Clone)]
pub struct MarkWriter {
    queue: mpsc::Sender<(Uuid, Answer)>,
}

impl MarkWriter {
    /// Starts the writer on the current tokio runtime.
    pub fn start(results: Results) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE);
        tokio::spawn(write(results, requests));
        Self { queue }
    }

    /// Marks `task_id` queued, unless its key holds something already; returns once Redis
    /// took the mark (or refused it).
    pub async fn mark(&self, task_id: Uuid) -> Result<(), Unavailable> {
        let (answer, answered) = oneshot::channel();
        let stopped = || Unavailable::new(Dependency::Redis, "the mark writer stopped");
        self.queue
            .send((task_id, answer))
            .await
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// Takes what is queued, marks it in one pipeline, answers, and again, until every
/// handle is gone.
async fn write(results: Results, mut requests: mpsc::Receiver<(Uuid, Answer)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // A caller that gave up needs no mark: its task has no session.
        batch.retain(|(_, answer)| !answer.is_closed());
        let task_ids: Vec<Uuid> = batch.iter().map(|(task_id, _)| *task_id).collect();
        match results.mark_many(&task_ids).await {
            Ok(verdicts) => {
                for ((_, answer), verdict) in batch.drain(..).zip(verdicts) {
                    let _ = answer.send(verdict);
                }
            }
            Err(e) => {
                for (_, answer) in batch.drain(..) {
                    let _ = answer.send(Err(e.clone()));
                }
            }
        }
    }
}
