//! Configuration: one struct, layered from built-in defaults, a TOML file, `SUMSVC_`
//! environment variables and command-line flags (later layers win), validated once at
//! start so a bad value stops the process with an error that names its key.
//!
//! The file layer lives here; the environment and flag layers are the [`crate::cli`]
//! overrides, which clap reads from both sources with flags first.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The whole configuration of every role.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub postgres: PostgresConfig,
    pub rabbitmq: RabbitConfig,
    pub redis: RedisConfig,
    pub tasks: TasksConfig,
    pub limits: LimitsConfig,
    pub worker: WorkerConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the API listens on.
    pub listen: SocketAddr,
    /// How long `serve` waits for in-flight requests after a shutdown signal.
    #[serde(with = "duration")]
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    pub url: String,
    /// Connections per process.
    pub pool_size: usize,
    /// Bound on connecting and on each statement; past it the request answers 503.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RabbitConfig {
    pub url: String,
    /// Durable task queue; its dead-letter queue is `<queue>.dead`.
    pub queue: String,
    /// Declare quorum queues (for a clustered RabbitMQ) instead of classic ones.
    pub quorum: bool,
    /// Bound on connecting and on waiting for a publisher confirm.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// AMQP heartbeat: how fast a silent broker is noticed.
    #[serde(with = "duration")]
    pub heartbeat: Duration,
    /// Publishes that may wait for the publisher thread before requests get 503.
    pub publish_backlog: usize,
    /// Bytes of task messages that may wait for the publisher thread, likewise.
    pub publish_backlog_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    /// Every key and channel starts with `<prefix>:`.
    pub prefix: String,
    pub pool_size: usize,
    /// Bound on connecting and on each command.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TasksConfig {
    /// Longest a synchronous request waits before it answers 202 with a session.
    #[serde(with = "duration")]
    pub sync_timeout: Duration,
    /// How long a result stays readable.
    #[serde(with = "duration")]
    pub result_ttl: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_items: usize,
    pub max_body_bytes: usize,
    pub max_result_digits: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Consumer threads (one AMQP channel each); 0 means one per CPU core.
    pub concurrency: usize,
    /// Unacknowledged messages each consumer may hold.
    pub prefetch: u16,
    /// How long a stopping worker keeps retrying to store the results it holds.
    #[serde(with = "duration")]
    pub drain_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8000".parse().expect("valid literal"),
            drain_timeout: Duration::from_secs(35),
        }
    }
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/sumsvc".into(),
            pool_size: 16,
            timeout: Duration::from_millis(1500),
        }
    }
}

impl Default for RabbitConfig {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            queue: "sumsvc.tasks".into(),
            quorum: false,
            timeout: Duration::from_millis(1500),
            heartbeat: Duration::from_secs(10),
            publish_backlog: 65536,
            publish_backlog_bytes: 256 * 1024 * 1024,
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/0".into(),
            prefix: "sumsvc".into(),
            pool_size: 16,
            timeout: Duration::from_millis(1500),
        }
    }
}

impl Default for TasksConfig {
    fn default() -> Self {
        Self {
            sync_timeout: Duration::from_secs(30),
            result_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_items: 1_000_000,
            max_body_bytes: 33_554_432,
            max_result_digits: 4300,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 0,
            prefetch: 64,
            drain_timeout: Duration::from_secs(20),
        }
    }
}

impl Config {
    /// Reads the file layer: `path` if given, else `config/sumsvc.toml` when it exists,
    /// else the built-in defaults.
    pub fn from_file(path: Option<&Path>) -> anyhow::Result<Self> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from("config/sumsvc.toml"), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_toml(&text)
                .with_context(|| format!("invalid config file {}", path.display())),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read config file {}", path.display())),
        }
    }

    /// Parses TOML text; keys left out keep their defaults, unknown keys are refused.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// The effective configuration as TOML, as `sumsvc config` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serializes")
    }

    /// Worker threads to run: `worker.concurrency`, or the number of CPU cores for 0.
    pub fn worker_threads(&self) -> usize {
        match self.worker.concurrency {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }

    /// Checks the values no type can check; the error names the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        fn url_scheme(key: &str, url: &str, schemes: &[&str]) -> anyhow::Result<()> {
            match url.split_once("://") {
                Some((scheme, _)) if schemes.contains(&scheme) => Ok(()),
                _ => bail!(
                    "{key}: {url:?} is not a URL with scheme {}",
                    schemes.join(" or ")
                ),
            }
        }
        url_scheme(
            "postgres.url",
            &self.postgres.url,
            &["postgres", "postgresql"],
        )?;
        url_scheme("rabbitmq.url", &self.rabbitmq.url, &["amqp"])?;
        url_scheme("redis.url", &self.redis.url, &["redis"])?;
        let positive: [(&str, bool); 12] = [
            ("postgres.pool_size", self.postgres.pool_size > 0),
            ("postgres.timeout", !self.postgres.timeout.is_zero()),
            ("rabbitmq.timeout", !self.rabbitmq.timeout.is_zero()),
            (
                "rabbitmq.publish_backlog",
                self.rabbitmq.publish_backlog > 0,
            ),
            ("redis.pool_size", self.redis.pool_size > 0),
            ("redis.timeout", !self.redis.timeout.is_zero()),
            ("tasks.sync_timeout", !self.tasks.sync_timeout.is_zero()),
            ("tasks.result_ttl", self.tasks.result_ttl.as_secs() > 0),
            ("limits.max_body_bytes", self.limits.max_body_bytes > 0),
            (
                "limits.max_result_digits",
                self.limits.max_result_digits > 0,
            ),
            ("worker.prefetch", self.worker.prefetch > 0),
            ("rabbitmq.heartbeat", self.rabbitmq.heartbeat.as_secs() > 0),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, ok)| !ok) {
            bail!("{key} must be greater than zero (tasks.result_ttl and rabbitmq.heartbeat: at least 1s)");
        }
        if self.rabbitmq.publish_backlog_bytes <= self.limits.max_body_bytes {
            bail!(
                "rabbitmq.publish_backlog_bytes must be larger than limits.max_body_bytes ({}), \
                 or the largest request could never be published",
                self.limits.max_body_bytes
            );
        }
        let cap = crate::sum::MAX_RESULT_DIGITS_CAP;
        if self.limits.max_result_digits > cap {
            bail!("limits.max_result_digits must be at most {cap}");
        }
        if self.rabbitmq.heartbeat.as_secs() > u16::MAX as u64 {
            bail!("rabbitmq.heartbeat must be at most {}s", u16::MAX);
        }
        if self.rabbitmq.queue.is_empty() || self.rabbitmq.queue.starts_with("amq.") {
            bail!("rabbitmq.queue must be a non-empty name that does not start with \"amq.\"");
        }
        if self.redis.prefix.is_empty() || self.redis.prefix.contains(char::is_whitespace) {
            bail!("redis.prefix must be non-empty and contain no white space");
        }
        Ok(())
    }
}

/// Parses a duration written like `250ms`, `30s`, `24h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e}: write a duration like 250ms, 30s or 24h"))
}

/// Writes a duration the way people write it in the file: `1500ms`, `30s`, `5m`, `24h`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if ms % 1000 != 0 {
        format!("{ms}ms")
    } else if s >= 3600 && s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s >= 60 && s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Durations in the file are text like `30s`, as people write them.
mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn the_shipped_file_matches_the_built_in_defaults() {
        let text = include_str!("../config/sumsvc.toml");
        let from_file = Config::from_toml(text).unwrap();
        assert_eq!(from_file.to_toml(), Config::default().to_toml());
    }

    #[test]
    fn a_bad_duration_names_its_key() {
        let err = Config::from_toml("[tasks]\nsync_timeout = \"soon\"\n").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("sync_timeout"), "{text}");
        assert!(text.contains("30s"), "{text}");
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let err = Config::from_toml("[redis]\nprefx = \"x\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("prefx"));
    }

    #[test]
    fn validation_names_the_key() {
        let mut config = Config::default();
        config.redis.url = "http://nope".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.starts_with("redis.url"), "{err}");
    }
}
