//! Requests per second through the whole path, with `serve` and `work` as release
//! binaries in their own processes: `POST /sync/sum` (publish, compute, store, notify)
//! and `POST /async/post_task` (publish with confirm, insert the session), against
//! `GET /healthz` (the HTTP stack alone) as the baseline, measured in the same run at
//! the same concurrency. The three routes take turns of one second each, so that a
//! machine whose speed drifts (a shared one does) drifts for all of them alike.
//!
//! For each route and concurrency it prints requests/s, the ratio to the baseline, the
//! latency at the 50th and 99th percentiles, and the CPU seconds each process spent
//! per 1,000 requests (serve, work, RabbitMQ, Redis, PostgreSQL, and this load client),
//! so the next bottleneck is visible; `post_task`'s includes the worker computing what it
//! queued. Each concurrency ends with `post_task`'s rate as a share of `sync/sum`'s.
//!
//! Run: `cargo bench --bench throughput` (needs PostgreSQL, RabbitMQ and Redis on
//! localhost). `SUMSVC_BENCH_CLIENTS` (a comma-separated list, default `1,64,256`) and
//! `SUMSVC_BENCH_SECONDS` (default 5) change the load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::amqp::queue_depth;
use support::bench::{bench_main, env_or};
use support::process::spawn_binary;
use support::procstat::{self, CpuMeter};
use support::wait::wait_until;
use support::{unique_config, App, KillOnDrop};

fn main() {
    bench_main(run());
}

async fn run() {
    let concurrencies: Vec<usize> = std::env::var("SUMSVC_BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,64,256".into())
        .split(',')
        .map(|c| c.trim().parse().expect("SUMSVC_BENCH_CLIENTS: numbers"))
        .collect();
    let seconds = env_or("SUMSVC_BENCH_SECONDS", 5);
    let config = unique_config();
    let app = Arc::new(App::spawn(config.clone()).await);
    let worker = KillOnDrop(spawn_binary(&config, &["work"]));
    app.wait_for_workers(config.worker.concurrency as u64).await;
    let serve_pid = app.child.as_ref().expect("serve runs as a child").id();
    let worker_pid = worker.0.id();

    // Warm up: connections in every pool, so the PostgreSQL backends counted exist.
    for route in [Route::Healthz, Route::Sync, Route::Async] {
        load(&app, 64, Duration::from_secs(1), route).await;
    }

    println!(
        "{seconds} s per route and concurrency, in turns of {} s; CPU in seconds per 1,000 requests",
        SLICE.as_secs()
    );
    println!(
        "{:>4} {:<22} {:>8} {:>6} {:>8} {:>8} | {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
        "c",
        "route",
        "req/s",
        "ratio",
        "p50 ms",
        "p99 ms",
        "serve",
        "work",
        "rabbit",
        "redis",
        "pg",
        "client"
    );
    let routes = [Route::Healthz, Route::Sync, Route::Async];
    for &clients in &concurrencies {
        // The routes take turns, one slice each, until each has had `seconds`: a machine
        // that speeds up or slows down during the run does so for all three alike, so
        // the ratios compare like with like.
        let mut runs: Vec<Run> = routes.iter().map(|_| Run::default()).collect();
        let mut cpu: Vec<Vec<(&'static str, f64)>> = vec![Vec::new(); routes.len()];
        for _ in 0..seconds {
            for ((&route, run), cpu) in routes.iter().zip(&mut runs).zip(&mut cpu) {
                let meter = CpuMeter::start(procstat::system(serve_pid, worker_pid));
                run.absorb(load(&app, clients, SLICE, route).await);
                if let Route::Async = route {
                    // The worker computes what was submitted before the next route's
                    // turn: its time counts for post_task, and not against the next.
                    wait_until("the task queue to empty", Duration::from_secs(60), || {
                        queue_depth(&config.rabbitmq.queue) == 0
                    })
                    .await;
                }
                let spent = meter.spent();
                if cpu.is_empty() {
                    *cpu = spent;
                } else {
                    for (total, (_, s)) in cpu.iter_mut().zip(spent) {
                        total.1 += s;
                    }
                }
            }
        }
        let base = runs[0].rate();
        for ((route, run), cpu) in routes.iter().zip(&mut runs).zip(&cpu) {
            run.latencies.sort_unstable();
            let rate = run.rate();
            let per_1k = |s: f64| s * 1000.0 / run.latencies.len() as f64;
            print!(
                "{clients:>4} {:<22} {rate:>8.0} {:>6.3} {:>8.2} {:>8.2} |",
                route.name(),
                rate / base,
                run.percentile(50.0),
                run.percentile(99.0),
            );
            for (_, seconds) in cpu {
                print!(" {:>6.3}", per_1k(*seconds));
            }
            println!();
        }
        println!(
            "{clients:>4} post_task / sync/sum {:>8.3}",
            runs[2].rate() / runs[1].rate()
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

/// How long each route's turn lasts.
const SLICE: Duration = Duration::from_secs(1);

/// The latency of every request of one route's turns, and how long they took in all.
#[derive(Default)]
struct Run {
    latencies: Vec<Duration>,
    took: Duration,
}

impl Run {
    fn absorb(&mut self, turn: Run) {
        self.latencies.extend(turn.latencies);
        self.took += turn.took;
    }

    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.took.as_secs_f64()
    }

    /// The latency at percentile `p`, in milliseconds (nearest rank).
    fn percentile(&self, p: f64) -> f64 {
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1].as_secs_f64() * 1000.0
    }
}

/// Runs `clients` request loops for `length`; every answer must be right.
async fn load(app: &Arc<App>, clients: usize, length: Duration, route: Route) -> Run {
    let until = Instant::now() + length;
    let started = Instant::now();
    let loops: Vec<_> = (0..clients)
        .map(|c| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = c;
                while Instant::now() < until {
                    let sent = Instant::now();
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
                    latencies.push(sent.elapsed());
                    assert_eq!(r.status, 200, "{r:?}");
                    i += clients;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for l in loops {
        latencies.extend(l.await.unwrap());
    }
    let took = started.elapsed();
    Run { latencies, took }
}
