//! Dependency faults: each dependency is cut through a TCP proxy while the service runs.
//! The routes that need it answer 503 naming it within 2 seconds, the rest keep
//! working, and when it returns everything recovers with no restart and no task lost.

use std::time::{Duration, Instant};

use support::config::{with_postgres, with_rabbitmq, with_redis, POSTGRES, RABBITMQ, REDIS};
use support::proxy::proxy_to;
use support::{unique_config, App, Reply, StuckWorker, Workers};

const FAST: Duration = Duration::from_secs(2);

/// Runs a request and checks it answered within 2 seconds.
async fn timed(what: &str, f: impl std::future::Future<Output = Reply>) -> Reply {
    let started = Instant::now();
    let r = f.await;
    let took = started.elapsed();
    assert!(took < FAST, "{what} took {took:?}: {r:?}");
    r
}

/// Retries `f` until it gives `status`, for at most 20 s.
async fn eventually<F, Fut>(status: u16, what: &str, f: F) -> Reply
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = f().await;
        if r.status == status {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never answered {status}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn submit(app: &App, body: &str) -> i64 {
    let r = app.post("/async/post_task", body).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["session_id"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rabbitmq_outage_answers_503_fast_and_recovers_without_losing_tasks() {
    let proxy = proxy_to(RABBITMQ).await;
    let mut config = unique_config();
    with_rabbitmq(&mut config, proxy.addr);
    let app = App::start(config.clone()).await;
    let _workers = Workers::start(&config);
    app.wait_for_workers(2).await;
    let before = submit(&app, r#"{"args": [1, 2]}"#).await;

    proxy.cut();
    let r = timed(
        "post_task",
        app.post("/async/post_task", r#"{"args": [1]}"#),
    )
    .await;
    r.assert_problem(503, "RabbitMQ");
    assert!(r.header("retry-after").is_some());
    timed("sync", app.post("/sync/sum", r#"{"args": [1]}"#))
        .await
        .assert_problem(503, "RabbitMQ");
    let ready = timed("readyz", app.get("/readyz")).await;
    assert_eq!(ready.status, 503, "{ready:?}");
    assert_eq!(ready.body["rabbitmq"]["status"], "down");
    assert!(ready.body["rabbitmq"]["error"].is_string());
    assert_eq!(ready.body["postgres"]["status"], "up");
    // Polling needs only PostgreSQL and Redis.
    assert_eq!(timed("poll", app.poll(before)).await.body["status"], "done");

    proxy.restore();
    app.wait_for_workers(2).await;
    let after = eventually(200, "post_task", || {
        app.post("/async/post_task", r#"{"args": [3, 4]}"#)
    })
    .await;
    let after = after.body["session_id"].as_i64().unwrap();
    assert!(app.poll(after).await.text.contains(r#""result":7"#));
    let r = app.post("/sync/sum", r#"{"args": [5, 6]}"#).await;
    assert_eq!(r.text, r#"{"result":11}"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_outage_answers_503_fast_and_tasks_accepted_meanwhile_complete() {
    let proxy = proxy_to(REDIS).await;
    let mut config = unique_config();
    with_redis(&mut config, proxy.addr);
    let app = App::start(config.clone()).await;
    let _workers = Workers::start(&config);
    app.wait_for_workers(2).await;
    let before = submit(&app, r#"{"args": [1, 2]}"#).await;
    assert_eq!(app.poll(before).await.body["status"], "done");

    proxy.cut();
    timed(
        "poll",
        app.get(&format!("/async/get_task_result?session_id={before}")),
    )
    .await
    .assert_problem(503, "Redis");
    let sync = eventually(503, "sync", || app.post("/sync/sum", r#"{"args": [1]}"#)).await;
    sync.assert_problem(503, "Redis");
    let ready = timed("readyz", app.get("/readyz")).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body["redis"]["status"], "down");
    // Submitting needs only RabbitMQ and PostgreSQL: work is still accepted.
    let during: Vec<i64> = futures_util::future::join_all((0..20).map(|i| {
        let app = &app;
        async move { submit(app, &format!(r#"{{"args": [{i}, 0.5]}}"#)).await }
    }))
    .await;

    proxy.restore();
    app.wait_for(|r| r.status == 200, "readiness").await;
    for (i, id) in during.iter().enumerate() {
        let r = app.poll(*id).await;
        assert_eq!(r.body["status"], "done", "{r:?}");
        assert!(r.text.contains(&format!(r#""result":{i}.5"#)), "{}", r.text);
    }
    let r = eventually(200, "sync", || app.post("/sync/sum", r#"{"args": [2, 2]}"#)).await;
    assert_eq!(r.text, r#"{"result":4}"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_outage_answers_503_fast_and_recovers() {
    let proxy = proxy_to(POSTGRES).await;
    let mut config = unique_config();
    with_postgres(&mut config, proxy.addr);
    let app = App::start(config.clone()).await;
    let _workers = Workers::start(&config);
    app.wait_for_workers(2).await;
    let before = submit(&app, r#"{"args": [1]}"#).await;

    proxy.cut();
    timed(
        "post_task",
        app.post("/async/post_task", r#"{"args": [1]}"#),
    )
    .await
    .assert_problem(503, "PostgreSQL");
    timed(
        "poll",
        app.get(&format!("/async/get_task_result?session_id={before}")),
    )
    .await
    .assert_problem(503, "PostgreSQL");
    let ready = timed("readyz", app.get("/readyz")).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body["postgres"]["status"], "down");
    // A sync request that finishes in time needs no session.
    let r = timed("sync", app.post("/sync/sum", r#"{"args": [0.1, 0.2]}"#)).await;
    assert_eq!(r.status, 200, "{r:?}");

    proxy.restore();
    let r = eventually(200, "poll", || app.poll_once(before)).await;
    assert_eq!(r.body["status"], "done");
    submit(&app, r#"{"args": [1]}"#).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_starts_with_only_postgres_and_connects_when_the_others_come() {
    let rabbit = proxy_to(RABBITMQ).await;
    let redis = proxy_to(REDIS).await;
    rabbit.cut();
    redis.cut();
    let mut config = unique_config();
    with_rabbitmq(&mut config, rabbit.addr);
    with_redis(&mut config, redis.addr);
    let app = App::start(config.clone()).await;

    assert_eq!(app.get("/healthz").await.status, 200);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body["rabbitmq"]["status"], "down");
    assert_eq!(ready.body["redis"]["status"], "down");
    timed(
        "post_task",
        app.post("/async/post_task", r#"{"args": [1]}"#),
    )
    .await
    .assert_problem(503, "RabbitMQ");

    rabbit.restore();
    redis.restore();
    let _workers = Workers::start(&config);
    app.wait_for(|r| r.status == 200 && r.body["workers"] == 2, "readiness")
        .await;
    let r = app.post("/sync/sum", r#"{"args": [40, 2]}"#).await;
    assert_eq!(r.text, r#"{"result":42}"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_request_whose_result_cannot_be_read_at_its_deadline_gets_a_session() {
    let proxy = proxy_to(REDIS).await;
    let mut config = unique_config();
    with_redis(&mut config, proxy.addr);
    config.tasks.sync_timeout = Duration::from_secs(2);
    let app = std::sync::Arc::new(App::start(config.clone()).await);
    let stuck = StuckWorker::start(&config);
    app.wait_for(|r| r.status == 200 && r.body["workers"] == 1, "readiness")
        .await;

    let waiting = {
        let app = app.clone();
        tokio::spawn(async move { app.post("/sync/sum", r#"{"args": [1, 2]}"#).await })
    };
    while stuck.received() < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Redis goes away while the request waits: at its deadline the task is queued and
    // PostgreSQL is up, so the answer is a session to poll, not an error.
    proxy.cut();
    let r = waiting.await.unwrap();
    assert_eq!(r.status, 202, "{r:?}");
    let id = r.body["session_id"].as_i64().unwrap();

    proxy.restore();
    stuck.release();
    let _workers = Workers::start(&config);
    let done = eventually(200, "poll", || app.poll_once(id)).await;
    let done = if done.body["status"] == "pending" {
        app.poll(id).await
    } else {
        done
    };
    assert!(done.text.contains(r#""result":3"#), "{}", done.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_publish_backlog_answers_503_at_once() {
    // A "broker" that accepts connections and never speaks: the publisher thread stays
    // stuck in its handshake while tasks pile up for it.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let mut config = unique_config().rabbitmq;
    config.url = format!("amqp://guest:guest@{addr}/%2f").into();
    config.timeout = Duration::from_secs(2);
    config.publish_backlog_bytes = 3000;
    let publisher = sumsvc::Publisher::start(&config, &Default::default()).unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });

    let args = format!("[{}]", vec!["1"; 1000].join(","));
    let task = || {
        let raw = serde_json::value::RawValue::from_string(args.clone()).unwrap();
        sumsvc::TaskMessage::new(uuid::Uuid::new_v4(), raw, None)
    };
    let (first_task, second_task) = (task(), task());
    let first = publisher.publish(&first_task);
    let second = async {
        // Let the first one take its place in the backlog.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let r = publisher.publish(&second_task).await;
        (r, started.elapsed())
    };
    let (first, (second, took)) = tokio::join!(first, second);
    let err = second.unwrap_err();
    assert!(
        err.cause.contains("rabbitmq.publish_backlog_bytes"),
        "{err}"
    );
    assert!(took < Duration::from_millis(100), "{took:?}");
    // The first waited its turn and then failed within rabbitmq.timeout: nothing hangs.
    assert!(first.is_err());
}
