//! `sumsvc dev`: migrate, serve and workers in one process, configured only through the
//! environment of the test's own names.

mod common;

use std::time::{Duration, Instant};

use common::ListenOnFreePort;

#[tokio::test(flavor = "multi_thread")]
async fn dev_migrates_serves_and_works_in_one_process_then_stops_on_sigterm() {
    let mut config = common::unique_config();
    config.listen_on_free_port();
    let mut dev = common::spawn_binary(&config, &["dev"]);
    let base = format!("http://{}", config.http.listen);
    let client = reqwest::Client::new();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = match client.get(format!("{base}/readyz")).send().await {
            Ok(r) => r.json::<serde_json::Value>().await.unwrap_or_default(),
            Err(_) => Default::default(),
        };
        if ready["status"] == "ready" && ready["workers"] == config.worker.concurrency {
            break;
        }
        assert!(Instant::now() < deadline, "dev never became ready: {ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let r = client
        .post(format!("{base}/sync/sum"))
        .header("content-type", "application/json")
        .body(r#"{"args": [1e16, 1.0, -1e16]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), r#"{"result":1.0}"#);

    // The health check of the container images says the same.
    let probe = std::process::Command::new(env!("CARGO_BIN_EXE_sumsvc"))
        .arg("probe")
        .envs(common::env_of(&config))
        .output()
        .unwrap();
    assert!(probe.status.success(), "{probe:?}");
    assert!(String::from_utf8_lossy(&probe.stdout).contains(r#""status":"ready""#));

    common::signal(&dev, "TERM");
    let status = dev.wait().unwrap();
    assert!(status.success(), "dev exited with {status}");
    // Nothing answers now: the probe fails.
    let probe = std::process::Command::new(env!("CARGO_BIN_EXE_sumsvc"))
        .arg("probe")
        .envs(common::env_of(&config))
        .output()
        .unwrap();
    assert!(!probe.status.success());
    assert!(String::from_utf8_lossy(&probe.stderr).contains("cannot connect"));
    common::cleanup(&config);
}
