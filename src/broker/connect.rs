//! Opening AMQP connections and declaring the queues, shared by the publisher and the
//! workers so both see the same topology.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use amiquip::{
    AmqpValue, Auth, Channel, Connection, ConnectionOptions, ConnectionTuning, FieldTable, Queue,
    QueueDeclareOptions,
};
use anyhow::{bail, Context};

use crate::config::RabbitConfig;

/// Where and how to connect, parsed once from `rabbitmq.url`.
#[derive(Clone)]
pub struct AmqpTarget {
    host: String,
    port: u16,
    username: String,
    password: String,
    vhost: String,
    timeout: Duration,
    heartbeat: u16,
}

impl std::fmt::Debug for AmqpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        write!(
            f,
            "amqp://{}@{}:{}/{}",
            self.username, self.host, self.port, self.vhost
        )
    }
}

impl AmqpTarget {
    /// Parses an `amqp://user:pass@host:port/vhost` URL as RabbitMQ's URI spec reads it.
    pub fn new(config: &RabbitConfig) -> anyhow::Result<Self> {
        let url = url::Url::parse(&config.url).context("rabbitmq.url is not a URL")?;
        if url.scheme() != "amqp" {
            bail!("rabbitmq.url: only amqp:// URLs are supported");
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .context("rabbitmq.url: bad percent-encoding")
        };
        let vhost = match url.path().strip_prefix('/').unwrap_or("") {
            "" => "/".to_owned(),
            path => decode(path)?,
        };
        let username = match url.username() {
            "" => "guest".to_owned(),
            u => decode(u)?,
        };
        let password = match url.password() {
            None => "guest".to_owned(),
            Some(p) => decode(p)?,
        };
        Ok(Self {
            // `host_str` keeps the brackets of an IPv6 literal, which resolving refuses.
            host: match url.host() {
                Some(url::Host::Ipv6(ip)) => ip.to_string(),
                Some(host) => host.to_string(),
                None => "localhost".to_owned(),
            },
            port: url.port().unwrap_or(5672),
            username,
            password,
            vhost,
            timeout: config.timeout,
            heartbeat: config.heartbeat.as_secs().min(u16::MAX as u64) as u16,
        })
    }

    /// Opens a connection; blocks for at most about `rabbitmq.timeout` per address.
    pub fn open(&self) -> Result<Connection, String> {
        let addrs = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}:{}: {e}", self.host, self.port))?;
        let mut last = format!("{}:{} resolves to no address", self.host, self.port);
        for addr in addrs {
            let stream = match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(s) => s,
                Err(e) => {
                    last = format!("cannot connect to {addr}: {e}");
                    continue;
                }
            };
            // amiquip leaves Nagle on, which adds ~40 ms to every publish-and-confirm.
            if let Err(e) = stream.set_nodelay(true) {
                last = format!("cannot set TCP_NODELAY on {addr}: {e}");
                continue;
            }
            let stream = match mio::net::TcpStream::from_stream(stream) {
                Ok(s) => s,
                Err(e) => {
                    last = format!("cannot register socket for {addr}: {e}");
                    continue;
                }
            };
            let options = ConnectionOptions::<Auth>::default()
                .auth(Auth::Plain {
                    username: self.username.clone(),
                    password: self.password.clone(),
                })
                .virtual_host(self.vhost.clone())
                .heartbeat(self.heartbeat)
                .connection_timeout(Some(self.timeout))
                .information(Some(format!("sumsvc {}", env!("CARGO_PKG_VERSION"))));
            match Connection::insecure_open_stream(stream, options, ConnectionTuning::default()) {
                Ok(conn) => return Ok(conn),
                Err(e) => last = format!("AMQP handshake with {addr} failed: {e}"),
            }
        }
        Err(last)
    }
}

/// The task queue and its dead-letter queue.
#[derive(Debug, Clone)]
pub struct Topology {
    pub queue: String,
    pub dead_letter_queue: String,
    pub quorum: bool,
}

impl Topology {
    pub fn new(config: &RabbitConfig) -> Self {
        Self {
            queue: config.queue.clone(),
            dead_letter_queue: format!("{}.dead", config.queue),
            quorum: config.quorum,
        }
    }

    /// Declares both queues (idempotent) and returns the task queue.
    pub fn declare<'a>(&self, channel: &'a Channel) -> Result<Queue<'a>, String> {
        let durable = |arguments: FieldTable| QueueDeclareOptions {
            durable: true,
            arguments,
            ..QueueDeclareOptions::default()
        };
        let mut dead_args = FieldTable::new();
        let mut task_args = FieldTable::new();
        if self.quorum {
            let quorum = AmqpValue::LongString("quorum".into());
            dead_args.insert("x-queue-type".into(), quorum.clone());
            task_args.insert("x-queue-type".into(), quorum);
        }
        task_args.insert(
            "x-dead-letter-exchange".into(),
            AmqpValue::LongString(String::new()),
        );
        task_args.insert(
            "x-dead-letter-routing-key".into(),
            AmqpValue::LongString(self.dead_letter_queue.clone()),
        );
        channel
            .queue_declare(self.dead_letter_queue.clone(), durable(dead_args))
            .map_err(|e| self.declare_error(&self.dead_letter_queue, e))?;
        channel
            .queue_declare(self.queue.clone(), durable(task_args))
            .map_err(|e| self.declare_error(&self.queue, e))
    }

    fn declare_error(&self, queue: &str, e: amiquip::Error) -> String {
        format!(
            "cannot declare queue {queue}: {e} (if it exists with other arguments, e.g. \
             classic versus quorum, delete it or set rabbitmq.quorum to match)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> AmqpTarget {
        AmqpTarget::new(&RabbitConfig {
            url: url.into(),
            ..RabbitConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn the_default_url_means_guest_on_the_root_vhost() {
        let t = target("amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(
            (t.host.as_str(), t.port, t.vhost.as_str()),
            ("127.0.0.1", 5672, "/")
        );
        assert_eq!(
            (t.username.as_str(), t.password.as_str()),
            ("guest", "guest")
        );
    }

    #[test]
    fn a_bare_url_takes_rabbitmq_defaults() {
        let t = target("amqp://broker");
        assert_eq!(
            (t.host.as_str(), t.port, t.vhost.as_str()),
            ("broker", 5672, "/")
        );
    }

    #[test]
    fn an_ipv6_literal_host_loses_its_brackets() {
        assert_eq!(target("amqp://[::1]:5673/").host, "::1");
    }

    #[test]
    fn debug_output_hides_the_password() {
        let t = target("amqp://u:secret@h/v");
        assert!(!format!("{t:?}").contains("secret"));
    }
}
