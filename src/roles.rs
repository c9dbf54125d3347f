//! One function per subcommand, each taking its config and a shutdown token so tests
//! run exactly what the binary runs.

use std::io::Write;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::broker::DeadLetters;
use crate::config::Config;
use crate::worker::{self, WorkerPool};
use crate::{migrate, serve};

/// `sumsvc migrate`.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let report = migrate::run(&config.postgres).await?;
    tracing::info!(
        created_database = report.created_database,
        applied = ?report.applied,
        "database is up to date"
    );
    Ok(())
}

/// `sumsvc serve`.
pub async fn serve(config: &Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = serve::bind(config)?;
    serve::run(config, listener, shutdown).await
}

/// `sumsvc work`: runs the worker pool until `shutdown`, then waits for it to drain.
/// Fails when the pool gives up (a consumer keeps failing), so the process exits
/// non-zero and its service manager restarts it. Its metrics are served at
/// `worker.metrics_listen` until it has drained.
pub async fn work(config: &Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = worker::bind_metrics(config)?;
    let pool = WorkerPool::start(config, shutdown.clone())?;
    let metrics = pool.serve_metrics(listener)?;
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = pool.failed() => {}
    }
    let drained = pool.wait().await.context("workers cannot consume");
    metrics.stop().await;
    drained?;
    tracing::info!("workers stopped");
    Ok(())
}

/// `sumsvc dev`: migrate, then the API and a worker pool in one process, each with its
/// metrics where `serve` and `work` have them.
pub async fn dev(config: &Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    migrate(config)
        .await
        .context("dev runs migrate first; is PostgreSQL running?")?;
    let listener = worker::bind_metrics(config)?;
    // The workers get a token of their own: they must keep answering the requests the
    // API drains after the signal, and stop only once it has.
    let workers = CancellationToken::new();
    let pool = WorkerPool::start(config, workers.clone())?;
    let metrics = pool.serve_metrics(listener)?;
    // A pool that gives up stops the API too: `dev` is one service.
    let api = shutdown.child_token();
    let stop_api_on_failure = async {
        tokio::select! {
            _ = pool.failed() => api.cancel(),
            _ = api.cancelled() => {}
        }
    };
    let (served, ()) = tokio::join!(serve(config, api.clone()), stop_api_on_failure);
    workers.cancel();
    let drained = pool.wait().await.context("workers cannot consume");
    metrics.stop().await;
    served.and(drained)
}

/// `sumsvc dead list`: prints what sits in the dead-letter queue, as text or one JSON
/// object per line; takes nothing from it.
pub async fn dead_list(config: &Config, limit: Option<u64>, json: bool) -> anyhow::Result<()> {
    let dead = DeadLetters::new(&config.rabbitmq)?;
    let listing = tokio::task::spawn_blocking(move || dead.list(limit))
        .await
        .context("the listing thread failed")??;
    let mut out = std::io::stdout().lock();
    if json {
        for letter in &listing.letters {
            writeln!(out, "{}", serde_json::to_string(letter)?)?;
        }
    } else {
        write!(out, "{listing}")?;
    }
    out.flush()?;
    Ok(())
}

/// `sumsvc dead replay`: moves dead letters back to the task queue and says how many.
pub async fn dead_replay(config: &Config, limit: Option<u64>) -> anyhow::Result<()> {
    let dead = DeadLetters::new(&config.rabbitmq)?;
    let from = dead.dead_letter_queue().to_owned();
    let moved = tokio::task::spawn_blocking(move || dead.replay(limit))
        .await
        .context("the replay thread failed")??;
    let plural = if moved == 1 { "" } else { "s" };
    println!(
        "moved {moved} message{plural} from {from} to {}",
        config.rabbitmq.queue
    );
    Ok(())
}
