//! `Idempotency-Key` on `post_task` and `sync/sum`: a retry with the key gets the first
//! answer and queues nothing more; the key with another request is 422; while the first
//! request with it runs, 409; a request that failed frees its key; keys are per API key,
//! kept for `tasks.idempotency_ttl`, then purged; a serve that dies mid-request frees
//! its keys once the request could have run at the latest.

use std::sync::Arc;
use std::time::Duration;

use support::amqp::queue_depth;
use support::cli::run_binary;
use support::config::{with_rabbitmq, ListenOnFreePort, RABBITMQ};
use support::keys::{keys_config, start_with_keys, Client};
use support::process::{signal, spawn_binary};
use support::proxy::proxy_to;
use support::wait::wait_until;
use support::{unique_config, App, Reply, StuckWorker};

async fn post_with_key(app: &App, path: &str, body: &str, key: &str) -> Reply {
    app.post_with(path, body, &[("Idempotency-Key", key)]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_with_the_same_key_gets_the_first_answer_and_queues_nothing_more() {
    let app = App::start(unique_config()).await;
    let key = r#""retry-1""#;
    let first = post_with_key(&app, "/async/post_task", r#"{"args": [1, 2]}"#, key).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = post_with_key(&app, "/async/post_task", r#"{"args": [1, 2]}"#, key).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.text, first.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    // No worker: the one task waits in the queue, alone.
    assert_eq!(queue_depth(&app.config.rabbitmq.queue), 1);

    // Without a key, each request is a task of its own.
    let other = app.post("/async/post_task", r#"{"args": [1, 2]}"#).await;
    assert_ne!(other.body["session_id"], first.body["session_id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_key_with_another_request_is_refused() {
    let app = App::start(unique_config()).await;
    let first = post_with_key(&app, "/async/post_task", r#"{"args": [1]}"#, "k").await;
    assert_eq!(first.status, 200, "{first:?}");
    post_with_key(&app, "/async/post_task", r#"{"args": [2]}"#, "k")
        .await
        .assert_problem(422, "Idempotency-Key");
    // Another route is another request.
    post_with_key(&app, "/sync/sum", r#"{"args": [1]}"#, "k")
        .await
        .assert_problem(422, "another request");
    post_with_key(&app, "/async/post_task", r#"{"args": [1]}"#, "\"no\"end")
        .await
        .assert_problem(400, "Idempotency-Key");
}

#[tokio::test(flavor = "multi_thread")]
async fn while_the_first_request_runs_a_second_with_its_key_gets_409_then_its_answer() {
    let mut config = unique_config();
    config.tasks.sync_timeout = Duration::from_secs(3);
    let app = Arc::new(App::start(config.clone()).await);
    let stuck = StuckWorker::start(&config);
    app.wait_for_workers(1).await;

    let first = {
        let app = app.clone();
        tokio::spawn(async move {
            post_with_key(&app, "/sync/sum", r#"{"args": [4, 5]}"#, "sync-1").await
        })
    };
    wait_until("the first request queued", Duration::from_secs(10), || {
        stuck.received() >= 1
    })
    .await;
    let second = post_with_key(&app, "/sync/sum", r#"{"args": [4, 5]}"#, "sync-1").await;
    second.assert_problem(409, "still being answered");
    assert_eq!(second.header("retry-after"), Some("1"), "{second:?}");

    let first = first.await.unwrap();
    assert_eq!(first.status, 202, "{first:?}");
    let again = post_with_key(&app, "/sync/sum", r#"{"args": [4, 5]}"#, "sync-1").await;
    assert_eq!(again.status, 202, "{again:?}");
    assert_eq!(again.text, first.text);
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(stuck.received(), 1, "one task, whatever the retries");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_failed_frees_its_key_for_a_retry() {
    let proxy = proxy_to(RABBITMQ).await;
    let mut config = unique_config();
    with_rabbitmq(&mut config, proxy.addr);
    let app = App::start(config).await;
    app.wait_for(|r| r.body["rabbitmq"]["status"] == "up", "RabbitMQ")
        .await;
    proxy.cut();
    app.wait_for(|r| r.body["rabbitmq"]["status"] == "down", "RabbitMQ down")
        .await;
    post_with_key(&app, "/async/post_task", r#"{"args": [1]}"#, "after-outage")
        .await
        .assert_problem(503, "RabbitMQ");

    proxy.restore();
    app.wait_for(|r| r.body["rabbitmq"]["status"] == "up", "RabbitMQ back")
        .await;
    let r = post_with_key(&app, "/async/post_task", r#"{"args": [1]}"#, "after-outage").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("idempotent-replayed"), None, "it ran: {r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_api_key_has_keys_of_its_own() {
    let (app, secrets) = start_with_keys(keys_config(), &["a", "b"]).await;
    let a = shared_key(&Client::with_key(&app, &secrets[0]), r#"{"args": [1]}"#).await;
    let b = shared_key(&Client::with_key(&app, &secrets[1]), r#"{"args": [2]}"#).await;
    assert_eq!((a.status, b.status), (200, 200), "{a:?} {b:?}");
    assert_ne!(a.body["session_id"], b.body["session_id"]);
    let a_again = shared_key(&Client::with_key(&app, &secrets[0]), r#"{"args": [1]}"#).await;
    assert_eq!(a_again.text, a.text);
}

/// `post_task` with the key `shared` and `client`'s API key.
async fn shared_key(client: &Client<'_>, body: &str) -> Reply {
    client
        .post_with("/async/post_task", body, &[("Idempotency-Key", "shared")])
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_past_their_time_are_purged_and_free_again() {
    let mut config = unique_config();
    config.tasks.idempotency_ttl = Duration::from_secs(1);
    // Only `sumsvc purge` removes them here.
    config.tasks.purge_every = Duration::ZERO;
    let app = App::start(config.clone()).await;
    let first = post_with_key(&app, "/async/post_task", r#"{"args": [1]}"#, "old").await;
    assert_eq!(first.status, 200, "{first:?}");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ran = run_binary(&config, &["purge"]).await;
    assert!(
        ran.ok()
            .contains("removed 1 idempotency key older than 1s (tasks.idempotency_ttl)"),
        "{ran:?}"
    );
    let again = run_binary(&config, &["purge"]).await;
    assert!(
        again.ok().contains("removed 0 idempotency keys"),
        "{again:?}"
    );
    // The key is new again: another request may take it.
    let r = post_with_key(&app, "/async/post_task", r#"{"args": [2]}"#, "old").await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_serve_that_dies_mid_request_frees_its_keys_once_the_request_could_have_ended() {
    let mut config = unique_config();
    config.tasks.sync_timeout = Duration::from_secs(1);
    config.rabbitmq.timeout = Duration::from_millis(500);
    config.postgres.timeout = Duration::from_millis(500);
    // The first request may run 1 s + 2 × 0.5 s + 2 × 0.5 s = 3 s at the most.
    let mut first_config = config.clone();
    first_config.listen_on_free_port();
    sumsvc::migrate_database(&support::config::direct_postgres(&config), &config.tls)
        .await
        .unwrap();
    let child = spawn_binary(&first_config, &["serve"]);
    let first = Arc::new(App::attach_to(first_config, child).await);
    let stuck = StuckWorker::start(&config);
    first.wait_for_workers(1).await;

    let running = {
        let first = first.clone();
        tokio::spawn(async move {
            post_with_key(&first, "/sync/sum", r#"{"args": [7]}"#, "orphan").await
        })
    };
    wait_until("the request queued", Duration::from_secs(10), || {
        stuck.received() >= 1
    })
    .await;
    signal(first.child.as_ref().unwrap(), "KILL");
    assert_eq!(
        running.await.unwrap().status,
        0,
        "the serve died mid-request"
    );

    let second = App::start_without_migrate(config.clone()).await;
    second.wait_for_workers(1).await;
    post_with_key(&second, "/sync/sum", r#"{"args": [7]}"#, "orphan")
        .await
        .assert_problem(409, "Idempotency-Key");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = post_with_key(&second, "/sync/sum", r#"{"args": [7]}"#, "orphan").await;
    assert_eq!(r.status, 202, "taken over and run: {r:?}");
    assert_eq!(r.header("idempotent-replayed"), None);
}
