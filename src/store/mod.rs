//! Where state lives: sessions and API keys in PostgreSQL, task outcomes in Redis. Every
//! operation is bounded by its dependency's `timeout` and fails with
//! [`Unavailable`](crate::dependency::Unavailable).

pub mod api_keys;
mod batches;
pub mod durability;
pub mod idempotency;
pub mod key_limits;
mod marks;
mod pool;
mod postgres;
pub mod purge;
pub mod redis_pool;
pub mod results;
mod session_ids;
mod session_writer;
pub mod sessions;

pub use api_keys::ApiKeyStore;
pub use marks::MarkWriter;
pub use results::{RedisNames, Results};
pub use sessions::Sessions;
