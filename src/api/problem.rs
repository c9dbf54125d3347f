//! Errors as RFC 9457 problem details (`application/problem+json`): every failure, from
//! a bad body to an unknown route, answers with `type`, `title`, `status` and a `detail`
//! that says what is wrong and what to do, and an `instance` that names the request:
//! every problem answered is logged with the same request id.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use std::marker::PhantomData;

use poem_openapi::registry::{MetaResponses, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiResponse, Object};
use serde::Serialize;

use super::current::request_id;
use crate::dependency::Unavailable;
use crate::sum::ArgsError;

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u32 = 1;

/// An RFC 9457 problem details object.
#[derive(Debug, Clone, Object, Serialize)]
#[oai(example)]
pub struct Problem {
    /// A URI that identifies the kind of problem; stable, for programs to match on.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this request and what to do about it.
    pub detail: String,
    /// This occurrence: `urn:sumsvc:request:<request id>`. The service logs the problem
    /// with the same `request_id` (and the request's `trace_id`): quote it when you
    /// report a problem.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

impl poem_openapi::types::Example for Problem {
    fn example() -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-args",
            "`args[2]` is not a JSON number: send numbers only, e.g. {\"args\": [1, 2.5]}",
        )
    }
}

impl Problem {
    /// A problem of kind `urn:sumsvc:problem:<slug>` titled by the status.
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:sumsvc:problem:{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            instance: None,
        }
    }

    /// Maps an error that did not come from our handlers (routing, extractors) to a problem.
    pub fn from_poem(err: &poem::Error) -> Self {
        use poem_openapi::error::{ContentTypeError, ParseParamError, ParseRequestPayloadError};
        let status = err.status();
        if let Some(e) = err.downcast_ref::<ParseParamError>() {
            return Self::new(
                StatusCode::BAD_REQUEST,
                "invalid-parameter",
                format!("parameter `{}` is invalid: {}", e.name, e.reason),
            );
        }
        if let Some(e) = err.downcast_ref::<ContentTypeError>() {
            return Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                format!("{e}: send the body as JSON with `Content-Type: application/json`"),
            );
        }
        if let Some(e) = err.downcast_ref::<ParseRequestPayloadError>() {
            return Self::new(StatusCode::BAD_REQUEST, "invalid-body", e.reason.clone());
        }
        match status {
            StatusCode::NOT_FOUND => Self::new(
                status,
                "not-found",
                "no such route: see /docs for the routes this service answers",
            ),
            s if s.is_server_error() => {
                tracing::error!(error = %err, "unexpected error");
                Self::new(
                    s,
                    "internal",
                    "the service failed unexpectedly; the error is logged",
                )
            }
            s => Self::new(s, "http", err.to_string()),
        }
    }
}

/// A [`Problem`] sent as `application/problem+json`. Boxed: every handler's error type
/// holds one, and results stay small on the success path.
#[derive(Debug, Clone)]
pub struct ProblemJson(pub Box<Problem>);

impl ProblemJson {
    pub fn of(problem: Problem) -> Self {
        Self(Box::new(problem))
    }
}

impl Payload for ProblemJson {
    const CONTENT_TYPE: &'static str = "application/problem+json";

    fn schema_ref() -> MetaSchemaRef {
        Problem::schema_ref()
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}

impl IntoResponse for ProblemJson {
    /// Names the request being served as the problem's `instance`, and logs the problem
    /// in the request's scope, so the two can be matched.
    fn into_response(self) -> Response {
        let mut problem = *self.0;
        if let Some(id) = request_id() {
            problem.instance = Some(format!("urn:sumsvc:request:{id}"));
        }
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(status = problem.status, problem = %problem.kind, detail = %problem.detail, "answered with a problem");
        } else {
            tracing::info!(status = problem.status, problem = %problem.kind, detail = %problem.detail, "answered with a problem");
        }
        let mut resp = Response::builder()
            .status(status)
            .content_type(Self::CONTENT_TYPE)
            .body(serde_json::to_vec(&problem).expect("problem serializes"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert("Retry-After", RETRY_AFTER_SECS.into());
        }
        resp
    }
}

/// Every error an operation answers with.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request is malformed: the body is not JSON, `args` is missing or not an
    /// array, an element is not a number (the detail names its index), or a parameter
    /// is invalid.
    #[oai(status = 400)]
    BadRequest(ProblemJson),
    /// No API key, or one that is unknown or revoked: send `Authorization: Bearer <key>`
    /// with a key from `sumsvc keys create NAME`.
    #[oai(status = 401)]
    Unauthorized(
        ProblemJson,
        /// `Bearer`, with `error="invalid_token"` when the key was refused (RFC 6750).
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
    /// No session has this id.
    #[oai(status = 404)]
    NotFound(ProblemJson),
    /// The body did not arrive whole within `http.body_timeout` of the headers; an
    /// HTTP/1.1 connection is closed.
    #[oai(status = 408)]
    RequestTimeout(ProblemJson),
    /// A request with the same `Idempotency-Key` is still being answered: retry after
    /// the `Retry-After` seconds to get its answer.
    #[oai(status = 409)]
    Conflict(
        ProblemJson,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        u32,
    ),
    /// The session's result was stored more than `tasks.result_ttl` ago and was
    /// deleted, or the session itself was removed, `tasks.session_retention` after
    /// that. (A task that has not run yet is pending, however long it waits.)
    #[oai(status = 410)]
    Gone(ProblemJson),
    /// The body is larger than `limits.max_body_bytes`, or `args` holds more than
    /// `limits.max_items` numbers.
    #[oai(status = 413)]
    PayloadTooLarge(ProblemJson),
    /// The body is not sent as `application/json`.
    #[oai(status = 415)]
    // Answered by the body extractor before a handler runs; declared so that the
    // OpenAPI document lists it.
    #[allow(dead_code)]
    UnsupportedMediaType(ProblemJson),
    /// The exact sum would need more than `limits.max_result_digits` significant digits,
    /// or its written text would be longer than `limits.max_result_bytes` bytes; or the
    /// `Idempotency-Key` was sent with another request before.
    #[oai(status = 422)]
    Unprocessable(ProblemJson),
    /// The API key made more requests than `auth.rate` (with bursts of `auth.burst`)
    /// allows, or, for a request that waits for a result (a sync request, a long poll, a
    /// stream), has `auth.max_sync_waiters` waiting already.
    /// Retry after the `Retry-After` seconds.
    #[oai(status = 429)]
    TooManyRequests(
        ProblemJson,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        u32,
    ),
    /// A dependency (PostgreSQL, RabbitMQ or Redis) is unreachable or failing (for a
    /// sync request, Redis refusing writes too), no worker consumes the task queue, the
    /// request bodies being read at once fill `limits.body_budget_bytes`, or, for a
    /// request that waits for a result, `limits.max_sync_waiters` requests wait already.
    /// Retry after the `Retry-After` seconds.
    #[oai(status = 503)]
    Unavailable(
        ProblemJson,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        u32,
    ),
}

/// One constructor per status: each pairs its variant with its status, so a call site
/// names the status once.
impl ApiError {
    pub fn bad_request(slug: &str, detail: impl Into<String>) -> Self {
        Self::BadRequest(problem(StatusCode::BAD_REQUEST, slug, detail))
    }

    /// A 401 with its `WWW-Authenticate` challenge.
    pub fn unauthorized(slug: &str, detail: impl Into<String>, challenge: String) -> Self {
        Self::Unauthorized(problem(StatusCode::UNAUTHORIZED, slug, detail), challenge)
    }

    pub fn not_found(slug: &str, detail: impl Into<String>) -> Self {
        Self::NotFound(problem(StatusCode::NOT_FOUND, slug, detail))
    }

    pub fn request_timeout(slug: &str, detail: impl Into<String>) -> Self {
        Self::RequestTimeout(problem(StatusCode::REQUEST_TIMEOUT, slug, detail))
    }

    /// A 409 that tells the client to retry after [`RETRY_AFTER_SECS`].
    pub fn conflict(slug: &str, detail: impl Into<String>) -> Self {
        Self::Conflict(
            problem(StatusCode::CONFLICT, slug, detail),
            RETRY_AFTER_SECS,
        )
    }

    pub fn gone(slug: &str, detail: impl Into<String>) -> Self {
        Self::Gone(problem(StatusCode::GONE, slug, detail))
    }

    pub fn payload_too_large(slug: &str, detail: impl Into<String>) -> Self {
        Self::PayloadTooLarge(problem(StatusCode::PAYLOAD_TOO_LARGE, slug, detail))
    }

    pub fn unprocessable(slug: &str, detail: impl Into<String>) -> Self {
        Self::Unprocessable(problem(StatusCode::UNPROCESSABLE_ENTITY, slug, detail))
    }

    /// A 429 that tells the client to retry after `retry_after` seconds.
    pub fn too_many_requests(slug: &str, detail: impl Into<String>, retry_after: u32) -> Self {
        Self::TooManyRequests(
            problem(StatusCode::TOO_MANY_REQUESTS, slug, detail),
            retry_after,
        )
    }

    /// A 503 that tells the client to retry after [`RETRY_AFTER_SECS`].
    pub fn unavailable(slug: &str, detail: impl Into<String>) -> Self {
        Self::Unavailable(
            problem(StatusCode::SERVICE_UNAVAILABLE, slug, detail),
            RETRY_AFTER_SECS,
        )
    }
}

impl ApiError {
    /// The same error, its detail led by `context` (`tasks[3]: ...`).
    pub fn within(mut self, context: &str) -> Self {
        let p = self.details();
        p.0.detail = format!("{context}: {}", p.0.detail);
        self
    }

    /// The problem details, for an answer that carries them elsewhere than as the body
    /// (an event of a stream).
    pub fn problem(mut self) -> Problem {
        (*self.details().0).clone()
    }

    /// The problem details every variant carries.
    fn details(&mut self) -> &mut ProblemJson {
        let (Self::BadRequest(p)
        | Self::Unauthorized(p, _)
        | Self::NotFound(p)
        | Self::RequestTimeout(p)
        | Self::Conflict(p, _)
        | Self::Gone(p)
        | Self::PayloadTooLarge(p)
        | Self::UnsupportedMediaType(p)
        | Self::Unprocessable(p)
        | Self::TooManyRequests(p, _)
        | Self::Unavailable(p, _)) = self;
        p
    }
}

fn problem(status: StatusCode, slug: &str, detail: impl Into<String>) -> ProblemJson {
    ProblemJson::of(Problem::new(status, slug, detail))
}

impl From<Unavailable> for ApiError {
    fn from(e: Unavailable) -> Self {
        Self::unavailable(
            "dependency-unavailable",
            format!("{e}. The request was not completed; retry shortly."),
        )
    }
}

impl From<ArgsError> for ApiError {
    fn from(e: ArgsError) -> Self {
        let detail = e.to_string();
        match e {
            ArgsError::TooManyItems { .. } => Self::payload_too_large("too-many-items", detail),
            ArgsError::TooManyDigits { .. } | ArgsError::ExponentOutOfRange { .. } => {
                Self::unprocessable("result-too-long", detail)
            }
            ArgsError::ResultTooLong { .. } => Self::unprocessable(
                "result-too-long",
                format!(
                    "{detail} (limits.max_result_bytes). An integer sum is written with all its \
                     zeros: write an argument with an exponent (1e6, not 1000000) to get the \
                     sum written with one"
                ),
            ),
            _ => Self::bad_request("invalid-args", detail),
        }
    }
}

/// The statuses one operation can fail with, for its documentation.
pub trait Statuses: Send {
    const LIST: &'static [u16];
}

/// An [`ApiError`] documented with only the statuses `S` of one operation.
pub struct OpError<S>(pub ApiError, PhantomData<fn() -> S>);

impl<S: Statuses> ApiResponse for OpError<S> {
    fn meta() -> MetaResponses {
        let mut meta = ApiError::meta();
        meta.responses
            .retain(|r| r.status.is_some_and(|s| S::LIST.contains(&s)));
        meta
    }

    fn register(registry: &mut Registry) {
        ApiError::register(registry);
    }
}

impl<S> IntoResponse for OpError<S> {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

impl<S> From<OpError<S>> for poem::Error {
    fn from(e: OpError<S>) -> Self {
        e.0.into()
    }
}

impl<S> From<ApiError> for OpError<S> {
    fn from(e: ApiError) -> Self {
        Self(e, PhantomData)
    }
}

impl<S> From<Unavailable> for OpError<S> {
    fn from(e: Unavailable) -> Self {
        Self(e.into(), PhantomData)
    }
}

impl<S> From<ArgsError> for OpError<S> {
    fn from(e: ArgsError) -> Self {
        Self(e.into(), PhantomData)
    }
}
