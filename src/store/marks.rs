//! Queued marks, written in batches across concurrent requests: every `post_task` marks
//! its task queued in Redis (see [`super::results`]), and one pipeline writes the marks
//! of every request that came meanwhile, the way the session writer commits many
//! sessions at once. One mark a request, each on a pooled connection of its own, would
//! cost a round trip (and the pool's check of the connection, another) per request. A
//! bulk request's marks are one request here, never split across pipelines.

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::batches::{Batched, Batches};
use super::results::Results;
use crate::dependency::{Dependency, Unavailable};

/// Marks per pipeline at most, unless one request alone has more.
const MAX_MARKS: usize = 1024;

/// Requests that may wait for the writer; past it `mark` waits for room, bounded by its
/// caller's timeout like everything else.
const QUEUE: usize = 4096;

/// The marks of one call, and where to answer.
struct Request {
    task_ids: Vec<Uuid>,
    answer: oneshot::Sender<Result<(), Unavailable>>,
}

impl Batched for Request {
    fn rows(&self) -> usize {
        self.task_ids.len()
    }
}

/// The handle requests mark through; the writer stops when the last one is dropped.
#[derive(Clone)]
pub struct MarkWriter {
    queue: mpsc::Sender<Request>,
}

impl MarkWriter {
    /// Starts the writer on the current tokio runtime.
    pub fn start(results: Results) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE);
        tokio::spawn(write(results, requests));
        Self { queue }
    }

    /// Marks each of `task_ids` queued, unless its key holds something already; returns
    /// once Redis took every mark (or refused one).
    pub async fn mark(&self, task_ids: Vec<Uuid>) -> Result<(), Unavailable> {
        let (answer, answered) = oneshot::channel();
        let stopped = || Unavailable::new(Dependency::Redis, "the mark writer stopped");
        self.queue
            .send(Request { task_ids, answer })
            .await
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// Takes what is queued, marks it in one pipeline, answers, and again, until every
/// handle is gone.
async fn write(results: Results, requests: mpsc::Receiver<Request>) {
    let mut batches = Batches::new(requests, MAX_MARKS);
    while let Some(mut batch) = batches.next().await {
        // A caller that gave up needs no mark: its tasks have no session.
        batch.retain(|request| !request.answer.is_closed());
        let task_ids: Vec<Uuid> = batch.iter().flat_map(|r| r.task_ids.clone()).collect();
        match results.mark_many(&task_ids).await {
            Ok(verdicts) => {
                let mut verdicts = verdicts.into_iter();
                for request in batch {
                    // The first mark of its own that Redis refused, if one was.
                    let refused = verdicts
                        .by_ref()
                        .take(request.task_ids.len())
                        .find_map(Result::err);
                    let _ = request.answer.send(refused.map_or(Ok(()), Err));
                }
            }
            Err(e) => {
                for request in batch {
                    let _ = request.answer.send(Err(e.clone()));
                }
            }
        }
    }
}
