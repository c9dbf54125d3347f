//! The fleet: sumsvc on each engine's own high availability, started on this machine by
//! `scripts/fleet` (a 3-node RabbitMQ cluster with quorum queues, Redis with a replica
//! and 3 Sentinels, a Redis Cluster of 3 masters and 3 replicas, a PostgreSQL primary
//! with a synchronous standby), under steady sync and async load from two serves with
//! two worker processes, while the test stops in turn: the RabbitMQ node most
//! processes use, the Redis master, the PostgreSQL primary (promoting the standby), and
//! then, with Redis in cluster mode, one Redis Cluster master.
//!
//! It checks what a user of the fleet would: no task accepted is lost and none is
//! wrong, every request is answered (200, 202, or a 503 whose detail names the
//! dependency), and every route answers again within 5 s of each fault.
//!
//! A binary of its own: the fleet takes the machine's two cores for a while, and other
//! tests' timings would suffer beside it. `cargo test --test fleet -- --nocapture`
//! prints what happened around each fault.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sumsvc::{Config, ConfigKey};
use support::config::ListenOnFreePort;
use support::metrics::Scrape;
use support::process::spawn_binary;
use support::{unique_config, App, KillOnDrop, Reply};

/// The first of the fleet's ports: apart from `scripts/fleet`'s default, so the test runs
/// beside a fleet a developer started.
const FLEET_PORT: u16 = 17000;

/// How soon after a fault every route must answer again.
const BACK_WITHIN: Duration = Duration::from_secs(5);

/// How long the load goes on after a fault before the next.
const AFTER_FAULT: Duration = Duration::from_secs(10);

/// Runs `scripts/fleet ARGS` for this test's fleet, off the runtime's threads; panics
/// with its output on failure.
fn fleet(args: &[&str]) -> String {
    tokio::task::block_in_place(|| fleet_now(args))
}

fn fleet_now(args: &[&str]) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(format!("{root}/scripts/fleet"))
        .args(args)
        .env("FLEET_PORT", FLEET_PORT.to_string())
        .output()
        .expect("scripts/fleet runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "scripts/fleet {args:?} failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The fleet, up while this lives.
struct Fleet;

impl Fleet {
    fn up() -> Fleet {
        // A run killed before it could take its fleet down left it running.
        fleet_now(&["down"]);
        fleet_now(&["up"]);
        Fleet
    }

    /// The config of one process of this test on the fleet: the fleet's URLs, with
    /// Redis in `redis_mode`, and the test's own database, queue and prefix.
    fn config(&self, base: &Config, redis_mode: &str) -> Config {
        let mut config = base.clone();
        let database = support::config::database(&base.postgres.url).to_owned();
        for line in fleet(&["env"]).lines() {
            let line = match line.strip_prefix("# ") {
                // The commented line holds the cluster's settings.
                Some(cluster) if redis_mode == "cluster" => cluster.replace(' ', "\n"),
                Some(_) => continue,
                None => line.to_owned(),
            };
            for setting in line.lines() {
                let Some((var, value)) = setting.split_once('=') else {
                    continue;
                };
                let key = ConfigKey::ALL
                    .iter()
                    .find(|key| key.env == var)
                    .unwrap_or_else(|| panic!("scripts/fleet env sets {var}, no key's variable"));
                let value = value.replace("/sumsvc?", &format!("/{database}?"));
                key.set(&mut config, key.parse(&value).unwrap()).unwrap();
            }
        }
        config
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let root = env!("CARGO_MANIFEST_DIR");
        let _ = Command::new(format!("{root}/scripts/fleet"))
            .arg("down")
            .env("FLEET_PORT", FLEET_PORT.to_string())
            .output();
    }
}

/// A request of the load, as its client saw it.
#[derive(Debug)]
struct Answer {
    at: Instant,
    route: &'static str,
    /// What the sum is, exactly.
    expected: String,
    reply: Reply,
}

/// Clients that keep sending sync and async requests to every serve.
struct Load {
    answers: Arc<Mutex<Vec<Answer>>>,
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(serves: &[Arc<App>], clients: usize) -> Load {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|c| {
                let (serves, answers, stop) = (serves.to_vec(), answers.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let app = &serves[(c + n as usize) % serves.len()];
                        let i = c as u64 * 1_000_000 + n;
                        let body = format!(r#"{{"args": [{i}, 0.25, 0.25]}}"#);
                        let expected = format!("{i}.5");
                        let (route, reply) = if n % 2 == 0 {
                            let r = app
                                .post_with("/sync/sum", &body, &[("Prefer", "wait=3")])
                                .await;
                            ("sync", r)
                        } else {
                            ("post_task", app.post("/async/post_task", &body).await)
                        };
                        let failed = reply.status != 200;
                        answers.lock().unwrap().push(Answer {
                            at: Instant::now(),
                            route,
                            expected,
                            reply,
                        });
                        if failed {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                })
            })
            .collect();
        Load {
            answers,
            stop,
            clients,
        }
    }

    async fn stop(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.await.unwrap();
        }
        std::mem::take(&mut *self.answers.lock().unwrap())
    }
}

/// What every answer must be: 200, 202, or a 503 whose detail names the dependency.
fn check_answered(answers: &[Answer]) {
    for a in answers {
        let r = &a.reply;
        match r.status {
            200 | 202 => {}
            503 => {
                let detail = r.body["detail"].as_str().unwrap_or_default();
                assert!(
                    ["PostgreSQL", "RabbitMQ", "Redis"]
                        .iter()
                        .any(|d| detail.contains(d)),
                    "a 503 that names no dependency: {r:?}"
                );
            }
            _ => panic!("{} answered {r:?}", a.route),
        }
    }
}

/// When each route answered again after a fault at `fault`: its first 200 after its
/// last failure before the next fault (or the end).
fn back_after(
    answers: &[Answer],
    fault: Instant,
    until: Instant,
) -> BTreeMap<&'static str, Duration> {
    let mut back = BTreeMap::new();
    for route in ["sync", "post_task"] {
        let window: Vec<&Answer> = answers
            .iter()
            .filter(|a| a.route == route && a.at >= fault && a.at < until)
            .collect();
        let last_failure = window
            .iter()
            .filter(|a| !matches!(a.reply.status, 200 | 202))
            .map(|a| a.at)
            .max();
        let first_success = window
            .iter()
            .filter(|a| matches!(a.reply.status, 200 | 202))
            .filter(|a| last_failure.is_none_or(|f| a.at > f))
            .map(|a| a.at)
            .min()
            .unwrap_or_else(|| panic!("{route} never answered again after the fault"));
        back.insert(route, first_success.saturating_duration_since(fault));
    }
    back
}

/// Reads every session the load was given until it is done, from any serve; returns the
/// count of lost (never done) and wrong (another sum) tasks.
async fn check_results(serves: &[Arc<App>], answers: &[Answer]) -> (usize, usize, usize) {
    let (mut done, mut lost, mut wrong) = (0, 0, 0);
    for (n, a) in answers.iter().enumerate() {
        let r = &a.reply;
        let result = match r.status {
            200 if a.route == "sync" => r.body["result"].clone(),
            200 | 202 => {
                let id = r.body["session_id"].as_i64().expect("a session id");
                let polled = poll_until_done(&serves[n % serves.len()], id).await;
                match polled {
                    Some(result) => result,
                    None => {
                        lost += 1;
                        eprintln!("lost: {a:?}");
                        continue;
                    }
                }
            }
            _ => continue,
        };
        let read = result.to_string();
        if read == a.expected {
            done += 1;
        } else {
            wrong += 1;
            eprintln!("wrong: {a:?} read {result}");
        }
    }
    (done, lost, wrong)
}

/// A session's result once done, polling for at most 60 s; None if it never is.
async fn poll_until_done(app: &App, id: i64) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let r = app.poll_once(id).await;
        if r.status == 200 && r.body["status"] == "done" {
            return Some(r.body["result"].clone());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Two serves and two worker processes on the fleet.
struct Processes {
    serves: Vec<Arc<App>>,
    _workers: Vec<KillOnDrop>,
    /// Each worker's `/metrics`.
    worker_metrics: Vec<String>,
}

impl Processes {
    async fn start(config: &Config) -> Processes {
        let mut workers = Vec::new();
        let mut worker_metrics = Vec::new();
        for _ in 0..2 {
            let mut config = config.clone();
            config.worker.metrics_listen = support::metrics::free_address();
            worker_metrics.push(format!("http://{}/metrics", config.worker.metrics_listen));
            workers.push(KillOnDrop(spawn_binary(&config, &["work"])));
        }
        let mut serves = Vec::new();
        for _ in 0..2 {
            let mut config = config.clone();
            config.listen_on_free_port();
            let child = spawn_binary(&config, &["serve"]);
            serves.push(Arc::new(App::attach_to(config, child).await));
        }
        for serve in &serves {
            // Two processes of two consumers each.
            serve
                .wait_for(|r| r.status == 200 && r.body["workers"] == 4, "4 workers")
                .await;
        }
        Processes {
            serves,
            _workers: workers,
            worker_metrics,
        }
    }

    /// The RabbitMQ node (1 to 3) most of the processes are connected to.
    async fn busiest_broker_node(&self) -> usize {
        let mut count: BTreeMap<String, f64> = BTreeMap::new();
        for serve in &self.serves {
            let r = serve.get("/readyz").await;
            if let Some(node) = r.body["rabbitmq"]["node"].as_str() {
                *count.entry(node.to_owned()).or_default() += 1.0;
            }
        }
        for url in &self.worker_metrics {
            let scrape = Scrape::of(url).await;
            for n in 1..=3 {
                let node = format!("127.0.0.1:{}", FLEET_PORT + n);
                let series = format!(r#"sumsvc_broker_connections{{node="{node}"}}"#);
                *count.entry(node).or_default() += scrape.get(&series).unwrap_or(0.0);
            }
        }
        let (node, _) = count
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .expect("the processes name their nodes");
        eprintln!("connections by broker node: {count:?}");
        (node.rsplit(':').next().unwrap().parse::<u16>().unwrap() - FLEET_PORT) as usize
    }
}

/// Each fault at its time, and how long each route took to answer again after it.
fn report(answers: &[Answer], faults: &[(&str, Instant)], end: Instant) {
    for (i, (fault, at)) in faults.iter().enumerate() {
        let until = faults.get(i + 1).map_or(end, |(_, next)| *next);
        let back = back_after(answers, *at, until);
        let failures = answers
            .iter()
            .filter(|a| a.at >= *at && a.at < until && !matches!(a.reply.status, 200 | 202))
            .count();
        let last = answers
            .iter()
            .rfind(|a| a.at >= *at && a.at < until && !matches!(a.reply.status, 200 | 202))
            .map(|a| a.reply.body["detail"].clone());
        eprintln!(
            "{fault}: {failures} requests answered 503 (the last: {last:?}); back after {back:?}"
        );
        for (route, took) in back {
            assert!(
                took <= BACK_WITHIN,
                "{route} answered again {took:?} after {fault}, more than {BACK_WITHIN:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_follows_every_failover_under_load_and_loses_nothing() {
    let engines = Fleet::up();
    let base = unique_config();
    let config = engines.config(&base, "sentinel");
    sumsvc::migrate_database(&config.postgres, &config.tls)
        .await
        .expect("migrate on the fleet's primary");

    // Sentinel mode: a RabbitMQ node, the Redis master, the PostgreSQL primary.
    let processes = Processes::start(&config).await;
    let load = Load::start(&processes.serves, 4);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut faults = Vec::new();

    let node = processes.busiest_broker_node().await;
    faults.push(("RabbitMQ node stopped", Instant::now()));
    fleet(&["stop", "rabbitmq", &node.to_string()]);
    tokio::time::sleep(AFTER_FAULT).await;

    faults.push(("Redis master stopped", Instant::now()));
    fleet(&["stop", "redis-master"]);
    // The old master comes back as a replica, as redis.min_replicas = 1 needs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    fleet(&["start", "redis"]);
    tokio::time::sleep(AFTER_FAULT).await;

    faults.push((
        "PostgreSQL primary stopped, standby promoted",
        Instant::now(),
    ));
    fleet(&["failover", "postgres"]);
    tokio::time::sleep(AFTER_FAULT).await;
    let end = Instant::now();
    let answers = load.stop().await;
    check_answered(&answers);
    report(&answers, &faults, end);
    let (done, lost, wrong) = check_results(&processes.serves, &answers).await;
    eprintln!(
        "sentinel mode: {} answers, {done} sums read back, {lost} lost, {wrong} wrong",
        answers.len()
    );
    assert_eq!((lost, wrong), (0, 0));
    drop(processes);

    // Cluster mode: one Redis Cluster master.
    let config = engines.config(&base, "cluster");
    let processes = Processes::start(&config).await;
    let load = Load::start(&processes.serves, 4);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let faults = vec![("Redis Cluster master stopped", Instant::now())];
    fleet(&["stop", "redis-cluster", "1"]);
    tokio::time::sleep(AFTER_FAULT).await;
    let end = Instant::now();
    let answers = load.stop().await;
    check_answered(&answers);
    report(&answers, &faults, end);
    let (done, lost, wrong) = check_results(&processes.serves, &answers).await;
    eprintln!(
        "cluster mode: {} answers, {done} sums read back, {lost} lost, {wrong} wrong",
        answers.len()
    );
    assert_eq!((lost, wrong), (0, 0));
}
