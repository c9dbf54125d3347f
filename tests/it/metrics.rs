//! `/metrics` of `serve` and of `work` (at `worker.metrics_listen`): each count moves by
//! exactly what the test did.

use std::time::{Duration, Instant};

use support::amqp::publish_raw;
use support::config::{with_redis, REDIS};
use support::metrics::{free_address, scrape_until, Scrape};
use support::process::spawn_binary;
use support::proxy::proxy_to;
use support::started::app_with_workers;
use support::wait::within;
use support::{unique_config, App, KillOnDrop, StuckWorker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn http(route: &str, method: &str, status: u16) -> String {
    format!(r#"sumsvc_http_requests_total{{route="{route}",method="{method}",status="{status}"}}"#)
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_counts_each_request_by_route_method_and_status_and_each_task_it_published() {
    let (app, _workers) = app_with_workers().await;
    let url = app.url("/metrics");

    let before = Scrape::of(&url).await;
    for i in 0..3 {
        let r = app
            .post("/sync/sum", &format!(r#"{{"args": [{i}, 0.5]}}"#))
            .await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    for _ in 0..2 {
        let r = app.post("/async/post_task", r#"{"args": [1, 2]}"#).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(app.post("/sync/sum", r#"{"args": "no"}"#).await.status, 400);
    assert_eq!(app.get("/sync/sum").await.status, 405);
    assert_eq!(app.get("/wp-login.php").await.status, 404);
    assert_eq!(app.get("/no/such/route").await.status, 404);
    let after = Scrape::of(&url).await;

    let moved = |series: &str| after.count(series) - before.count(series);
    assert_eq!(moved(&http("/sync/sum", "POST", 200)), 3.0);
    assert_eq!(moved(&http("/sync/sum", "POST", 400)), 1.0);
    assert_eq!(moved(&http("/sync/sum", "GET", 405)), 1.0);
    assert_eq!(moved(&http("/async/post_task", "POST", 200)), 2.0);
    // Paths that are no route share one label, whatever they are.
    assert_eq!(moved(&http("other", "GET", 404)), 2.0);
    // The first scrape, counted once it was answered.
    assert_eq!(moved(&http("/metrics", "GET", 200)), 1.0);
    assert_eq!(
        moved(r#"sumsvc_http_request_duration_seconds_count{route="/sync/sum"}"#),
        5.0
    );
    assert_eq!(moved(r#"sumsvc_tasks_published_total{kind="sync"}"#), 3.0);
    assert_eq!(moved(r#"sumsvc_tasks_published_total{kind="async"}"#), 2.0);
    assert_eq!(moved("sumsvc_publish_confirm_seconds_count"), 5.0);

    assert_eq!(after.get("sumsvc_sync_waiters"), Some(0.0));
    assert_eq!(after.get("sumsvc_queue_consumers"), Some(2.0));
    for dependency in ["postgres", "rabbitmq", "redis"] {
        let up = format!(r#"sumsvc_dependency_up{{dependency="{dependency}"}}"#);
        assert_eq!(after.get(&up), Some(1.0), "{}", after.text);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_tells_how_many_sync_requests_wait_and_which_dependency_is_down() {
    let mut config = unique_config();
    config.tasks.sync_timeout = Duration::from_secs(4);
    let redis = proxy_to(REDIS).await;
    with_redis(&mut config, redis.addr);
    let app = App::start(config.clone()).await;
    // Takes the tasks and never answers: their requests wait until their deadline.
    let stuck = StuckWorker::start(&config);
    app.wait_for_workers(1).await;
    let url = app.url("/metrics");

    let app = std::sync::Arc::new(app);
    let waiting: Vec<_> = (0..3)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                app.post("/sync/sum", &format!(r#"{{"args": [{i}]}}"#))
                    .await
            })
        })
        .collect();
    scrape_until(&url, "three waiting requests", |s| {
        s.get("sumsvc_sync_waiters") == Some(3.0)
    })
    .await;
    for request in waiting {
        assert_eq!(request.await.unwrap().status, 202);
    }
    assert_eq!(Scrape::of(&url).await.get("sumsvc_sync_waiters"), Some(0.0));
    assert_eq!(stuck.received(), 3);

    let redis_up = r#"sumsvc_dependency_up{dependency="redis"}"#;
    redis.cut();
    let down = scrape_until(&url, "Redis down", |s| s.get(redis_up) == Some(0.0)).await;
    assert_eq!(
        down.get(r#"sumsvc_dependency_up{dependency="postgres"}"#),
        Some(1.0)
    );
    redis.restore();
    scrape_until(&url, "Redis up again", |s| s.get(redis_up) == Some(1.0)).await;
}

/// `sumsvc work` as a process, its metrics at a free address; returns it and the URL
/// of its `/metrics`, once it answers.
async fn spawn_worker(config: &sumsvc::Config) -> (KillOnDrop, String) {
    let mut config = config.clone();
    config.worker.metrics_listen = free_address();
    let worker = KillOnDrop(spawn_binary(&config, &["work"]));
    let base = format!("http://{}", config.worker.metrics_listen);
    let healthz = format!("{base}/healthz");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = reqwest::get(&healthz).await {
            assert_eq!(r.status(), 200);
            assert_eq!(r.text().await.unwrap(), r#"{"status":"ok"}"#);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "work never answered {healthz}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (worker, format!("{base}/metrics"))
}

fn processed(outcome: &str) -> String {
    format!(r#"sumsvc_tasks_processed_total{{outcome="{outcome}"}}"#)
}

#[tokio::test(flavor = "multi_thread")]
async fn work_counts_each_message_by_outcome_with_its_queue_wait_and_compute_time() {
    let config = unique_config();
    let app = App::start(config.clone()).await;
    let (_worker, url) = spawn_worker(&config).await;
    app.wait_for_workers(2).await;

    let before = Scrape::of(&url).await;
    for outcome in ["done", "failed", "cancelled", "dead_lettered"] {
        assert_eq!(before.count(&processed(outcome)), 0.0, "{}", before.text);
    }
    for i in 0..3 {
        let r = app
            .post("/async/post_task", &format!(r#"{{"args": [{i}]}}"#))
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let id = r.body["session_id"].as_i64().unwrap();
        assert_eq!(app.poll(id).await.body["status"], "done");
    }
    // Messages from another producer, without a publish time: one that is not a task,
    // and one whose sum exceeds the digit limit it says it was checked against.
    publish_raw(&config.rabbitmq.queue, b"not a task");
    let failing = format!(
        r#"{{"v":1,"task_id":"{}","args":[123456789,1],"max_result_digits":3}}"#,
        uuid::Uuid::new_v4()
    );
    publish_raw(&config.rabbitmq.queue, failing.as_bytes());

    let after = scrape_until(&url, "five messages settled", |s| {
        s.count(&processed("done")) == 3.0
            && s.count(&processed("failed")) == 1.0
            && s.count(&processed("dead_lettered")) == 1.0
    })
    .await;
    assert_eq!(after.get("sumsvc_task_compute_seconds_count"), Some(5.0));
    // Only the API's messages carry their publish time.
    assert_eq!(after.get("sumsvc_task_queue_wait_seconds_count"), Some(3.0));
    assert_eq!(after.count("sumsvc_redis_write_retries_total"), 0.0);
    assert_eq!(after.get("sumsvc_tasks_held"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn work_counts_results_held_while_redis_is_cut_and_their_retries() {
    let config = unique_config();
    let app = App::start(config.clone()).await;
    let redis = proxy_to(REDIS).await;
    redis.cut();
    let mut worker_config = config.clone();
    with_redis(&mut worker_config, redis.addr);
    let (_worker, url) = spawn_worker(&worker_config).await;
    app.wait_for_workers(2).await;

    let mut sessions = Vec::new();
    for i in 0..2 {
        let r = app
            .post("/async/post_task", &format!(r#"{{"args": [{i}]}}"#))
            .await;
        sessions.push(r.body["session_id"].as_i64().unwrap());
    }
    let held = scrape_until(&url, "two results held", |s| {
        s.get("sumsvc_tasks_held") == Some(2.0)
    })
    .await;
    assert_eq!(held.count(&processed("done")), 0.0);

    redis.restore();
    let after = scrape_until(&url, "both results stored", |s| {
        s.count(&processed("done")) == 2.0
    })
    .await;
    assert_eq!(after.get("sumsvc_tasks_held"), Some(0.0));
    // Each held result is written again at least once; how often depends on how long
    // the retries' backoff took to meet the restored Redis.
    let retries = after.count("sumsvc_redis_write_retries_total");
    assert!(retries >= 2.0, "{retries} retries:\n{}", after.text);
    for id in sessions {
        assert_eq!(app.poll(id).await.body["status"], "done");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn work_whose_metrics_address_is_taken_stops_at_start_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = unique_config();
    config.worker.metrics_listen = taken.local_addr().unwrap();
    let ran = support::cli::run_binary(&config, &["work"]).await;
    let said = ran.failed();
    assert!(said.contains("worker.metrics_listen"), "{said}");
    assert!(
        said.contains(&config.worker.metrics_listen.to_string()),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn work_s_metrics_port_cuts_a_client_that_never_finishes_its_head_at_the_header_timeout() {
    let mut config = unique_config();
    config.http.header_timeout = Duration::from_secs(1);
    let _app = App::start(config.clone()).await;
    let (_worker, url) = spawn_worker(&config).await;
    let addr = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_owned();

    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let opened = Instant::now();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: wo")
        .await
        .unwrap();
    let mut sink = [0u8; 1024];
    within(
        Duration::from_secs(5),
        "work to close a connection whose head never ends",
        async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} },
    )
    .await;
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_millis(950),
        "closed after {after:?}, before the header timeout of 1 s"
    );
    // The port still answers.
    assert!(Scrape::of(&url).await.text.contains("sumsvc_"));
}
