use clap::Parser;
use sumsvc::{roles, shutdown_on_signal, Cli, Command, DeadAction, KeysAction, Telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.overrides.load()?;
    let telemetry = Telemetry::init(&config.log, cli.command.name());
    let result = match cli.command {
        Command::Config => roles::config(&config),
        Command::Probe { path } => roles::probe(&config, &path),
        Command::Migrate => roles::migrate(&config).await,
        Command::Purge => roles::purge(&config).await,
        Command::Serve => roles::serve(&config, shutdown_on_signal()).await,
        Command::Work => roles::work(&config, shutdown_on_signal()).await,
        Command::Dev => roles::dev(&config, shutdown_on_signal()).await,
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
