//! A private `redis-server` for one test, so a test can run Redis with settings of its
//! own (and change them with `CONFIG SET`) without touching the shared server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deadpool_redis::redis;

/// A `redis-server` child process on a free loopback port, killed when dropped. Its
/// working directory (where an append-only file or a snapshot goes) is a temporary one
/// of its own, removed with it.
pub struct RedisServer {
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
    /// The `default` user's password, when the server requires one.
    password: Option<String>,
}

impl RedisServer {
    /// Starts `redis-server` with `args` (e.g. `["--maxmemory-policy", "allkeys-lru"]`)
    /// and waits until it answers PING.
    pub async fn start(args: &[&str]) -> RedisServer {
        Self::start_with(None, args).await
    }

    /// Starts one that requires `password` (`--requirepass`); [`RedisServer::url`]
    /// carries it.
    pub async fn start_with_password(password: &str, args: &[&str]) -> RedisServer {
        Self::start_with(Some(password), args).await
    }

    async fn start_with(password: Option<&str>, args: &[&str]) -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("sumsvc-redis-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--dir")
            .arg(&dir)
            .args(password.map(|p| ["--requirepass", p]).into_iter().flatten())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server is needed for these tests: install redis-server");
        let mut server = RedisServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            dir,
            password: password.map(str::to_owned),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if server.command(&["PING"]).await.is_ok() {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("redis-server {args:?} exited with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server {args:?} never answered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `redis.url` for this server, with its password if it has one.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@{}/0", self.addr),
            None => format!("redis://{}/0", self.addr),
        }
    }

    /// Runs one command on this server, e.g. `["CONFIG", "SET", "maxmemory", "1"]`.
    pub async fn command(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd(args[0])
            .arg(&args[1..])
            .query_async(&mut conn)
            .await
    }

    /// `CONFIG SET name value` on this server (never on the shared one).
    pub async fn config_set(&self, name: &str, value: &str) {
        self.command(&["CONFIG", "SET", name, value])
            .await
            .unwrap_or_else(|e| panic!("CONFIG SET {name} {value}: {e}"));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
