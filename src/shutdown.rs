//! Shutdown: SIGINT and SIGTERM cancel one token that every role watches; a second
//! signal exits at once, for an operator who will not wait for the drain.

use tokio_util::sync::CancellationToken;

/// Exit status after a second signal: what a shell reports for a process ended by
/// SIGINT, and non-zero so a service manager sees the drain was cut short.
pub const FORCED_EXIT: i32 = 130;

/// Returns a token cancelled by the first SIGINT or SIGTERM. A second one ends the
/// process at once: unacked tasks go back to the queue when its connections close.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; draining (a second signal exits at once)");
        cancel.cancel();
        wait_for_signal().await;
        tracing::warn!("second shutdown signal; exiting without draining");
        std::process::exit(FORCED_EXIT);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
