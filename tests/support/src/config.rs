//! The test's own configuration: where the shared PostgreSQL, RabbitMQ and Redis are,
//! names (database, queue, key prefix) no other test uses, and the edits that point a
//! config at a proxy or at the real servers.

use std::net::SocketAddr;
use std::time::Duration;

use sumsvc::Config;

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
    c.rabbitmq.url = format!("amqp://guest:guest@{addr}/%2f").into();
}

pub fn with_redis(c: &mut Config, addr: SocketAddr) {
    c.redis.url = format!("redis://{addr}/0").into();
}

/// The config with its PostgreSQL URL pointing at the real server (not a proxy).
pub fn direct_postgres(config: &Config) -> sumsvc::PostgresConfig {
    let db = database(&config.postgres.url);
    sumsvc::PostgresConfig {
        url: format!("postgres://postgres@{POSTGRES}/{db}"),
        ..config.postgres.clone()
    }
}

/// A connection to the test's database that goes around any proxy the test put in.
pub async fn direct_client(config: &Config) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&direct_postgres(config).url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test's database");
    tokio::spawn(connection);
    client
}

/// The database a PostgreSQL URL names (its last path segment, without `?sslmode=...`).
pub fn database(url: &str) -> &str {
    let path = url.rsplit('/').next().unwrap();
    path.split('?').next().unwrap()
}
