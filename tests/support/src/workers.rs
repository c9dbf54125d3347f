//! Consumers of a test's task queue in this process: a real worker pool, and one that
//! takes tasks and never finishes them.

use std::time::Duration;

use sumsvc::Config;
use sumsvc::WorkerPool;
use tokio_util::sync::CancellationToken;

use crate::config::RABBITMQ;

/// A worker pool in this process; stops (draining) when `stop` is called.
pub struct Workers {
    pub pool: Option<WorkerPool>,
    pub shutdown: CancellationToken,
}

impl Workers {
    pub fn start(config: &Config) -> Workers {
        let shutdown = CancellationToken::new();
        let pool = WorkerPool::start(config, shutdown.clone()).unwrap();
        Workers {
            pool: Some(pool),
            shutdown,
        }
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(pool) = self.pool.take() {
            let _ = pool.wait().await;
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A consumer that takes tasks and never finishes them, like a hung worker. Dropping it
/// closes its connection, and the broker returns what it held to the queue.
pub struct StuckWorker {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub received: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl StuckWorker {
    pub fn start(config: &Config) -> StuckWorker {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = received.clone();
        let topology = sumsvc::Topology::new(&config.rabbitmq);
        let thread = std::thread::spawn(move || {
            let mut conn =
                amiquip::Connection::insecure_open(&format!("amqp://guest:guest@{RABBITMQ}/%2f"))
                    .unwrap();
            let channel = conn.open_channel(None).unwrap();
            let queue = topology.declare(&channel).unwrap();
            let consumer = queue.consume(amiquip::ConsumerOptions::default()).unwrap();
            loop {
                if stopped.try_recv().is_ok() {
                    break;
                }
                if let Ok(amiquip::ConsumerMessage::Delivery(_)) =
                    consumer.receiver().recv_timeout(Duration::from_millis(20))
                {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
            drop(consumer);
            let _ = conn.close();
        });
        StuckWorker {
            stop: Some(stop),
            thread: Some(thread),
            received,
        }
    }

    pub fn received(&self) -> usize {
        self.received.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Closes the connection; everything it held goes back to the queue.
    pub fn release(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            tokio::task::block_in_place(|| t.join().unwrap());
        }
    }
}

impl Drop for StuckWorker {
    fn drop(&mut self) {
        self.shutdown();
    }
}
