//! `sumsvc migrate`: creates the database, applies the schema, and a second run changes
//! nothing.

mod common;

use std::process::Command;

#[tokio::test(flavor = "multi_thread")]
async fn migrate_creates_the_database_and_a_second_run_changes_nothing() {
    let config = common::unique_config();
    let first = sumsvc::migrate::run(&config.postgres).await.unwrap();
    assert!(first.created_database);
    assert_eq!(first.applied, vec![1]);

    let second = sumsvc::migrate::run(&config.postgres).await.unwrap();
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
    let sessions = sumsvc::store::Sessions::new(&config.postgres).unwrap();
    sessions.ping().await.expect("the sessions table exists");
    common::cleanup(&config);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_migrations_take_turns() {
    let config = common::unique_config();
    let runs =
        futures_util::future::join_all((0..4).map(|_| sumsvc::migrate::run(&config.postgres)))
            .await;
    let applied: usize = runs.into_iter().map(|r| r.unwrap().applied.len()).sum();
    assert_eq!(applied, 1, "the migration applied exactly once");
    common::cleanup(&config);
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_without_migrate_says_to_run_it() {
    let config = common::unique_config();
    // Create the database but not the schema.
    let admin = sumsvc::config::PostgresConfig {
        url: format!("postgres://postgres@{}/postgres", common::POSTGRES),
        ..config.postgres.clone()
    };
    let db = config.postgres.url.rsplit('/').next().unwrap();
    let (client, conn) = tokio_postgres::connect(&admin.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE \"{db}\""))
        .await
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = sumsvc::serve::run(&config, listener, Default::default())
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("sumsvc migrate"), "{text}");
    common::cleanup(&config);
}
