//! Per-key limits counted in Redis, so that they hold across every serve of a fleet
//! rather than per serve: a key's request budget (`auth.rate`, `auth.burst`) and its
//! waiting sync requests (`auth.max_sync_waiters`).
//!
//! Each check is a Lua script that Redis runs whole, on its own clock (`TIME`), so that
//! serves on hosts whose clocks differ agree:
//! - the budget is GCRA, the generic cell rate algorithm: a key's theoretical arrival
//!   time moves one emission interval (1/rate) per request, and a request is refused
//!   when it would move it more than `burst` intervals ahead of now. One key per API key,
//!   which expires once the budget is full again. A refused request moves nothing.
//! - waiting requests are members of a sorted set per API key, scored by when each
//!   would end at the latest: a serve that dies with requests waiting leaves members
//!   that expire by themselves, rather than a count that never comes down.
//!
//! Checks of many requests go in one pipeline ([`KeyLimits::run`]).

use std::time::Duration;

use deadpool_redis::redis;
use uuid::Uuid;

use super::redis_pool::RedisPool;
use super::results::{failed, RedisNames, Results};
use crate::dependency::{within, Dependency, Unavailable};

/// GCRA: KEYS[1] holds the theoretical arrival time in microseconds; ARGV[1] is the
/// emission interval in microseconds, ARGV[2] the burst, ARGV[3] how many requests this
/// one counts as (a bulk request counts its tasks), ARGV[4] how many must be left for it
/// to go (at most the burst, so that a batch larger than it can go, leaving the key in
/// debt). Answers {allowed (1 or 0),
/// microseconds until it would be allowed, requests left now, microseconds until the
/// whole burst is back}.
const SPEND: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3]) or 1
-- What must be left for it to go: its cost, or less for one that counts for more than
-- the burst, which goes when (nearly) the whole burst is there and leaves the key in
-- debt until its cost is refilled.
local needed = tonumber(ARGV[4]) or cost
local tolerance = interval * (burst - needed)
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local wait = tat - now - tolerance
if wait > 0 then return {0, wait, 0, tat - now} end
local new = tat + interval * cost
redis.call('SET', KEYS[1], string.format('%d', new), 'PX', math.ceil((new - now) / 1000) + 1)
return {1, 0, math.max(0, math.floor((burst * interval - (new - now)) / interval)), new - now}
";

/// Waiting requests: KEYS[1] is the sorted set; ARGV[1] the most that may wait, ARGV[2]
/// how long this one may at the latest (ms), ARGV[3] its id. Answers 1 when it may
/// wait, 0 when the most wait already.
const START_WAITING: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local life = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + life, ARGV[3])
redis.call('PEXPIRE', KEYS[1], life)
return 1
";

/// One check against a key's limits.
#[derive(Debug, Clone)]
pub enum Check {
    /// Spend `cost` requests of key `key`'s budget of `rate` a second, in bursts of
    /// `burst`, if `needed` are left.
    Spend {
        key: i64,
        rate: usize,
        burst: usize,
        cost: usize,
        needed: usize,
    },
    /// Count request `waiter` of key `key` as waiting, for at most `life`, unless `max`
    /// wait already.
    StartWaiting {
        key: i64,
        waiter: Uuid,
        max: usize,
        life: Duration,
    },
    /// Request `waiter` of key `key` waits no more.
    StopWaiting { key: i64, waiter: Uuid },
}

/// What a check answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A spend: whether the request was allowed, and the budget after it.
    Spent(Budget),
    /// A waiting request: counted (true), or refused because the most wait already.
    Waiting(bool),
    /// A waiting request's count ended.
    Stopped,
}

/// A key's request budget after a spend: what clients read in the `RateLimit` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Whether the request was allowed.
    pub allowed: bool,
    /// Until a request would be allowed, when this one was not.
    pub retry_after: Duration,
    /// Requests allowed at once now.
    pub remaining: u64,
    /// Until the whole burst is back.
    pub full_in: Duration,
}

/// The limits in the results' Redis.
#[derive(Clone)]
pub struct KeyLimits {
    pool: RedisPool,
    names: RedisNames,
    timeout: Duration,
    spend: redis::Script,
    start_waiting: redis::Script,
}

impl KeyLimits {
    /// The limits on the connections of `results`.
    pub fn sharing(results: &Results) -> Self {
        Self {
            pool: results.pool().clone(),
            names: results.names().clone(),
            timeout: results.timeout(),
            spend: redis::Script::new(SPEND),
            start_waiting: redis::Script::new(START_WAITING),
        }
    }

    /// Runs `checks` in one round trip (scripts Redis does not know yet are loaded, and
    /// their checks run again); each answer is its check's.
    pub async fn run(
        &self,
        checks: &[Check],
    ) -> Result<Vec<Result<Verdict, Unavailable>>, Unavailable> {
        within(Dependency::Redis, self.timeout, async {
            let mut conn = self.pool.get().await?;
            let replies = conn
                .each_script_item(checks.len(), &[SPEND, START_WAITING], |pipe, i| {
                    self.add(pipe, &checks[i])
                })
                .await?;
            Ok(replies
                .into_iter()
                .zip(checks)
                .map(|(reply, check)| verdict(check, reply.map_err(failed)?))
                .collect())
        })
        .await
    }

    fn add(&self, pipe: &mut redis::Pipeline, check: &Check) {
        match check {
            Check::Spend {
                key,
                rate,
                burst,
                cost,
                needed,
            } => {
                let interval = 1_000_000 / (*rate).max(1) as u64;
                pipe.cmd("EVALSHA")
                    .arg(self.spend.get_hash())
                    .arg(1)
                    .arg(self.names.budget(*key))
                    .arg(interval.max(1))
                    .arg(*burst)
                    .arg(*cost)
                    .arg(*needed);
            }
            Check::StartWaiting {
                key,
                waiter,
                max,
                life,
            } => {
                pipe.cmd("EVALSHA")
                    .arg(self.start_waiting.get_hash())
                    .arg(1)
                    .arg(self.names.waiting(*key))
                    .arg(*max)
                    .arg(u64::try_from(life.as_millis()).unwrap_or(u64::MAX))
                    .arg(waiter.to_string());
            }
            Check::StopWaiting { key, waiter } => {
                pipe.cmd("ZREM")
                    .arg(self.names.waiting(*key))
                    .arg(waiter.to_string());
            }
        }
    }
}

/// What Redis's `reply` to `check` means.
fn verdict(check: &Check, reply: redis::Value) -> Result<Verdict, Unavailable> {
    let unreadable = || {
        Unavailable::new(
            Dependency::Redis,
            format!("unreadable answer to a limit check: {reply:?}"),
        )
    };
    Ok(match check {
        Check::Spend { .. } => {
            let (allowed, wait, remaining, full_in): (i64, i64, i64, i64) =
                redis::from_redis_value(reply.clone()).map_err(|_| unreadable())?;
            let micros = |us: i64| Duration::from_micros(us.max(0) as u64);
            Verdict::Spent(Budget {
                allowed: allowed == 1,
                retry_after: micros(wait),
                remaining: remaining.max(0) as u64,
                full_in: micros(full_in),
            })
        }
        Check::StartWaiting { .. } => match redis::from_redis_value::<i64>(reply.clone()) {
            Ok(counted) => Verdict::Waiting(counted == 1),
            Err(_) => return Err(unreadable()),
        },
        Check::StopWaiting { .. } => Verdict::Stopped,
    })
}
