//! The keys one `serve` accepts, held in memory so that checking a request costs a
//! hash and a map lookup rather than a query, and so that requests with made-up keys
//! never reach PostgreSQL.
//!
//! Revocation has a bound: the keys are read again every quarter of
//! `auth.revoke_within`, and keys that could not be read again for `auth.revoke_within`
//! are not trusted any more: requests get 503 naming PostgreSQL until it answers. A
//! revoked key therefore stops working within `auth.revoke_within` of the revocation,
//! through a PostgreSQL outage too; normally within a quarter of it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::secret::Digest;
use super::usage::Usage;
use crate::config::{format_duration, AuthConfig};
use crate::dependency::{Dependency, OutageLog, Unavailable};
use crate::store::api_keys::ActiveKey;
use crate::store::ApiKeyStore;

/// How many times within `auth.revoke_within` the keys are read: a read may fail or
/// take its whole `postgres.timeout` a few times before the keys stop being trusted.
const READS_PER_BOUND: u32 = 4;

/// A key this serve accepts, with what it uses of this serve.
#[derive(Debug)]
pub struct AcceptedKey {
    pub id: i64,
    pub name: String,
    pub usage: Arc<Usage>,
}

/// The accepted keys, kept fresh by a task of their own that stops with the last handle.
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
    _reader: Arc<DropGuard>,
}

struct Inner {
    store: ApiKeyStore,
    /// `auth.revoke_within`: how long keys are trusted after they were read.
    trust_for: Duration,
    /// `auth.burst`: a new key's budget.
    burst: usize,
    read: RwLock<Read>,
}

/// The keys as last read.
struct Read {
    by_digest: HashMap<Digest, Arc<AcceptedKey>>,
    /// When the query that read them started: they reflect the database at least as of
    /// then.
    at: Instant,
    /// Why reading them again failed since, if it did.
    failure: Option<String>,
}

impl Keyring {
    /// Reads the keys, then keeps reading them in the background.
    pub async fn start(store: ApiKeyStore, config: &AuthConfig) -> anyhow::Result<Self> {
        let at = Instant::now();
        let keys = store
            .active()
            .await
            .context("auth.mode is keys, and the API keys cannot be read")?;
        if keys.is_empty() {
            tracing::warn!(
                "auth.mode is keys and no API key exists: every request but the probes, \
                 /metrics and the docs will get 401 until one is created with \
                 `sumsvc keys create NAME`"
            );
        } else {
            tracing::info!(keys = keys.len(), "API keys read");
        }
        let inner = Arc::new(Inner {
            store,
            trust_for: config.revoke_within,
            burst: config.burst,
            read: RwLock::new(Read {
                by_digest: HashMap::new(),
                at,
                failure: None,
            }),
        });
        inner.replace(keys, at, false);
        let stop = CancellationToken::new();
        let every = config.revoke_within / READS_PER_BOUND;
        tokio::spawn(inner.clone().read_every(every, stop.clone()));
        Ok(Self {
            inner,
            _reader: Arc::new(stop.drop_guard()),
        })
    }

    /// The key whose secret has this digest, if it is accepted; an error when the keys
    /// could not be read for `auth.revoke_within`.
    pub fn find(&self, digest: &Digest) -> Result<Option<Arc<AcceptedKey>>, Unavailable> {
        let read = self.inner.read.read().expect("lock");
        let age = read.at.elapsed();
        if age >= self.inner.trust_for {
            return Err(Unavailable::new(
                Dependency::Postgres,
                format!(
                    "the API keys could not be read for {}s, and are not trusted for longer \
                     than auth.revoke_within ({}): {}",
                    age.as_secs(),
                    format_duration(self.inner.trust_for),
                    read.failure.as_deref().unwrap_or("no answer yet"),
                ),
            ));
        }
        Ok(read.by_digest.get(digest).cloned())
    }
}

impl Inner {
    async fn read_every(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        let mut outages = OutageLog::new("API keys");
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let at = Instant::now();
            match self.store.active().await {
                Ok(keys) => {
                    outages.recovered(Dependency::Postgres);
                    self.replace(keys, at, true);
                }
                Err(e) => {
                    outages.failed(Dependency::Postgres, &e.cause);
                    self.read.write().expect("lock").failure = Some(e.cause);
                }
            }
        }
    }

    /// Takes `keys`, read by a query that started `at`, logging which keys came and went
    /// when `log_changes`. A key read before keeps its usage, so reading again resets no
    /// budget.
    fn replace(&self, keys: Vec<ActiveKey>, at: Instant, log_changes: bool) {
        let mut read = self.read.write().expect("lock");
        let mut by_digest = HashMap::with_capacity(keys.len());
        for ActiveKey { id, name, digest } in keys {
            let key = match read.by_digest.remove(&digest) {
                Some(known) if known.id == id => known,
                _ => {
                    if log_changes {
                        tracing::info!(key = %name, "API key accepted");
                    }
                    Arc::new(AcceptedKey {
                        id,
                        name,
                        usage: Arc::new(Usage::new(self.burst)),
                    })
                }
            };
            by_digest.insert(digest, key);
        }
        for gone in read.by_digest.values() {
            tracing::info!(key = %gone.name, "API key revoked; no longer accepted");
        }
        *read = Read {
            by_digest,
            at,
            failure: None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PostgresConfig;

    fn active(id: i64, name: &str, byte: u8) -> ActiveKey {
        ActiveKey {
            id,
            name: name.into(),
            digest: [byte; 32],
        }
    }

    #[test]
    fn reading_the_keys_again_keeps_each_keys_usage_and_drops_revoked_ones() {
        // No connection is made: the pool opens one on first use only.
        let store = ApiKeyStore::new(&PostgresConfig::default(), &Default::default()).unwrap();
        let inner = Inner {
            store,
            trust_for: Duration::from_secs(5),
            burst: 1,
            read: RwLock::new(Read {
                by_digest: HashMap::new(),
                at: Instant::now(),
                failure: None,
            }),
        };
        inner.replace(
            vec![active(1, "a", 1), active(2, "b", 2)],
            Instant::now(),
            false,
        );
        let before = inner.read.read().unwrap().by_digest.clone();
        // Key a spends its budget; b is revoked; c is new.
        assert!(before[&[1; 32]].usage.spend(1, 1, 1, 1).allowed);
        inner.replace(
            vec![active(1, "a", 1), active(3, "c", 3)],
            Instant::now(),
            true,
        );

        let after = &inner.read.read().unwrap().by_digest;
        assert!(Arc::ptr_eq(&before[&[1; 32]], &after[&[1; 32]]));
        assert!(
            !after[&[1; 32]].usage.spend(1, 1, 1, 1).allowed,
            "budget kept"
        );
        assert!(!after.contains_key(&[2; 32]));
        assert_eq!(after[&[3; 32]].name, "c");
    }
}
