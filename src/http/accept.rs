//! The accept loop: at most `http.max_connections` connections at once (the rest wait
//! in the listen backlog, holding no descriptor of ours), a back-off when accepting
//! fails (out of file descriptors, the kernel out of memory) instead of a busy loop,
//! and the drain at shutdown.

use std::sync::Arc;

use poem::endpoint::BoxEndpoint;
use poem::listener::Acceptor;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::connection::{self, Server};
use crate::config::HttpConfig;
use crate::dependency::Backoff;
use crate::episode::Episode;

/// Serves connections from `acceptor` until `shutdown`; then stops accepting (new
/// connections are refused), lets in-flight requests finish for at most
/// `http.drain_timeout`, and closes what is left.
pub async fn serve<A: Acceptor>(
    mut acceptor: A,
    endpoint: BoxEndpoint<'static>,
    http: &HttpConfig,
    shutdown: CancellationToken,
) {
    let server = Arc::new(Server::new(endpoint, http));
    let slots = Arc::new(Semaphore::new(http.max_connections));
    let mut full = Condition::new(
        "every connection slot is taken (http.max_connections); new connections wait in the listen backlog",
    );
    let mut failing = Condition::new("cannot accept connections; backing off");
    let mut backoff = Backoff::new();
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                full.began(&format_args!("{} connections open", http.max_connections));
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    () = shutdown.cancelled() => break,
                }
            }
        };
        full.ended();
        let accepted = tokio::select! {
            accepted = acceptor.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((io, local, remote, scheme)) => {
                failing.ended();
                backoff.reset();
                let server = server.clone();
                tokio::spawn(async move {
                    connection::serve(io, local, remote, scheme, server).await;
                    // Its descriptor is closed by now: the slot is free.
                    drop(slot);
                });
            }
            // Every error backs off: the likely ones (EMFILE, ENFILE, ENOBUFS, ENOMEM)
            // last until connections close, and retrying at once would only spin.
            Err(e) => {
                failing.began(&e);
                drop(slot);
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    () = shutdown.cancelled() => break,
                }
            }
        }
    }
    drop(acceptor);
    drain(&server, &slots, http).await;
}

/// Tells every connection to finish, and waits until all have closed or
/// `http.drain_timeout` has passed, then closes the rest.
async fn drain(server: &Server, slots: &Arc<Semaphore>, http: &HttpConfig) {
    server.drain.cancel();
    let all = u32::try_from(http.max_connections).expect("validated: at most u32::MAX");
    let open = http.max_connections - slots.available_permits();
    if open > 0 {
        tracing::info!(open, "waiting for connections to finish their requests");
    }
    if tokio::time::timeout(http.drain_timeout, slots.acquire_many(all))
        .await
        .is_err()
    {
        let open = http.max_connections - slots.available_permits();
        tracing::warn!(
            open,
            "http.drain_timeout passed; closing the connections still open"
        );
        server.force.cancel();
    }
}

/// A condition of the accept loop that may last or keep coming back (connections
/// saturating the cap as fast as they close), logged as an [`Episode`] rather than per
/// connection.
struct Condition {
    what: &'static str,
    episode: Episode,
}

impl Condition {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            episode: Episode::default(),
        }
    }

    fn began(&mut self, cause: &dyn std::fmt::Display) {
        if let Some(lasting) = self.episode.happened() {
            let lasting = format!("{}s", lasting.as_secs());
            tracing::warn!(%cause, %lasting, "{}", self.what);
        }
    }

    fn ended(&mut self) {
        if let Some(lasted) = self.episode.ended() {
            let lasted = format!("{:.1}s", lasted.as_secs_f64());
            tracing::info!(%lasted, "over: {}", self.what);
        }
    }
}
