//! Idempotency keys in PostgreSQL, in the sessions' database: which request runs under
//! a key, and the answer it gave (see `src/api/idempotency.rs` for the rules clients
//! see). Each key belongs to the API key that sent it (0 in open mode), so two clients
//! never share one.

use std::time::Duration;

use super::postgres::failed;
use super::sessions::Sessions;
use crate::dependency::{within, Dependency, Unavailable};

/// Rows one purge statement deletes at most: a pass holds no lock for long and takes
/// few rows from the cache at once.
const PURGE_BATCH: i64 = 10_000;

/// An answer kept under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub status: u16,
    pub body: String,
    pub location: Option<String>,
}

impl Kept {
    /// An answer with no `Location`.
    pub fn of(status: u16, body: String) -> Self {
        Self {
            status,
            body,
            location: None,
        }
    }
}

/// What taking a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is this request's: run it, then [`IdempotencyKeys::keep`] its answer or
    /// [`IdempotencyKeys::release`] the key.
    Taken,
    /// The first request under the key still runs.
    Running,
    /// The first request under the key gave this answer.
    Answered(Kept),
    /// The key was used for another request.
    Mismatch,
}

/// The key store, on the sessions' connections.
#[derive(Clone)]
pub struct IdempotencyKeys {
    db: Sessions,
    /// `tasks.idempotency_ttl`: how long a key and its answer are kept.
    ttl: Duration,
}

impl IdempotencyKeys {
    pub fn sharing(sessions: &Sessions, ttl: Duration) -> Self {
        Self {
            db: sessions.clone(),
            ttl,
        }
    }

    /// Takes key `key` of `owner` for a request whose fingerprint is `fingerprint` and
    /// that may run for `running_for`, unless a request took it first. A key past
    /// `tasks.idempotency_ttl`, and one whose first request was abandoned (its serve
    /// died before it answered), are taken again.
    pub async fn claim(
        &self,
        owner: i64,
        key: &str,
        fingerprint: &[u8],
        running_for: Duration,
    ) -> Result<Claim, Unavailable> {
        within(Dependency::Postgres, self.db.timeout, async {
            let client = self.db.client().await?;
            let taken = client
                .query_opt(
                    "INSERT INTO idempotency_keys (owner, key, fingerprint, running_until) \
                     VALUES ($1, $2, $3, now() + $4 * interval '1 millisecond') \
                     ON CONFLICT (owner, key) DO UPDATE SET \
                         fingerprint = EXCLUDED.fingerprint, created_at = now(), \
                         running_until = EXCLUDED.running_until, \
                         status = NULL, body = NULL, location = NULL \
                     WHERE idempotency_keys.created_at < now() - $5 * interval '1 millisecond' \
                        OR (idempotency_keys.status IS NULL \
                            AND idempotency_keys.running_until < now() \
                            AND idempotency_keys.fingerprint = EXCLUDED.fingerprint) \
                     RETURNING 1",
                    &[
                        &owner,
                        &key,
                        &fingerprint,
                        &millis(running_for),
                        &millis(self.ttl),
                    ],
                )
                .await
                .map_err(failed)?;
            if taken.is_some() {
                return Ok(Claim::Taken);
            }
            let row = client
                .query_opt(
                    "SELECT fingerprint, status, body, location FROM idempotency_keys \
                     WHERE owner = $1 AND key = $2",
                    &[&owner, &key],
                )
                .await
                .map_err(failed)?;
            // Purged between the two statements: it is free, but another request may
            // be taking it now; the client retries.
            let Some(row) = row else {
                return Ok(Claim::Running);
            };
            if row.get::<_, &[u8]>(0) != fingerprint {
                return Ok(Claim::Mismatch);
            }
            Ok(match row.get::<_, Option<i16>>(1) {
                None => Claim::Running,
                Some(status) => Claim::Answered(Kept {
                    status: status as u16,
                    body: row.get(2),
                    location: row.get(3),
                }),
            })
        })
        .await
    }

    /// Keeps the answer the request under the key gave.
    pub async fn keep(&self, owner: i64, key: &str, answer: &Kept) -> Result<(), Unavailable> {
        within(Dependency::Postgres, self.db.timeout, async {
            let client = self.db.client().await?;
            client
                .execute(
                    "UPDATE idempotency_keys SET status = $3, body = $4, location = $5, \
                     running_until = NULL WHERE owner = $1 AND key = $2",
                    &[
                        &owner,
                        &key,
                        &(answer.status as i16),
                        &answer.body,
                        &answer.location,
                    ],
                )
                .await
                .map_err(failed)?;
            Ok(())
        })
        .await
    }

    /// Frees the key of a request that failed, so that a retry runs it again.
    pub async fn release(&self, owner: i64, key: &str) -> Result<(), Unavailable> {
        within(Dependency::Postgres, self.db.timeout, async {
            let client = self.db.client().await?;
            client
                .execute(
                    "DELETE FROM idempotency_keys \
                     WHERE owner = $1 AND key = $2 AND status IS NULL",
                    &[&owner, &key],
                )
                .await
                .map_err(failed)?;
            Ok(())
        })
        .await
    }

    /// Deletes the keys older than `tasks.idempotency_ttl`, oldest first, in batches of
    /// [`PURGE_BATCH`]; returns how many.
    pub async fn purge(&self) -> Result<u64, Unavailable> {
        let mut removed = 0;
        loop {
            let deleted = within(Dependency::Postgres, self.db.timeout, async {
                let client = self.db.client().await?;
                client
                    .execute(
                        "DELETE FROM idempotency_keys WHERE ctid IN (\
                             SELECT ctid FROM idempotency_keys \
                             WHERE created_at < now() - $1 * interval '1 millisecond' \
                             ORDER BY created_at LIMIT $2)",
                        &[&millis(self.ttl), &PURGE_BATCH],
                    )
                    .await
                    .map_err(failed)
            })
            .await?;
            removed += deleted;
            if deleted < PURGE_BATCH as u64 {
                return Ok(removed);
            }
        }
    }
}

/// A duration in milliseconds, as the statements above take it.
fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
