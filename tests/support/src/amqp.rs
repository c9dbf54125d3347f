//! The real broker, reached past sumsvc: a channel of the test's own, a queue's depth,
//! and messages as a foreign producer would publish them.

use crate::config::RABBITMQ;

/// Message count of a queue, straight from RabbitMQ.
pub fn queue_depth(queue: &str) -> u32 {
    amqp(|channel| {
        channel
            .queue_declare_passive(queue)
            .unwrap()
            .declared_message_count()
            .unwrap()
    })
}

/// Runs `f` on a fresh AMQP channel to the real broker, on a blocking thread.
pub fn amqp<T>(f: impl FnOnce(&amiquip::Channel) -> T) -> T {
    tokio::task::block_in_place(|| {
        let mut conn =
            amiquip::Connection::insecure_open(&format!("amqp://guest:guest@{RABBITMQ}/%2f"))
                .unwrap();
        let channel = conn.open_channel(None).unwrap();
        let out = f(&channel);
        let _ = conn.close();
        out
    })
}

/// Publishes a raw body to a queue, as a broken or foreign producer would.
pub fn publish_raw(queue: &str, body: &[u8]) {
    amqp(|channel| {
        amiquip::Exchange::direct(channel)
            .publish(amiquip::Publish::new(body, queue))
            .unwrap()
    })
}
