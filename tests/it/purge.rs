//! Sessions do not pile up: those older than `tasks.result_ttl` plus
//! `tasks.session_retention` are purged, by `sumsvc purge` or by `serve` every
//! `tasks.purge_every`, while the service takes load; a purged id answers 410 on every
//! route that takes one, and an id never given 404, in both auth modes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sumsvc::Config;
use support::cli::run_binary;
use support::keys::{keys_config, start_with_keys, Client};
use support::sessions::session_rows;
use support::sse::EventStream;
use support::{unique_config, App, Reply, Workers};

/// Short lives: a session is purged once 2 s old.
fn short_lived(mut config: Config) -> Config {
    config.tasks.result_ttl = Duration::from_secs(1);
    config.tasks.session_retention = Duration::from_secs(1);
    config
}

/// Every route that takes a session id, as `client` calls it.
async fn every_route(app: &App, authorization: Option<&str>, id: i64) -> Vec<(String, Reply)> {
    let send = |method: reqwest::Method, path: String| {
        let mut request = app.http.request(method, app.url(&path));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        async move { (path, Reply::read(request.send().await).await) }
    };
    vec![
        send(
            reqwest::Method::GET,
            format!("/async/get_task_result?session_id={id}"),
        )
        .await,
        send(reqwest::Method::GET, format!("/async/tasks/{id}")).await,
        send(reqwest::Method::DELETE, format!("/async/tasks/{id}")).await,
    ]
}

/// The event a stream of `id` tells first.
async fn streamed(app: &App, authorization: Option<&str>, id: i64) -> serde_json::Value {
    let mut request = app
        .http
        .get(app.url(&format!("/async/events?session_id={id}")));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let mut stream = EventStream::new(request.send().await.unwrap());
    let event = stream.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(event.event, "problem", "{event:?}");
    event.json()
}

/// Submits `n` sums and waits for each; returns their session ids.
async fn finished(app: &App, authorization: Option<&str>, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..n {
        let mut request = app
            .http
            .post(app.url("/async/post_task"))
            .header("content-type", "application/json")
            .body(format!(r#"{{"args": [{i}]}}"#));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let r = Reply::read(request.send().await).await;
        ids.push(
            r.body["session_id"]
                .as_i64()
                .unwrap_or_else(|| panic!("{r:?}")),
        );
    }
    for id in &ids {
        let mut request = app
            .http
            .get(app.url(&format!("/async/tasks/{id}")))
            .header("Prefer", "wait=10");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let r = Reply::read(request.send().await).await;
        assert_eq!(r.body["status"], "done", "{r:?}");
    }
    ids
}

/// post_task, as fast as one client goes, until `stop`; the session ids it got.
fn load(
    app: Arc<App>,
    authorization: Option<String>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<i64>> {
    tokio::spawn(async move {
        let mut ids = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let mut request = app
                .http
                .post(app.url("/async/post_task"))
                .header("content-type", "application/json")
                .body(r#"{"args": [1, 2]}"#);
            if let Some(value) = &authorization {
                request = request.header("authorization", value);
            }
            let r = Reply::read(request.send().await).await;
            assert_eq!(r.status, 200, "under the purge: {r:?}");
            ids.push(r.body["session_id"].as_i64().unwrap());
        }
        ids
    })
}

/// The purge under load, as `authorization` calls the API (None: open mode): old
/// sessions go and answer 410 everywhere, those made meanwhile stay, and ids never
/// given answer 404.
async fn purge_under_load(app: Arc<App>, authorization: Option<&str>) {
    let old = finished(&app, authorization, 30).await;
    // Older than result_ttl + session_retention.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let loading = load(app.clone(), authorization.map(str::to_owned), stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ran = run_binary(&app.config, &["purge"]).await;
    stop.store(true, Ordering::SeqCst);
    let young = loading.await.unwrap();
    assert!(young.len() > 10, "{} requests under the purge", young.len());
    assert!(
        ran.ok()
            .contains("and 30 sessions older than 2s (tasks.result_ttl + tasks.session_retention)"),
        "{ran:?}"
    );
    assert_eq!(session_rows(&app.config).await, young.len() as i64);

    for id in [old[0], old[29]] {
        for (path, r) in every_route(&app, authorization, id).await {
            assert_eq!(r.status, 410, "{path}: {r:?}");
            assert_eq!(
                r.body["type"], "urn:sumsvc:problem:session-removed",
                "{r:?}"
            );
            assert!(
                r.body["detail"]
                    .as_str()
                    .unwrap()
                    .contains("tasks.session_retention"),
                "{r:?}"
            );
        }
        let event = streamed(&app, authorization, id).await;
        assert_eq!(event["problem"]["status"], 410, "{event}");
    }
    for id in young.iter().step_by(young.len() / 5) {
        for (path, r) in every_route(&app, authorization, *id).await[..2].iter() {
            assert_eq!(r.status, 200, "{path}: {r:?}");
        }
    }
    // Ids never given: below the range, and anywhere in it.
    let mut never = vec![999_999, 1 << 32, (1 << 53) - 1];
    never.extend((0..20).map(|_| (1 << 32) + fastrand_id()));
    for id in never {
        if old.contains(&id) || young.contains(&id) {
            continue;
        }
        for (path, r) in every_route(&app, authorization, id).await {
            assert_eq!(r.status, 404, "{path}: {r:?}");
        }
        let event = streamed(&app, authorization, id).await;
        assert_eq!(event["problem"]["status"], 404, "{event}");
    }
}

/// A number in [0, 2^53 - 2^32), from the test's own randomness.
fn fastrand_id() -> i64 {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    (n % ((1 << 53) - (1 << 32))) as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn purged_sessions_answer_410_and_ids_never_given_404_under_load() {
    let mut config = short_lived(unique_config());
    // Only `sumsvc purge` removes sessions here.
    config.tasks.purge_every = Duration::ZERO;
    let app = Arc::new(App::start(config.clone()).await);
    let _workers = Workers::start(&config);
    app.wait_for_workers(2).await;
    purge_under_load(app, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_keys_purged_sessions_answer_410_to_their_owner_and_never_given_404() {
    let mut config = short_lived(keys_config());
    config.tasks.purge_every = Duration::ZERO;
    let (app, secrets) = start_with_keys(config.clone(), &["owner"]).await;
    let _workers = Workers::start(&config);
    app.wait_for_workers(2).await;
    let authorization = format!("Bearer {}", secrets[0]);
    let app = Arc::new(app);
    purge_under_load(app.clone(), Some(&authorization)).await;
    // Without a key, a purged id is refused before anything is looked up.
    let id = Client::with_key(&app, &secrets[0]).submit("[1]").await;
    Client::anonymous(&app)
        .get(&format!("/async/tasks/{id}"))
        .await
        .assert_problem(401, "API key");
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_purges_sessions_on_its_own_every_purge_every() {
    let mut config = short_lived(unique_config());
    config.tasks.purge_every = Duration::from_millis(500);
    let app = App::start(config.clone()).await;
    let _workers = Workers::start(&config);
    app.wait_for_workers(2).await;
    let old = finished(&app, None, 5).await;
    assert_eq!(session_rows(&config).await, 5);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while session_rows(&config).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "serve purged nothing in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = app.poll_once(old[0]).await;
    r.assert_problem(410, "was removed");
}
