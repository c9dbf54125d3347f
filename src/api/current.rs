//! The request a task is serving: [`super::observe`] sets its span for the whole of the
//! request, and whatever quotes its ids reads it (problem details, the publish span).

use std::future::Future;

use opentelemetry::trace::SpanContext;
use tokio::task::futures::TaskLocalFuture;

tokio::task_local! {
    /// The span of the request being served.
    static REQUEST: SpanContext;
}

/// `serving`, run as the request whose span is `span`.
pub fn scope<F: Future>(span: SpanContext, serving: F) -> TaskLocalFuture<SpanContext, F> {
    REQUEST.scope(span, serving)
}

/// The span of the request this task serves, if it serves one.
pub fn request_span() -> Option<SpanContext> {
    REQUEST.try_with(SpanContext::clone).ok()
}

/// The id of the request this task serves, as logs and problem details show it.
pub fn request_id() -> Option<String> {
    REQUEST.try_with(|span| span.span_id().to_string()).ok()
}
