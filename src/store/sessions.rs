//! Sessions in PostgreSQL: a row maps the integer `session_id` a client polls to the
//! task id, with the time it was created and the API key that created it (none in open
//! mode).
//!
//! Session ids are drawn uniformly from [2^32, 2^53) by the OS CSPRNG: a client that
//! knows its own id learns nothing about anyone else's, and every id is exact in a
//! JavaScript number. Ids below 2^32 were counted up by the database before that and
//! stay valid; a drawn id never lands among them.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use uuid::Uuid;

use super::session_writer::SessionWriter;
use crate::config::{PostgresConfig, TlsConfig};
use crate::dependency::{within, Dependency, Unavailable};
use crate::tls::Trust;

/// How long sent data may go unacknowledged before a connection counts as dead
/// (unless `postgres.url` sets `tcp_user_timeout`).
const DEAD_PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where new session ids are drawn from.
pub(crate) const SESSION_IDS: Range<i64> = (1 << 32)..(1 << 53);

/// How many ids `create` draws before it gives up. With millions of sessions a draw
/// collides about once in a billion, so a second draw is already beyond need.
pub(super) const CREATE_ATTEMPTS: u32 = 4;

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
    pub(super) timeout: Duration,
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
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.timeout))
            .create_timeout(Some(config.timeout))
            .recycle_timeout(Some(config.timeout))
            .build()?;
        Ok(Self {
            rows: Rows {
                pool: pool.clone(),
                timeout: config.timeout,
            },
            pool,
            timeout: config.timeout,
            writer: Arc::default(),
        })
    }

    /// Records a session for a task that RabbitMQ has confirmed, under a new random id,
    /// owned by the API key `owner` (None in open mode); returns the id once the row is
    /// committed. Concurrent calls share one multi-row insert ([`SessionWriter`]).
    pub async fn create(&self, task_id: Uuid, owner: Option<i64>) -> Result<i64, Unavailable> {
        let writer = self
            .writer
            .get_or_init(|| SessionWriter::start(self.rows.clone(), self.pool.status().max_size));
        within(
            Dependency::Postgres,
            self.timeout,
            writer.create(task_id, owner),
        )
        .await
    }

    /// Looks a session up by id.
    pub async fn find(&self, id: i64) -> Result<Option<Session>, Unavailable> {
        within(Dependency::Postgres, self.timeout, async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT task_id, EXTRACT(EPOCH FROM (now() - created_at))::float8, owner \
                     FROM sessions WHERE id = $1",
                )
                .await
                .map_err(failed)?;
            let row = client.query_opt(&stmt, &[&id]).await.map_err(failed)?;
            Ok(row.map(|row| Session {
                task_id: row.get(0),
                age: Duration::from_secs_f64(row.get::<_, f64>(1).max(0.0)),
                owner: row.get(2),
            }))
        })
        .await
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

    pub(super) async fn client(&self) -> Result<deadpool_postgres::Object, Unavailable> {
        self.pool
            .get()
            .await
            .map_err(|e| Unavailable::from_chain(Dependency::Postgres, &e))
    }
}

/// Session rows in bulk, for the [`SessionWriter`]; holds no handle to it, so the
/// writer stops once the last `Sessions` is gone.
#[derive(Clone)]
pub(super) struct Rows {
    pool: Pool,
    timeout: Duration,
}

impl Rows {
    /// Inserts one row per index, in one statement (one commit), skipping ids already
    /// taken; returns the id each inserted task got. A taken task id fails the whole
    /// statement, as it must: task ids are fresh UUIDs.
    pub(super) async fn insert(
        &self,
        ids: &[i64],
        task_ids: &[Uuid],
        owners: &[Option<i64>],
    ) -> Result<HashMap<Uuid, i64>, Unavailable> {
        within(Dependency::Postgres, self.timeout, async {
            let client = self
                .pool
                .get()
                .await
                .map_err(|e| Unavailable::from_chain(Dependency::Postgres, &e))?;
            // Taken ids insert nothing instead of failing, so the rest of the batch
            // commits and only those draw again. The id is read back, not assumed: it
            // is what the row holds.
            let stmt = client
                .prepare_cached(
                    "INSERT INTO sessions (id, task_id, owner) \
                     SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::bigint[]) \
                     ON CONFLICT (id) DO NOTHING RETURNING task_id, id",
                )
                .await
                .map_err(failed)?;
            let rows = client
                .query(&stmt, &[&ids, &task_ids, &owners])
                .await
                .map_err(failed)?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })
        .await
    }
}

/// A uniformly random id in [`SESSION_IDS`], from the OS CSPRNG.
pub(super) fn random_id() -> i64 {
    loop {
        // The OS source does not fail once the kernel has seeded it, which it has long
        // before a request arrives; `Uuid::new_v4` for the task id panics likewise.
        let bits = getrandom::u64().expect("the OS random number generator failed");
        // The top 53 bits are uniform in [0, 2^53); dropping the draws below 2^32 (one in
        // two million) leaves them uniform over the range, with no modulo bias.
        let id = (bits >> 11) as i64;
        if SESSION_IDS.contains(&id) {
            return id;
        }
    }
}

pub(super) fn failed(e: tokio_postgres::Error) -> Unavailable {
    let mut u = Unavailable::from_chain(Dependency::Postgres, &e);
    // A missing table or column, or session ids the database still counts itself: the
    // schema is older than this build.
    if [
        Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE),
        Some(&tokio_postgres::error::SqlState::UNDEFINED_COLUMN),
        Some(&tokio_postgres::error::SqlState::GENERATED_ALWAYS),
    ]
    .contains(&e.code())
    {
        u.cause.push_str(" (run `sumsvc migrate` first)");
    }
    u
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn session_ids_are_above_2_32_and_exact_in_javascript() {
        assert_eq!(SESSION_IDS.start, 4_294_967_296);
        assert_eq!(SESSION_IDS.end, 9_007_199_254_740_992);
        let ids: Vec<i64> = (0..10_000).map(|_| random_id()).collect();
        for &id in &ids {
            assert!(SESSION_IDS.contains(&id), "{id}");
        }
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
        // Uniform over the range: about half the draws are in its upper half (which
        // starts at 2^52 plus a little), and the lower half is not empty either. Ten
        // thousand draws stray past 45%..55% with odds of about one in 10^23.
        let middle = SESSION_IDS.start + (SESSION_IDS.end - SESSION_IDS.start) / 2;
        let upper = ids.iter().filter(|&&id| id >= middle).count();
        assert!(
            (4_500..=5_500).contains(&upper),
            "{upper} of 10000 in the upper half"
        );
    }
}
