//! End to end against the broker's limit: tasks per second from submitting N async tasks
//! to reading every one of them done, against a raw publish-confirm-consume-ack loop over
//! the same broker, measured in the same run.
//!
//! - **Raw loop** (the limit): one thread publishes N task messages (persistent, to a
//!   queue declared as sumsvc declares its own), waiting for the broker's confirms
//!   after every 100, as the publisher batches them; another thread consumes with
//!   prefetch 100 and acks each. No HTTP, no PostgreSQL, no Redis, no computing.
//! - **sumsvc**: `serve` and `work` as release binaries; 64 clients submit with
//!   `POST /async/post_task` until N are accepted, then poll
//!   `GET /async/get_task_result` until every session reads `done` with its exact sum.
//!
//! - **sumsvc in bulk**: the same N tasks in batches of B (`POST /async/post_tasks`),
//!   read back in batches of B (`POST /async/get_task_results`) until every one is
//!   `done` with its exact sum, for B in 1, 10, 100 and 1000.
//!
//! The raw loop runs again after each of sumsvc's runs, and each ratio is taken against
//! the mean of the raw loops just before and just after it: on a shared machine the
//! broker's own rate drifts by a quarter within a run, and a ratio against one early
//! measurement moved with it.
//!
//! For each it also prints the CPU time every process spent per task, and the rate
//! that CPU time allows on this machine's cores (its ceiling): the gap between the two
//! ceilings is the work sumsvc does per task beyond the broker's.
//!
//! Run: `cargo bench --bench e2e` (needs PostgreSQL, RabbitMQ and Redis on localhost).
//! `SUMSVC_BENCH_TASKS` (default 20,000), `SUMSVC_BENCH_CLIENTS` (default 64) and
//! `SUMSVC_BENCH_BATCHES` (default `1,10,100,1000`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amiquip::{AmqpProperties, ConsumerMessage, ConsumerOptions, Exchange, Publish};
use serde_json::value::RawValue;
use sumsvc::AmqpTarget;
use sumsvc::TaskMessage;
use sumsvc::Topology;
use support::bench::{bench_main, env_or};
use support::cleanup::cleanup;
use support::process::spawn_binary;
use support::procstat::{self, CpuMeter, Part};
use support::{unique_config, App, KillOnDrop};

/// Confirms are awaited after this many publishes, as in the PITFALLS measurement.
const CONFIRM_BATCH: usize = 100;

fn main() {
    bench_main(run());
}

async fn run() {
    let n = env_or("SUMSVC_BENCH_TASKS", 20_000) as usize;
    let clients = env_or("SUMSVC_BENCH_CLIENTS", 64) as usize;
    println!("{n} tasks, {clients} HTTP clients");

    let meter = CpuMeter::start(vec![
        Part::by_command("rabbitmq", "beam.smp"),
        Part::of_pids("client", vec![std::process::id()]),
    ]);
    let mut raw_before = raw(n).await;
    let raw_cpu = meter.spent();
    println!("raw publish-confirm-consume-ack  {raw_before:>8.0} tasks/s  (the limit)");

    let config = unique_config();
    let app = Arc::new(App::spawn(config.clone()).await);
    let worker = KillOnDrop(spawn_binary(&config, &["work"]));
    app.wait_for_workers(config.worker.concurrency as u64).await;
    let serve_pid = app.child.as_ref().expect("serve runs as a child").id();

    let batches: Vec<usize> = std::env::var("SUMSVC_BENCH_BATCHES")
        .unwrap_or_else(|_| "1,10,100,1000".into())
        .split(',')
        .map(|b| b.trim().parse().expect("SUMSVC_BENCH_BATCHES: numbers"))
        .collect();
    let mut spent = vec![("raw loop".to_owned(), raw_cpu)];
    // One task per request first (None), then each batch size.
    for batch in std::iter::once(None).chain(batches.into_iter().map(Some)) {
        let meter = CpuMeter::start(procstat::system(serve_pid, worker.0.id()));
        let run = match batch {
            None => end_to_end(&app, n, clients).await,
            Some(batch) => in_bulk(&app, n, clients, batch).await,
        };
        let cpu = meter.spent();
        let raw_after = raw(n).await;
        let limit = (raw_before + raw_after) / 2.0;
        raw_before = raw_after;
        let (name, reads) = match batch {
            None => ("sumsvc submit, then poll to done".to_owned(), "polls"),
            Some(batch) => (format!("sumsvc in batches of {batch}"), "reads"),
        };
        println!(
            "{name:<32} {:>8.0} tasks/s  ratio to the limit {:.3}  (the raw loop around it: \
             {limit:.0} tasks/s; submitting alone: {:.0} tasks/s, then {:.2} {reads} per task)",
            run.rate,
            run.rate / limit,
            run.submit_rate,
            run.polls as f64 / n as f64
        );
        let short = batch.map_or("sumsvc".to_owned(), |b| format!("batch {b}"));
        spent.push((short, cpu));
    }

    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    println!("\nCPU ms per task, and the tasks/s that CPU time allows on {cores} cores:");
    for (name, spent) in spent {
        let per_task: Vec<String> = spent
            .iter()
            .map(|(part, s)| format!("{part} {:.3}", s * 1000.0 / n as f64))
            .collect();
        let total: f64 = spent.iter().map(|(_, s)| s).sum::<f64>() / n as f64;
        println!(
            "  {name:<10} {}; total {:.3}, ceiling {:.0} tasks/s",
            per_task.join(", "),
            total * 1000.0,
            cores / total
        );
    }
}

/// Tasks per second through the broker alone, on queues of its own.
async fn raw(n: usize) -> f64 {
    let config = unique_config();
    tokio::task::spawn_blocking(move || raw_loop(&config, n))
        .await
        .unwrap()
}

/// Tasks per second through the broker alone.
fn raw_loop(config: &sumsvc::Config, n: usize) -> f64 {
    let target = AmqpTarget::new(&config.rabbitmq, &config.tls).unwrap();
    let topology = Topology::new(&config.rabbitmq);
    let bodies: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let args = RawValue::from_string(format!("[{i}, 0.5]")).unwrap();
            TaskMessage::new(uuid::Uuid::new_v4(), args, None).to_bytes()
        })
        .collect();

    let mut consumer_conn = target.open().unwrap();
    let consumer_channel = consumer_conn.open_channel(None).unwrap();
    let queue = topology.declare(&consumer_channel).unwrap();
    consumer_channel.qos(0, 100, false).unwrap();
    let consumer = queue.consume(ConsumerOptions::default()).unwrap();

    let started = Instant::now();
    let publisher = std::thread::spawn(move || {
        let mut conn = target.open().unwrap();
        let channel = conn.open_channel(None).unwrap();
        let confirms = channel.listen_for_publisher_confirms().unwrap();
        channel.enable_publisher_confirms().unwrap();
        let exchange = Exchange::direct(&channel);
        let mut confirmed = 0u64;
        for (i, chunk) in bodies.chunks(CONFIRM_BATCH).enumerate() {
            for body in chunk {
                exchange
                    .publish(Publish::with_properties(
                        body,
                        topology.queue.clone(),
                        AmqpProperties::default().with_delivery_mode(2),
                    ))
                    .unwrap();
            }
            let published = (i * CONFIRM_BATCH + chunk.len()) as u64;
            while confirmed < published {
                match confirms.recv().unwrap() {
                    amiquip::Confirm::Ack(ack) => confirmed = confirmed.max(ack.delivery_tag),
                    amiquip::Confirm::Nack(nack) => panic!("the broker refused {nack:?}"),
                }
            }
        }
        let _ = conn.close();
    });
    let mut consumed = 0;
    for message in consumer.receiver().iter() {
        let ConsumerMessage::Delivery(delivery) = message else {
            panic!("the consumer ended: {message:?}")
        };
        consumer.ack(delivery).unwrap();
        consumed += 1;
        if consumed == n {
            break;
        }
    }
    let took = started.elapsed();
    publisher.join().unwrap();
    let _ = consumer_conn.close();
    cleanup(config);
    n as f64 / took.as_secs_f64()
}

struct Run {
    /// Tasks per second from the first submit to the last `done`.
    rate: f64,
    /// Submits per second.
    submit_rate: f64,
    /// Every `get_task_result` made, `done` or not.
    polls: usize,
}

async fn end_to_end(app: &Arc<App>, n: usize, clients: usize) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let submitters: Vec<_> = (0..clients)
        .map(|_| {
            let (app, next) = (app.clone(), next.clone());
            tokio::spawn(async move {
                let mut sessions = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return sessions;
                    }
                    let r = app
                        .post("/async/post_task", &format!(r#"{{"args": [{i}, 0.5]}}"#))
                        .await;
                    assert_eq!(r.status, 200, "{r:?}");
                    sessions.push((i, r.body["session_id"].as_i64().unwrap()));
                }
            })
        })
        .collect();
    let mut sessions = Vec::with_capacity(n);
    for s in submitters {
        sessions.extend(s.await.unwrap());
    }
    let submit_rate = n as f64 / started.elapsed().as_secs_f64();

    // Poll in the order submitted: the oldest are the likeliest done.
    sessions.sort_unstable();
    let sessions = Arc::new(sessions);
    let next = Arc::new(AtomicUsize::new(0));
    let polls = Arc::new(AtomicUsize::new(0));
    let pollers: Vec<_> = (0..clients)
        .map(|_| {
            let (app, sessions, next) = (app.clone(), sessions.clone(), next.clone());
            let polls = polls.clone();
            tokio::spawn(async move {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(i, id)) = sessions.get(k) else {
                        return;
                    };
                    loop {
                        let r = app.poll_once(id).await;
                        polls.fetch_add(1, Ordering::Relaxed);
                        assert_eq!(r.status, 200, "{r:?}");
                        if r.body["status"] == "done" {
                            assert_eq!(
                                r.text,
                                format!(r#"{{"session_id":{id},"result":{i}.5,"status":"done"}}"#)
                            );
                            break;
                        }
                        assert_eq!(r.body["status"], "pending", "{r:?}");
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            })
        })
        .collect();
    for p in pollers {
        p.await.unwrap();
    }
    Run {
        rate: n as f64 / started.elapsed().as_secs_f64(),
        submit_rate,
        polls: polls.load(Ordering::Relaxed),
    }
}

/// Submits `n` tasks in batches of `batch` from up to `clients` clients, then reads them
/// back in batches of `batch` until every one is done with its exact sum.
async fn in_bulk(app: &Arc<App>, n: usize, clients: usize, batch: usize) -> Run {
    let chunks: Vec<std::ops::Range<usize>> = (0..n)
        .step_by(batch)
        .map(|start| start..(start + batch).min(n))
        .collect();
    let chunks = Arc::new(chunks);
    let clients = clients.min(chunks.len());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let submitters: Vec<_> = (0..clients)
        .map(|_| {
            let (app, chunks, next) = (app.clone(), chunks.clone(), next.clone());
            tokio::spawn(async move {
                let mut sessions = Vec::new();
                loop {
                    let Some(range) = chunks.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        return sessions;
                    };
                    let tasks: Vec<String> = range
                        .clone()
                        .map(|i| format!(r#"{{"args": [{i}, 0.5]}}"#))
                        .collect();
                    let body = format!(r#"{{"tasks": [{}]}}"#, tasks.join(","));
                    let r = app.post("/async/post_tasks", &body).await;
                    assert_eq!(r.status, 200, "{r:?}");
                    let ids = r.body["session_ids"].as_array().unwrap();
                    for (i, id) in range.clone().zip(ids) {
                        sessions.push((i, id.as_i64().unwrap()));
                    }
                }
            })
        })
        .collect();
    let mut sessions = Vec::with_capacity(n);
    for s in submitters {
        sessions.extend(s.await.unwrap());
    }
    let submit_rate = n as f64 / started.elapsed().as_secs_f64();

    sessions.sort_unstable();
    let sessions = Arc::new(sessions);
    let next = Arc::new(AtomicUsize::new(0));
    let reads = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..clients)
        .map(|_| {
            let (app, sessions, chunks, next) =
                (app.clone(), sessions.clone(), chunks.clone(), next.clone());
            let reads = reads.clone();
            tokio::spawn(async move {
                loop {
                    let Some(range) = chunks.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        return;
                    };
                    let mut left: Vec<(usize, i64)> = sessions[range.clone()].to_vec();
                    while !left.is_empty() {
                        let ids: Vec<i64> = left.iter().map(|(_, id)| *id).collect();
                        let body = format!(r#"{{"session_ids": {ids:?}}}"#);
                        let r = app.post("/async/get_task_results", &body).await;
                        reads.fetch_add(left.len(), Ordering::Relaxed);
                        assert_eq!(r.status, 200, "{r:?}");
                        let results = r.body["results"].as_array().unwrap();
                        let mut pending = Vec::new();
                        for ((i, id), result) in left.into_iter().zip(results) {
                            if result["status"] == "done" {
                                assert_eq!(result["result"].to_string(), format!("{i}.5"));
                            } else {
                                assert_eq!(result["status"], "pending", "{id}: {result}");
                                pending.push((i, id));
                            }
                        }
                        left = pending;
                        if !left.is_empty() {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
            })
        })
        .collect();
    for r in readers {
        r.await.unwrap();
    }
    Run {
        rate: n as f64 / started.elapsed().as_secs_f64(),
        submit_rate,
        polls: reads.load(Ordering::Relaxed),
    }
}
