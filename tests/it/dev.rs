//! `sumsvc dev`: migrate, serve and workers in one process, configured only through the
//! environment of the test's own names.

use support::cleanup::cleanup;
use support::config::ListenOnFreePort;
use support::process::{env_of, signal, spawn_binary};
use support::{unique_config, Remote};

#[tokio::test(flavor = "multi_thread")]
async fn dev_migrates_serves_and_works_in_one_process_then_stops_on_sigterm() {
    let mut config = unique_config();
    config.listen_on_free_port();
    let mut dev = spawn_binary(&config, &["dev"]);
    let remote = Remote::at(&config);
    remote
        .wait_until_ready(config.worker.concurrency as u64)
        .await;
    assert_eq!(
        remote.sync_sum(r#"{"args": [1e16, 1.0, -1e16]}"#).await,
        r#"{"result":1.0}"#
    );

    // The health check of the container images says the same.
    let probe = std::process::Command::new(env!("CARGO_BIN_EXE_sumsvc"))
        .arg("probe")
        .envs(env_of(&config))
        .output()
        .unwrap();
    assert!(probe.status.success(), "{probe:?}");
    assert!(String::from_utf8_lossy(&probe.stdout).contains(r#""status":"ready""#));

    signal(&dev, "TERM");
    let status = dev.wait().unwrap();
    assert!(status.success(), "dev exited with {status}");
    // Nothing answers now: the probe fails.
    let probe = std::process::Command::new(env!("CARGO_BIN_EXE_sumsvc"))
        .arg("probe")
        .envs(env_of(&config))
        .output()
        .unwrap();
    assert!(!probe.status.success());
    assert!(String::from_utf8_lossy(&probe.stderr).contains("cannot connect"));
    cleanup(&config);
}
