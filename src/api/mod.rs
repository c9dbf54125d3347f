//! The HTTP API: routes, bodies and errors, generated into an OpenAPI document by
//! poem-openapi (Swagger UI at `/docs`, the spec at `/openapi.json`).

mod body;
mod health;
mod problem;
mod tasks;

use std::sync::Arc;

use poem::middleware::Tracing;
use poem::{Endpoint, EndpointExt, IntoResponse, Route};
use poem_openapi::OpenApiService;

pub use problem::Problem;

use crate::broker::Publisher;
use crate::config::Config;
use crate::store::{Results, Sessions};
use crate::waiters::Waiters;

/// What every handler reaches: config, stores, the publisher and the waiters.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub sessions: Sessions,
    pub results: Results,
    pub publisher: Publisher,
    pub waiters: Waiters,
}

/// The OpenAPI service (for the routes and for printing the spec).
pub fn openapi() -> OpenApiService<(tasks::TasksApi, health::HealthApi), ()> {
    OpenApiService::new(
        (tasks::TasksApi, health::HealthApi),
        "sumsvc",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Exact sums of number lists through a job queue. Sum synchronously with \
             `POST /sync/sum`, or submit with `POST /async/post_task` and poll \
             `GET /async/get_task_result`. Errors are RFC 9457 problem details \
             (`application/problem+json`) whose `detail` says what to do.",
    )
}

/// Every route, with problem-details errors for whatever no handler answered.
pub fn routes(state: AppState) -> impl Endpoint {
    let api = openapi();
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    let limits = state.config.limits.clone();
    Route::new()
        .nest("/", api)
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .data(state)
        .data(limits)
        .with(Tracing)
        .catch_all_error(|err: poem::Error| async move {
            if err.is_from_response() {
                return err.into_response();
            }
            problem::ProblemJson(Problem::from_poem(&err)).into_response()
        })
}
