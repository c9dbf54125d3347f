//! The accept loop: at most `http.max_connections` connections at once (the rest wait
//! in the listen backlog, holding no descriptor of ours), a back-off when accepting
//! fails (out of file descriptors, the kernel out of memory) instead of a busy loop,
//! and the drain at shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use poem::endpoint::BoxEndpoint;
use poem::listener::Acceptor;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::connection::{self, Shared};
use crate::config::HttpConfig;
use crate::dependency::Backoff;

/// Serves connections from `acceptor` until `shutdown`; then stops accepting (new
/// connections are refused), lets in-flight requests finish for at most
/// `http.drain_timeout`, and closes what is left.
pub(super) async fn serve<A: Acceptor>(
    mut acceptor: A,
    endpoint: BoxEndpoint<'static>,
    http: &HttpConfig,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared::new(endpoint, http));
    let slots = Arc::new(Semaphore::new(http.max_connections));
    let mut full = Episode::new(
        "every connection slot is taken (http.max_connections); new connections wait in the listen backlog",
    );
    let mut failing = Episode::new("cannot accept connections; backing off");
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
                let shared = shared.clone();
                tokio::spawn(async move {
                    connection::serve(io, local, remote, scheme, shared).await;
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
    drain(&shared, &slots, http).await;
}

/// Tells every connection to finish, and waits until all have closed or
/// `http.drain_timeout` has passed, then closes the rest.
async fn drain(shared: &Shared, slots: &Arc<Semaphore>, http: &HttpConfig) {
    shared.drain.cancel();
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
        shared.force.cancel();
    }
}

/// How often a condition that lasts, or keeps coming back, is logged again.
const REPEAT: Duration = Duration::from_secs(30);

/// A condition of the accept loop that may last or keep coming back (connections
/// saturating the cap as fast as they close): a warning when it begins, at most one
/// every 30 s, and a line when a warned-of one ends, rather than lines per connection.
struct Episode {
    what: &'static str,
    since: Option<Instant>,
    warned: bool,
    last_warning: Option<Instant>,
}

impl Episode {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            since: None,
            warned: false,
            last_warning: None,
        }
    }

    fn began(&mut self, cause: &dyn std::fmt::Display) {
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        if self.last_warning.is_some_and(|at| now - at < REPEAT) {
            return;
        }
        self.last_warning = Some(now);
        self.warned = true;
        let lasting = format!("{}s", (now - since).as_secs());
        tracing::warn!(%cause, %lasting, "{}", self.what);
    }

    fn ended(&mut self) {
        if let Some(since) = self.since.take() {
            if std::mem::take(&mut self.warned) {
                let lasted = format!("{:.1}s", since.elapsed().as_secs_f64());
                tracing::info!(%lasted, "over: {}", self.what);
            }
        }
    }
}
