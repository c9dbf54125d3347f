//! An OpenTelemetry collector in the test: it answers `POST /v1/traces` as OTLP/HTTP
//! (protobuf) does and keeps every span it is sent, with the resource that sent it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Data;
use poem::{handler, post, EndpointExt, Route, Server};
use prost::Message;

/// One span as received: ids in lower-case hex, as `traceparent` writes them.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP's `SpanKind`: 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    /// The sender's `service.name` and `sumsvc.role`.
    pub service: String,
    pub role: String,
}

/// The running collector.
pub struct Collector {
    /// For `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Collector {
    pub async fn start() -> Collector {
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = Route::new()
            .at("/v1/traces", post(export))
            .data(spans.clone());
        let server = tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor).run(app).await;
        });
        Collector {
            endpoint: format!("http://{addr}"),
            spans,
            server,
        }
    }

    /// Waits until the spans received satisfy `check`, for at most 20 s.
    pub async fn wait_for(
        &self,
        what: &str,
        check: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans.lock().unwrap().clone();
            if check(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; received {spans:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[handler]
fn export(body: Vec<u8>, spans: Data<&Arc<Mutex<Vec<ReceivedSpan>>>>) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("an OTLP request");
    let mut received = spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.unwrap_or_default().attributes;
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            received.push(ReceivedSpan {
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                name: span.name,
                kind: span.kind,
                service: text(&resource, "service.name"),
                role: text(&resource, "sumsvc.role"),
            });
        }
    }
    // An empty ExportTraceServiceResponse: everything accepted.
    Vec::new()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(attributes: &[KeyValue], key: &str) -> String {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|value| match value {
            any_value::Value::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .unwrap_or_default()
}
