//! One client connection: HTTP/1.1 or HTTP/2 (with TLS, or cleartext by prior
//! knowledge) through hyper, each request answered by the poem endpoint, the whole
//! watched by the connection's [`Activity`] clock.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use poem::endpoint::BoxEndpoint;
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::Endpoint;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::watchdog::{Activity, Expired, InFlight, Watched};
use crate::config::HttpConfig;

/// The extension of a response whose body streams for up to this long (server-sent
/// events): its connection counts as busy until the body ends or this has passed, so
/// the idle timer does not cut it, and a client that stops reading is still cut once
/// the stream should have ended.
#[derive(Debug, Clone, Copy)]
pub struct StreamsFor(pub Duration);

/// A response body, and for a streamed one the request's place among those in flight.
pub struct Streamed<B> {
    body: B,
    /// Dropped with the body: the request then ends.
    _ended: Option<oneshot::Sender<()>>,
}

impl<B> Streamed<B> {
    /// A body written at once: its request ended with its head.
    fn done(body: B) -> Self {
        Self { body, _ended: None }
    }

    /// A body that streams: `in_flight` lasts until it is dropped, `longest` at most.
    fn new(body: B, in_flight: InFlight, longest: Duration) -> Self {
        let (ended, dropped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(longest, dropped).await;
            drop(in_flight);
        });
        Self {
            body,
            _ended: Some(ended),
        }
    }
}

impl<B: Body + Unpin> Body for Streamed<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// How long an idle connection told to close (an HTTP/2 GOAWAY) may take to do so.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// One server, as each of its connections sees it: the endpoint, the protocol settings,
/// the timers, and the signals to drain and to close.
pub struct Server {
    pub endpoint: BoxEndpoint<'static>,
    pub builder: auto::Builder<TokioExecutor>,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// Cancelled when the server stops accepting: finish what is in flight, then close.
    pub drain: CancellationToken,
    /// Cancelled when the drain time is up: close at once.
    pub force: CancellationToken,
}

impl Server {
    pub fn new(endpoint: BoxEndpoint<'static>, http: &HttpConfig) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http2()
            .max_concurrent_streams(u32::try_from(http.http2_max_streams).unwrap_or(u32::MAX))
            // What poem's own server sets: a bound on the headers' size, and on streams a
            // client opens and resets at once (the "rapid reset" attack).
            .max_header_list_size(16 * 1024)
            .max_pending_accept_reset_streams(20);
        Self {
            endpoint,
            builder,
            header_timeout: http.header_timeout,
            idle_timeout: http.idle_timeout,
            drain: CancellationToken::new(),
            force: CancellationToken::new(),
        }
    }
}

/// Serves one connection until the client closes it, it outstays a timer, or the
/// server drains.
pub async fn serve<Io>(
    io: Io,
    local: LocalAddr,
    remote: RemoteAddr,
    scheme: Scheme,
    server: Arc<Server>,
) where
    Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let activity = Activity::new();
    let service = {
        let (activity, server, remote) = (activity.clone(), server.clone(), remote.clone());
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let in_flight = activity.begin();
            let server = server.clone();
            let req = poem::Request::from((req, local.clone(), remote.clone(), scheme.clone()));
            async move {
                let resp = server.endpoint.get_response(req).await;
                // A streamed answer keeps the connection busy while it streams, up to
                // the length it declares; any other is done once its head is written.
                let streams_for = resp.extensions().get::<StreamsFor>().map(|s| s.0);
                let resp = hyper::Response::from(resp);
                Ok::<_, Infallible>(match streams_for {
                    Some(longest) => resp.map(|body| Streamed::new(body, in_flight, longest)),
                    None => {
                        drop(in_flight);
                        resp.map(Streamed::done)
                    }
                })
            }
        })
    };
    let conn = server
        .builder
        .serve_connection(TokioIo::new(Watched::new(io, activity.clone())), service);
    tokio::pin!(conn);
    let expired = activity.expired(server.header_timeout, server.idle_timeout);
    tokio::pin!(expired);
    tokio::select! {
        _ = conn.as_mut() => {}
        expired = expired.as_mut() => match expired {
            // Nothing was asked yet: nothing to finish.
            Expired::Head => tracing::debug!(
                remote = %remote,
                "closing a connection: no complete request head within http.header_timeout"
            ),
            Expired::Idle => {
                tracing::debug!(remote = %remote, "closing a connection idle for http.idle_timeout");
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
            }
        },
        () = server.drain.cancelled() => {
            conn.as_mut().graceful_shutdown();
            // Finish what is in flight; the timers still cut a stalled client.
            tokio::select! {
                _ = conn => {}
                () = server.force.cancelled() => {}
                _ = expired => {}
            }
        }
    }
}
