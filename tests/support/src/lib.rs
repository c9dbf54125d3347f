//! The harness of sumsvc's integration tests and benchmarks.
//!
//! What it gives a test:
//! - names of its own: [`unique_config`] makes a config whose database, queue names
//!   and Redis key prefix no other test uses, so tests run side by side in one
//!   process, and [`App`] removes them when it is dropped
//!   ([`cleanup`](cleanup::cleanup));
//! - the real roles against the real services: `serve` in this process or as a child
//!   process ([`App`], [`Remote`]), worker pools ([`Workers`], [`StuckWorker`]), and
//!   the `sumsvc` binary run as an operator runs it ([`process`], [`cli`], [`keys`]),
//!   against the shared PostgreSQL, RabbitMQ and Redis ([`config`]), which a test
//!   also reads past sumsvc ([`amqp`], [`redis`], [`rabbitmqctl`]);
//! - dependencies to cut: any of them can be routed through a [`Proxy`] that the test
//!   cuts and restores, put behind TLS ([`tls_proxy`]), or replaced by a private
//!   `redis-server` ([`redis_server`]);
//! - what a test observes with: HTTP answers ([`Reply`]), `/metrics` pages
//!   ([`metrics`]), an OTLP collector ([`otlp`]), a headless browser ([`webdriver`]),
//!   and bounded waits that fail naming what they waited for ([`wait`]).
//!
//! Benchmarks use it too, with [`bench`](mod@bench) and [`procstat`].

pub mod amqp;
pub mod app;
pub mod bench;
pub mod cleanup;
pub mod cli;
pub mod config;
pub mod keys;
pub mod metrics;
pub mod otlp;
pub mod process;
pub mod procstat;
pub mod proxy;
pub mod rabbitmqctl;
pub mod redis;
pub mod redis_server;
pub mod remote;
pub mod reply;
pub mod sessions;
pub mod sse;
pub mod started;
pub mod tls_proxy;
pub mod wait;
pub mod webdriver;
pub mod workers;

pub use app::App;
pub use config::unique_config;
pub use process::KillOnDrop;
pub use proxy::Proxy;
pub use remote::Remote;
pub use reply::Reply;
pub use workers::{StuckWorker, Workers};
