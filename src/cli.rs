//! The command line: one subcommand per role, plus the flag and environment layers of the
//! configuration (clap reads each value from its flag, else its `SUMSVC_` variable).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{parse_duration, Config};

/// Exact sums of number lists through a job queue.
#[derive(Debug, Parser)]
#[command(name = "sumsvc", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub overrides: Overrides,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the database if it is missing and apply the schema migrations, then exit.
    Migrate,
    /// Run the HTTP API.
    Serve,
    /// Run workers that consume tasks from RabbitMQ and store results in Redis.
    Work,
    /// Run migrate, serve and a worker pool in one process: the quick start.
    Dev,
    /// Print the effective configuration (all layers applied) as TOML, then exit.
    Config,
    /// List the dead-letter queue (messages workers could not read), or replay it into the
    /// task queue.
    Dead {
        #[command(subcommand)]
        action: DeadAction,
    },
    /// Ask the API at http.listen for a route (default /readyz); exit 0 on 200, 1
    /// otherwise. For health checks of containers and scripts.
    Probe {
        /// The route to ask for.
        #[arg(default_value = "/readyz")]
        path: String,
    },
}

/// `sumsvc dead` subcommands.
#[derive(Debug, Subcommand)]
pub enum DeadAction {
    /// Show the messages in the dead-letter queue and why each could not be processed,
    /// without removing any.
    ///
    /// The dead-letter queue is <rabbitmq.queue>.dead. Each message is read and handed
    /// back unacknowledged, so the queue keeps its messages and their order, even if this
    /// command is killed halfway. The first line says how many messages the queue holds.
    List {
        /// Show at most N messages, from the head of the queue [default: all]
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// Print one JSON object per message per line, for scripts
        #[arg(long)]
        json: bool,
    },
    /// Move messages from the dead-letter queue back to the task queue.
    ///
    /// Messages go from <rabbitmq.queue>.dead to <rabbitmq.queue> in order, body and
    /// properties kept. Each copy is published persistent and confirmed before its dead
    /// original is removed, so an interruption can duplicate a message but never lose one.
    /// Moves at most what the queue held when it started.
    ///
    /// A message that is still not a task will simply be dead-lettered again by the
    /// worker (its x-death count goes up): replay once a build that can read it runs.
    /// `sumsvc dead list` says which messages this build can read.
    Replay {
        /// Move at most N messages, from the head of the queue [default: all]
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
}

/// Flags and `SUMSVC_` variables; each one overrides its key of the config file. The
/// value name is the key, so a bad value is reported with the key it is for.
#[derive(Debug, Default, Args)]
pub struct Overrides {
    /// Config file [default: config/sumsvc.toml when it exists]
    #[arg(long, global = true, env = "SUMSVC_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// http.listen
    #[arg(long, global = true, env = "SUMSVC_LISTEN", value_name = "http.listen")]
    pub listen: Option<SocketAddr>,
    /// http.drain_timeout
    #[arg(long, global = true, env = "SUMSVC_DRAIN_TIMEOUT", value_name = "http.drain_timeout", value_parser = parse_duration)]
    pub drain_timeout: Option<Duration>,
    /// postgres.url
    #[arg(
        long,
        global = true,
        env = "SUMSVC_DATABASE_URL",
        value_name = "postgres.url"
    )]
    pub database_url: Option<String>,
    /// postgres.pool_size
    #[arg(
        long,
        global = true,
        env = "SUMSVC_POSTGRES_POOL_SIZE",
        value_name = "postgres.pool_size"
    )]
    pub postgres_pool_size: Option<usize>,
    /// postgres.timeout
    #[arg(long, global = true, env = "SUMSVC_POSTGRES_TIMEOUT", value_name = "postgres.timeout", value_parser = parse_duration)]
    pub postgres_timeout: Option<Duration>,
    /// rabbitmq.url
    #[arg(
        long,
        global = true,
        env = "SUMSVC_AMQP_URL",
        value_name = "rabbitmq.url"
    )]
    pub amqp_url: Option<String>,
    /// rabbitmq.queue
    #[arg(
        long,
        global = true,
        env = "SUMSVC_QUEUE",
        value_name = "rabbitmq.queue"
    )]
    pub queue: Option<String>,
    /// rabbitmq.quorum
    #[arg(
        long,
        global = true,
        env = "SUMSVC_QUORUM",
        value_name = "rabbitmq.quorum"
    )]
    pub quorum: Option<bool>,
    /// rabbitmq.timeout
    #[arg(long, global = true, env = "SUMSVC_AMQP_TIMEOUT", value_name = "rabbitmq.timeout", value_parser = parse_duration)]
    pub amqp_timeout: Option<Duration>,
    /// rabbitmq.heartbeat
    #[arg(long, global = true, env = "SUMSVC_AMQP_HEARTBEAT", value_name = "rabbitmq.heartbeat", value_parser = parse_duration)]
    pub amqp_heartbeat: Option<Duration>,
    /// rabbitmq.publish_backlog
    #[arg(
        long,
        global = true,
        env = "SUMSVC_PUBLISH_BACKLOG",
        value_name = "rabbitmq.publish_backlog"
    )]
    pub publish_backlog: Option<usize>,
    /// rabbitmq.publish_backlog_bytes
    #[arg(
        long,
        global = true,
        env = "SUMSVC_PUBLISH_BACKLOG_BYTES",
        value_name = "rabbitmq.publish_backlog_bytes"
    )]
    pub publish_backlog_bytes: Option<usize>,
    /// redis.url
    #[arg(
        long,
        global = true,
        env = "SUMSVC_REDIS_URL",
        value_name = "redis.url"
    )]
    pub redis_url: Option<String>,
    /// redis.prefix
    #[arg(
        long,
        global = true,
        env = "SUMSVC_REDIS_PREFIX",
        value_name = "redis.prefix"
    )]
    pub redis_prefix: Option<String>,
    /// redis.pool_size
    #[arg(
        long,
        global = true,
        env = "SUMSVC_REDIS_POOL_SIZE",
        value_name = "redis.pool_size"
    )]
    pub redis_pool_size: Option<usize>,
    /// redis.timeout
    #[arg(long, global = true, env = "SUMSVC_REDIS_TIMEOUT", value_name = "redis.timeout", value_parser = parse_duration)]
    pub redis_timeout: Option<Duration>,
    /// tasks.sync_timeout
    #[arg(long, global = true, env = "SUMSVC_SYNC_TIMEOUT", value_name = "tasks.sync_timeout", value_parser = parse_duration)]
    pub sync_timeout: Option<Duration>,
    /// tasks.result_ttl
    #[arg(long, global = true, env = "SUMSVC_RESULT_TTL", value_name = "tasks.result_ttl", value_parser = parse_duration)]
    pub result_ttl: Option<Duration>,
    /// limits.max_items
    #[arg(
        long,
        global = true,
        env = "SUMSVC_MAX_ITEMS",
        value_name = "limits.max_items"
    )]
    pub max_items: Option<usize>,
    /// limits.max_body_bytes
    #[arg(
        long,
        global = true,
        env = "SUMSVC_MAX_BODY_BYTES",
        value_name = "limits.max_body_bytes"
    )]
    pub max_body_bytes: Option<usize>,
    /// limits.max_result_digits
    #[arg(
        long,
        global = true,
        env = "SUMSVC_MAX_RESULT_DIGITS",
        value_name = "limits.max_result_digits"
    )]
    pub max_result_digits: Option<usize>,
    /// worker.concurrency (0: one per CPU core)
    #[arg(
        long,
        global = true,
        env = "SUMSVC_WORKER_CONCURRENCY",
        value_name = "worker.concurrency"
    )]
    pub worker_concurrency: Option<usize>,
    /// worker.prefetch
    #[arg(
        long,
        global = true,
        env = "SUMSVC_WORKER_PREFETCH",
        value_name = "worker.prefetch"
    )]
    pub worker_prefetch: Option<u16>,
    /// worker.drain_timeout
    #[arg(long, global = true, env = "SUMSVC_WORKER_DRAIN_TIMEOUT", value_name = "worker.drain_timeout", value_parser = parse_duration)]
    pub worker_drain_timeout: Option<Duration>,
}

impl Overrides {
    /// Loads the file layer, applies these overrides on top and validates the result.
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut config = Config::from_file(self.config.as_deref())?;
        self.apply(&mut config);
        config.validate()?;
        Ok(config)
    }

    fn apply(&self, c: &mut Config) {
        fn set<T: Clone>(slot: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *slot = v.clone();
            }
        }
        set(&mut c.http.listen, &self.listen);
        set(&mut c.http.drain_timeout, &self.drain_timeout);
        set(&mut c.postgres.url, &self.database_url);
        set(&mut c.postgres.pool_size, &self.postgres_pool_size);
        set(&mut c.postgres.timeout, &self.postgres_timeout);
        set(&mut c.rabbitmq.url, &self.amqp_url);
        set(&mut c.rabbitmq.queue, &self.queue);
        set(&mut c.rabbitmq.quorum, &self.quorum);
        set(&mut c.rabbitmq.timeout, &self.amqp_timeout);
        set(&mut c.rabbitmq.heartbeat, &self.amqp_heartbeat);
        set(&mut c.rabbitmq.publish_backlog, &self.publish_backlog);
        set(
            &mut c.rabbitmq.publish_backlog_bytes,
            &self.publish_backlog_bytes,
        );
        set(&mut c.redis.url, &self.redis_url);
        set(&mut c.redis.prefix, &self.redis_prefix);
        set(&mut c.redis.pool_size, &self.redis_pool_size);
        set(&mut c.redis.timeout, &self.redis_timeout);
        set(&mut c.tasks.sync_timeout, &self.sync_timeout);
        set(&mut c.tasks.result_ttl, &self.result_ttl);
        set(&mut c.limits.max_items, &self.max_items);
        set(&mut c.limits.max_body_bytes, &self.max_body_bytes);
        set(&mut c.limits.max_result_digits, &self.max_result_digits);
        set(&mut c.worker.concurrency, &self.worker_concurrency);
        set(&mut c.worker.prefetch, &self.worker_prefetch);
        set(&mut c.worker.drain_timeout, &self.worker_drain_timeout);
    }
}
