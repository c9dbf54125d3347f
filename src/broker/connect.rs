//! Opening AMQP connections and declaring the queues, shared by the publisher and the
//! workers so both see the same topology. `amqps://` connects with TLS (see
//! [`crate::tls`]) over the same socket, opened here with TCP_NODELAY either way.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use amiquip::{
    AmqpValue, Auth, Channel, Connection, ConnectionOptions, ConnectionTuning, FieldTable, Queue,
    QueueDeclareOptions,
};
use anyhow::{bail, Context};

use super::error::BrokerError;
use crate::config::{RabbitConfig, TlsConfig};
use crate::tls::Trust;

/// Where and how to connect, parsed once from `rabbitmq.url`: one node, or the nodes of
/// a cluster, any of which serves the queues.
#[derive(Clone, Debug)]
pub struct AmqpTarget {
    nodes: Vec<Node>,
    timeout: Duration,
    heartbeat: u16,
}

/// One broker node.
#[derive(Clone)]
struct Node {
    /// Set for `amqps://`.
    tls: Option<native_tls::TlsConnector>,
    host: String,
    port: u16,
    username: String,
    password: String,
    vhost: String,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        let scheme = if self.tls.is_some() { "amqps" } else { "amqp" };
        write!(
            f,
            "{scheme}://{}@{}:{}/{}",
            self.username, self.host, self.port, self.vhost
        )
    }
}

impl AmqpTarget {
    /// Parses each `amqp://user:pass@host:port/vhost` URL of `rabbitmq.url` as
    /// RabbitMQ's URI spec reads it; an `amqps://` one connects with TLS, trusting `tls`.
    pub fn new(config: &RabbitConfig, tls: &TlsConfig) -> anyhow::Result<Self> {
        let nodes = config
            .url
            .urls()
            .iter()
            .map(|url| Node::parse(url, tls))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            nodes,
            timeout: config.timeout,
            heartbeat: config.heartbeat.as_secs().min(u16::MAX as u64) as u16,
        })
    }

    /// How many nodes there are to connect to.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Node `n`'s address, `host:port`, as logs, `/readyz` and metrics name it.
    pub fn node_name(&self, n: usize) -> String {
        let node = &self.nodes[n % self.nodes.len()];
        match node.host.contains(':') {
            true => format!("[{}]:{}", node.host, node.port),
            false => format!("{}:{}", node.host, node.port),
        }
    }

    /// A node to start from, different in each process, so that a fleet of processes
    /// spreads its connections over the cluster.
    pub fn random_start(&self) -> usize {
        fastrand::usize(..self.nodes.len())
    }

    /// Opens a connection to the first node that takes one, trying them in turn from
    /// node `first`; returns it and the node's index. Blocks for at most about
    /// `rabbitmq.timeout` per address tried.
    pub fn open_from(&self, first: usize) -> Result<(Connection, usize), BrokerError> {
        let count = self.nodes.len();
        let mut last = None;
        for n in (first..first + count).map(|n| n % count) {
            match self.nodes[n].open(self.timeout, self.heartbeat) {
                Ok(connection) => return Ok((connection, n)),
                Err(e) => {
                    if count > 1 {
                        tracing::debug!(node = %self.node_name(n), error = %e, "cannot connect; trying the next node");
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.expect("rabbitmq.url names a node at least"))
    }

    /// Opens a connection to the first node that takes one, in the order of
    /// `rabbitmq.url`.
    pub fn open(&self) -> Result<Connection, BrokerError> {
        self.open_from(0).map(|(connection, _)| connection)
    }
}

impl Node {
    fn parse(url: &str, tls: &TlsConfig) -> anyhow::Result<Self> {
        let url = url::Url::parse(url).context("rabbitmq.url is not a URL")?;
        let (tls, default_port) = match url.scheme() {
            "amqp" => (None, 5672),
            "amqps" => (Some(Trust::load(tls)?.connector()?), 5671),
            _ => bail!("rabbitmq.url: only amqp:// and amqps:// URLs are supported"),
        };
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
            tls,
            // `host_str` keeps the brackets of an IPv6 literal, which resolving refuses.
            host: match url.host() {
                Some(url::Host::Ipv6(ip)) => ip.to_string(),
                Some(host) => host.to_string(),
                None => "localhost".to_owned(),
            },
            port: url.port().unwrap_or(default_port),
            username,
            password,
            vhost,
        })
    }

    /// Opens a connection to this node, trying each address its name resolves to.
    fn open(&self, timeout: Duration, heartbeat: u16) -> Result<Connection, BrokerError> {
        let (host, port) = (self.host.clone(), self.port);
        let addrs =
            (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|source| BrokerError::Resolve {
                    host: host.clone(),
                    port,
                    source,
                })?;
        let mut last = BrokerError::NoAddress { host, port };
        for addr in addrs {
            match self.open_at(addr, timeout, heartbeat) {
                Ok(connection) => return Ok(connection),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn open_at(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        heartbeat: u16,
    ) -> Result<Connection, BrokerError> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|source| BrokerError::Connect { addr, source })?;
        // amiquip leaves Nagle on, which adds ~40 ms to every publish-and-confirm.
        stream
            .set_nodelay(true)
            .map_err(|source| BrokerError::Socket { addr, source })?;
        let stream = mio::net::TcpStream::from_stream(stream)
            .map_err(|source| BrokerError::Socket { addr, source })?;
        let options = ConnectionOptions::<Auth>::default()
            .auth(Auth::Plain {
                username: self.username.clone(),
                password: self.password.clone(),
            })
            .virtual_host(self.vhost.clone())
            .heartbeat(heartbeat)
            .connection_timeout(Some(timeout))
            .information(Some(format!("sumsvc {}", env!("CARGO_PKG_VERSION"))));
        let tuning = ConnectionTuning::default();
        let opened = match &self.tls {
            Some(tls) => {
                Connection::open_tls_stream(tls.clone(), &self.host, stream, options, tuning)
            }
            None => Connection::insecure_open_stream(stream, options, tuning),
        };
        opened.map_err(|source| match source {
            amiquip::Error::TlsHandshake { source } => BrokerError::Tls { addr, source },
            source => BrokerError::Handshake {
                addr,
                source: Box::new(source),
            },
        })
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
    pub fn declare<'a>(&self, channel: &'a Channel) -> Result<Queue<'a>, BrokerError> {
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
        let declare_error = |queue: &str| {
            let queue = queue.to_owned();
            move |source| BrokerError::Declare {
                queue,
                source: Box::new(source),
            }
        };
        channel
            .queue_declare(self.dead_letter_queue.clone(), durable(dead_args))
            .map_err(declare_error(&self.dead_letter_queue))?;
        channel
            .queue_declare(self.queue.clone(), durable(task_args))
            .map_err(declare_error(&self.queue))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(urls: &str) -> AmqpTarget {
        AmqpTarget::new(
            &RabbitConfig {
                url: urls.parse().unwrap(),
                ..RabbitConfig::default()
            },
            &TlsConfig::default(),
        )
        .unwrap()
    }

    fn target(url: &str) -> Node {
        targets(url).nodes.remove(0)
    }

    #[test]
    fn a_cluster_is_its_nodes_in_turn_from_any_start() {
        let t = targets("amqp://a:1@h1/v,amqp://b:2@h2:5673/w,amqps://h3/");
        assert_eq!(t.node_count(), 3);
        assert_eq!(
            (0..4).map(|n| t.node_name(n)).collect::<Vec<_>>(),
            ["h1:5672", "h2:5673", "h3:5671", "h1:5672"]
        );
        assert_eq!(t.nodes[1].username, "b");
        assert!(t.nodes[2].tls.is_some());
        let debug = format!("{t:?}");
        assert!(!debug.contains(":1@") && !debug.contains(":2@"), "{debug}");
        assert!((0..100).all(|_| t.random_start() < 3));
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
    fn amqps_means_tls_on_port_5671_unless_the_url_says_otherwise() {
        let t = target("amqps://broker/v");
        assert!(t.tls.is_some());
        assert_eq!(t.port, 5671);
        assert_eq!(target("amqps://broker:6000/v").port, 6000);
        assert!(target("amqp://broker/v").tls.is_none());
        assert!(format!("{t:?}").starts_with("amqps://"), "{t:?}");
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
