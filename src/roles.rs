//! One function per subcommand, each taking its config and a shutdown token so tests
//! run exactly what the binary runs.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::broker::DeadLetters;
use crate::config::Config;
use crate::store::api_keys::{ApiKeyInfo, Revoked};
use crate::store::idempotency::IdempotencyKeys;
use crate::store::purge::{Purger, Retention};
use crate::store::{ApiKeyStore, Sessions};
use crate::worker::{self, WorkerPool};
use crate::{auth, migrate, probe, serve};

/// `sumsvc config`: the effective config, as TOML, secrets hidden.
pub fn config(config: &Config) -> anyhow::Result<()> {
    print!("{}", config.to_toml());
    Ok(())
}

/// `sumsvc probe PATH`: prints what the local API answers at `path`; fails unless 200.
pub fn probe(config: &Config, path: &str) -> anyhow::Result<()> {
    let body = probe::run(config.http.listen, path, PROBE_TIMEOUT)?;
    println!("{body}");
    Ok(())
}

/// How long `sumsvc probe` waits for the API: less than a health check's usual timeout.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// `sumsvc migrate`.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let report = migrate::run(&config.postgres, &config.tls).await?;
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
    let metrics = pool.serve_metrics(listener, &config.http)?;
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
    let metrics = pool.serve_metrics(listener, &config.http)?;
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

/// `sumsvc purge`: one pass of what `serve` removes every `tasks.purge_every`; prints
/// what it removed.
pub async fn purge(config: &Config) -> anyhow::Result<()> {
    let sessions = Sessions::new(&config.postgres, &config.tls)?;
    let idempotency = IdempotencyKeys::sharing(&sessions, config.tasks.idempotency_ttl);
    let purged = Purger::new(idempotency, sessions, Retention::of(&config.tasks))
        .pass()
        .await?;
    println!("{purged}");
    Ok(())
}

/// `sumsvc dead list`: prints what sits in the dead-letter queue, as text or one JSON
/// object per line; takes nothing from it.
pub async fn dead_list(config: &Config, limit: Option<u64>, json: bool) -> anyhow::Result<()> {
    let dead = DeadLetters::new(&config.rabbitmq, &config.tls)?;
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
    let dead = DeadLetters::new(&config.rabbitmq, &config.tls)?;
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

/// `sumsvc keys create NAME`: prints the new key's secret, once, alone on the last line
/// of standard output, so `tail -n 1` takes it.
pub async fn keys_create(config: &Config, name: &str) -> anyhow::Result<()> {
    let store = ApiKeyStore::new(&config.postgres, &config.tls)?;
    let secret = auth::create_key(&store, name).await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "created API key {name:?}; clients send it as `Authorization: Bearer <key>`. \
         It is shown this once and stored nowhere:"
    )?;
    writeln!(out, "{}", secret.expose())?;
    out.flush()?;
    Ok(())
}

/// `sumsvc keys list`: every key, when it was created and whether it was revoked.
pub async fn keys_list(config: &Config) -> anyhow::Result<()> {
    let keys = ApiKeyStore::new(&config.postgres, &config.tls)?
        .list()
        .await?;
    print!("{}", key_table(&keys));
    Ok(())
}

/// The keys as a table, oldest first, or a line saying how to create one.
fn key_table(keys: &[ApiKeyInfo]) -> String {
    if keys.is_empty() {
        return "no API keys: create one with `sumsvc keys create NAME`\n".to_owned();
    }
    let width = keys.iter().map(|k| k.name.len()).max().unwrap_or(0).max(4);
    let mut table = format!("{:width$}  {:20}  REVOKED\n", "NAME", "CREATED");
    for key in keys {
        let revoked = key.revoked_at.as_deref().unwrap_or("-");
        table.push_str(&format!(
            "{:width$}  {:20}  {revoked}\n",
            key.name, key.created_at
        ));
    }
    table
}

/// `sumsvc keys revoke NAME`: fails when no key has the name.
pub async fn keys_revoke(config: &Config, name: &str) -> anyhow::Result<()> {
    match ApiKeyStore::new(&config.postgres, &config.tls)?
        .revoke(name)
        .await?
    {
        Revoked::Now => {
            println!("revoked API key {name:?}: every serve refuses it within auth.revoke_within")
        }
        Revoked::Already(at) => println!("API key {name:?} was revoked already, at {at}"),
        Revoked::Unknown => {
            anyhow::bail!("no API key is named {name:?}: `sumsvc keys list` shows the keys")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_table_lines_up_and_marks_revoked_keys() {
        let keys = [
            ApiKeyInfo {
                name: "billing-prod".into(),
                created_at: "2026-11-28T02:08:31Z".into(),
                revoked_at: None,
            },
            ApiKeyInfo {
                name: "ci".into(),
                created_at: "2026-11-29T10:00:00Z".into(),
                revoked_at: Some("2026-11-30T09:00:00Z".into()),
            },
        ];
        assert_eq!(
            key_table(&keys),
            "NAME          CREATED               REVOKED\n\
             billing-prod  2026-11-28T02:08:31Z  -\n\
             ci            2026-11-29T10:00:00Z  2026-11-30T09:00:00Z\n"
        );
        assert!(key_table(&[]).contains("sumsvc keys create NAME"));
    }
}
