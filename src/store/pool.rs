//! The connection pools of both stores, built with the same bounds: every wait on a
//! pool (for a free connection, to create one, to recycle one) ends within the
//! dependency's `timeout`, so a pool never makes a request wait longer than a
//! statement or command may take.

use std::time::Duration;

use deadpool::managed::{Manager, Object, Pool, PoolBuilder};
use deadpool::Runtime;

/// A pool of at most `size` connections on the tokio runtime, every wait bounded by
/// `timeout`.
pub fn bounded<M, W>(
    builder: PoolBuilder<M, W>,
    size: usize,
    timeout: Duration,
) -> anyhow::Result<Pool<M, W>>
where
    M: Manager,
    W: From<Object<M>>,
{
    Ok(builder
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()?)
}
