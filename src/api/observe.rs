//! What every request leaves behind: a span that continues the caller's W3C trace, a
//! log scope that puts its `trace_id` and `request_id` on every line logged while it is
//! served, its count and duration in the HTTP metrics, and, where `RUST_LOG` asks for
//! it, one log line ([`ACCESS_LOG`]: method, URI, peer, status, duration). Publishing a
//! task is a span of the request too ([`publish`]), whose context travels with the
//! message.
//!
//! It is the one layer around the routes: it also hands the handlers their `Data`,
//! turns what no handler answered into the client's answer ([`Unanswered`]) and writes
//! the access log, because each layer of poem's (`data`, `around`, `catch_all_error`,
//! `Tracing`) keeps its own copy of the request in every request's future, for as long
//! as a sync request waits. Folding five such layers into this one took `serve` from
//! 42.3 to 35.9 KB per waiting sync request (`cargo bench --bench waiters`).
//!
//! The request id is the id of the request's span. Problem details quote it as their
//! `instance`, so a user who reports one hands over the key to its logs and its trace.

use std::sync::Arc;
use std::time::Instant;

use opentelemetry::trace::{SpanBuilder, SpanKind};
use opentelemetry::KeyValue;
use poem::http::{HeaderValue, Method, StatusCode};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use tracing::Instrument;

use super::current;
use super::intake::Intake;
use super::{AppState, Unanswered};
use crate::auth::Quota;
use crate::dependency::Unavailable;
use crate::metrics::TaskKind;
use crate::task::TaskMessage;
use crate::telemetry::trace::{Span, TraceHeaders};
use crate::telemetry::ACCESS_LOG;

/// Every route template, for the `route` label and span names: a raw path would make a
/// label for every URL a client invents. A unit test checks that every documented
/// route is in it.
const ROUTES: &[&str] = &[
    "/sync/sum",
    "/sync/sums",
    "/async/post_task",
    "/async/get_task_result",
    "/async/tasks/{session_id}",
    "/async/events",
    "/async/get_task_results",
    "/async/post_tasks",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
];

/// The label of a path that is no route.
const OTHER: &str = "other";

/// The middleware; wrap it around the routes, so that it sees each answer as the
/// client gets it. It also hands the handlers what they reach through `Data`: the
/// [`AppState`] and the [`Intake`].
pub struct Observe {
    state: AppState,
    intake: Intake,
    unanswered: Arc<Unanswered>,
}

impl Observe {
    pub fn new(state: AppState, intake: Intake, unanswered: Unanswered) -> Self {
        Self {
            state,
            intake,
            unanswered: Arc::new(unanswered),
        }
    }
}

impl<E: Endpoint> Middleware<E> for Observe {
    type Output = Observed<E>;

    fn transform(&self, ep: E) -> Self::Output {
        Observed {
            inner: ep,
            state: self.state.clone(),
            intake: self.intake.clone(),
            unanswered: self.unanswered.clone(),
        }
    }
}

pub struct Observed<E> {
    inner: E,
    state: AppState,
    intake: Intake,
    unanswered: Arc<Unanswered>,
}

impl<E: Endpoint> Endpoint for Observed<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let started = Instant::now();
        req.extensions_mut().insert(self.state.clone());
        req.extensions_mut().insert(self.intake.clone());
        let route = route_of(req.uri().path());
        let method = method_label(req.method());
        let span = server_span(&req, route, method);
        // At ERROR level, so that it is on wherever a log line is: every line logged
        // while serving the request carries its ids, whatever RUST_LOG keeps.
        let scope = tracing::error_span!(
            "request",
            trace_id = %span.trace_id(),
            request_id = %span.id(),
        );
        // Inside the request's scope: a problem quotes the request id, and the access
        // line carries it.
        let resp = current::scope(span.context().clone(), self.answer(req, method, started))
            .instrument(scope)
            .await;
        self.record(span, route, method, resp.status(), started);
        Ok(resp)
    }
}

impl<E: Endpoint> Observed<E> {
    /// The client's answer to `req`: the route's, or what stands for an error no
    /// handler answered; logged as an access line where `RUST_LOG` asks for one.
    async fn answer(&self, req: Request, method: &'static str, started: Instant) -> Response {
        // A `Uri` clone shares its text rather than copying it.
        let uri = req.uri().clone();
        let peer = tracing::enabled!(target: ACCESS_LOG, tracing::Level::INFO)
            .then(|| req.remote_addr().to_string());
        let mut resp = match self.inner.call(req).await {
            Ok(resp) => resp.into_response(),
            Err(err) => self.unanswered.answer(err, uri.path()),
        };
        if let Some(quota) = current::quota() {
            rate_limit_fields(&mut resp, quota);
        }
        if let Some(peer) = peer {
            tracing::info!(
                target: ACCESS_LOG,
                method,
                %uri,
                %peer,
                status = resp.status().as_u16(),
                elapsed = ?started.elapsed(),
                "answered"
            );
        }
        resp
    }

    /// Counts the answer in the HTTP metrics and ends the request's span with it.
    fn record(
        &self,
        span: Span,
        route: &'static str,
        method: &'static str,
        status: StatusCode,
        started: Instant,
    ) {
        self.state
            .metrics
            .request(route, method, status.as_u16(), started.elapsed());
        let failed = status.is_server_error().then(|| status.to_string());
        span.end(
            || {
                vec![KeyValue::new(
                    "http.response.status_code",
                    i64::from(status.as_u16()),
                )]
            },
            failed,
        );
    }
}

/// The `RateLimit-Policy` and `RateLimit` fields of the IETF httpapi draft
/// (draft-ietf-httpapi-ratelimit-headers): the key's budget as a quota of `burst`
/// requests per the `burst / rate` seconds it takes to refill, how many of them it may
/// make at once now (`r`), and in how many seconds the whole quota is back (`t`).
fn rate_limit_fields(resp: &mut Response, quota: Quota) {
    let window = (quota.burst as f64 / quota.rate.max(1) as f64)
        .ceil()
        .max(1.0) as u64;
    let policy = format!("\"key\";q={};w={window}", quota.burst);
    let state = format!(
        "\"key\";r={};t={}",
        quota.remaining,
        quota.full_in.as_secs_f64().ceil() as u64
    );
    for (name, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, value);
        }
    }
}

/// The request's server span, continuing the caller's W3C trace when its headers carry
/// one.
fn server_span(req: &Request, route: &'static str, method: &'static str) -> Span {
    let header = |name| req.header(name).map(str::to_owned);
    let caller = TraceHeaders {
        traceparent: header(TraceHeaders::TRACEPARENT),
        tracestate: header(TraceHeaders::TRACESTATE),
    };
    Span::start(caller.parent().as_ref(), || {
        let mut attributes = vec![
            KeyValue::new("http.request.method", method),
            KeyValue::new("url.path", req.uri().path().to_owned()),
        ];
        // OpenTelemetry's HTTP conventions: a span without a route is named by its
        // method alone.
        let name = if route == OTHER {
            method.to_owned()
        } else {
            attributes.push(KeyValue::new("http.route", route));
            format!("{method} {route}")
        };
        SpanBuilder::from_name(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
    })
}

/// Publishes a task in a span of the request (a child of its span, and the parent of
/// the worker's), and counts it once the broker confirmed it.
pub async fn publish(
    state: &AppState,
    task: TaskMessage,
    kind: TaskKind,
) -> Result<(), Unavailable> {
    let queue = state.publisher.queue();
    let span = Span::start(current::request_span().as_ref(), || {
        SpanBuilder::from_name(format!("publish {queue}"))
            .with_kind(SpanKind::Producer)
            .with_attributes([
                KeyValue::new("messaging.system", "rabbitmq"),
                KeyValue::new("messaging.operation.type", "send"),
                KeyValue::new("messaging.destination.name", queue.to_owned()),
                KeyValue::new("messaging.message.id", task.task_id.to_string()),
            ])
    });
    let task = task.traced(TraceHeaders::of(span.context()));
    let started = Instant::now();
    let published = state.publisher.publish(&task).await;
    if published.is_ok() {
        state.metrics.published(kind, started.elapsed());
    }
    span.end(Vec::new, published.as_ref().err().map(ToString::to_string));
    published
}

/// The route template a path answers to, or `other`.
fn route_of(path: &str) -> &'static str {
    if let Some(route) = ROUTES.iter().find(|route| **route == path) {
        return route;
    }
    if let Some(route) = ROUTES.iter().find(|route| super::allow::fits(route, path)) {
        return route;
    }
    // Swagger UI's assets live under its route.
    if path.starts_with("/docs/") {
        return "/docs";
    }
    OTHER
}

/// The method as a label: one of the standard ones, or `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_route_has_its_label() {
        let spec: serde_json::Value =
            serde_json::from_str(&super::super::openapi().spec()).unwrap();
        for path in spec["paths"].as_object().unwrap().keys() {
            assert_eq!(route_of(path), path, "add {path} to ROUTES");
        }
    }

    #[test]
    fn paths_that_are_no_route_share_one_label() {
        assert_eq!(route_of("/sync/sum/"), "other");
        assert_eq!(route_of("/wp-login.php"), "other");
        assert_eq!(route_of("/docs/oauth-receiver.html"), "/docs");
        assert_eq!(route_of("/async/tasks/42"), "/async/tasks/{session_id}");
        assert_eq!(route_of("/async/tasks/42/x"), "other");
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
