//! A writer's queue, taken in batches: each batch is everything queued when the writer
//! gets to it, up to a number of rows, without waiting for more. So a lone request is
//! written at once, and under load one statement or pipeline carries the requests that
//! arrived during the one before. A request is never split across two batches: one
//! larger than the limit goes alone.

use tokio::sync::mpsc;

/// A queued request, of as many rows as it has.
pub trait Batched {
    fn rows(&self) -> usize;
}

/// The receiving end of a writer's queue.
pub struct Batches<T> {
    requests: mpsc::Receiver<T>,
    /// The request that would have made the last batch too large: it starts the next.
    carried: Option<T>,
    max_rows: usize,
}

impl<T: Batched> Batches<T> {
    /// Batches of at most `max_rows` rows from `requests`.
    pub fn new(requests: mpsc::Receiver<T>, max_rows: usize) -> Self {
        Self {
            requests,
            carried: None,
            max_rows,
        }
    }

    /// Waits for a request, then takes every other one queued while their rows fit;
    /// None once the queue is empty and every sender is gone.
    pub async fn next(&mut self) -> Option<Vec<T>> {
        let first = match self.carried.take() {
            Some(request) => request,
            None => self.requests.recv().await?,
        };
        let mut rows = first.rows();
        let mut batch = vec![first];
        while rows < self.max_rows {
            let Ok(request) = self.requests.try_recv() else {
                break;
            };
            if rows + request.rows() > self.max_rows {
                self.carried = Some(request);
                break;
            }
            rows += request.rows();
            batch.push(request);
        }
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Batched for usize {
        fn rows(&self) -> usize {
            *self
        }
    }

    #[tokio::test]
    async fn a_batch_takes_what_is_queued_while_it_fits_and_never_splits_a_request() {
        let (queue, requests) = mpsc::channel(16);
        let mut batches = Batches::new(requests, 8);
        for rows in [3, 5, 4, 10, 1, 2] {
            queue.send(rows).await.unwrap();
        }
        drop(queue);
        assert_eq!(batches.next().await, Some(vec![3, 5]));
        // 4 and then 10 would pass 8: 10 goes alone, and 1 waits for the next batch.
        assert_eq!(batches.next().await, Some(vec![4]));
        assert_eq!(batches.next().await, Some(vec![10]));
        assert_eq!(batches.next().await, Some(vec![1, 2]));
        assert_eq!(batches.next().await, None);
    }

    #[tokio::test]
    async fn a_lone_request_is_taken_without_waiting_for_more() {
        let (queue, requests) = mpsc::channel(16);
        let mut batches = Batches::new(requests, 8);
        queue.send(1).await.unwrap();
        assert_eq!(batches.next().await, Some(vec![1]));
        drop(queue);
        assert_eq!(batches.next().await, None);
    }
}
