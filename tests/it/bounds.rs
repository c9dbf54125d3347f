//! Partial failures stay within their bounds: a sync request answers within two seconds
//! of its deadline whatever its dependencies do after it, a waiting request holds no
//! share of the body budget and one of at most `limits.max_sync_waiters` waiting slots,
//! a session whose task has not run answers pending however old, and the session
//! writer fails only the request whose row the database refuses and keeps no row for a
//! request that gave up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::config::{with_postgres, with_redis, POSTGRES, REDIS};
use support::keys::{keys_config, start_with_keys, Client};
use support::metrics::Scrape;
use support::proxy::proxy_to;
use support::sessions::session_rows;
use support::wait::within;
use support::{unique_config, App, Reply, StuckWorker, Workers};
use uuid::Uuid;

/// How long past its deadline a sync request may answer: `AFTER_DEADLINE` in
/// src/api/tasks.rs, and room for a loaded machine to schedule the answer.
const AFTER_DEADLINE: Duration = Duration::from_millis(2_500);

/// Starts a sync request in the background; answers it and how long it took.
fn sync_sum(app: &Arc<App>, body: &str, wait: u64) -> tokio::task::JoinHandle<(Reply, Duration)> {
    let (app, body) = (app.clone(), body.to_owned());
    tokio::spawn(async move {
        let started = Instant::now();
        let prefer = format!("wait={wait}");
        let reply = app
            .post_with("/sync/sum", &body, &[("Prefer", &prefer)])
            .await;
        (reply, started.elapsed())
    })
}

/// Waits until the stuck worker holds `n` tasks: their requests are past the publish.
async fn until_received(stuck: &StuckWorker, n: usize) {
    within(
        Duration::from_secs(10),
        "the tasks to be delivered",
        async {
            while stuck.received() < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
}

/// A serve and a worker that takes tasks and never finishes them.
async fn app_with_stuck_worker(config: sumsvc::Config) -> (Arc<App>, StuckWorker) {
    let app = Arc::new(App::start(config.clone()).await);
    let stuck = StuckWorker::start(&config);
    app.wait_for(|r| r.status == 200 && r.body["workers"] == 1, "readiness")
        .await;
    (app, stuck)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_request_answers_within_two_seconds_of_its_deadline_whatever_follows_it() {
    let redis = proxy_to(REDIS).await;
    let postgres = proxy_to(POSTGRES).await;
    let mut config = unique_config();
    with_redis(&mut config, redis.addr);
    with_postgres(&mut config, postgres.addr);
    let (app, stuck) = app_with_stuck_worker(config).await;

    let waiting = sync_sum(&app, r#"{"args": [1, 2]}"#, 2);
    until_received(&stuck, 1).await;
    // At its deadline the request reads its result from Redis and stores a session in
    // PostgreSQL: neither answers now, each within its own timeout (1.5 s).
    redis.freeze();
    postgres.freeze();
    let (r, took) = waiting.await.unwrap();
    redis.thaw();
    postgres.thaw();
    r.assert_problem(503, "PostgreSQL");
    assert!(
        took >= Duration::from_secs(2),
        "answered before its deadline: {took:?}"
    );
    assert!(
        took < Duration::from_secs(2) + AFTER_DEADLINE,
        "answered {took:?} after it was sent, with a 2 s deadline"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_request_gives_its_body_back_to_the_budget_once_its_task_is_queued() {
    let mut config = unique_config();
    config.limits.max_body_bytes = 1 << 20;
    config.limits.body_budget_bytes = 2 << 20;
    let (app, stuck) = app_with_stuck_worker(config).await;
    // 900 kB each: two fit in the budget at once, three do not.
    let body = format!(r#"{{"args": [{}1]}}"#, "1,".repeat(450_000));
    assert!(body.len() > 900_000);

    let first = sync_sum(&app, &body, 3);
    until_received(&stuck, 1).await;
    let second = sync_sum(&app, &body, 3);
    until_received(&stuck, 2).await;
    // Both wait for their results; their bodies are in the broker, not in the budget.
    let (third, _) = sync_sum(&app, &body, 1).await.unwrap();
    assert_eq!(third.status, 202, "{third:?}");
    for waiting in [first, second] {
        let (r, _) = waiting.await.unwrap();
        assert_eq!(r.status, 202, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_lets_at_most_max_sync_waiters_requests_wait_at_once() {
    let mut config = unique_config();
    config.limits.max_sync_waiters = 3;
    let (app, stuck) = app_with_stuck_worker(config).await;

    let waiting: Vec<_> = (0..3)
        .map(|i| sync_sum(&app, &format!(r#"{{"args": [{i}]}}"#), 4))
        .collect();
    until_received(&stuck, 3).await;
    let started = Instant::now();
    let refused = app.post("/sync/sum", r#"{"args": [1]}"#).await;
    assert!(started.elapsed() < Duration::from_secs(1), "{refused:?}");
    refused.assert_problem(503, "limits.max_sync_waiters");
    assert_eq!(refused.header("retry-after"), Some("1"), "{refused:?}");
    // Submitting does not wait, and is not bounded by it.
    let submitted = app.post("/async/post_task", r#"{"args": [1]}"#).await;
    assert_eq!(submitted.status, 200, "{submitted:?}");

    for w in waiting {
        assert_eq!(w.await.unwrap().0.status, 202);
    }
    // The slots are free again.
    let (r, _) = sync_sum(&app, r#"{"args": [1]}"#, 1).await.unwrap();
    assert_eq!(r.status, 202, "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_api_keys_the_servers_bound_holds_across_keys() {
    let mut config = keys_config();
    config.limits.max_sync_waiters = 2;
    config.tasks.sync_timeout = Duration::from_secs(3);
    let (app, secrets) = start_with_keys(config.clone(), &["a", "b"]).await;
    let app = Arc::new(app);
    let stuck = StuckWorker::start(&config);
    app.wait_for(|r| r.status == 200 && r.body["workers"] == 1, "readiness")
        .await;

    let waiting: Vec<_> = secrets
        .iter()
        .map(|secret| {
            let (app, secret) = (app.clone(), secret.clone());
            tokio::spawn(async move {
                Client::with_key(&app, &secret)
                    .post("/sync/sum", r#"{"args": [1]}"#)
                    .await
            })
        })
        .collect();
    until_received(&stuck, 2).await;
    // Key a has one request waiting, far below auth.max_sync_waiters (100); the server
    // has two, its limit.
    let r = Client::with_key(&app, &secrets[0])
        .post("/sync/sum", r#"{"args": [1]}"#)
        .await;
    r.assert_problem(503, "limits.max_sync_waiters");
    for w in waiting {
        assert_eq!(w.await.unwrap().status, 202);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_whose_task_has_not_run_is_pending_however_old_and_gone_once_its_result_is() {
    let mut config = unique_config();
    config.tasks.result_ttl = Duration::from_secs(1);
    let (app, stuck) = app_with_stuck_worker(config.clone()).await;
    let submitted = app.post("/async/post_task", r#"{"args": [1, 2]}"#).await;
    let submitted = submitted.body["session_id"].as_i64().unwrap();
    let (past_deadline, _) = sync_sum(&app, r#"{"args": [3, 4]}"#, 1).await.unwrap();
    assert_eq!(past_deadline.status, 202, "{past_deadline:?}");
    let past_deadline = past_deadline.body["session_id"].as_i64().unwrap();

    // Older than tasks.result_ttl, and their tasks still queued.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    for id in [submitted, past_deadline] {
        let r = app.poll_once(id).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["status"], "pending", "{r:?}");
    }

    stuck.release();
    let _workers = Workers::start(&config);
    for (id, sum) in [(submitted, 3), (past_deadline, 7)] {
        let r = app.poll(id).await;
        assert_eq!(r.body["result"], sum, "{r:?}");
    }
    // The results live for tasks.result_ttl; then the sessions answer 410.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    for id in [submitted, past_deadline] {
        app.poll_once(id)
            .await
            .assert_problem(410, "tasks.result_ttl");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_row_the_database_refuses_fails_its_own_request_and_no_other() {
    let postgres = proxy_to(POSTGRES).await;
    let mut config = unique_config();
    with_postgres(&mut config, postgres.addr);
    config.postgres.timeout = Duration::from_secs(5);
    // The app only owns the database: it migrates it, and removes it at the end.
    let app = App::start(config.clone()).await;
    let sessions = sumsvc::Sessions::new(&config.postgres, &config.tls).unwrap();
    sessions.create(Uuid::new_v4(), None).await.unwrap();

    // The writer waits on a frozen database with the first, so what comes next queues up
    // and goes in one batch once it thaws.
    postgres.freeze();
    let create = |owner: Option<i64>| {
        let sessions = sessions.clone();
        tokio::spawn(async move { sessions.create(Uuid::new_v4(), owner).await })
    };
    let busy = [create(None), create(None)];
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No API key has this id: its row breaks the owner's foreign key.
    let batch: Vec<_> = (0..40)
        .map(|i| create((i == 17).then_some(i64::MAX)))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    postgres.thaw();

    for b in busy {
        b.await.unwrap().unwrap();
    }
    let mut refused = Vec::new();
    for (i, b) in batch.into_iter().enumerate() {
        if let Err(e) = b.await.unwrap() {
            refused.push((i, e.to_string()));
        }
    }
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, 17, "{refused:?}");
    assert!(refused[0].1.contains("foreign key"), "{refused:?}");
    assert_eq!(session_rows(&app.config).await, 1 + 2 + 39);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sessions_of_requests_that_gave_up_are_not_kept_and_are_counted() {
    let postgres = proxy_to(POSTGRES).await;
    let mut config = unique_config();
    with_postgres(&mut config, postgres.addr);
    config.postgres.timeout = Duration::from_millis(500);
    let app = Arc::new(App::start(config.clone()).await);
    let _workers = Workers::start(&config);
    app.wait_for_workers(2).await;
    let kept = app.post("/async/post_task", r#"{"args": [1]}"#).await;
    assert_eq!(kept.status, 200, "{kept:?}");

    // Each task is queued, then its session cannot be stored in time: 503, and the
    // client never learns a session id. The inserts in flight commit once the database
    // thaws, with no one left to hear of them.
    postgres.freeze();
    let submits: Vec<_> = (0..10)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                app.post("/async/post_task", &format!(r#"{{"args": [{i}]}}"#))
                    .await
            })
        })
        .collect();
    for s in submits {
        s.await.unwrap().assert_problem(503, "PostgreSQL");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    postgres.thaw();

    let metrics = app.url("/metrics");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let orphans = Scrape::of(&metrics)
            .await
            .get("sumsvc_session_orphans_total");
        if orphans.is_some_and(|n| n > 0.0) && session_rows(&app.config).await == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphans {orphans:?}, rows {}",
            session_rows(&app.config).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
