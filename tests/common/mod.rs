//! The test harness: each test gets its own database, queue names and Redis key prefix,
//! runs the real roles against the real PostgreSQL, RabbitMQ and Redis, and can route
//! any dependency through a [`Proxy`] to cut it.

#![allow(dead_code)]

pub mod cli;
pub mod keys;
pub mod metrics;
pub mod otlp;
pub mod procstat;
pub mod proxy;
pub mod rabbitmqctl;
pub mod redis_server;
pub mod sessions;
pub mod started;
pub mod tls_proxy;
pub mod webdriver;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sumsvc::config::Config;
use sumsvc::worker::WorkerPool;
use tokio_util::sync::CancellationToken;

pub use proxy::Proxy;

pub const POSTGRES: &str = "127.0.0.1:5432";
pub const RABBITMQ: &str = "127.0.0.1:5672";
pub const REDIS: &str = "127.0.0.1:6379";

/// A config with names of its own: database, queue and prefix are unique to the test.
pub fn unique_config() -> Config {
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let mut c = Config::default();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.http.drain_timeout = Duration::from_secs(10);
    c.postgres.url = format!("postgres://postgres@{POSTGRES}/sumsvc_test_{id}");
    c.postgres.pool_size = 8;
    c.rabbitmq.queue = format!("sumsvc-test.{id}");
    c.redis.prefix = format!("sumsvc-test-{id}");
    c.worker.concurrency = 2;
    c.worker.drain_timeout = Duration::from_secs(5);
    // Many workers run side by side: each takes a free port for its metrics.
    c.worker.metrics_listen = "127.0.0.1:0".parse().unwrap();
    c
}

/// Gives `http.listen` a free loopback port, for a `serve` run as a child process.
pub trait ListenOnFreePort {
    fn listen_on_free_port(&mut self);
}

impl ListenOnFreePort for Config {
    fn listen_on_free_port(&mut self) {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        self.http.listen = probe.local_addr().unwrap();
    }
}

/// Points the config's URLs for the named dependencies at proxies.
pub fn with_postgres(c: &mut Config, addr: SocketAddr) {
    let db = database(&c.postgres.url).to_owned();
    c.postgres.url = format!("postgres://postgres@{addr}/{db}");
}

pub fn with_rabbitmq(c: &mut Config, addr: SocketAddr) {
    c.rabbitmq.url = format!("amqp://guest:guest@{addr}/%2f");
}

pub fn with_redis(c: &mut Config, addr: SocketAddr) {
    c.redis.url = format!("redis://{addr}/0");
}

pub async fn proxy_to(upstream: &str) -> Proxy {
    Proxy::start(upstream.parse().unwrap()).await
}

/// A running `serve` (in this process) on an ephemeral port.
pub struct App {
    pub config: Config,
    pub base: String,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
    pub server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// A `serve` run as a child process instead, when the test wants one.
    pub child: Option<Child>,
}

impl App {
    /// Migrates the test's database, then starts `serve` with `config`.
    pub async fn start(config: Config) -> App {
        sumsvc::migrate::run(&direct_postgres(&config), &config.tls)
            .await
            .expect("migrate");
        Self::start_without_migrate(config).await
    }

    pub async fn start_without_migrate(config: Config) -> App {
        let listener = sumsvc::serve::bind(&config).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = {
            let (config, shutdown) = (config.clone(), shutdown.clone());
            tokio::spawn(async move { sumsvc::serve::run(&config, listener, shutdown).await })
        };
        Self::attach(config, addr, Some(server), None, shutdown).await
    }

    /// Migrates, then runs `sumsvc serve` as a child process on a free port.
    pub async fn spawn(mut config: Config) -> App {
        sumsvc::migrate::run(&direct_postgres(&config), &config.tls)
            .await
            .expect("migrate");
        config.listen_on_free_port();
        let child = spawn_binary(&config, &["serve"]);
        Self::attach_to(config, child).await
    }

    /// Takes over `sumsvc serve` started as `child` with `config`, once it answers.
    pub async fn attach_to(config: Config, child: Child) -> App {
        let addr = config.http.listen;
        Self::attach(config, addr, None, Some(child), CancellationToken::new()).await
    }

    async fn attach(
        config: Config,
        addr: SocketAddr,
        server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
        child: Option<Child>,
        shutdown: CancellationToken,
    ) -> App {
        let app = App {
            config,
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(2000)
                .build()
                .unwrap(),
            shutdown,
            server,
            child,
        };
        app.wait_for(|r| r.status != 0, "the API to answer").await;
        app
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Reply {
        Reply::read(self.http.get(self.url(path)).send().await).await
    }

    /// POSTs a JSON text body.
    pub async fn post(&self, path: &str, body: &str) -> Reply {
        self.post_with(path, body, &[]).await
    }

    pub async fn post_with(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Reply::read(req.send().await).await
    }

    /// Polls `/readyz` until `check` holds, for at most 20 s.
    pub async fn wait_for(&self, check: impl Fn(&Reply) -> bool, what: &str) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let reply = self.get("/readyz").await;
            if check(&reply) {
                return reply;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {reply:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_for_workers(&self, n: u64) {
        self.wait_for(|r| r.body["workers"] == n, &format!("{n} workers"))
            .await;
    }

    /// Polls a session until it is no longer pending, for at most 20 s.
    pub async fn poll(&self, session_id: i64) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self
                .get(&format!("/async/get_task_result?session_id={session_id}"))
                .await;
            if r.status != 200 || r.body["status"] != "pending" {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "session {session_id} still pending"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// One read of a session, without waiting.
    pub async fn poll_once(&self, session_id: i64) -> Reply {
        self.get(&format!("/async/get_task_result?session_id={session_id}"))
            .await
    }

    /// The outcome JSON stored in Redis for a session's task, read past the API.
    pub async fn stored_outcome(&self, session_id: i64) -> String {
        let sessions =
            sumsvc::store::Sessions::new(&direct_postgres(&self.config), &self.config.tls).unwrap();
        let session = sessions.find(session_id).await.unwrap().unwrap();
        let key = sumsvc::store::Keys::new(&self.config.redis.prefix).result(session.task_id);
        redis_get(&key).await.expect("an outcome is stored")
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = &self.server {
            server.abort();
        }
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        cleanup(&self.config);
    }
}

/// Removes what a test created: its database, its queues and its Redis keys.
pub fn cleanup(config: &Config) {
    let config = config.clone();
    let cleaner = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // Give the publisher thread time to see its handle dropped, so it does not
            // declare the queues again.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let db = database(&config.postgres.url).to_owned();
            let admin = format!("postgres://postgres@{POSTGRES}/postgres");
            if let Ok((client, conn)) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
            {
                tokio::spawn(conn);
                let _ = client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
                    .await;
            }
            let client = deadpool_redis::redis::Client::open(format!("redis://{REDIS}/0")).unwrap();
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let keys: Vec<String> = deadpool_redis::redis::cmd("KEYS")
                    .arg(format!("{}:*", config.redis.prefix))
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<(), _> = deadpool_redis::redis::cmd("DEL")
                        .arg(keys)
                        .query_async(&mut conn)
                        .await;
                }
            }
        });
        if let Ok(mut conn) =
            amiquip::Connection::insecure_open(&format!("amqp://guest:guest@{RABBITMQ}/%2f"))
        {
            if let Ok(channel) = conn.open_channel(None) {
                for q in [
                    config.rabbitmq.queue.clone(),
                    format!("{}.dead", config.rabbitmq.queue),
                ] {
                    let _ = channel.queue_delete(q, Default::default());
                }
            }
            let _ = conn.close();
        }
    });
    let _ = cleaner.join();
}

/// The config with its PostgreSQL URL pointing at the real server (not a proxy).
pub fn direct_postgres(config: &Config) -> sumsvc::config::PostgresConfig {
    let db = database(&config.postgres.url);
    sumsvc::config::PostgresConfig {
        url: format!("postgres://postgres@{POSTGRES}/{db}"),
        ..config.postgres.clone()
    }
}

/// The database a PostgreSQL URL names (its last path segment, without `?sslmode=...`).
pub fn database(url: &str) -> &str {
    let path = url.rsplit('/').next().unwrap();
    path.split('?').next().unwrap()
}

/// An HTTP answer: status (0 if the request failed), headers, body as JSON (or Null).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub async fn read(r: reqwest::Result<reqwest::Response>) -> Self {
        match r {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                let text = resp.text().await.unwrap_or_default();
                let body = serde_json::from_str(&text).unwrap_or(Value::Null);
                Reply {
                    status,
                    headers,
                    body,
                    text,
                }
            }
            Err(e) => Reply {
                status: 0,
                headers: Default::default(),
                body: Value::Null,
                // With its sources: "error sending request" alone says nothing.
                text: format!("{e:?}"),
            },
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem-details error with this status whose detail mentions `needle`.
    pub fn assert_problem(&self, status: u16, needle: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        assert_eq!(self.body["status"], status, "{self:?}");
        for field in ["type", "title", "detail"] {
            assert!(self.body[field].is_string(), "no {field}: {self:?}");
        }
        let detail = self.body["detail"].as_str().unwrap();
        assert!(
            detail.contains(needle),
            "detail {detail:?} should mention {needle:?}"
        );
    }
}

/// A worker pool in this process; stops (draining) when `stop` is called.
pub struct Workers {
    pub pool: Option<WorkerPool>,
    pub shutdown: CancellationToken,
}

impl Workers {
    pub fn start(config: &Config) -> Workers {
        let shutdown = CancellationToken::new();
        let pool = WorkerPool::start(config, shutdown.clone()).unwrap();
        Workers {
            pool: Some(pool),
            shutdown,
        }
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(pool) = self.pool.take() {
            let _ = pool.wait().await;
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// `sumsvc <args>` as a child process configured through `SUMSVC_` variables.
pub fn spawn_binary(config: &Config, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sumsvc"))
        .args(args)
        .envs(env_of(config))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn sumsvc")
}

/// The `SUMSVC_` environment that reproduces `config`, with no config file read.
pub fn env_of(c: &Config) -> Vec<(String, String)> {
    let mut env = vec![("SUMSVC_CONFIG".to_owned(), "/dev/null".to_owned())];
    env.extend(c.to_env());
    env
}

/// Sends a signal to a child process (`STOP`, `CONT`, `TERM`, `KILL`).
pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([format!("-{sig}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} failed");
}

/// Reads a key straight from Redis (not through sumsvc).
pub async fn redis_get(key: &str) -> Option<String> {
    let client = deadpool_redis::redis::Client::open(format!("redis://{REDIS}/0")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    deadpool_redis::redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Message count of a queue, straight from RabbitMQ.
pub fn queue_depth(queue: &str) -> u32 {
    amqp(|channel| {
        channel
            .queue_declare_passive(queue)
            .unwrap()
            .declared_message_count()
            .unwrap()
    })
}

/// Runs `f` on a fresh AMQP channel to the real broker, on a blocking thread.
pub fn amqp<T>(f: impl FnOnce(&amiquip::Channel) -> T) -> T {
    tokio::task::block_in_place(|| {
        let mut conn =
            amiquip::Connection::insecure_open(&format!("amqp://guest:guest@{RABBITMQ}/%2f"))
                .unwrap();
        let channel = conn.open_channel(None).unwrap();
        let out = f(&channel);
        let _ = conn.close();
        out
    })
}

/// Publishes a raw body to a queue, as a broken or foreign producer would.
pub fn publish_raw(queue: &str, body: &[u8]) {
    amqp(|channel| {
        amiquip::Exchange::direct(channel)
            .publish(amiquip::Publish::new(body, queue))
            .unwrap()
    })
}

/// Asserts that `f` finishes within `limit`, returning its value.
pub async fn within<T>(limit: Duration, what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {limit:?}"))
}

/// A consumer that takes tasks and never finishes them, like a hung worker. Dropping it
/// closes its connection, and the broker returns what it held to the queue.
pub struct StuckWorker {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub received: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl StuckWorker {
    pub fn start(config: &Config) -> StuckWorker {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = received.clone();
        let topology = sumsvc::broker::Topology::new(&config.rabbitmq);
        let thread = std::thread::spawn(move || {
            let mut conn =
                amiquip::Connection::insecure_open(&format!("amqp://guest:guest@{RABBITMQ}/%2f"))
                    .unwrap();
            let channel = conn.open_channel(None).unwrap();
            let queue = topology.declare(&channel).unwrap();
            let consumer = queue.consume(amiquip::ConsumerOptions::default()).unwrap();
            loop {
                if stopped.try_recv().is_ok() {
                    break;
                }
                if let Ok(amiquip::ConsumerMessage::Delivery(_)) =
                    consumer.receiver().recv_timeout(Duration::from_millis(20))
                {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
            drop(consumer);
            let _ = conn.close();
        });
        StuckWorker {
            stop: Some(stop),
            thread: Some(thread),
            received,
        }
    }

    pub fn received(&self) -> usize {
        self.received.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Closes the connection; everything it held goes back to the queue.
    pub fn release(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            tokio::task::block_in_place(|| t.join().unwrap());
        }
    }
}

impl Drop for StuckWorker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A `serve` run as a child process, reached over HTTP.
pub struct Remote {
    pub base: String,
    pub client: reqwest::Client,
}

impl Remote {
    pub fn at(config: &Config) -> Remote {
        Remote {
            base: format!("http://{}", config.http.listen),
            client: reqwest::Client::new(),
        }
    }

    /// Polls `/readyz` until it says ready with at least `workers` consumers, for at
    /// most 30 s (the process may still be starting).
    pub async fn wait_until_ready(&self, workers: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = match self
                .client
                .get(format!("{}/readyz", self.base))
                .send()
                .await
            {
                Ok(r) => r.json::<Value>().await.unwrap_or_default(),
                Err(_) => Value::Null,
            };
            if ready["status"] == "ready" && ready["workers"].as_u64() >= Some(workers) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never ready with {workers} workers: {ready}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST /sync/sum` with `body`; the response text.
    pub async fn sync_sum(&self, body: &str) -> String {
        self.client
            .post(format!("{}/sync/sum", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Runs a benchmark's body on a multi-threaded runtime (benches have no test macro).
pub fn bench_main<F: std::future::Future<Output = ()>>(body: F) {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(body)
}

/// A whole-number setting of a benchmark from its environment variable.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A child process killed when this guard is dropped, even by a panic.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` until it holds, for at most `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
