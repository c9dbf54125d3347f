//! A TCP proxy a test puts between the service and a dependency, so it can cut the
//! dependency off (closing every connection and refusing new ones) and restore it, or
//! freeze it (connections stay open and carry nothing, as with a dependency that is
//! paused or partitioned away) and thaw it, without touching the shared server.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    frozen: watch::Sender<bool>,
    _task: Arc<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cut_rx) = watch::channel(false);
        let (frozen, frozen_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                if *cut_rx.borrow() {
                    // Cut: accept and close at once, like a dead peer behind a firewall reset.
                    drop(inbound);
                    continue;
                }
                let mut cut_rx = cut_rx.clone();
                let frozen_rx = frozen_rx.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    let both = async {
                        tokio::join!(
                            pump(in_read, out_write, frozen_rx.clone()),
                            pump(out_read, in_write, frozen_rx)
                        )
                    };
                    tokio::select! {
                        _ = both => {}
                        _ = cut_rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            cut,
            frozen,
            _task: Arc::new(task),
        }
    }

    /// Closes every proxied connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn restore(&self) {
        self.cut.send_replace(false);
    }

    /// Stops carrying bytes either way, on every connection, until [`Proxy::thaw`]; the
    /// connections stay open, and new ones are accepted and carry nothing either.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Carries again what was held while frozen, and what comes next.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

/// Copies `from` to `to`, holding each chunk while the proxy is frozen; at the end of
/// `from`, shuts `to` for writing, as the peer did.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0; 64 * 1024];
    loop {
        if frozen.wait_for(|frozen| !*frozen).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) => {
                let _ = to.shutdown().await;
                return;
            }
            Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|frozen| !*frozen).await.is_err()
            || to.write_all(&buf[..n]).await.is_err()
        {
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self._task.abort();
    }
}

/// A [`Proxy`] to `upstream`, one of the shared servers' addresses such as
/// [`REDIS`](crate::config::REDIS).
pub async fn proxy_to(upstream: &str) -> Proxy {
    Proxy::start(upstream.parse().unwrap()).await
}
