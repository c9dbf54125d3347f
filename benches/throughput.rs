//! Requests per second through the whole path, with `serve` and `work` as release
//! binaries in their own processes: `POST /sync/sum` (publish, compute, store, notify)
//! and `POST /async/post_task` (publish with confirm, insert the session), against
//! `GET /healthz` (the HTTP stack alone) as the baseline, measured in the same run.
//!
//! Run: `cargo bench --bench throughput` (needs PostgreSQL, RabbitMQ and Redis on
//! localhost). `SUMSVC_BENCH_CLIENTS` (default 64) and `SUMSVC_BENCH_SECONDS` (default 5)
//! change the load.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::App;

fn main() {
    common::bench_main(run());
}

async fn run() {
    let clients = common::env_or("SUMSVC_BENCH_CLIENTS", 64) as usize;
    let seconds = common::env_or("SUMSVC_BENCH_SECONDS", 5);
    let config = common::unique_config();
    let app = Arc::new(App::spawn(config.clone()).await);
    let _worker = common::KillOnDrop(common::spawn_binary(&config, &["work"]));
    app.wait_for_workers(config.worker.concurrency as u64).await;

    println!("{clients} concurrent clients, {seconds} s per route");
    let base = load(&app, clients, seconds, Route::Healthz).await;
    println!("GET  /healthz          {base:>8.0} req/s  (baseline)");
    for route in [Route::Sync, Route::Async] {
        let rate = load(&app, clients, seconds, route).await;
        println!(
            "{:<22} {rate:>8.0} req/s  ratio to baseline {:.3}",
            route.name(),
            rate / base
        );
    }
}

#[derive(Clone, Copy)]
enum Route {
    Healthz,
    Sync,
    Async,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Healthz => "GET  /healthz",
            Route::Sync => "POST /sync/sum",
            Route::Async => "POST /async/post_task",
        }
    }
}

/// Runs `clients` request loops for `seconds`; every answer must be right.
async fn load(app: &Arc<App>, clients: usize, seconds: u64, route: Route) -> f64 {
    let done = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let loops: Vec<_> = (0..clients)
        .map(|c| {
            let (app, done) = (app.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = c;
                while Instant::now() < until {
                    let r = match route {
                        Route::Healthz => app.get("/healthz").await,
                        Route::Sync => {
                            let r = app
                                .post("/sync/sum", &format!(r#"{{"args": [{i}, 0.5]}}"#))
                                .await;
                            assert_eq!(r.text, format!(r#"{{"result":{i}.5}}"#), "{r:?}");
                            r
                        }
                        Route::Async => app.post("/async/post_task", r#"{"args": [1, 2]}"#).await,
                    };
                    assert_eq!(r.status, 200, "{r:?}");
                    done.fetch_add(1, Ordering::Relaxed);
                    i += clients;
                }
            })
        })
        .collect();
    for l in loops {
        l.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}
