//! Sessions in PostgreSQL: a row maps the integer `session_id` a client polls to the
//! task id, with the time it was created.
//!
//! Session ids are drawn uniformly from [2^32, 2^53) by the OS CSPRNG: a client that
//! knows its own id learns nothing about anyone else's, and every id is exact in a
//! JavaScript number. Ids below 2^32 were counted up by the database before that and
//! stay valid; a drawn id never lands among them.

use std::ops::Range;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use uuid::Uuid;

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
const CREATE_ATTEMPTS: u32 = 4;

/// A session as a client sees it.
#[derive(Debug, Clone)]
pub struct Session {
    pub task_id: Uuid,
    /// Seconds since the session was created, by the database's clock.
    pub age: Duration,
}

/// The session store: a connection pool whose every call is bounded in time.
#[derive(Clone)]
pub struct Sessions {
    pool: Pool,
    timeout: Duration,
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
            pool,
            timeout: config.timeout,
        })
    }

    /// Records a session for a task that RabbitMQ has confirmed, under a new random id;
    /// returns the id.
    pub async fn create(&self, task_id: Uuid) -> Result<i64, Unavailable> {
        within(Dependency::Postgres, self.timeout, async {
            let client = self.client().await?;
            // A taken id inserts nothing instead of failing, so the next draw needs no
            // new transaction; a taken task id still fails, as it must.
            let stmt = client
                .prepare_cached(
                    "INSERT INTO sessions (id, task_id) VALUES ($1, $2) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .await
                .map_err(failed)?;
            for _ in 0..CREATE_ATTEMPTS {
                let id = random_id();
                if client
                    .execute(&stmt, &[&id, &task_id])
                    .await
                    .map_err(failed)?
                    == 1
                {
                    return Ok(id);
                }
                tracing::warn!(
                    session_id = id,
                    "drew a session id already taken; drawing again"
                );
            }
            Err(Unavailable::new(
                Dependency::Postgres,
                format!("{CREATE_ATTEMPTS} random session ids in a row were already taken"),
            ))
        })
        .await
    }

    /// Looks a session up by id.
    pub async fn find(&self, id: i64) -> Result<Option<Session>, Unavailable> {
        within(Dependency::Postgres, self.timeout, async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT task_id, EXTRACT(EPOCH FROM (now() - created_at))::float8 \
                     FROM sessions WHERE id = $1",
                )
                .await
                .map_err(failed)?;
            let row = client.query_opt(&stmt, &[&id]).await.map_err(failed)?;
            Ok(row.map(|row| Session {
                task_id: row.get(0),
                age: Duration::from_secs_f64(row.get::<_, f64>(1).max(0.0)),
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

    async fn client(&self) -> Result<deadpool_postgres::Object, Unavailable> {
        self.pool
            .get()
            .await
            .map_err(|e| Unavailable::from_chain(Dependency::Postgres, &e))
    }
}

/// A uniformly random id in [`SESSION_IDS`], from the OS CSPRNG.
fn random_id() -> i64 {
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

fn failed(e: tokio_postgres::Error) -> Unavailable {
    let mut u = Unavailable::from_chain(Dependency::Postgres, &e);
    // A missing table, or session ids the database still counts itself: the schema is
    // older than this build.
    if [
        Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE),
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
