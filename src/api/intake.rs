//! How a request body comes in: bounded in size (`limits.max_body_bytes`, 413), in time
//! (`http.body_timeout`, 408) and in the memory all bodies being read hold at once
//! (`limits.body_budget_bytes`, 503).
//!
//! The budget is taken as bytes arrive, or all at once when `Content-Length` says how
//! many will come, and given back when the request is done with its body (when the
//! handler returns, since the parsed numbers live as long). A body refused for the
//! budget is still read to its end, into nothing, so that the client, still sending,
//! gets its 503 rather than a reset connection; unless the client waits for
//! `100 Continue` before it sends, then it is answered at once. A body that stalls gets
//! 408 and the connection closed.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use poem::http::{header, HeaderValue, Version};
use poem::{IntoResponse, Request, RequestBody};
use tokio::time::Instant;

use super::problem::ApiError;
use crate::budget::{ByteBudget, Share};
use crate::config::Config;

/// The body bounds every request shares: the memory budget and the read deadline.
#[derive(Clone)]
pub struct Intake {
    budget: ByteBudget,
    body_timeout: Duration,
    max_body_bytes: usize,
    sum_limits: crate::sum::Limits,
    max_batch: usize,
}

impl Intake {
    pub fn new(config: &Config) -> Self {
        Self {
            budget: ByteBudget::new(config.limits.body_budget_bytes),
            body_timeout: config.http.body_timeout,
            max_body_bytes: config.limits.max_body_bytes,
            sum_limits: config.limits.sum_limits(),
            max_batch: config.limits.max_batch,
        }
    }

    /// `limits.max_batch`: the most sums a bulk request holds.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// What a body's `args` may hold once read.
    pub fn sum_limits(&self) -> crate::sum::Limits {
        self.sum_limits
    }

    /// Reads the whole body of `request`, holding its bytes against the budget.
    pub async fn read(&self, request: &Request, body: &mut RequestBody) -> poem::Result<Body> {
        let deadline = Instant::now() + self.body_timeout;
        let http1 = request.version() < Version::HTTP_2;
        // Such a client sends its body only once told to go on (hyper does so when
        // the body is first read): a refusal then need not read it.
        let waits_to_send = request
            .headers()
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let mut share = self.budget.share();
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes) {
            return Err(self.too_large());
        }
        let mut stream = std::pin::pin!(body.take()?.into_bytes_stream());
        if let Some(n) = declared {
            if !share.grow(n) {
                let problem = self.over_budget();
                if waits_to_send {
                    return Err(closing(problem, http1));
                }
                return Err(self.drained(problem, stream, deadline, 0, http1).await);
            }
        }
        let mut bytes = Vec::with_capacity(declared.unwrap_or(0));
        loop {
            let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(None) => break,
                Ok(Some(Ok(chunk))) => chunk,
                Ok(Some(Err(e))) => {
                    return Err(ApiError::bad_request(
                        "unreadable-body",
                        format!("the body could not be read: {e}"),
                    )
                    .into())
                }
                Err(_) => return Err(self.timed_out(bytes.len(), http1)),
            };
            let total = bytes.len() + chunk.len();
            if total > self.max_body_bytes {
                return Err(self.too_large());
            }
            if total > share.bytes() && !share.grow(total - share.bytes()) {
                drop((bytes, share));
                let problem = self.over_budget();
                return Err(self.drained(problem, stream, deadline, total, http1).await);
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Body { bytes, share })
    }

    fn too_large(&self) -> poem::Error {
        ApiError::payload_too_large(
            "body-too-large",
            format!(
                "the body is larger than {} bytes (limits.max_body_bytes): split the numbers \
                 into several requests",
                self.max_body_bytes
            ),
        )
        .into()
    }

    fn timed_out(&self, received: usize, http1: bool) -> poem::Error {
        let problem = ApiError::request_timeout(
            "body-timeout",
            format!(
                "the body did not arrive within {} (http.body_timeout; {received} bytes came): \
                 send it whole and without pauses, on a new connection",
                crate::config::format_duration(self.body_timeout)
            ),
        );
        // The rest of the body may still come: the connection cannot carry another request.
        closing(problem, http1)
    }

    /// The 503 for a body that would overrun the budget.
    fn over_budget(&self) -> ApiError {
        tracing::warn!(
            budget = self.budget.limit(),
            "refusing a request body: the bodies being read fill limits.body_budget_bytes"
        );
        ApiError::unavailable(
            "body-budget",
            format!(
                "the service is reading as many request bodies as its memory budget allows \
                 ({} bytes at once, limits.body_budget_bytes): retry after the Retry-After \
                 seconds",
                self.budget.limit()
            ),
        )
    }

    /// Answers `error` once the rest of the body has been read and dropped (`received`
    /// bytes already were), so that a client still sending it reads the answer rather
    /// than a reset connection; within the body's bounds, else closing the connection.
    async fn drained(
        &self,
        error: ApiError,
        mut stream: impl Stream<Item = std::io::Result<hyper::body::Bytes>> + Unpin,
        deadline: Instant,
        mut received: usize,
        http1: bool,
    ) -> poem::Error {
        let drained = loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(None) => break true,
                Ok(Some(Ok(chunk))) if received + chunk.len() <= self.max_body_bytes => {
                    received += chunk.len();
                }
                _ => break false,
            }
        };
        if drained {
            error.into()
        } else {
            closing(error, http1)
        }
    }
}

/// An error answer after which an HTTP/1 connection is closed, its body unread.
fn closing(error: ApiError, http1: bool) -> poem::Error {
    let mut resp = error.into_response();
    if http1 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    poem::Error::from_response(resp)
}

/// A body read whole, its bytes held against the budget until the share is dropped.
pub struct Body {
    pub bytes: Vec<u8>,
    pub share: Share,
}
