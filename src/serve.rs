//! `sumsvc serve`: the HTTP API's role. It builds the state every handler shares and
//! serves the routes on [`crate::http`]. Only PostgreSQL must be up to start; RabbitMQ
//! and Redis are connected in the background and reconnected whenever they drop, while
//! the routes that need them answer 503.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::{self, AppState};
use crate::auth::Access;
use crate::broker::Publisher;
use crate::config::Config;
use crate::http;
use crate::metrics::ServeMetrics;
use crate::store::idempotency::IdempotencyKeys;
use crate::store::purge::{Purger, Retention};
use crate::store::{MarkWriter, Results, Sessions};
use crate::waiters::Waiters;

/// Builds the state every handler shares and checks that PostgreSQL answers.
pub async fn build_state(config: &Config) -> anyhow::Result<AppState> {
    let sessions = Sessions::new(&config.postgres, &config.tls)?;
    sessions.ping().await.context(
        "serve needs PostgreSQL at start (check postgres.url, and run `sumsvc migrate`)",
    )?;
    let results = Results::new(&config.redis, &config.tls, config.tasks.result_ttl)?;
    let access = Access::start(config, &sessions, &results).await?;
    let publisher = Publisher::start(&config.rabbitmq, &config.tls)?;
    // A fresh name per process: replies for this process's sync requests come to it.
    let instance = Uuid::new_v4().simple().to_string();
    let waiters = Waiters::start(
        &config.redis,
        results.clone(),
        instance,
        config.limits.max_sync_waiters,
    )?;
    let metrics = Arc::new(ServeMetrics::new(sessions.orphans()));
    let marks = MarkWriter::start(results.clone());
    let idempotency = IdempotencyKeys::sharing(&sessions, config.tasks.idempotency_ttl);
    Ok(AppState {
        config: Arc::new(config.clone()),
        access,
        sessions,
        results,
        marks,
        idempotency,
        publisher,
        waiters,
        metrics,
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
    if !config.tasks.purge_every.is_zero() {
        let purger = Purger::new(
            state.idempotency.clone(),
            state.sessions.clone(),
            Retention::of(&config.tasks),
        );
        tokio::spawn(purger.every(config.tasks.purge_every, shutdown.child_token()));
    }
    let addr = listener.local_addr()?;
    let acceptor = http::acceptor(listener)?;
    tracing::info!(%addr, "serving the API; docs at /docs");
    http::serve(acceptor, api::routes(state), &config.http, shutdown).await;
    tracing::info!("API stopped");
    Ok(())
}

/// Binds `http.listen`, with an error that names the key.
pub fn bind(config: &Config) -> anyhow::Result<std::net::TcpListener> {
    http::bind(config.http.listen, "http.listen", None)
}
