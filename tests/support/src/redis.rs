//! The shared Redis, read past sumsvc.

use crate::config::REDIS;

/// Reads a key straight from Redis (not through sumsvc).
pub async fn redis_get(key: &str) -> Option<String> {
    let client = deadpool_redis::redis::Client::open(format!("redis://{REDIS}/0")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    deadpool_redis::redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}
