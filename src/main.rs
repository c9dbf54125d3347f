use clap::Parser;
use sumsvc::cli::{Cli, Command};
use sumsvc::{roles, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.overrides.load()?;
    telemetry::init();
    match cli.command {
        Command::Config => {
            print!("{}", config.to_toml());
            Ok(())
        }
        Command::Migrate => roles::migrate(&config).await,
        Command::Serve => roles::serve(&config, shutdown::on_signal()).await,
        Command::Work => roles::work(&config, shutdown::on_signal()).await,
        Command::Dev => roles::dev(&config, shutdown::on_signal()).await,
    }
}
