//! `sumsvc migrate`: creates the database, applies the schema, and a second run changes
//! nothing.

use std::process::Command;
use support::cleanup::cleanup;
use support::config::POSTGRES;
use support::{unique_config, App};

#[tokio::test(flavor = "multi_thread")]
async fn migrate_creates_the_database_and_a_second_run_changes_nothing() {
    let config = unique_config();
    let first = sumsvc::migrate_database(&config.postgres, &config.tls)
        .await
        .unwrap();
    assert!(first.created_database);
    assert_eq!(first.applied, vec![1, 2, 3, 4, 5, 6]);

    let second = sumsvc::migrate_database(&config.postgres, &config.tls)
        .await
        .unwrap();
    assert!(!second.created_database);
    assert!(second.applied.is_empty());

    // The binary, as operators run it, agrees and succeeds.
    let status = Command::new(env!("CARGO_BIN_EXE_sumsvc"))
        .arg("migrate")
        .env("SUMSVC_CONFIG", "/dev/null")
        .env("SUMSVC_DATABASE_URL", &config.postgres.url)
        .status()
        .unwrap();
    assert!(status.success());
    let sessions = sumsvc::Sessions::new(&config.postgres, &config.tls).unwrap();
    sessions.ping().await.expect("the sessions table exists");
    cleanup(&config);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_migrations_take_turns() {
    let config = unique_config();
    let runs = futures_util::future::join_all(
        (0..4).map(|_| sumsvc::migrate_database(&config.postgres, &config.tls)),
    )
    .await;
    let mut applied: Vec<i64> = runs.into_iter().flat_map(|r| r.unwrap().applied).collect();
    applied.sort_unstable();
    assert_eq!(
        applied,
        vec![1, 2, 3, 4, 5, 6],
        "each migration applied exactly once"
    );
    cleanup(&config);
}

/// Creates the test's database with nothing in it.
async fn create_empty_database(config: &sumsvc::Config) {
    let admin = format!("postgres://postgres@{}/postgres", POSTGRES);
    let db = config.postgres.url.rsplit('/').next().unwrap();
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE \"{db}\""))
        .await
        .unwrap();
}

/// Creates the test's database as a release that knew only migration 0001 left it;
/// returns a connection to it.
async fn create_database_at_version_1(config: &sumsvc::Config) -> tokio_postgres::Client {
    create_empty_database(config).await;
    let (client, conn) = tokio_postgres::connect(&config.postgres.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(concat!(
            "CREATE TABLE schema_migrations (
                 version    BIGINT PRIMARY KEY,
                 name       TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             );",
            include_str!("../../src/migrations/0001_create_sessions.sql"),
            "INSERT INTO schema_migrations (version, name) VALUES (1, 'create_sessions');"
        ))
        .await
        .unwrap();
    client
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_without_migrate_says_to_run_it() {
    let config = unique_config();
    create_empty_database(&config).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = sumsvc::serve_api(&config, listener, Default::default())
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("sumsvc migrate"), "{text}");
    cleanup(&config);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_with_counted_session_ids_migrates_and_its_sessions_still_answer() {
    let config = unique_config();
    let client = create_database_at_version_1(&config).await;
    let mut old = Vec::new();
    for _ in 0..3 {
        let row = client
            .query_one(
                "INSERT INTO sessions (task_id) VALUES ($1) RETURNING id",
                &[&uuid::Uuid::new_v4()],
            )
            .await
            .unwrap();
        old.push(row.get::<_, i64>(0));
    }
    assert_eq!(old, vec![1, 2, 3]);

    let report = sumsvc::migrate_database(&config.postgres, &config.tls)
        .await
        .unwrap();
    assert!(!report.created_database);
    assert_eq!(report.applied, vec![2, 3, 4, 5, 6]);
    let ids: Vec<i64> = client
        .query("SELECT id FROM sessions ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, old, "the migration kept every session");

    // No worker: every task stays queued, so every session reads pending.
    let app = App::start(config.clone()).await;
    for id in old {
        support::sessions::assert_pending(&app, id).await;
    }
    support::sessions::submit_pending(&app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_on_a_schema_that_still_counts_session_ids_says_to_migrate() {
    let config = unique_config();
    create_database_at_version_1(&config).await;
    let app = App::start_without_migrate(config).await;
    app.post("/async/post_task", r#"{"args": [1]}"#)
        .await
        .assert_problem(503, "run `sumsvc migrate` first");
}
