//! What a test leaves behind, removed: its database, its queues and its Redis keys.

use std::time::Duration;

use sumsvc::Config;

use crate::config::{database, POSTGRES, RABBITMQ, REDIS};

/// Removes what a test created: its database, its queues and its Redis keys.
pub fn cleanup(config: &Config) {
    let config = config.clone();
    let cleaner = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // Give the publisher thread time to see its handle dropped, so it does not
            // declare the queues again.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let db = database(&config.postgres.url).to_owned();
            let admin = format!("postgres://postgres@{POSTGRES}/postgres");
            if let Ok((client, conn)) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
            {
                tokio::spawn(conn);
                let _ = client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
                    .await;
            }
            let client = deadpool_redis::redis::Client::open(format!("redis://{REDIS}/0")).unwrap();
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let keys: Vec<String> = deadpool_redis::redis::cmd("KEYS")
                    .arg(format!("{}:*", config.redis.prefix))
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<(), _> = deadpool_redis::redis::cmd("DEL")
                        .arg(keys)
                        .query_async(&mut conn)
                        .await;
                }
            }
        });
        if let Ok(mut conn) =
            amiquip::Connection::insecure_open(&format!("amqp://guest:guest@{RABBITMQ}/%2f"))
        {
            if let Ok(channel) = conn.open_channel(None) {
                for q in [
                    config.rabbitmq.queue.clone(),
                    format!("{}.dead", config.rabbitmq.queue),
                ] {
                    let _ = channel.queue_delete(q, Default::default());
                }
            }
            let _ = conn.close();
        }
    });
    let _ = cleaner.join();
}
