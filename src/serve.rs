//! `sumsvc serve`: the HTTP API. Only PostgreSQL must be up to start; RabbitMQ and Redis
//! are connected in the background and reconnected whenever they drop, while the
//! routes that need them answer 503.
//!
//! Connections are served here rather than by poem's `Server`, which has no header or
//! body read timeout and retries a failed accept at once: `accept` caps connections
//! and backs off, `connection` runs hyper for each, `watchdog` cuts slow and idle
//! clients. `work`'s metrics port is served by the same loop ([`serve_endpoint`]). The request body's own bounds (time, size, memory) are in the API's body
//! reader.

mod accept;
mod connection;
mod watchdog;

use std::sync::Arc;

use anyhow::Context;
use poem::listener::TcpAcceptor;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::{self, AppState};
use crate::auth::Access;
use crate::broker::Publisher;
use crate::config::Config;
use crate::metrics::ServeMetrics;
use crate::store::{Results, Sessions};
use crate::waiters::Waiters;

/// Builds the state every handler shares and checks that PostgreSQL answers.
pub(crate) async fn build_state(config: &Config) -> anyhow::Result<AppState> {
    let sessions = Sessions::new(&config.postgres, &config.tls)?;
    sessions.ping().await.context(
        "serve needs PostgreSQL at start (check postgres.url, and run `sumsvc migrate`)",
    )?;
    let access = Access::start(config, &sessions).await?;
    let results = Results::new(&config.redis, &config.tls, config.tasks.result_ttl)?;
    let publisher = Publisher::start(&config.rabbitmq, &config.tls)?;
    // A fresh name per process: replies for this process's sync requests come to it.
    let instance = Uuid::new_v4().simple().to_string();
    let waiters = Waiters::start(&config.redis, results.clone(), instance)?;
    Ok(AppState {
        config: Arc::new(config.clone()),
        access,
        sessions,
        results,
        publisher,
        waiters,
        metrics: Arc::new(ServeMetrics::new()),
    })
}

/// Serves the API on `listener` until `shutdown`, then drains in-flight requests for at
/// most `http.drain_timeout`.
pub async fn run(
    config: &Config,
    listener: std::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let state = build_state(config).await?;
    let addr = listener.local_addr()?;
    let acceptor = acceptor(listener)?;
    tracing::info!(%addr, "serving the API; docs at /docs");
    serve_endpoint(acceptor, api::routes(state), &config.http, shutdown).await;
    tracing::info!("API stopped");
    Ok(())
}

/// A bound listener, made ready for [`serve_endpoint`].
pub(crate) fn acceptor(listener: std::net::TcpListener) -> std::io::Result<TcpAcceptor> {
    listener.set_nonblocking(true)?;
    TcpAcceptor::from_std(listener)
}

/// Serves an endpoint with the `[http]` caps and timers: the API, and `work`'s metrics
/// port alike.
pub(crate) use accept::serve as serve_endpoint;

/// Connections the kernel may queue before `serve` accepts them. The standard library
/// asks for 128, which a burst of thousands of clients overflows (their connections
/// are then reset or wait seconds for a SYN retry); the kernel caps this at somaxconn.
const BACKLOG: u32 = 4096;

/// Binds `http.listen`, with an error that names the key.
pub fn bind(config: &Config) -> anyhow::Result<std::net::TcpListener> {
    let addr = config.http.listen;
    let listen = || -> std::io::Result<std::net::TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)?.into_std()
    };
    listen().with_context(|| format!("cannot listen on {addr} (http.listen)"))
}
