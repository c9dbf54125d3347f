//! Telemetry of the process: logs and traces. (Metrics are per role: [`crate::metrics`].)
//!
//! Logs are `tracing` events with fields, on standard error, filtered by `RUST_LOG`;
//! amiquip's `log` records arrive through tracing-subscriber's `tracing-log` bridge.
//! `log.format` writes them as text, or as JSON lines ([`json`]) that carry the trace
//! and request ids of the request they belong to. Traces: [`trace`].
//!
//! The default keeps one line per request out (thousands a second under load):
//! `RUST_LOG=info,sumsvc::access=info` brings them back ([`ACCESS_LOG`]).

mod json;
pub mod trace;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// The target of the line logged per request (`crate::api`'s observe layer), which
/// [`DEFAULT_FILTER`] leaves out.
pub const ACCESS_LOG: &str = "sumsvc::access";

/// The filter when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str =
    "info,amiquip=warn,sumsvc::access=warn,tokio_postgres::connection=warn";

/// Held at `info` whatever `RUST_LOG` says: amiquip logs its handshake at `debug`, and
/// the handshake carries the broker password in clear.
const NEVER_BELOW_INFO: &str = "amiquip::io_loop::handshake_state=info";

/// What must outlive the role: the trace exporter, flushed by [`Telemetry::shutdown`].
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber that writes to standard error, then starts exporting
    /// traces if the OpenTelemetry variables ask for it. `role` names the process in its
    /// spans (`sumsvc.role`).
    pub fn init(log: &LogConfig, role: &'static str) -> Self {
        let filter = EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
            .add_directive(NEVER_BELOW_INFO.parse().expect("a valid directive"));
        let logs = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let _ = match log.format {
            LogFormat::Text => logs.try_init(),
            LogFormat::Json => logs
                .fmt_fields(JsonFields::new())
                .event_format(json::JsonLines)
                .try_init(),
        };
        Telemetry {
            traces: trace::start_exporting(role),
        }
    }

    /// Sends the spans still buffered; waits at most the export timeout
    /// (`OTEL_BSP_EXPORT_TIMEOUT`).
    pub fn shutdown(self) {
        if let Some(provider) = self.traces {
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "some spans could not be exported at exit");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn the_default_filter_leaves_out_the_line_per_request_and_keeps_the_rest_of_info() {
        let subscriber = tracing_subscriber::registry().with(EnvFilter::new(DEFAULT_FILTER));
        tracing::subscriber::with_default(subscriber, || {
            assert!(!tracing::enabled!(target: ACCESS_LOG, Level::INFO));
            assert!(tracing::enabled!(target: ACCESS_LOG, Level::WARN));
            assert!(tracing::enabled!(target: "sumsvc::serve", Level::INFO));
        });
        let asked = tracing_subscriber::registry().with(EnvFilter::new("info,sumsvc::access=info"));
        tracing::subscriber::with_default(asked, || {
            assert!(tracing::enabled!(target: ACCESS_LOG, Level::INFO));
        });
    }
}
