//! `sumsvc dead list` and `sumsvc dead replay`, run as an operator runs them, against
//! messages real workers dead-lettered.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use sumsvc::Config;
use sumsvc::TaskMessage;
use sumsvc::Topology;
use support::amqp::{amqp, publish_raw, queue_depth};
use support::cli::{run_binary, CleanupOnDrop};
use support::config::{with_rabbitmq, RABBITMQ};
use support::process::{signal, spawn_binary};
use support::proxy::proxy_to;
use support::wait::wait_until;
use support::{unique_config, App, Workers};

/// Messages a broken or foreign producer might queue: not JSON, a task of a protocol
/// version this build does not read, and bytes that are not even UTF-8.
const GARBAGE: [&[u8]; 3] = [
    b"this is not a task",
    br#"{"v": 99, "task_id": "x", "args": [1]}"#,
    b"\xff\xfe\x00binary",
];

fn dead_queue(config: &Config) -> String {
    format!("{}.dead", config.rabbitmq.queue)
}

/// A config of its own with [`GARBAGE`] queued and dead-lettered by a real worker pool,
/// which is stopped again. One worker thread, so the dead letters keep the send order.
async fn garbage_dead_lettered() -> (Config, CleanupOnDrop) {
    let mut config = unique_config();
    config.worker.concurrency = 1;
    let cleanup = CleanupOnDrop(config.clone());
    amqp(|channel| Topology::new(&config.rabbitmq).declare(channel).map(|_| ())).unwrap();
    let workers = Workers::start(&config);
    for body in GARBAGE {
        publish_raw(&config.rabbitmq.queue, body);
    }
    let dead = dead_queue(&config);
    wait_until(
        "the garbage to be dead-lettered",
        Duration::from_secs(20),
        || queue_depth(&dead) == GARBAGE.len() as u32,
    )
    .await;
    workers.stop().await;
    (config, cleanup)
}

/// The reason a worker gives for not processing `body`.
fn worker_error(body: &[u8]) -> String {
    TaskMessage::from_bytes(body).unwrap_err().to_string()
}

/// Parses `--json` output: one object per line.
fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The messages of a queue, head first, handed back untouched.
fn peek(queue: &str) -> Vec<amiquip::Delivery> {
    amqp(|channel| {
        let mut messages = Vec::new();
        while let Some(get) = channel.basic_get(queue, false).unwrap() {
            messages.push(get.delivery);
        }
        messages
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_list_shows_each_dead_letter_and_why_and_removes_nothing() {
    let (config, _cleanup) = garbage_dead_lettered().await;
    let (queue, dead) = (&config.rabbitmq.queue, dead_queue(&config));

    let listed = run_binary(&config, &["dead", "list"]).await;
    let text = listed.ok();
    assert_eq!(
        text.lines().next(),
        Some(format!("3 messages in {dead}").as_str()),
        "{text}"
    );
    let from = format!("dead-lettered from {queue} (rejected), once, last at ");
    assert_eq!(text.matches(&from).count(), 3, "{text}");
    for (i, body) in GARBAGE.iter().enumerate() {
        let error = format!("cannot be processed: {}", worker_error(body));
        assert!(text.contains(&error), "{error:?} not in {text}");
        assert!(text.contains(&format!("#{} ", i + 1)), "{text}");
    }
    assert!(
        text.contains("body (18 bytes): this is not a task"),
        "{text}"
    );
    assert!(text.contains("task id x"), "{text}");
    assert!(
        text.contains(r"body (9 bytes): \xff\xfe\u{0}binary"),
        "{text}"
    );

    // Nothing was taken, and a second look sees the same messages in the same order.
    assert_eq!(queue_depth(&dead), 3);
    assert_eq!(queue_depth(queue), 0);
    assert_eq!(run_binary(&config, &["dead", "list"]).await.ok(), text);

    let json = run_binary(&config, &["dead", "list", "--json"]).await;
    let letters = json_lines(json.ok());
    assert_eq!(letters.len(), 3, "{}", json.stdout);
    for (i, (letter, body)) in letters.iter().zip(GARBAGE).enumerate() {
        assert_eq!(letter["position"], i + 1, "{letter}");
        assert_eq!(letter["readable"], false, "{letter}");
        assert_eq!(letter["error"], worker_error(body), "{letter}");
        assert_eq!(letter["size"], body.len(), "{letter}");
        let deaths = letter["deaths"].as_array().unwrap();
        assert_eq!(deaths.len(), 1, "{letter}");
        assert_eq!(deaths[0]["queue"], queue.as_str(), "{letter}");
        assert_eq!(deaths[0]["reason"], "rejected", "{letter}");
        assert_eq!(deaths[0]["count"], 1, "{letter}");
        let when = humantime::parse_rfc3339(deaths[0]["time"].as_str().unwrap()).unwrap();
        let age = SystemTime::now().duration_since(when).unwrap_or_default();
        assert!(age < Duration::from_secs(120), "{letter}");
    }
    assert_eq!(letters[1]["task_id"], "x");
    assert_eq!(letters[0]["excerpt"], "this is not a task");

    let first = run_binary(&config, &["dead", "list", "--json", "--limit", "1"]).await;
    let first = json_lines(first.ok());
    assert_eq!(first, letters[..1]);
    assert_eq!(queue_depth(&dead), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_replay_moves_dead_letters_back_in_order_and_the_worker_dead_letters_them_again() {
    let (config, _cleanup) = garbage_dead_lettered().await;
    let (queue, dead) = (&config.rabbitmq.queue, dead_queue(&config));

    let replayed = run_binary(&config, &["dead", "replay"]).await;
    assert_eq!(
        replayed.ok(),
        format!("moved 3 messages from {dead} to {queue}\n")
    );
    assert_eq!(queue_depth(&dead), 0);
    let back = peek(queue);
    let bodies: Vec<&[u8]> = back.iter().map(|m| m.body.as_slice()).collect();
    assert_eq!(bodies, GARBAGE, "in their order, bodies intact");
    for message in &back {
        assert_eq!(message.properties.delivery_mode(), &Some(2), "persistent");
        let headers = message.properties.headers().as_ref().unwrap();
        assert!(
            headers.contains_key("x-death"),
            "properties kept: {headers:?}"
        );
    }

    // They are still not tasks: a worker sends them straight back, counting again.
    let workers = Workers::start(&config);
    wait_until("the garbage to come back", Duration::from_secs(20), || {
        queue_depth(&dead) == 3
    })
    .await;
    workers.stop().await;
    let letters = json_lines(run_binary(&config, &["dead", "list", "--json"]).await.ok());
    let counts: Vec<&Value> = letters.iter().map(|l| &l["deaths"][0]["count"]).collect();
    assert_eq!(counts, [2, 2, 2], "{letters:?}");

    let one = run_binary(&config, &["dead", "replay", "--limit", "1"]).await;
    assert_eq!(
        one.ok(),
        format!("moved 1 message from {dead} to {queue}\n")
    );
    assert_eq!(queue_depth(&dead), 2);
    assert_eq!(queue_depth(queue), 1);
    assert_eq!(peek(queue)[0].body, GARBAGE[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_in_the_dead_letter_queue_is_listed_as_readable_and_computed_once_replayed() {
    let config = unique_config();
    let app = App::start(config.clone()).await;
    let (queue, dead) = (&config.rabbitmq.queue, dead_queue(&config));
    let r = app
        .post("/async/post_task", r#"{"args": [0.1, 0.2]}"#)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let session_id = r.body["session_id"].as_i64().unwrap();

    // The task, taken off the task queue and published straight to the dead-letter
    // queue, as a worker of an older build might have left it.
    let task = amqp(|channel| {
        let get = channel.basic_get(queue.as_str(), false).unwrap().unwrap();
        amiquip::Exchange::direct(channel)
            .publish(amiquip::Publish::new(&get.delivery.body, dead.as_str()))
            .unwrap();
        let body = get.delivery.body.clone();
        get.ack(channel).unwrap();
        body
    });
    wait_until("the task to be dead", Duration::from_secs(20), || {
        queue_depth(&dead) == 1 && queue_depth(queue) == 0
    })
    .await;
    let task_id = TaskMessage::from_bytes(&task).unwrap().task_id.to_string();

    let text = run_binary(&config, &["dead", "list"]).await;
    let text = text.ok();
    assert!(
        text.starts_with(&format!("1 message in {dead}\n")),
        "{text}"
    );
    assert!(text.contains(&format!("task id {task_id}")), "{text}");
    assert!(
        text.contains("not dead-lettered by RabbitMQ (no x-death header)"),
        "{text}"
    );
    assert!(text.contains("readable now"), "{text}");
    let letters = json_lines(run_binary(&config, &["dead", "list", "--json"]).await.ok());
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["readable"], true, "{letters:?}");
    assert_eq!(letters[0]["error"], Value::Null, "{letters:?}");
    assert_eq!(letters[0]["task_id"], task_id.as_str(), "{letters:?}");
    assert_eq!(letters[0]["deaths"], serde_json::json!([]), "{letters:?}");

    let replayed = run_binary(&config, &["dead", "replay"]).await;
    assert_eq!(
        replayed.ok(),
        format!("moved 1 message from {dead} to {queue}\n")
    );
    assert_eq!(queue_depth(&dead), 0);
    let _workers = Workers::start(&config);
    let r = app.poll(session_id).await;
    assert_eq!(r.body["status"], "done", "{r:?}");
    assert!(r.text.contains(r#""result":0.3"#), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_commands_say_so_when_the_dead_letter_queue_does_not_exist() {
    let config = unique_config();
    let _cleanup = CleanupOnDrop(config.clone());
    let dead = dead_queue(&config);
    for args in [["dead", "list"], ["dead", "replay"]] {
        let ran = run_binary(&config, &args).await;
        let stderr = ran.failed();
        assert!(
            stderr.contains(&format!("queue {dead} does not exist")),
            "{args:?}: {stderr}"
        );
        assert!(ran.stdout.is_empty(), "{args:?}: {}", ran.stdout);
    }
    // Looking did not create it.
    let exists = amqp(|channel| channel.queue_declare_passive(dead.as_str()).is_ok());
    assert!(!exists);
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_commands_name_rabbitmq_url_when_the_broker_is_unreachable() {
    let proxy = proxy_to(RABBITMQ).await;
    let mut config = unique_config();
    with_rabbitmq(&mut config, proxy.addr);
    proxy.cut();
    for args in [["dead", "list"], ["dead", "replay"]] {
        let ran = run_binary(&config, &args).await;
        let stderr = ran.failed();
        assert!(
            stderr.contains("cannot reach RabbitMQ") && stderr.contains("(rabbitmq.url)"),
            "{args:?}: {stderr}"
        );
    }
}

/// A config of its own whose dead-letter queue holds `n` numbered messages, published
/// straight to it; the bodies, in queue order.
async fn full_dead_queue(n: usize) -> (Config, CleanupOnDrop, Vec<Vec<u8>>) {
    let config = unique_config();
    let cleanup = CleanupOnDrop(config.clone());
    let dead = dead_queue(&config);
    let bodies: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("message {i}").into_bytes())
        .collect();
    amqp(|channel| {
        Topology::new(&config.rabbitmq).declare(channel).unwrap();
        let exchange = amiquip::Exchange::direct(channel);
        for body in &bodies {
            exchange
                .publish(amiquip::Publish::new(body, dead.as_str()))
                .unwrap();
        }
    });
    wait_until("the queue to fill", Duration::from_secs(20), || {
        queue_depth(&dead) == n as u32
    })
    .await;
    (config, cleanup, bodies)
}

/// Runs `sumsvc <args>` and kills it (SIGKILL) once `busy` holds.
async fn kill_halfway(config: &Config, args: &[&str], busy: impl FnMut() -> bool) {
    let mut child = spawn_binary(config, args);
    wait_until(
        &format!("{args:?} to get going"),
        Duration::from_secs(20),
        busy,
    )
    .await;
    signal(&child, "KILL");
    child.wait().unwrap();
}

const MANY: usize = 5000;

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_list_killed_halfway_loses_nothing_and_keeps_the_order() {
    let (config, _cleanup, bodies) = full_dead_queue(MANY).await;
    let dead = dead_queue(&config);
    kill_halfway(&config, &["dead", "list"], || {
        queue_depth(&dead) < MANY as u32
    })
    .await;

    wait_until("the messages to return", Duration::from_secs(20), || {
        queue_depth(&dead) == MANY as u32
    })
    .await;
    let back: Vec<Vec<u8>> = peek(&dead).into_iter().map(|m| m.body).collect();
    assert!(back == bodies, "the queue's order changed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_replay_killed_halfway_loses_nothing() {
    let (config, _cleanup, bodies) = full_dead_queue(MANY).await;
    let (queue, dead) = (&config.rabbitmq.queue, dead_queue(&config));
    kill_halfway(&config, &["dead", "replay"], || queue_depth(queue) > 0).await;

    // Every message is in one queue or the other, possibly in both.
    let mut seen: Vec<Vec<u8>> = Vec::new();
    wait_until(
        "the held messages to return",
        Duration::from_secs(20),
        || {
            seen = peek(&dead)
                .into_iter()
                .chain(peek(queue))
                .map(|m| m.body)
                .collect();
            seen.len() >= MANY
        },
    )
    .await;
    let moved = queue_depth(queue) as usize;
    assert!(0 < moved && moved < MANY, "killed after moving {moved}");
    seen.sort();
    seen.dedup();
    let mut all = bodies;
    all.sort();
    assert!(seen == all, "{} distinct of {MANY}", seen.len());
}
