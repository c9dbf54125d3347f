//! Work in bulk: many sessions read in one request, each answering for itself, in both
//! auth modes.

use serde_json::json;
use support::keys::{keys_config, start_with_keys, Client};
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
