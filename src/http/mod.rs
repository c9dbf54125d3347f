//! Serving HTTP: the listening socket, the accept loop, each connection's driver and
//! the watchdog that cuts slow and idle clients. The API (`serve`) and `work`'s metrics
//! port both run on it, each with the caps and timers of `[http]`.
//!
//! poem's own `Server` is not used: it has no header or body read timeout and retries a
//! failed accept at once. Here [`accept`] caps connections and backs off, [`connection`]
//! runs hyper for each, and [`watchdog`] keeps the header and idle timers. What an
//! endpoint answers, and the bounds of a request body, are the endpoint's business.

mod accept;
mod connection;
mod watchdog;

use anyhow::Context;
use poem::listener::TcpAcceptor;

pub use accept::serve;
pub use connection::StreamsFor;

/// Connections the kernel may queue before they are accepted. The standard library
/// asks for 128, which a burst of thousands of clients overflows (their connections
/// are then reset or wait seconds for a SYN retry); the kernel caps this at somaxconn.
const BACKLOG: u32 = 4096;

/// Listens on `addr`, with an error that names the config `key` it came from and, when
/// there is one, what to do about a refusal (`hint`).
pub fn bind(
    addr: std::net::SocketAddr,
    key: &str,
    hint: Option<&str>,
) -> anyhow::Result<std::net::TcpListener> {
    let listen = || -> std::io::Result<std::net::TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)?.into_std()
    };
    listen().with_context(|| match hint {
        Some(hint) => format!("cannot listen on {addr} ({key}); {hint}"),
        None => format!("cannot listen on {addr} ({key})"),
    })
}

/// A bound listener, made ready for [`serve`].
pub fn acceptor(listener: std::net::TcpListener) -> std::io::Result<TcpAcceptor> {
    listener.set_nonblocking(true)?;
    TcpAcceptor::from_std(listener)
}
