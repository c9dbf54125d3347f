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

/// Most sessions one request may name (`/async/events`).
pub const MOST_SESSIONS: usize = 100;

/// Session ids from the query, the parameter repeated (`?session_id=1&session_id=2`):
/// one to [`MOST_SESSIONS`] of them, each read and checked as [`SessionId`], duplicates
/// dropped, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionIds(pub Vec<i64>);

impl SessionIds {
    fn parse(values: &[&str]) -> Result<Self, ApiError> {
        if values.is_empty() {
            return Err(ApiError::bad_request(
                "invalid-session-id",
                format!("`session_id` is missing: {USAGE}, once per session"),
            ));
        }
        if values.len() > MOST_SESSIONS {
            return Err(ApiError::bad_request(
                "too-many-sessions",
                format!(
                    "{} sessions named: a request may name at most {MOST_SESSIONS}; split \
                     them among several requests",
                    values.len()
                ),
            ));
        }
        let mut ids = Vec::with_capacity(values.len());
        for value in values {
            let SessionId(id) = SessionId::parse(Some(value))?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(Self(ids))
    }
}

impl<'a> ApiExtractor<'a> for SessionIds {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::Parameter];
    const PARAM_IS_REQUIRED: bool = true;

    type ParamType = Vec<i64>;
    type ParamRawType = Vec<i64>;

    fn param_in() -> Option<MetaParamIn> {
        Some(MetaParamIn::Query)
    }

    fn param_schema_ref() -> Option<MetaSchemaRef> {
        Some(MetaSchemaRef::Inline(Box::new(MetaSchema {
            items: Some(Box::new(schema())),
            min_items: Some(1),
            max_items: Some(MOST_SESSIONS),
            ..MetaSchema::new("array")
        })))
    }

    fn param_raw_type(&self) -> Option<&Vec<i64>> {
        Some(&self.0)
    }

    async fn from_request(
        request: &'a Request,
        _body: &mut RequestBody,
        param_opts: ExtractParamOptions<Vec<i64>>,
    ) -> poem::Result<Self> {
        let query: Vec<(String, String)> = request.params().unwrap_or_default();
        let values: Vec<&str> = query
            .iter()
            .filter(|(name, _)| name == param_opts.name)
            .map(|(_, value)| value.as_str())
            .collect();
        Ok(Self::parse(&values)?)
    }
}

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
    fn a_list_of_session_ids_is_one_to_a_hundred_positive_integers() {
        assert_eq!(
            SessionIds::parse(&["3", "1", "3"]).unwrap(),
            SessionIds(vec![3, 1])
        );
        let many: Vec<String> = (1..=101).map(|i| i.to_string()).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(SessionIds::parse(&many[..100]).is_ok());
        for (values, lead) in [
            (&[][..], "`session_id` is missing"),
            (&many[..], "101 sessions named"),
            (&["1", "x"][..], "`session_id` is not an integer"),
            (&["0"][..], "`session_id` must be positive"),
        ] {
            match SessionIds::parse(values) {
                Err(ApiError::BadRequest(p)) => {
                    assert!(p.0.detail.starts_with(lead), "{}", p.0.detail)
                }
                other => panic!("{values:?} gave {other:?}"),
            }
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
