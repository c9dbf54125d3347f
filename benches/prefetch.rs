//! Worker throughput by `worker.prefetch`, to choose its default. For each value, fills
//! a fresh queue with tasks, starts a worker pool (2 consumer threads) and times until
//! every task is computed, stored in Redis and acked. Prints tasks/s and the ratio
//! against prefetch 1, measured in the same run.
//!
//! Run: `cargo bench --bench prefetch` (needs RabbitMQ and Redis on localhost).
//! `SUMSVC_BENCH_TASKS=N` changes the number of tasks per value (default 20,000).

use std::time::{Duration, Instant};

use amiquip::{AmqpProperties, Exchange, Publish};
use serde_json::value::RawValue;
use sumsvc::TaskMessage;
use support::amqp::{amqp, queue_depth};
use support::bench::{bench_main, env_or};
use support::cleanup::cleanup;
use support::config::REDIS;
use support::{unique_config, Workers};

fn main() {
    bench_main(run());
}

async fn run() {
    let n = env_or("SUMSVC_BENCH_TASKS", 20_000) as usize;
    let mut baseline = None;
    println!("{n} tasks per run, 2 consumer threads");
    for prefetch in [1u16, 16, 64, 128, 256, 512] {
        let mut config = unique_config();
        config.worker.prefetch = prefetch;
        config.worker.concurrency = 2;
        fill_queue(&config, n);

        let started = Instant::now();
        let workers = Workers::start(&config);
        while queue_depth(&config.rabbitmq.queue) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Stopping drains: every delivered task is stored and acked before it returns.
        workers.stop().await;
        let took = started.elapsed();
        let stored = count_results(&config).await;
        assert_eq!(
            stored, n,
            "prefetch {prefetch}: {stored} of {n} results stored"
        );

        let rate = n as f64 / took.as_secs_f64();
        let base = *baseline.get_or_insert(rate);
        println!(
            "prefetch {prefetch:>3}: {took:>9.2?}  {rate:>8.0} tasks/s  ratio to prefetch 1: {:.2}",
            rate / base
        );
        cleanup(&config);
    }
}

/// Publishes `n` persistent tasks straight to the config's queue.
fn fill_queue(config: &sumsvc::Config, n: usize) {
    let topology = sumsvc::Topology::new(&config.rabbitmq);
    amqp(|channel| {
        topology.declare(channel).unwrap();
        let exchange = Exchange::direct(channel);
        for i in 0..n {
            let args = RawValue::from_string(format!("[{i}, 0.25, 1e3]")).unwrap();
            let body = TaskMessage::new(uuid::Uuid::new_v4(), args, None).to_bytes();
            exchange
                .publish(Publish::with_properties(
                    &body,
                    topology.queue.clone(),
                    AmqpProperties::default().with_delivery_mode(2),
                ))
                .unwrap();
        }
        // A synchronous call: the broker has routed everything published before it.
        channel
            .queue_declare_passive(topology.queue.clone())
            .unwrap();
    });
}

async fn count_results(config: &sumsvc::Config) -> usize {
    let client = deadpool_redis::redis::Client::open(format!("redis://{}/0", REDIS)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = deadpool_redis::redis::cmd("KEYS")
        .arg(format!("{}:result:*", config.redis.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.len()
}
