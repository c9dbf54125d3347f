//! Configuration layering as operators use it: the real binary, a file, `SUMSVC_`
//! variables and flags.

use std::process::{Command, Output};

fn sumsvc(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sumsvc"));
    cmd.args(args);
    // Start from a clean slate: no SUMSVC_ variable of the caller's leaks in.
    for (key, _) in std::env::vars() {
        if key.starts_with("SUMSVC_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied())
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap()
}

fn effective(args: &[&str], env: &[(&str, &str)]) -> toml::Value {
    let out = sumsvc(args, env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

fn file(contents: &str) -> tempfile_path::TempPath {
    tempfile_path::TempPath::with(contents)
}

#[test]
fn a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() {
    let f = file("[http]\nlisten = \"127.0.0.1:1001\"\n[tasks]\nsync_timeout = \"7s\"\n");
    let path = f.path();
    let listen = |c: &toml::Value| c["http"]["listen"].as_str().unwrap().to_owned();

    let c = effective(&["config"], &[]);
    assert_eq!(listen(&c), "127.0.0.1:8000");
    assert_eq!(c["tasks"]["sync_timeout"].as_str(), Some("30s"));

    let c = effective(&["config", "--config", path], &[]);
    assert_eq!(listen(&c), "127.0.0.1:1001");
    assert_eq!(c["tasks"]["sync_timeout"].as_str(), Some("7s"));

    let c = effective(&["config"], &[("SUMSVC_CONFIG", path)]);
    assert_eq!(listen(&c), "127.0.0.1:1001");

    let env = [("SUMSVC_CONFIG", path), ("SUMSVC_LISTEN", "127.0.0.1:1002")];
    let c = effective(&["config"], &env);
    assert_eq!(listen(&c), "127.0.0.1:1002");
    // Keys the environment does not set keep the file's value.
    assert_eq!(c["tasks"]["sync_timeout"].as_str(), Some("7s"));

    let c = effective(&["config", "--listen", "127.0.0.1:1003"], &env);
    assert_eq!(listen(&c), "127.0.0.1:1003");
}

#[test]
fn every_contract_variable_sets_its_key() {
    let env = [
        ("SUMSVC_DATABASE_URL", "postgres://u@db:5432/x"),
        ("SUMSVC_AMQP_URL", "amqp://u:p@mq:5672/v"),
        ("SUMSVC_QUEUE", "q"),
        ("SUMSVC_REDIS_URL", "redis://cache:6379/2"),
        ("SUMSVC_REDIS_PREFIX", "p"),
        ("SUMSVC_SYNC_TIMEOUT", "250ms"),
        ("SUMSVC_RESULT_TTL", "2h"),
        ("SUMSVC_MAX_ITEMS", "10"),
        ("SUMSVC_MAX_BODY_BYTES", "1000"),
        ("SUMSVC_MAX_RESULT_DIGITS", "50"),
        ("SUMSVC_WORKER_CONCURRENCY", "3"),
        ("SUMSVC_WORKER_PREFETCH", "7"),
    ];
    let c = effective(&["config"], &env);
    assert_eq!(
        c["postgres"]["url"].as_str(),
        Some("postgres://u@db:5432/x")
    );
    assert_eq!(c["rabbitmq"]["url"].as_str(), Some("amqp://u:p@mq:5672/v"));
    assert_eq!(c["rabbitmq"]["queue"].as_str(), Some("q"));
    assert_eq!(c["redis"]["url"].as_str(), Some("redis://cache:6379/2"));
    assert_eq!(c["redis"]["prefix"].as_str(), Some("p"));
    assert_eq!(c["tasks"]["sync_timeout"].as_str(), Some("250ms"));
    assert_eq!(c["tasks"]["result_ttl"].as_str(), Some("2h"));
    assert_eq!(c["limits"]["max_items"].as_integer(), Some(10));
    assert_eq!(c["limits"]["max_body_bytes"].as_integer(), Some(1000));
    assert_eq!(c["limits"]["max_result_digits"].as_integer(), Some(50));
    assert_eq!(c["worker"]["concurrency"].as_integer(), Some(3));
    assert_eq!(c["worker"]["prefetch"].as_integer(), Some(7));
}

#[test]
fn an_invalid_value_stops_the_process_and_names_the_key() {
    let f = file("[tasks]\nsync_timeout = \"soon\"\n");
    let out = sumsvc(&["config", "--config", f.path()], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sync_timeout"), "{err}");

    let out = sumsvc(&["config"], &[("SUMSVC_WORKER_PREFETCH", "lots")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("worker.prefetch"), "{err}");

    let out = sumsvc(&["config"], &[("SUMSVC_REDIS_URL", "http://nope")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("redis.url"));

    let out = sumsvc(&["config", "--config", "/nonexistent/sumsvc.toml"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/sumsvc.toml"));
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["migrate", "serve", "work", "dev", "config", "probe"] {
        let out = sumsvc(&[sub, "--help"], &[]);
        assert!(out.status.success(), "{sub} --help failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("SUMSVC_DATABASE_URL"),
            "{sub} --help names no variables"
        );
    }
    let out = sumsvc(&["--help"], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("dev"));
}

/// A file in the temp directory, removed on drop.
mod tempfile_path {
    pub struct TempPath(std::path::PathBuf);

    impl TempPath {
        pub fn with(contents: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("sumsvc-test-{}.toml", uuid::Uuid::new_v4()));
            std::fs::write(&path, contents).unwrap();
            Self(path)
        }

        pub fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
