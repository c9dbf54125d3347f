//! Configuration: one struct, layered from built-in defaults, a TOML file, `SUMSVC_`
//! environment variables and command-line flags (later layers win), validated once at
//! start so a bad value stops the process with an error that names its key.
//!
//! Every key is declared once, in the table below: its name, type, default, environment
//! variable and a line of help. The default is written as the file writes it and read by
//! the file's code. From that one declaration come the structs and their defaults, the
//! file reader, the flags and variables of [`crate::cli`] (a key's flag is its
//! variable's name after `SUMSVC_`, in lower case with dashes), what `sumsvc config`
//! prints and [`Config::to_env`]. `config/sumsvc.toml` lists every key too, with its
//! variable; tests keep it in step with the table.
//!
//! Keys marked `secret` are URLs that may carry a password: wherever a value is shown
//! (`sumsvc config`, `Debug`, `--help`, errors) the password is replaced by `***`.

mod value;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use value::{choice_value, hide_passwords, parse_toml, toml_to_text, Value};
pub use value::{format_duration, without_password};
pub use value::{LogFormat, UrlList};

/// Declares the configuration: each section a struct, each key a field with
/// `#[env(VARIABLE)]` (or `#[env(VARIABLE, secret)]`) and its default.
macro_rules! keys {
    ($(
        $(#[doc = $section_doc:literal])*
        $section:ident: $Section:ident {$(
            $(#[doc = $doc:literal])*
            #[env($env:ident $(, $secret:ident)?)]
            $field:ident: $ty:ty = $default:literal,
        )*}
    )*) => {
        /// The whole configuration of every role.
        #[derive(Debug, Clone, Default)]
        pub struct Config {$(
            $(#[doc = $section_doc])*
            pub $section: $Section,
        )*}

        $(
            $(#[doc = $section_doc])*
            #[derive(Clone)]
            pub struct $Section {$(
                $(#[doc = $doc])*
                pub $field: $ty,
            )*}

            impl Default for $Section {
                fn default() -> Self {
                    Self {$(
                        $field: default_of(
                            concat!(stringify!($section), ".", stringify!($field)),
                            stringify!($default),
                        ),
                    )*}
                }
            }

            impl fmt::Debug for $Section {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.debug_struct(stringify!($Section))
                        $(.field(stringify!($field), &Shown(&self.$field, secret!($($secret)?))))*
                        .finish()
                }
            }
        )*

        impl ConfigKey {
            /// Every key, in the order of the file.
            pub const ALL: &'static [ConfigKey] = &[$($(
            ConfigKey {
                name: concat!(stringify!($section), ".", stringify!($field)),
                env: stringify!($env),
                doc: concat!($($doc),*),
                secret: secret!($($secret)?),
                choices: <$ty as Value>::CHOICES,
                parse_text: |text| <$ty as Value>::from_text(text).map(|v| v.to_toml()),
                set_value: |config, value| {
                    config.$section.$field = Value::from_toml(value)?;
                    Ok(())
                },
                get_value: |config| config.$section.$field.to_toml(),
            },
            )*)*];
        }
    };
}

/// Whether a key is marked `secret` after its variable: a URL that may hold a password.
macro_rules! secret {
    () => {
        false
    };
    (secret) => {
        true
    };
}

keys! {
    /// The HTTP API (`serve`).
    http: HttpConfig {
        /// Address the API listens on.
        #[env(SUMSVC_LISTEN)]
        listen: SocketAddr = "127.0.0.1:8000",
        /// After SIGTERM or SIGINT, how long in-flight requests may finish.
        #[env(SUMSVC_DRAIN_TIMEOUT)]
        drain_timeout: Duration = "35s",
        /// Longest a client may take to send a request's headers; then its connection is closed.
        #[env(SUMSVC_HEADER_TIMEOUT)]
        header_timeout: Duration = "10s",
        /// Longest a client may take to send a request's body; then 408, and an HTTP/1.1
        /// connection is closed (HTTP/2 ends only the stream).
        #[env(SUMSVC_BODY_TIMEOUT)]
        body_timeout: Duration = "30s",
        /// How long a connection may wait with no request before it is closed.
        #[env(SUMSVC_IDLE_TIMEOUT)]
        idle_timeout: Duration = "75s",
        /// Most client connections open at once; more wait until one closes.
        #[env(SUMSVC_MAX_CONNECTIONS)]
        max_connections: usize = 32768,
        /// Most requests at once on one HTTP/2 connection.
        #[env(SUMSVC_HTTP2_MAX_STREAMS)]
        http2_max_streams: usize = 200,
    }

    /// Sessions, in PostgreSQL.
    postgres: PostgresConfig {
        /// Sessions database; `sumsvc migrate` creates it when missing. TLS: `?sslmode=require`.
        #[env(SUMSVC_DATABASE_URL, secret)]
        url: String = "postgres://postgres@127.0.0.1:5432/sumsvc",
        /// Connections per process.
        #[env(SUMSVC_POSTGRES_POOL_SIZE)]
        pool_size: usize = 16,
        /// Bound on connecting and on each statement; past it the request answers 503.
        #[env(SUMSVC_POSTGRES_TIMEOUT)]
        timeout: Duration = "1500ms",
    }

    /// The task queue, in RabbitMQ.
    rabbitmq: RabbitConfig {
        /// Broker URL: `amqp://`, or `amqps://` for TLS (port 5671 unless it says
        /// otherwise); for a cluster, a list of its nodes' URLs.
        #[env(SUMSVC_AMQP_URL, secret)]
        url: UrlList = "amqp://guest:guest@127.0.0.1:5672/%2f",
        /// Durable task queue; its dead-letter queue is `<queue>.dead`.
        #[env(SUMSVC_QUEUE)]
        queue: String = "sumsvc.tasks",
        /// Declare quorum queues (for a clustered RabbitMQ) instead of classic ones.
        #[env(SUMSVC_QUORUM)]
        quorum: bool = false,
        /// Bound on connecting and on waiting for a publisher confirm.
        #[env(SUMSVC_AMQP_TIMEOUT)]
        timeout: Duration = "1500ms",
        /// AMQP heartbeat: how fast a silent broker is noticed.
        #[env(SUMSVC_AMQP_HEARTBEAT)]
        heartbeat: Duration = "10s",
        /// Publishes that may wait for the publisher thread before requests get 503.
        #[env(SUMSVC_PUBLISH_BACKLOG)]
        publish_backlog: usize = 65536,
        /// Bytes of task messages that may wait for the publisher thread, likewise.
        #[env(SUMSVC_PUBLISH_BACKLOG_BYTES)]
        publish_backlog_bytes: usize = 268435456,
    }

    /// Results, in Redis.
    redis: RedisConfig {
        /// `single`: one server; `sentinel`: a master and replicas that Sentinels watch;
        /// `cluster`: a Redis Cluster.
        #[env(SUMSVC_REDIS_MODE)]
        mode: RedisMode = "single",
        /// Results store: `redis://`, or `rediss://` for TLS; the Sentinels' URLs in
        /// sentinel mode, seed nodes in cluster mode.
        #[env(SUMSVC_REDIS_URL, secret)]
        url: UrlList = "redis://127.0.0.1:6379/0",
        /// The master set the Sentinels watch (sentinel mode).
        #[env(SUMSVC_REDIS_SENTINEL_MASTER)]
        sentinel_master: String = "mymaster",
        /// Replicas that must hold a worker's results before it acks their tasks.
        #[env(SUMSVC_REDIS_MIN_REPLICAS)]
        min_replicas: usize = 0,
        /// Every key and channel starts with `<prefix>:`.
        #[env(SUMSVC_REDIS_PREFIX)]
        prefix: String = "sumsvc",
        /// Connections per process.
        #[env(SUMSVC_REDIS_POOL_SIZE)]
        pool_size: usize = 16,
        /// Bound on connecting and on each command.
        #[env(SUMSVC_REDIS_TIMEOUT)]
        timeout: Duration = "1500ms",
    }

    /// TLS to the three dependencies, which their URLs turn on (`sslmode=require`,
    /// `amqps://`, `rediss://`).
    tls: TlsConfig {
        /// PEM file of the CA certificates trusted instead of the system's; empty: the system's.
        #[env(SUMSVC_TLS_CA_FILE)]
        ca_file: String = "",
    }

    /// How requests wait and results last.
    tasks: TasksConfig {
        /// Longest a synchronous request waits before it answers 202 with a session.
        #[env(SUMSVC_SYNC_TIMEOUT)]
        sync_timeout: Duration = "30s",
        /// How long a result stays readable.
        #[env(SUMSVC_RESULT_TTL)]
        result_ttl: Duration = "24h",
        /// How long an `Idempotency-Key` and the answer it got are kept.
        #[env(SUMSVC_IDEMPOTENCY_TTL)]
        idempotency_ttl: Duration = "24h",
        /// How long a session is kept after its result expired: its id answers 410
        /// until then from its row, and after from the purge's mark.
        #[env(SUMSVC_SESSION_RETENTION)]
        session_retention: Duration = "7d",
        /// How often `serve` removes what is kept past its time; 0s: never (`sumsvc purge`
        /// does it on demand).
        #[env(SUMSVC_PURGE_EVERY)]
        purge_every: Duration = "10m",
    }

    /// Who may use the API (`serve`).
    auth: AuthConfig {
        /// `open`: anyone who reaches the API may use it; `keys`: every route but the
        /// probes, /metrics and the docs needs an API key (`sumsvc keys create NAME`).
        #[env(SUMSVC_AUTH)]
        mode: AuthMode = "open",
        /// A revoked key stops working within this on every serve.
        #[env(SUMSVC_AUTH_REVOKE_WITHIN)]
        revoke_within: Duration = "5s",
        /// Requests per second each key may make to one serve (429 beyond).
        #[env(SUMSVC_AUTH_RATE)]
        rate: usize = 100,
        /// Requests a key that was idle may make at once, before `rate` applies.
        #[env(SUMSVC_AUTH_BURST)]
        burst: usize = 200,
        /// Sync requests each key may have waiting on one serve (429 beyond).
        #[env(SUMSVC_AUTH_MAX_SYNC_WAITERS)]
        max_sync_waiters: usize = 100,
    }

    /// What one request may ask for.
    limits: LimitsConfig {
        /// Most numbers in one request.
        #[env(SUMSVC_MAX_ITEMS)]
        max_items: usize = 1000000,
        /// Largest request body in bytes.
        #[env(SUMSVC_MAX_BODY_BYTES)]
        max_body_bytes: usize = 33554432,
        /// Most significant digits of a result.
        #[env(SUMSVC_MAX_RESULT_DIGITS)]
        max_result_digits: usize = 4300,
        /// Longest written result in bytes.
        #[env(SUMSVC_MAX_RESULT_BYTES)]
        max_result_bytes: usize = 65536,
        /// Bytes of request bodies held at once, across all requests; past it, 503.
        #[env(SUMSVC_BODY_BUDGET_BYTES)]
        body_budget_bytes: usize = 134217728,
        /// Sync requests waiting on one serve at once, whoever sent them; past it, 503.
        #[env(SUMSVC_MAX_SYNC_WAITERS)]
        max_sync_waiters: usize = 10000,
        /// Most tasks or sessions one bulk request names.
        #[env(SUMSVC_MAX_BATCH)]
        max_batch: usize = 1000,
    }

    /// The consumers of `work`.
    worker: WorkerConfig {
        /// Consumer threads (one AMQP channel each); 0 means one per CPU core.
        #[env(SUMSVC_WORKER_CONCURRENCY)]
        concurrency: usize = 0,
        /// Unacknowledged messages each consumer may hold.
        #[env(SUMSVC_WORKER_PREFETCH)]
        prefetch: u16 = 64,
        /// How long a stopping worker keeps retrying to store the results it holds.
        #[env(SUMSVC_WORKER_DRAIN_TIMEOUT)]
        drain_timeout: Duration = "20s",
        /// Where `work` answers `GET /metrics` (Prometheus) and `GET /healthz`; port 0
        /// picks a free one.
        #[env(SUMSVC_WORKER_METRICS_LISTEN)]
        metrics_listen: SocketAddr = "127.0.0.1:9464",
    }

    /// Logs, on standard error.
    log: LogConfig {
        /// `text` for people, `json` for log collectors (one object per line, with the
        /// trace and request ids).
        #[env(SUMSVC_LOG_FORMAT)]
        format: LogFormat = "text",
    }
}

/// One key of the configuration, as the table declares it.
pub struct ConfigKey {
    /// `section.field`, as the file, errors and `--help` name it.
    pub name: &'static str,
    /// The environment variable that sets it.
    pub env: &'static str,
    /// Whether it is a URL that may hold a password, never to be shown.
    pub secret: bool,
    /// The only values its flag accepts, when there are few (`true`, `false`).
    pub choices: &'static [&'static str],
    doc: &'static str,
    parse_text: fn(&str) -> Result<toml::Value, String>,
    set_value: fn(&mut Config, toml::Value) -> Result<(), String>,
    get_value: fn(&Config) -> toml::Value,
}

impl ConfigKey {
    /// The key called `section.field`.
    pub fn named(name: &str) -> Option<&'static ConfigKey> {
        ConfigKey::ALL.iter().find(|key| key.name == name)
    }

    /// Its section: `http` for `http.listen`.
    pub fn section(&self) -> &'static str {
        self.name.split_once('.').expect("section.field").0
    }

    /// Its name within the section: `listen` for `http.listen`.
    pub fn field(&self) -> &'static str {
        self.name.split_once('.').expect("section.field").1
    }

    /// Its flag: `worker-prefetch` for `SUMSVC_WORKER_PREFETCH`.
    pub fn flag(&self) -> String {
        let name = self.env.strip_prefix("SUMSVC_").expect("SUMSVC_ variable");
        name.to_lowercase().replace('_', "-")
    }

    /// One line saying what it is for.
    pub fn help(&self) -> &'static str {
        self.doc.trim()
    }

    /// Reads the text of its flag or variable into the value the file would hold, so
    /// every layer is set the same way ([`ConfigKey::set`]).
    pub fn parse(&self, text: &str) -> Result<toml::Value, String> {
        (self.parse_text)(text)
    }

    /// Sets this key of `config`; the error names the key.
    pub fn set(&self, config: &mut Config, value: toml::Value) -> anyhow::Result<()> {
        (self.set_value)(config, value).map_err(|e| anyhow!("{}: {}", self.name, e.trim_end()))
    }

    /// Its value in `config` as its variable would be written, password included.
    pub fn text(&self, config: &Config) -> String {
        toml_to_text((self.get_value)(config))
    }

    /// Its value in `config` as the file writes it, with any password hidden.
    fn shown(&self, config: &Config) -> toml::Value {
        match (self.get_value)(config) {
            value if self.secret => hide_passwords(value),
            value => value,
        }
    }
}

/// A field as `Debug` shows it: a secret one without its password.
struct Shown<'a, T>(&'a T, bool);

impl<T: fmt::Debug + Value> fmt::Debug for Shown<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shown(value, true) => {
                let text = toml_to_text(hide_passwords(value.to_toml()));
                fmt::Debug::fmt(&text, f)
            }
            Shown(value, false) => fmt::Debug::fmt(value, f),
        }
    }
}

/// A key's built-in default, written in the table as the file would write it.
fn default_of<T: Value>(key: &str, text: &str) -> T {
    parse_toml(text)
        .and_then(T::from_toml)
        .unwrap_or_else(|e| panic!("the default of {key} in the key table is invalid: {e}"))
}

/// Who may use the API: `auth.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Anyone who reaches the API may use it, as in the original.
    Open,
    /// Every route but the probes, /metrics and the docs needs an API key.
    Keys,
}

choice_value!(AuthMode, "mode", { Open => "open", Keys => "keys" });

/// How Redis is deployed: `redis.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    /// One server at `redis.url`.
    Single,
    /// A master and its replicas, found through the Sentinels at `redis.url`.
    Sentinel,
    /// A Redis Cluster, found through the seed nodes at `redis.url`.
    Cluster,
}

choice_value!(RedisMode, "mode", { Single => "single", Sentinel => "sentinel", Cluster => "cluster" });

impl AuthConfig {
    /// The shortest `auth.revoke_within`: each serve reads the keys four times within it.
    pub const MIN_REVOKE_WITHIN: Duration = Duration::from_secs(1);

    fn validate(&self) -> anyhow::Result<()> {
        if self.revoke_within < Self::MIN_REVOKE_WITHIN {
            bail!(
                "auth.revoke_within must be at least {}: each serve reads the keys four \
                 times within it",
                format_duration(Self::MIN_REVOKE_WITHIN)
            );
        }
        for (key, value) in [
            ("auth.rate", self.rate),
            ("auth.burst", self.burst),
            ("auth.max_sync_waiters", self.max_sync_waiters),
        ] {
            if value == 0 {
                bail!("{key} must be greater than zero");
            }
        }
        Ok(())
    }
}

impl LimitsConfig {
    /// The limits the API checks `args` against.
    pub fn sum_limits(&self) -> crate::sum::Limits {
        crate::sum::Limits {
            max_items: self.max_items,
            max_result_digits: self.max_result_digits,
            max_result_bytes: self.max_result_bytes,
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
        let file: toml::Table = text.parse()?;
        let mut config = Self::default();
        for (section, keys) in file {
            let toml::Value::Table(keys) = keys else {
                bail!(
                    "unknown key {section}: keys go under their section, like listen under [http]"
                );
            };
            for (field, value) in keys {
                let name = format!("{section}.{field}");
                let key = ConfigKey::named(&name).ok_or_else(|| anyhow!("unknown key {name}"))?;
                key.set(&mut config, value)?;
            }
        }
        Ok(config)
    }

    /// The effective configuration as TOML, as `sumsvc config` prints it: every key, in
    /// the order of the file, passwords hidden.
    pub fn to_toml(&self) -> String {
        let mut text = String::new();
        let mut section = "";
        for key in ConfigKey::ALL {
            if key.section() != section {
                if !text.is_empty() {
                    text.push('\n');
                }
                section = key.section();
                text.push_str(&format!("[{section}]\n"));
            }
            text.push_str(&format!("{} = {}\n", key.field(), key.shown(self)));
        }
        text
    }

    /// The `SUMSVC_` environment that sets every key to its value here, passwords
    /// included: for starting another process with this configuration.
    pub fn to_env(&self) -> Vec<(String, String)> {
        ConfigKey::ALL
            .iter()
            .map(|key| (key.env.to_owned(), key.text(self)))
            .collect()
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
                    "{key}: {:?} is not a URL with scheme {}",
                    without_password(url),
                    schemes.join(" or ")
                ),
            }
        }
        url_scheme(
            "postgres.url",
            &self.postgres.url,
            &["postgres", "postgresql"],
        )?;
        for url in self.rabbitmq.url.urls() {
            url_scheme("rabbitmq.url", url, &["amqp", "amqps"])?;
        }
        for url in self.redis.url.urls() {
            url_scheme("redis.url", url, &["redis", "rediss"])?;
        }
        if self.redis.mode == RedisMode::Single && self.redis.url.urls().len() > 1 {
            bail!(
                "redis.url lists {} URLs, but redis.mode is single: set redis.mode to \
                 sentinel (the URLs are Sentinels) or cluster (seed nodes)",
                self.redis.url.urls().len()
            );
        }
        if self.redis.mode != RedisMode::Single && !self.tls.ca_file.is_empty() {
            bail!(
                "tls.ca_file applies to redis.mode single only: with Sentinels or a Cluster, \
                 rediss:// trusts the system's CAs (add the CA there)"
            );
        }
        let positive: [(&str, bool); 16] = [
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
            (
                "tasks.idempotency_ttl",
                self.tasks.idempotency_ttl.as_secs() > 0,
            ),
            ("limits.max_body_bytes", self.limits.max_body_bytes > 0),
            (
                "limits.max_result_digits",
                self.limits.max_result_digits > 0,
            ),
            ("limits.max_result_bytes", self.limits.max_result_bytes > 0),
            ("limits.max_sync_waiters", self.limits.max_sync_waiters > 0),
            ("limits.max_batch", self.limits.max_batch > 0),
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
        self.validate_http_limits()?;
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
        self.auth.validate()?;
        Ok(())
    }
}

impl Config {
    /// The checks of the keys that bound clients: timers, connections, body memory.
    fn validate_http_limits(&self) -> anyhow::Result<()> {
        let http = &self.http;
        let positive = [
            ("http.header_timeout", !http.header_timeout.is_zero()),
            ("http.body_timeout", !http.body_timeout.is_zero()),
            ("http.idle_timeout", !http.idle_timeout.is_zero()),
            ("http.max_connections", http.max_connections > 0),
            ("http.http2_max_streams", http.http2_max_streams > 0),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, ok)| !ok) {
            bail!("{key} must be greater than zero");
        }
        let max = u32::MAX as usize;
        if let Some(key) = [
            ("http.max_connections", http.max_connections),
            ("http.http2_max_streams", http.http2_max_streams),
        ]
        .iter()
        .find_map(|&(key, n)| (n > max).then_some(key))
        {
            bail!("{key} must be at most {max}");
        }
        if self.limits.body_budget_bytes < self.limits.max_body_bytes {
            bail!(
                "limits.body_budget_bytes must be at least limits.max_body_bytes ({}), or the \
                 largest request could never be read",
                self.limits.max_body_bytes
            );
        }
        Ok(())
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
        let text = include_str!("../../config/sumsvc.toml");
        let from_file = Config::from_toml(text).unwrap();
        assert_eq!(from_file.to_env(), Config::default().to_env());
    }

    #[test]
    fn the_shipped_file_lists_every_key_under_a_comment_naming_its_variable() {
        let lines: Vec<&str> = include_str!("../../config/sumsvc.toml").lines().collect();
        for key in ConfigKey::ALL {
            let header = format!("[{}]", key.section());
            let section = lines
                .iter()
                .position(|line| *line == header)
                .unwrap_or_else(|| panic!("config/sumsvc.toml has no {header}"));
            let at = (section + 1..lines.len())
                .take_while(|&i| !lines[i].starts_with('['))
                .find(|&i| lines[i].split('=').next().map(str::trim) == Some(key.field()))
                .unwrap_or_else(|| panic!("config/sumsvc.toml does not list {}", key.name));
            let comment = lines[..at]
                .iter()
                .rev()
                .take_while(|line| line.starts_with('#'));
            let names_variable = comment
                .flat_map(|line| line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
                .any(|word| word == key.env);
            assert!(
                names_variable,
                "the comment above {} in config/sumsvc.toml does not name {}",
                key.name, key.env
            );
        }
    }

    #[test]
    fn keys_have_distinct_names_variables_and_flags() {
        let mut seen = std::collections::HashSet::new();
        for key in ConfigKey::ALL {
            assert!(key.env.starts_with("SUMSVC_"), "{}", key.env);
            assert!(!key.help().is_empty(), "{} has no help", key.name);
            for name in [key.name.to_owned(), key.env.to_owned(), key.flag()] {
                assert!(seen.insert(name.clone()), "{name} is used twice");
            }
        }
        assert_eq!(
            ConfigKey::named("worker.prefetch").unwrap().flag(),
            "worker-prefetch"
        );
    }

    #[test]
    fn every_value_reads_back_from_the_text_of_its_variable() {
        let mut config = Config::default();
        config.http.listen = "[::1]:9000".parse().unwrap();
        config.rabbitmq.quorum = true;
        config.tasks.sync_timeout = Duration::from_micros(2500);
        config.worker.prefetch = 7;
        config.redis.url = "redis://:pw@cache:6379/2".into();
        let mut read = Config::default();
        for (key, (env, text)) in ConfigKey::ALL.iter().zip(config.to_env()) {
            assert_eq!(env, key.env);
            key.set(&mut read, key.parse(&text).unwrap()).unwrap();
        }
        assert_eq!(read.to_env(), config.to_env());
    }

    #[test]
    fn a_bad_duration_names_its_key() {
        let err = Config::from_toml("[tasks]\nsync_timeout = \"soon\"\n").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("tasks.sync_timeout"), "{text}");
        assert!(text.contains("30s"), "{text}");
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key() {
        let err = Config::from_toml("[worker]\nprefetch = 70000\n").unwrap_err();
        assert!(format!("{err:#}").starts_with("worker.prefetch"), "{err:#}");
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let err = Config::from_toml("[redis]\nprefx = \"x\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("redis.prefx"));
        let err = Config::from_toml("listen = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("unknown key listen"), "{err:#}");
    }

    #[test]
    fn validation_names_the_key() {
        let mut config = Config::default();
        config.redis.url = "http://nope".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.starts_with("redis.url"), "{err}");
    }

    #[test]
    fn the_digit_limit_may_not_exceed_the_cap() {
        let mut config = Config::default();
        config.limits.max_result_digits = crate::sum::MAX_RESULT_DIGITS_CAP + 1;
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("limits.max_result_digits must be at most"),
            "{err}"
        );
        config.limits.max_result_digits = crate::sum::MAX_RESULT_DIGITS_CAP;
        config.validate().unwrap();
    }

    #[test]
    fn auth_values_are_checked_and_name_their_key() {
        let err = Config::from_toml("[auth]\nmode = \"closed\"\n").unwrap_err();
        assert!(format!("{err:#}").starts_with("auth.mode"), "{err:#}");
        let mut config = Config::default();
        config.auth.revoke_within = Duration::from_millis(500);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.starts_with("auth.revoke_within"), "{err}");
        config.auth.revoke_within = AuthConfig::MIN_REVOKE_WITHIN;
        config.auth.max_sync_waiters = 0;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.starts_with("auth.max_sync_waiters"), "{err}");
    }

    #[test]
    fn several_redis_urls_need_a_mode_that_takes_them() {
        let mut config = Config::default();
        config.redis.url = "redis://s1:26379,redis://s2:26379".parse().unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("redis.mode is single"), "{err}");
        config.redis.mode = RedisMode::Sentinel;
        config.validate().unwrap();
        config.tls.ca_file = "/etc/ssl/ca.pem".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.starts_with("tls.ca_file"), "{err}");
    }

    #[test]
    fn passwords_are_shown_nowhere_but_in_the_environment() {
        let mut config = Config::default();
        config.postgres.url = "postgres://app:pg-secret@db/x".into();
        config.rabbitmq.url = "amqp://app:mq-secret@mq/v,amqp://app:mq-secret2@mq2/v"
            .parse()
            .unwrap();
        config.redis.url = "redis://:redis-secret@cache/0".into();
        let shown = [config.to_toml(), format!("{config:?}")];
        for text in &shown {
            for secret in ["pg-secret", "mq-secret", "mq-secret2", "redis-secret"] {
                assert!(!text.contains(secret), "{secret} shown in {text}");
            }
            assert!(text.contains("amqp://app:***@mq/v"), "{text}");
            assert!(text.contains("amqp://app:***@mq2/v"), "{text}");
        }
        let env = config.to_env();
        let amqp = (
            "SUMSVC_AMQP_URL".to_owned(),
            "amqp://app:mq-secret@mq/v,amqp://app:mq-secret2@mq2/v".to_owned(),
        );
        assert!(env.contains(&amqp), "{env:?}");

        config.redis.url = "http://u:redis-secret@cache".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(!err.contains("redis-secret"), "{err}");
        assert!(err.contains("http://u:***@cache"), "{err}");
    }
}
