//! The HTTP API: routes, bodies and errors, generated into an OpenAPI document by
//! poem-openapi (Swagger UI at `/docs`, the spec at `/openapi.json`).

mod allow;
mod body;
mod health;
mod observe;
mod problem;
mod scrape;
mod session_id;
mod tasks;

use std::sync::Arc;

use poem::http::{header, HeaderValue, StatusCode};
use poem::middleware::Tracing;
use poem::{get, Endpoint, EndpointExt, IntoResponse, Response, Route};
use poem_openapi::OpenApiService;

pub use problem::Problem;

use crate::broker::Publisher;
use crate::config::Config;
use crate::metrics::ServeMetrics;
use crate::store::{Results, Sessions};
use crate::waiters::Waiters;

/// What every handler reaches: config, stores, the publisher and the waiters.
#[derive(Clone)]
pub(crate) struct AppState {
    pub config: Arc<Config>,
    pub sessions: Sessions,
    pub results: Results,
    pub publisher: Publisher,
    pub waiters: Waiters,
    pub metrics: Arc<ServeMetrics>,
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

/// Every route, with problem-details errors for whatever no handler answered, each
/// request traced, logged with its ids and counted ([`observe`]).
pub fn routes(state: AppState) -> impl Endpoint {
    let api = openapi();
    let document = serde_json::from_str(&api.spec()).expect("the OpenAPI document is JSON");
    let allowed = allow::Allowed::from_spec(&document).with("/metrics", "GET, HEAD");
    let allowed = Arc::new(allowed);
    let observe = observe::Observe(state.metrics.clone());
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    let limits = state.config.limits.clone();
    Route::new()
        .nest("/", api)
        .at("/openapi.json", spec)
        .at("/metrics", get(scrape::metrics))
        .nest("/docs", docs)
        .data(state)
        .data(limits)
        .with(Tracing)
        .around(move |ep, req| {
            let allowed = allowed.clone();
            async move {
                let path = req.uri().path().to_owned();
                match ep.call(req).await {
                    Err(err) if err.status() == StatusCode::METHOD_NOT_ALLOWED => {
                        Ok(method_not_allowed(allowed.get(&path)))
                    }
                    other => other.map(IntoResponse::into_response),
                }
            }
        })
        .catch_all_error(|err: poem::Error| async move {
            if err.is_from_response() {
                return err.into_response();
            }
            problem::ProblemJson(Problem::from_poem(&err)).into_response()
        })
        .with(observe)
}

/// A 405 as problem details, with the `Allow` header RFC 9110 requires of it.
fn method_not_allowed(allow: Option<&str>) -> Response {
    let takes = allow.map_or(String::new(), |methods| format!(": it takes {methods}"));
    let detail = format!("this route does not take that method{takes}; see /docs for every route");
    let mut resp = problem::ProblemJson(Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        detail,
    ))
    .into_response();
    if let Some(value) = allow.and_then(|a| HeaderValue::from_str(a).ok()) {
        resp.headers_mut().insert(header::ALLOW, value);
    }
    resp
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn spec() -> Value {
        serde_json::from_str(&super::openapi().spec()).unwrap()
    }

    fn statuses(spec: &Value, path: &str, method: &str) -> Vec<String> {
        let mut s: Vec<String> = spec["paths"][path][method]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        s.sort();
        s
    }

    #[test]
    fn each_operation_documents_exactly_the_statuses_it_answers() {
        let spec = spec();
        assert_eq!(
            statuses(&spec, "/sync/sum", "post"),
            ["200", "202", "400", "413", "415", "422", "503"]
        );
        assert_eq!(
            statuses(&spec, "/async/post_task", "post"),
            ["200", "400", "413", "415", "422", "503"]
        );
        assert_eq!(
            statuses(&spec, "/async/get_task_result", "get"),
            ["200", "400", "404", "410", "503"]
        );
        assert_eq!(statuses(&spec, "/readyz", "get"), ["200", "503"]);
    }

    #[test]
    fn errors_are_documented_as_problem_details() {
        let spec = spec();
        let resp = &spec["paths"]["/sync/sum"]["post"]["responses"]["503"];
        assert!(
            resp["content"]["application/problem+json"].is_object(),
            "{resp}"
        );
        let headers = resp["headers"].as_object().unwrap();
        assert!(
            headers
                .keys()
                .any(|h| h.eq_ignore_ascii_case("retry-after")),
            "{resp}"
        );
    }

    #[test]
    fn the_422_names_both_result_limits() {
        let spec = spec();
        for path in ["/sync/sum", "/async/post_task"] {
            let description = &spec["paths"][path]["post"]["responses"]["422"]["description"];
            let description = description.as_str().unwrap();
            for key in ["limits.max_result_digits", "limits.max_result_bytes"] {
                assert!(description.contains(key), "{path}: {description}");
            }
        }
    }

    #[test]
    fn every_parameter_has_a_description_and_an_example() {
        let spec = spec();
        for (path, ops) in spec["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    let name = &p["name"];
                    assert!(p["description"].is_string(), "{method} {path} {name}");
                    let example = p.get("example").or_else(|| p["schema"].get("example"));
                    assert!(
                        example.is_some(),
                        "{method} {path} {name} has no example: {p}"
                    );
                }
            }
        }
    }

    #[test]
    fn session_id_is_a_required_parameter_as_the_server_treats_it() {
        let spec = spec();
        let params = &spec["paths"]["/async/get_task_result"]["get"]["parameters"];
        let session_id = params
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "session_id")
            .unwrap();
        assert_eq!(session_id["required"], true, "{session_id}");
        assert_eq!(session_id["in"], "query", "{session_id}");
    }
}
