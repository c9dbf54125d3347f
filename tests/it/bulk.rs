//! Work in bulk: many sessions read in one request, each answering for itself, in both
//! auth modes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::config::{direct_client, with_postgres, with_rabbitmq, POSTGRES, RABBITMQ};
use support::keys::{keys_config, start_with_keys, Client};
use support::proxy::proxy_to;
use support::sessions::session_rows;
use support::started::app_with_workers;
use support::{unique_config, App};

async fn read(app: &App, ids: &[i64]) -> support::Reply {
    app.post(
        "/async/get_task_results",
        &json!({ "session_ids": ids }).to_string(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_read_answers_each_session_in_order_one_bad_id_failing_none() {
    let (app, _workers) = app_with_workers().await;
    let mut ids = Vec::new();
    for args in ["[1, 2.5]", "[0.1, 0.2]", "[9007199254740993, 1]"] {
        let r = app
            .post("/async/post_task", &format!(r#"{{"args": {args}}}"#))
            .await;
        ids.push(r.body["session_id"].as_i64().unwrap());
    }
    for id in &ids {
        app.poll(*id).await;
    }
    let asked = [ids[2], 999_999, ids[0], ids[1], ids[0]];
    let r = read(&app, &asked).await;
    assert_eq!(r.status, 200, "{r:?}");
    let results = r.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    assert!(
        r.text.contains(&format!(
            r#"{{"session_id":{},"result":9007199254740994,"status":"done"}}"#,
            ids[2]
        )),
        "{}",
        r.text
    );
    assert_eq!(results[1]["session_id"], 999_999);
    assert_eq!(results[1]["problem"]["status"], 404);
    assert_eq!(
        results[2],
        json!({"session_id": ids[0], "result": 3.5, "status": "done"})
    );
    assert_eq!(
        results[3],
        json!({"session_id": ids[1], "result": 0.3, "status": "done"})
    );
    assert_eq!(results[4], results[2]);

    let r = app
        .post(
            "/async/get_task_results?numbers=string",
            &json!({ "session_ids": [ids[1]] }).to_string(),
        )
        .await;
    assert_eq!(r.body["results"][0]["result"], "0.3", "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_read_refuses_bad_lists_naming_what_is_wrong() {
    let mut config = unique_config();
    config.limits.max_batch = 3;
    let app = App::start(config).await;
    read(&app, &[])
        .await
        .assert_problem(400, "`session_ids` is empty");
    read(&app, &[1, 2, 3, 4])
        .await
        .assert_problem(413, "limits.max_batch (3)");
    read(&app, &[1, -2])
        .await
        .assert_problem(400, "`session_ids[1]` is -2");
    app.post("/async/get_task_results", r#"{"session_ids": ["x"]}"#)
        .await
        .assert_problem(400, "session_ids");
    app.post("/async/get_task_results", r#"[1, 2]"#)
        .await
        .assert_problem(400, "not a JSON object");
    app.post("/async/get_task_results", r#"{"session_ids": [1"#)
        .await
        .assert_problem(400, "not valid JSON");
    let r = app
        .http
        .post(app.url("/async/get_task_results"))
        .header("content-type", "text/plain")
        .body(r#"{"session_ids": [1]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_keys_a_bulk_read_shows_only_the_callers_sessions() {
    let (app, secrets) = start_with_keys(keys_config(), &["a", "b"]).await;
    let (a, b) = (
        Client::with_key(&app, &secrets[0]),
        Client::with_key(&app, &secrets[1]),
    );
    let mine = a.submit("[1]").await;
    let theirs = b.submit("[2]").await;
    let r = a
        .post(
            "/async/get_task_results",
            &json!({ "session_ids": [mine, theirs] }).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["results"][0]["status"], "pending", "{r:?}");
    assert_eq!(r.body["results"][1]["problem"]["status"], 404, "{r:?}");
    Client::anonymous(&app)
        .post(
            "/async/get_task_results",
            &json!({ "session_ids": [mine] }).to_string(),
        )
        .await
        .assert_problem(401, "API key");
}

/// A bulk submit body of `sums`, each an `args` text.
fn batch(sums: &[String]) -> String {
    let tasks: Vec<String> = sums.iter().map(|a| format!(r#"{{"args": {a}}}"#)).collect();
    format!(r#"{{"tasks": [{}]}}"#, tasks.join(", "))
}

/// Submits `sums` in one bulk request, which must succeed; returns their sessions.
async fn submit_batch(app: &App, sums: &[String]) -> Vec<i64> {
    let r = app.post("/async/post_tasks", &batch(sums)).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["session_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_submit_queues_every_sum_and_answers_their_sessions_in_order() {
    let (app, _workers) = app_with_workers().await;
    // Big and small sums mixed.
    let big = format!("[{}]", vec!["0.001"; 20_000].join(","));
    let mut sums: Vec<String> = (0..50).map(|i| format!("[{i}, 0.5]")).collect();
    sums[7] = big.clone();
    sums[30] = "[123456789012345678901234567890, 1]".into();
    let ids = submit_batch(&app, &sums).await;
    assert_eq!(ids.len(), 50);
    for id in &ids {
        app.poll(*id).await;
    }
    let read = read(&app, &ids).await;
    let results = read.body["results"].as_array().unwrap();
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["session_id"], ids[i]);
        assert_eq!(result["status"], "done", "{result}");
        match i {
            7 => assert_eq!(result["result"], 20.0),
            30 => assert!(read
                .text
                .contains(r#""result":123456789012345678901234567891,"#)),
            _ => assert_eq!(result["result"].to_string(), format!("{i}.5")),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_batch_among_single_submits_stores_its_sessions_in_one_transaction() {
    let (app, _workers) = app_with_workers().await;
    let app = Arc::new(app);
    // Single submits keep the session writer busy meanwhile, so the batch's rows queue
    // behind other requests' and beside them.
    let singles: Vec<_> = (0..4)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    let r = app.post("/async/post_task", r#"{"args": [1]}"#).await;
                    assert_eq!(r.status, 200, "{r:?}");
                }
            })
        })
        .collect();
    let max_batch = app.config.limits.max_batch;
    let sums: Vec<String> = (0..max_batch).map(|i| format!("[{i}]")).collect();
    let mut batches = Vec::new();
    for _ in 0..3 {
        let ids = submit_batch(&app, &sums).await;
        assert_eq!(ids.len(), max_batch);
        batches.push(ids);
    }
    for single in singles {
        single.await.unwrap();
    }

    // Rows written by one transaction carry its id (xmin): one for all of a batch.
    let client = direct_client(&app.config).await;
    for ids in &batches {
        let row = client
            .query_one(
                "SELECT count(*), count(DISTINCT xmin::text) FROM sessions WHERE id = ANY($1)",
                &[ids],
            )
            .await
            .unwrap();
        let (rows, transactions): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!((rows, transactions), (max_batch as i64, 1));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_submit_is_checked_whole_before_anything_is_queued() {
    let mut config = unique_config();
    config.limits.max_batch = 3;
    config.limits.max_items = 10;
    config.limits.max_result_digits = 20;
    let app = App::start(config.clone()).await;
    let sums = |n: usize| (0..n).map(|i| format!("[{i}]")).collect::<Vec<_>>();
    let r = app.post("/async/post_tasks", &batch(&sums(3))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["session_ids"].as_array().unwrap().len(), 3);
    let queued = session_rows(&config).await;

    for (body, status, words) in [
        (batch(&sums(4)), 413, "limits.max_batch (3)"),
        (r#"{"tasks": []}"#.to_owned(), 400, "`tasks` is empty"),
        (
            batch(&["[1]".into(), "[1, \"x\"]".into()]),
            400,
            "`tasks[1]`: `args[1]` is not a JSON number",
        ),
        (
            batch(&["[1,2,3,4,5]".into(), "[1,2,3,4,5,6]".into()]),
            413,
            "by `tasks[1]`",
        ),
        (
            batch(&["[1]".into(), "[1e30, 1e-30]".into()]),
            422,
            "`tasks[1]`: ",
        ),
        (
            r#"{"tasks": [{"arg": [1]}]}"#.to_owned(),
            400,
            "`tasks[0]` is not an object",
        ),
        (r#"{"tasks": 3}"#.to_owned(), 400, "`tasks` is not an array"),
        ("[]".to_owned(), 400, "not a JSON object"),
    ] {
        app.post("/async/post_tasks", &body)
            .await
            .assert_problem(status, words);
    }
    // Nothing of a refused batch was queued or stored.
    assert_eq!(session_rows(&config).await, queued);
    assert_eq!(
        support::amqp::queue_depth(&config.rabbitmq.queue),
        3,
        "only the accepted batch is queued"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_submit_sent_again_with_its_key_gets_the_same_sessions() {
    let app = App::start(unique_config()).await;
    let body = batch(&["[1]".into(), "[2]".into()]);
    let headers = [("Idempotency-Key", "\"batch-1\"")];
    let first = app.post_with("/async/post_tasks", &body, &headers).await;
    assert_eq!(first.status, 200, "{first:?}");
    let again = app.post_with("/async/post_tasks", &body, &headers).await;
    assert_eq!(again.text, first.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(support::amqp::queue_depth(&app.config.rabbitmq.queue), 2);
    let other = batch(&["[1]".into(), "[3]".into()]);
    app.post_with("/async/post_tasks", &other, &headers)
        .await
        .assert_problem(422, "Idempotency-Key");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_keys_a_batch_counts_as_its_sums_against_the_rate() {
    let mut config = keys_config();
    config.auth.rate = 1;
    config.auth.burst = 10;
    let (app, secrets) = start_with_keys(config, &["bulk"]).await;
    let client = Client::with_key(&app, &secrets[0]);
    let sums = |n: usize| batch(&(0..n).map(|i| format!("[{i}]")).collect::<Vec<_>>());
    let r = client.post("/async/post_tasks", &sums(8)).await;
    assert_eq!(r.status, 200, "{r:?}");
    // One request and eight sums: two of the ten left.
    assert!(
        r.header("ratelimit")
            .is_some_and(|v| v.contains("r=1;") || v.contains("r=2;")),
        "{r:?}"
    );
    client
        .post("/async/post_tasks", &sums(5))
        .await
        .assert_problem(429, "auth.rate");
    // The refused batch took its own admission, as any request does: one is left.
    let body = json!({ "session_ids": r.body["session_ids"] }).to_string();
    let read = || client.post("/async/get_task_results", &body);
    let last = read().await;
    assert_eq!(last.status, 200, "{last:?}");
    assert_eq!(last.header("ratelimit"), Some("\"key\";r=0;t=10"));
    read().await.assert_problem(429, "auth.rate");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_keys_a_batch_larger_than_the_burst_goes_when_the_burst_is_whole() {
    let mut config = keys_config();
    config.auth.rate = 20;
    config.auth.burst = 10;
    let (app, secrets) = start_with_keys(config, &["bulk"]).await;
    let client = Client::with_key(&app, &secrets[0]);
    let sums = |n: usize| batch(&(0..n).map(|i| format!("[{i}]")).collect::<Vec<_>>());
    // Thirty sums with a burst of ten: taken, and the key owes twenty.
    let r = client.post("/async/post_tasks", &sums(30)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let refused = client.post("/async/post_task", r#"{"args": [1]}"#).await;
    refused.assert_problem(429, "auth.rate");
    let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{refused:?}");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let r = client.post("/async/post_task", r#"{"args": [1]}"#).await;
    assert_eq!(r.status, 200, "{r:?}");
}

/// Cuts `proxy` once part of a batch is in the queue (read past the proxy), while the
/// request is still out; answers the request's reply and whether the cut came before
/// it was answered.
async fn cut_midway(
    app: &Arc<App>,
    proxy: &support::proxy::Proxy,
    body: String,
) -> (support::Reply, bool) {
    let queue = app.config.rabbitmq.queue.clone();
    let depth = support::amqp::queue_depth(&queue);
    let request = tokio::spawn({
        let app = app.clone();
        async move { app.post("/async/post_tasks", &body).await }
    });
    let mut midway = false;
    while !request.is_finished() {
        if support::amqp::queue_depth(&queue) > depth {
            proxy.cut();
            midway = !request.is_finished();
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (request.await.unwrap(), midway)
}

/// Either every session of the batch answers, or the client got an error and no
/// session: nothing half-accepted, whatever fails in the middle.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_cut_off_from_rabbitmq_midway_hands_out_no_session() {
    let proxy = proxy_to(RABBITMQ).await;
    let mut config = unique_config();
    with_rabbitmq(&mut config, proxy.addr);
    let app = Arc::new(App::start(config.clone()).await);
    let ones = vec!["1"; 400].join(",");
    let sums: Vec<String> = (0..1000).map(|i| format!("[{i}, {ones}]")).collect();
    let mut refused = 0;
    for _ in 0..3 {
        let before = session_rows(&config).await;
        let (r, midway) = cut_midway(&app, &proxy, batch(&sums)).await;
        if r.status == 200 {
            assert_eq!(r.body["session_ids"].as_array().unwrap().len(), 1000);
            assert_eq!(session_rows(&config).await, before + 1000);
        } else {
            r.assert_problem(503, "RabbitMQ");
            assert!(r.body.get("session_ids").is_none(), "{r:?}");
            assert_eq!(session_rows(&config).await, before, "no session stored");
            refused += usize::from(midway);
        }
        proxy.restore();
        app.wait_for(|r| r.status == 200, "RabbitMQ back").await;
    }
    println!("{refused} of 3 batches cut off midway");
    assert!(refused > 0, "no cut came in the middle of a batch");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_whose_sessions_postgresql_does_not_store_hands_out_none() {
    let proxy = proxy_to(POSTGRES).await;
    let mut config = unique_config();
    with_postgres(&mut config, proxy.addr);
    config.postgres.timeout = Duration::from_secs(1);
    let app = App::start(config.clone()).await;
    let before = session_rows(&config).await;
    let sums: Vec<String> = (0..500).map(|i| format!("[{i}]")).collect();
    // PostgreSQL stops answering once the request is in: its insert hangs, is given
    // up, and commits later, when the link comes back.
    proxy.freeze();
    let started = Instant::now();
    let r = app.post("/async/post_tasks", &batch(&sums)).await;
    r.assert_problem(503, "PostgreSQL");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    proxy.thaw();
    // The late rows are deleted once their statement ends.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = session_rows(&config).await;
        if rows == before {
            break;
        }
        assert!(Instant::now() < deadline, "{rows} rows, {before} before");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The tasks were queued: they run, with no session to read them by.
    assert_eq!(support::amqp::queue_depth(&config.rabbitmq.queue), 500);
    let r = app.post("/async/post_tasks", &batch(&sums[..2])).await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_sums_answers_every_sum_in_order() {
    let (app, _workers) = app_with_workers().await;
    let sums: Vec<String> = (0..100).map(|i| format!("[{i}, 0.1, 0.2]")).collect();
    let r = app.post("/sync/sums", &batch(&sums)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let results = r.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 100);
    let text: Vec<String> = (0..100).map(|i| format!("{i}.3")).collect();
    assert_eq!(r.text, format!(r#"{{"results":[{}]}}"#, text.join(",")));

    let r = app
        .post_with(
            "/sync/sums?numbers=string",
            &batch(&["[1.7e308, 1.7e308]".into(), "[1]".into()]),
            &[("Prefer", "wait=5")],
        )
        .await;
    assert_eq!(r.text, r#"{"results":["3.4e308","1"]}"#);
    assert_eq!(r.header("preference-applied"), Some("wait=5"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_sums_past_its_deadline_answers_a_session_for_each_sum_not_done() {
    let config = unique_config();
    let app = App::start(config.clone()).await;
    // A consumer that takes nothing the test sends to it: the queue has a consumer,
    // so the request is taken, and nothing is computed by the deadline.
    let stuck = support::StuckWorker::start(&config);
    app.wait_for_workers(1).await;
    let started = Instant::now();
    let r = app
        .post_with(
            "/sync/sums",
            &batch(&["[1]".into(), "[2, 0.5]".into()]),
            &[("Prefer", "wait=1")],
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let results = r.body["results"].as_array().unwrap();
    let ids: Vec<i64> = results
        .iter()
        .map(|e| {
            assert_eq!(e["status"], "pending", "{e}");
            assert_eq!(e["result"], serde_json::Value::Null, "{e}");
            e["session_id"].as_i64().unwrap()
        })
        .collect();
    // The tasks go on: released to real workers, each session reads its sum.
    stuck.release();
    let _workers = support::Workers::start(&config);
    assert_eq!(app.poll(ids[0]).await.body["result"], 1);
    assert_eq!(app.poll(ids[1]).await.body["result"], 2.5);

    let other = unique_config();
    let idle = App::start(other).await;
    idle.post("/sync/sums", &batch(&["[1]".into()]))
        .await
        .assert_problem(503, "no worker");
}
