//! A session's own routes: the long poll (`Prefer: wait=N` on `get_task_result` and
//! `GET /async/tasks/{id}`) and cancellation (`DELETE /async/tasks/{id}`), in both auth
//! modes, against real workers.

use std::time::{Duration, Instant};

use serde_json::json;
use support::amqp::queue_depth;
use support::keys::{keys_config, start_with_keys, Client};
use support::wait::wait_until;
use support::{unique_config, App, Reply, Workers};

async fn long_poll(app: &App, id: i64, wait: u64) -> (Reply, Duration) {
    let started = Instant::now();
    let prefer = format!("wait={wait}");
    let r = app
        .request(
            reqwest::Method::GET,
            &format!("/async/get_task_result?session_id={id}"),
            &[("Prefer", prefer.as_str())],
        )
        .await;
    (r, started.elapsed())
}

async fn submit(app: &App, args: &str) -> i64 {
    let r = app
        .post("/async/post_task", &format!(r#"{{"args": {args}}}"#))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["session_id"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_poll_answers_within_milliseconds_of_the_result() {
    let config = unique_config();
    let app = App::start(config.clone()).await;
    let id = submit(&app, "[1, 2.5]").await;
    let (waiting, poller) = (
        tokio::spawn({
            let app_url = app.url("");
            async move {
                let started = Instant::now();
                let r = reqwest::Client::new()
                    .get(format!("{app_url}/async/tasks/{id}"))
                    .header("Prefer", "wait=20")
                    .send()
                    .await
                    .unwrap();
                let headers = r.headers().clone();
                let text = r.text().await.unwrap();
                (text, headers, Instant::now(), started)
            }
        }),
        // Short polls, as often as a client could, see the result first appear.
        tokio::spawn({
            let app_url = app.url("");
            async move {
                let client = reqwest::Client::new();
                loop {
                    let r = client
                        .get(format!("{app_url}/async/get_task_result?session_id={id}"))
                        .send()
                        .await
                        .unwrap();
                    if r.text().await.unwrap().contains("done") {
                        return Instant::now();
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }),
    );
    // Long enough that the poll waits on its notice, not on a read at its start.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let _workers = Workers::start(&config);
    let (text, headers, answered, started) = waiting.await.unwrap();
    let seen = poller.await.unwrap();
    assert_eq!(
        text,
        format!(r#"{{"session_id":{id},"result":3.5,"status":"done"}}"#)
    );
    assert_eq!(headers["preference-applied"], "wait=20");
    assert!(started.elapsed() > Duration::from_millis(700));
    // The long poll answers about when a short poll first sees the result: within a
    // short poll's own round trip or two, not at a timer.
    let late = answered.saturating_duration_since(seen);
    assert!(
        late < Duration::from_millis(150),
        "{late:?} after the result"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_poll_answers_pending_once_its_wait_is_over() {
    let mut config = unique_config();
    config.tasks.sync_timeout = Duration::from_secs(2);
    let app = App::start(config).await;
    let id = submit(&app, "[1]").await;
    let (r, took) = long_poll(&app, id, 1).await;
    assert_eq!(
        r.body,
        json!({"session_id": id, "result": null, "status": "pending"})
    );
    assert_eq!(r.header("preference-applied"), Some("wait=1"));
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // Longer than tasks.sync_timeout is capped at it, and says so.
    let (r, took) = long_poll(&app, id, 60).await;
    assert_eq!(r.header("preference-applied"), Some("wait=2"));
    assert!(took < Duration::from_secs(4), "{took:?}");
    // wait=0, or no preference, answers at once.
    let (r, took) = long_poll(&app, id, 0).await;
    assert_eq!(r.header("preference-applied"), None);
    assert!(took < Duration::from_secs(1), "{took:?}");
    // An unknown session is 404 at once, waiting or not.
    let (r, _) = long_poll(&app, 999_999, 5).await;
    r.assert_problem(404, "no session has id 999999");
}

#[tokio::test(flavor = "multi_thread")]
async fn long_polls_count_as_waiting_requests() {
    let mut config = unique_config();
    config.limits.max_sync_waiters = 2;
    let app = std::sync::Arc::new(App::start(config).await);
    let id = submit(&app, "[1]").await;
    let polls: Vec<_> = (0..2)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { long_poll(&app, id, 3).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (refused, took) = long_poll(&app, id, 3).await;
    refused.assert_problem(503, "limits.max_sync_waiters");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // A plain poll waits for nothing and is answered.
    assert_eq!(app.poll_once(id).await.body["status"], "pending");
    for poll in polls {
        let (r, _) = poll.await.unwrap();
        assert_eq!(r.body["status"], "pending", "{r:?}");
    }
    let (r, _) = long_poll(&app, id, 1).await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_finished_task_answers_a_long_poll_at_once() {
    let config = unique_config();
    let app = App::start(config.clone()).await;
    let _workers = Workers::start(&config);
    app.wait_for_workers(2).await;
    let id = submit(&app, "[2, 2]").await;
    app.poll(id).await;
    let (r, took) = long_poll(&app, id, 20).await;
    assert_eq!(r.body["result"], 4, "{r:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_task_is_not_stored_and_reads_cancelled() {
    let config = unique_config();
    let app = App::start(config.clone()).await;
    let id = submit(&app, "[1, 2]").await;
    // A long poll waiting on the task hears of its cancel.
    let waiting = tokio::spawn({
        let url = app.url(&format!("/async/tasks/{id}"));
        async move {
            reqwest::Client::new()
                .get(url)
                .header("Prefer", "wait=20")
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cancelled = json!({"session_id": id, "result": null, "status": "cancelled"});
    let r = app.delete(&format!("/async/tasks/{id}")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, cancelled);
    let heard = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .expect("the long poll hears of the cancel")
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&heard).unwrap(),
        cancelled
    );
    // Cancelling again changes nothing and says so the same way.
    assert_eq!(
        app.delete(&format!("/async/tasks/{id}")).await.body,
        cancelled
    );

    // A worker takes the task and drops it: nothing is stored over the cancel.
    let _workers = Workers::start(&config);
    let queue = config.rabbitmq.queue.clone();
    wait_until("the task taken", Duration::from_secs(20), || {
        queue_depth(&queue) == 0
    })
    .await;
    // A later task through the same workers is done: the cancelled one went by first.
    let after = submit(&app, "[5]").await;
    assert_eq!(app.poll(after).await.body["result"], 5);
    assert_eq!(app.poll_once(id).await.body, cancelled);
    assert_eq!(app.get(&format!("/async/tasks/{id}")).await.body, cancelled);
    assert_eq!(
        app.stored_outcome(id).await,
        r#"{"status":"cancelled"}"#,
        "the worker stored nothing over the cancel"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_finished_task_is_409_with_its_result() {
    let config = unique_config();
    let app = App::start(config.clone()).await;
    let _workers = Workers::start(&config);
    app.wait_for_workers(2).await;
    let id = submit(&app, "[0.1, 0.2]").await;
    app.poll(id).await;
    let r = app
        .delete(&format!("/async/tasks/{id}?numbers=string"))
        .await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(
        r.body,
        json!({"session_id": id, "result": "0.3", "status": "done"})
    );
    // The result is there still.
    assert_eq!(app.poll_once(id).await.body["result"], 0.3);

    app.delete("/async/tasks/999999")
        .await
        .assert_problem(404, "no session has id 999999");
    app.delete("/async/tasks/0")
        .await
        .assert_problem(400, "`session_id` must be positive");
    app.delete("/async/tasks/abc")
        .await
        .assert_problem(400, "`session_id` is not an integer");
    app.get("/async/tasks/abc")
        .await
        .assert_problem(400, "`session_id` is not an integer");
}

/// Cancels race workers: each cancel either wins (200, and the task reads cancelled
/// for good, with nothing stored over it) or loses to the worker (409 with the exact
/// sum, which stays). Never both, never neither.
#[tokio::test(flavor = "multi_thread")]
async fn cancels_racing_workers_never_lose_a_result_or_a_cancel() {
    const TASKS: i64 = 200;
    let config = unique_config();
    let app = App::start(config.clone()).await;
    // A few thousand numbers each, so that draining the queue takes a while.
    let numbers = vec!["0.001"; 4000].join(",");
    let mut ids = Vec::new();
    for i in 0..TASKS {
        ids.push((i, submit(&app, &format!("[{i}, {numbers}]")).await));
    }
    let queue = config.rabbitmq.queue.clone();
    let _workers = Workers::start(&config);
    wait_until("the workers started", Duration::from_secs(20), || {
        queue_depth(&queue) < TASKS as u32 - 4
    })
    .await;
    // From the newest: the cancels meet the workers somewhere in the queue.
    let mut outcomes = Vec::new();
    for &(i, id) in ids.iter().rev() {
        outcomes.push((i, id, app.delete(&format!("/async/tasks/{id}")).await));
    }
    wait_until("the queue drained", Duration::from_secs(30), || {
        queue_depth(&queue) == 0
    })
    .await;
    let (mut won, mut lost) = (0, 0);
    for (i, id, cancel) in outcomes {
        let now = app.poll(id).await;
        let sum = format!(r#""result":{}.0,"#, i + 4);
        match cancel.status {
            200 => {
                won += 1;
                assert_eq!(now.body["status"], "cancelled", "{id}: {now:?}");
            }
            409 => {
                lost += 1;
                assert_eq!(cancel.body["status"], "done", "{cancel:?}");
                assert!(cancel.text.contains(&sum), "{sum} {cancel:?}");
                assert!(now.text.contains(&sum), "{sum} {now:?}");
            }
            _ => panic!("{id}: {cancel:?}"),
        }
    }
    println!("cancels won {won}, lost {lost}");
    assert!(
        won > 0 && lost > 0,
        "won {won}, lost {lost}: no race was run"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_keys_only_the_owner_waits_for_or_cancels_a_session() {
    let (app, secrets) = start_with_keys(keys_config(), &["owner", "other"]).await;
    let (owner, other) = (
        Client::with_key(&app, &secrets[0]),
        Client::with_key(&app, &secrets[1]),
    );
    let id = owner.submit("[1]").await;
    other
        .delete(&format!("/async/tasks/{id}"))
        .await
        .assert_problem(404, "no session has id");
    other
        .get(&format!("/async/tasks/{id}"))
        .await
        .assert_problem(404, "no session has id");
    Client::anonymous(&app)
        .delete(&format!("/async/tasks/{id}"))
        .await
        .assert_problem(401, "API key");
    let r = owner.delete(&format!("/async/tasks/{id}")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["status"], "cancelled");
    assert!(r.header("ratelimit").is_some(), "{r:?}");
    assert_eq!(owner.session(id).await.body["status"], "cancelled");
}

/// A large task cancelled before a worker takes it is not even computed: the worker
/// reads its key first.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_cancelled_task_is_acked_without_computing_it() {
    let mut config = unique_config();
    config.worker.metrics_listen = support::metrics::free_address();
    let app = App::start(config.clone()).await;
    // Some 200 KB of numbers: over the size a worker checks for a cancel first.
    let numbers = vec!["1.5"; 50_000].join(",");
    let id = submit(&app, &format!("[{numbers}]")).await;
    let small = submit(&app, "[1]").await;
    for id in [id, small] {
        let r = app.delete(&format!("/async/tasks/{id}")).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    let _work = support::KillOnDrop(support::process::spawn_binary(&config, &["work"]));
    let url = format!("http://{}/metrics", config.worker.metrics_listen);
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(&url).await.is_err() {
        assert!(Instant::now() < deadline, "work never answered {url}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let scrape = support::metrics::scrape_until(&url, "both tasks settled", |s| {
        s.count(r#"sumsvc_tasks_processed_total{outcome="cancelled"}"#) == 2.0
    })
    .await;
    // The small one was computed (its outcome then dropped), the large one not.
    assert_eq!(scrape.count("sumsvc_task_compute_seconds_count"), 1.0);
    assert_eq!(app.poll_once(id).await.body["status"], "cancelled");
}
