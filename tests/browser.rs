//! Swagger UI at `/docs` in a real browser: headless Chromium, through chromedriver
//! (Debian's `chromium` and `chromium-driver`), lists every route and runs "Try it out"
//! against the real service, as a person exploring the API would. And the result
//! stream through the browser's own `EventSource`, reconnects included.
//!
//! A test binary of its own, apart from `tests/it`: it needs Chromium and chromedriver,
//! which the other tests do not, and starts a whole browser.

use serde_json::{json, Value};
use std::time::Duration;

use support::started::app_with_workers;
use support::webdriver::{Browser, Element};
use support::{unique_config, App, Workers};

/// Every operation of the OpenAPI document, as `METHOD /path`, sorted.
fn documented(spec: &Value) -> Vec<String> {
    let mut ops: Vec<String> = spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| {
            let methods = ops.as_object().expect("operations").keys();
            methods.map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .collect();
    ops.sort();
    ops
}

/// The operations Swagger UI lists, as `METHOD /path`, sorted.
async fn listed(browser: &Browser) -> Vec<String> {
    let listed = browser
        .script(
            "return [...document.querySelectorAll('.opblock')].map(block => \
               block.querySelector('.opblock-summary-method').innerText + ' ' + \
               block.querySelector('.opblock-summary-path').dataset.path)",
            vec![],
        )
        .await;
    let mut listed: Vec<String> = serde_json::from_value(listed).expect("a list of strings");
    listed.sort();
    listed
}

/// The block of one operation, opened.
async fn open_operation(browser: &Browser, method: &str, path: &str) -> Element {
    let find = "return [...document.querySelectorAll('.opblock')].find(block => \
                  block.querySelector('.opblock-summary-method').innerText === arguments[0] && \
                  block.querySelector('.opblock-summary-path').dataset.path === arguments[1]) \
                || null";
    let block = browser
        .wait_for(&format!("{method} {path} to be listed"), || async move {
            let args = vec![json!(method.to_uppercase()), json!(path)];
            Element::from_script(browser.script(find, args).await)
        })
        .await;
    let summary = browser.find_in(&block, ".opblock-summary").await;
    browser.click(&summary).await;
    block
}

/// Presses "Try it out" in an open operation block.
async fn try_it_out(browser: &Browser, block: &Element) {
    let button = browser.find_in(block, ".try-out__btn").await;
    browser.click(&button).await;
}

/// Presses "Execute" and waits for the answer; gives its status code and its body as
/// Swagger UI shows it (pretty-printed).
async fn execute(browser: &Browser, block: &Element) -> (String, String) {
    let button = browser.find_in(block, ".execute").await;
    browser.click(&button).await;
    let status = browser
        .find_in(
            block,
            ".live-responses-table tr.response .response-col_status",
        )
        .await;
    let body = browser
        .find_in(block, ".live-responses-table .highlight-code pre")
        .await;
    (browser.text(&status).await, browser.text(&body).await)
}

/// JSON text without the whitespace Swagger UI adds, numbers as written.
fn compact(pretty: &str) -> String {
    pretty.split_whitespace().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn swagger_ui_lists_every_route_and_try_it_out_answers_from_the_service() {
    // The browser first: without Chromium the test stops at once, naming the package.
    let browser = &Browser::start().await;
    let (app, _workers) = app_with_workers().await;
    browser.goto(&app.url("/docs")).await;

    // Every route of the document is listed, with its method.
    let spec = app.get("/openapi.json").await.body;
    let routes = documented(&spec);
    assert_eq!(
        routes,
        [
            "DELETE /async/tasks/{session_id}",
            "GET /async/events",
            "GET /async/get_task_result",
            "GET /async/tasks/{session_id}",
            "GET /healthz",
            "GET /readyz",
            "POST /async/get_task_results",
            "POST /async/post_task",
            "POST /async/post_tasks",
            "POST /sync/sum",
            "POST /sync/sums",
        ]
    );
    let count = routes.len();
    let shown = browser
        .wait_for("Swagger UI to list every route", || async move {
            let shown = listed(browser).await;
            (shown.len() == count).then_some(shown)
        })
        .await;
    assert_eq!(shown, routes);
    browser.screenshot("routes", None).await;

    // The sync route with its example body: 1 + 2.5 + 0.1 + 0.2 is 3.8 exactly (a
    // float sum would show 3.8000000000000003).
    let sync = open_operation(browser, "post", "/sync/sum").await;
    try_it_out(browser, &sync).await;
    let (status, body) = execute(browser, &sync).await;
    browser.screenshot("sync-sum", Some(&sync)).await;
    assert_eq!(status, "200", "{body}");
    assert_eq!(compact(&body), r#"{"result":3.8}"#);

    // Submit: the 200 shows its link to get_task_result, the answer a session id.
    let submit = open_operation(browser, "post", "/async/post_task").await;
    let link = browser
        .find_in(
            &submit,
            r#"tr.response[data-code="200"] .response-col_links"#,
        )
        .await;
    let link = browser.text(&link).await;
    assert!(link.contains("GetTaskResult"), "{link}");
    assert!(link.contains("$response.body#/session_id"), "{link}");
    try_it_out(browser, &submit).await;
    let (status, body) = execute(browser, &submit).await;
    browser.screenshot("post-task", Some(&submit)).await;
    assert_eq!(status, "200", "{body}");
    let session_id = serde_json::from_str::<Value>(&body).unwrap()["session_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no session id in {body}"));

    // Poll that session from the page once a worker has finished it.
    let done = app.poll(session_id).await;
    assert_eq!(done.body["status"], "done", "{done:?}");
    let poll = open_operation(browser, "get", "/async/get_task_result").await;
    try_it_out(browser, &poll).await;
    let input = browser
        .find_in(&poll, r#"input[placeholder="session_id"]"#)
        .await;
    browser.replace_text(&input, &session_id.to_string()).await;
    let (status, body) = execute(browser, &poll).await;
    browser.screenshot("get-task-result", Some(&poll)).await;
    assert_eq!(status, "200", "{body}");
    assert_eq!(
        compact(&body),
        format!(r#"{{"session_id":{session_id},"result":3.8,"status":"done"}}"#)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_source_gets_each_result_reconnecting_by_itself_and_stops_at_the_end() {
    let browser = &Browser::start().await;
    let mut config = unique_config();
    // Streams end after 2 s: the browser reconnects on its own until the result comes.
    config.tasks.sync_timeout = Duration::from_secs(2);
    let app = App::start(config.clone()).await;
    let r = app.post("/async/post_task", r#"{"args": [1, 2.5]}"#).await;
    let session_id = r.body["session_id"].as_i64().unwrap();
    browser.goto(&app.url("/docs")).await;
    browser
        .script(
            "window.got = []; window.opens = 0; window.ended = false;
             const events = new EventSource('/async/events?session_id=' + arguments[0]);
             events.onopen = () => { window.opens += 1; };
             events.addEventListener('result', (e) => window.got.push(JSON.parse(e.data)));
             events.addEventListener('end', () => { window.ended = true; events.close(); });",
            vec![json!(session_id)],
        )
        .await;
    browser
        .wait_for("the EventSource to reconnect by itself", || async move {
            let opens = browser.script("return window.opens", vec![]).await;
            (opens.as_i64() >= Some(2)).then_some(())
        })
        .await;
    let _workers = Workers::start(&config);
    let state = browser
        .wait_for("the result and the end", || async move {
            let state = browser
                .script("return {got: window.got, ended: window.ended}", vec![])
                .await;
            (state["ended"] == true).then_some(state)
        })
        .await;
    assert_eq!(
        state["got"],
        json!([{"session_id": session_id, "result": 3.5, "status": "done"}])
    );
}
