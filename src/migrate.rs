//! `sumsvc migrate`: create the database named in `postgres.url` if it is missing, then
//! apply the embedded migrations in order, each once, in its own transaction.
//!
//! Applied versions are recorded in `schema_migrations`; a session advisory lock makes
//! concurrent runs (several hosts starting at once) take turns, so running it twice,
//! or twice at once, changes nothing.

use anyhow::{anyhow, bail, Context};
use postgres_native_tls::MakeTlsConnector;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::config::{PostgresConfig, TlsConfig};
use crate::dependency::{Dependency, Unavailable};
use crate::tls::Trust;

/// One embedded migration.
struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, in the order they apply. Never edit one that has shipped: add one.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "create_sessions",
        sql: include_str!("migrations/0001_create_sessions.sql"),
    },
    Migration {
        version: 2,
        name: "random_session_ids",
        sql: include_str!("migrations/0002_random_session_ids.sql"),
    },
    Migration {
        version: 3,
        name: "api_keys",
        sql: include_str!("migrations/0003_api_keys.sql"),
    },
    Migration {
        version: 4,
        name: "idempotency_keys",
        sql: include_str!("migrations/0004_idempotency_keys.sql"),
    },
    Migration {
        version: 5,
        name: "session_purge",
        sql: include_str!("migrations/0005_session_purge.sql"),
    },
    Migration {
        version: 6,
        name: "sessions_without_task_index",
        sql: include_str!("migrations/0006_sessions_without_task_index.sql"),
    },
];

/// Arbitrary constant that names sumsvc's advisory lock.
const LOCK_KEY: i64 = 0x5355_4d53_5643;

/// What a run did.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    pub created_database: bool,
    pub applied: Vec<i64>,
}

/// Runs the migrations against the database of `config.url`, with TLS as its `sslmode`
/// asks, trusting `tls`.
pub async fn run(config: &PostgresConfig, tls: &TlsConfig) -> anyhow::Result<Report> {
    let mut target: tokio_postgres::Config = config
        .url
        .parse()
        .context("postgres.url is not a PostgreSQL URL")?;
    target.connect_timeout(config.timeout);
    let dbname = target
        .get_dbname()
        .context("postgres.url names no database")?
        .to_owned();
    let tls = Trust::load(tls)?.postgres(&target)?;

    // Connect to the database itself first: a role that may use only its own database
    // never needs the maintenance one.
    let (mut client, created_database) = match target.connect(tls.clone()).await {
        Ok((client, connection)) => {
            spawn_connection(connection);
            (client, false)
        }
        Err(e) if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
            let created = create_database(&target, &tls, &dbname).await?;
            (connect(&target, &tls).await?, created)
        }
        Err(e) => return Err(cannot_connect(&target, &e)),
    };
    let applied = apply(&mut client).await?;
    Ok(Report {
        created_database,
        applied,
    })
}

async fn connect(
    config: &tokio_postgres::Config,
    tls: &MakeTlsConnector,
) -> anyhow::Result<Client> {
    let (client, connection) = config
        .connect(tls.clone())
        .await
        .map_err(|e| cannot_connect(config, &e))?;
    spawn_connection(connection);
    Ok(client)
}

/// The whole cause, which the error's own `Display` hides, with advice for TLS failures.
fn cannot_connect(config: &tokio_postgres::Config, e: &tokio_postgres::Error) -> anyhow::Error {
    let cause = Unavailable::from_chain(Dependency::Postgres, e).cause;
    anyhow!(
        "cannot connect to PostgreSQL at {:?} (check postgres.url): {cause}",
        config.get_hosts()
    )
}

fn spawn_connection(
    connection: tokio_postgres::Connection<
        tokio_postgres::Socket,
        postgres_native_tls::TlsStream<tokio_postgres::Socket>,
    >,
) {
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "migration connection ended");
        }
    });
}

/// Creates `dbname` through the `postgres` maintenance database; false when another
/// migrate created it first.
async fn create_database(
    target: &tokio_postgres::Config,
    tls: &MakeTlsConnector,
    dbname: &str,
) -> anyhow::Result<bool> {
    let mut maintenance = target.clone();
    maintenance.dbname("postgres");
    let client = connect(&maintenance, tls).await?;
    let quoted = format!("\"{}\"", dbname.replace('"', "\"\""));
    match client
        .batch_execute(&format!("CREATE DATABASE {quoted}"))
        .await
    {
        Ok(()) => {
            tracing::info!(database = dbname, "created database");
            Ok(true)
        }
        // Another migrate created it between our check and our CREATE; PostgreSQL says
        // so with either code depending on how far the other CREATE had got.
        Err(e)
            if e.code() == Some(&SqlState::DUPLICATE_DATABASE)
                || e.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
        {
            Ok(false)
        }
        Err(e) => Err(e).with_context(|| format!("cannot create database {dbname}")),
    }
}

async fn apply(client: &mut Client) -> anyhow::Result<Vec<i64>> {
    // Held for the whole run, from before `schema_migrations` exists: concurrent runs
    // would otherwise race even on CREATE TABLE IF NOT EXISTS.
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .context("cannot take the migration lock")?;
    let applied = apply_locked(client).await;
    // Also released when the connection closes, should this fail.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    applied
}

async fn apply_locked(client: &mut Client) -> anyhow::Result<Vec<i64>> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    BIGINT PRIMARY KEY,
                 name       TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await
        .context("cannot create schema_migrations")?;

    let mut applied = Vec::new();
    let tx = client.transaction().await?;
    let done: Vec<i64> = tx
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if let Some(&newest) = done.last() {
        let known = MIGRATIONS.last().map_or(0, |m| m.version);
        if newest > known {
            bail!(
                "the database is at schema version {newest}, newer than this build knows ({known}): \
                 run a newer sumsvc"
            );
        }
    }
    for m in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
        tx.batch_execute(m.sql)
            .await
            .with_context(|| format!("migration {} ({}) failed", m.version, m.name))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
        applied.push(m.version);
    }
    tx.commit().await?;
    Ok(applied)
}
