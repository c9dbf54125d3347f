//! Task outcomes in Redis: one key per task, written once with a TTL, and a pub/sub
//! channel per `serve` instance that wakes its sync waiters.

use std::collections::HashMap;
use std::time::Duration;

use deadpool_redis::{redis, Pool};
use uuid::Uuid;

use super::durability::{self, Durability, Settings};
use super::pool;
use crate::config::{RedisConfig, TlsConfig};
use crate::dependency::{within, Dependency, Unavailable};
use crate::task::Outcome;
use crate::tls::Trust;

/// The names of sumsvc's Redis keys and channels; every one starts with `<prefix>:`.
#[derive(Debug, Clone)]
pub struct RedisNames {
    prefix: String,
}

impl RedisNames {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The key that holds a task's outcome.
    pub fn result(&self, task_id: Uuid) -> String {
        format!("{}:result:{}", self.prefix, task_id)
    }

    /// The channel on which a `serve` instance hears about finished tasks.
    pub fn replies(&self, instance: &str) -> String {
        format!("{}:replies:{}", self.prefix, instance)
    }

    /// The short-lived key `/readyz` writes to learn whether Redis takes writes.
    pub fn readiness(&self) -> String {
        format!("{}:readyz", self.prefix)
    }
}

/// A finished task as announced on a replies channel: its id only. The waiter reads the
/// outcome from the task's key: a notice stays a few bytes whatever the result's size,
/// and pub/sub never carries result text to a subscriber.
pub fn reply_notice(task_id: Uuid) -> String {
    task_id.to_string()
}

/// The task id of a replies-channel notice. Takes the first word, so notices of earlier
/// workers (`<task id> <outcome JSON>`) still wake their waiters during an upgrade.
pub fn parse_notice(payload: &str) -> Option<Uuid> {
    payload.split(' ').next()?.parse().ok()
}

/// The result store.
#[derive(Clone)]
pub struct Results {
    pool: Pool,
    /// What the pool connects with, for the one connection that cannot be pooled: the
    /// result subscription.
    client: redis::Client,
    names: RedisNames,
    ttl_secs: u64,
    timeout: Duration,
}

impl Results {
    /// Builds the pool; no connection is opened until the first call. `redis.timeout`
    /// bounds connecting and each command (the client's own defaults are 1 s and 500 ms).
    /// A `rediss://` URL connects with TLS, trusting `tls`.
    pub fn new(
        config: &RedisConfig,
        tls: &TlsConfig,
        result_ttl: Duration,
    ) -> anyhow::Result<Self> {
        let client = Trust::load(tls)?.redis(&config.url)?;
        let connection = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout));
        let manager = deadpool_redis::Manager::new_with_config(
            client.get_connection_info().clone(),
            connection,
        )
        .map_err(|e| anyhow::anyhow!("redis.url: {e}"))?;
        let pool = pool::bounded(Pool::builder(manager), config.pool_size, config.timeout)?;
        Ok(Self {
            pool,
            client,
            names: RedisNames::new(&config.prefix),
            ttl_secs: result_ttl.as_secs().max(1),
            timeout: config.timeout,
        })
    }

    pub fn names(&self) -> &RedisNames {
        &self.names
    }

    /// A client for a connection of its own, set up as the pool's are.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// A task's outcome, if a worker stored one and it has not expired.
    pub async fn get(&self, task_id: Uuid) -> Result<Option<Outcome>, Unavailable> {
        Ok(self.get_many(&[task_id]).await?.pop().flatten())
    }

    /// The outcomes of many tasks in one round trip, in the order asked.
    pub async fn get_many(&self, task_ids: &[Uuid]) -> Result<Vec<Option<Outcome>>, Unavailable> {
        let keys: Vec<String> = task_ids.iter().map(|id| self.names.result(*id)).collect();
        let texts: Vec<Option<String>> = within(Dependency::Redis, self.timeout, async {
            let mut conn = self.conn().await?;
            redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut *conn)
                .await
                .map_err(failed)
        })
        .await?;
        Ok(keys
            .iter()
            .zip(texts)
            .map(|(key, text)| {
                text.map(|text| {
                    // One bad key (say, written by another version) fails its own task,
                    // not every read that happens to include it.
                    Outcome::from_json(&text).unwrap_or_else(|e| {
                        tracing::warn!(%key, error = %e, "unreadable outcome in Redis");
                        Outcome::failed(format!("the stored result is unreadable: {e}"))
                    })
                })
            })
            .collect())
    }

    /// Stores outcomes unless one is there already (a redelivered task changes
    /// nothing), and announces each to its waiting instance, if any, in one round trip.
    /// Each notice follows its `SET` on the same connection, so a waiter that hears it
    /// finds the key written.
    ///
    /// The outer error means Redis could not be reached; otherwise each item says
    /// whether Redis took it, since a full Redis (`OOM` under `noeviction`) refuses
    /// writes one by one. A notice may go out for a write Redis refused: the waiter
    /// finds no key and keeps waiting, and the retry that stores it announces it again.
    pub async fn put_many(
        &self,
        items: &[(Uuid, &Outcome, Option<&str>)],
    ) -> Result<Vec<Result<(), String>>, Unavailable> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for (task_id, outcome, reply_to) in items {
            pipe.cmd("SET")
                .arg(self.names.result(*task_id))
                .arg(outcome.to_json())
                .arg("NX")
                .arg("EX")
                .arg(self.ttl_secs);
            if let Some(instance) = reply_to {
                pipe.cmd("PUBLISH")
                    .arg(self.names.replies(instance))
                    .arg(reply_notice(*task_id))
                    .ignore();
            }
        }
        let replies: Vec<redis::RedisResult<redis::Value>> =
            within(Dependency::Redis, self.timeout, async {
                let mut conn = self.conn().await?;
                pipe.query_async(&mut *conn).await.map_err(failed)
            })
            .await?;
        // `SET NX` answers OK when it stored and nil when the key was there already:
        // both mean the outcome is in Redis.
        Ok(replies
            .into_iter()
            .map(|reply| reply.map(drop).map_err(|e| e.to_string()))
            .collect())
    }

    /// PING, and a write that expires in 10 s, in one round trip: Redis answers and takes
    /// writes. A Redis that refuses them (out of memory under `noeviction`, a read-only
    /// replica) leaves workers unable to store results, so it counts as down.
    pub async fn ping_and_write(&self, instance: &str) -> Result<(), Unavailable> {
        let mut pipe = redis::pipe();
        pipe.cmd("PING")
            .ignore()
            .cmd("SET")
            .arg(self.names.readiness())
            .arg(instance)
            .arg("PX")
            .arg(10_000)
            .ignore();
        within(Dependency::Redis, self.timeout, async {
            let mut conn = self.conn().await?;
            pipe.query_async::<()>(&mut *conn).await.map_err(|e| {
                // Only the SET's (the second command's) error says writes are refused.
                let Some((1, refusal)) = refusal(&e) else {
                    return failed(e);
                };
                let fix = if refusal.starts_with("OOM") {
                    "raise Redis's maxmemory, or lower tasks.result_ttl so results expire sooner"
                } else if refusal.starts_with("READONLY") {
                    "point redis.url at the primary"
                } else {
                    "see the Redis log"
                };
                Unavailable::new(
                    Dependency::Redis,
                    format!("Redis refuses writes, so results cannot be stored ({refusal}): {fix}"),
                )
            })
        })
        .await
    }

    /// The settings that decide whether Redis keeps results (see [`durability`]). A refused
    /// `CONFIG GET` is an answer: the settings are unknown, and the reason says why.
    pub async fn durability(&self) -> Result<Durability, Unavailable> {
        let mut pipe = redis::pipe();
        // One setting per command: CONFIG GET takes several only since Redis 7.
        for name in durability::SETTINGS {
            pipe.cmd("CONFIG").arg("GET").arg(name);
        }
        let answer = within(Dependency::Redis, self.timeout, async {
            let mut conn = self.conn().await?;
            Ok(pipe
                .query_async::<Vec<HashMap<String, String>>>(&mut *conn)
                .await)
        })
        .await?;
        match answer {
            Ok(replies) => Ok(Durability::Reported(Settings::from_pairs(
                replies.into_iter().flatten(),
            ))),
            Err(e) => match refusal(&e) {
                Some((_, why)) => Ok(Durability::Unknown(why)),
                None => Err(failed(e)),
            },
        }
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, Unavailable> {
        self.pool
            .get()
            .await
            .map_err(|e| Unavailable::from_chain(Dependency::Redis, &e))
    }
}

/// A Redis error as the cause of a 503.
pub fn failed(e: redis::RedisError) -> Unavailable {
    Unavailable::from_chain(Dependency::Redis, &e)
}

/// When the server answered with an error, as opposed to a connection that failed: the
/// position of the first failed command in its pipeline and the server's own words
/// (`OOM command not allowed ...`).
fn refusal(e: &redis::RedisError) -> Option<(usize, String)> {
    let errors = e.clone().into_server_errors()?;
    let (index, first) = errors.first()?;
    let words = match first.details() {
        Some(details) => format!("{} {details}", first.code()),
        None => first.code().to_owned(),
    };
    Some((*index, words))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_is_the_task_id_alone() {
        let id = Uuid::new_v4();
        assert_eq!(reply_notice(id), id.to_string());
        assert_eq!(parse_notice(&reply_notice(id)), Some(id));
    }

    #[test]
    fn notices_of_earlier_workers_still_name_their_task() {
        let id = Uuid::new_v4();
        let earlier = format!("{id} {{\"status\":\"done\",\"result\":\"3\"}}");
        assert_eq!(parse_notice(&earlier), Some(id));
        assert_eq!(parse_notice("not-a-task"), None);
    }
}
