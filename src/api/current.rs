//! The request a task is serving: [`super::observe`] sets its span for the whole of the
//! request, and whatever quotes its ids reads it (problem details, the publish span).
//! The API key's budget is recorded here too, once admitted, for the answer's
//! `RateLimit` fields.

use std::cell::Cell;
use std::future::Future;

use opentelemetry::trace::SpanContext;
use tokio::task::futures::TaskLocalFuture;

use crate::auth::Quota;

tokio::task_local! {
    /// The span of the request being served.
    static REQUEST: SpanContext;
    /// The budget of the API key that made it, once it was admitted or refused for it.
    static QUOTA: Cell<Option<Quota>>;
}

/// `serving`, run as the request whose span is `span`.
pub fn scope<F: Future>(
    span: SpanContext,
    serving: F,
) -> TaskLocalFuture<SpanContext, TaskLocalFuture<Cell<Option<Quota>>, F>> {
    REQUEST.scope(span, QUOTA.scope(Cell::new(None), serving))
}

/// Records the budget of the key that made the request this task serves.
pub fn set_quota(quota: Option<Quota>) {
    let _ = QUOTA.try_with(|cell| cell.set(quota));
}

/// The budget of the key that made the request this task serves, once recorded.
pub fn quota() -> Option<Quota> {
    QUOTA.try_with(Cell::get).ok().flatten()
}

/// The span of the request this task serves, if it serves one.
pub fn request_span() -> Option<SpanContext> {
    REQUEST.try_with(SpanContext::clone).ok()
}

/// The id of the request this task serves, as logs and problem details show it.
pub fn request_id() -> Option<String> {
    REQUEST.try_with(|span| span.span_id().to_string()).ok()
}
