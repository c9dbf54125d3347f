//! What a client sees of session ids: random integers in [2^32, 2^53).

use std::ops::Range;

use serde_json::json;

use crate::config::direct_client;
use crate::App;

/// Where session ids are drawn from: above every id counted before they were random,
/// and exact as a JavaScript number.
pub const SESSION_IDS: Range<i64> = (1 << 32)..(1 << 53);

/// Submits a sum with no worker running; checks that its session id is one the service
/// drew and that the session answers, pending. Returns the id.
pub async fn submit_pending(app: &App) -> i64 {
    let r = app.post("/async/post_task", r#"{"args": [1]}"#).await;
    assert_eq!(r.status, 200, "{r:?}");
    let id = r.body["session_id"]
        .as_i64()
        .expect("an integer session_id");
    assert!(
        SESSION_IDS.contains(&id),
        "session id {id} is outside [2^32, 2^53)"
    );
    assert_pending(app, id).await;
    id
}

/// Checks that session `id` answers, and that its task is still queued.
pub async fn assert_pending(app: &App, id: i64) {
    let r = app
        .get(&format!("/async/get_task_result?session_id={id}"))
        .await;
    assert_eq!(
        r.body,
        json!({"session_id": id, "result": null, "status": "pending"}),
        "{r:?}"
    );
}

/// Rows in the test's `sessions` table.
pub async fn session_rows(config: &sumsvc::Config) -> i64 {
    direct_client(config)
        .await
        .query_one("SELECT count(*) FROM sessions", &[])
        .await
        .unwrap()
        .get(0)
}
