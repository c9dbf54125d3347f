//! RabbitMQ through amiquip, which blocks and never reconnects by itself: everything
//! here runs on threads of its own, never on a tokio worker.
//!
//! - [`error`]: what can go wrong, told apart: a broker gone or one that refuses.
//! - [`connect`]: open a connection (TCP_NODELAY, bounded connect) and declare the topology.
//! - [`publisher`]: the one thread per `serve` process that publishes tasks with
//!   publisher confirms, batching confirms across concurrent requests, and watches how
//!   many workers consume the queue.
//! - [`dead`]: list the dead-letter queue without taking from it, and replay it into the
//!   task queue (`sumsvc dead`).
//!
//! The worker threads ([`crate::worker`]) use [`connect`] the same way.

pub mod connect;
pub mod dead;
mod error;
pub mod publisher;

pub use connect::AmqpTarget;
pub use connect::Topology;
pub use dead::DeadLetters;
pub use error::BrokerError;
pub use publisher::Publisher;
