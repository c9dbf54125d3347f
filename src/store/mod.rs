//! Where state lives: sessions in PostgreSQL, task outcomes in Redis. Every operation is
//! bounded by its dependency's `timeout` and fails with [`Unavailable`](crate::dependency::Unavailable).

pub mod durability;
pub mod results;
pub mod sessions;

pub use results::{Keys, Results};
pub use sessions::Sessions;
