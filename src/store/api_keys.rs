//! API keys in PostgreSQL: a name, the SHA-256 digest of the key's secret (never the
//! secret), when the key was created and, once revoked, when. A revoked key keeps its
//! row, so its name stays taken and the sessions it made keep their owner.

use tokio_postgres::error::SqlState;

use super::postgres::failed;
use super::sessions::Sessions;
use crate::config::{PostgresConfig, TlsConfig};
use crate::dependency::{within, Dependency, Unavailable};

/// A time as `keys list` shows it: RFC 3339 in UTC, to the second.
const UTC: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS"Z"'"#;

/// A key as `sumsvc keys list` shows it: nothing of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    pub name: String,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    /// When it was revoked (RFC 3339, UTC); None while it is in use.
    pub revoked_at: Option<String>,
}

/// A key that is not revoked, as `serve` checks requests against it.
#[derive(Debug, Clone)]
pub struct ActiveKey {
    pub id: i64,
    pub name: String,
    /// The SHA-256 digest of its secret.
    pub digest: [u8; 32],
}

/// Why a key could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(
        "an API key named {0:?} exists already (a revoked key keeps its name): \
         choose another name; `sumsvc keys list` shows the names taken"
    )]
    NameTaken(String),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// What revoking a key by name did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// It was in use and is revoked now.
    Now,
    /// It was revoked before, at this time (RFC 3339, UTC).
    Already(String),
    /// No key has this name.
    Unknown,
}

/// The key store, in the sessions' database.
#[derive(Clone)]
pub struct ApiKeyStore {
    /// The keys live in the same database as the sessions and use the same pool.
    db: Sessions,
}

impl ApiKeyStore {
    /// A store of its own, for the `sumsvc keys` commands; no connection is opened until
    /// the first call.
    pub fn new(config: &PostgresConfig, tls: &TlsConfig) -> anyhow::Result<Self> {
        Ok(Self::sharing(&Sessions::new(config, tls)?))
    }

    /// The store on the connections of `sessions`.
    pub fn sharing(sessions: &Sessions) -> Self {
        Self {
            db: sessions.clone(),
        }
    }

    /// Stores a new key; returns its id.
    pub async fn create(&self, name: &str, digest: &[u8; 32]) -> Result<i64, CreateError> {
        within(Dependency::Postgres, self.db.timeout, async {
            let client = self.db.client().await?;
            let row = client
                .query_one(
                    "INSERT INTO api_keys (name, digest) VALUES ($1, $2) RETURNING id",
                    &[&name, &digest.as_slice()],
                )
                .await;
            match row {
                Ok(row) => Ok(Ok(row.get(0))),
                // Digests of 256-bit random secrets do not collide: a unique violation
                // is the name's.
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    Ok(Err(CreateError::NameTaken(name.to_owned())))
                }
                Err(e) => Err(failed(e)),
            }
        })
        .await?
    }

    /// Every key, revoked ones too, oldest first.
    pub async fn list(&self) -> Result<Vec<ApiKeyInfo>, Unavailable> {
        within(Dependency::Postgres, self.db.timeout, async {
            let client = self.db.client().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT name, to_char(created_at AT TIME ZONE 'UTC', {UTC}), \
                         to_char(revoked_at AT TIME ZONE 'UTC', {UTC}) \
                         FROM api_keys ORDER BY created_at, id"
                    ),
                    &[],
                )
                .await
                .map_err(failed)?;
            Ok(rows
                .iter()
                .map(|row| ApiKeyInfo {
                    name: row.get(0),
                    created_at: row.get(1),
                    revoked_at: row.get(2),
                })
                .collect())
        })
        .await
    }

    /// Revokes the key named `name`.
    pub async fn revoke(&self, name: &str) -> Result<Revoked, Unavailable> {
        within(Dependency::Postgres, self.db.timeout, async {
            let client = self.db.client().await?;
            let revoked = client
                .execute(
                    "UPDATE api_keys SET revoked_at = now() \
                     WHERE name = $1 AND revoked_at IS NULL",
                    &[&name],
                )
                .await
                .map_err(failed)?;
            if revoked == 1 {
                return Ok(Revoked::Now);
            }
            let before = client
                .query_opt(
                    &format!(
                        "SELECT to_char(revoked_at AT TIME ZONE 'UTC', {UTC}) \
                         FROM api_keys WHERE name = $1"
                    ),
                    &[&name],
                )
                .await
                .map_err(failed)?;
            Ok(match before {
                Some(row) => Revoked::Already(row.get(0)),
                None => Revoked::Unknown,
            })
        })
        .await
    }

    /// Every key that is not revoked.
    pub async fn active(&self) -> Result<Vec<ActiveKey>, Unavailable> {
        within(Dependency::Postgres, self.db.timeout, async {
            let client = self.db.client().await?;
            let stmt = client
                .prepare_cached("SELECT id, name, digest FROM api_keys WHERE revoked_at IS NULL")
                .await
                .map_err(failed)?;
            let rows = client.query(&stmt, &[]).await.map_err(failed)?;
            // The table's CHECK keeps every digest 32 bytes long.
            Ok(rows
                .iter()
                .filter_map(|row| {
                    Some(ActiveKey {
                        id: row.get(0),
                        name: row.get(1),
                        digest: row.get::<_, &[u8]>(2).try_into().ok()?,
                    })
                })
                .collect())
        })
        .await
    }
}
