//! Every route and status of the HTTP API, against the real services.

use std::time::{Duration, Instant};

use serde_json::json;
use support::amqp::queue_depth;
use support::config::{direct_client, REDIS};
use support::started::app_with_workers;
use support::wait::{wait_until, within};
use support::{unique_config, App, Reply, StuckWorker, Workers};

#[tokio::test(flavor = "multi_thread")]
async fn sync_sum_returns_the_exact_sum() {
    let (app, _workers) = app_with_workers().await;
    let r = app
        .post("/sync/sum", r#"{"args": [9007199254740993, 1, 2]}"#)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text, r#"{"result":9007199254740996}"#);
    assert_eq!(r.header("content-type"), Some("application/json"));

    let r = app.post("/sync/sum", r#"{"args": []}"#).await;
    assert_eq!(r.text, r#"{"result":0}"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn async_task_is_pending_then_done_with_its_exact_sum() {
    let (app, _workers) = app_with_workers().await;
    let r = app
        .post(
            "/async/post_task",
            r#"{"args": [123456789012345678901234567890, 1]}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let session_id = r.body["session_id"].as_i64().expect("session_id");
    assert!(session_id > 0);

    let r = app.poll(session_id).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["status"], "done");
    assert_eq!(r.body["session_id"], session_id);
    assert!(
        r.text
            .contains(r#""result":123456789012345678901234567891"#),
        "{}",
        r.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn numbers_string_writes_results_as_strings_a_double_would_round() {
    let (app, _workers) = app_with_workers().await;
    let r = app
        .post(
            "/sync/sum?numbers=string",
            r#"{"args": [1.7e308, 1.7e308]}"#,
        )
        .await;
    assert_eq!(r.text, r#"{"result":"3.4e308"}"#);
    let r = app
        .post(
            "/sync/sum?numbers=number",
            r#"{"args": [9007199254740993, 0]}"#,
        )
        .await;
    assert_eq!(r.text, r#"{"result":9007199254740993}"#);

    let r = app
        .post(
            "/async/post_task",
            r#"{"args": [0.1, 0.2, 9007199254740993]}"#,
        )
        .await;
    let id = r.body["session_id"].as_i64().unwrap();
    app.poll(id).await;
    let r = app
        .get(&format!(
            "/async/get_task_result?session_id={id}&numbers=string"
        ))
        .await;
    assert_eq!(r.body["result"], "9007199254740993.3", "{r:?}");
    let r = app
        .get(&format!(
            "/async/get_task_result?session_id={id}&numbers=text"
        ))
        .await;
    r.assert_problem(400, "numbers");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queued_task_reads_pending_with_a_null_result() {
    let config = unique_config();
    let app = App::start(config).await;
    // No worker: the task stays queued.
    let r = app.post("/async/post_task", r#"{"args": [1]}"#).await;
    let id = r.body["session_id"].as_i64().unwrap();
    let r = app
        .get(&format!("/async/get_task_result?session_id={id}"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!({"session_id": id, "result": null, "status": "pending"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bodies_are_400_and_name_what_is_wrong() {
    let config = unique_config();
    let app = App::start(config).await;
    for route in ["/sync/sum", "/async/post_task"] {
        app.post(route, "{not json")
            .await
            .assert_problem(400, "not valid JSON");
        app.post(route, r#"{"numbers": [1]}"#)
            .await
            .assert_problem(400, "args");
        app.post(route, r#"{"args": 5}"#)
            .await
            .assert_problem(400, "array");
        app.post(route, r#"{"args": [1, 2, "3"]}"#)
            .await
            .assert_problem(400, "args[2]");
        app.post(route, r#"{"args": [1, null]}"#)
            .await
            .assert_problem(400, "args[1]");
        app.post(route, r#"[1, 2]"#)
            .await
            .assert_problem(400, "args");
        // An array holding what an object would (serde reads structs from arrays).
        app.post(route, r#" [[1, 2]]"#)
            .await
            .assert_problem(400, "not a JSON object");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_is_not_json_content_is_415() {
    let config = unique_config();
    let app = App::start(config).await;
    let r = app
        .http
        .post(app.url("/sync/sum"))
        .header("content-type", "text/plain")
        .body(r#"{"args": [1]}"#)
        .send()
        .await;
    Reply::read(r).await.assert_problem(415, "application/json");
    let r = app
        .http
        .post(app.url("/async/post_task"))
        .body(r#"{"args": [1]}"#)
        .send()
        .await;
    Reply::read(r).await.assert_problem(415, "Content-Type");
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_items_or_bytes_is_413() {
    let mut config = unique_config();
    config.limits.max_items = 3;
    config.limits.max_body_bytes = 100;
    let app = App::start(config).await;
    app.post("/sync/sum", r#"{"args": [1, 2, 3, 4]}"#)
        .await
        .assert_problem(413, "3");
    let big = format!(r#"{{"args": [{}]}}"#, "1".repeat(200));
    app.post("/async/post_task", &big)
        .await
        .assert_problem(413, "100 bytes");
    // Without Content-Length (chunked), the bound holds while reading.
    let chunks: Vec<Result<String, std::io::Error>> = vec![Ok(big.clone())];
    let r = app
        .http
        .post(app.url("/async/post_task"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    Reply::read(r).await.assert_problem(413, "100 bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_with_too_many_digits_is_422_before_anything_is_queued() {
    let config = unique_config();
    let app = App::start(config.clone()).await;
    let started = Instant::now();
    app.post("/sync/sum", r#"{"args": [1e1000000000, 1e-1000000000]}"#)
        .await
        .assert_problem(422, "4300");
    assert!(started.elapsed() < Duration::from_secs(1));
    app.post("/async/post_task", r#"{"args": [1e5000, 1]}"#)
        .await
        .assert_problem(422, "digits");
    // Once the publisher has declared the queue, it holds nothing.
    app.wait_for(|r| r.body["rabbitmq"]["status"] == "up", "RabbitMQ")
        .await;
    assert_eq!(queue_depth(&config.rabbitmq.queue), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_of_max_result_bytes_is_summed_and_a_longer_one_is_422() {
    let (app, _workers) = app_with_workers().await;
    // One significant digit, written with all its zeros: 65536 bytes, the default limit.
    let at_limit = format!("1{}", "0".repeat(65535));
    let r = app
        .post("/sync/sum", &format!(r#"{{"args": [{at_limit}]}}"#))
        .await;
    assert_eq!(r.status, 200, "{}", &r.text[..200.min(r.text.len())]);
    assert_eq!(r.text, format!(r#"{{"result":{at_limit}}}"#));

    let million_zeros = format!(r#"{{"args": [1{}]}}"#, "0".repeat(1_000_000));
    app.post("/sync/sum", &million_zeros).await.assert_problem(
        422,
        "1000001 bytes, more than the limit of 65536 bytes (limits.max_result_bytes)",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pub_sub_carries_a_notice_not_the_result_text() {
    use futures_util::StreamExt;
    let (app, _workers) = app_with_workers().await;
    let client = deadpool_redis::redis::Client::open(format!("redis://{}/0", REDIS)).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    let channels = format!("{}:replies:*", app.config.redis.prefix);
    pubsub.psubscribe(&channels).await.unwrap();

    let big = format!("1{}", "0".repeat(65535));
    let r = app
        .post("/sync/sum", &format!(r#"{{"args": [{big}]}}"#))
        .await;
    assert_eq!(r.status, 200, "{}", &r.text[..200.min(r.text.len())]);
    assert_eq!(r.text, format!(r#"{{"result":{big}}}"#));

    let mut notices = pubsub.on_message();
    let notice = within(Duration::from_secs(5), "the notice", notices.next())
        .await
        .unwrap();
    let payload: String = notice.get_payload().unwrap();
    assert!(
        uuid::Uuid::parse_str(&payload).is_ok(),
        "a notice is a task id, not {} bytes starting {:?}",
        payload.len(),
        &payload[..80.min(payload.len())]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_longer_than_max_result_bytes_is_422_before_anything_is_queued() {
    let mut config = unique_config();
    config.limits.max_result_bytes = 100;
    let app = App::start(config.clone()).await;
    let integer = format!(r#"{{"args": [{}, 1]}}"#, "9".repeat(100));
    app.post("/async/post_task", &integer).await.assert_problem(
        422,
        "101 bytes, more than the limit of 100 bytes (limits.max_result_bytes)",
    );
    let decimal = format!(r#"{{"args": [0.{}]}}"#, "1".repeat(99));
    app.post("/async/post_task", &decimal)
        .await
        .assert_problem(422, "limits.max_result_bytes");
    // One digit fewer is written in exactly 100 bytes, and queued.
    let decimal = format!(r#"{{"args": [0.{}]}}"#, "1".repeat(98));
    let r = app.post("/async/post_task", &decimal).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body["session_id"].is_u64(), "{r:?}");
    assert_eq!(queue_depth(&config.rabbitmq.queue), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn session_ids_are_checked() {
    let config = unique_config();
    let app = App::start(config).await;
    for (query, kind, lead) in [
        (
            "session_id=0",
            "invalid-session-id",
            "must be positive, not 0",
        ),
        (
            "session_id=-3",
            "invalid-session-id",
            "must be positive, not -3",
        ),
        ("session_id=abc", "invalid-parameter", "is not an integer"),
        ("session_id=1.5", "invalid-parameter", "is not an integer"),
        ("", "invalid-session-id", "is missing"),
    ] {
        let r = app.get(&format!("/async/get_task_result?{query}")).await;
        r.assert_problem(400, &format!("`session_id` {lead}: pass the session id"));
        assert_eq!(
            r.body["type"],
            format!("urn:sumsvc:problem:{kind}"),
            "{query}"
        );
    }
    app.get("/async/get_task_result?session_id=999999")
        .await
        .assert_problem(404, "999999");
}

#[tokio::test(flavor = "multi_thread")]
async fn session_ids_are_random_distinct_and_exact_in_javascript() {
    let config = unique_config();
    let app = App::start(config).await;
    let mut ids = Vec::new();
    for _ in 0..300 {
        let id = support::sessions::submit_pending(&app).await;
        assert_eq!(
            id as f64 as i64, id,
            "{id} is not exact as a JavaScript number"
        );
        ids.push(id);
    }

    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "some session ids repeat");
    assert_ne!(sorted, ids, "session ids grow in creation order");
    // Counting from a known id finds nothing: no two ids are anywhere near each other.
    let closest = sorted.windows(2).map(|w| w[1] - w[0]).min().unwrap();
    assert!(closest > 1000, "two session ids are only {closest} apart");
    // The whole range is used, not only its bottom.
    assert!(
        sorted.last().unwrap() > &(1 << 52),
        "the largest of 300 ids is {}",
        sorted.last().unwrap()
    );

    let neighbour = ids[0] + 1;
    app.get(&format!("/async/get_task_result?session_id={neighbour}"))
        .await
        .assert_problem(404, &neighbour.to_string());
}

/// An API whose database holds session 1, and a trigger that turns the next `n`
/// inserts into inserts of session 1: to the service those draws were ids already
/// taken. The table `collisions` counts the collisions still to come.
async fn app_whose_next_ids_collide(n: i32) -> (App, tokio_postgres::Client) {
    let config = unique_config();
    let app = App::start(config.clone()).await;
    let db = direct_client(&config).await;
    db.batch_execute(&format!(
        "INSERT INTO sessions (id, task_id) VALUES (1, gen_random_uuid());
         CREATE TABLE collisions (remaining INT NOT NULL);
         INSERT INTO collisions VALUES ({n});
         CREATE FUNCTION collide() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             UPDATE collisions SET remaining = remaining - 1 WHERE remaining > 0;
             IF FOUND THEN NEW.id := 1; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER collide BEFORE INSERT ON sessions
             FOR EACH ROW EXECUTE FUNCTION collide();"
    ))
    .await
    .unwrap();
    (app, db)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_id_already_taken_is_drawn_again_a_few_times() {
    let (app, db) = app_whose_next_ids_collide(2).await;

    support::sessions::submit_pending(&app).await;
    let remaining: i32 = db
        .query_one("SELECT remaining FROM collisions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(remaining, 0, "both collisions were drawn past");

    // Taken ids draw after draw: the service gives up with a 503 rather than loop.
    db.execute("UPDATE collisions SET remaining = 100", &[])
        .await
        .unwrap();
    app.post("/async/post_task", r#"{"args": [1]}"#)
        .await
        .assert_problem(503, "already taken");
    let sessions: i64 = db
        .query_one("SELECT count(*) FROM sessions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        sessions, 2,
        "session 1 and the one created past the collisions"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_submits_each_get_their_own_session_when_some_ids_were_taken() {
    // Submitted together, the requests share multi-row inserts in which only some rows
    // collide. Fewer collisions than a request's 4 draws, so none may give up.
    let (app, db) = app_whose_next_ids_collide(3).await;

    let app = std::sync::Arc::new(app);
    let submits: Vec<_> = (0..50)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let r = app
                    .post("/async/post_task", &format!(r#"{{"args": [{i}]}}"#))
                    .await;
                assert_eq!(r.status, 200, "{r:?}");
                r.body["session_id"].as_i64().unwrap()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for s in submits {
        ids.push(s.await.unwrap());
    }
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 50, "{ids:?}");
    for id in &ids {
        support::sessions::assert_pending(&app, *id).await;
    }
    let row = db
        .query_one(
            "SELECT (SELECT remaining FROM collisions), (SELECT count(*) FROM sessions)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 0, "every collision was drawn past");
    assert_eq!(row.get::<_, i64>(1), 51, "session 1 and one per submit");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_result_is_410() {
    let mut config = unique_config();
    config.tasks.result_ttl = Duration::from_secs(1);
    let app = App::start(config.clone()).await;
    let _workers = Workers::start(&config);
    let r = app.post("/async/post_task", r#"{"args": [2, 2]}"#).await;
    let id = r.body["session_id"].as_i64().unwrap();
    assert_eq!(app.poll(id).await.body["status"], "done");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    app.get(&format!("/async/get_task_result?session_id={id}"))
        .await
        .assert_problem(410, "tasks.result_ttl");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_and_methods_are_problem_details() {
    let config = unique_config();
    let app = App::start(config).await;
    app.get("/nope").await.assert_problem(404, "/docs");
    app.get("/sync/sum").await.assert_problem(405, "/docs");
    let r = app.http.delete(app.url("/healthz")).send().await;
    Reply::read(r).await.assert_problem(405, "method");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_method_is_405_with_allow_naming_the_methods_the_route_takes() {
    let config = unique_config();
    let app = App::start(config).await;
    for (path, wrong, allow) in [
        ("/sync/sum", reqwest::Method::GET, "POST"),
        ("/async/post_task", reqwest::Method::PUT, "POST"),
        ("/async/get_task_result", reqwest::Method::POST, "GET, HEAD"),
        ("/healthz", reqwest::Method::DELETE, "GET, HEAD"),
        ("/readyz", reqwest::Method::PATCH, "GET, HEAD"),
    ] {
        let r = app.http.request(wrong.clone(), app.url(path)).send().await;
        let reply = Reply::read(r).await;
        reply.assert_problem(405, allow);
        assert_eq!(reply.header("allow"), Some(allow), "{wrong} {path}");
    }
    // HEAD is answered wherever GET is, and refused with the same Allow elsewhere.
    let r = app.http.head(app.url("/healthz")).send().await;
    assert_eq!(Reply::read(r).await.status, 200);
    let r = app.http.head(app.url("/sync/sum")).send().await;
    let reply = Reply::read(r).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST"));
}

#[tokio::test(flavor = "multi_thread")]
async fn docs_and_the_openapi_document_are_served_and_complete() {
    let config = unique_config();
    let app = App::start(config).await;
    let docs = app.get("/docs").await;
    assert_eq!(docs.status, 200);
    assert!(
        docs.text.contains("swagger"),
        "{}",
        &docs.text[..200.min(docs.text.len())]
    );

    let spec = app.get("/openapi.json").await;
    assert_eq!(spec.status, 200);
    let paths = spec.body["paths"].as_object().expect("paths");
    for path in [
        "/sync/sum",
        "/async/post_task",
        "/async/get_task_result",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.contains_key(path), "{path} is not documented");
    }
    for (path, operations) in paths {
        for (method, op) in operations.as_object().expect("operations") {
            assert!(op["summary"].is_string(), "{method} {path} has no summary");
            assert!(
                op["description"].is_string(),
                "{method} {path} has no description"
            );
        }
    }
    let sync = &paths["/sync/sum"]["post"]["responses"];
    for status in ["200", "202", "400", "413", "415", "422", "503"] {
        assert!(sync[status].is_object(), "/sync/sum documents no {status}");
    }
    let schemas = spec.body["components"]["schemas"].as_object().unwrap();
    for (name, schema) in schemas {
        for (field, prop) in schema["properties"].as_object().into_iter().flatten() {
            let described = prop["description"].is_string()
                || prop["allOf"].is_array()
                || prop["$ref"].is_string();
            assert!(described, "{name}.{field} has no description");
        }
    }
    for name in [
        "SumArgs",
        "SumResult",
        "TaskResult",
        "Problem",
        "Submitted",
        "Pending",
    ] {
        assert!(
            schemas[name]["example"].is_object(),
            "{name} has no example"
        );
    }
    // Session ids are still plain integers, as clients of the original API expect.
    let parameter = &paths["/async/get_task_result"]["get"]["parameters"][0];
    assert_eq!(parameter["name"], "session_id");
    for (place, schema) in [
        (
            "Submitted",
            &schemas["Submitted"]["properties"]["session_id"],
        ),
        (
            "TaskResult",
            &schemas["TaskResult"]["properties"]["session_id"],
        ),
        ("the session_id parameter", &parameter["schema"]),
    ] {
        assert_eq!(schema["type"], "integer", "{place}: {schema}");
        assert_eq!(schema["format"], "int64", "{place}: {schema}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_readiness_report_each_dependency_and_the_workers() {
    let (app, workers) = app_with_workers().await;
    let r = app.get("/healthz").await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("ok")));
    let r = app.get("/readyz").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["status"], "ready");
    for dep in ["postgres", "rabbitmq", "redis"] {
        assert_eq!(r.body[dep]["status"], "up", "{r:?}");
    }
    assert_eq!(r.body["workers"], 2);
    workers.stop().await;
    app.wait_for_workers(0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_request_without_workers_is_503_at_once() {
    let config = unique_config();
    let app = App::start(config).await;
    app.wait_for_workers(0).await;
    // Under load the result subscription can come up after the broker: until it does, the
    // answer is a 503 for Redis, not for the missing workers.
    app.wait_for(|r| r.body["redis"]["status"] == "up", "Redis")
        .await;
    let started = Instant::now();
    let r = app.post("/sync/sum", r#"{"args": [1]}"#).await;
    r.assert_problem(503, "no worker");
    assert_eq!(r.headers.get_all("retry-after").iter().count(), 1, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_request_past_its_deadline_is_202_and_its_session_completes() {
    let mut config = unique_config();
    config.tasks.sync_timeout = Duration::from_secs(1);
    let app = App::start(config.clone()).await;
    let stuck = StuckWorker::start(&config);
    app.wait_for_workers(1).await;

    let started = Instant::now();
    let r = app.post("/sync/sum", r#"{"args": [0.5, 0.25]}"#).await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.body["status"], "pending");
    assert_eq!(r.body["result"], serde_json::Value::Null);
    let id = r.body["session_id"].as_i64().unwrap();
    assert_eq!(
        r.header("location"),
        Some(format!("/async/get_task_result?session_id={id}").as_str())
    );

    // The task goes on: once a real worker takes it over, the session has the sum.
    stuck.release();
    let _workers = Workers::start(&config);
    let done = app.poll(id).await;
    assert_eq!(done.body["status"], "done", "{done:?}");
    assert!(done.text.contains(r#""result":0.75"#), "{}", done.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn prefer_wait_shortens_the_deadline() {
    let config = unique_config();
    let app = App::start(config.clone()).await;
    let _stuck = StuckWorker::start(&config);
    app.wait_for_workers(1).await;
    let started = Instant::now();
    let r = app
        .post_with("/sync/sum", r#"{"args": [1]}"#, &[("Prefer", "wait=1")])
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.header("preference-applied"), Some("wait=1"));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
}

/// A thousand sync requests wait on a paused worker while the server keeps answering;
/// each gets its own sum once the worker resumes.
#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_concurrent_sync_waiters_each_get_their_sum() {
    const N: usize = 1000;
    let mut config = unique_config();
    config.tasks.sync_timeout = Duration::from_secs(60);
    let app = std::sync::Arc::new(App::start(config.clone()).await);
    let stuck = StuckWorker::start(&config);
    app.wait_for_workers(1).await;

    let requests: Vec<_> = (0..N)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let body = format!(r#"{{"args": [{i}, {i}, 0.5]}}"#);
                (i, app.post("/sync/sum", &body).await)
            })
        })
        .collect();
    wait_until("all requests queued", Duration::from_secs(30), || {
        stuck.received() >= N
    })
    .await;

    // All N wait; the server still answers other requests promptly.
    within(Duration::from_secs(1), "/healthz", async {
        assert_eq!(app.get("/healthz").await.status, 200);
    })
    .await;
    within(Duration::from_secs(2), "/async/post_task", async {
        assert_eq!(
            app.post("/async/post_task", r#"{"args": [1]}"#)
                .await
                .status,
            200
        );
    })
    .await;

    stuck.release();
    let workers = Workers::start(&config);
    for request in requests {
        let (i, r) = request.await.unwrap();
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(
            r.text,
            format!(r#"{{"result":{}.5}}"#, 2 * i),
            "request {i}"
        );
    }
    workers.stop().await;
}
