//! A full Redis (out of memory under `noeviction`) refuses to store results. `serve`
//! then turns sync requests away at once and says so to those who submit; workers hold
//! their tasks unacked and retry them, go on dead-lettering what is not a task, hand
//! what they hold back to the queue when they stop, and complete every task once Redis
//! has room again. Each test fills a private `redis-server` of its own with
//! `CONFIG SET maxmemory`, never the shared one.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use deadpool_redis::redis;
use support::amqp::{publish_raw, queue_depth};
use support::process::{signal, spawn_binary};
use support::rabbitmqctl::{queue_counts, wait_for_counts, QueueCounts};
use support::redis_server::RedisServer;
use support::wait::{wait_until, within};
use support::{unique_config, App, KillOnDrop, Workers};

/// Tasks submitted while Redis is full: fewer than one consumer's prefetch, so a
/// consumer that holds them all is still sent whatever comes next.
const N: usize = 10;

/// How long RabbitMQ may take to deliver the tasks to the workers.
const DELIVERY: Duration = Duration::from_secs(20);

/// What the tasks look like when workers hold all `n` of them.
const fn held(n: usize) -> QueueCounts {
    QueueCounts {
        ready: 0,
        unacked: n as u64,
    }
}

/// A Redis that refuses writes, rather than evicting results, once it is full.
async fn noeviction_redis() -> RedisServer {
    RedisServer::start(&["--maxmemory-policy", "noeviction"]).await
}

/// A config of its own with results in `redis`.
fn config_on(redis: &RedisServer) -> sumsvc::Config {
    let mut config = unique_config();
    config.redis.url = redis.url().into();
    config
}

/// Redis uses more than 1 byte: every write is refused with `OOM`.
async fn fill(redis: &RedisServer) {
    redis.config_set("maxmemory", "1").await;
}

async fn make_room(redis: &RedisServer) {
    redis.config_set("maxmemory", "0").await;
}

/// Submits task `i`, whose exact sum is `i.3`; floats would give `i.30000000000000004`.
async fn submit(app: &App, i: usize) -> i64 {
    let r = app
        .post(
            "/async/post_task",
            &format!(r#"{{"args": [{i}, 0.1, 0.2]}}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["session_id"].as_i64().unwrap()
}

/// Submits tasks `range`, returning each `(i, session_id)`.
async fn submit_all(app: &App, range: std::ops::Range<usize>) -> Vec<(usize, i64)> {
    let mut tasks = Vec::new();
    for i in range {
        tasks.push((i, submit(app, i).await));
    }
    tasks
}

/// Waits for task `i` to be done and checks what the user reads.
async fn assert_done(app: &App, (i, id): (usize, i64)) {
    let r = app.poll(id).await;
    assert_eq!(
        r.text,
        format!(r#"{{"session_id":{id},"result":{i}.3,"status":"done"}}"#)
    );
}

async fn assert_all_done(app: &App, tasks: &[(usize, i64)]) {
    for task in tasks {
        assert_done(app, *task).await;
    }
}

async fn assert_all_pending(app: &App, tasks: &[(usize, i64)]) {
    for (_, id) in tasks {
        let r = app.poll_once(*id).await;
        assert_eq!(r.body["status"], "pending", "{r:?}");
    }
}

/// How many results `redis` holds for the test's tasks.
async fn stored_results(redis: &RedisServer, app: &App) -> usize {
    let pattern = format!("{}:result:*", app.config.redis.prefix);
    match redis.command(&["KEYS", &pattern]).await.unwrap() {
        redis::Value::Array(keys) => keys.len(),
        other => panic!("KEYS answered {other:?}"),
    }
}

fn dead_letters(app: &App) -> u32 {
    queue_depth(&format!("{}.dead", app.config.rabbitmq.queue))
}

/// Waits for a child process to exit, for at most `limit`.
async fn exit_of(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "still running after {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_redis_leaves_tasks_unacked_and_they_complete_once_it_has_room() {
    let redis = noeviction_redis().await;
    let app = App::start(config_on(&redis)).await;
    let queue = app.config.rabbitmq.queue.clone();
    let _workers = Workers::start(&app.config);
    app.wait_for(|r| r.status == 200 && r.body["workers"] == 2, "readiness")
        .await;
    let before = submit_all(&app, 0..3).await;
    assert_all_done(&app, &before).await;

    fill(&redis).await;
    // Submitting needs only RabbitMQ and PostgreSQL: work is still accepted.
    let during = submit_all(&app, 3..3 + N).await;
    // The workers hold every task unacked: none is lost, none is dead-lettered...
    wait_for_counts(&queue, held(N), DELIVERY).await;
    // ...and they still do after several retries (each waits at most about 1 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(queue_counts(&queue).await, held(N));
    assert_eq!(dead_letters(&app), 0);
    assert_all_pending(&app, &during).await;
    let r = app.get("/readyz").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.body["redis"]["status"], "down", "{r:?}");
    let cause = r.body["redis"]["error"].as_str().unwrap();
    for needle in ["Redis refuses writes, so results cannot be stored", "OOM"] {
        assert!(cause.contains(needle), "{cause:?} should say {needle:?}");
    }
    // The workers are busy retrying, not gone.
    assert_eq!(r.body["workers"], 2, "{r:?}");

    make_room(&redis).await;
    // The next retry, at most about a second away, stores them all.
    within(
        Duration::from_secs(5),
        "the held tasks to complete",
        assert_all_done(&app, &during),
    )
    .await;
    app.wait_for(|r| r.status == 200, "readiness").await;
    assert_eq!(queue_counts(&queue).await, held(0));
    assert_eq!(dead_letters(&app), 0);
    assert_eq!(stored_results(&redis, &app).await, 3 + N);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_redis_turns_sync_requests_away_at_once_and_submits_say_their_result_waits() {
    let redis = noeviction_redis().await;
    let app = App::start(config_on(&redis)).await;
    let _workers = Workers::start(&app.config);
    app.wait_for(|r| r.status == 200 && r.body["workers"] == 2, "readiness")
        .await;

    fill(&redis).await;
    // serve writes to Redis every second: by then it knows.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let r = app.post("/sync/sum", r#"{"args": [1, 2]}"#).await;
    assert!(started.elapsed() < Duration::from_secs(1), "{r:?}");
    r.assert_problem(503, "Redis refuses writes");
    r.assert_problem(503, "OOM");
    // A submitted task is taken, and the answer says why its result waits.
    let r = app
        .post("/async/post_task", r#"{"args": [7, 0.1, 0.2]}"#)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let warning = r.body["warning"].as_str().unwrap_or_default();
    for needle in [
        "Redis refuses writes",
        "OOM",
        "stored once Redis takes writes",
    ] {
        assert!(
            warning.contains(needle),
            "{warning:?} should say {needle:?}"
        );
    }
    let during = (7, r.body["session_id"].as_i64().unwrap());
    assert_all_pending(&app, &[during]).await;

    // In bulk alike: the sync batch turned away at once, the submitted batch taken with
    // the reason its results wait.
    let batch = r#"{"tasks": [{"args": [8, 0.1, 0.2]}, {"args": [9, 0.1, 0.2]}]}"#;
    let started = Instant::now();
    let r = app.post("/sync/sums", batch).await;
    assert!(started.elapsed() < Duration::from_secs(1), "{r:?}");
    r.assert_problem(503, "OOM");
    let r = app.post("/async/post_tasks", batch).await;
    assert_eq!(r.status, 200, "{r:?}");
    let warning = r.body["warning"].as_str().unwrap_or_default();
    assert!(warning.contains("OOM"), "{warning:?}");
    assert!(
        warning.contains("stored once Redis takes writes"),
        "{warning:?}"
    );
    let ids = r.body["session_ids"].as_array().unwrap();
    let in_bulk: Vec<(usize, i64)> = [8, 9]
        .into_iter()
        .zip(ids.iter().map(|id| id.as_i64().unwrap()))
        .collect();
    assert_all_pending(&app, &in_bulk).await;

    make_room(&redis).await;
    sync_answers_within_two_seconds(&app).await;
    assert_done(&app, during).await;
    assert_all_done(&app, &in_bulk).await;
    let r = app.post("/async/post_task", r#"{"args": [1]}"#).await;
    assert!(r.body.get("warning").is_none(), "{r:?}");
}

/// A sync request is answered with its sum again within 2 s.
async fn sync_answers_within_two_seconds(app: &App) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let r = app.post("/sync/sum", r#"{"args": [0.1, 0.2]}"#).await;
        if r.status == 200 {
            assert_eq!(r.text, r#"{"result":0.3}"#);
            return;
        }
        assert!(Instant::now() < deadline, "still {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_held_up_by_a_full_redis_still_dead_letters_what_is_not_a_task() {
    let redis = noeviction_redis().await;
    let mut config = config_on(&redis);
    // One consumer: the one that holds the tasks is the one sent the garbage.
    config.worker.concurrency = 1;
    let app = App::start(config).await;
    let queue = app.config.rabbitmq.queue.clone();
    let _workers = Workers::start(&app.config);
    app.wait_for(|r| r.status == 200 && r.body["workers"] == 1, "readiness")
        .await;

    fill(&redis).await;
    let tasks = submit_all(&app, 0..N).await;
    wait_for_counts(&queue, held(N), DELIVERY).await;

    publish_raw(&queue, b"this is not a task");
    wait_until(
        "the garbage to be dead-lettered",
        Duration::from_secs(3),
        || dead_letters(&app) == 1,
    )
    .await;
    // The tasks are still held, not dead-lettered with it.
    assert_eq!(queue_counts(&queue).await, held(N));
    assert_all_pending(&app, &tasks).await;

    make_room(&redis).await;
    assert_all_done(&app, &tasks).await;
    assert_eq!(queue_counts(&queue).await, held(0));
    assert_eq!(dead_letters(&app), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_stopping_while_redis_is_full_returns_its_tasks_to_the_queue() {
    const DRAIN: Duration = Duration::from_secs(2);
    let redis = noeviction_redis().await;
    let app = App::start(config_on(&redis)).await;
    let queue = app.config.rabbitmq.queue.clone();
    fill(&redis).await;
    let tasks = submit_all(&app, 0..N).await;
    let mut worker_config = app.config.clone();
    worker_config.worker.drain_timeout = DRAIN;
    let mut worker = KillOnDrop(spawn_binary(&worker_config, &["work"]));
    wait_for_counts(&queue, held(N), DELIVERY).await;

    signal(&worker.0, "TERM");
    let stopping = Instant::now();
    let status = exit_of(&mut worker.0, DRAIN + Duration::from_secs(10)).await;
    let took = stopping.elapsed();
    assert!(status.success(), "worker exited with {status}");
    // It tried to store what it held until worker.drain_timeout, and no longer.
    assert!(
        took >= DRAIN,
        "stopped after {took:?}, before trying for {DRAIN:?}"
    );
    assert!(
        took < DRAIN + Duration::from_millis(1500),
        "stopped after {took:?}, drain timeout {DRAIN:?}"
    );

    // Nothing was acked or dead-lettered: every task is back in the queue.
    wait_until("the tasks to return", Duration::from_secs(5), || {
        queue_depth(&queue) == N as u32
    })
    .await;
    assert_eq!(
        queue_counts(&queue).await,
        QueueCounts {
            ready: N as u64,
            unacked: 0
        }
    );
    assert_eq!(dead_letters(&app), 0);
    assert_all_pending(&app, &tasks).await;

    make_room(&redis).await;
    let _workers = Workers::start(&app.config);
    assert_all_done(&app, &tasks).await;
    assert_eq!(queue_counts(&queue).await, held(0));
    assert_eq!(stored_results(&redis, &app).await, N);
}
