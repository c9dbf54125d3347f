//! Soak: `serve` and `work` run as processes through quiet periods longer than every
//! timer they have (AMQP heartbeat and the silence it bounds, the broker probe, the
//! Redis subscription ping, PostgreSQL and Redis closing idle connections, the HTTP
//! connection timers, the API keys' re-reads), and after each quiet period every route
//! answers as it does under load.
//!
//! `SUMSVC_SOAK_SECS=3600 cargo test --release --test soak -- --nocapture` runs the
//! short-timer scenario for an hour of mixed traffic and quiet periods and prints the
//! steady-state figures of each process (RSS, open file descriptors, threads).
//!
//! A test binary of its own, apart from `tests/it`: its quiet periods add up to minutes
//! (an hour in the long mode), and it runs alone, by name, with `--test soak`.

use std::time::{Duration, Instant};

use sumsvc::Config;
use support::bench::env_or;
use support::config::{direct_client, direct_postgres};
use support::process::spawn_binary;
use support::redis_server::RedisServer;
use support::{unique_config, App, KillOnDrop, Reply};

/// Longest any route may take to answer, idle or not.
const PROMPT: Duration = Duration::from_secs(2);

/// `serve` (a child process) and a `work` process beside it.
struct Stack {
    // Field order: the worker stops before the app's cleanup deletes its queue.
    work: KillOnDrop,
    app: App,
}

impl Stack {
    async fn start(config: Config) -> Stack {
        let app = App::spawn(config).await;
        let work = KillOnDrop(spawn_binary(&app.config, &["work"]));
        app.wait_for(
            |r| r.status == 200 && r.body["workers"].as_u64() >= Some(1),
            "readiness with a worker",
        )
        .await;
        Stack { work, app }
    }

    fn figures(&self) -> [(&'static str, Figures); 2] {
        [
            ("serve", Figures::of(self.app.child.as_ref().unwrap().id())),
            ("work", Figures::of(self.work.0.id())),
        ]
    }
}

/// What a process holds, from /proc.
#[derive(Debug, Clone, Copy)]
struct Figures {
    rss_kib: u64,
    fds: usize,
    threads: u64,
}

impl Figures {
    fn of(pid: u32) -> Figures {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        };
        Figures {
            rss_kib: field("VmRSS:"),
            fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .count(),
            threads: field("Threads:"),
        }
    }
}

/// Runs one request and checks it answered within [`PROMPT`].
async fn prompt(what: &str, f: impl std::future::Future<Output = Reply>) -> Reply {
    let started = Instant::now();
    let r = f.await;
    assert!(
        started.elapsed() < PROMPT,
        "{what} took {:?}: {r:?}",
        started.elapsed()
    );
    r
}

/// When `serve` made its RabbitMQ and Redis connections, as `/readyz` tells.
async fn links(app: &App) -> [String; 2] {
    let r = app.get("/readyz").await;
    ["rabbitmq", "redis"].map(|dep| {
        let since = r.body[dep]["since"].as_str();
        since
            .unwrap_or_else(|| panic!("{dep} has no connection: {r:?}"))
            .to_owned()
    })
}

/// Sleeps through a quiet period and checks the connections held through it: a link
/// judged dead while idle, even if replaced at once, is the bug this file is about.
async fn quiet(app: &App, period: Duration) {
    let before = links(app).await;
    tokio::time::sleep(period).await;
    let after = links(app).await;
    assert_eq!(
        before, after,
        "a connection was made again after {period:?} idle"
    );
}

/// Every route, checked as a user would check it; `n` varies the sums.
async fn every_route_answers(app: &App, n: u64) {
    let r = prompt("healthz", app.get("/healthz")).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = prompt("readyz", app.get("/readyz")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body["workers"].as_u64() >= Some(1), "{r:?}");

    let sum = format!(r#"{{"args": [{n}, 0.1, 0.2]}}"#);
    let r = prompt("sync sum", app.post("/sync/sum", &sum)).await;
    assert_eq!(r.text, format!(r#"{{"result":{n}.3}}"#), "{r:?}");

    let r = prompt("post_task", app.post("/async/post_task", &sum)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let id = r.body["session_id"].as_i64().unwrap();
    let r = app.poll(id).await;
    assert!(r.text.contains(&format!(r#""result":{n}.3"#)), "{r:?}");

    let r = prompt("unknown session", app.poll_once(i64::MAX)).await;
    r.assert_problem(404, "no session");
    let r = prompt("bad body", app.post("/sync/sum", r#"{"args": ["x"]}"#)).await;
    r.assert_problem(400, "0");
}

/// A burst of concurrent sync and async sums, each checked.
async fn mixed_traffic(app: &App, round: u64) {
    let requests = (0..64u64).map(|i| async move {
        let n = round * 1000 + i;
        let body = format!(r#"{{"args": [{n}, 0.5]}}"#);
        if i % 2 == 0 {
            let r = app.post("/sync/sum", &body).await;
            assert_eq!(r.text, format!(r#"{{"result":{n}.5}}"#), "{r:?}");
        } else {
            let r = app.post("/async/post_task", &body).await;
            assert_eq!(r.status, 200, "{r:?}");
            let r = app.poll(r.body["session_id"].as_i64().unwrap()).await;
            assert!(r.text.contains(&format!(r#""result":{n}.5"#)), "{r:?}");
        }
    });
    futures_util::future::join_all(requests).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_service_with_default_timers_answers_every_route_after_35_second_quiet_periods() {
    // Only the names are the test's own: every timer keeps its default.
    let stack = Stack::start(unique_config()).await;
    every_route_answers(&stack.app, 1).await;
    for round in 1..=2 {
        quiet(&stack.app, Duration::from_secs(35)).await;
        every_route_answers(&stack.app, 100 + round).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_with_api_keys_and_short_http_timers_answers_after_quiet_periods() {
    let mut config = support::keys::keys_config();
    // The keys are re-read every 0.5 s, and trusted for 2 s without a re-read; the
    // client's kept-alive connections are closed by serve, and by work's metrics port,
    // after 2 s idle; PostgreSQL closes pooled connections idle for 2 s, the keys'
    // re-reads racing it.
    config.auth.revoke_within = Duration::from_secs(2);
    config.http.header_timeout = Duration::from_secs(2);
    config.http.idle_timeout = Duration::from_secs(2);
    config.worker.metrics_listen = support::metrics::free_address();
    let work_metrics = format!("http://{}/metrics", config.worker.metrics_listen);
    config
        .postgres
        .url
        .push_str("?options=-c%20idle_session_timeout%3D2000");
    sumsvc::migrate_database(&direct_postgres(&config), &config.tls)
        .await
        .unwrap();
    let secret = support::keys::create_key(&config, "soak").await;
    let mut stack = Stack::start(config).await;
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {secret}");
    headers.insert("authorization", bearer.parse().unwrap());
    stack.app.http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();

    let scrape_work = || async {
        let r = prompt("work's /metrics", async {
            Reply::read(stack.app.http.get(&work_metrics).send().await).await
        })
        .await;
        assert_eq!(r.status, 200, "{r:?}");
    };
    every_route_answers(&stack.app, 1).await;
    scrape_work().await;
    for round in 1..=3 {
        quiet(&stack.app, Duration::from_secs(6)).await;
        every_route_answers(&stack.app, 200 + round).await;
        scrape_work().await;
        mixed_traffic(&stack.app, 200 + round).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_with_short_timers_stays_whole_through_quiet_periods_and_traffic() {
    let mut config = unique_config();
    // Every timer short, so many of them fire in each quiet period: heartbeats every
    // second, the broker called silent after 2.5 s, and PostgreSQL and Redis closing
    // pooled connections idle for 2 s and 1 s (the pools must notice and replace them).
    config.rabbitmq.heartbeat = Duration::from_secs(1);
    // A Redis of its own that closes connections idle for 1 s, as managed Redis often
    // does with its `timeout`: pooled connections die in every quiet period.
    let redis = RedisServer::start(&["--timeout", "1"]).await;
    config.redis.url = redis.url().into();
    config
        .postgres
        .url
        .push_str("?options=-c%20idle_session_timeout%3D2000");
    let stack = Stack::start(config).await;

    let soak = Duration::from_secs(env_or("SUMSVC_SOAK_SECS", 0));
    let quiet_periods = [5, 12, 35].map(Duration::from_secs);
    mixed_traffic(&stack.app, 0).await;
    quiet(&stack.app, quiet_periods[0]).await;
    let start = stack.figures();
    let started = Instant::now();
    let mut round = 1;
    loop {
        every_route_answers(&stack.app, round).await;
        mixed_traffic(&stack.app, round).await;
        let enough = if soak.is_zero() {
            round >= 3
        } else {
            started.elapsed() >= soak
        };
        if enough {
            break;
        }
        let period = if soak.is_zero() {
            quiet_periods[0]
        } else {
            quiet_periods[round as usize % quiet_periods.len()]
        };
        quiet(&stack.app, period).await;
        round += 1;
    }
    quiet(&stack.app, quiet_periods[0]).await;
    let end = stack.figures();

    println!(
        "soak: {} rounds in {:.0}s",
        round,
        started.elapsed().as_secs_f64()
    );
    for ((name, a), (_, b)) in start.iter().zip(end.iter()) {
        println!(
            "soak: {name:5} start rss {:>7} KiB fds {:>4} threads {:>3} | end rss {:>7} KiB fds {:>4} threads {:>3}",
            a.rss_kib, a.fds, a.threads, b.rss_kib, b.fds, b.threads
        );
        // Measured after the same quiet period, so pools and idle threads have
        // settled: what grew is held per request or per cycle, and would grow forever.
        assert!(
            b.threads <= a.threads + 2,
            "{name} threads grew: {a:?} -> {b:?}"
        );
        assert!(
            b.fds <= a.fds + 32,
            "{name} file descriptors grew: {a:?} -> {b:?}"
        );
    }
}

/// What the stores hold at one moment.
#[derive(Debug, Clone, Copy)]
struct Stored {
    sessions: i64,
    idempotency_keys: i64,
    redis_keys: i64,
    redis_bytes: i64,
}

async fn stored(config: &Config, redis: &RedisServer) -> Stored {
    let client = direct_client(config).await;
    let count = |table: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let redis_keys = match redis.command(&["DBSIZE"]).await.unwrap() {
        redis::Value::Int(n) => n,
        other => panic!("DBSIZE answered {other:?}"),
    };
    let info = match redis.command(&["INFO", "memory"]).await.unwrap() {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes).unwrap(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("INFO answered {other:?}"),
    };
    let redis_bytes = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO memory");
    Stored {
        sessions: count("sessions").await,
        idempotency_keys: count("idempotency_keys").await,
        redis_keys,
        redis_bytes,
    }
}

/// With results, sessions and idempotency keys kept seconds, a steady stream of
/// submits leaves the stores as full after a minute as after twenty seconds: what
/// expires goes, in Redis by TTL and in PostgreSQL by `serve`'s own purge.
#[tokio::test(flavor = "multi_thread")]
async fn under_steady_load_with_short_lives_the_stores_stay_flat() {
    let mut config = unique_config();
    config.tasks.result_ttl = Duration::from_secs(2);
    config.tasks.session_retention = Duration::from_secs(2);
    config.tasks.idempotency_ttl = Duration::from_secs(2);
    config.tasks.purge_every = Duration::from_secs(1);
    let redis = RedisServer::start(&[]).await;
    config.redis.url = redis.url().into();
    let Stack { work, app } = Stack::start(config.clone()).await;

    let soak = Duration::from_secs(env_or("SUMSVC_SOAK_SECS", 60).max(40));
    // About 100 submits a second, each with a key of its own.
    let app = std::sync::Arc::new(app);
    let load = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(10));
            let mut sent = 0u64;
            let started = Instant::now();
            while started.elapsed() < soak {
                every.tick().await;
                let app = app.clone();
                sent += 1;
                tokio::spawn(async move {
                    let key = format!("\"soak-{sent}\"");
                    let r = app
                        .post_with(
                            "/async/post_task",
                            &format!(r#"{{"args": [{sent}, 0.5]}}"#),
                            &[("Idempotency-Key", key.as_str())],
                        )
                        .await;
                    assert_eq!(r.status, 200, "{r:?}");
                });
            }
            sent
        })
    };
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < soak {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = stored(&config, &redis).await;
        println!("soak: {:>3.0}s {now:?}", started.elapsed().as_secs_f64());
        samples.push(now);
    }
    let sent = load.await.unwrap();
    println!(
        "soak: {sent} submits in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    // The worker stops before the app's cleanup deletes its queue.
    drop(work);

    // Past the first 20 s every store is full to its level; from then on, the later
    // half holds no more than the earlier (with a margin for the load's jitter), and
    // the level is what the lives allow, not what was sent.
    let settled: Vec<Stored> = samples[4..].to_vec();
    let (early, late) = settled.split_at(settled.len() / 2);
    let most = |s: &[Stored], f: fn(&Stored) -> i64| s.iter().map(f).max().unwrap();
    for (what, f, level) in [
        (
            "sessions",
            (|s: &Stored| s.sessions) as fn(&Stored) -> i64,
            100 * 6,
        ),
        ("idempotency keys", |s: &Stored| s.idempotency_keys, 100 * 4),
        ("Redis keys", |s: &Stored| s.redis_keys, 100 * 3),
    ] {
        let (early, late) = (most(early, f), most(late, f));
        assert!(
            late <= early + early / 4 + 50,
            "{what} grew from {early} to {late}"
        );
        assert!(late <= 2 * level, "{what}: {late}, more than twice {level}");
    }
    let (early, late) = (
        most(early, |s| s.redis_bytes),
        most(late, |s| s.redis_bytes),
    );
    assert!(
        late <= early + early / 4,
        "Redis memory grew from {early} to {late} bytes"
    );
    assert!(
        sent as f64 >= 0.8 * 100.0 * soak.as_secs_f64(),
        "{sent} sent"
    );
}
