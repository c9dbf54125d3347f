//! The HTTP API: routes, bodies and errors, generated into an OpenAPI document by
//! poem-openapi (Swagger UI at `/docs`, the spec at `/openapi.json`).

mod allow;
mod auth;
mod body;
mod bulk;
mod current;
mod events;
mod examples;
mod health;
mod idempotency;
mod intake;
mod links;
mod observe;
mod prefer;
mod problem;
mod scrape;
mod session_id;
mod sessions;
mod tasks;

use std::sync::Arc;

use poem::endpoint::{make_sync, BoxEndpoint};
use poem::http::{header, HeaderValue, StatusCode};
use poem::{get, EndpointExt, IntoResponse, Response, Route};
use poem_openapi::{OpenApi, OpenApiService, Tags};

pub use problem::Problem;

use crate::auth::Access;
use crate::broker::Publisher;
use crate::config::{AuthMode, Config};
use crate::metrics::ServeMetrics;
use crate::store::idempotency::IdempotencyKeys;
use crate::store::{MarkWriter, Results, Sessions};
use crate::waiters::Waiters;

/// What every handler reaches: config, who may call, stores, the publisher and the
/// waiters.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub access: Access,
    pub sessions: Sessions,
    pub results: Results,
    /// Marks submitted tasks queued, in batches.
    pub marks: MarkWriter,
    pub idempotency: IdempotencyKeys,
    pub publisher: Publisher,
    pub waiters: Waiters,
    pub metrics: Arc<ServeMetrics>,
}

#[derive(Tags)]
enum ApiTags {
    /// Sum and wait for the result in the same request.
    Sync,
    /// Submit a sum, then poll for its result, wait for it, or cancel it.
    Async,
}

/// The operations that take an API key in keys mode.
type Keyed = (
    tasks::TasksApi,
    sessions::SessionsApi,
    events::EventsApi,
    bulk::BulkApi,
);

fn keyed() -> Keyed {
    (
        tasks::TasksApi,
        sessions::SessionsApi,
        events::EventsApi,
        bulk::BulkApi,
    )
}

/// The OpenAPI service of a server with `auth.mode = keys`: every operation but the
/// probes takes an API key.
pub fn openapi() -> OpenApiService<(Keyed, health::HealthApi), ()> {
    service((keyed(), health::HealthApi), AuthMode::Keys)
}

/// The OpenAPI service of a server with `auth.mode = open`: the same operations,
/// documented without keys.
fn openapi_open() -> OpenApiService<(auth::Open<Keyed>, health::HealthApi), ()> {
    service((auth::Open(keyed()), health::HealthApi), AuthMode::Open)
}

fn service<T: OpenApi>(api: T, mode: AuthMode) -> OpenApiService<T, ()> {
    let access = match mode {
        AuthMode::Open => {
            "This server runs with `auth.mode = open`: no API key is needed. (With \
             `auth.mode = keys` every operation but the health probes takes one, as a \
             bearer token.)"
        }
        AuthMode::Keys => {
            "Every operation but the health probes needs an API key, sent as \
             `Authorization: Bearer <key>` (Authorize, here); an operator creates keys \
             with `sumsvc keys create NAME`. A missing, unknown or revoked key gets 401. \
             Each key may make `auth.rate` requests a second and have \
             `auth.max_sync_waiters` requests waiting for results (sync requests, long \
             polls), across every server; beyond, 429 with `Retry-After`. Every answer to a keyed request tells the key's \
             budget in the `RateLimit-Policy` and `RateLimit` fields (IETF \
             draft-ietf-httpapi-ratelimit-headers): `\"key\";q=200;w=2` is a quota of 200 \
             requests refilled in 2 s, `\"key\";r=150;t=1` says 150 may go at once now and \
             the quota is whole again in 1 s."
        }
    };
    OpenApiService::new(api, "sumsvc", env!("CARGO_PKG_VERSION")).description(format!(
        "Exact sums of number lists through a job queue. Sum synchronously with \
         `POST /sync/sum`, or submit with `POST /async/post_task` and poll \
         `GET /async/get_task_result` (or wait for it with `Prefer: wait=N`, stream results \
         with `GET /async/events`, cancel with `DELETE /async/tasks/{{id}}`); in bulk, \
         `POST /sync/sums`, `POST /async/post_tasks` and `POST /async/get_task_results`. \
         Errors are RFC 9457 problem details \
         (`application/problem+json`) whose `detail` says what to do. A submit sent \
         again with the same `Idempotency-Key` gets the first answer rather than a \
         second task.\n\n{access}"
    ))
}

/// The OpenAPI document as served: poem-openapi's, with the [`links`] it cannot declare.
pub fn document<T: OpenApi>(api: &OpenApiService<T, ()>) -> serde_json::Value {
    let mut document = serde_json::from_str(&api.spec()).expect("the OpenAPI document is JSON");
    links::add(&mut document);
    document
}

/// Swagger UI's page showing `document`. poem-openapi's page embeds the document it
/// generated, verbatim; the served one takes its place, so `/docs` and `/openapi.json`
/// agree.
pub fn swagger_ui_html<T: OpenApi>(api: &OpenApiService<T, ()>, document: &str) -> String {
    let generated = api.spec();
    let html = api.swagger_ui_html();
    assert!(html.contains(&generated), "Swagger UI embeds the document");
    html.replacen(&generated, document, 1)
}

/// Every route, documented as `auth.mode` has them answer, with problem-details errors
/// for whatever no handler answered, each request traced, logged with its ids and
/// counted ([`observe`]).
pub fn routes(state: AppState) -> BoxEndpoint<'static> {
    match state.config.auth.mode {
        AuthMode::Open => routes_of(openapi_open(), state),
        AuthMode::Keys => routes_of(openapi(), state),
    }
}

fn routes_of<T: OpenApi + 'static>(
    api: OpenApiService<T, ()>,
    state: AppState,
) -> BoxEndpoint<'static> {
    let document = document(&api);
    let allowed = allow::Allowed::from_spec(&document).with("/metrics", "GET, HEAD");
    let document = serde_json::to_string_pretty(&document).expect("the document serializes");
    let html = swagger_ui_html(&api, &document);
    let docs = Route::new().at("/", make_sync(move |_| poem::web::Html(html.clone())));
    let spec = make_sync(move |_| {
        Response::builder()
            .content_type("application/json")
            .body(document.clone())
    });
    let intake = intake::Intake::new(&state.config);
    let observe = observe::Observe::new(state, intake, Unanswered { allowed });
    Route::new()
        .nest("/", api)
        .at("/openapi.json", spec)
        .at("/metrics", get(scrape::metrics))
        .nest("/docs", docs)
        .with(observe)
        .boxed()
}

/// How an error that no handler answered reaches the client: a 405 names the methods
/// its route takes, a response poem made already goes as it is, and anything else goes
/// as problem details. [`observe`] applies it, so that no layer of its own stands
/// between the server and the routes.
pub struct Unanswered {
    allowed: allow::Allowed,
}

impl Unanswered {
    pub fn answer(&self, err: poem::Error, path: &str) -> Response {
        if err.status() == StatusCode::METHOD_NOT_ALLOWED {
            method_not_allowed(self.allowed.get(path))
        } else if err.is_from_response() {
            err.into_response()
        } else {
            problem::ProblemJson::of(Problem::from_poem(&err)).into_response()
        }
    }
}

/// A 405 as problem details, with the `Allow` header RFC 9110 requires of it.
fn method_not_allowed(allow: Option<&str>) -> Response {
    let takes = allow.map_or(String::new(), |methods| format!(": it takes {methods}"));
    let detail = format!("this route does not take that method{takes}; see /docs for every route");
    let mut resp = problem::ProblemJson::of(Problem::new(
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

    use crate::config::AuthMode;

    /// The document of a server in keys mode, which documents every status.
    fn spec() -> Value {
        spec_of(AuthMode::Keys)
    }

    fn spec_of(mode: AuthMode) -> Value {
        let text = match mode {
            AuthMode::Open => super::openapi_open().spec(),
            AuthMode::Keys => super::openapi().spec(),
        };
        serde_json::from_str(&text).unwrap()
    }

    /// The operations that take an API key in keys mode.
    const PROTECTED: [(&str, &str); 9] = [
        ("/async/events", "get"),
        ("/async/get_task_results", "post"),
        ("/async/post_tasks", "post"),
        ("/sync/sums", "post"),
        ("/sync/sum", "post"),
        ("/async/post_task", "post"),
        ("/async/get_task_result", "get"),
        ("/async/tasks/{session_id}", "get"),
        ("/async/tasks/{session_id}", "delete"),
    ];

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
            ["200", "202", "400", "401", "408", "409", "413", "415", "422", "429", "503"]
        );
        assert_eq!(
            statuses(&spec, "/async/post_task", "post"),
            ["200", "400", "401", "408", "409", "413", "415", "422", "429", "503"]
        );
        assert_eq!(
            statuses(&spec, "/async/get_task_result", "get"),
            ["200", "400", "401", "404", "410", "429", "503"]
        );
        assert_eq!(
            statuses(&spec, "/async/tasks/{session_id}", "get"),
            ["200", "400", "401", "404", "410", "429", "503"]
        );
        assert_eq!(
            statuses(&spec, "/async/tasks/{session_id}", "delete"),
            ["200", "400", "401", "404", "409", "410", "429", "503"]
        );
        assert_eq!(
            statuses(&spec, "/async/events", "get"),
            ["200", "204", "400", "401", "429", "503"]
        );
        assert_eq!(
            statuses(&spec, "/async/get_task_results", "post"),
            ["200", "400", "401", "408", "413", "415", "429", "503"]
        );
        let body = &spec["paths"]["/async/get_task_results"]["post"]["requestBody"];
        assert_eq!(body["required"], true, "{body}");
        assert_eq!(
            body["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/SessionList"
        );
        assert_eq!(statuses(&spec, "/readyz", "get"), ["200", "503"]);
    }

    #[test]
    fn an_open_server_documents_no_401_or_429() {
        let spec = spec_of(AuthMode::Open);
        assert_eq!(
            statuses(&spec, "/sync/sum", "post"),
            ["200", "202", "400", "408", "409", "413", "415", "422", "503"]
        );
        assert_eq!(
            statuses(&spec, "/async/post_task", "post"),
            ["200", "400", "408", "409", "413", "415", "422", "503"]
        );
        assert_eq!(
            statuses(&spec, "/async/get_task_result", "get"),
            ["200", "400", "404", "410", "503"]
        );
    }

    #[test]
    fn with_keys_every_operation_but_the_probes_takes_the_bearer_scheme() {
        let spec = spec();
        let scheme = &spec["components"]["securitySchemes"]["ApiKey"];
        assert_eq!(scheme["type"], "http", "{scheme}");
        assert_eq!(scheme["scheme"], "bearer", "{scheme}");
        for (path, method) in PROTECTED {
            let op = &spec["paths"][path][method];
            assert_eq!(
                op["security"],
                serde_json::json!([{"ApiKey": []}]),
                "{path}"
            );
            for (status, header) in [("401", "www-authenticate"), ("429", "retry-after")] {
                let headers = op["responses"][status]["headers"].as_object().unwrap();
                assert!(
                    headers.keys().any(|h| h.eq_ignore_ascii_case(header)),
                    "{path} {status}: {headers:?}"
                );
            }
        }
        for path in ["/healthz", "/readyz"] {
            assert!(
                spec["paths"][path]["get"].get("security").is_none(),
                "{path}"
            );
        }
        let description = spec["info"]["description"].as_str().unwrap();
        assert!(
            description.contains("Authorization: Bearer"),
            "{description}"
        );
    }

    #[test]
    fn an_open_server_documents_no_key_and_says_so() {
        let spec = spec_of(AuthMode::Open);
        assert!(
            spec["components"].get("securitySchemes").is_none(),
            "{}",
            spec["components"]
        );
        for (path, method) in PROTECTED {
            let op = &spec["paths"][path][method];
            assert!(op.get("security").is_none(), "{path}: {op}");
        }
        let description = spec["info"]["description"].as_str().unwrap();
        assert!(description.contains("auth.mode = open"), "{description}");
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
    fn the_body_limits_are_named_where_they_change_the_answer() {
        let spec = spec();
        for path in ["/sync/sum", "/async/post_task"] {
            let responses = &spec["paths"][path]["post"]["responses"];
            for (status, key) in [
                ("408", "http.body_timeout"),
                ("413", "limits.max_body_bytes"),
                ("503", "limits.body_budget_bytes"),
            ] {
                let description = responses[status]["description"].as_str().unwrap();
                assert!(description.contains(key), "{path} {status}: {description}");
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
                    if name == "Idempotency-Key" {
                        // An example key is one every client would copy (Swagger UI
                        // fills it in), and a key is for one request: none is given.
                        assert!(p.get("example").is_none(), "{p}");
                        continue;
                    }
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
    fn a_result_not_there_yet_is_documented_as_null() {
        // Answers carry `"result": null` until the sum is done, as the original's did.
        let spec = spec();
        for schema in ["Pending", "TaskResult"] {
            let result = &spec["components"]["schemas"][schema]["properties"]["result"];
            assert_eq!(result["anyOf"][0]["type"], "number", "{schema}: {result}");
            assert_eq!(result["nullable"], true, "{schema}: {result}");
        }
    }

    #[test]
    fn a_result_is_documented_as_a_number_or_with_numbers_string_its_text() {
        let spec = spec();
        let result = &spec["components"]["schemas"]["SumResult"]["properties"]["result"];
        let kinds: Vec<&Value> = result["anyOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| &s["type"])
            .collect();
        assert_eq!(kinds, ["number", "string"], "{result}");
        for (path, method) in [("/sync/sum", "post"), ("/async/get_task_result", "get")] {
            let params = spec["paths"][path][method]["parameters"]
                .as_array()
                .unwrap();
            let numbers = params.iter().find(|p| p["name"] == "numbers").unwrap();
            assert_eq!(numbers["in"], "query", "{path}");
            assert_eq!(
                numbers["schema"]["allOf"][0]["$ref"], "#/components/schemas/Numbers",
                "{path}: {numbers}"
            );
        }
        assert_eq!(
            spec["components"]["schemas"]["Numbers"]["enum"],
            serde_json::json!(["number", "string"])
        );
    }

    #[test]
    fn a_dependency_state_requires_only_what_every_answer_has() {
        // `error`, `warnings` and `since` are left out when there is nothing to say.
        let spec = spec();
        let state = &spec["components"]["schemas"]["DependencyState"];
        assert_eq!(state["required"], serde_json::json!(["status"]), "{state}");
    }

    #[test]
    fn session_id_is_a_required_positive_parameter_as_the_server_treats_it() {
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
        // Positive, as the server checks: a fuzzer sends 0 and below as invalid input.
        assert_eq!(session_id["schema"]["type"], "integer", "{session_id}");
        assert_eq!(session_id["schema"]["minimum"], 1.0, "{session_id}");
    }
}
