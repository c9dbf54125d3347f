//! sumsvc computes exact sums of number lists through a job queue.
//!
//! A tour, in the order a request meets the parts:
//!
//! - [`api`]: the HTTP routes (poem-openapi). A body is checked by [`sum::check`]
//!   before anything is queued; errors are RFC 9457 problem details.
//! - [`broker`]: RabbitMQ through amiquip on threads of its own: the publisher thread
//!   that confirms tasks for requests, and the connect-and-declare code workers share.
//! - [`task`]: the message on the queue and the outcome in Redis.
//! - [`worker`]: consumer threads that compute with [`sum::sum_json`], store the
//!   outcome, then ack.
//! - [`store`]: sessions in PostgreSQL, outcomes in Redis.
//! - [`waiters`]: how a sync request hears its result (Redis pub/sub, one connection
//!   per `serve` process) without blocking the server.
//! - [`auth`]: who may use the API: open, or API keys with per-key limits.
//! - [`migrate`]: embedded schema migrations.
//! - [`metrics`], [`telemetry`]: what each role counts for Prometheus; logs (text or
//!   JSON) and traces that follow a request through the queue into the worker.
//! - [`config`], [`cli`]: layered configuration; [`roles`]: one entry point per
//!   subcommand; [`probe`]: the health check the images use; [`tls`]: TLS to the three
//!   dependencies; [`shutdown`], [`dependency`], [`episode`]: the plumbing.

mod api;
pub mod auth;
pub mod broker;
mod budget;
pub mod cli;
pub mod config;
pub mod dependency;
mod episode;
mod http;
mod metrics;
pub mod migrate;
pub mod probe;
pub mod roles;
pub mod serve;
pub mod shutdown;
pub mod store;
pub mod sum;
pub mod task;
pub mod telemetry;
pub mod tls;
mod waiters;
pub mod worker;
