//! Task outcomes in Redis: one key per task, and a pub/sub channel per `serve`
//! instance that wakes its sync waiters.
//!
//! A task's key holds its outcome, for `tasks.result_ttl` after a worker stored it.
//! Before that, a task that has a session holds a *queued* mark in the same key, written
//! by `serve` before the session is handed out, and replaced by the outcome. So a session
//! whose key holds the mark is pending however long its task waits in the queue, and one
//! whose key is gone had its result expire: `410` means expired, never "not run yet".

use std::collections::HashMap;
use std::time::Duration;

use std::sync::Arc;

use deadpool_redis::redis;
use uuid::Uuid;

use super::durability::{self, Durability, Settings};
use super::redis_pool::{RedisConnection, RedisPool, Subscriber};
use crate::config::{RedisConfig, TlsConfig};
use crate::dependency::{within, Dependency, Unavailable};
use crate::task::Outcome;

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

    /// The key that holds an API key's request budget (see [`super::key_limits`]).
    pub fn budget(&self, api_key: i64) -> String {
        format!("{}:budget:{api_key}", self.prefix)
    }

    /// The sorted set of an API key's waiting sync requests.
    pub fn waiting(&self, api_key: i64) -> String {
        format!("{}:waiting:{api_key}", self.prefix)
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

/// The text of the queued mark. Not an outcome's JSON, which always has a `status` of
/// `done` or `failed`. A serve that waits for the task (a long poll, a stream) adds
/// itself to the mark: `{"status":"queued","watch":"<instance> <instance>"}`, and the
/// worker that stores the outcome announces it to each.
const QUEUED: &str = r#"{"status":"queued"}"#;

/// What every queued mark starts with.
const QUEUED_PREFIX: &str = r#"{"status":"queued""#;

/// A cancelled task's key: workers that take the task do not store its outcome.
const CANCELLED: &str = r#"{"status":"cancelled"}"#;

/// Stores an outcome, unless the task was cancelled, and announces it to the serve whose
/// sync request waits for it and to every serve watching its mark, all at once.
/// KEYS[1]: the result key. ARGV: the outcome, its TTL (s), the notice, the replies
/// channels' prefix, the sync request's instance or ''. Answers 1 when stored, 0 when
/// the task was cancelled.
const STORE: &str = r#"
local v = redis.call('GET', KEYS[1])
if v == '{"status":"cancelled"}' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[4] .. ARGV[5], ARGV[3]) end
if v and string.sub(v, 1, 18) == '{"status":"queued"' then
  local watch = string.match(v, '"watch":"([^"]*)"')
  if watch then
    for instance in string.gmatch(watch, '%S+') do
      redis.call('PUBLISH', ARGV[4] .. instance, ARGV[3])
    end
  end
end
return 1
"#;

/// Adds a serve to the watchers of a queued task. KEYS[1]: the result key. ARGV: the
/// instance. Answers what the key holds (nil when nothing).
const WATCH: &str = r#"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 18) == '{"status":"queued"' then
  local watch = string.match(v, '"watch":"([^"]*)"') or ''
  for instance in string.gmatch(watch, '%S+') do
    if instance == ARGV[1] then return v end
  end
  watch = (watch == '' and ARGV[1]) or (watch .. ' ' .. ARGV[1])
  v = '{"status":"queued","watch":"' .. watch .. '"}'
  redis.call('SET', KEYS[1], v, 'KEEPTTL')
end
return v
"#;

/// Cancels a task not computed yet: its key becomes the cancelled mark, and the serves
/// watching it hear so. KEYS[1]: the result key. ARGV: how long the mark lasts (s), the
/// notice, the replies channels' prefix, '1' when a key that holds nothing means the task
/// is still queued (its mark could not be written). Answers what the key holds now.
const CANCEL: &str = r#"
local v = redis.call('GET', KEYS[1])
local queued = (v and string.sub(v, 1, 18) == '{"status":"queued"') or (not v and ARGV[4] == '1')
if not queued then return v end
redis.call('SET', KEYS[1], '{"status":"cancelled"}', 'EX', ARGV[1])
if v then
  local watch = string.match(v, '"watch":"([^"]*)"')
  if watch then
    for instance in string.gmatch(watch, '%S+') do
      redis.call('PUBLISH', ARGV[3] .. instance, ARGV[2])
    end
  end
end
return '{"status":"cancelled"}'
"#;

/// How long a queued mark outlives `tasks.result_ttl` when its task never runs (its queue
/// was purged, say); a task that runs replaces it with its outcome long before.
const QUEUED_MARK_LIFE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Longest a worker waits for replicas to confirm its writes (`redis.min_replicas`):
/// below the half-second a connection made through the Sentinels or to a Cluster waits
/// for any answer, and far above what a replica on a working link takes.
const REPLICAS_WAIT: Duration = Duration::from_millis(400);

/// What a task's key holds.
#[derive(Debug)]
pub enum Stored {
    /// Nothing: the task has no session and no outcome yet, or its result expired.
    Missing,
    /// The queued mark: the task has a session and no outcome yet.
    Queued,
    /// Its outcome, or that it was cancelled.
    Final(Final),
}

/// How a task ended.
#[derive(Debug, Clone)]
pub enum Final {
    Finished(Outcome),
    Cancelled,
}

impl Stored {
    /// How the task ended, once it has.
    pub fn ended(self) -> Option<Final> {
        match self {
            Stored::Final(end) => Some(end),
            Stored::Missing | Stored::Queued => None,
        }
    }

    /// Reads a key's text; `key` names it in the log when the text is unreadable.
    fn read(key: &str, text: Option<String>) -> Self {
        match text {
            None => Stored::Missing,
            Some(text) if text.starts_with(QUEUED_PREFIX) => Stored::Queued,
            Some(text) if text == CANCELLED => Stored::Final(Final::Cancelled),
            // One bad key (say, written by another version) fails its own task, not
            // every read that happens to include it.
            Some(text) => {
                let outcome = Outcome::from_json(&text).unwrap_or_else(|e| {
                    tracing::warn!(%key, error = %e, "unreadable outcome in Redis");
                    Outcome::failed(format!("the stored result is unreadable: {e}"))
                });
                Stored::Final(Final::Finished(outcome))
            }
        }
    }
}

/// What storing an outcome did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Stored,
    /// The task was cancelled: its outcome is not stored.
    Cancelled,
}

/// The Lua scripts, by the hashes `EVALSHA` sends.
struct Scripts {
    store: redis::Script,
    watch: redis::Script,
    cancel: redis::Script,
}

/// The result store.
#[derive(Clone)]
pub struct Results {
    pool: RedisPool,
    scripts: Arc<Scripts>,
    /// How to open the one connection that cannot be pooled: the result subscription.
    subscriber: Arc<Subscriber>,
    names: RedisNames,
    ttl_secs: u64,
    queued_mark_secs: u64,
    /// `redis.min_replicas`: replicas that must hold stored outcomes.
    min_replicas: usize,
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
        Ok(Self {
            pool: RedisPool::new(config, tls)?,
            scripts: Arc::new(Scripts {
                store: redis::Script::new(STORE),
                watch: redis::Script::new(WATCH),
                cancel: redis::Script::new(CANCEL),
            }),
            subscriber: Arc::new(Subscriber::new(config, tls)?),
            names: RedisNames::new(&config.prefix),
            ttl_secs: result_ttl.as_secs().max(1),
            queued_mark_secs: (result_ttl + QUEUED_MARK_LIFE).as_secs(),
            min_replicas: config.min_replicas,
            timeout: config.timeout,
        })
    }

    pub fn names(&self) -> &RedisNames {
        &self.names
    }

    /// The pool, for the stores that share it.
    pub fn pool(&self) -> &RedisPool {
        &self.pool
    }

    /// `redis.timeout`, which bounds each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How to open a connection of its own: the result subscription's.
    pub fn subscriber(&self) -> &Subscriber {
        &self.subscriber
    }

    /// What a task's key holds now.
    pub async fn get(&self, task_id: Uuid) -> Result<Stored, Unavailable> {
        Ok(self
            .get_many(&[task_id])
            .await?
            .pop()
            .unwrap_or(Stored::Missing))
    }

    /// What the keys of many tasks hold, in one round trip, in the order asked.
    pub async fn get_many(&self, task_ids: &[Uuid]) -> Result<Vec<Stored>, Unavailable> {
        if task_ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = task_ids.iter().map(|id| self.names.result(*id)).collect();
        let texts: Vec<Option<String>> = within(Dependency::Redis, self.timeout, async {
            let mut conn = self.conn().await?;
            redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .map_err(failed)
        })
        .await?;
        Ok(keys
            .iter()
            .zip(texts)
            .map(|(key, text)| Stored::read(key, text))
            .collect())
    }

    /// Marks a task queued unless its key holds something already, then reads the key,
    /// in one round trip: the outcome when a worker stored it first, else `Queued`. A
    /// worker that stores the outcome later replaces the mark, so the two orders agree.
    pub async fn mark_queued(&self, task_id: Uuid) -> Result<Stored, Unavailable> {
        let key = self.names.result(task_id);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&key)
            .arg(QUEUED)
            .arg("NX")
            .arg("EX")
            .arg(self.queued_mark_secs)
            .ignore()
            .cmd("GET")
            .arg(&key);
        let (text,): (Option<String>,) = within(Dependency::Redis, self.timeout, async {
            let mut conn = self.conn().await?;
            pipe.query_async(&mut conn)
                .await
                .map_err(|e| refused_or_failed(&e))
        })
        .await?;
        Ok(Stored::read(&key, text))
    }

    /// Marks many tasks queued in one round trip, each unless its key holds something
    /// already. The outer error means Redis could not be reached; otherwise each item
    /// says whether Redis took its mark (a full Redis refuses them one by one).
    pub async fn mark_many(
        &self,
        task_ids: &[Uuid],
    ) -> Result<Vec<Result<(), Unavailable>>, Unavailable> {
        let replies = within(Dependency::Redis, self.timeout, async {
            let mut conn = self.conn().await?;
            conn.each_item(task_ids.len(), |pipe, i| {
                pipe.cmd("SET")
                    .arg(self.names.result(task_ids[i]))
                    .arg(QUEUED)
                    .arg("NX")
                    .arg("EX")
                    .arg(self.queued_mark_secs);
            })
            .await
        })
        .await?;
        // `SET NX` answers OK when it marked and nil when the key held something: both
        // are fine.
        Ok(replies
            .into_iter()
            .map(|reply| reply.map(drop).map_err(|e| refused_or_failed(&e)))
            .collect())
    }

    /// Stores outcomes, replacing a task's queued mark (a redelivered task writes the same
    /// outcome again), unless the task was cancelled, and announces each to the serves
    /// that wait for it, in one round trip ([`STORE`]). Each notice follows its write, so
    /// a waiter that hears it finds the key written.
    ///
    /// The outer error means Redis could not be reached; otherwise each item says
    /// whether Redis took it, since a full Redis (`OOM` under `noeviction`) refuses
    /// writes one by one.
    pub async fn put_many(
        &self,
        items: &[(Uuid, &Outcome, Option<&str>)],
    ) -> Result<Vec<Result<Put, String>>, Unavailable> {
        within(Dependency::Redis, self.timeout, async {
            let mut conn = self.conn().await?;
            let replies = conn
                .each_script_item(items.len(), &[STORE], |pipe, i| {
                    let (task_id, outcome, reply_to) = items[i];
                    pipe.cmd("EVALSHA")
                        .arg(self.scripts.store.get_hash())
                        .arg(1)
                        .arg(self.names.result(task_id))
                        .arg(outcome.to_json())
                        .arg(self.ttl_secs)
                        .arg(reply_notice(task_id))
                        .arg(self.names.replies(""))
                        .arg(reply_to.unwrap_or(""));
                })
                .await?;
            let read_only = replies.iter().any(|r| r.as_ref().is_err_and(is_read_only));
            if read_only {
                // A master turned replica: a new connection finds the master.
                conn.discard();
            } else if replies.iter().any(Result::is_ok) && self.min_replicas > 0 {
                let held = self.wait_for_replicas(&mut conn).await?;
                if held < self.min_replicas {
                    let cause = format!(
                        "{held} of the {} replicas redis.min_replicas asks for confirmed the \
                         results within {:?}",
                        self.min_replicas,
                        REPLICAS_WAIT.min(self.timeout / 2)
                    );
                    return Ok(replies.iter().map(|_| Err(cause.clone())).collect());
                }
            }
            Ok(replies
                .into_iter()
                .map(|reply| match reply {
                    Ok(redis::Value::Int(0)) => Ok(Put::Cancelled),
                    Ok(_) => Ok(Put::Stored),
                    Err(e) => Err(e.to_string()),
                })
                .collect())
        })
        .await
    }

    /// Adds this serve (`instance`) to the watchers of a queued task, so the worker that
    /// stores its outcome announces it here too; answers what its key holds. A task with
    /// no mark (or whose key is gone) cannot be watched: its key is read instead.
    pub async fn watch(&self, task_id: Uuid, instance: &str) -> Result<Stored, Unavailable> {
        let mut stored = self.watch_many(&[task_id], instance).await?;
        Ok(stored.pop().unwrap_or(Stored::Missing))
    }

    /// [`Self::watch`] for many tasks, in one round trip, in the order asked.
    pub async fn watch_many(
        &self,
        task_ids: &[Uuid],
        instance: &str,
    ) -> Result<Vec<Stored>, Unavailable> {
        self.run(&self.scripts.watch, WATCH, task_ids, &[instance])
            .await
    }

    /// Cancels a task whose outcome is not stored yet, telling the serves that watch it;
    /// answers what its key holds after (`Final::Cancelled` when it is cancelled now or
    /// was before, the outcome when it was computed first). `may_be_queued`: whether a
    /// key that holds nothing means the task is still queued (its mark could not be
    /// written) rather than that its result expired.
    pub async fn cancel(&self, task_id: Uuid, may_be_queued: bool) -> Result<Stored, Unavailable> {
        let ttl = self.ttl_secs.to_string();
        let notice = reply_notice(task_id);
        let channels = self.names.replies("");
        let queued = if may_be_queued { "1" } else { "0" };
        let args = [ttl.as_str(), &notice, &channels, queued];
        let mut stored = self
            .run(&self.scripts.cancel, CANCEL, &[task_id], &args)
            .await?;
        Ok(stored.pop().unwrap_or(Stored::Missing))
    }

    /// Runs a script on each task's key with `args`, in one round trip; answers what
    /// each key holds, as the script returns it.
    async fn run(
        &self,
        script: &redis::Script,
        code: &str,
        task_ids: &[Uuid],
        args: &[&str],
    ) -> Result<Vec<Stored>, Unavailable> {
        if task_ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = task_ids.iter().map(|id| self.names.result(*id)).collect();
        let replies = within(Dependency::Redis, self.timeout, async {
            let mut conn = self.conn().await?;
            conn.each_script_item(keys.len(), &[code], |pipe, i| {
                pipe.cmd("EVALSHA")
                    .arg(script.get_hash())
                    .arg(1)
                    .arg(&keys[i])
                    .arg(args);
            })
            .await
        })
        .await?;
        keys.iter()
            .zip(replies)
            .map(|(key, reply)| {
                let value = reply.map_err(|e| refused_or_failed(&e))?;
                let text = redis::from_redis_value::<Option<String>>(value)
                    .map_err(|e| Unavailable::new(Dependency::Redis, e))?;
                Ok(Stored::read(key, text))
            })
            .collect()
    }

    /// How many replicas hold every write made on `conn` so far (`WAIT`), waiting for
    /// `redis.min_replicas` of them for at most [`REPLICAS_WAIT`] (or half of
    /// `redis.timeout`, when that is shorter).
    async fn wait_for_replicas(&self, conn: &mut RedisConnection) -> Result<usize, Unavailable> {
        let wait = REPLICAS_WAIT.min(self.timeout / 2);
        redis::cmd("WAIT")
            .arg(self.min_replicas)
            .arg(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1))
            .query_async::<usize>(conn)
            .await
            .map_err(failed)
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
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(|e| refused_or_failed(&e))
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
                .query_async::<Vec<HashMap<String, String>>>(&mut conn)
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

    async fn conn(&self) -> Result<RedisConnection, Unavailable> {
        self.pool.get().await
    }
}

/// Whether Redis refused a write because the node is a replica now.
fn is_read_only(e: &redis::RedisError) -> bool {
    refusal(e).is_some_and(|(_, words)| words.starts_with("READONLY"))
}

/// A Redis error as the cause of a 503.
pub fn failed(e: redis::RedisError) -> Unavailable {
    Unavailable::from_chain(Dependency::Redis, &e)
}

/// A Redis error as the cause of a 503; when Redis answered that it refuses writes, the
/// cause says why and what to do.
fn refused_or_failed(e: &redis::RedisError) -> Unavailable {
    let Some((_, refusal)) = refusal(e) else {
        return failed(e.clone());
    };
    let fix = if refusal.starts_with("OOM") {
        "raise Redis's maxmemory, or lower tasks.result_ttl so results expire sooner"
    } else if refusal.starts_with("READONLY") {
        "point redis.url at the primary"
    } else if refusal.starts_with("MISCONF") {
        "Redis cannot save its snapshot: see the Redis log"
    } else if refusal.starts_with("NOREPLICAS") {
        "Redis has fewer replicas than its min-replicas-to-write"
    } else {
        return failed(e.clone());
    };
    Unavailable::new(
        Dependency::Redis,
        format!("Redis refuses writes, so results cannot be stored ({refusal}): {fix}"),
    )
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
