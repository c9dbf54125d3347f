//! `serve` started for one test, in this process or as a child process, and the HTTP
//! requests a test sends it.

use std::net::SocketAddr;
use std::process::Child;
use std::time::{Duration, Instant};

use sumsvc::Config;
use tokio_util::sync::CancellationToken;

use crate::cleanup::cleanup;
use crate::config::{direct_postgres, ListenOnFreePort};
use crate::process::spawn_binary;
use crate::redis::redis_get;
use crate::reply::Reply;

/// A running `serve` (in this process) on an ephemeral port.
pub struct App {
    pub config: Config,
    pub base: String,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
    pub server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// A `serve` run as a child process instead, when the test wants one.
    pub child: Option<Child>,
}

impl App {
    /// Migrates the test's database, then starts `serve` with `config`.
    pub async fn start(config: Config) -> App {
        sumsvc::migrate_database(&direct_postgres(&config), &config.tls)
            .await
            .expect("migrate");
        Self::start_without_migrate(config).await
    }

    pub async fn start_without_migrate(config: Config) -> App {
        let listener = sumsvc::bind_api(&config).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = {
            let (config, shutdown) = (config.clone(), shutdown.clone());
            tokio::spawn(async move { sumsvc::serve_api(&config, listener, shutdown).await })
        };
        Self::attach(config, addr, Some(server), None, shutdown).await
    }

    /// Migrates, then runs `sumsvc serve` as a child process on a free port.
    pub async fn spawn(mut config: Config) -> App {
        sumsvc::migrate_database(&direct_postgres(&config), &config.tls)
            .await
            .expect("migrate");
        config.listen_on_free_port();
        let child = spawn_binary(&config, &["serve"]);
        Self::attach_to(config, child).await
    }

    /// Takes over `sumsvc serve` started as `child` with `config`, once it answers.
    pub async fn attach_to(config: Config, child: Child) -> App {
        let addr = config.http.listen;
        Self::attach(config, addr, None, Some(child), CancellationToken::new()).await
    }

    async fn attach(
        config: Config,
        addr: SocketAddr,
        server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
        child: Option<Child>,
        shutdown: CancellationToken,
    ) -> App {
        let app = App {
            config,
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(2000)
                .build()
                .unwrap(),
            shutdown,
            server,
            child,
        };
        app.wait_for(|r| r.status != 0, "the API to answer").await;
        app
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Reply {
        Reply::read(self.http.get(self.url(path)).send().await).await
    }

    /// A request with no body and these headers.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.http.request(method, self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Reply::read(req.send().await).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.request(reqwest::Method::DELETE, path, &[]).await
    }

    /// POSTs a JSON text body.
    pub async fn post(&self, path: &str, body: &str) -> Reply {
        self.post_with(path, body, &[]).await
    }

    pub async fn post_with(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Reply::read(req.send().await).await
    }

    /// Polls `/readyz` until `check` holds, for at most 20 s.
    pub async fn wait_for(&self, check: impl Fn(&Reply) -> bool, what: &str) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let reply = self.get("/readyz").await;
            if check(&reply) {
                return reply;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {reply:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_for_workers(&self, n: u64) {
        self.wait_for(|r| r.body["workers"] == n, &format!("{n} workers"))
            .await;
    }

    /// Polls a session until it is no longer pending, for at most 20 s.
    pub async fn poll(&self, session_id: i64) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self
                .get(&format!("/async/get_task_result?session_id={session_id}"))
                .await;
            if r.status != 200 || r.body["status"] != "pending" {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "session {session_id} still pending"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// One read of a session, without waiting.
    pub async fn poll_once(&self, session_id: i64) -> Reply {
        self.get(&format!("/async/get_task_result?session_id={session_id}"))
            .await
    }

    /// The outcome JSON stored in Redis for a session's task, read past the API.
    pub async fn stored_outcome(&self, session_id: i64) -> String {
        let sessions =
            sumsvc::Sessions::new(&direct_postgres(&self.config), &self.config.tls).unwrap();
        let session = sessions.find(session_id).await.unwrap().unwrap();
        let key = sumsvc::RedisNames::new(&self.config.redis.prefix).result(session.task_id);
        redis_get(&key).await.expect("an outcome is stored")
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = &self.server {
            server.abort();
        }
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        cleanup(&self.config);
    }
}
