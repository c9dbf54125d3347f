//! What can go wrong talking to RabbitMQ, typed so callers can tell a broker that is
//! gone (reconnect, however long it takes) from one that refuses what we ask (a
//! configuration problem no reconnect will fix). The messages are what users read.
//! amiquip's errors are boxed: they are large, and these travel by value.

use std::net::SocketAddr;

use crate::dependency::Dependency;

/// AMQP reply codes with which a broker refuses a request for good: access-refused,
/// not-found, resource-locked, precondition-failed, not-allowed, not-implemented.
const REFUSALS: [u16; 6] = [403, 404, 405, 406, 530, 540];

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot resolve {host}:{port}: {source}")]
    Resolve {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("{host}:{port} resolves to no address")]
    NoAddress { host: String, port: u16 },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up the socket to {addr}: {source}")]
    Socket {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("AMQP handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: Box<amiquip::Error>,
    },
    /// The TLS handshake of an `amqps://` connection failed; the message says what to check.
    #[error("TLS handshake with {addr} failed: {source}{}", tls_advice(source))]
    Tls {
        addr: SocketAddr,
        source: native_tls::Error,
    },
    #[error(
        "cannot declare queue {queue}: {source} (if it exists with other arguments, e.g. \
         classic versus quorum, delete it or set rabbitmq.quorum to match)"
    )]
    Declare {
        queue: String,
        source: Box<amiquip::Error>,
    },
    #[error("cannot inspect queue {queue}: {source}")]
    Inspect {
        queue: String,
        source: Box<amiquip::Error>,
    },
    /// Any other call on a connection or channel; `what` says which.
    #[error("{what}: {source}")]
    Call {
        what: &'static str,
        source: Box<amiquip::Error>,
    },
    /// The connection ended without saying why (amiquip ends a stream with no message
    /// when a heartbeat is missed).
    #[error("connection to RabbitMQ lost")]
    Lost,
    #[error("the broker has not answered for {0}s")]
    Silent(u64),
}

/// "; what to do", for a TLS failure a user can fix.
fn tls_advice(source: &native_tls::Error) -> String {
    let rabbitmq = Dependency::RabbitMq;
    crate::tls::advice(&rabbitmq, rabbitmq.url_key(), &source.to_string())
        .map(|advice| format!("; {advice}"))
        .unwrap_or_default()
}

impl BrokerError {
    /// Wraps a failed call on a connection or channel.
    pub fn call(what: &'static str) -> impl FnOnce(amiquip::Error) -> Self {
        move |source| Self::Call {
            what,
            source: Box::new(source),
        }
    }

    /// Whether the broker answered and refused for good, rather than went away.
    pub fn is_refusal(&self) -> bool {
        let source = match self {
            Self::Declare { source, .. }
            | Self::Inspect { source, .. }
            | Self::Call { source, .. } => source,
            Self::Handshake { source, .. } => {
                return matches!(**source, amiquip::Error::InvalidCredentials)
            }
            _ => return false,
        };
        match **source {
            amiquip::Error::ServerClosedChannel { code, .. }
            | amiquip::Error::ServerClosedConnection { code, .. } => REFUSALS.contains(&code),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(code: u16) -> amiquip::Error {
        amiquip::Error::ServerClosedChannel {
            channel_id: 1,
            code,
            message: "PRECONDITION_FAILED - inequivalent arg".into(),
        }
    }

    #[test]
    fn a_queue_declared_otherwise_is_a_refusal() {
        let e = BrokerError::Declare {
            queue: "q".into(),
            source: Box::new(closed(406)),
        };
        assert!(e.is_refusal());
        assert!(e.to_string().contains("rabbitmq.quorum"), "{e}");
    }

    #[test]
    fn a_broker_shutting_down_or_gone_is_not_a_refusal() {
        let forced = BrokerError::Call {
            what: "cannot consume q",
            source: Box::new(amiquip::Error::ServerClosedConnection {
                code: 320,
                message: "CONNECTION_FORCED".into(),
            }),
        };
        assert!(!forced.is_refusal());
        assert!(!BrokerError::Lost.is_refusal());
        let socket = BrokerError::Call {
            what: "cannot declare",
            source: Box::new(amiquip::Error::UnexpectedSocketClose),
        };
        assert!(!socket.is_refusal());
    }
}
