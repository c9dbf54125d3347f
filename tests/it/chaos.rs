//! Chaos under load: steady sync and async traffic while the worker is SIGKILLed and
//! restarted, and the links to RabbitMQ, Redis and PostgreSQL are cut and restored
//! through in-test proxies. Every request answers (200, 202 or 503, never a hang or a
//! 500); every accepted task ends with its exact result; no sync 200 is wrong; and each
//! route is back within 2 s of its dependency's return.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use sumsvc::Config;
use support::config::{with_postgres, with_rabbitmq, with_redis, POSTGRES, RABBITMQ, REDIS};
use support::process::{signal, spawn_binary};
use support::proxy::proxy_to;
use support::{unique_config, App, KillOnDrop, Proxy, Reply};

/// How long a fault lasts while the traffic goes on.
const OUTAGE: Duration = Duration::from_secs(3);
/// The promise: a route is back this soon after its dependency.
const RECOVERY: Duration = Duration::from_secs(2);
/// Longer than any answer may take (a sync request waits `tasks.sync_timeout`).
const HANG: Duration = Duration::from_secs(15);

/// What the traffic saw.
#[derive(Default)]
struct Tally {
    /// Sessions a client was given (post_task 200, sync 202), with the `n` they sum.
    accepted: Vec<(i64, u64)>,
    sync_ok: u64,
    /// Sync 200s whose result was not the exact sum.
    wrong: Vec<String>,
    refused: u64,
    /// Anything but 200, 202 and 503: 500s, hangs, dropped connections.
    unexpected: Vec<String>,
    polls_ok: u64,
}

struct Traffic {
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

/// The sum every request asks for, and its exact answer.
fn body(n: u64) -> String {
    format!(r#"{{"args": [{n}, 0.25, 0.5]}}"#)
}

fn expected(n: u64) -> String {
    format!("{n}.75")
}

async fn request(app: &App, what: &str, f: impl std::future::Future<Output = Reply>) -> Reply {
    match tokio::time::timeout(HANG, f).await {
        Ok(r) => r,
        Err(_) => Reply {
            status: 0,
            headers: Default::default(),
            body: serde_json::Value::Null,
            text: format!("{what} to {} hung for {HANG:?}", app.base),
        },
    }
}

impl Traffic {
    /// `clients` loops of sync sums, async submits and polls, until stopped.
    fn start(app: &Arc<App>, clients: usize) -> Traffic {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(1));
        let clients = (0..clients)
            .map(|c| {
                let (app, tally, stop, next) =
                    (app.clone(), tally.clone(), stop.clone(), next.clone());
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        match (c as u64 + i) % 3 {
                            0 => sync_sum(&app, &tally, n).await,
                            1 => post_task(&app, &tally, n).await,
                            _ => poll(&app, &tally).await,
                        }
                        tokio::time::sleep(Duration::from_millis(15)).await;
                    }
                })
            })
            .collect();
        Traffic {
            tally,
            stop,
            clients,
        }
    }

    async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.clients {
            c.await.unwrap();
        }
        Arc::try_unwrap(self.tally)
            .ok()
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

fn unexpected(tally: &Mutex<Tally>, what: &str, r: &Reply) {
    tally
        .lock()
        .unwrap()
        .unexpected
        .push(format!("{what}: {} {}", r.status, r.text));
}

/// A 503 must be a problem that names what is missing; anything else is a defect.
fn refused(tally: &Mutex<Tally>, what: &str, r: &Reply) {
    let detail = r.body["detail"].as_str().unwrap_or_default();
    let named = ["PostgreSQL", "RabbitMQ", "Redis", "worker"]
        .iter()
        .any(|d| detail.contains(d));
    if named && r.header("retry-after").is_some() {
        tally.lock().unwrap().refused += 1;
    } else {
        unexpected(tally, what, r);
    }
}

async fn sync_sum(app: &App, tally: &Mutex<Tally>, n: u64) {
    let r = request(app, "sync", app.post("/sync/sum", &body(n))).await;
    match r.status {
        200 => {
            let mut t = tally.lock().unwrap();
            t.sync_ok += 1;
            if r.text != format!(r#"{{"result":{}}}"#, expected(n)) {
                t.wrong.push(format!("{n}: {}", r.text));
            }
        }
        202 => {
            let id = r.body["session_id"].as_i64().unwrap();
            tally.lock().unwrap().accepted.push((id, n));
        }
        503 => refused(tally, "sync", &r),
        _ => unexpected(tally, "sync", &r),
    }
}

async fn post_task(app: &App, tally: &Mutex<Tally>, n: u64) {
    let r = request(app, "post_task", app.post("/async/post_task", &body(n))).await;
    match r.status {
        200 => {
            let id = r.body["session_id"].as_i64().unwrap();
            tally.lock().unwrap().accepted.push((id, n));
        }
        503 => refused(tally, "post_task", &r),
        _ => unexpected(tally, "post_task", &r),
    }
}

async fn poll(app: &App, tally: &Mutex<Tally>) {
    let session = {
        let t = tally.lock().unwrap();
        t.accepted.last().copied()
    };
    let Some((id, n)) = session else { return };
    let r = request(app, "poll", app.poll_once(id)).await;
    match r.status {
        200 if r.body["status"] == "pending" => tally.lock().unwrap().polls_ok += 1,
        200 if r.text.contains(&format!(r#""result":{}"#, expected(n))) => {
            tally.lock().unwrap().polls_ok += 1
        }
        503 => refused(tally, "poll", &r),
        _ => unexpected(tally, "poll", &r),
    }
}

/// The routes whose return after a fault is timed.
#[derive(Debug, Clone, Copy)]
enum Route {
    Sync,
    Submit,
    Poll,
}

/// Retries `route` until it answers 200; returns when it did.
async fn back_at(app: &App, route: Route, session: i64) -> Instant {
    let started = Instant::now();
    loop {
        let r = match route {
            Route::Sync => request(app, "sync", app.post("/sync/sum", &body(0))).await,
            Route::Submit => {
                request(app, "post_task", app.post("/async/post_task", &body(0))).await
            }
            Route::Poll => request(app, "poll", app.poll_once(session)).await,
        };
        if r.status == 200 {
            return Instant::now();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{route:?} never came back: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Times each route's return from the moment its dependency came back.
async fn recovery(
    app: &App,
    fault: &str,
    restored: Instant,
    routes: &[Route],
    session: i64,
    times: &mut HashMap<String, Duration>,
) {
    let back = futures_util::future::join_all(routes.iter().map(|r| back_at(app, *r, session)));
    for (route, at) in routes.iter().zip(back.await) {
        times.insert(format!("{fault}: {route:?}"), at.duration_since(restored));
    }
}

fn worker(config: &Config) -> KillOnDrop {
    KillOnDrop(spawn_binary(config, &["work"]))
}

#[tokio::test(flavor = "multi_thread")]
async fn under_load_no_accepted_task_is_lost_and_every_route_returns_with_its_dependency() {
    let (rabbit, redis, postgres): (Proxy, Proxy, Proxy) = (
        proxy_to(RABBITMQ).await,
        proxy_to(REDIS).await,
        proxy_to(POSTGRES).await,
    );
    let mut config = unique_config();
    with_rabbitmq(&mut config, rabbit.addr);
    with_redis(&mut config, redis.addr);
    with_postgres(&mut config, postgres.addr);
    config.tasks.sync_timeout = Duration::from_secs(4);
    config.worker.concurrency = 2;
    let app = Arc::new(App::start(config.clone()).await);
    let mut work = worker(&config);
    app.wait_for(|r| r.status == 200 && r.body["workers"] == 2, "readiness")
        .await;
    let session = app.post("/async/post_task", &body(0)).await;
    let session = session.body["session_id"].as_i64().unwrap();
    let traffic = Traffic::start(&app, 6);
    let mut back = HashMap::new();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The worker dies holding tasks; a new one takes over.
    signal(&work.0, "KILL");
    tokio::time::sleep(Duration::from_millis(500)).await;
    work = worker(&config);
    let restarted = Instant::now();
    recovery(
        &app,
        "worker restart",
        restarted,
        &[Route::Sync],
        session,
        &mut back,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    for (name, proxy, routes) in [
        ("RabbitMQ", &rabbit, &[Route::Submit, Route::Sync][..]),
        ("Redis", &redis, &[Route::Poll, Route::Sync][..]),
        ("PostgreSQL", &postgres, &[Route::Submit, Route::Poll][..]),
    ] {
        proxy.cut();
        tokio::time::sleep(OUTAGE).await;
        proxy.restore();
        let restored = Instant::now();
        recovery(&app, name, restored, routes, session, &mut back).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let tally = traffic.stop().await;

    // Every accepted task ends done, with its exact sum.
    let checks = futures_util::stream::iter(tally.accepted.iter().copied())
        .map(|(id, n)| {
            let app = app.clone();
            async move {
                let r = app.poll(id).await;
                if r.body["status"] == "done" {
                    if r.text.contains(&format!(r#""result":{}"#, expected(n))) {
                        Ok(())
                    } else {
                        Err(format!("wrong: session {id} ({n}): {}", r.text))
                    }
                } else {
                    Err(format!("lost: session {id} ({n}): {}", r.text))
                }
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let completed = checks.iter().filter(|c| c.is_ok()).count();
    let failures: Vec<&String> = checks.iter().filter_map(|c| c.as_ref().err()).collect();
    let lost = failures.iter().filter(|f| f.starts_with("lost")).count();
    let wrong = failures.len() - lost + tally.wrong.len();
    println!(
        "chaos: accepted {} completed {completed} lost {lost} wrong {wrong} | sync 200 {} refused (503) {} polls {} unexpected {}",
        tally.accepted.len(),
        tally.sync_ok,
        tally.refused,
        tally.polls_ok,
        tally.unexpected.len()
    );
    let mut times: Vec<_> = back.iter().collect();
    times.sort();
    for (what, took) in &times {
        println!("chaos: back after {what}: {took:?}");
    }
    drop(work);

    assert!(tally.accepted.len() > 100, "too little traffic to tell");
    assert!(tally.sync_ok > 100, "too little sync traffic to tell");
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(tally.wrong.is_empty(), "{:#?}", tally.wrong);
    assert!(tally.unexpected.is_empty(), "{:#?}", tally.unexpected);
    for (what, took) in times {
        assert!(*took <= RECOVERY, "{what} took {took:?}");
    }
}
