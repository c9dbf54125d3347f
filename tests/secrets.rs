//! Passwords: a Redis that requires one works with it in `redis.url`, and no password
//! in the three URLs ever shows in `/readyz`, a problem's detail or the logs, while
//! they still name the dependency that failed and why.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::{read_all, run_binary_logging, CleanupOnDrop};
use common::redis_server::RedisServer;
use common::{App, KillOnDrop, ListenOnFreePort, Reply, Workers, POSTGRES, RABBITMQ};

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_requires_a_password_works_with_it_in_the_url() {
    let redis = RedisServer::start_with_password("default-pw", &[]).await;
    redis
        .command(&[
            "ACL", "SETUSER", "sumsvc", "on", ">user-pw", "~*", "&*", "+@all",
        ])
        .await
        .unwrap();
    // The `default` user's password alone, then an ACL user's name and password.
    for url in [
        redis.url(),
        format!("redis://sumsvc:user-pw@{}/0", redis.addr),
    ] {
        let mut config = common::unique_config();
        config.redis.url = url;
        let app = App::start(config.clone()).await;
        let _workers = Workers::start(&config);
        // Ready means the result subscription is made, and a sync request hears its
        // result through it; a posted task is read back through the pool.
        app.wait_for(
            |r| r.body["status"] == "ready" && r.body["workers"] == 2,
            "readiness",
        )
        .await;
        let r = app.post("/sync/sum", r#"{"args": [1, 2]}"#).await;
        assert_eq!((r.status, r.text.as_str()), (200, r#"{"result":3}"#));
        let r = app.post("/async/post_task", r#"{"args": [2, 3]}"#).await;
        let r = app.poll(r.body["session_id"].as_i64().unwrap()).await;
        assert_eq!(r.body["status"], "done", "{r:?}");
        assert!(r.text.contains(r#""result":5"#), "{}", r.text);
    }
}

const PASSWORDS: [&str; 3] = ["pg-Sekrit-4d2f", "mq-Sekrit-91ce", "redis-Sekrit-77ab"];

fn assert_no_password(what: &str, text: &str) {
    for password in PASSWORDS {
        assert!(!text.contains(password), "{what} shows {password}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn passwords_stay_out_of_readyz_problem_details_and_debug_logs() {
    let [pg_password, mq_password, redis_password] = PASSWORDS;
    let redis = RedisServer::start_with_password("the-right-one", &[]).await;
    let postgres = common::proxy_to(POSTGRES).await;
    let mut config = common::unique_config();
    let _cleanup = CleanupOnDrop(config.clone());
    sumsvc::migrate::run(&common::direct_postgres(&config), &config.tls)
        .await
        .unwrap();
    // PostgreSQL takes any password here (trust), so it fails by being cut off; the
    // other two refuse the wrong one.
    let db = common::database(&config.postgres.url).to_owned();
    config.postgres.url = format!("postgres://postgres:{pg_password}@{}/{db}", postgres.addr);
    config.rabbitmq.url = format!("amqp://guest:{mq_password}@{RABBITMQ}/%2f");
    config.redis.url = format!("redis://:{redis_password}@{}/0", redis.addr);
    config.listen_on_free_port();

    let mut serve = Command::new(env!("CARGO_BIN_EXE_sumsvc"))
        .arg("serve")
        .envs(common::env_of(&config))
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sumsvc");
    let log = read_all(serve.stderr.take().unwrap());
    let serve = KillOnDrop(serve);
    let api = Api {
        base: format!("http://{}", config.http.listen),
        http: reqwest::Client::new(),
    };

    // Both refusals show in /readyz, with their causes; then PostgreSQL goes too.
    let error =
        |r: &Reply, dependency: &str| r.body[dependency]["error"].as_str().map(str::to_owned);
    let refused = |r: &Reply| {
        error(r, "rabbitmq").is_some_and(|e| e.contains("invalid credentials"))
            && error(r, "redis").is_some_and(|e| e.contains("Password authentication failed"))
    };
    let ready = api.wait_for_readyz(refused).await;
    assert_eq!(ready.body["postgres"]["status"], "up", "{ready:?}");
    postgres.cut();
    let ready = api
        .wait_for_readyz(|r| refused(r) && r.body["postgres"]["status"] == "down")
        .await;
    assert_eq!(ready.status, 503);
    assert_no_password("/readyz", &ready.text);

    let answers = [
        ("RabbitMQ", api.post("/async/post_task").await),
        ("Redis", api.post("/sync/sum").await),
        (
            "PostgreSQL",
            api.get("/async/get_task_result?session_id=4294967296")
                .await,
        ),
    ];
    for (dependency, reply) in &answers {
        reply.assert_problem(503, dependency);
        assert_no_password("a problem's detail", &reply.text);
    }

    drop(serve);
    let log = log.join().unwrap();
    assert_no_password("the log of serve", &log);
    for dependency in ["PostgreSQL", "RabbitMQ", "Redis"] {
        assert!(log.contains(dependency), "the log never names {dependency}");
    }

    // The commands that connect once and exit say why they failed, and only that.
    for args in [&["migrate"][..], &["dead", "list"]] {
        let ran = run_binary_logging(&config, args, "debug").await;
        assert_no_password(&format!("sumsvc {args:?}"), &ran.stderr);
        let failed = ran.failed();
        assert!(
            failed.contains("PostgreSQL") || failed.contains("RabbitMQ"),
            "{failed}"
        );
    }
}

/// The API of a `serve` run as a child process.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn get(&self, path: &str) -> Reply {
        Reply::read(self.http.get(format!("{}{path}", self.base)).send().await).await
    }

    /// POSTs a one-number sum.
    async fn post(&self, path: &str) -> Reply {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(r#"{"args": [1]}"#);
        Reply::read(request.send().await).await
    }

    /// Polls `/readyz` until `check` holds, for at most 20 s.
    async fn wait_for_readyz(&self, check: impl Fn(&Reply) -> bool) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let reply = self.get("/readyz").await;
            if check(&reply) {
                return reply;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz never got there: {reply:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
