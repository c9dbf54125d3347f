//! What RabbitMQ holds for a queue, read with `rabbitmqctl`: AMQP tells how many
//! messages wait in a queue, but not how many are out with consumers, unacked.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A queue's messages: waiting to be delivered, and delivered but not yet acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    pub ready: u64,
    pub unacked: u64,
}

/// Reads `queue`'s counts from the broker (`rabbitmqctl list_queues`, about a second).
pub async fn queue_counts(queue: &str) -> QueueCounts {
    let queue = queue.to_owned();
    tokio::task::spawn_blocking(move || {
        let out = Command::new("rabbitmqctl")
            .args(["list_queues", "-q", "--formatter", "json"])
            .args(["name", "messages_ready", "messages_unacknowledged"])
            .output()
            .expect("rabbitmqctl is needed for these tests: run them beside the broker");
        assert!(out.status.success(), "rabbitmqctl list_queues: {out:?}");
        let queues: Vec<Value> = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("rabbitmqctl list_queues printed no JSON ({e}): {out:?}"));
        let q = queues
            .iter()
            .find(|q| q["name"] == queue.as_str())
            .unwrap_or_else(|| panic!("queue {queue} is not in rabbitmqctl list_queues"));
        QueueCounts {
            ready: q["messages_ready"].as_u64().unwrap(),
            unacked: q["messages_unacknowledged"].as_u64().unwrap(),
        }
    })
    .await
    .unwrap()
}

/// Reads `queue`'s counts until they are `expected`, for at most `limit`.
pub async fn wait_for_counts(queue: &str, expected: QueueCounts, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let counts = queue_counts(queue).await;
        if counts == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{queue} never held {expected:?}; last {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
