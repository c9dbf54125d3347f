//! Holds 10,000 concurrent sync requests on one `serve` process (the release binary, as
//! a child process) while its worker is paused, and measures how fast `/healthz` and
//! `/async/post_task` answer meanwhile, against the same requests on the idle server
//! (the baseline, same run), and how much resident memory `serve` holds per waiting
//! request. Then resumes the worker and checks that every waiting request gets its own
//! sum.
//!
//! Run: `cargo bench --bench waiters` (needs PostgreSQL, RabbitMQ and Redis on localhost).
//! `SUMSVC_BENCH_WAITERS=N` changes the number of waiting requests. Leave a minute
//! between runs: each leaves 10,000 client ports in TIME_WAIT.

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::bench::{bench_main, env_or};
use support::wait::wait_until;
use support::{unique_config, App, Reply, StuckWorker, Workers};

fn main() {
    raise_fd_limit();
    bench_main(run());
}

async fn run() {
    let n = env_or("SUMSVC_BENCH_WAITERS", 10_000) as usize;
    let mut config = unique_config();
    config.tasks.sync_timeout = Duration::from_secs(120);
    config.rabbitmq.timeout = Duration::from_secs(10);
    let app = Arc::new(App::spawn(config.clone()).await);
    let stuck = StuckWorker::start(&config);
    app.wait_for_workers(1).await;

    let idle_health = latencies(&app, 200, Probe::Healthz).await;
    let idle_post = latencies(&app, 200, Probe::PostTask).await;
    let serve_pid = app.child.as_ref().expect("serve runs as a child").id();
    let idle_rss = support::procstat::rss_bytes(serve_pid).unwrap();
    // The probes' tasks reach the stuck consumer a little after their confirms: count
    // them all before any waiting request is sent, or some of those would be taken for
    // probes and the wait below would end short.
    let probe_tasks = idle_post.len();
    wait_until(
        "the probes' tasks to arrive",
        Duration::from_secs(10),
        || stuck.received() == probe_tasks,
    )
    .await;

    let started = Instant::now();
    let clients: Vec<reqwest::Client> = (0..n.div_ceil(100))
        .map(|_| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(200)
                .build()
                .unwrap()
        })
        .collect();
    let requests: Vec<_> = (0..n)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            let url = app.url("/sync/sum");
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"args": [{i}, 0.5]}}"#))
                    .send()
                    .await;
                (i, Reply::read(r).await)
            })
        })
        .collect();
    while stuck.received() < probe_tasks + n {
        if started.elapsed() > Duration::from_secs(60) {
            let finished: Vec<_> = requests.iter().filter(|r| r.is_finished()).collect();
            eprintln!("{} requests finished early:", finished.len());
            for r in requests.into_iter().filter(|r| r.is_finished()).take(5) {
                eprintln!("{:?}", r.await.unwrap());
            }
            panic!(
                "only {} of {n} requests queued",
                stuck.received() - probe_tasks
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let queued_in = started.elapsed();
    let busy_rss = support::procstat::rss_bytes(serve_pid).unwrap();

    let busy_health = latencies(&app, 200, Probe::Healthz).await;
    let busy_post = latencies(&app, 200, Probe::PostTask).await;

    stuck.release();
    let resumed = Instant::now();
    let workers = Workers::start(&config);
    let mut right = 0;
    for request in requests {
        let (i, r) = request.await.unwrap();
        if r.status == 200 && r.text == format!(r#"{{"result":{i}.5}}"#) {
            right += 1;
        } else {
            eprintln!("request {i}: {r:?}");
        }
    }
    let answered_in = resumed.elapsed();
    workers.stop().await;

    println!("waiting sync requests:    {n}, all queued in {queued_in:.2?}");
    println!(
        "serve RSS:                {:.1} MB idle, {:.1} MB with them waiting: {:.1} KB per waiting request",
        idle_rss as f64 / 1e6,
        busy_rss as f64 / 1e6,
        (busy_rss.saturating_sub(idle_rss)) as f64 / 1024.0 / n as f64
    );
    report("GET /healthz", &idle_health, &busy_health);
    report("POST /async/post_task", &idle_post, &busy_post);
    println!("after resuming the worker: {right}/{n} right sums in {answered_in:.2?}");
    assert_eq!(right, n, "some waiting requests got a wrong answer");
}

#[derive(Clone, Copy)]
enum Probe {
    Healthz,
    PostTask,
}

/// Sequential request latencies, sorted.
async fn latencies(app: &App, count: usize, probe: Probe) -> Vec<Duration> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let r = match probe {
            Probe::Healthz => app.get("/healthz").await,
            Probe::PostTask => app.post("/async/post_task", r#"{"args": [1]}"#).await,
        };
        out.push(started.elapsed());
        assert_eq!(r.status, 200, "{r:?}");
    }
    out.sort();
    out
}

fn report(what: &str, idle: &[Duration], busy: &[Duration]) {
    let p = |v: &[Duration], q: f64| v[((v.len() - 1) as f64 * q) as usize];
    println!(
        "{what:<22} idle p50 {:>9.2?} p99 {:>9.2?} | with waiters p50 {:>9.2?} p99 {:>9.2?} | p50 ratio {:.2}",
        p(idle, 0.5),
        p(idle, 0.99),
        p(busy, 0.5),
        p(busy, 0.99),
        p(busy, 0.5).as_secs_f64() / p(idle, 0.5).as_secs_f64()
    );
}

/// 10,000 waiting requests hold 10,000 client sockets in this process.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            let want = 65_536.max(limit.rlim_cur);
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: want.max(limit.rlim_max),
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
        }
    }
}
