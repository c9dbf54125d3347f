//! sumsvc computes exact sums of number lists through a job queue.
//!
//! A tour, in the order a request meets the parts:
//!
//! - [`http`]: the listening socket, the accept loop and each connection's timers, on
//!   which [`serve`] runs the API (and `work` its metrics port).
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
//!   dependencies; [`shutdown`], [`dependency`], [`episode`], [`budget`]: the plumbing.
//!
//! The crate is a binary's library: it exports what `src/main.rs`, the integration
//! tests and the benchmarks use (listed below the modules), and this tour is for those
//! who change it (`cargo doc --document-private-items`).

// The tour links the private modules it describes.
#![allow(rustdoc::private_intra_doc_links)]

mod api;
mod auth;
mod broker;
mod budget;
mod cli;
mod config;
mod dependency;
mod episode;
mod http;
mod metrics;
mod migrate;
mod probe;
pub mod roles;
mod serve;
mod shutdown;
mod store;
pub mod sum;
mod task;
mod telemetry;
mod tls;
mod waiters;
mod worker;

// What leaves the crate. Everything else is private to it.
//
// The binary (src/main.rs): its command line, the roles it runs, the shutdown signal
// and telemetry.
pub use cli::{Cli, Command, DeadAction, KeysAction};
pub use shutdown::on_signal as shutdown_on_signal;
pub use telemetry::Telemetry;

// What the integration tests and benchmarks drive beside the roles: the config, each
// role's parts on a listener or runtime of the test's own, the stores read past the API,
// the task protocol and the sum.
pub use broker::{AmqpTarget, Publisher, Topology};
pub use config::{AuthMode, Config, ConfigKey, PostgresConfig};
pub use dependency::Dependency;
pub use migrate::run as migrate_database;
pub use serve::{bind as bind_api, run as serve_api};
pub use store::{RedisNames, Sessions};
pub use task::TaskMessage;
pub use worker::WorkerPool;
