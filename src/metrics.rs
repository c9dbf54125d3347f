//! Prometheus metrics: what each role counts, and the text its `/metrics` answers with.
//!
//! Each role keeps its metrics in a registry of its own ([`ServeMetrics`],
//! [`WorkMetrics`]), not in a global one: `dev` runs both roles in one process and tests
//! run many side by side, and each `/metrics` must tell only its own. Recording is a
//! label lookup and an atomic add, or a short lock for a histogram, per event. Most
//! values that are states rather than events (waiting requests, consumers,
//! dependencies) are read when scraped; `sumsvc_tasks_held` is kept by the consumers'
//! deltas.
//!
//! The names are part of the contract: dashboards and alerts use them.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::dependency::Dependency;
use crate::task::Status;

/// The `Content-Type` of `/metrics`: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabels {
    dependency: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// How a task was submitted: the label `kind` of `sumsvc_tasks_published_total`.
#[derive(Debug, Clone, Copy)]
pub enum TaskKind {
    Sync,
    Async,
}

/// What `serve` reads when scraped.
pub struct ServeState {
    /// Sync requests waiting for their result.
    pub sync_waiters: usize,
    /// Consumers of the task queue, as the broker last said; None while unknown.
    pub queue_consumers: Option<u32>,
    /// Whether each dependency answers, as `/readyz` judges it.
    pub dependencies: [(Dependency, bool); 3],
    /// Every broker node (`host:port`), and the one the publisher is connected to.
    pub broker_nodes: Vec<String>,
    pub publisher_node: Option<String>,
}

/// The metrics of `serve`.
pub struct ServeMetrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    published: [Counter; 2],
    publish_confirm: Histogram,
    sync_waiters: Gauge,
    dependency_up: Family<DependencyLabels, Gauge>,
    queue_consumers: Gauge<f64, AtomicU64>,
    broker_connections: Family<NodeLabels, Gauge>,
}

/// `sumsvc_broker_connections`, registered alike by both roles.
fn broker_connections(registry: &mut Registry) -> Family<NodeLabels, Gauge> {
    let family = Family::default();
    registry.register(
        "sumsvc_broker_connections",
        "AMQP connections this process holds, by broker node (host:port): serve's publisher, \
         work's consumers",
        family.clone(),
    );
    family
}

impl ServeMetrics {
    /// The metrics of a serve whose session store counts its orphans in
    /// `session_orphans`.
    pub fn new(session_orphans: Counter) -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::default();
        registry.register(
            "sumsvc_http_requests",
            "HTTP requests answered, by route template (`other` for unknown paths), method and status",
            http_requests.clone(),
        );
        let http_duration: Family<_, _, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 17)));
        registry.register_with_unit(
            "sumsvc_http_request_duration",
            "Time from a request's arrival to its answer, by route template",
            Unit::Seconds,
            http_duration.clone(),
        );
        let published_by_kind = Family::<KindLabels, Counter>::default();
        registry.register(
            "sumsvc_tasks_published",
            "Tasks the broker confirmed, by kind (sync or async)",
            published_by_kind.clone(),
        );
        let published = ["sync", "async"]
            .map(|kind| published_by_kind.get_or_create_owned(&KindLabels { kind }));
        let publish_confirm = Histogram::new(exponential_buckets(0.0001, 2.0, 15));
        registry.register_with_unit(
            "sumsvc_publish_confirm",
            "Time from handing a task to the publisher to the broker's confirm",
            Unit::Seconds,
            publish_confirm.clone(),
        );
        let sync_waiters = Gauge::default();
        registry.register(
            "sumsvc_sync_waiters",
            "Sync requests waiting for their result",
            sync_waiters.clone(),
        );
        let dependency_up = Family::default();
        registry.register(
            "sumsvc_dependency_up",
            "1 when the dependency answers, as /readyz judges it; 0 when it does not",
            dependency_up.clone(),
        );
        let queue_consumers = Gauge::default();
        registry.register(
            "sumsvc_queue_consumers",
            "Consumers of the task queue, as RabbitMQ last said (NaN while unknown)",
            queue_consumers.clone(),
        );
        let broker_connections = broker_connections(&mut registry);
        registry.register(
            "sumsvc_session_orphans",
            "Sessions not kept because the request that asked for one gave up first (not \
             inserted, or deleted after the insert), or failed with some of its rows in",
            session_orphans,
        );
        Self {
            registry,
            http_requests,
            http_duration,
            published,
            publish_confirm,
            sync_waiters,
            dependency_up,
            queue_consumers,
            broker_connections,
        }
    }

    /// One request answered.
    pub fn request(&self, route: &'static str, method: &'static str, status: u16, took: Duration) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route,
                method,
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels { route })
            .observe(took.as_secs_f64());
    }

    /// One task confirmed by the broker, `confirm` after it was handed to the publisher.
    pub fn published(&self, kind: TaskKind, confirm: Duration) {
        let at = match kind {
            TaskKind::Sync => 0,
            TaskKind::Async => 1,
        };
        self.published[at].inc();
        self.publish_confirm.observe(confirm.as_secs_f64());
    }

    /// The text of `/metrics`, with the states read at this scrape.
    pub fn encode(&self, state: ServeState) -> String {
        self.sync_waiters
            .set(i64::try_from(state.sync_waiters).unwrap_or(i64::MAX));
        self.queue_consumers
            .set(state.queue_consumers.map_or(f64::NAN, f64::from));
        for (dependency, up) in state.dependencies {
            self.dependency_up
                .get_or_create(&DependencyLabels {
                    dependency: dependency_label(dependency),
                })
                .set(i64::from(up));
        }
        for node in state.broker_nodes {
            let connected = state.publisher_node.as_ref() == Some(&node);
            self.broker_connections
                .get_or_create(&NodeLabels { node })
                .set(i64::from(connected));
        }
        encode(&self.registry)
    }
}

/// The metrics of `work`.
pub struct WorkMetrics {
    registry: Registry,
    /// Done, failed, dead-lettered.
    processed: [Counter; 4],
    queue_wait: Histogram,
    compute: Histogram,
    write_retries: Counter,
    held: Gauge,
    broker_connections: Family<NodeLabels, Gauge>,
}

/// One connection counted in `sumsvc_broker_connections` until dropped.
pub struct BrokerConnection(Gauge);

impl Drop for BrokerConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What became of a message: the label `outcome` of `sumsvc_tasks_processed_total`.
#[derive(Debug, Clone, Copy)]
pub enum Processed {
    Stored(Status),
    /// Its task was cancelled: the outcome was not stored.
    Cancelled,
    DeadLettered,
}

impl WorkMetrics {
    /// The metrics of a worker pool connecting to the broker `nodes` (`host:port`).
    pub fn new(nodes: &[String]) -> Self {
        let mut registry = Registry::default();
        let processed_by_outcome = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "sumsvc_tasks_processed",
            "Messages settled: done or failed (the outcome is stored and acked), cancelled (the task \
             was cancelled: acked, its outcome not stored), or dead_lettered",
            processed_by_outcome.clone(),
        );
        let processed = ["done", "failed", "cancelled", "dead_lettered"]
            .map(|outcome| processed_by_outcome.get_or_create_owned(&OutcomeLabels { outcome }));
        let queue_wait = Histogram::new(exponential_buckets(0.0005, 2.0, 18));
        registry.register_with_unit(
            "sumsvc_task_queue_wait",
            "Time from a task's publish to the start of its computation (messages that carry \
             their publish time; hosts' clocks must agree)",
            Unit::Seconds,
            queue_wait.clone(),
        );
        let compute = Histogram::new(exponential_buckets(0.00001, 4.0, 10));
        registry.register_with_unit(
            "sumsvc_task_compute",
            "Time to read a message and compute its sum",
            Unit::Seconds,
            compute.clone(),
        );
        let write_retries = Counter::default();
        registry.register(
            "sumsvc_redis_write_retries",
            "Results written again after Redis did not take them",
            write_retries.clone(),
        );
        let held = Gauge::default();
        registry.register(
            "sumsvc_tasks_held",
            "Tasks computed whose result Redis has not taken yet, held unacked",
            held.clone(),
        );
        let broker_connections = broker_connections(&mut registry);
        for node in nodes {
            let _ = broker_connections.get_or_create(&NodeLabels { node: node.clone() });
        }
        Self {
            registry,
            processed,
            queue_wait,
            compute,
            write_retries,
            held,
            broker_connections,
        }
    }

    /// A consumer connected to broker `node`, until the guard is dropped.
    pub fn broker_connection(&self, node: &str) -> BrokerConnection {
        let gauge = self.broker_connections.get_or_create_owned(&NodeLabels {
            node: node.to_owned(),
        });
        gauge.inc();
        BrokerConnection(gauge)
    }

    pub fn processed(&self, what: Processed) {
        let at = match what {
            Processed::Stored(Status::Done) => 0,
            Processed::Stored(Status::Failed) => 1,
            Processed::Cancelled => 2,
            Processed::DeadLettered => 3,
        };
        self.processed[at].inc();
    }

    pub fn queue_wait(&self, waited: Duration) {
        self.queue_wait.observe(waited.as_secs_f64());
    }

    pub fn computed(&self, took: Duration) {
        self.compute.observe(took.as_secs_f64());
    }

    /// `count` results are written again.
    pub fn write_retries(&self, count: usize) {
        self.write_retries.inc_by(count as u64);
    }

    /// `count` more results wait for Redis (fewer, when negative).
    pub fn held(&self, count: i64) {
        self.held.inc_by(count);
    }

    /// The text of `/metrics`.
    pub fn encode(&self) -> String {
        encode(&self.registry)
    }
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_text::encode(&mut text, registry).expect("writing to a String cannot fail");
    text
}

/// The value of the label `dependency`: stable, lower case.
fn dependency_label(dependency: Dependency) -> &'static str {
    match dependency {
        Dependency::Postgres => "postgres",
        Dependency::RabbitMq => "rabbitmq",
        Dependency::Redis => "redis",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of one sample line, `name{labels} value`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    }

    #[test]
    fn serve_metrics_are_named_as_the_contract_says() {
        let m = ServeMetrics::new(Counter::default());
        m.request("/sync/sum", "POST", 200, Duration::from_millis(3));
        m.request("/sync/sum", "POST", 200, Duration::from_millis(5));
        m.published(TaskKind::Async, Duration::from_millis(1));
        let text = m.encode(ServeState {
            sync_waiters: 7,
            queue_consumers: None,
            dependencies: [
                (Dependency::Postgres, true),
                (Dependency::RabbitMq, false),
                (Dependency::Redis, true),
            ],
            broker_nodes: vec!["mq1:5672".into(), "mq2:5672".into()],
            publisher_node: Some("mq2:5672".into()),
        });
        let at = |series| sample(&text, series);
        assert_eq!(
            at(r#"sumsvc_http_requests_total{route="/sync/sum",method="POST",status="200"}"#),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            at(r#"sumsvc_http_request_duration_seconds_count{route="/sync/sum"}"#),
            Some(2.0)
        );
        assert_eq!(
            at(r#"sumsvc_tasks_published_total{kind="async"}"#),
            Some(1.0)
        );
        assert_eq!(
            at(r#"sumsvc_tasks_published_total{kind="sync"}"#),
            Some(0.0)
        );
        assert_eq!(at("sumsvc_publish_confirm_seconds_count"), Some(1.0));
        assert_eq!(at("sumsvc_sync_waiters"), Some(7.0));
        assert!(at("sumsvc_queue_consumers").unwrap().is_nan());
        assert_eq!(
            at(r#"sumsvc_dependency_up{dependency="rabbitmq"}"#),
            Some(0.0)
        );
        assert_eq!(at(r#"sumsvc_dependency_up{dependency="redis"}"#), Some(1.0));
        assert_eq!(
            at(r#"sumsvc_broker_connections{node="mq1:5672"}"#),
            Some(0.0)
        );
        assert_eq!(
            at(r#"sumsvc_broker_connections{node="mq2:5672"}"#),
            Some(1.0)
        );
        assert!(text.contains("# TYPE sumsvc_http_request_duration_seconds histogram"));
    }

    #[test]
    fn work_metrics_are_named_as_the_contract_says() {
        let m = WorkMetrics::new(&["mq1:5672".into(), "mq2:5672".into()]);
        let connected = [
            m.broker_connection("mq2:5672"),
            m.broker_connection("mq2:5672"),
        ];
        m.processed(Processed::Stored(Status::Done));
        m.processed(Processed::DeadLettered);
        m.queue_wait(Duration::from_millis(20));
        m.computed(Duration::from_micros(30));
        m.write_retries(3);
        m.held(4);
        m.held(-1);
        let text = m.encode();
        let at = |series| sample(&text, series);
        assert_eq!(
            at(r#"sumsvc_tasks_processed_total{outcome="done"}"#),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            at(r#"sumsvc_tasks_processed_total{outcome="failed"}"#),
            Some(0.0)
        );
        assert_eq!(
            at(r#"sumsvc_tasks_processed_total{outcome="dead_lettered"}"#),
            Some(1.0)
        );
        assert_eq!(at("sumsvc_task_queue_wait_seconds_count"), Some(1.0));
        assert_eq!(at("sumsvc_task_compute_seconds_count"), Some(1.0));
        assert_eq!(at("sumsvc_redis_write_retries_total"), Some(3.0));
        assert_eq!(at("sumsvc_tasks_held"), Some(3.0));
        assert_eq!(
            at(r#"sumsvc_broker_connections{node="mq1:5672"}"#),
            Some(0.0)
        );
        assert_eq!(
            at(r#"sumsvc_broker_connections{node="mq2:5672"}"#),
            Some(2.0)
        );
        drop(connected);
        let text = m.encode();
        assert_eq!(
            sample(&text, r#"sumsvc_broker_connections{node="mq2:5672"}"#),
            Some(0.0)
        );
    }

    #[test]
    fn the_dashboard_plots_only_metrics_the_roles_expose() {
        let serve = ServeMetrics::new(Counter::default());
        // A family is on the page once it has a series.
        serve.request("/healthz", "GET", 200, Duration::ZERO);
        let serve = serve.encode(ServeState {
            sync_waiters: 0,
            queue_consumers: None,
            dependencies: [
                (Dependency::Postgres, true),
                (Dependency::RabbitMq, true),
                (Dependency::Redis, true),
            ],
            broker_nodes: vec!["mq:5672".into()],
            publisher_node: None,
        });
        let work = WorkMetrics::new(&["mq:5672".into()]).encode();
        let exposed = format!("{serve}{work}");
        let declared: Vec<&str> = exposed
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE ")?.split(' ').next())
            .collect();
        let dashboard = include_str!("../deploy/grafana/sumsvc.json");
        let mut plotted = 0;
        for at in dashboard.match_indices("sumsvc_").map(|(at, _)| at) {
            let name: String = dashboard[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let known = declared.iter().any(|metric| {
                name.strip_prefix(metric)
                    .is_some_and(|rest| ["", "_bucket", "_count", "_sum"].contains(&rest))
            });
            assert!(known, "the dashboard plots {name}, which no role exposes");
            plotted += 1;
        }
        assert!(plotted > 10, "the dashboard plots {plotted} series");
    }
}
