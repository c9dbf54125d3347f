//! Traces: the W3C trace context of a request, carried through the task queue to the
//! worker, and spans exported over OTLP when the standard OpenTelemetry variables ask.
//!
//! A request continues the trace of its `traceparent` (and `tracestate`) header, or
//! starts one. Three spans follow a task, each the child of the one before: the
//! request's (server), its publish (producer, until the broker confirmed; its context
//! travels in the message's AMQP headers) and the worker's (consumer, until the result
//! is stored and the message acked).
//!
//! Ids exist whether or not spans are exported: logs carry the trace id, and problem
//! details the request's span id. Spans are recorded only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; they
//! are then sampled by `OTEL_TRACES_SAMPLER` (parent-based, always on, by default) and
//! sent over HTTP/protobuf in batches, from a thread of their own (`OTEL_BSP_*`).
//! Otherwise a span is two random numbers and nothing else.

use std::sync::OnceLock;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanId, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

/// The tracer spans are recorded with, once exporting started; unset, nothing is.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The W3C trace context headers of a request or a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceHeaders {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl TraceHeaders {
    pub const TRACEPARENT: &'static str = "traceparent";
    pub const TRACESTATE: &'static str = "tracestate";

    /// The span these headers name, when `traceparent` is valid.
    pub fn parent(&self) -> Option<SpanContext> {
        self.traceparent.as_ref()?;
        let cx = TraceContextPropagator::new().extract(self);
        let parent = cx.span().span_context().clone();
        parent.is_valid().then_some(parent)
    }

    /// The headers that make `context` the parent of whatever receives them.
    pub fn of(context: &SpanContext) -> Self {
        let mut headers = Self::default();
        let cx = Context::new().with_remote_span_context(context.clone());
        TraceContextPropagator::new().inject_context(&cx, &mut headers);
        headers
    }
}

impl Extractor for TraceHeaders {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            Self::TRACEPARENT => self.traceparent.as_deref(),
            Self::TRACESTATE => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![Self::TRACEPARENT, Self::TRACESTATE]
    }
}

impl Injector for TraceHeaders {
    fn set(&mut self, key: &str, value: String) {
        match key {
            Self::TRACEPARENT => self.traceparent = Some(value),
            // An empty trace state is left out, as W3C asks.
            Self::TRACESTATE if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

/// One span: its ids always, and the recorded span while spans are exported.
pub struct Span {
    context: SpanContext,
    recorded: Option<opentelemetry_sdk::trace::Span>,
}

impl Span {
    /// Starts a span, the child of `parent` or the root of a new trace. `describe` gives
    /// its name, kind and attributes; it runs only when spans are exported.
    pub fn start(parent: Option<&SpanContext>, describe: impl FnOnce() -> SpanBuilder) -> Self {
        match TRACER.get() {
            Some(tracer) => {
                let cx = parent.map_or_else(Context::new, |parent| {
                    Context::new().with_remote_span_context(parent.clone())
                });
                let span = tracer.build_with_context(describe(), &cx);
                Self {
                    context: span.span_context().clone(),
                    recorded: Some(span),
                }
            }
            None => Self {
                context: unrecorded(parent),
                recorded: None,
            },
        }
    }

    pub fn context(&self) -> &SpanContext {
        &self.context
    }

    pub fn trace_id(&self) -> TraceId {
        self.context.trace_id()
    }

    pub fn id(&self) -> SpanId {
        self.context.span_id()
    }

    /// Ends the span with the attributes known only now (`describe` runs only when
    /// the span is recorded) and, when it failed, why.
    pub fn end(self, describe: impl FnOnce() -> Vec<KeyValue>, error: Option<String>) {
        let Some(mut span) = self.recorded else {
            return;
        };
        if span.is_recording() {
            span.set_attributes(describe());
            if let Some(error) = error {
                span.set_status(Status::error(error));
            }
        }
        span.end();
    }
}

/// The context of a span that is not recorded: new ids, and whatever the parent said
/// about sampling. A new trace says "not sampled", since nothing records it here.
fn unrecorded(parent: Option<&SpanContext>) -> SpanContext {
    let id = SpanId::from(fastrand::u64(1..));
    match parent {
        Some(parent) => SpanContext::new(
            parent.trace_id(),
            id,
            parent.trace_flags(),
            false,
            parent.trace_state().clone(),
        ),
        None => SpanContext::new(
            TraceId::from(fastrand::u128(1..)),
            id,
            TraceFlags::default(),
            false,
            TraceState::default(),
        ),
    }
}

/// Starts exporting spans when the OpenTelemetry variables ask for it; the provider is
/// what flushes them at exit. An exporter that cannot be built is logged, and the
/// service runs without it: traces must never stop the work.
pub fn start_exporting(role: &'static str) -> Option<SdkTracerProvider> {
    if !exporting_asked() {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => exporter,
        Err(e) => {
            tracing::warn!(error = %e, "cannot export traces over OTLP; going on without");
            return None;
        }
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(role))
        .build();
    if TRACER.set(provider.tracer("sumsvc")).is_err() {
        tracing::warn!("trace export was started twice; the first one stays");
    }
    tracing::info!("exporting traces over OTLP (HTTP/protobuf)");
    Some(provider)
}

/// What the standard variables say: an endpoint is set, and neither
/// `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none`.
fn exporting_asked() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let is = |name: &str, value: &str| {
        std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
    };
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !is("OTEL_SDK_DISABLED", "true")
        && !is("OTEL_TRACES_EXPORTER", "none")
}

/// `service.name` is `sumsvc` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`
/// say otherwise; `sumsvc.role` tells `serve` from `work`.
fn resource(role: &'static str) -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    let builder = Resource::builder().with_attribute(KeyValue::new("sumsvc.role", role));
    if named {
        builder.build()
    } else {
        builder.with_service_name("sumsvc").build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_continued() {
        let headers = TraceHeaders {
            traceparent: Some(PARENT.into()),
            tracestate: Some("vendor=abc".into()),
        };
        let parent = headers.parent().unwrap();
        let span = Span::start(Some(&parent), || unreachable!("nothing is exported"));
        assert_eq!(
            span.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_ne!(span.id(), parent.span_id());
        let out = TraceHeaders::of(span.context());
        let expected = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", span.id());
        assert_eq!(out.traceparent.as_deref(), Some(expected.as_str()));
        assert_eq!(out.tracestate.as_deref(), Some("vendor=abc"));
    }

    #[test]
    fn an_invalid_or_missing_traceparent_starts_a_new_trace() {
        for traceparent in [None, Some("00-zz-00f067aa0ba902b7-01"), Some("garbage")] {
            let headers = TraceHeaders {
                traceparent: traceparent.map(Into::into),
                tracestate: None,
            };
            assert_eq!(headers.parent(), None, "{traceparent:?}");
        }
        let a = Span::start(None, || unreachable!());
        let b = Span::start(None, || unreachable!());
        assert!(a.context().is_valid());
        assert_ne!(a.trace_id(), b.trace_id());
        let out = TraceHeaders::of(a.context());
        assert_eq!(out.tracestate, None);
        assert!(out.traceparent.unwrap().ends_with("-00"), "not sampled");
    }
}
