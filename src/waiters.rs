//! Waiters: the map from task id to the requests waiting for it (sync requests, long
//! polls, result streams), and the one Redis pub/sub connection per `serve` process that
//! fills it.
//!
//! Workers announce each finished task of a sync request on this instance's replies
//! channel, and each task a long poll or a stream here watches (see
//! [`Results::watch`]); a cancel announces it too. The notice is the task id, and a
//! fetcher reads how the announced tasks ended, many per round trip under load. Pub/sub is lossy (nothing is kept while the
//! connection is down), so after every (re)subscribe the listener reads the key of every
//! task still waited for, and a waiter reads its key once more at its deadline.
//!
//! The listener also reads, at every (re)subscribe, whether Redis keeps results (its
//! eviction and persistence settings), for `/readyz` and the log. And a probe writes to
//! Redis every [`WRITE_PROBE_EVERY`]: a Redis that answers but refuses writes (full under
//! `noeviction`, a read-only replica) cannot take the result a sync request waits for,
//! so such a request answers 503 at once rather than at its deadline.
//!
//! At most `limits.max_sync_waiters` requests (a stream counts once per session it waits
//! for) wait at once, in either auth mode: each holds memory for as long as it waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use crate::config::RedisConfig;
use crate::dependency::{within, Backoff, Dependency, OutageLog, Unavailable};
use crate::store::results::{failed, parse_notice, Final, Results};

/// How often an idle subscription is pinged, so a silent Redis is noticed.
const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// How often the probe writes to Redis: a Redis that starts refusing writes turns sync
/// requests away within this and one `redis.timeout`.
const WRITE_PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Keys read per round trip when sweeping or fetching announced outcomes.
const READ_CHUNK: usize = 500;

/// The waiting requests, by the task each waits for: a sync request waits for a task of
/// its own, while several long polls and streams may wait for one session's.
#[derive(Default)]
struct Pending {
    by_task: HashMap<Uuid, Vec<(u64, oneshot::Sender<Final>)>>,
    /// Waiters in `by_task`, all tasks together.
    count: usize,
    /// The id of the next waiter, which its `Drop` removes by.
    next: u64,
}

struct Inner {
    pending: Mutex<Pending>,
    /// When the current subscription was made; None while there is none, and then
    /// sync requests get 503.
    since: Mutex<Option<SystemTime>>,
    last_error: Mutex<String>,
    /// What Redis's settings put at risk, as last read.
    redis_warnings: Mutex<Vec<String>>,
    /// Whether Redis took the probe's last write; why not, when it did not.
    writes: Mutex<Result<(), Unavailable>>,
    /// The most requests that may wait at once.
    max_waiting: usize,
}

impl Inner {
    fn deliver(&self, task_id: Uuid, end: Final) {
        let mut pending = self.pending.lock().expect("lock");
        if let Some(waiters) = pending.by_task.remove(&task_id) {
            pending.count -= waiters.len();
            drop(pending);
            for (_, tx) in waiters {
                let _ = tx.send(end.clone());
            }
        }
    }

    fn is_waited_for(&self, task_id: &Uuid) -> bool {
        self.pending
            .lock()
            .expect("lock")
            .by_task
            .contains_key(task_id)
    }

    /// The tasks waited for now.
    fn waited_for(&self) -> Vec<Uuid> {
        let pending = self.pending.lock().expect("lock");
        pending.by_task.keys().copied().collect()
    }
}

/// Every waiting slot of this serve is taken (`limits.max_sync_waiters`).
#[derive(Debug, thiserror::Error)]
#[error(
    "this server has {0} requests waiting for results already (sync requests and long \
     polls, limits.max_sync_waiters): retry after the Retry-After seconds, or submit with \
     POST /async/post_task and poll without `Prefer: wait`"
)]
pub struct AtCapacity(pub usize);

/// The waiter registry of one `serve` instance.
#[derive(Clone)]
pub struct Waiters {
    inner: Arc<Inner>,
    instance: String,
    /// Stops the listener when the last handle is gone: requests still draining after
    /// a shutdown signal keep hearing their results until then.
    _listener: Arc<DropGuard>,
}

/// One registered request; dropping it unregisters.
pub struct Waiter {
    inner: Arc<Inner>,
    task_id: Uuid,
    id: u64,
    /// How the task ended, once it has.
    pub end: oneshot::Receiver<Final>,
}

impl Waiter {
    /// The task it waits for.
    pub fn task_id(&self) -> Uuid {
        self.task_id
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut pending = self.inner.pending.lock().expect("lock");
        let Some(waiters) = pending.by_task.get_mut(&self.task_id) else {
            // Delivered: its entry went then.
            return;
        };
        waiters.retain(|(id, _)| *id != self.id);
        let empty = waiters.is_empty();
        if empty {
            pending.by_task.remove(&self.task_id);
        }
        pending.count -= 1;
    }
}

impl Waiters {
    /// Starts the listener task for `instance`, and the write probe; they run until
    /// every handle to these waiters is dropped. At most `max_waiting` requests may wait
    /// at once.
    pub fn start(
        config: &RedisConfig,
        results: Results,
        instance: String,
        max_waiting: usize,
    ) -> anyhow::Result<Self> {
        let inner = Arc::new(Inner {
            pending: Mutex::default(),
            since: Mutex::new(None),
            last_error: Mutex::new("connecting".into()),
            redis_warnings: Mutex::new(Vec::new()),
            writes: Mutex::new(Ok(())),
            max_waiting,
        });
        let channel = results.names().replies(&instance);
        let (announced, notices) = mpsc::unbounded_channel();
        let fetcher = Fetcher {
            results: results.clone(),
            inner: inner.clone(),
            notices,
        };
        let probe = WriteProbe {
            results: results.clone(),
            inner: inner.clone(),
            instance: instance.clone(),
        };
        let listener = Listener {
            channel,
            results,
            inner: inner.clone(),
            timeout: config.timeout,
            announced,
        };
        let stop = CancellationToken::new();
        tokio::spawn(fetcher.run(stop.clone()));
        tokio::spawn(listener.run(stop.clone()));
        tokio::spawn(probe.run(stop.clone()));
        Ok(Self {
            inner,
            instance,
            _listener: Arc::new(stop.drop_guard()),
        })
    }

    /// This instance's name, as workers see it in `reply_to`.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// When the current subscription was made: one that lasts through idle periods
    /// keeps its time. None while there is none.
    pub fn subscribed_since(&self) -> Option<SystemTime> {
        *self.inner.since.lock().expect("lock")
    }

    /// Ok while results can reach this instance: the subscription is up and Redis took
    /// the probe's last write.
    pub fn check(&self) -> Result<(), Unavailable> {
        if self.subscribed_since().is_none() {
            let cause = self.inner.last_error.lock().expect("lock").clone();
            return Err(Unavailable::new(
                Dependency::Redis,
                format!("result notifications are not subscribed: {cause}"),
            ));
        }
        self.writable()
    }

    /// Whether Redis took the probe's last write.
    pub fn writable(&self) -> Result<(), Unavailable> {
        self.inner.writes.lock().expect("lock").clone()
    }

    /// What Redis's settings put at risk (eviction, no persistence), as read when the
    /// subscription last connected; empty when nothing is or before the first read.
    pub fn redis_warnings(&self) -> Vec<String> {
        self.inner.redis_warnings.lock().expect("lock").clone()
    }

    /// Requests (sync requests, long polls, streamed sessions) waiting for a result now.
    pub fn waiting(&self) -> usize {
        self.inner.pending.lock().expect("lock").count
    }

    /// Registers interest in a task (before it is published, for a sync request),
    /// unless every waiting slot is taken.
    pub fn register(&self, task_id: Uuid) -> Result<Waiter, AtCapacity> {
        let (tx, rx) = oneshot::channel();
        let mut pending = self.inner.pending.lock().expect("lock");
        if pending.count >= self.inner.max_waiting {
            return Err(AtCapacity(self.inner.max_waiting));
        }
        let id = pending.next;
        pending.next += 1;
        pending.count += 1;
        pending.by_task.entry(task_id).or_default().push((id, tx));
        Ok(Waiter {
            inner: self.inner.clone(),
            task_id,
            id,
            end: rx,
        })
    }
}

struct Listener {
    channel: String,
    results: Results,
    inner: Arc<Inner>,
    timeout: std::time::Duration,
    /// Ids of announced tasks, for the fetcher.
    announced: mpsc::UnboundedSender<Uuid>,
}

impl Listener {
    async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new();
        let mut outages = OutageLog::new("result subscription");
        loop {
            let ended = tokio::select! {
                _ = shutdown.cancelled() => return,
                ended = self.listen(&mut backoff, &mut outages) => ended,
            };
            *self.inner.since.lock().expect("lock") = None;
            outages.failed(Dependency::Redis, &ended);
            *self.inner.last_error.lock().expect("lock") = ended;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// Subscribes and delivers messages until the connection fails; returns the cause.
    async fn listen(&self, backoff: &mut Backoff, outages: &mut OutageLog) -> String {
        // Asked anew each time: after a failover, the master is another node.
        let connect = within(Dependency::Redis, self.timeout, async {
            let client = self.results.subscriber().client(self.timeout).await?;
            let mut pubsub = client.get_async_pubsub().await.map_err(failed)?;
            pubsub.subscribe(&self.channel).await.map_err(failed)?;
            Ok(pubsub)
        });
        let pubsub = match connect.await {
            Ok(pubsub) => pubsub,
            Err(e) => return e.cause,
        };
        // Read here rather than on first use of the pool: this subscription is the one
        // connection a serve holds for its life, and it reconnects exactly when Redis may
        // have been restarted or failed over to a node with other settings. (Through the
        // pool: a subscribed connection takes no other commands.) Read before `since`
        // is set, so a readyz that shows Redis up shows its warnings too.
        if let Err(e) = self.read_durability().await {
            return e.cause;
        }
        let (mut sink, mut stream) = pubsub.split();
        *self.inner.since.lock().expect("lock") = Some(SystemTime::now());
        backoff.reset();
        outages.recovered(Dependency::Redis);
        tracing::info!(channel = %self.channel, "subscribed to result notifications");
        if let Err(e) = self.sweep().await {
            return e.cause;
        }
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { return "connection closed".into() };
                    let Ok(payload) = msg.get_payload::<String>() else { continue };
                    match parse_notice(&payload) {
                        // Fails only once the fetcher has stopped, at shutdown.
                        Some(task_id) => { let _ = self.announced.send(task_id); }
                        None => tracing::warn!(%payload, "unreadable result notification"),
                    }
                }
                _ = ping.tick() => {
                    let pinged = within(Dependency::Redis, self.timeout, async {
                        sink.ping::<()>().await.map_err(failed)
                    });
                    if let Err(e) = pinged.await {
                        return e.cause;
                    }
                }
            }
        }
    }

    /// Reads Redis's durability settings into the shared state. Logs a warning when it
    /// first appears and when it goes, not per request or reconnect.
    async fn read_durability(&self) -> Result<(), Unavailable> {
        let warnings = self.results.durability().await?.warnings();
        let mut known = self.inner.redis_warnings.lock().expect("lock");
        let before = std::mem::take(&mut *known);
        for warning in warnings.iter().filter(|w| !before.contains(w)) {
            tracing::warn!(dependency = %Dependency::Redis, "{warning}");
        }
        for gone in before.iter().filter(|w| !warnings.contains(w)) {
            tracing::info!(dependency = %Dependency::Redis, "no longer so: {gone}");
        }
        *known = warnings;
        Ok(())
    }

    /// Reads the key of every task still waited for: their notices may have been lost.
    async fn sweep(&self) -> Result<(), Unavailable> {
        let waiting = self.inner.waited_for();
        for chunk in waiting.chunks(READ_CHUNK) {
            for (task_id, stored) in chunk.iter().zip(self.results.get_many(chunk).await?) {
                if let Some(end) = stored.ended() {
                    self.inner.deliver(*task_id, end);
                }
            }
        }
        Ok(())
    }
}

/// Writes to Redis every [`WRITE_PROBE_EVERY`] and records whether it took the write.
struct WriteProbe {
    results: Results,
    inner: Arc<Inner>,
    instance: String,
}

impl WriteProbe {
    async fn run(self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(WRITE_PROBE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let wrote = self.results.ping_and_write(&self.instance).await;
            *self.inner.writes.lock().expect("lock") = wrote;
        }
    }
}

/// Reads the outcomes of announced tasks and hands them to their waiters.
struct Fetcher {
    results: Results,
    inner: Arc<Inner>,
    notices: mpsc::UnboundedReceiver<Uuid>,
}

impl Fetcher {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new();
        let mut batch = Vec::new();
        loop {
            if batch.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    received = self.notices.recv_many(&mut batch, READ_CHUNK) => {
                        if received == 0 { return; }
                    }
                }
            } else {
                // Retrying after a failed read: take along what was announced meanwhile.
                while batch.len() < READ_CHUNK {
                    let Ok(task_id) = self.notices.try_recv() else {
                        break;
                    };
                    batch.push(task_id);
                }
            }
            // A waiter that gave up (or read its key at its deadline) needs nothing more.
            batch.retain(|id| self.inner.is_waited_for(id));
            if batch.is_empty() {
                continue;
            }
            match self.results.get_many(&batch).await {
                Ok(outcomes) => {
                    backoff.reset();
                    // No key yet means Redis refused the write the notice followed; the
                    // worker retries it and announces it again.
                    for (task_id, stored) in batch.drain(..).zip(outcomes) {
                        if let Some(end) = stored.ended() {
                            self.inner.deliver(task_id, end);
                        }
                    }
                }
                Err(e) => {
                    // The notices were heard, so they must not be dropped: read again
                    // once Redis answers (waiters also read their key at their deadline).
                    tracing::debug!(error = %e.cause, "reading announced results failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    }
}
