//! Request and response bodies that keep numbers as their JSON text.
//!
//! poem-openapi's `Json<T>` goes through `serde_json::Value` and `f64`, which rounds
//! integers above 2^53 and drops infinities. The sum request is therefore parsed here
//! straight from the body bytes (read within the bounds of [`super::intake`], checked
//! by [`crate::sum::check`])
//! and results are written from their exact text by [`ExactJson`].

use std::borrow::Cow;

use poem::http::StatusCode;
use poem::{IntoResponse, Request, RequestBody, Response};
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::Object;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::intake::{Body, Intake};
use super::problem::ApiError;
use crate::budget::Share;
use crate::sum;

/// A JSON number carried as the exact text that was written or computed.
#[derive(Debug, Clone)]
pub struct ExactNumber(pub Box<RawValue>);

impl Serialize for ExactNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl Type for ExactNumber {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "number".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            description: Some(
                "A JSON number, exact: integers of any size, decimals of any length.",
            ),
            ..MetaSchema::new("number")
        }))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ToJSON for ExactNumber {
    /// Only the generated documentation (examples) goes through here; responses are
    /// written from the exact text by [`ExactJson`].
    fn to_json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.0.get()).ok()
    }
}

impl ParseFromJSON for ExactNumber {
    fn parse_from_json(value: Option<serde_json::Value>) -> ParseResult<Self> {
        match value {
            Some(v @ serde_json::Value::Number(_)) => Ok(Self(
                RawValue::from_string(v.to_string()).expect("a number is JSON"),
            )),
            other => Err(poem_openapi::types::ParseError::expected_type(
                other.unwrap_or_default(),
            )),
        }
    }
}

/// A JSON number's text, as a string schema's pattern.
const NUMBER_TEXT: &str = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$";

/// How a response writes its numbers: the `numbers` query parameter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum Numbers {
    /// As JSON numbers, exact: the default.
    #[default]
    Number,
    /// As JSON strings of the same text, e.g. `"3.4e308"`: for JavaScript, or Python's
    /// `json` without `parse_float=Decimal`, which read a number into a double and
    /// round it (or make it infinite).
    String,
}

/// A result as a response writes it: a JSON number, exact; or, when the request asked
/// `numbers=string`, a JSON string of the same text.
#[derive(Debug, Clone)]
pub struct ResultNumber(Box<RawValue>);

impl Serialize for ResultNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl Type for ResultNumber {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "result".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        let string = MetaSchema {
            description: Some("The number's text, when the request asked `numbers=string`."),
            pattern: Some(NUMBER_TEXT.to_owned()),
            ..MetaSchema::new("string")
        };
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            description: Some(
                "A JSON number, exact: integers of any size, decimals of any length; or, with \
                 `numbers=string`, a JSON string holding the same text, for clients whose JSON \
                 reader rounds numbers to doubles.",
            ),
            any_of: vec![
                MetaSchemaRef::Inline(Box::new(MetaSchema::new("number"))),
                MetaSchemaRef::Inline(Box::new(string)),
            ],
            ..MetaSchema::ANY
        }))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ToJSON for ResultNumber {
    /// Only the generated documentation (examples) goes through here.
    fn to_json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.0.get()).ok()
    }
}

impl ParseFromJSON for ResultNumber {
    fn parse_from_json(value: Option<serde_json::Value>) -> ParseResult<Self> {
        ExactNumber::parse_from_json(value)
            .map(|n| Self(n.0))
            .map_err(|e| e.propagate())
    }
}

impl ResultNumber {
    /// `text`, a computed sum, written as `numbers` asks.
    pub fn written(text: Box<RawValue>, numbers: Numbers) -> Self {
        match numbers {
            Numbers::Number => Self(text),
            Numbers::String => {
                let text = serde_json::to_string(text.get()).expect("text serializes");
                Self(RawValue::from_string(text).expect("a string is JSON"))
            }
        }
    }

    /// For documentation examples: a number an `f64` shows as written.
    pub fn example(text: &str) -> Self {
        Self(RawValue::from_string(text.to_owned()).expect("example is JSON"))
    }
}

impl ExactNumber {
    /// For documentation examples; `text` must be a JSON number that an `f64` shows
    /// as written, since examples are rendered through [`ToJSON`].
    pub fn example(text: &str) -> Self {
        Self(RawValue::from_string(text.to_owned()).expect("example is JSON"))
    }
}

/// A response body serialized with serde from exact text, documented by `T`'s schema:
/// a `T`, or the text of one kept from an earlier answer (an idempotent replay).
pub struct ExactJson<T>(Inner<T>);

enum Inner<T> {
    Value(T),
    Text(String),
}

impl<T> ExactJson<T> {
    pub fn new(value: T) -> Self {
        Self(Inner::Value(value))
    }

    /// A body written before, as it was.
    pub fn kept(text: String) -> Self {
        Self(Inner::Text(text))
    }
}

impl<T: Serialize> ExactJson<T> {
    /// The body's text, as it goes out.
    pub fn text(&self) -> String {
        match &self.0 {
            Inner::Value(value) => serde_json::to_string(value).expect("response serializes"),
            Inner::Text(text) => text.clone(),
        }
    }
}

impl<T: Type + Send> Payload for ExactJson<T> {
    const CONTENT_TYPE: &'static str = "application/json";

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Serialize + Send> IntoResponse for ExactJson<T> {
    fn into_response(self) -> Response {
        let body = match self.0 {
            Inner::Value(value) => serde_json::to_vec(&value).expect("response serializes"),
            Inner::Text(text) => text.into_bytes(),
        };
        Response::builder()
            .content_type("application/json")
            .body(body)
    }
}

/// The body of `POST /sync/sum` and `POST /async/post_task`.
#[derive(Debug, Object)]
#[oai(example)]
pub struct SumArgs {
    /// The numbers to add: 0 to `limits.max_items` JSON numbers, summed exactly as
    /// written. If any has a fraction or an exponent, so does the result.
    pub args: Vec<ExactNumber>,
}

impl poem_openapi::types::Example for SumArgs {
    fn example() -> Self {
        Self {
            args: ["1", "2.5", "0.1", "0.2"]
                .into_iter()
                .map(ExactNumber::example)
                .collect(),
        }
    }
}

/// Bodies below this size are checked on the request's own task; larger ones on a
/// blocking thread.
const PARSE_INLINE_BYTES: usize = 64 * 1024;

/// A validated sum request: the `args` array as written, ready to queue.
pub struct SumRequest {
    pub args: Box<RawValue>,
    pub count: usize,
    /// The body's bytes, counted against `limits.body_budget_bytes` until the numbers
    /// are handed to the broker (or refused): `args` is a copy of most of them.
    pub share: Share,
}

impl Payload for SumRequest {
    const CONTENT_TYPE: &'static str = "application/json";

    fn check_content_type(content_type: &str) -> bool {
        matches!(content_type.parse::<mime::Mime>(), Ok(m)
            if m.type_() == "application" && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json")))
    }

    fn schema_ref() -> MetaSchemaRef {
        SumArgs::schema_ref()
    }

    fn register(registry: &mut Registry) {
        SumArgs::register(registry);
    }
}

impl ParsePayload for SumRequest {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        // Boxed: reading and checking a body needs far more state than the request keeps
        // afterwards, and a future is as large as its largest state. Inline, every sync
        // request would carry this room through its whole wait.
        Box::pin(read_and_check(request, body)).await
    }
}

/// Reads a sum request body within its bounds, and checks it.
async fn read_and_check(request: &Request, body: &mut RequestBody) -> poem::Result<SumRequest> {
    let intake = request
        .data::<Intake>()
        .expect("routes() gives every request the intake");
    let limits = intake.sum_limits();
    let Body { bytes, share } = intake.read(request, body).await?;
    let (args, count) = if bytes.len() < PARSE_INLINE_BYTES {
        parse(&bytes, &limits)?
    } else {
        // Checking a large body takes milliseconds of CPU: keep it off the threads
        // that serve every other request.
        tokio::task::spawn_blocking(move || parse(&bytes, &limits))
            .await
            .map_err(|e| poem::Error::new(e, StatusCode::INTERNAL_SERVER_ERROR))??
    };
    Ok(SumRequest { args, count, share })
}

use poem_openapi::impl_apirequest_for_payload;
impl_apirequest_for_payload!(SumRequest);

/// The body of the bulk routes (`POST /async/post_tasks`, `POST /sync/sums`).
#[derive(Debug, Object)]
#[oai(example)]
pub struct SumBatch {
    /// The sums, each as `sync/sum` takes one: 1 to `limits.max_batch` (1000 unless
    /// configured otherwise), holding at most `limits.max_items` numbers in all.
    #[oai(validator(min_items = 1, max_items = 1000))]
    pub tasks: Vec<SumArgs>,
}

impl poem_openapi::types::Example for SumBatch {
    fn example() -> Self {
        let sum = |args: &[&str]| SumArgs {
            args: args.iter().map(|a| ExactNumber::example(a)).collect(),
        };
        Self {
            tasks: vec![sum(&["1", "2.5"]), sum(&["0.1", "0.2"])],
        }
    }
}

/// A validated bulk request: each sum's `args` as written, ready to queue.
pub struct BatchRequest {
    pub tasks: Vec<Box<RawValue>>,
    /// The numbers of all the sums.
    pub count: usize,
    /// The `tasks` array as written: what an `Idempotency-Key` is checked against.
    pub raw: Box<RawValue>,
    /// The body's bytes, counted against `limits.body_budget_bytes` until the numbers
    /// are handed to the broker (or refused).
    pub share: Share,
}

impl Payload for BatchRequest {
    const CONTENT_TYPE: &'static str = "application/json";

    fn check_content_type(content_type: &str) -> bool {
        SumRequest::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        SumBatch::schema_ref()
    }

    fn register(registry: &mut Registry) {
        SumBatch::register(registry);
    }
}

impl ParsePayload for BatchRequest {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        Box::pin(read_and_check_batch(request, body)).await
    }
}

impl_apirequest_for_payload!(BatchRequest);

/// Reads a bulk request body within its bounds, and checks every sum of it.
async fn read_and_check_batch(
    request: &Request,
    body: &mut RequestBody,
) -> poem::Result<BatchRequest> {
    let intake = request
        .data::<Intake>()
        .expect("routes() gives every request the intake");
    let (limits, max_batch) = (intake.sum_limits(), intake.max_batch());
    let Body { bytes, share } = intake.read(request, body).await?;
    let parsed = if bytes.len() < PARSE_INLINE_BYTES {
        parse_batch(&bytes, &limits, max_batch)?
    } else {
        tokio::task::spawn_blocking(move || parse_batch(&bytes, &limits, max_batch))
            .await
            .map_err(|e| poem::Error::new(e, StatusCode::INTERNAL_SERVER_ERROR))??
    };
    let (tasks, count, raw) = parsed;
    Ok(BatchRequest {
        tasks,
        count,
        raw,
        share,
    })
}

const BATCH_SHAPE: &str = "send a JSON object with a `tasks` array of sums, each an object \
                           with an `args` array of numbers, e.g. {\"tasks\": [{\"args\": \
                           [1, 2.5]}, {\"args\": [3]}]}";

/// Parses and checks a bulk request body: every sum's `args` as written, all the
/// numbers, and the `tasks` array as written. The first bad sum is named by its index.
#[allow(clippy::type_complexity)]
fn parse_batch(
    bytes: &[u8],
    limits: &sum::Limits,
    max_batch: usize,
) -> Result<(Vec<Box<RawValue>>, usize, Box<RawValue>), ApiError> {
    #[derive(Deserialize)]
    struct Wire<'a> {
        #[serde(borrow)]
        tasks: &'a RawValue,
    }
    #[derive(Deserialize)]
    struct Task<'a> {
        #[serde(borrow)]
        args: &'a RawValue,
    }
    let wire: Wire<'_> = object_borrowed(bytes, BATCH_SHAPE)?;
    let tasks: Vec<&RawValue> = serde_json::from_str(wire.tasks.get()).map_err(|e| {
        ApiError::bad_request(
            "invalid-args",
            format!("`tasks` is not an array ({e}): {BATCH_SHAPE}"),
        )
    })?;
    if tasks.is_empty() {
        return Err(ApiError::bad_request(
            "invalid-args",
            format!("`tasks` is empty: {BATCH_SHAPE}"),
        ));
    }
    if tasks.len() > max_batch {
        return Err(ApiError::payload_too_large(
            "batch-too-large",
            format!(
                "{} sums in one request, more than limits.max_batch ({max_batch}): split \
                 them among several requests",
                tasks.len()
            ),
        ));
    }
    let mut parsed = Vec::with_capacity(tasks.len());
    let mut count = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        let context = format!("`tasks[{i}]`");
        let task: Task<'_> = serde_json::from_str(task.get()).map_err(|e| {
            ApiError::bad_request(
                "invalid-args",
                format!("{context} is not an object with an `args` array ({e}): {BATCH_SHAPE}"),
            )
        })?;
        let checked =
            sum::check(task.args.get(), limits).map_err(|e| ApiError::from(e).within(&context))?;
        count += checked.count;
        if count > limits.max_items {
            return Err(ApiError::payload_too_large(
                "too-many-items",
                format!(
                    "the sums hold more than limits.max_items ({}) numbers in all, by \
                     `tasks[{i}]`: send fewer at once",
                    limits.max_items
                ),
            ));
        }
        parsed.push(task.args.to_owned());
    }
    Ok((parsed, count, wire.tasks.to_owned()))
}

/// A JSON body of type `T` read within the bounds of [`super::intake`] (poem-openapi's
/// `Json` reads any body whole), and refused with a problem that says what `T` looks
/// like when it is not one.
pub struct Bounded<T>(pub T);

/// What a [`Bounded`] body looks like, for its errors.
pub trait Shape {
    /// E.g. `send a JSON object with a session_ids array, e.g. {"session_ids": [1]}`.
    const SHAPE: &'static str;
}

impl<T: Type + Send> Payload for Bounded<T> {
    const CONTENT_TYPE: &'static str = "application/json";

    fn check_content_type(content_type: &str) -> bool {
        SumRequest::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type + Shape + serde::de::DeserializeOwned + Send> ParsePayload for Bounded<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let intake = request
            .data::<Intake>()
            .expect("routes() gives every request the intake");
        let Body { bytes, share } = intake.read(request, body).await?;
        let parsed = object::<T>(&bytes, T::SHAPE);
        drop(share);
        Ok(Self(parsed?))
    }
}

impl<T: Type + Shape + serde::de::DeserializeOwned + Send> poem_openapi::ApiExtractor<'_>
    for Bounded<T>
{
    const TYPES: &'static [poem_openapi::ApiExtractorType] =
        &[poem_openapi::ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <Self as Payload>::register(registry);
    }

    fn request_meta() -> Option<poem_openapi::registry::MetaRequest> {
        Some(poem_openapi::registry::MetaRequest {
            description: None,
            content: vec![poem_openapi::registry::MetaMediaType {
                content_type: <Self as Payload>::CONTENT_TYPE,
                schema: <Self as Payload>::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        request: &Request,
        body: &mut RequestBody,
        _param_opts: poem_openapi::ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        match request.content_type() {
            Some(content_type) if Self::check_content_type(content_type) => {}
            Some(content_type) => {
                return Err(poem_openapi::error::ContentTypeError::NotSupported {
                    content_type: content_type.to_owned(),
                }
                .into())
            }
            None => return Err(poem_openapi::error::ContentTypeError::ExpectContentType.into()),
        }
        <Self as ParsePayload>::from_request(request, body).await
    }
}

/// Reads a JSON object of type `T` from `bytes`; a body that is not one is a 400 that
/// says what was wrong and `shape`.
fn object<T: serde::de::DeserializeOwned>(bytes: &[u8], shape: &str) -> Result<T, ApiError> {
    object_borrowed(bytes, shape)
}

/// [`object`] for a `T` that borrows from `bytes`.
fn object_borrowed<'a, T: Deserialize<'a>>(bytes: &'a [u8], shape: &str) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid-json",
            format!("the body is not UTF-8 text ({e}): {shape}"),
        )
    })?;
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return Err(ApiError::bad_request(
            "invalid-json",
            format!("the body is not a JSON object: {shape}"),
        ));
    }
    serde_json::from_str(text).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request(
                "invalid-json",
                format!("the body is not valid JSON ({e}): {shape}"),
            ),
            Category::Data => ApiError::bad_request("invalid-body", format!("{e}: {shape}")),
        }
    })
}

const SHAPE: &str = "send a JSON object with an `args` array of numbers, e.g. {\"args\": [1, 2.5]}";

/// Parses and checks a sum request body: the `args` array as written, and its length.
fn parse(bytes: &[u8], limits: &sum::Limits) -> Result<(Box<RawValue>, usize), ApiError> {
    #[derive(Deserialize)]
    struct Wire<'a> {
        #[serde(borrow)]
        args: &'a RawValue,
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid-json",
            format!("the body is not UTF-8 text ({e}): {SHAPE}"),
        )
    })?;
    // serde reads a struct from an array too (`[[1, 2]]` as `{"args": [1, 2]}`); the
    // API takes an object only, as its document says.
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return Err(ApiError::bad_request(
            "invalid-json",
            format!("the body is not a JSON object: {SHAPE}"),
        ));
    }
    let wire: Wire<'_> = serde_json::from_str(text).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request(
                "invalid-json",
                format!("the body is not valid JSON ({e}): {SHAPE}"),
            ),
            Category::Data => ApiError::bad_request("invalid-args", format!("{e}: {SHAPE}")),
        }
    })?;
    let checked = sum::check(wire.args.get(), limits)?;
    Ok((wire.args.to_owned(), checked.count))
}
