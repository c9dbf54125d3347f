//! `GET /metrics`: the Prometheus text of this `serve`. Not part of the OpenAPI
//! document, and open to every caller, as scrapers expect.

use poem::web::Data;
use poem::{handler, Response};

use super::health;
use super::AppState;
use crate::metrics::{ServeState, CONTENT_TYPE};

/// The counters as they stand, with the states read now: the waiting sync requests, the
/// task queue's consumers and each dependency, judged as `/readyz` judges it.
#[handler]
pub async fn metrics(state: Data<&AppState>) -> Response {
    let readiness = health::readiness(&state).await;
    let text = state.metrics.encode(ServeState {
        sync_waiters: state.waiters.waiting(),
        queue_consumers: readiness.workers,
        dependencies: readiness.dependencies(),
        broker_nodes: state.publisher.nodes().to_vec(),
        publisher_node: readiness.rabbitmq.node.clone(),
    });
    Response::builder().content_type(CONTENT_TYPE).body(text)
}
