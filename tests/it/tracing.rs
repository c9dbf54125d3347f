//! Following one request: its W3C `traceparent` travels in the task message's AMQP
//! headers, the worker's span joins its trace (read back through an OTLP collector in
//! the test), and JSON log lines carry the trace id and the request id that problem
//! details quote as their `instance`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amiquip::{AmqpValue, FieldTable};
use serde_json::Value;
use sumsvc::Config;
use support::amqp::amqp;
use support::config::{direct_postgres, ListenOnFreePort};
use support::otlp::Collector;
use support::process::env_of;
use support::wait::{wait_until, within};
use support::{unique_config, App, KillOnDrop, Remote};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE}-{CALLER}-01")
}

/// Takes the one message waiting in the task queue (no worker consumes it).
fn take_message(queue: &str) -> amiquip::Delivery {
    amqp(|channel| {
        let queue = channel.queue_declare_passive(queue).unwrap();
        queue.get(true).unwrap().expect("a message").delivery
    })
}

fn text<'a>(headers: &'a FieldTable, name: &str) -> &'a str {
    match headers.get(name) {
        Some(AmqpValue::LongString(value)) => value,
        other => panic!("header {name} is {other:?}"),
    }
}

fn millis_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn a_requests_traceparent_travels_in_the_task_messages_headers() {
    let config = unique_config();
    let app = App::start(config.clone()).await;

    let before = millis_now();
    let r = app
        .post_with(
            "/async/post_task",
            r#"{"args": [1, 2]}"#,
            &[
                ("traceparent", &traceparent()),
                ("tracestate", "vendor=abc"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let after = millis_now();

    let message = take_message(&config.rabbitmq.queue);
    let headers = message.properties.headers().clone().expect("headers");
    // Same trace, same sampling; the parent is the publish, a span of this request.
    let parent = text(&headers, "traceparent");
    let parts: Vec<&str> = parent.split('-').collect();
    assert_eq!(parts.len(), 4, "{parent}");
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", TRACE, "01"),
        "{parent}"
    );
    assert_ne!(parts[2], CALLER, "{parent}");
    assert_eq!(parts[2].len(), 16, "{parent}");
    assert_eq!(text(&headers, "tracestate"), "vendor=abc");
    match headers.get("timestamp_in_ms") {
        Some(AmqpValue::LongLongInt(at)) => assert!((before..=after).contains(at), "{at}"),
        other => panic!("timestamp_in_ms is {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_without_a_traceparent_starts_a_trace_of_its_own() {
    let config = unique_config();
    let app = App::start(config.clone()).await;
    let mut traces = Vec::new();
    for _ in 0..2 {
        let r = app.post("/async/post_task", r#"{"args": [1]}"#).await;
        assert_eq!(r.status, 200, "{r:?}");
        let message = take_message(&config.rabbitmq.queue);
        let headers = message.properties.headers().clone().expect("headers");
        let parent = text(&headers, "traceparent").to_owned();
        let parts: Vec<&str> = parent.split('-').collect();
        assert_eq!(parts.len(), 4, "{parent}");
        assert_eq!(parts[1].len(), 32, "{parent}");
        assert_ne!(parts[1], "0".repeat(32), "{parent}");
        assert!(!headers.contains_key("tracestate"), "{headers:?}");
        traces.push(parts[1].to_owned());
    }
    assert_ne!(traces[0], traces[1]);
}

/// `sumsvc <args>` as a child process with `config`, more environment, and its
/// standard error as asked.
fn spawn(config: &Config, args: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sumsvc"))
        .args(args)
        .envs(env_of(config))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn sumsvc")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_workers_span_joins_the_trace_of_the_request_that_queued_its_task() {
    let collector = Collector::start().await;
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.as_str()),
        // Send each batch after 100 ms rather than 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("RUST_LOG", "warn"),
    ];
    let mut config = unique_config();
    sumsvc::migrate_database(&direct_postgres(&config), &config.tls)
        .await
        .unwrap();
    config.listen_on_free_port();
    // Dropped last, once both processes are gone.
    let _cleanup = support::cli::CleanupOnDrop(config.clone());
    let _serve = KillOnDrop(spawn(&config, &["serve"], &otel, Stdio::inherit()));
    let _work = KillOnDrop(spawn(&config, &["work"], &otel, Stdio::inherit()));
    let remote = Remote::at(&config);
    remote.wait_until_ready(2).await;

    let answer = remote
        .client
        .post(format!("{}/sync/sum", remote.base))
        .header("content-type", "application/json")
        .header("traceparent", traceparent())
        .body(r#"{"args": [0.1, 0.2]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.text().await.unwrap(), r#"{"result":0.3}"#);

    // serve and work export on their own schedules: wait until each has sent its spans
    // (server 2, producer 4, consumer 5).
    let all_three = |spans: &[support::otlp::ReceivedSpan]| {
        [2, 4, 5]
            .iter()
            .all(|k| spans.iter().any(|s| s.trace_id == TRACE && s.kind == *k))
    };
    let spans = collector
        .wait_for(
            "serve's and the worker's spans in the request's trace",
            all_three,
        )
        .await;
    let spans: Vec<_> = spans.into_iter().filter(|s| s.trace_id == TRACE).collect();
    let one = |kind: i32| {
        let of_kind: Vec<_> = spans.iter().filter(|s| s.kind == kind).collect();
        assert_eq!(of_kind.len(), 1, "{spans:#?}");
        of_kind[0].clone()
    };
    let (server, producer, consumer) = (one(2), one(4), one(5));
    // caller -> serve's request -> its publish -> work's processing, one trace.
    assert_eq!(server.parent_span_id, CALLER);
    assert_eq!(server.name, "POST /sync/sum");
    assert_eq!(server.role, "serve");
    assert_eq!(producer.parent_span_id, server.span_id);
    assert_eq!(producer.name, format!("publish {}", config.rabbitmq.queue));
    assert_eq!(consumer.parent_span_id, producer.span_id);
    assert_eq!(consumer.name, format!("process {}", config.rabbitmq.queue));
    assert_eq!(consumer.role, "work");
    for span in [&server, &producer, &consumer] {
        assert_eq!(span.service, "sumsvc", "{span:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_log_lines_carry_the_trace_id_and_the_request_id_a_problem_quotes() {
    let mut config = unique_config();
    sumsvc::migrate_database(&direct_postgres(&config), &config.tls)
        .await
        .unwrap();
    config.listen_on_free_port();
    let json = [("SUMSVC_LOG_FORMAT", "json"), ("RUST_LOG", "info")];
    let _cleanup = support::cli::CleanupOnDrop(config.clone());
    let mut serve = KillOnDrop(spawn(&config, &["serve"], &json, Stdio::piped()));
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stderr = serve.0.stderr.take().unwrap();
    let collected = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            collected.lock().unwrap().push(line);
        }
    });
    let remote = Remote::at(&config);
    let send = || {
        remote
            .client
            .post(format!("{}/async/post_task", remote.base))
            .header("content-type", "application/json")
            .header("traceparent", traceparent())
            .body(r#"{"args": [1, "two"]}"#)
            .send()
    };
    let answer = within(Duration::from_secs(20), "serve to answer", async {
        loop {
            match send().await {
                Ok(answer) => break answer,
                // Still starting.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    assert_eq!(answer.status(), 400);
    let problem: Value = answer.json().await.unwrap();
    let instance = problem["instance"].as_str().expect("an instance");
    let request_id = instance
        .strip_prefix("urn:sumsvc:request:")
        .unwrap_or_else(|| panic!("{problem}"));
    assert_eq!(request_id.len(), 16, "{problem}");

    let quoted = |line: &Value| line["request_id"] == request_id;
    let access = |line: &Value| quoted(line) && line["target"] == "sumsvc::access";
    // The access line is the request's last.
    wait_until("the request's access line", Duration::from_secs(10), || {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|line| access(&line))
    })
    .await;
    let lines = lines.lock().unwrap().clone();
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let line = parsed.iter().find(|line| quoted(line)).unwrap();
    assert_eq!(line["trace_id"], TRACE, "{line}");
    assert_eq!(line["status"], 400, "{line}");
    assert_eq!(line["message"], "answered with a problem", "{line}");
    assert_eq!(line["detail"], problem["detail"], "{line}");
    assert_eq!(line["level"], "INFO", "{line}");
    // RUST_LOG=info keeps the line per request, which says what was asked and answered.
    let line = parsed.iter().find(|line| access(line)).unwrap();
    assert_eq!(line["trace_id"], TRACE, "{line}");
    assert_eq!(line["method"], "POST", "{line}");
    assert_eq!(line["uri"], "/async/post_task", "{line}");
    assert_eq!(line["status"], 400, "{line}");
    assert!(
        line["peer"].as_str().unwrap().contains("127.0.0.1"),
        "{line}"
    );
    assert!(line["elapsed"].is_string(), "{line}");
    // Lines outside any request have no ids, and say where they come from.
    let started = parsed
        .iter()
        .find(|l| l["message"] == "serving the API; docs at /docs")
        .expect("the start line");
    assert_eq!(started["target"], "sumsvc::serve", "{started}");
    assert!(started.get("trace_id").is_none(), "{started}");
}
