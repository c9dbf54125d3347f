//! Where state lives: sessions and API keys in PostgreSQL, task outcomes in Redis. Every
//! operation is bounded by its dependency's `timeout` and fails with
//! [`Unavailable`](crate::dependency::Unavailable).

pub mod durability;
pub mod keys;
mod postgres;
pub mod results;
mod session_ids;
mod session_writer;
pub mod sessions;

pub use keys::KeyStore;
pub use results::{Keys, Results};
pub use sessions::Sessions;
