//! Passwords: a Redis that requires one works with it in `redis.url`, and no password
//! in the three URLs ever shows in `/readyz`, a problem's detail or the logs, while
//! they still name the dependency that failed and why.

use std::process::{Command, Stdio};

use support::cli::{read_all, run_binary_logging};
use support::config::{database, direct_postgres, ListenOnFreePort, POSTGRES, RABBITMQ};
use support::process::env_of;
use support::proxy::proxy_to;
use support::redis_server::RedisServer;
use support::{unique_config, App, Reply, Workers};

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
        let mut config = unique_config();
        config.redis.url = url.into();
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

const ONE: &str = r#"{"args": [1]}"#;

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
    let postgres = proxy_to(POSTGRES).await;
    let mut config = unique_config();
    sumsvc::migrate_database(&direct_postgres(&config), &config.tls)
        .await
        .unwrap();
    // PostgreSQL takes any password here (trust), so it fails by being cut off; the
    // other two refuse the wrong one.
    let db = database(&config.postgres.url).to_owned();
    config.postgres.url = format!("postgres://postgres:{pg_password}@{}/{db}", postgres.addr);
    config.rabbitmq.url = format!("amqp://guest:{mq_password}@{RABBITMQ}/%2f").into();
    config.redis.url = format!("redis://:{redis_password}@{}/0", redis.addr).into();
    config.listen_on_free_port();

    let mut serve = Command::new(env!("CARGO_BIN_EXE_sumsvc"))
        .arg("serve")
        .envs(env_of(&config))
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sumsvc");
    let log = read_all(serve.stderr.take().unwrap());
    let mut app = App::attach_to(config.clone(), serve).await;

    // Both refusals show in /readyz, with their causes; then PostgreSQL goes too.
    let error =
        |r: &Reply, dependency: &str| r.body[dependency]["error"].as_str().map(str::to_owned);
    let refused = |r: &Reply| {
        error(r, "rabbitmq").is_some_and(|e| e.contains("invalid credentials"))
            && error(r, "redis").is_some_and(|e| e.contains("Password authentication failed"))
    };
    let ready = app.wait_for(refused, "both refusals").await;
    assert_eq!(ready.body["postgres"]["status"], "up", "{ready:?}");
    postgres.cut();
    let all_down = |r: &Reply| refused(r) && r.body["postgres"]["status"] == "down";
    let ready = app.wait_for(all_down, "PostgreSQL down too").await;
    assert_eq!(ready.status, 503);
    assert_no_password("/readyz", &ready.text);

    let answers = [
        ("RabbitMQ", app.post("/async/post_task", ONE).await),
        ("Redis", app.post("/sync/sum", ONE).await),
        (
            "PostgreSQL",
            app.get("/async/get_task_result?session_id=4294967296")
                .await,
        ),
    ];
    for (dependency, reply) in &answers {
        reply.assert_problem(503, dependency);
        assert_no_password("a problem's detail", &reply.text);
    }

    let mut serve = app.child.take().unwrap();
    serve.kill().unwrap();
    serve.wait().unwrap();
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
