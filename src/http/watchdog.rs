//! The clock of one connection: what it is doing, and when it has outstayed its welcome.
//!
//! A connection is in one of three phases. Accepted, it is receiving the head of its
//! first request, which must arrive within `http.header_timeout`. While it has requests
//! in flight no timer runs here: the body is bounded by `http.body_timeout` where it is
//! read, a handler by
//! its own deadlines. With none in flight it is idle, and may stay so for
//! `http.idle_timeout`; the first byte of a next request starts `http.header_timeout`
//! again. So a client that sends half a head, trickles one, or connects and says
//! nothing, is cut off, while a sync request that waits 30 s for its sum is not.
//!
//! hyper's own header timeout (HTTP/1 only) starts when a connection goes idle, so it
//! would close every kept-alive connection after `http.header_timeout`; and HTTP/2, or a
//! connection that has not yet said which protocol it speaks, has none. One watchdog
//! for both protocols keeps the two timers apart. An HTTP/2 connection counts its
//! streams as requests; any frame it gets while idle (a PING too) starts the header timer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Serving this many requests.
    Busy(usize),
    /// No request in flight since this instant, and no byte of a next one.
    Idle(Instant),
    /// Receiving a request since this instant (accepted then, or the first byte of a
    /// next one came): its head is not complete.
    Head(Instant),
}

/// Which timer a connection outstayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// A request's head did not arrive within `http.header_timeout`.
    Head,
    /// No request came within `http.idle_timeout`.
    Idle,
}

/// The phase of one connection, shared by its socket, its requests and its task.
#[derive(Clone)]
pub struct Activity(Arc<watch::Sender<Phase>>);

impl Activity {
    /// A connection accepted now.
    pub fn new() -> Self {
        Self(Arc::new(watch::Sender::new(Phase::Head(Instant::now()))))
    }

    /// Marks a request begun; it ends when the guard is dropped.
    pub fn begin(&self) -> InFlight {
        self.0.send_modify(|phase| {
            *phase = match *phase {
                Phase::Busy(n) => Phase::Busy(n + 1),
                _ => Phase::Busy(1),
            }
        });
        InFlight(self.clone())
    }

    /// Bytes came in: while idle, that is the start of a next request's head.
    fn received(&self) {
        self.0.send_if_modified(|phase| match phase {
            Phase::Idle(_) => {
                *phase = Phase::Head(Instant::now());
                true
            }
            _ => false,
        });
    }

    /// Resolves once the connection has outstayed `header` (delivering a request's
    /// head) or `idle` (waiting with no request); never while a request is in flight.
    pub async fn expired(&self, header: Duration, idle: Duration) -> Expired {
        let mut phase = self.0.subscribe();
        loop {
            let deadline = match *phase.borrow_and_update() {
                Phase::Head(since) => Some((since + header, Expired::Head)),
                Phase::Idle(since) => Some((since + idle, Expired::Idle)),
                Phase::Busy(_) => None,
            };
            match deadline {
                Some((at, expired)) => tokio::select! {
                    () = tokio::time::sleep_until(at) => return expired,
                    _ = phase.changed() => {}
                },
                // The sender lives in `self`, so this waits for a change, never errs.
                None => {
                    let _ = phase.changed().await;
                }
            }
        }
    }
}

/// A request in flight; dropping it (answered, or abandoned) ends the request.
pub struct InFlight(Activity);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0 .0.send_modify(|phase| {
            *phase = match *phase {
                Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
                _ => Phase::Idle(Instant::now()),
            }
        });
    }
}

/// A connection's socket that reports the bytes it receives to its [`Activity`].
pub struct Watched<T> {
    inner: T,
    activity: Activity,
}

impl<T> Watched<T> {
    pub fn new(inner: T, activity: Activity) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.received();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(75);

    /// Runs the watchdog on its own task (the clock is paused): when it fires, and why.
    fn watch(activity: &Activity) -> tokio::task::JoinHandle<(Instant, Expired)> {
        let activity = activity.clone();
        tokio::spawn(async move {
            let expired = activity.expired(HEADER, IDLE).await;
            (Instant::now(), expired)
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_has_the_header_timeout_to_deliver_its_first_head() {
        let opened = Instant::now();
        let activity = Activity::new();
        assert_eq!(
            watch(&activity).await.unwrap(),
            (opened + HEADER, Expired::Head)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_timer_runs_during_a_request_and_then_the_idle_timeout_does() {
        let activity = Activity::new();
        let request = activity.begin();
        let watchdog = watch(&activity);
        // A request longer than both timers is not cut.
        tokio::time::sleep(IDLE * 2).await;
        assert!(!watchdog.is_finished());
        let answered = Instant::now();
        drop(request);
        assert_eq!(watchdog.await.unwrap(), (answered + IDLE, Expired::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_byte_of_a_next_request_starts_the_header_timeout() {
        let activity = Activity::new();
        drop(activity.begin());
        let watchdog = watch(&activity);
        tokio::time::sleep(Duration::from_secs(30)).await;
        activity.received();
        let head_began = Instant::now();
        // More bytes do not move the deadline: a trickled head is cut all the same.
        tokio::time::sleep(Duration::from_secs(5)).await;
        activity.received();
        assert_eq!(
            watchdog.await.unwrap(),
            (head_began + HEADER, Expired::Head)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_once_its_last_request_ends() {
        let activity = Activity::new();
        let (first, second) = (activity.begin(), activity.begin());
        drop(first);
        let watchdog = watch(&activity);
        tokio::time::sleep(IDLE * 2).await;
        assert!(!watchdog.is_finished(), "one request is still in flight");
        let answered = Instant::now();
        drop(second);
        assert_eq!(watchdog.await.unwrap(), (answered + IDLE, Expired::Idle));
    }
}
