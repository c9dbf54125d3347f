//! What `work` answers over HTTP, at `worker.metrics_listen`: `GET /metrics` (the
//! Prometheus text of its consumers) and `GET /healthz` (the process is up), served as
//! `serve` serves the API, with the caps and timers of `[http]`.

use std::sync::Arc;

use poem::web::{Data, Json};
use poem::{get, handler, EndpointExt, Response, Route};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, HttpConfig};
use crate::http;
use crate::metrics::{WorkMetrics, CONTENT_TYPE};

/// Binds `worker.metrics_listen`, with an error that names the key. Done before the
/// consumers start, so a taken address stops `work` at once rather than leaving it
/// unobservable.
pub fn bind_metrics(config: &Config) -> anyhow::Result<std::net::TcpListener> {
    http::bind(
        config.worker.metrics_listen,
        "worker.metrics_listen",
        Some("another `sumsvc work` on this host needs an address of its own"),
    )
}

/// The running HTTP server of a worker pool.
pub struct MetricsServer {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl MetricsServer {
    pub fn start(
        listener: std::net::TcpListener,
        metrics: Arc<WorkMetrics>,
        http: &HttpConfig,
    ) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let acceptor = http::acceptor(listener)?;
        let routes = Route::new()
            .at("/metrics", get(scrape))
            .at("/healthz", get(healthz))
            .data(metrics)
            .boxed();
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (config, stop) = (http.clone(), stop.clone());
            async move { http::serve(acceptor, routes, &config, stop).await }
        });
        tracing::info!(%addr, "worker metrics at /metrics");
        Ok(Self { stop, task })
    }

    /// Stops answering.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "the worker metrics server panicked");
        }
    }
}

#[handler]
fn scrape(metrics: Data<&Arc<WorkMetrics>>) -> Response {
    Response::builder()
        .content_type(CONTENT_TYPE)
        .body(metrics.encode())
}

#[handler]
fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}
