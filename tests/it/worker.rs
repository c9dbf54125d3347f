//! The worker role: dead-lettering, crashes mid-task, and draining on SIGTERM.

use std::time::{Duration, Instant};

use support::amqp::{amqp, publish_raw, queue_depth};
use support::cleanup::cleanup;
use support::config::{with_redis, ListenOnFreePort, REDIS};
use support::process::{env_of, signal, spawn_binary};
use support::proxy::proxy_to;
use support::wait::{wait_until, within};
use support::{unique_config, App, Remote, StuckWorker, Workers};

async fn submit(app: &App, body: &str) -> i64 {
    let r = app.post("/async/post_task", body).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["session_id"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_that_is_not_a_task_goes_to_the_dead_letter_queue_once() {
    let config = unique_config();
    let app = App::start(config.clone()).await;
    let _workers = Workers::start(&config);
    app.wait_for_workers(2).await;
    let dead = format!("{}.dead", config.rabbitmq.queue);

    publish_raw(&config.rabbitmq.queue, b"this is not a task");
    publish_raw(&config.rabbitmq.queue, br#"{"v": 99, "task_id": "x"}"#);
    wait_until("two dead letters", Duration::from_secs(20), || {
        queue_depth(&dead) == 2
    })
    .await;

    // The workers go on with real work, and the dead letters stay dead.
    let id = submit(&app, r#"{"args": [1, 1]}"#).await;
    assert_eq!(app.poll(id).await.body["status"], "done");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(queue_depth(&dead), 2);
    assert_eq!(queue_depth(&config.rabbitmq.queue), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_task_leaves_it_to_another_that_completes_it_once() {
    let config = unique_config();
    let app = App::start(config.clone()).await;

    // This worker takes the task but cannot store its result: Redis is cut for it.
    let redis = proxy_to(REDIS).await;
    redis.cut();
    let mut doomed_config = config.clone();
    with_redis(&mut doomed_config, redis.addr);
    doomed_config.worker.concurrency = 1;
    let mut doomed = spawn_binary(&doomed_config, &["work"]);
    app.wait_for_workers(1).await;

    let id = submit(&app, r#"{"args": [0.1, 0.2]}"#).await;
    wait_until(
        "the worker to hold the task",
        Duration::from_secs(20),
        || queue_depth(&config.rabbitmq.queue) == 0,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.poll_once(id).await.body["status"], "pending");

    signal(&doomed, "KILL");
    doomed.wait().unwrap();
    app.wait_for_workers(0).await;

    let _workers = Workers::start(&config);
    let r = app.poll(id).await;
    assert_eq!(r.body["status"], "done", "{r:?}");
    assert!(r.text.contains(r#""result":0.3"#), "{}", r.text);
    // One outcome, stored once: the key holds exactly what the API returned.
    let stored = app.stored_outcome(id).await;
    assert_eq!(stored, r#"{"status":"done","result":0.3}"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_makes_a_worker_finish_what_it_holds_and_lose_nothing() {
    const N: usize = 300;
    let config = unique_config();
    let app = App::start(config.clone()).await;
    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(submit(&app, &format!(r#"{{"args": [{i}]}}"#)).await);
    }

    let mut worker_config = config.clone();
    worker_config.worker.concurrency = 1;
    worker_config.worker.prefetch = 50;
    let mut worker = spawn_binary(&worker_config, &["work"]);
    wait_until("the worker to start", Duration::from_secs(20), || {
        queue_depth(&config.rabbitmq.queue) < N as u32
    })
    .await;
    signal(&worker, "TERM");
    let status = worker.wait().unwrap();
    assert!(status.success(), "worker exited with {status}");

    // Every task is either done or back in the queue: none is lost or half done.
    let mut done = 0;
    for id in &ids {
        if app.poll_once(*id).await.body["status"] == "done" {
            done += 1;
        }
    }
    let queued = queue_depth(&config.rabbitmq.queue) as usize;
    assert!(done > 0, "the worker did no work before SIGTERM");
    assert_eq!(done + queued, N, "done {done} + queued {queued}");

    let _workers = Workers::start(&config);
    for (i, id) in ids.iter().enumerate() {
        let r = app.poll(*id).await;
        assert_eq!(r.body["result"], i, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_makes_serve_drain_waiting_requests() {
    let mut config = unique_config();
    config.listen_on_free_port();
    sumsvc::migrate_database(&config.postgres, &config.tls)
        .await
        .unwrap();
    let stuck = StuckWorker::start(&config);
    let mut serve = spawn_binary(&config, &["serve"]);
    let remote = Remote::at(&config);
    remote.wait_until_ready(1).await;
    let (base, client) = (remote.base.clone(), remote.client.clone());

    let waiting = {
        let client = client.clone();
        let url = format!("{base}/sync/sum");
        tokio::spawn(async move {
            client
                .post(url)
                .header("content-type", "application/json")
                .body(r#"{"args": [20, 22]}"#)
                .send()
                .await
        })
    };
    wait_until(
        "the task to reach the worker",
        Duration::from_secs(20),
        || stuck.received() == 1,
    )
    .await;
    signal(&serve, "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Draining: new connections are refused, the waiting request is still served.
    assert!(client.get(format!("{base}/healthz")).send().await.is_err());
    stuck.release();
    let resumed = Instant::now();
    let workers = Workers::start(&config);
    let r = waiting
        .await
        .unwrap()
        .expect("the waiting request is answered");
    // Woken by its notice, not by reading the key at its 30 s deadline: result
    // notifications keep flowing while serve drains.
    assert!(
        resumed.elapsed() < Duration::from_secs(10),
        "{:?}",
        resumed.elapsed()
    );
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"result":42}"#);
    assert!(serve.wait().unwrap().success());
    workers.stop().await;
    cleanup(&config);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_computes_what_the_api_accepted_whatever_its_own_digit_limit() {
    let config = unique_config();
    let app = App::start(config.clone()).await;
    let mut strict = config.clone();
    strict.limits.max_result_digits = 5;
    let _workers = Workers::start(&strict);
    app.wait_for_workers(2).await;
    let id = submit(&app, r#"{"args": [123456789, 1]}"#).await;
    let r = app.poll(id).await;
    assert_eq!(r.body["status"], "done", "{r:?}");
    assert!(r.text.contains(r#""result":123456790"#), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_makes_a_worker_exit_at_once_and_its_tasks_go_back_to_the_queue() {
    const N: usize = 20;
    let mut config = unique_config();
    let app = App::start(config.clone()).await;
    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(submit(&app, &format!(r#"{{"args": [{i}, 0.5]}}"#)).await);
    }
    // Redis is cut for this worker: it holds every task and would retry storing them
    // for a whole minute of draining.
    let redis = proxy_to(REDIS).await;
    redis.cut();
    with_redis(&mut config, redis.addr);
    config.worker.concurrency = 1;
    config.worker.drain_timeout = Duration::from_secs(60);
    let mut worker = spawn_binary(&config, &["work"]);
    wait_until(
        "the worker to hold every task",
        Duration::from_secs(20),
        || queue_depth(&app.config.rabbitmq.queue) == 0,
    )
    .await;

    signal(&worker, "TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the first SIGTERM drains"
    );
    let second = Instant::now();
    signal(&worker, "TERM");
    let status = tokio::task::block_in_place(|| worker.wait().unwrap());
    assert!(
        second.elapsed() < Duration::from_secs(2),
        "{:?}",
        second.elapsed()
    );
    assert!(
        !status.success(),
        "a cut-short drain exits non-zero: {status}"
    );

    // Nothing was acked: every task is back in the queue, and a healthy worker does it.
    wait_until("the tasks to return", Duration::from_secs(20), || {
        queue_depth(&app.config.rabbitmq.queue) == N as u32
    })
    .await;
    let _workers = Workers::start(&app.config);
    for (i, id) in ids.iter().enumerate() {
        let r = app.poll(*id).await;
        assert!(r.text.contains(&format!(r#""result":{i}.5"#)), "{}", r.text);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_can_never_consume_exits_non_zero_naming_the_cause() {
    let config = unique_config();
    // Someone declared the task queue with other arguments: the broker refuses ours
    // every time, and no amount of reconnecting will change that.
    let queue = config.rabbitmq.queue.clone();
    amqp(|channel| {
        channel
            .queue_declare(
                queue,
                amiquip::QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
            )
            .map(drop)
            .unwrap()
    });
    let started = Instant::now();
    let output = tokio::task::spawn_blocking({
        let config = config.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_sumsvc"))
                .arg("work")
                .envs(env_of(&config))
                .env("RUST_LOG", "warn")
                .output()
                .unwrap()
        }
    });
    let output = within(Duration::from_secs(30), "the worker to give up", output)
        .await
        .unwrap();
    cleanup(&config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("workers cannot consume"), "{stderr}");
    assert!(stderr.contains("inequivalent arg"), "{stderr}");
    assert!(
        stderr.contains("rabbitmq.quorum"),
        "the hint is kept: {stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}
