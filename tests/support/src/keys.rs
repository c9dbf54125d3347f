//! API keys as an operator makes them (`sumsvc keys ...`) and a client sends them.

use std::time::{Duration, Instant};

use sumsvc::{AuthMode, Config};

use crate::cli::{run_binary, Ran};
use crate::config::{direct_postgres, unique_config};
use crate::{App, Reply};

/// A test config for a serve with `auth.mode = keys`.
pub fn keys_config() -> Config {
    let mut config = unique_config();
    config.auth.mode = AuthMode::Keys;
    config
}

/// Migrates the test's database, creates a key for each name, then starts `serve`;
/// returns it and the keys' secrets, in the order of `names`.
pub async fn start_with_keys(config: Config, names: &[&str]) -> (App, Vec<String>) {
    sumsvc::migrate_database(&direct_postgres(&config), &config.tls)
        .await
        .expect("migrate");
    let mut secrets = Vec::new();
    for name in names {
        secrets.push(create_key(&config, name).await);
    }
    (App::start(config).await, secrets)
}

/// Runs `sumsvc keys <args>` against the test's database.
pub async fn keys(config: &Config, args: &[&str]) -> Ran {
    let args: Vec<&str> = ["keys"].iter().chain(args).copied().collect();
    run_binary(config, &args).await
}

/// Creates a key with `sumsvc keys create NAME`; returns its secret, the last line of
/// what the command printed.
pub async fn create_key(config: &Config, name: &str) -> String {
    let ran = keys(config, &["create", name]).await;
    let last = ran.ok().lines().last().expect("create printed nothing");
    last.to_owned()
}

/// Requests to an [`App`] with an `Authorization` header, or without one.
pub struct Client<'a> {
    app: &'a App,
    authorization: Option<String>,
}

impl<'a> Client<'a> {
    /// Sends `Authorization: Bearer <secret>`.
    pub fn with_key(app: &'a App, secret: &str) -> Self {
        Self::with_authorization(app, &format!("Bearer {secret}"))
    }

    /// Sends this `Authorization` header as it is.
    pub fn with_authorization(app: &'a App, value: &str) -> Self {
        Self {
            app,
            authorization: Some(value.to_owned()),
        }
    }

    /// Sends no `Authorization` header.
    pub fn anonymous(app: &'a App) -> Self {
        Self {
            app,
            authorization: None,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        let request = self.app.http.get(self.app.url(path));
        self.send(request).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        let request = self.app.http.delete(self.app.url(path));
        self.send(request).await
    }

    /// POSTs a JSON text body.
    pub async fn post(&self, path: &str, body: &str) -> Reply {
        self.post_with(path, body, &[]).await
    }

    /// POSTs a JSON text body with more headers.
    pub async fn post_with(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = self
            .app
            .http
            .post(self.app.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    /// Submits `args` with `post_task`; returns the session id.
    pub async fn submit(&self, args: &str) -> i64 {
        let r = self
            .post("/async/post_task", &format!(r#"{{"args": {args}}}"#))
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        r.body["session_id"].as_i64().expect("a session id")
    }

    /// Reads a session once.
    pub async fn session(&self, id: i64) -> Reply {
        self.get(&format!("/async/get_task_result?session_id={id}"))
            .await
    }

    async fn send(&self, mut request: reqwest::RequestBuilder) -> Reply {
        if let Some(value) = &self.authorization {
            request = request.header("authorization", value);
        }
        Reply::read(request.send().await).await
    }
}

/// Repeats `request` until it answers `status`; returns how long that took. Fails after
/// `limit`.
pub async fn until_status<F, Fut>(status: u16, limit: Duration, request: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    let started = Instant::now();
    loop {
        let r = request().await;
        if r.status == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "no {status} within {limit:?}; last answer: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
