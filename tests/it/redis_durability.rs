//! Results live only in Redis: `/readyz` tells when Redis's settings can lose them
//! (eviction, nothing on disk) and answers 503 when Redis refuses to store them. Each
//! test runs a private `redis-server` with the settings it needs, never touching the
//! shared one.

use serde_json::Value;
use support::config::with_redis;
use support::proxy::proxy_to;
use support::redis_server::RedisServer;
use support::{unique_config, App, Reply, Workers};

/// Starts `serve` against `redis`, with everything else from the shared servers.
async fn app_on(redis: &RedisServer) -> App {
    let mut config = unique_config();
    config.redis.url = redis.url().into();
    App::start(config).await
}

fn redis_warnings(r: &Reply) -> Vec<String> {
    match &r.body["redis"]["warnings"] {
        Value::Null => Vec::new(),
        warnings => warnings
            .as_array()
            .unwrap_or_else(|| panic!("warnings is not a list: {r:?}"))
            .iter()
            .map(|w| w.as_str().unwrap().to_owned())
            .collect(),
    }
}

const FORGETFUL: [&str; 8] = [
    "--save",
    "",
    "--appendonly",
    "no",
    "--maxmemory-policy",
    "allkeys-lru",
    "--maxmemory",
    "64mb",
];

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_may_evict_or_forget_results_is_ready_with_warnings_that_say_what_to_set() {
    let redis = RedisServer::start(&FORGETFUL).await;
    let app = app_on(&redis).await;
    let _workers = Workers::start(&app.config);
    let r = app
        .wait_for(|r| r.status == 200 && r.body["workers"] == 2, "readiness")
        .await;

    assert_eq!(r.body["redis"]["status"], "up", "{r:?}");
    assert_eq!(
        redis_warnings(&r),
        [
            "Redis may evict results (maxmemory-policy allkeys-lru, maxmemory 64mb): \
             set maxmemory-policy noeviction",
            "Redis keeps results only in memory (appendonly no, no save points): \
             a Redis restart loses every result; enable appendonly",
        ]
    );
    // Warnings only warn: the service works.
    let sum = app.post("/sync/sum", r#"{"args": [0.1, 0.2]}"#).await;
    assert_eq!(sum.text, r#"{"result":0.3}"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_keeps_results_shows_no_warnings() {
    let redis = RedisServer::start(&[
        "--maxmemory",
        "64mb",
        "--maxmemory-policy",
        "noeviction",
        "--appendonly",
        "yes",
    ])
    .await;
    let app = app_on(&redis).await;
    let r = app.wait_for(|r| r.status == 200, "readiness").await;

    assert_eq!(r.body["redis"]["status"], "up", "{r:?}");
    assert!(
        r.body["redis"].get("warnings").is_none(),
        "warnings should be absent: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_refuses_writes_makes_readyz_503_until_it_takes_them_again() {
    let redis = RedisServer::start(&["--maxmemory-policy", "noeviction"]).await;
    let app = app_on(&redis).await;
    app.wait_for(|r| r.status == 200, "readiness").await;

    // Out of memory under noeviction: Redis answers, but refuses every write.
    redis.config_set("maxmemory", "1").await;
    let r = app.get("/readyz").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.body["status"], "unready");
    assert_eq!(r.body["redis"]["status"], "down", "{r:?}");
    assert_eq!(r.body["postgres"]["status"], "up", "{r:?}");
    let cause = r.body["redis"]["error"].as_str().unwrap();
    for needle in [
        "Redis refuses writes, so results cannot be stored",
        "OOM",
        "raise Redis's maxmemory",
        "tasks.result_ttl",
    ] {
        assert!(cause.contains(needle), "{cause:?} should say {needle:?}");
    }

    redis.config_set("maxmemory", "0").await;
    let r = app.get("/readyz").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["redis"]["status"], "up", "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_will_not_tell_its_settings_is_ready_with_a_warning_that_they_are_unknown() {
    // As managed Redis often does: CONFIG is disabled.
    let redis = RedisServer::start(&["--rename-command", "CONFIG", ""]).await;
    let app = app_on(&redis).await;
    let r = app.wait_for(|r| r.status == 200, "readiness").await;

    assert_eq!(r.body["redis"]["status"], "up", "{r:?}");
    let warnings = redis_warnings(&r);
    assert_eq!(warnings.len(), 1, "{r:?}");
    assert!(
        warnings[0]
            .starts_with("Redis would not tell its settings (CONFIG GET: ERR unknown command"),
        "{warnings:?}"
    );
    assert!(
        warnings[0].contains("check that maxmemory-policy is noeviction and appendonly is yes"),
        "{warnings:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn warnings_are_read_again_when_the_connection_to_redis_is_made_again() {
    let redis = RedisServer::start(&FORGETFUL).await;
    let proxy = proxy_to(&redis.addr.to_string()).await;
    let mut config = unique_config();
    with_redis(&mut config, proxy.addr);
    let app = App::start(config).await;
    let r = app.wait_for(|r| r.status == 200, "readiness").await;
    assert_eq!(redis_warnings(&r).len(), 2, "{r:?}");

    // The operator fixes the settings; a new connection (as after a restart or a
    // failover) reads them again.
    for (name, value) in [("maxmemory-policy", "noeviction"), ("appendonly", "yes")] {
        redis.config_set(name, value).await;
    }
    proxy.cut();
    app.wait_for(|r| r.body["redis"]["status"] == "down", "Redis to be down")
        .await;
    proxy.restore();
    app.wait_for(
        |r| r.status == 200 && redis_warnings(r).is_empty(),
        "readiness without warnings",
    )
    .await;
}
