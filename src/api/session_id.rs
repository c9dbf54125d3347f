//! The `session_id` parameter, in the query (`?session_id=`) or the path
//! (`/async/tasks/{session_id}`): read, checked and documented in one place, so every
//! error about it says how to pass one.

use poem::{Request, RequestBody};
use poem_openapi::registry::{MetaParamIn, MetaSchema, MetaSchemaRef};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};

use super::problem::ApiError;

/// How to pass a session id, for every error about one.
const USAGE: &str = "pass the session id that post_task returned as a positive integer, \
                     e.g. ?session_id=5813027361994815";

/// A session id from the query: a positive integer. A handler that takes one never
/// runs for a request without a valid one; the request is answered with a 400 that
/// says what was wrong and how to pass the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionId(pub i64);

/// A session id from the path, read and checked as [`SessionId`]. Named `Path`, and
/// used as `session_id::Path`: poem-openapi recognises path parameters by that name
/// (it binds them to the route's pattern under names of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Path(pub i64);

/// Positive, as `parse` requires, so a client (or a fuzzer) that reads the document
/// knows 0 and negative ids are refused.
fn schema() -> MetaSchemaRef {
    MetaSchemaRef::Inline(Box::new(MetaSchema {
        minimum: Some(1.0),
        ..MetaSchema::new_with_format("integer", "int64")
    }))
}

impl SessionId {
    /// Reads the parameter's first value, as poem-openapi reads a query parameter.
    fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        let Some(text) = value else {
            return Err(ApiError::bad_request(
                "invalid-session-id",
                format!("`session_id` is missing: {USAGE}"),
            ));
        };
        let id: i64 = text.parse().map_err(|_| {
            ApiError::bad_request(
                "invalid-parameter",
                format!("`session_id` is not an integer: {USAGE}"),
            )
        })?;
        if id <= 0 {
            return Err(ApiError::bad_request(
                "invalid-session-id",
                format!("`session_id` must be positive, not {id}: {USAGE}"),
            ));
        }
        Ok(Self(id))
    }
}

/// The `ApiExtractor` of a session id read from `$place` by `$read(request, name)`.
macro_rules! session_id_extractor {
    ($ty:ident, $place:ident, $read:expr) => {
        impl<'a> ApiExtractor<'a> for $ty {
            const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::Parameter];
            // Required, as the document says; a request without it still gets the 400
            // of `SessionId::parse` (this extractor answers it), not poem-openapi's.
            const PARAM_IS_REQUIRED: bool = true;

            type ParamType = i64;
            type ParamRawType = i64;

            fn param_in() -> Option<MetaParamIn> {
                Some(MetaParamIn::$place)
            }

            fn param_schema_ref() -> Option<MetaSchemaRef> {
                Some(schema())
            }

            fn param_raw_type(&self) -> Option<&i64> {
                Some(&self.0)
            }

            async fn from_request(
                request: &'a Request,
                _body: &mut RequestBody,
                param_opts: ExtractParamOptions<i64>,
            ) -> poem::Result<Self> {
                let value: Option<String> = $read(request, param_opts.name);
                let SessionId(id) = SessionId::parse(value.as_deref())?;
                Ok(Self(id))
            }
        }
    };
}

// Decoded as poem-openapi decodes the query for its own parameters.
session_id_extractor!(SessionId, Query, |request: &Request, name: &str| {
    let query: Vec<(String, String)> = request.params().unwrap_or_default();
    query.into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
});

session_id_extractor!(Path, Path, |request: &Request, name: &str| request
    .raw_path_param(name)
    .map(str::to_owned));

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(value: Option<&str>) -> (String, String) {
        match SessionId::parse(value) {
            Err(ApiError::BadRequest(p)) => (p.0.kind, p.0.detail),
            other => panic!("{value:?} gave {other:?}"),
        }
    }

    #[test]
    fn a_positive_integer_is_a_session_id() {
        assert_eq!(SessionId::parse(Some("7")).unwrap(), SessionId(7));
        assert_eq!(SessionId::parse(Some("+7")).unwrap(), SessionId(7));
    }

    #[test]
    fn every_bad_session_id_is_told_how_to_pass_one() {
        for (value, kind, lead) in [
            (None, "invalid-session-id", "`session_id` is missing"),
            (
                Some("0"),
                "invalid-session-id",
                "`session_id` must be positive, not 0",
            ),
            (
                Some("-1"),
                "invalid-session-id",
                "`session_id` must be positive, not -1",
            ),
            (
                Some("abc"),
                "invalid-parameter",
                "`session_id` is not an integer",
            ),
            (
                Some(""),
                "invalid-parameter",
                "`session_id` is not an integer",
            ),
            (
                Some("1.5"),
                "invalid-parameter",
                "`session_id` is not an integer",
            ),
            (
                Some("99999999999999999999"),
                "invalid-parameter",
                "`session_id` is not an integer",
            ),
        ] {
            let (got_kind, detail) = problem(value);
            assert_eq!(got_kind, format!("urn:sumsvc:problem:{kind}"), "{value:?}");
            assert_eq!(detail, format!("{lead}: {USAGE}"), "{value:?}");
        }
    }
}
