//! Sessions in PostgreSQL: a row maps the integer `session_id` a client polls to the
//! task id, with the time it was created.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use uuid::Uuid;

use crate::config::PostgresConfig;
use crate::dependency::{within, Dependency, Unavailable};

/// How long sent data may go unacknowledged before a connection counts as dead
/// (unless `postgres.url` sets `tcp_user_timeout`).
const DEAD_PEER_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Builds the pool; no connection is opened until the first call.
    pub fn new(config: &PostgresConfig) -> anyhow::Result<Self> {
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
        let manager = Manager::from_config(
            pg,
            NoTls,
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

    /// Records a session for a task that RabbitMQ has confirmed; returns its id.
    pub async fn create(&self, task_id: Uuid) -> Result<i64, Unavailable> {
        within(Dependency::Postgres, self.timeout, async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached("INSERT INTO sessions (task_id) VALUES ($1) RETURNING id")
                .await
                .map_err(failed)?;
            let row = client.query_one(&stmt, &[&task_id]).await.map_err(failed)?;
            Ok(row.get(0))
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

fn failed(e: tokio_postgres::Error) -> Unavailable {
    let mut u = Unavailable::from_chain(Dependency::Postgres, &e);
    if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
        u.cause.push_str(" (run `sumsvc migrate` first)");
    }
    u
}
