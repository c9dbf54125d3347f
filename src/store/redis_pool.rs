//! Redis in each of the deployments `redis.mode` names: one server (`single`), a master
//! and its replicas watched by Sentinels (`sentinel`), or a Redis Cluster (`cluster`).
//! The result store holds a pool of connections in any of them, and opens the one
//! connection a pool cannot hold, the result subscription, through [`Subscriber`].
//!
//! What follows a failover, and how:
//! - sentinel: a new connection asks the Sentinels where the master is. A connection to
//!   a master that stopped fails and is dropped; one to a node that answers `READONLY`
//!   (a master turned replica) is dropped too ([`RedisConnection::discard`]).
//! - cluster: redis-rs's cluster connection follows `MOVED` and refreshes the slot map
//!   itself; a pipeline goes to one node, so it may only hold keys of one slot (the
//!   store sends multi-key work as a pipeline per key, concurrently, in that mode).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deadpool_redis::redis::aio::ConnectionLike;
use deadpool_redis::redis::sentinel::{SentinelClient, SentinelServerType};
use deadpool_redis::redis::{
    self, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, Value,
};
use deadpool_redis::{cluster, sentinel};
use tokio::sync::Mutex;

use super::pool;
use crate::config::{RedisConfig, RedisMode, TlsConfig};
use crate::dependency::{Dependency, Unavailable};
use crate::tls::Trust;

/// A pool of connections to the Redis that `redis.mode` and `redis.url` describe.
#[derive(Clone)]
pub enum RedisPool {
    Single(deadpool_redis::Pool),
    Sentinel(sentinel::Pool),
    Cluster(cluster::Pool),
}

/// A connection from a [`RedisPool`].
pub enum RedisConnection {
    Single(deadpool_redis::Connection),
    Sentinel(sentinel::Connection),
    Cluster(cluster::Connection),
}

impl RedisPool {
    /// Builds the pool; no connection is opened until the first call. Every wait on it
    /// is bounded by `redis.timeout`.
    pub fn new(config: &RedisConfig, tls: &TlsConfig) -> anyhow::Result<Self> {
        let urls = config.url.urls();
        Ok(match config.mode {
            RedisMode::Single => {
                let client = Trust::load(tls)?.redis(&urls[0])?;
                let connection = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(config.timeout))
                    .set_response_timeout(Some(config.timeout));
                let manager = deadpool_redis::Manager::new_with_config(
                    client.get_connection_info().clone(),
                    connection,
                )
                .map_err(|e| anyhow::anyhow!("redis.url: {e}"))?;
                Self::Single(pool::bounded(
                    deadpool_redis::Pool::builder(manager),
                    config.pool_size,
                    config.timeout,
                )?)
            }
            RedisMode::Sentinel => {
                let (sentinels, node) = sentinel_settings(urls)?;
                let manager = sentinel::Manager::new(
                    sentinels,
                    config.sentinel_master.clone(),
                    Some(node),
                    sentinel::SentinelServerType::Master,
                )
                .map_err(|e| anyhow::anyhow!("redis.url: {e}"))?;
                Self::Sentinel(pool::bounded(
                    sentinel::Pool::builder(manager),
                    config.pool_size,
                    config.timeout,
                )?)
            }
            RedisMode::Cluster => {
                let manager = cluster::Manager::new(urls.to_vec(), false)
                    .map_err(|e| anyhow::anyhow!("redis.url: {e}"))?;
                Self::Cluster(pool::bounded(
                    cluster::Pool::builder(manager),
                    config.pool_size,
                    config.timeout,
                )?)
            }
        })
    }

    /// A connection, from the pool or made now.
    pub async fn get(&self) -> Result<RedisConnection, Unavailable> {
        fn unavailable(e: impl std::error::Error + 'static) -> Unavailable {
            Unavailable::from_chain(Dependency::Redis, &e)
        }
        Ok(match self {
            Self::Single(pool) => RedisConnection::Single(pool.get().await.map_err(unavailable)?),
            Self::Sentinel(pool) => {
                RedisConnection::Sentinel(pool.get().await.map_err(unavailable)?)
            }
            Self::Cluster(pool) => RedisConnection::Cluster(pool.get().await.map_err(unavailable)?),
        })
    }
}

impl RedisConnection {
    /// Drops the connection rather than return it to the pool: it is on a node that no
    /// longer takes writes (a master turned replica), and a new one finds the master.
    pub fn discard(self) {
        match self {
            Self::Single(conn) => drop(deadpool_redis::Connection::take(conn)),
            Self::Sentinel(conn) => drop(sentinel::Connection::take(conn)),
            Self::Cluster(conn) => drop(cluster::Connection::take(conn)),
        }
    }

    /// Sends `count` items, each the commands `add` puts in a pipeline for it (exactly one
    /// of which answers; the others `.ignore()`), and returns each item's answer: in one
    /// round trip, or in a Cluster, where a pipeline goes to one node and so may hold
    /// keys of one slot only, as a pipeline per item, all at once. The outer error means
    /// Redis could not be reached.
    pub async fn each_item(
        &mut self,
        count: usize,
        add: impl Fn(&mut Pipeline, usize),
    ) -> Result<Vec<RedisResult<Value>>, Unavailable> {
        let Self::Cluster(conn) = self else {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for i in 0..count {
                add(&mut pipe, i);
            }
            return pipe
                .query_async::<Vec<RedisResult<Value>>>(self)
                .await
                .map_err(|e| Unavailable::from_chain(Dependency::Redis, &e));
        };
        let runs = (0..count).map(|i| {
            let mut pipe = redis::pipe();
            add(&mut pipe, i);
            let mut conn: redis::cluster_async::ClusterConnection = (**conn).clone();
            async move {
                let mut replies = pipe.query_async::<Vec<Value>>(&mut conn).await?;
                Ok(replies.pop().unwrap_or(Value::Nil))
            }
        });
        Ok(futures_util::future::join_all(runs).await)
    }
}

impl RedisConnection {
    /// [`Self::each_item`] for items that run Lua scripts by their hash (`EVALSHA`): when
    /// Redis does not know one (it was restarted, or failed over), `codes` are loaded
    /// and the items sent again.
    pub async fn each_script_item(
        &mut self,
        count: usize,
        codes: &[&str],
        add: impl Fn(&mut Pipeline, usize),
    ) -> Result<Vec<RedisResult<Value>>, Unavailable> {
        let replies = self.each_item(count, |pipe, i| add(pipe, i)).await?;
        let unknown =
            |r: &RedisResult<Value>| r.as_ref().is_err_and(|e| e.code() == Some("NOSCRIPT"));
        if !replies.iter().any(unknown) {
            return Ok(replies);
        }
        for code in codes {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(*code)
                .query_async::<String>(self)
                .await
                .map_err(|e| Unavailable::from_chain(Dependency::Redis, &e))?;
        }
        self.each_item(count, add).await
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Sentinel(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Self::Sentinel(conn) => conn.req_packed_commands(cmd, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Sentinel(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// The Sentinels' addresses, and how to connect to the nodes they name: the password,
/// user, database and TLS of the URLs (the Sentinels themselves are asked without).
fn sentinel_settings(
    urls: &[String],
) -> anyhow::Result<(
    Vec<redis::ConnectionInfo>,
    sentinel::SentinelNodeConnectionInfo,
)> {
    let infos = urls
        .iter()
        .map(|url| {
            url.as_str()
                .into_connection_info()
                .map_err(|e| anyhow::anyhow!("redis.url: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let first = &infos[0];
    let tls_mode = match first.addr() {
        ConnectionAddr::TcpTls {
            insecure: false, ..
        } => Some(sentinel::TlsMode::Secure),
        ConnectionAddr::TcpTls { insecure: true, .. } => Some(sentinel::TlsMode::Insecure),
        _ => None,
    };
    let node = sentinel::SentinelNodeConnectionInfo {
        tls_mode,
        redis_connection_info: Some(first.redis_settings().clone().into()),
    };
    let sentinels = infos
        .into_iter()
        .map(|info| info.set_redis_settings(Default::default()))
        .collect();
    Ok((sentinels, node))
}

/// How the result subscription connects: to the one server, to the master the
/// Sentinels name now, or to a node of the Cluster (each in turn), whose pub/sub
/// carries every node's messages.
pub enum Subscriber {
    Single(redis::Client),
    Sentinel(Mutex<SentinelClient>),
    Cluster {
        nodes: Vec<redis::Client>,
        next: AtomicUsize,
    },
}

impl Subscriber {
    pub fn new(config: &RedisConfig, tls: &TlsConfig) -> anyhow::Result<Self> {
        let urls = config.url.urls();
        Ok(match config.mode {
            RedisMode::Single => Self::Single(Trust::load(tls)?.redis(&urls[0])?),
            RedisMode::Sentinel => {
                let (sentinels, node) = sentinel_settings(urls)?;
                let client = SentinelClient::build(
                    sentinels,
                    config.sentinel_master.clone(),
                    Some(node.into()),
                    SentinelServerType::Master,
                )
                .map_err(|e| anyhow::anyhow!("redis.url: {e}"))?;
                Self::Sentinel(Mutex::new(client))
            }
            RedisMode::Cluster => Self::Cluster {
                nodes: urls
                    .iter()
                    .map(|url| Trust::load(tls)?.redis(url))
                    .collect::<anyhow::Result<_>>()?,
                next: AtomicUsize::new(0),
            },
        })
    }

    /// A client for the subscription's next connection, within `timeout`.
    pub async fn client(&self, timeout: Duration) -> Result<redis::Client, Unavailable> {
        let failed = |e: redis::RedisError| Unavailable::from_chain(Dependency::Redis, &e);
        match self {
            Self::Single(client) => Ok(client.clone()),
            Self::Sentinel(sentinel) => {
                let asked = async { sentinel.lock().await.async_get_client().await };
                tokio::time::timeout(timeout, asked)
                    .await
                    .map_err(|_| Unavailable::timed_out(Dependency::Redis, timeout))?
                    .map_err(failed)
            }
            Self::Cluster { nodes, next } => {
                Ok(nodes[next.fetch_add(1, Ordering::Relaxed) % nodes.len()].clone())
            }
        }
    }
}
