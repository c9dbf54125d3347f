//! Liveness and readiness.

use std::time::SystemTime;

use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use serde::Serialize;

use super::body::ExactJson;
use super::AppState;
use crate::dependency::Dependency;

#[derive(Tags)]
enum ApiTags {
    /// Probes for load balancers and orchestrators.
    Health,
}

/// The process is up.
#[derive(Debug, Object, Serialize)]
#[oai(example)]
pub struct Alive {
    /// Always `ok`.
    pub status: String,
}

impl poem_openapi::types::Example for Alive {
    fn example() -> Self {
        Self {
            status: "ok".into(),
        }
    }
}

/// One dependency's state.
#[derive(Debug, Object, Serialize)]
pub struct DependencyState {
    /// `up` or `down`.
    pub status: String,
    /// Why it is down; absent when up.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What its settings put at risk and what to set, one sentence each; absent when
    /// nothing is. Redis: an eviction policy other than `noeviction`, results kept only
    /// in memory or only in snapshots, or settings it would not tell. Warnings alone do
    /// not make the service unready.
    // `default`: absent means none, so the document must not call it required.
    #[oai(default, skip_serializing_if_is_empty)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// When this process's connection to it was made (RFC 3339, UTC): RabbitMQ's
    /// publisher connection, Redis's result subscription. It changes only when the
    /// connection was lost and made again, so it tells how long the link has held.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The node this process's connection is on (`host:port`), for a dependency with
    /// several: RabbitMQ's publisher connection.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl DependencyState {
    fn of(result: Result<(), String>) -> Self {
        match result {
            Ok(()) => Self {
                status: "up".into(),
                error: None,
                warnings: Vec::new(),
                since: None,
                node: None,
            },
            Err(e) => Self {
                status: "down".into(),
                error: Some(e),
                warnings: Vec::new(),
                since: None,
                node: None,
            },
        }
    }

    fn with_warnings(self, warnings: Vec<String>) -> Self {
        Self { warnings, ..self }
    }

    fn since(self, since: Option<SystemTime>) -> Self {
        Self {
            since: since.map(|t| humantime::format_rfc3339_millis(t).to_string()),
            ..self
        }
    }

    fn on(self, node: Option<String>) -> Self {
        Self { node, ..self }
    }

    fn is_up(&self) -> bool {
        self.error.is_none()
    }
}

/// Whether the service can take work, dependency by dependency.
#[derive(Debug, Object, Serialize)]
#[oai(example)]
pub struct Readiness {
    /// `ready` when every dependency answers, `unready` otherwise.
    pub status: String,
    pub postgres: DependencyState,
    pub rabbitmq: DependencyState,
    pub redis: DependencyState,
    /// Workers consuming the task queue, as RabbitMQ last reported (null while unknown).
    /// Sync requests need at least one.
    pub workers: Option<u32>,
    /// The task queue.
    pub queue: String,
}

impl poem_openapi::types::Example for Readiness {
    fn example() -> Self {
        Self {
            status: "unready".into(),
            postgres: DependencyState::of(Ok(())),
            rabbitmq: DependencyState::of(Err(
                "cannot connect to 127.0.0.1:5672: Connection refused (os error 111)".into(),
            )),
            redis: DependencyState::of(Ok(())).with_warnings(vec![
                "Redis may evict results (maxmemory-policy allkeys-lru, maxmemory 1gb): \
                 set maxmemory-policy noeviction"
                    .into(),
            ]),
            workers: None,
            queue: "sumsvc.tasks".into(),
        }
    }
}

#[derive(ApiResponse)]
enum ReadyResponse {
    /// PostgreSQL, RabbitMQ and Redis all answer.
    #[oai(status = 200)]
    Ready(ExactJson<Readiness>),
    /// At least one dependency does not answer; the body says which and why.
    #[oai(status = 503)]
    Unready(ExactJson<Readiness>),
}

#[derive(ApiResponse)]
enum AliveResponse {
    /// The process is up.
    #[oai(status = 200)]
    Alive(ExactJson<Alive>),
}

/// The probe routes.
pub struct HealthApi;

#[OpenApi]
impl HealthApi {
    /// Liveness
    ///
    /// Answers 200 while the process serves HTTP; it checks no dependency.
    #[oai(path = "/healthz", method = "get", tag = "ApiTags::Health")]
    async fn healthz(&self) -> AliveResponse {
        AliveResponse::Alive(ExactJson::new(Alive {
            status: "ok".into(),
        }))
    }

    /// Readiness
    ///
    /// Answers 200 when PostgreSQL, RabbitMQ and Redis answer and 503 otherwise; the body
    /// names each dependency's state and how many workers consume the task queue. Redis
    /// counts as down when it refuses writes (workers could not store results); its
    /// `warnings` name settings that can lose results.
    #[oai(path = "/readyz", method = "get", tag = "ApiTags::Health")]
    async fn readyz(&self, state: Data<&AppState>) -> ReadyResponse {
        let readiness = readiness(&state).await;
        if readiness.is_ready() {
            ReadyResponse::Ready(ExactJson::new(readiness))
        } else {
            ReadyResponse::Unready(ExactJson::new(readiness))
        }
    }
}

impl Readiness {
    fn is_ready(&self) -> bool {
        self.postgres.is_up() && self.rabbitmq.is_up() && self.redis.is_up()
    }

    /// Whether each dependency answers.
    pub fn dependencies(&self) -> [(Dependency, bool); 3] {
        [
            (Dependency::Postgres, self.postgres.is_up()),
            (Dependency::RabbitMq, self.rabbitmq.is_up()),
            (Dependency::Redis, self.redis.is_up()),
        ]
    }
}

/// Asks each dependency, as `/readyz` and `/metrics` report it.
pub async fn readiness(state: &AppState) -> Readiness {
    let (postgres, redis) = tokio::join!(
        state.sessions.ping(),
        state.results.ping_and_write(state.waiters.instance())
    );
    let broker = state.publisher.status();
    let redis = redis.and_then(|()| state.waiters.check());
    let readiness = Readiness {
        status: String::new(),
        postgres: DependencyState::of(postgres.map_err(|e| e.cause)),
        rabbitmq: DependencyState::of(broker.link)
            .since(broker.since)
            .on(broker.node),
        redis: DependencyState::of(redis.map_err(|e| e.cause))
            .with_warnings(state.waiters.redis_warnings())
            .since(state.waiters.subscribed_since()),
        workers: broker.consumers,
        queue: state.publisher.queue().to_owned(),
    };
    let status = if readiness.is_ready() {
        "ready"
    } else {
        "unready"
    };
    Readiness {
        status: status.into(),
        ..readiness
    }
}
