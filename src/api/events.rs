//! The result stream: `GET /async/events?session_id=A&session_id=B...`, server-sent
//! events (the WHATWG HTML standard's `text/event-stream`), one per session as its task
//! ends.
//!
//! Every session named gets one event: `result` with its state as
//! `get_task_result` answers it (at once for a task that ended already), or `problem`
//! with the 404 or 410 a poll would get. Once each has had its event the stream says
//! `end` and closes. Keep-alive comments go every [`KEEP_ALIVE`], and a stream lasts at
//! most `tasks.sync_timeout`, as a sync request waits: a client then reconnects (a
//! browser's `EventSource` does so by itself) and gets the events again, those of ended
//! tasks at once. Each event's id is its session id, so a client keys them by it; the
//! `end` event's id is `end`, and a reconnect that says it saw it (`Last-Event-ID: end`)
//! is answered 204, which tells an `EventSource` to stop.
//!
//! A stream waits as a long poll does (see [`super::sessions`]): it holds one of its
//! key's waiting slots, and one of this serve's per session still pending.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures_util::stream::{self, BoxStream, FuturesUnordered};
use futures_util::{FutureExt, StreamExt};
use poem::web::sse::Event;
use poem::web::Data;
use poem::{IntoResponse, Response};
use poem_openapi::param::{Header, Query};
use poem_openapi::payload::{EventStream, Payload};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::{ApiResponse, Object, OpenApi, Union};
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use super::body::Numbers;
use super::problem::{ApiError, OpError, Statuses};
use super::session_id::SessionIds;
use super::sessions::{self, SessionProblem, TaskResult, UNWATCHED_READ_EVERY};
use super::{examples, ApiTags, AppState};
use crate::auth::{Caller, WaitSlot};
use crate::http::StreamsFor;
use crate::store::results::{Final, Stored};
use crate::store::sessions::Session;

/// How often a quiet stream sends a comment, so that proxies and clients see it alive.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// How long after its last event a stream's connection may take to close.
const CLOSE_SLACK: Duration = Duration::from_secs(5);

/// The id of the `end` event, which a client that saw it sends back as `Last-Event-ID`.
const END_ID: &str = "end";

/// The stream is over: every session named has had its event.
#[derive(Debug, Object, Serialize)]
pub struct StreamEnd {
    /// The sessions the stream reported on.
    pub sessions: usize,
}

/// One event of the stream: its `event` field is `result`, `problem` or `end`, and its
/// data one of these.
#[derive(Debug, Union, Serialize)]
#[oai(one_of)]
#[serde(untagged)]
pub enum SessionEvent {
    /// `event: result`: the session's task ended; its state, as `get_task_result` says.
    Result(TaskResult),
    /// `event: problem`: the session does not exist (404), or its result expired (410).
    Problem(SessionProblem),
    /// `event: end`: nothing more follows.
    End(StreamEnd),
}

impl SessionEvent {
    fn to_event(&self) -> Event {
        let data = serde_json::to_string(self).expect("events serialize");
        let (kind, id) = match self {
            Self::Result(r) => ("result", r.session_id.to_string()),
            Self::Problem(p) => ("problem", p.session_id.to_string()),
            Self::End(_) => ("end", END_ID.to_owned()),
        };
        Event::message(data).event_type(kind).id(id)
    }
}

/// The stream as a response body: poem-openapi's event stream, marked as streaming for
/// as long as it may, so that its connection is not taken for idle meanwhile.
pub struct Events {
    stream: EventStream<BoxStream<'static, SessionEvent>>,
    lasts: Duration,
}

impl Payload for Events {
    const CONTENT_TYPE: &'static str = "text/event-stream";

    /// Each event, as OpenAPI 3.0 tools read the schema of an event stream: its fields,
    /// the data a JSON text of a [`SessionEvent`]. (poem-openapi's own schema, an array,
    /// describes no event a client receives.)
    fn schema_ref() -> MetaSchemaRef {
        let text = |description: &'static str| {
            MetaSchemaRef::Inline(Box::new(MetaSchema {
                description: Some(description),
                ..MetaSchema::new("string")
            }))
        };
        let kinds = ["result", "problem", "end"].map(serde_json::Value::from);
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            description: Some("One server-sent event."),
            required: vec!["event", "data"],
            properties: vec![
                (
                    "event",
                    MetaSchemaRef::Inline(Box::new(MetaSchema {
                        enum_items: kinds.to_vec(),
                        ..MetaSchema::new("string")
                    })),
                ),
                ("id", text("The session's id; `end` for the `end` event.")),
                (
                    "data",
                    text(
                        "JSON: a `TaskResult` (event `result`), a `SessionProblem` \
                         (`problem`) or a `StreamEnd` (`end`); see `SessionEvent`.",
                    ),
                ),
            ],
            ..MetaSchema::new("object")
        }))
    }

    fn register(registry: &mut Registry) {
        <SessionEvent as poem_openapi::types::Type>::register(registry);
    }
}

impl IntoResponse for Events {
    fn into_response(self) -> Response {
        let mut resp = self.stream.into_response();
        resp.extensions_mut()
            .insert(StreamsFor(self.lasts + CLOSE_SLACK));
        // Proxies that buffer (nginx) pass each event on at once.
        resp.headers_mut()
            .insert("X-Accel-Buffering", "no".parse().expect("a header value"));
        resp
    }
}

#[derive(ApiResponse)]
enum EventsResponse {
    /// The events, as each session's task ends: `result`, `problem` or, last, `end`.
    #[oai(status = 200)]
    Stream(Events),
    /// The client saw the `end` event already (`Last-Event-ID: end`): nothing follows.
    #[oai(status = 204)]
    Ended,
}

/// How the stream can fail before it starts.
pub struct EventsErrors;

impl Statuses for EventsErrors {
    const LIST: &'static [u16] = &[400, 401, 429, 503];
}

/// The stream route.
pub struct EventsApi;

#[OpenApi]
impl EventsApi {
    /// Stream sessions' results as they finish
    ///
    /// Server-sent events, one per session named: `result` with its state as
    /// `get_task_result` answers it, as soon as its task ends (at once for those that
    /// ended already), or `problem` with the 404 or 410 a poll of it gets. Then `end`,
    /// and the stream closes. Each event's id is its session id; the `end` event's is
    /// `end`. A comment every 10 s keeps the connection alive. A stream lasts at most
    /// `tasks.sync_timeout`: reconnect (an `EventSource` does so by itself) to get the
    /// events again, those of ended tasks at once; a reconnect with
    /// `Last-Event-ID: end` is answered 204. A stream counts as one waiting request of
    /// its API key (`auth.max_sync_waiters`), and one per pending session of this
    /// server's `limits.max_sync_waiters`.
    #[oai(path = "/async/events", method = "get", tag = "ApiTags::Async")]
    async fn events(
        &self,
        caller: Caller,
        state: Data<&AppState>,
        /// The sessions to report on, the parameter repeated: `?session_id=1&session_id=2`
        /// (at most 100).
        #[oai(example = "session_ids_example")]
        session_id: SessionIds,
        /// `string` writes results as JSON strings of their exact text, for clients
        /// whose JSON reader rounds numbers to doubles; `number` (the default) as numbers.
        #[oai(example = "examples::numbers")]
        numbers: Query<Option<Numbers>>,
        /// Sent by an `EventSource` that reconnects: the id of the last event it got.
        /// `end` means it got them all, and is answered 204.
        #[oai(name = "Last-Event-ID", example = "last_event_example")]
        last_event_id: Header<Option<String>>,
    ) -> Result<EventsResponse, OpError<EventsErrors>> {
        if last_event_id.0.as_deref() == Some(END_ID) {
            return Ok(EventsResponse::Ended);
        }
        let SessionIds(ids) = session_id;
        let watch = Box::pin(Watch::start(&state, &caller, ids, numbers.0)).await?;
        let lasts = state.config.tasks.sync_timeout;
        let events = stream::unfold(watch, Watch::next).boxed();
        Ok(EventsResponse::Stream(Events {
            stream: EventStream::new(events)
                .keep_alive(KEEP_ALIVE)
                .to_event(|event| event.to_event()),
            lasts,
        }))
    }
}

fn session_ids_example() -> Vec<i64> {
    vec![examples::session(), 4827519034627781]
}

fn last_event_example() -> Option<String> {
    Some(END_ID.into())
}

/// What a task's end is awaited by: its waiter, until it is heard.
type Heard = futures_util::future::BoxFuture<'static, (Uuid, Option<Final>)>;

/// A stream's state: the events due, and the sessions still pending.
struct Watch {
    state: AppState,
    /// Events to send before anything else.
    due: VecDeque<SessionEvent>,
    /// The sessions whose task has not ended, by task id.
    pending: HashMap<Uuid, (i64, Session)>,
    heard: FuturesUnordered<Heard>,
    /// Whether some pending task could not be watched (its queued mark was never
    /// written), so that its key is read every [`UNWATCHED_READ_EVERY`].
    unwatched: bool,
    started: Instant,
    until: Instant,
    numbers: Option<Numbers>,
    sessions: usize,
    ended: bool,
    _slot: Option<WaitSlot>,
}

impl Watch {
    /// Looks the sessions up, reads (and watches) their tasks' keys, and registers a
    /// waiter for each task still pending. Fails, before the stream starts, when a
    /// dependency or a waiting slot is missing.
    async fn start(
        state: &AppState,
        caller: &Caller,
        ids: Vec<i64>,
        numbers: Option<Numbers>,
    ) -> Result<Self, ApiError> {
        let slot = caller.start_waiting().await?;
        let started = Instant::now();
        let found = state.sessions.find_many(&ids).await?;
        let absent: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| !found.contains_key(id))
            .collect();
        let purged = state.sessions.purged(&absent).await?;
        let ttl = state.config.tasks.result_ttl;
        let mut due = VecDeque::new();
        let mut owned = Vec::new();
        for id in &ids {
            match found.get(id) {
                Some(session) if session.owner == caller.owner() => {
                    owned.push((*id, session.clone()))
                }
                None if purged.contains(id) => {
                    due.push_back(problem(*id, sessions::removed(*id, &state.config.tasks)))
                }
                _ => due.push_back(problem(*id, sessions::unknown(*id))),
            }
        }
        let mut watch = Self {
            state: state.clone(),
            due,
            pending: HashMap::new(),
            heard: FuturesUnordered::new(),
            unwatched: false,
            started,
            until: started + state.config.tasks.sync_timeout,
            numbers,
            sessions: ids.len(),
            ended: false,
            _slot: slot,
        };
        // Registered before the watch: a notice that comes once it is in place finds
        // the waiter.
        for (id, session) in &owned {
            let mut waiter = state.waiters.register(session.task_id).map_err(|full| {
                tracing::warn!("refusing a result stream: {full}");
                ApiError::unavailable("too-many-waiting", full.to_string())
            })?;
            let task_id = session.task_id;
            watch
                .heard
                .push(async move { (task_id, (&mut waiter.end).await.ok()) }.boxed());
            watch.pending.insert(task_id, (*id, session.clone()));
        }
        let task_ids: Vec<Uuid> = owned.iter().map(|(_, s)| s.task_id).collect();
        let stored = state
            .results
            .watch_many(&task_ids, state.waiters.instance())
            .await?;
        let subscribed = state.waiters.check().is_ok();
        for ((id, session), stored) in owned.iter().zip(stored) {
            match stored {
                Stored::Queued => watch.unwatched |= !subscribed,
                Stored::Missing if session.age < ttl => watch.unwatched = true,
                stored => {
                    let event = watch.event(*id, session, stored);
                    watch.pending.remove(&session.task_id);
                    watch.due.push_back(event);
                }
            }
        }
        Ok(watch)
    }

    /// The next event, and the state after it; None once the stream is over.
    async fn next(mut self) -> Option<(SessionEvent, Self)> {
        loop {
            if let Some(event) = self.due.pop_front() {
                return Some((event, self));
            }
            if self.ended {
                return None;
            }
            if self.pending.is_empty() {
                self.ended = true;
                let end = SessionEvent::End(StreamEnd {
                    sessions: self.sessions,
                });
                return Some((end, self));
            }
            let read_at = if self.unwatched {
                (Instant::now() + UNWATCHED_READ_EVERY).min(self.until)
            } else {
                self.until
            };
            tokio::select! {
                Some((task_id, end)) = self.heard.next() => match end {
                    Some(end) => self.ended_task(task_id, Stored::Final(end)),
                    // The waiters stopped (the serve is shutting down): read the keys.
                    None => self.unwatched = true,
                },
                _ = tokio::time::sleep_until(read_at) => {
                    if Instant::now() >= self.until {
                        // Over without `end`: the client reconnects for the rest.
                        return None;
                    }
                    self.read_pending().await;
                }
            }
        }
    }

    /// Reads the key of every pending task; a Redis that does not answer is asked again
    /// at the next read.
    async fn read_pending(&mut self) {
        let task_ids: Vec<Uuid> = self.pending.keys().copied().collect();
        match self.state.results.get_many(&task_ids).await {
            Ok(stored) => {
                let (ttl, waited) = (self.state.config.tasks.result_ttl, self.started.elapsed());
                for (task_id, stored) in task_ids.into_iter().zip(stored) {
                    let expired = self.pending[&task_id].1.age + waited >= ttl;
                    match stored {
                        Stored::Final(_) => self.ended_task(task_id, stored),
                        Stored::Missing if expired => self.ended_task(task_id, stored),
                        Stored::Queued | Stored::Missing => {}
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "reading a stream's pending results failed"),
        }
    }

    /// A pending task's key holds its end (or nothing any more): its event is due.
    fn ended_task(&mut self, task_id: Uuid, stored: Stored) {
        if let Some((id, session)) = self.pending.remove(&task_id) {
            let event = self.event(id, &session, stored);
            self.due.push_back(event);
        }
    }

    /// The event of session `id` whose key holds `stored`.
    fn event(&self, id: i64, session: &Session, stored: Stored) -> SessionEvent {
        let ttl = self.state.config.tasks.result_ttl;
        let session = Session {
            age: session.age + self.started.elapsed(),
            ..session.clone()
        };
        match sessions::read_state(id, &session, stored, ttl, self.numbers) {
            Ok(result) => SessionEvent::Result(result),
            Err(e) => problem(id, e),
        }
    }
}

/// The `problem` event of session `id`.
fn problem(id: i64, error: ApiError) -> SessionEvent {
    SessionEvent::Problem(SessionProblem::of(id, error))
}
