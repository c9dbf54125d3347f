//! Logging: `tracing` with fields, filtered by `RUST_LOG` (default `info`); amiquip's
//! `log` records arrive through tracing-subscriber's `tracing-log` bridge.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber that writes to standard error.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,amiquip=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
