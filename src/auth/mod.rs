//! Who may use the API (`auth.mode`).
//!
//! In `open` mode, as in the original, anyone who reaches the API may use it; `serve`
//! warns at start when that is more than this host. In `keys` mode every operation but
//! the probes, `/metrics` and the docs needs an API key, sent as
//! `Authorization: Bearer <secret>`:
//!
//! - [`secret`]: how a key's secret is made, and why only its SHA-256 digest is stored.
//! - [`crate::store::api_keys`]: the keys in PostgreSQL, which `sumsvc keys create`, `list`
//!   and `revoke` manage.
//! - [`keyring`]: the keys a `serve` accepts, read again often enough that a revoked key
//!   stops working within `auth.revoke_within`.
//! - [`shared`]: what each key may use of the whole fleet: `auth.rate` requests a
//!   second (bursts of `auth.burst`) and `auth.max_sync_waiters` waiting sync
//!   requests, counted in Redis across every serve.
//! - [`usage`]: the same, counted by one serve for itself: what applies while Redis
//!   does not answer.
//!
//! A session belongs to the key that created it (to no key in open mode), and only its
//! owner can read it: anyone else gets the 404 of a session that does not exist. So a
//! key never reads a session made in open mode, and open mode never reads a key's.

mod keyring;
pub mod secret;
mod shared;
mod usage;

use std::sync::Arc;
use std::time::Duration;

use keyring::{AcceptedKey, Keyring};
pub use secret::Secret;
use shared::SharedLimits;
use usage::LocalSlot;
use uuid::Uuid;

use crate::config::{AuthConfig, AuthMode, Config};
use crate::dependency::Unavailable;
use crate::store::key_limits::{Check, KeyLimits, Verdict};
use crate::store::{ApiKeyStore, Results, Sessions};

/// How long a waiting sync request may count against its key at the latest, beyond
/// `tasks.sync_timeout`: the publish before its wait and the 2 s after it, with room. A
/// serve that dies with requests waiting leaves counts that end by then.
const WAIT_COUNT_SLACK: Duration = Duration::from_secs(10);

/// How this `serve` admits requests.
#[derive(Clone)]
pub enum Access {
    /// `auth.mode = open`: everyone is [`Caller::Anyone`].
    Open,
    /// `auth.mode = keys`.
    Keys {
        keyring: Keyring,
        limits: AuthConfig,
        shared: SharedLimits,
        /// How long a waiting sync request counts at the latest.
        wait_life: Duration,
    },
}

/// Who makes a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Anyone, in open mode.
    Anyone,
    /// The holder of an accepted key.
    Key {
        key: Arc<AcceptedKey>,
        max_sync_waiters: usize,
        shared: SharedLimits,
        wait_life: Duration,
        /// The key's request budget after this request.
        quota: Quota,
    },
}

/// A key's request budget as a client reads it, in the `RateLimit` fields: `rate`
/// requests a second in bursts of `burst`, `remaining` of them allowed at once now, the
/// whole burst back in `full_in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub rate: usize,
    pub burst: usize,
    pub remaining: u64,
    pub full_in: Duration,
}

/// One waiting sync request of a key, counted until it is dropped: by the fleet in
/// Redis, or by this serve while Redis did not answer.
#[derive(Debug)]
pub enum WaitSlot {
    Fleet { _count: FleetSlot },
    Here { _count: LocalSlot },
}

/// A waiting request counted in Redis; dropping it ends the count.
pub struct FleetSlot {
    shared: SharedLimits,
    key: i64,
    waiter: Uuid,
}

impl std::fmt::Debug for FleetSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FleetSlot({}, {})", self.key, self.waiter)
    }
}

impl Drop for FleetSlot {
    fn drop(&mut self) {
        self.shared.stop_waiting(self.key, self.waiter);
    }
}

/// Why a request was not admitted.
#[derive(Debug)]
pub enum Refused {
    /// The request carries no bearer token.
    NoKey,
    /// Its token is no accepted key: unknown, revoked, or not a key at all.
    UnknownKey,
    /// The keys cannot be checked.
    Unavailable(Unavailable),
    /// The key spent its `auth.rate` budget; there is one request again after `retry_after`.
    TooFast {
        key: String,
        retry_after: Duration,
        quota: Quota,
    },
    /// The key has `max` sync requests waiting already.
    TooManyWaiting { key: String, max: usize },
}

impl Access {
    /// The access `config.auth` asks for; in keys mode, reads the keys first, and counts
    /// each key's use in the Redis of `results`.
    pub async fn start(
        config: &Config,
        sessions: &Sessions,
        results: &Results,
    ) -> anyhow::Result<Self> {
        match config.auth.mode {
            AuthMode::Open => {
                let listen = config.http.listen;
                if !listen.ip().is_loopback() {
                    tracing::warn!(
                        %listen,
                        "auth.mode is open and http.listen is not a loopback address: anyone \
                         who can reach it can use the API. Set auth.mode = keys \
                         (SUMSVC_AUTH=keys) and create keys with `sumsvc keys create NAME`"
                    );
                }
                Ok(Self::Open)
            }
            AuthMode::Keys => Ok(Self::Keys {
                keyring: Keyring::start(ApiKeyStore::sharing(sessions), &config.auth).await?,
                limits: config.auth.clone(),
                shared: SharedLimits::start(KeyLimits::sharing(results), config.redis.timeout),
                wait_life: config.tasks.sync_timeout + WAIT_COUNT_SLACK,
            }),
        }
    }

    /// Admits a request that carries the bearer `token` (None without one), spending
    /// one request of its key's budget: the fleet's, or this serve's while Redis does not
    /// answer.
    pub async fn admit(&self, token: Option<&str>) -> Result<Caller, Refused> {
        let Self::Keys {
            keyring,
            limits,
            shared,
            wait_life,
        } = self
        else {
            return Ok(Caller::Anyone);
        };
        let token = token.ok_or(Refused::NoKey)?;
        let key = keyring
            .find(&secret::digest(token))
            .map_err(Refused::Unavailable)?
            .ok_or(Refused::UnknownKey)?;
        let spend = Check::Spend {
            key: key.id,
            rate: limits.rate,
            burst: limits.burst,
            cost: 1,
            needed: 1,
        };
        let budget = match shared.check(spend).await {
            Some(Verdict::Spent(budget)) => budget,
            _ => key.usage.spend(limits.rate, limits.burst, 1, 1),
        };
        let quota = Quota {
            rate: limits.rate,
            burst: limits.burst,
            remaining: budget.remaining,
            full_in: budget.full_in,
        };
        if !budget.allowed {
            return Err(Refused::TooFast {
                key: key.name.clone(),
                retry_after: budget.retry_after,
                quota,
            });
        }
        Ok(Caller::Key {
            key,
            max_sync_waiters: limits.max_sync_waiters,
            shared: shared.clone(),
            wait_life: *wait_life,
            quota,
        })
    }
}

impl Caller {
    /// The caller's request budget after this request; None for anyone.
    pub fn quota(&self) -> Option<Quota> {
        match self {
            Self::Anyone => None,
            Self::Key { quota, .. } => Some(*quota),
        }
    }

    /// The id of the caller's key, which owns the sessions it creates; None for anyone.
    pub fn owner(&self) -> Option<i64> {
        match self {
            Self::Anyone => None,
            Self::Key { key, .. } => Some(key.id),
        }
    }

    /// Spends `extra` more requests of the caller's budget, for a request that counts as
    /// more than one (a bulk request counts its tasks); answers the budget after it. One
    /// that counts for more than the burst goes when the rest of the burst is there (its
    /// admission took one), and leaves the key in debt. Anyone spends nothing.
    pub async fn spend_more(&self, extra: usize) -> Result<Option<Quota>, Refused> {
        let Self::Key {
            key,
            shared,
            quota: Quota { rate, burst, .. },
            ..
        } = self
        else {
            return Ok(None);
        };
        if extra == 0 {
            return Ok(self.quota());
        }
        let needed = extra.min(burst.saturating_sub(1).max(1));
        let spend = Check::Spend {
            key: key.id,
            rate: *rate,
            burst: *burst,
            cost: extra,
            needed,
        };
        let budget = match shared.check(spend).await {
            Some(Verdict::Spent(budget)) => budget,
            _ => key.usage.spend(*rate, *burst, extra, needed),
        };
        let quota = Quota {
            rate: *rate,
            burst: *burst,
            remaining: budget.remaining,
            full_in: budget.full_in,
        };
        if !budget.allowed {
            return Err(Refused::TooFast {
                key: key.name.clone(),
                retry_after: budget.retry_after,
                quota,
            });
        }
        Ok(Some(quota))
    }

    /// Counts one more waiting sync request of the caller's key, until the slot is
    /// dropped; refused when `auth.max_sync_waiters` wait already, across the fleet (or
    /// on this serve while Redis does not answer). No slot for anyone.
    pub async fn start_waiting(&self) -> Result<Option<WaitSlot>, Refused> {
        let Self::Key {
            key,
            max_sync_waiters,
            shared,
            wait_life,
            ..
        } = self
        else {
            return Ok(None);
        };
        let too_many = || Refused::TooManyWaiting {
            key: key.name.clone(),
            max: *max_sync_waiters,
        };
        let waiter = Uuid::new_v4();
        let start = Check::StartWaiting {
            key: key.id,
            waiter,
            max: *max_sync_waiters,
            life: *wait_life,
        };
        match shared.check(start).await {
            Some(Verdict::Waiting(true)) => Ok(Some(WaitSlot::Fleet {
                _count: FleetSlot {
                    shared: shared.clone(),
                    key: key.id,
                    waiter,
                },
            })),
            Some(_) => Err(too_many()),
            None => match key.usage.start_waiting(*max_sync_waiters) {
                Some(slot) => Ok(Some(WaitSlot::Here { _count: slot })),
                None => Err(too_many()),
            },
        }
    }
}

/// The longest name a key may have.
const MAX_NAME_LEN: usize = 64;

/// Checks a new key's name: 1 to 64 ASCII letters, digits, `.`, `_` or `-`, so that it
/// reads the same in a shell, a log line and a problem detail.
fn check_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(allowed) {
        return Err(format!(
            "{name:?} is not a key name: use 1 to {MAX_NAME_LEN} letters, digits, '.', '_' \
             or '-', e.g. billing-prod"
        ));
    }
    Ok(())
}

/// Creates a key named `name` and returns its secret, which exists nowhere else.
pub async fn create_key(store: &ApiKeyStore, name: &str) -> anyhow::Result<Secret> {
    check_name(name).map_err(anyhow::Error::msg)?;
    let secret = Secret::generate();
    store.create(name, &secret.digest()).await?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_short_and_plain() {
        for ok in ["ci", "billing-prod", "team_a.v2", &"k".repeat(64)] {
            check_name(ok).unwrap();
        }
        for bad in [
            "",
            "two words",
            "tab\t",
            "ünï",
            "a/b",
            "$(x)",
            &"k".repeat(65),
        ] {
            let err = check_name(bad).unwrap_err();
            assert!(err.contains("is not a key name"), "{bad:?}: {err}");
        }
    }

    #[tokio::test]
    async fn open_mode_admits_anyone_whatever_they_send() {
        for token in [None, Some("anything")] {
            let caller = Access::Open.admit(token).await.unwrap();
            assert_eq!(caller.owner(), None);
            assert!(caller.start_waiting().await.unwrap().is_none());
        }
    }
}
