//! API keys at the HTTP edge: the bearer scheme an operation takes by taking a
//! [`Caller`], the 401 and 429 answers, and the OpenAPI document of an open server.
//!
//! An operation is protected because it takes a `Caller`, so the probes, the docs and
//! the spec, which take none, are public by construction rather than by a list of
//! paths kept in step with the routes. The `Caller` is the first thing an operation
//! extracts: a refused request is answered before its body is read.

use std::collections::HashMap;

use poem::endpoint::BoxEndpoint;
use poem::http::Method;
use poem::{Request, RequestBody};
use poem_openapi::registry::{MetaApi, MetaSecurityScheme, Registry};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions, OpenApi};

use super::current;
use super::problem::ApiError;
use super::AppState;
use crate::auth::{Caller, Quota, Refused};

/// The security scheme's name in the OpenAPI document.
const SCHEME: &str = "ApiKey";

/// The challenge of every 401 (RFC 6750).
const CHALLENGE: &str = r#"Bearer realm="sumsvc""#;

/// What to do without a key, for every 401.
const GET_A_KEY: &str = "an operator creates keys with `sumsvc keys create NAME`";

impl<'a> ApiExtractor<'a> for Caller {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        registry.create_security_scheme(
            SCHEME,
            MetaSecurityScheme {
                ty: "http",
                description: Some(
                    "An API key, from `sumsvc keys create NAME`, sent as \
                     `Authorization: Bearer <key>`.",
                ),
                name: None,
                key_in: None,
                scheme: Some("bearer"),
                bearer_format: Some("sumsvc_ and 64 hex digits"),
                flows: None,
                openid_connect_url: None,
            },
        );
    }

    fn security_schemes() -> Vec<&'static str> {
        vec![SCHEME]
    }

    async fn from_request(
        request: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        let state = request
            .data::<AppState>()
            .expect("the routes carry the state");
        let admitted = state.access.admit(bearer_token(request)).await;
        // The key's budget goes out with the answer, refused or not.
        match &admitted {
            Ok(caller) => current::set_quota(caller.quota()),
            Err(Refused::TooFast { quota, .. }) => current::set_quota(Some(*quota)),
            Err(_) => {}
        }
        admitted.map_err(|refused| ApiError::from(refused).into())
    }
}

/// The token of an `Authorization: Bearer <token>` header; None for a request without
/// one, or with another scheme. The scheme's name is case-insensitive (RFC 9110).
fn bearer_token(request: &Request) -> Option<&str> {
    let value = request.header("authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::NoKey => Self::unauthorized(
                "api-key-missing",
                format!(
                    "this route needs an API key, sent as `Authorization: Bearer <key>`; \
                     {GET_A_KEY}"
                ),
                CHALLENGE.to_owned(),
            ),
            Refused::UnknownKey => Self::unauthorized(
                "api-key-refused",
                format!(
                    "the API key is unknown or revoked: check that it was copied whole \
                     (it starts with sumsvc_), or use a new one; {GET_A_KEY}"
                ),
                format!(
                    r#"{CHALLENGE}, error="invalid_token", error_description="unknown or revoked key""#
                ),
            ),
            Refused::Unavailable(e) => e.into(),
            Refused::TooFast {
                key,
                retry_after,
                quota: Quota { rate, burst, .. },
            } => {
                tracing::debug!(%key, "rate limited");
                // Whole seconds, rounded up: a client that waits as told finds a request
                // in the budget.
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u32;
                Self::too_many_requests(
                    "rate-limited",
                    format!(
                        "API key {key:?} made more requests than auth.rate allows \
                         ({rate} a second, in bursts of up to {burst}, auth.burst): \
                         retry after {secs}s"
                    ),
                    secs,
                )
            }
            Refused::TooManyWaiting { key, max } => {
                tracing::debug!(%key, "sync waiters at their limit");
                Self::too_many_requests(
                    "too-many-sync-waiters",
                    format!(
                        "API key {key:?} has {max} requests waiting for results already \
                         (sync requests and long polls, auth.max_sync_waiters): retry when \
                         one has finished, or poll without `Prefer: wait`"
                    ),
                    1,
                )
            }
        }
    }
}

/// An API as an open server documents it: no security scheme and no security
/// requirement, and none of the statuses only keys mode answers (401, 429). The
/// operations are the same; they admit every request.
pub struct Open<T>(pub T);

impl<T: OpenApi> OpenApi for Open<T> {
    fn meta() -> Vec<MetaApi> {
        let mut apis = T::meta();
        let operations = apis
            .iter_mut()
            .flat_map(|api| &mut api.paths)
            .flat_map(|path| &mut path.operations);
        for operation in operations.filter(|op| !op.security.is_empty()) {
            operation.security.clear();
            operation
                .responses
                .responses
                .retain(|r| !matches!(r.status, Some(401 | 429)));
        }
        apis
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
        registry.security_schemes.remove(SCHEME);
    }

    fn add_routes(self, route_table: &mut HashMap<String, HashMap<Method, BoxEndpoint<'static>>>) {
        self.0.add_routes(route_table);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_of(header: Option<&str>) -> Option<String> {
        let mut request = Request::builder();
        if let Some(value) = header {
            request = request.header("authorization", value);
        }
        bearer_token(&request.finish()).map(str::to_owned)
    }

    #[test]
    fn the_token_is_read_from_a_bearer_authorization_only() {
        assert_eq!(
            token_of(Some("Bearer sumsvc_ab")).as_deref(),
            Some("sumsvc_ab")
        );
        assert_eq!(
            token_of(Some("bearer  sumsvc_ab ")).as_deref(),
            Some("sumsvc_ab")
        );
        for other in [
            None,
            Some("Basic dXNlcjpwdw=="),
            Some("Bearer"),
            Some("Bearer  "),
        ] {
            assert_eq!(token_of(other), None, "{other:?}");
        }
    }

    #[test]
    fn a_refused_key_is_told_apart_from_a_missing_one_in_the_challenge() {
        let (missing, refused) = match (Refused::NoKey.into(), Refused::UnknownKey.into()) {
            (ApiError::Unauthorized(_, a), ApiError::Unauthorized(_, b)) => (a, b),
            other => panic!("{other:?}"),
        };
        assert_eq!(missing, r#"Bearer realm="sumsvc""#);
        assert!(refused.starts_with(r#"Bearer realm="sumsvc", error="invalid_token""#));
    }

    #[test]
    fn retry_after_is_rounded_up_to_whole_seconds() {
        let refused = Refused::TooFast {
            key: "ci".into(),
            retry_after: std::time::Duration::from_millis(1200),
            quota: Quota {
                rate: 1,
                burst: 1,
                remaining: 0,
                full_in: std::time::Duration::from_millis(1200),
            },
        };
        match ApiError::from(refused) {
            ApiError::TooManyRequests(problem, secs) => {
                assert_eq!(secs, 2);
                assert!(
                    problem.0.detail.contains("auth.rate"),
                    "{}",
                    problem.0.detail
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
