//! The publisher thread: owns one AMQP connection and channel, publishes tasks for every
//! request of its `serve` process, and answers each request when the broker confirmed it.
//!
//! Handlers never touch amiquip. They hand a job to a bounded inbox and await a
//! `oneshot`; a full inbox or a broker that is down answers at once, a broker that does
//! not confirm in `rabbitmq.timeout` answers then. The thread drains every queued job
//! before it waits for confirms, so one confirm round trip serves many requests.
//! Every half second it also asks the broker how many workers consume the task queue.
//!
//! Liveness is judged only by what the broker answers on its own schedule: probe
//! replies and confirms (and amiquip's heartbeats, which end a connection whose broker
//! went silent). Never by the absence of traffic: an idle `serve` probes, the broker
//! answers, the link stays up. A link that goes unanswered for a whole heartbeat
//! interval is dropped and replaced by a fresh connection.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use amiquip::{
    AmqpProperties, Channel, Confirm, Connection, ConnectionBlockedNotification, Publish, Return,
};
use crossbeam_channel::{select, Receiver, RecvTimeoutError, Sender, TrySendError};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::connect::{AmqpTarget, Topology};
use super::error::BrokerError;
use crate::budget::{ByteBudget, Share};
use crate::config::{RabbitConfig, TlsConfig};
use crate::dependency::{Backoff, Dependency, OutageLog, Unavailable};
use crate::task::{TaskHeaders, TaskMessage};
use crate::telemetry::trace::TraceHeaders;

/// How often the consumer count is refreshed.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Most jobs published before the thread looks at confirms again.
const BATCH: usize = 1024;

type Reply = oneshot::Sender<Result<(), Unavailable>>;

struct Job {
    task_id: Uuid,
    body: Vec<u8>,
    trace: TraceHeaders,
    reply: Reply,
    /// The job's bytes, counted against `rabbitmq.publish_backlog_bytes` until the job
    /// is dropped (published, skipped or failed).
    _share: Share,
}

/// What the API reports about RabbitMQ.
#[derive(Debug, Clone)]
pub struct BrokerStatus {
    /// `Err(cause)` while the publisher has no working connection.
    pub link: Result<(), String>,
    /// Workers consuming the task queue, as last seen (None before the first look).
    pub consumers: Option<u32>,
    /// When the current connection was made; None while there is none.
    pub since: Option<SystemTime>,
    /// The node of the current connection, `host:port`; None while there is none.
    pub node: Option<String>,
}

/// The publisher's connection, as handlers see it.
#[derive(Debug, Clone)]
enum LinkState {
    /// The first connection attempt has not finished yet.
    Connecting,
    Up,
    /// The last attempt failed, for this reason; the thread retries with backoff.
    Down(String),
}

/// The link as handlers see it, kept by the thread: its state, the consumer count,
/// when the broker last answered.
struct Health {
    link: Mutex<LinkState>,
    /// -1 while unknown.
    consumers: AtomicI64,
    /// When the broker last answered (a probe reply or a confirm): a thread stuck on a
    /// broker that stopped reading cannot say so itself, so handlers judge it by this.
    last_answer: Mutex<Instant>,
    /// How long without an answer means the broker is gone.
    silence: Duration,
    /// When the current connection was made: a connection that stays up through idle
    /// periods keeps its time.
    connected_at: Mutex<Option<SystemTime>>,
    /// The node of the current connection, `host:port`.
    node: Mutex<Option<String>>,
}

impl Health {
    fn set(&self, link: LinkState) {
        match link {
            LinkState::Down(_) => self.consumers.store(-1, Ordering::Relaxed),
            // A fresh connection has just answered.
            LinkState::Up => self.answered(),
            LinkState::Connecting => {}
        }
        *self.link.lock().expect("lock") = link;
    }

    fn answered(&self) {
        *self.last_answer.lock().expect("lock") = Instant::now();
    }

    /// How long the broker has not answered, when that is longer than `silence`.
    fn silent_for(&self) -> Option<Duration> {
        let quiet = self.last_answer.lock().expect("lock").elapsed();
        (quiet > self.silence).then_some(quiet)
    }

    /// The link as handlers should see it: down also when the broker has not answered
    /// for longer than `silence` (the thread is then stuck in a call to it).
    fn link(&self) -> LinkState {
        let link = self.link.lock().expect("lock").clone();
        match (link, self.silent_for()) {
            (LinkState::Up, Some(quiet)) => {
                LinkState::Down(BrokerError::Silent(quiet.as_secs()).to_string())
            }
            (link, _) => link,
        }
    }
}

/// The handle requests use; cheap to clone. The thread ends when the last one is dropped.
#[derive(Clone)]
pub struct Publisher {
    inbox: Sender<Job>,
    backlog: ByteBudget,
    health: Arc<Health>,
    queue: String,
    nodes: Vec<String>,
    timeout: Duration,
}

impl Publisher {
    /// Starts the publisher thread; it connects in the background and keeps reconnecting.
    pub fn start(config: &RabbitConfig, tls: &TlsConfig) -> anyhow::Result<Self> {
        let target = AmqpTarget::new(config, tls)?;
        let nodes = (0..target.node_count())
            .map(|n| target.node_name(n))
            .collect();
        let topology = Topology::new(config);
        let (inbox, jobs) = crossbeam_channel::bounded(config.publish_backlog);
        let health = Arc::new(Health {
            link: Mutex::new(LinkState::Connecting),
            consumers: AtomicI64::new(-1),
            last_answer: Mutex::new(Instant::now()),
            silence: silence(config),
            connected_at: Mutex::new(None),
            node: Mutex::new(None),
        });
        let thread_health = health.clone();
        thread::Builder::new()
            .name("amqp-publisher".into())
            .spawn(move || run(target, topology, jobs, thread_health))?;
        Ok(Self {
            inbox,
            backlog: ByteBudget::new(config.publish_backlog_bytes),
            health,
            queue: config.queue.clone(),
            nodes,
            timeout: config.timeout,
        })
    }

    /// Fails at once while the broker is known to be down; a publish would too.
    pub fn check(&self) -> Result<(), Unavailable> {
        match self.health.link() {
            LinkState::Down(cause) => Err(Unavailable::new(Dependency::RabbitMq, cause)),
            LinkState::Connecting | LinkState::Up => Ok(()),
        }
    }

    /// Publishes a task and returns once RabbitMQ confirmed it is stored.
    pub async fn publish(&self, task: &TaskMessage) -> Result<(), Unavailable> {
        self.check()?;
        let body = task.to_bytes();
        let share = self.backlog.take(body.len()).ok_or_else(|| {
            Unavailable::new(
                Dependency::RabbitMq,
                format!(
                    "{} bytes of tasks already wait to be published \
                     (rabbitmq.publish_backlog_bytes); the broker is slower than the load",
                    self.backlog.held()
                ),
            )
        })?;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            task_id: task.task_id,
            body,
            trace: task.trace.clone(),
            reply,
            _share: share,
        };
        self.inbox.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => Unavailable::new(
                Dependency::RabbitMq,
                format!(
                    "{} tasks already wait to be published (rabbitmq.publish_backlog); \
                     the broker is slower than the load",
                    self.inbox.capacity().unwrap_or_default()
                ),
            ),
            TrySendError::Disconnected(_) => {
                Unavailable::new(Dependency::RabbitMq, "the publisher has stopped")
            }
        })?;
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Unavailable::new(
                Dependency::RabbitMq,
                "the publisher dropped the task",
            )),
            Err(_) => Err(Unavailable::new(
                Dependency::RabbitMq,
                format!(
                    "the broker did not confirm the task within {:?}",
                    self.timeout
                ),
            )),
        }
    }

    /// Connection state and consumer count, without waiting on the broker.
    pub fn status(&self) -> BrokerStatus {
        let link = match self.health.link() {
            LinkState::Up => Ok(()),
            LinkState::Connecting => Err("connecting".to_owned()),
            LinkState::Down(cause) => Err(cause),
        };
        let consumers = u32::try_from(self.health.consumers.load(Ordering::Relaxed)).ok();
        let since = *self.health.connected_at.lock().expect("lock");
        let node = self.health.node.lock().expect("lock").clone();
        BrokerStatus {
            link,
            consumers,
            since,
            node,
        }
    }

    /// Every broker node, `host:port`, in the order of `rabbitmq.url`.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The task queue's name.
    pub fn queue(&self) -> &str {
        &self.queue
    }
}

/// How long without an answer (probe reply or confirm) means the broker is gone: one
/// heartbeat interval. Shorter would call a busy broker on a loaded host down; a
/// silent broker still fails each publish within `rabbitmq.timeout` meanwhile.
fn silence(config: &RabbitConfig) -> Duration {
    config.heartbeat.max(PROBE_EVERY * 2 + config.timeout)
}

fn run(target: AmqpTarget, topology: Topology, jobs: Receiver<Job>, health: Arc<Health>) {
    let mut backoff = Backoff::new();
    let mut outages = OutageLog::new("publisher");
    // Where to connect first: a node of its own, so a fleet of serves spreads over the
    // cluster; after a loss, the next node, so the publisher moves off a node that
    // stopped rather than wait for it.
    let mut node = target.random_start();
    loop {
        let cause = match Link::open(&target, &topology, node) {
            Ok((mut link, at)) => {
                node = at;
                let name = target.node_name(at);
                tracing::info!(node = %name, queue = %topology.queue, "publisher connected");
                outages.recovered(Dependency::RabbitMq);
                *health.connected_at.lock().expect("lock") = Some(SystemTime::now());
                *health.node.lock().expect("lock") = Some(name);
                health.set(LinkState::Up);
                backoff.reset();
                match link.serve(&jobs, &health) {
                    Ok(()) => {
                        link.close();
                        return;
                    }
                    Err(e) => {
                        let cause = e.to_string();
                        link.fail_all(&cause);
                        cause
                    }
                }
            }
            Err(e) => e.to_string(),
        };
        outages.failed(Dependency::RabbitMq, &cause);
        node += 1;
        *health.connected_at.lock().expect("lock") = None;
        *health.node.lock().expect("lock") = None;
        health.set(LinkState::Down(cause.clone()));
        // Answer jobs that arrive while we wait, rather than let them time out.
        let until = Instant::now() + backoff.next_delay();
        loop {
            match jobs.recv_deadline(until) {
                Ok(job) => {
                    let _ = job
                        .reply
                        .send(Err(Unavailable::new(Dependency::RabbitMq, &cause)));
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// One live connection with confirms enabled.
struct Link {
    // Field order matters: the channel closes before its connection.
    channel: Channel,
    connection: Option<Connection>,
    confirms: Receiver<Confirm>,
    returns: Receiver<Return>,
    blocked: Receiver<ConnectionBlockedNotification>,
    queue: String,
    next_tag: u64,
    pending: BTreeMap<u64, (Uuid, Reply)>,
    returned: HashSet<Uuid>,
}

impl Link {
    /// Opens a link on the first node that takes it, from node `first` on; returns it
    /// and its node.
    fn open(
        target: &AmqpTarget,
        topology: &Topology,
        first: usize,
    ) -> Result<(Self, usize), BrokerError> {
        let (mut connection, node) = target.open_from(first)?;
        let blocked = connection
            .listen_for_connection_blocked()
            .map_err(BrokerError::call("cannot watch for flow control"))?;
        let channel = connection
            .open_channel(None)
            .map_err(BrokerError::call("cannot open a channel"))?;
        topology.declare(&channel)?;
        let confirms = channel
            .listen_for_publisher_confirms()
            .map_err(BrokerError::call("cannot listen for confirms"))?;
        let returns = channel
            .listen_for_returns()
            .map_err(BrokerError::call("cannot listen for returns"))?;
        channel
            .enable_publisher_confirms()
            .map_err(BrokerError::call("cannot enable publisher confirms"))?;
        let link = Self {
            channel,
            connection: Some(connection),
            confirms,
            returns,
            blocked,
            queue: topology.queue.clone(),
            next_tag: 1,
            pending: BTreeMap::new(),
            returned: HashSet::new(),
        };
        Ok((link, node))
    }

    /// Publishes jobs and settles confirms until the inbox closes (Ok) or the link fails.
    fn serve(&mut self, jobs: &Receiver<Job>, health: &Health) -> Result<(), BrokerError> {
        let probe = crossbeam_channel::tick(PROBE_EVERY);
        self.probe(health)?;
        loop {
            select! {
                recv(jobs) -> job => {
                    let Ok(job) = job else { return Ok(()) };
                    self.publish(job)?;
                    for job in jobs.try_iter().take(BATCH) {
                        self.publish(job)?;
                    }
                }
                recv(self.confirms) -> confirm => {
                    let confirm = confirm.map_err(|_| BrokerError::Lost)?;
                    self.settle(confirm);
                    // Under load a probe can wait behind thousands of publishes; a
                    // confirm shows the broker answers just as well.
                    health.answered();
                }
                recv(probe) -> _ => {
                    // Unreachable while probes are answered; a safety net should a
                    // call ever return without the broker having answered for long.
                    if let Some(quiet) = health.silent_for() {
                        return Err(BrokerError::Silent(quiet.as_secs()));
                    }
                    self.probe(health)?;
                }
                recv(self.blocked) -> note => match note {
                    // A resource alarm: publishes would hang until it clears.
                    Ok(ConnectionBlockedNotification::Blocked(reason)) => {
                        tracing::warn!(%reason, "RabbitMQ blocks publishing");
                        health.set(LinkState::Down(format!("the broker blocks publishing: {reason}")));
                    }
                    Ok(ConnectionBlockedNotification::Unblocked) => {
                        tracing::info!("RabbitMQ accepts publishing again");
                        health.set(LinkState::Up);
                    }
                    Err(_) => return Err(BrokerError::Lost),
                },
            }
        }
    }

    fn publish(&mut self, job: Job) -> Result<(), BrokerError> {
        if job.reply.is_closed() {
            // The request gave up (timed out); publishing now would only waste work.
            return Ok(());
        }
        let now = SystemTime::now();
        let headers = TaskHeaders {
            trace: job.trace,
            published_at: Some(now),
        };
        let properties = AmqpProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(job.task_id.to_string())
            .with_timestamp(now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs())
            .with_headers(headers.to_amqp());
        let publish = Publish {
            body: &job.body,
            routing_key: self.queue.clone(),
            mandatory: true,
            immediate: false,
            properties,
        };
        match self.channel.basic_publish("", publish) {
            Ok(()) => {
                self.pending.insert(self.next_tag, (job.task_id, job.reply));
                self.next_tag += 1;
                Ok(())
            }
            Err(e) => {
                let e = BrokerError::call("publish failed")(e);
                let _ = job
                    .reply
                    .send(Err(Unavailable::new(Dependency::RabbitMq, &e)));
                Err(e)
            }
        }
    }

    fn settle(&mut self, confirm: Confirm) {
        // The broker sends basic.return before the ack of the same message.
        for ret in self.returns.try_iter() {
            if let Some(id) = ret
                .properties
                .message_id()
                .as_deref()
                .and_then(|s| s.parse().ok())
            {
                self.returned.insert(id);
            }
        }
        let (payload, acked) = match confirm {
            Confirm::Ack(p) => (p, true),
            Confirm::Nack(p) => (p, false),
        };
        let settled: Vec<u64> = if payload.multiple {
            self.pending
                .range(..=payload.delivery_tag)
                .map(|(tag, _)| *tag)
                .collect()
        } else {
            vec![payload.delivery_tag]
        };
        for tag in settled {
            let Some((task_id, reply)) = self.pending.remove(&tag) else {
                continue;
            };
            let result = if self.returned.remove(&task_id) {
                Err(Unavailable::new(
                    Dependency::RabbitMq,
                    format!(
                        "queue {} does not exist; the task was not routed",
                        self.queue
                    ),
                ))
            } else if acked {
                Ok(())
            } else {
                Err(Unavailable::new(
                    Dependency::RabbitMq,
                    "the broker refused the task (nack)",
                ))
            };
            let _ = reply.send(result);
        }
    }

    fn probe(&self, health: &Health) -> Result<(), BrokerError> {
        let queue = self
            .channel
            .queue_declare_passive(self.queue.clone())
            .map_err(|source| BrokerError::Inspect {
                queue: self.queue.clone(),
                source: Box::new(source),
            })?;
        let consumers = queue.declared_consumer_count().unwrap_or(0);
        health
            .consumers
            .store(i64::from(consumers), Ordering::Relaxed);
        // The reply is an answer: an idle link stays up on probes alone.
        health.answered();
        Ok(())
    }

    fn fail_all(&mut self, cause: &str) {
        for (_, (_, reply)) in std::mem::take(&mut self.pending) {
            let _ = reply.send(Err(Unavailable::new(Dependency::RabbitMq, cause)));
        }
    }

    fn close(mut self) {
        if let Some(connection) = self.connection.take() {
            let _ = connection.close();
        }
    }
}
