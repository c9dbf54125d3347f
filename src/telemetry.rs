//! Logging: `tracing` with fields, filtered by `RUST_LOG`; amiquip's `log` records
//! arrive through tracing-subscriber's `tracing-log` bridge.
//!
//! The default keeps one line per request out (thousands a second under load):
//! `RUST_LOG=info,poem::middleware::tracing_mw=info` brings them back.

use tracing_subscriber::EnvFilter;

/// The filter when `RUST_LOG` is not set.
pub(crate) const DEFAULT_FILTER: &str =
    "info,amiquip=warn,poem::middleware::tracing_mw=warn,tokio_postgres::connection=warn";

/// Held at `info` whatever `RUST_LOG` says: amiquip logs its handshake at `debug`, and
/// the handshake carries the broker password in clear.
const NEVER_BELOW_INFO: &str = "amiquip::io_loop::handshake_state=info";

/// Installs the global subscriber that writes to standard error.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
        .add_directive(NEVER_BELOW_INFO.parse().expect("a valid directive"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
