//! The command line: one subcommand per role, plus the flag and environment layers of the
//! configuration (clap reads each value from its flag, else its `SUMSVC_` variable).

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Arg, ArgMatches, Args, FromArgMatches, Parser, Subcommand};

use crate::config::{Config, ConfigKey};

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
    /// Create, list and revoke the API keys a serve with auth.mode = keys accepts. Needs
    /// only PostgreSQL (run `sumsvc migrate` first).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Remove what is kept past its time (idempotency keys older than
    /// tasks.idempotency_ttl, sessions older than tasks.result_ttl +
    /// tasks.session_retention) once, now, and say how much; serve does it every
    /// tasks.purge_every. Needs only PostgreSQL.
    Purge,
    /// Ask the API at http.listen for a route (default /readyz); exit 0 on 200, 1
    /// otherwise. For health checks of containers and scripts.
    Probe {
        /// The route to ask for.
        #[arg(default_value = "/readyz")]
        path: String,
    },
}

/// `sumsvc keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key and print its secret, once, alone on the last line.
    ///
    /// Only a digest of the secret is stored: it cannot be shown again. A client sends it
    /// as `Authorization: Bearer <secret>`. Every serve accepts a new key within
    /// auth.revoke_within.
    Create {
        /// The key's name: 1 to 64 letters, digits, '.', '_' or '-', unique for good
        name: String,
    },
    /// List the keys: name, when created, and whether and when revoked. No secrets.
    List,
    /// Revoke a key: every serve refuses it within auth.revoke_within.
    ///
    /// The key keeps its name, and its sessions stay readable by no one.
    Revoke {
        /// The name of the key to revoke
        name: String,
    },
}

impl Command {
    /// The subcommand's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Migrate => "migrate",
            Command::Serve => "serve",
            Command::Work => "work",
            Command::Dev => "dev",
            Command::Config => "config",
            Command::Dead { .. } => "dead",
            Command::Keys { .. } => "keys",
            Command::Purge => "purge",
            Command::Probe { .. } => "probe",
        }
    }
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

/// The flag and environment layers: `--config PATH` (`SUMSVC_CONFIG`), and a flag and a
/// variable for every key of [`ConfigKey::ALL`]. The value name is the key, so a bad value is
/// reported with the key it is for.
#[derive(Default)]
pub struct Overrides {
    /// The config file, if one was named.
    pub config: Option<PathBuf>,
    /// The keys set by a flag or a variable (clap prefers the flag), each read into the
    /// value the file would hold.
    values: Vec<(&'static ConfigKey, toml::Value)>,
}

impl Overrides {
    /// Loads the file layer, applies these overrides on top and validates the result.
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut config = Config::from_file(self.config.as_deref())?;
        for (key, value) in &self.values {
            key.set(&mut config, value.clone())?;
        }
        config.validate()?;
        Ok(config)
    }
}

impl std::fmt::Debug for Overrides {
    /// Names the keys set, not their values, which may hold passwords.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.values.iter().map(|(key, _)| key.name).collect();
        f.debug_struct("Overrides")
            .field("config", &self.config)
            .field("keys", &keys)
            .finish()
    }
}

/// The id of the `--config` argument.
const CONFIG: &str = "config";

/// A key's flag, which clap also reads from its variable.
fn flag(key: &'static ConfigKey) -> Arg {
    let arg = Arg::new(key.name)
        .long(key.flag())
        .env(key.env)
        .value_name(key.name)
        .help(key.help())
        .global(true)
        // clap shows a variable's value in `--help`; never a password.
        .hide_env_values(key.secret);
    if key.choices.is_empty() {
        arg.value_parser(move |text: &str| key.parse(text))
    } else {
        let choices = PossibleValuesParser::new(key.choices);
        arg.value_parser(choices.try_map(move |text| key.parse(&text)))
    }
}

impl Args for Overrides {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let config = Arg::new(CONFIG)
            .long("config")
            .env("SUMSVC_CONFIG")
            .value_name("PATH")
            .value_parser(clap::value_parser!(PathBuf))
            .help("Config file [default: config/sumsvc.toml when it exists]")
            .global(true);
        ConfigKey::ALL
            .iter()
            .fold(cmd.arg(config), |cmd, key| cmd.arg(flag(key)))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for Overrides {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let values = ConfigKey::ALL
            .iter()
            .filter_map(|key| {
                let value = matches.get_one::<toml::Value>(key.name)?;
                Some((key, value.clone()))
            })
            .collect();
        Ok(Self {
            config: matches.get_one::<PathBuf>(CONFIG).cloned(),
            values,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}
