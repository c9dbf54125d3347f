use clap::Parser;
use std::time::Duration;
use sumsvc::cli::{Cli, Command, DeadAction, KeysAction};

use sumsvc::{probe, roles, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.overrides.load()?;
    let telemetry = telemetry::init(&config.log, cli.command.name());
    let result = match cli.command {
        Command::Config => {
            print!("{}", config.to_toml());
            Ok(())
        }
        Command::Probe { path } => probe::run(config.http.listen, &path, Duration::from_secs(3))
            .map(|body| println!("{body}")),
        Command::Migrate => roles::migrate(&config).await,
        Command::Serve => roles::serve(&config, shutdown::on_signal()).await,
        Command::Work => roles::work(&config, shutdown::on_signal()).await,
        Command::Dev => roles::dev(&config, shutdown::on_signal()).await,
        Command::Dead { action } => match action {
            DeadAction::List { limit, json } => roles::dead_list(&config, limit, json).await,
            DeadAction::Replay { limit } => roles::dead_replay(&config, limit).await,
        },
        Command::Keys { action } => match action {
            KeysAction::Create { name } => roles::keys_create(&config, &name).await,
            KeysAction::List => roles::keys_list(&config).await,
            KeysAction::Revoke { name } => roles::keys_revoke(&config, &name).await,
        },
    };
    // Spans still buffered are sent before the process ends.
    tokio::task::block_in_place(|| telemetry.shutdown());
    result
}
