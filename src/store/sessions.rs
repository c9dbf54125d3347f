//! Sessions in PostgreSQL: a row maps the integer `session_id` a client polls to the
//! task id, with the time it was created and the API key that created it (none in open
//! mode).
//!
//! Ids are a keyed permutation of a counter ([`super::session_ids`]), and rows are
//! inserted in batches across concurrent requests ([`super::session_writer`]). Sessions
//! older than `tasks.result_ttl` plus `tasks.session_retention` are purged
//! ([`Sessions::purge`]); their ids still answer as purged, not unknown.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use prometheus_client::metrics::counter::Counter;
use uuid::Uuid;

use super::pool;
use super::postgres::failed;
use super::session_ids::SessionIds;
use super::session_writer::{Rows, SessionWriter};
use crate::config::{PostgresConfig, TlsConfig};
use crate::dependency::{within, Dependency, Unavailable};
use crate::tls::Trust;

/// How long sent data may go unacknowledged before a connection counts as dead
/// (unless `postgres.url` sets `tcp_user_timeout`).
const DEAD_PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// Sessions one purge statement removes at most: a pass never holds many rows locked.
pub const PURGE_BATCH: i64 = 10_000;

/// A session as a client sees it.
#[derive(Debug, Clone)]
pub struct Session {
    pub task_id: Uuid,
    /// Seconds since the session was created, by the database's clock.
    pub age: Duration,
    /// The id of the API key that created it; None when it was made in open mode.
    pub owner: Option<i64>,
}

/// The session store: a connection pool whose every call is bounded in time.
#[derive(Clone)]
pub struct Sessions {
    pool: Pool,
    pub timeout: Duration,
    ids: Arc<SessionIds>,
    rows: Rows,
    /// Started on the first `create`, on the runtime that makes it: a store built
    /// outside one (a command that only reads) never starts it.
    writer: Arc<OnceLock<SessionWriter>>,
}

impl Sessions {
    /// Builds the pool; no connection is opened until the first call. TLS as
    /// `postgres.url`'s `sslmode` asks, trusting `tls`.
    pub fn new(config: &PostgresConfig, tls: &TlsConfig) -> anyhow::Result<Self> {
        let mut pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| anyhow::anyhow!("postgres.url: {e}"))?;
        pg.connect_timeout(config.timeout);
        pg.application_name("sumsvc");
        // A pooled connection whose server vanished without a word (no FIN, no RST)
        // would hang every request that draws it; the kernel closes it once sent data
        // goes unacknowledged this long, and the pool then replaces it.
        if pg.get_tcp_user_timeout().is_none() {
            pg.tcp_user_timeout(DEAD_PEER_TIMEOUT);
        }
        let connector = Trust::load(tls)?.postgres(&pg)?;
        let manager = Manager::from_config(
            pg,
            connector,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = pool::bounded(Pool::builder(manager), config.pool_size, config.timeout)?;
        let ids = Arc::new(SessionIds::new(pool.clone(), config.timeout));
        Ok(Self {
            rows: Rows::new(
                pool.clone(),
                config.timeout,
                Counter::default(),
                ids.clone(),
            ),
            ids,
            pool,
            timeout: config.timeout,
            writer: Arc::default(),
        })
    }

    /// Records a session for a task that RabbitMQ has confirmed, under a new random id,
    /// owned by the API key `owner` (None in open mode); returns the id once the row is
    /// committed. Concurrent calls share one multi-row insert ([`SessionWriter`]).
    pub async fn create(&self, task_id: Uuid, owner: Option<i64>) -> Result<i64, Unavailable> {
        let ids = self.create_many(&[task_id], owner).await?;
        Ok(ids[0])
    }

    /// Records one session per task of a batch, owned by `owner`: all of them, in one
    /// statement (shared with other requests' rows), or none. Returns their ids in the
    /// order of `task_ids`.
    pub async fn create_many(
        &self,
        task_ids: &[Uuid],
        owner: Option<i64>,
    ) -> Result<Vec<i64>, Unavailable> {
        let writer = self
            .writer
            .get_or_init(|| SessionWriter::start(self.rows.clone()));
        within(
            Dependency::Postgres,
            self.timeout,
            writer.create(task_ids.to_vec(), owner),
        )
        .await
    }

    /// Session rows not kept because the request that asked for them gave up before it
    /// could hear their ids, or failed with some of them in (`sumsvc_session_orphans_total`).
    pub fn orphans(&self) -> Counter {
        self.rows.orphans()
    }

    /// Looks a session up by id.
    pub async fn find(&self, id: i64) -> Result<Option<Session>, Unavailable> {
        Ok(self.find_many(&[id]).await?.remove(&id))
    }

    /// Looks sessions up by id, in one query; those that do not exist are left out.
    pub async fn find_many(&self, ids: &[i64]) -> Result<HashMap<i64, Session>, Unavailable> {
        within(Dependency::Postgres, self.timeout, async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT id, task_id, EXTRACT(EPOCH FROM (now() - created_at))::float8, \
                     owner FROM sessions WHERE id = ANY($1)",
                )
                .await
                .map_err(failed)?;
            let rows = client.query(&stmt, &[&ids]).await.map_err(failed)?;
            Ok(rows
                .into_iter()
                .map(|row| {
                    let session = Session {
                        task_id: row.get(1),
                        age: Duration::from_secs_f64(row.get::<_, f64>(2).max(0.0)),
                        owner: row.get(3),
                    };
                    (row.get(0), session)
                })
                .collect())
        })
        .await
    }

    /// Which of `ids`, which no session row has, are purged sessions' (410) rather than
    /// ids never given (404).
    pub async fn purged(&self, ids: &[i64]) -> Result<Vec<i64>, Unavailable> {
        self.ids.purged(ids).await
    }

    /// Removes sessions created more than `older_than` ago, in batches of
    /// [`PURGE_BATCH`], oldest first, and records the highest counter value removed (see
    /// [`super::session_ids`]) in the same transaction as each batch; returns how many
    /// it removed.
    pub async fn purge(&self, older_than: Duration) -> Result<u64, Unavailable> {
        let mut removed = 0;
        loop {
            let deleted = within(Dependency::Postgres, self.timeout, async {
                let mut client = self.client().await?;
                let tx = client.transaction().await.map_err(failed)?;
                let rows = tx
                    .query(
                        "DELETE FROM sessions WHERE id IN (\
                             SELECT id FROM sessions \
                             WHERE created_at < now() - $1 * interval '1 millisecond' \
                             ORDER BY created_at LIMIT $2) \
                         RETURNING id",
                        &[&(older_than.as_secs_f64() * 1000.0), &PURGE_BATCH],
                    )
                    .await
                    .map_err(failed)?;
                let ids: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
                if let Some(highest) = self.ids.highest_given(&ids, &tx).await? {
                    tx.execute(
                        "UPDATE session_ids SET purged_through = GREATEST(purged_through, $1)",
                        &[&highest],
                    )
                    .await
                    .map_err(failed)?;
                }
                tx.commit().await.map_err(failed)?;
                Ok(rows.len() as u64)
            })
            .await?;
            removed += deleted;
            if deleted < PURGE_BATCH as u64 {
                return Ok(removed);
            }
        }
    }

    /// Checks that PostgreSQL answers and the schema is there.
    pub async fn ping(&self) -> Result<(), Unavailable> {
        within(Dependency::Postgres, self.timeout, async {
            let client = self.client().await?;
            client
                .simple_query("SELECT 1 FROM sessions LIMIT 0")
                .await
                .map_err(failed)?;
            Ok(())
        })
        .await
    }

    pub async fn client(&self) -> Result<deadpool_postgres::Object, Unavailable> {
        self.pool
            .get()
            .await
            .map_err(|e| Unavailable::from_chain(Dependency::Postgres, &e))
    }
}
