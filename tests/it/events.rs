//! The result stream (`GET /async/events`): an event per session as its task ends, at
//! once for those ended already, 404 and 410 as `problem` events, keep-alive comments,
//! `end`, a reconnect, and the bounds per key and per server; in both auth modes.

use std::time::{Duration, Instant};

use serde_json::json;
use support::keys::{keys_config, start_with_keys};
use support::sse::{EventStream, SseEvent};
use support::{unique_config, App, Workers};

/// Opens a stream of `ids`, sending `headers`; fails unless it is one.
async fn open(app: &App, ids: &[i64], headers: &[(&str, &str)]) -> EventStream {
    let r = request(app, ids, headers).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    EventStream::new(r)
}

async fn request(app: &App, ids: &[i64], headers: &[(&str, &str)]) -> reqwest::Response {
    let query: Vec<String> = ids.iter().map(|id| format!("session_id={id}")).collect();
    let mut req = app
        .http
        .get(app.url(&format!("/async/events?{}", query.join("&"))));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

async fn submit(app: &App, args: &str) -> i64 {
    let r = app
        .post("/async/post_task", &format!(r#"{{"args": {args}}}"#))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["session_id"].as_i64().unwrap()
}

/// The events until `end` (which is left out), keyed by session id.
async fn until_end(stream: &mut EventStream, limit: Duration) -> Vec<SseEvent> {
    let mut events = Vec::new();
    loop {
        let event = stream
            .next(limit)
            .await
            .expect("the stream ends with `end`");
        if event.event == "end" {
            return events;
        }
        events.push(event);
    }
}

fn result(id: i64, result: serde_json::Value, status: &str) -> serde_json::Value {
    json!({"session_id": id, "result": result, "status": status})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_tells_each_session_as_it_ends_then_ends() {
    let mut config = unique_config();
    config.tasks.result_ttl = Duration::from_secs(3);
    let app = App::start(config.clone()).await;
    let workers = Workers::start(&config);
    app.wait_for_workers(2).await;
    let expired = submit(&app, "[1]").await;
    app.poll(expired).await;
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let done = submit(&app, "[0.1, 0.2]").await;
    app.poll(done).await;
    workers.stop().await;
    let pending = submit(&app, "[123456789012345678901234567890, 1]").await;

    let ids = [done, pending, expired, 999_999];
    let mut stream = open(&app, &ids, &[]).await;
    // Those that ended, and those that cannot, come at once.
    let mut first: Vec<SseEvent> = Vec::new();
    for _ in 0..3 {
        first.push(stream.next(Duration::from_secs(2)).await.unwrap());
    }
    first.sort_by_key(|e| e.id.clone());
    let by_id = |id: i64| first.iter().find(|e| e.id == Some(id.to_string())).unwrap();
    assert_eq!(by_id(done).event, "result");
    assert_eq!(by_id(done).json(), result(done, json!(0.3), "done"));
    assert_eq!(by_id(expired).event, "problem");
    assert_eq!(by_id(expired).json()["problem"]["status"], 410);
    assert_eq!(by_id(999_999).event, "problem");
    let unknown = by_id(999_999).json();
    assert_eq!(unknown["session_id"], 999_999);
    assert_eq!(unknown["problem"]["status"], 404);
    assert!(
        unknown["problem"]["detail"]
            .as_str()
            .unwrap()
            .contains("no session has id 999999"),
        "{unknown}"
    );

    // The pending one when its task ends, within moments of a worker storing it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let _workers = Workers::start(&config);
    let event = stream.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(event.event, "result");
    assert_eq!(event.id, Some(pending.to_string()));
    assert!(
        event
            .data
            .contains(r#""result":123456789012345678901234567891,"#),
        "{event:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let end = stream.next(Duration::from_secs(2)).await.unwrap();
    assert_eq!(end.event, "end");
    assert_eq!(end.id.as_deref(), Some("end"));
    assert_eq!(end.json(), json!({"sessions": 4}));
    assert_eq!(stream.next(Duration::from_secs(2)).await, None, "closed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_reconnects_gets_the_rest_and_204_once_it_saw_the_end() {
    let mut config = unique_config();
    // A stream lasts as long as a sync request waits.
    config.tasks.sync_timeout = Duration::from_secs(2);
    let app = App::start(config.clone()).await;
    let workers = Workers::start(&config);
    app.wait_for_workers(2).await;
    let done = submit(&app, "[2]").await;
    app.poll(done).await;
    workers.stop().await;
    let (pending, cancelled) = (submit(&app, "[3]").await, submit(&app, "[4]").await);
    let ids = [done, pending, cancelled];

    let mut stream = open(&app, &ids, &[]).await;
    let first = stream.next(Duration::from_secs(2)).await.unwrap();
    assert_eq!(first.json(), result(done, json!(2), "done"));
    // Over after tasks.sync_timeout, without `end`: the client comes back.
    let started = Instant::now();
    assert_eq!(stream.next(Duration::from_secs(5)).await, None);
    assert!(started.elapsed() < Duration::from_secs(3));

    let last = first.id.unwrap();
    let mut stream = open(&app, &ids, &[("Last-Event-ID", &last)]).await;
    let again = stream.next(Duration::from_secs(2)).await.unwrap();
    assert_eq!(again.json(), result(done, json!(2), "done"));
    // A cancel is an end too.
    let r = app.delete(&format!("/async/tasks/{cancelled}")).await;
    assert_eq!(r.status, 200, "{r:?}");
    let event = stream.next(Duration::from_secs(1)).await.unwrap();
    assert_eq!(event.json(), result(cancelled, json!(null), "cancelled"));
    let _workers = Workers::start(&config);
    let rest = until_end(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0].json(), result(pending, json!(3), "done"));

    let r = request(&app, &ids, &[("Last-Event-ID", "end")]).await;
    assert_eq!(r.status(), 204);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_stream_sends_keep_alives_and_stays_open() {
    let mut config = unique_config();
    config.tasks.sync_timeout = Duration::from_secs(25);
    // Shorter than the stream is quiet: a streaming answer is not an idle connection.
    config.http.idle_timeout = Duration::from_secs(5);
    let app = App::start(config.clone()).await;
    let pending = submit(&app, "[1]").await;
    let mut stream = open(&app, &[pending], &[]).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let _workers = Workers::start(&config);
    let event = stream.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(event.json(), result(pending, json!(1), "done"));
    assert!(stream.comments >= 1, "no keep-alive in 12 s");
    assert_eq!(
        stream.next(Duration::from_secs(2)).await.unwrap().event,
        "end"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_session_lists_are_400_and_streams_count_as_waiting_requests() {
    let mut config = unique_config();
    config.limits.max_sync_waiters = 2;
    let app = App::start(config).await;
    let r = app.get("/async/events").await;
    r.assert_problem(400, "`session_id` is missing");
    let r = app.get("/async/events?session_id=1&session_id=x").await;
    r.assert_problem(400, "`session_id` is not an integer");
    let many: Vec<String> = (1..=101).map(|i| format!("session_id={i}")).collect();
    let r = app.get(&format!("/async/events?{}", many.join("&"))).await;
    r.assert_problem(400, "at most 100");

    let (a, b, c) = (
        submit(&app, "[1]").await,
        submit(&app, "[2]").await,
        submit(&app, "[3]").await,
    );
    // One waiting slot per pending session: two are all this server has.
    let _open = open(&app, &[a, b], &[]).await;
    let r = request(&app, &[c], &[]).await;
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("limits.max_sync_waiters"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_keys_a_stream_tells_only_the_owner_and_counts_once_for_its_key() {
    let mut config = keys_config();
    config.auth.max_sync_waiters = 1;
    let (app, secrets) = start_with_keys(config, &["owner", "other"]).await;
    let owner_header = format!("Bearer {}", secrets[0]);
    let other_header = format!("Bearer {}", secrets[1]);
    let owner = support::keys::Client::with_key(&app, &secrets[0]);
    let (a, b) = (owner.submit("[1]").await, owner.submit("[2]").await);

    let r = request(&app, &[a], &[]).await;
    assert_eq!(r.status(), 401);
    let mut other = open(&app, &[a], &[("authorization", &other_header)]).await;
    let event = other.next(Duration::from_secs(2)).await.unwrap();
    assert_eq!(event.event, "problem");
    assert_eq!(event.json()["problem"]["status"], 404);
    assert_eq!(
        other.next(Duration::from_secs(2)).await.unwrap().event,
        "end"
    );

    // Two pending sessions, one stream: one waiting request of the key's one.
    let mut stream = open(&app, &[a, b], &[("authorization", &owner_header)]).await;
    let r = request(&app, &[a], &[("authorization", &owner_header)]).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("ratelimit"));
    let _workers = Workers::start(&app.config);
    let events = until_end(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 2, "{events:?}");
}
