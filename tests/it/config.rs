//! Configuration layering as operators use it: the real binary, a file, `SUMSVC_`
//! variables and flags.

use std::process::{Command, Output};
use std::time::Duration;

use sumsvc::{Config, ConfigKey};

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
    // Its password is not shown; the rest is.
    assert_eq!(
        c["rabbitmq"]["url"].as_str(),
        Some("amqp://u:***@mq:5672/v")
    );
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

    let f = file("[worker]\nprefetch = 70000\n");
    let out = sumsvc(&["config", "--config", f.path()], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("worker.prefetch"), "{err}");

    let out = sumsvc(&["config"], &[("SUMSVC_WORKER_PREFETCH", "lots")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("worker.prefetch"), "{err}");

    let out = sumsvc(&["config", "--worker-prefetch", "lots"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("worker.prefetch"), "{err}");

    let out = sumsvc(&["serve", "--sync-timeout", "soon"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tasks.sync_timeout"), "{err}");

    let out = sumsvc(&["config"], &[("SUMSVC_REDIS_URL", "http://nope")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("redis.url"));

    let out = sumsvc(&["config", "--config", "/nonexistent/sumsvc.toml"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/sumsvc.toml"));
}

#[test]
fn every_key_is_set_alike_by_its_variable_and_by_its_flag() {
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:1004".parse().unwrap();
    config.postgres.pool_size = 3;
    config.rabbitmq.quorum = true;
    config.rabbitmq.heartbeat = Duration::from_secs(3);
    config.redis.timeout = Duration::from_millis(250);
    config.tasks.result_ttl = Duration::from_secs(90);
    config.limits.max_items = 10;
    config.worker.prefetch = 7;
    config.worker.drain_timeout = Duration::from_secs(5);
    let env = config.to_env();
    let from_env = sumsvc(&["config"], &pairs(&env));
    assert!(from_env.status.success(), "{from_env:?}");
    assert_eq!(String::from_utf8_lossy(&from_env.stdout), config.to_toml());

    let mut args = vec!["config".to_owned()];
    for (key, (_, value)) in ConfigKey::ALL.iter().zip(&env) {
        args.extend([format!("--{}", key.flag()), value.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let from_flags = sumsvc(&args, &[]);
    assert!(from_flags.status.success(), "{from_flags:?}");
    assert_eq!(
        String::from_utf8_lossy(&from_flags.stdout),
        config.to_toml()
    );
}

/// URLs whose passwords must never be printed, and what each looks like shown.
const SECRET_URLS: [(&str, &str, &str); 3] = [
    (
        "SUMSVC_DATABASE_URL",
        "postgres://app:pg-s3cret@db:5432/x?password=pg-param-s3cret",
        "postgres://app:***@db:5432/x?password=***",
    ),
    (
        "SUMSVC_AMQP_URL",
        "amqp://app:mq-s3cret@mq:5672/v",
        "amqp://app:***@mq:5672/v",
    ),
    (
        "SUMSVC_REDIS_URL",
        "redis://:redis-s3cret@cache:6379/2",
        "redis://:***@cache:6379/2",
    ),
];

fn assert_no_password(text: &str) {
    for password in ["pg-s3cret", "pg-param-s3cret", "mq-s3cret", "redis-s3cret"] {
        assert!(!text.contains(password), "{password} printed:\n{text}");
    }
}

#[test]
fn config_prints_urls_without_their_passwords() {
    let env: Vec<_> = SECRET_URLS
        .iter()
        .map(|(var, url, _)| (*var, *url))
        .collect();
    let out = sumsvc(&["config"], &env);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_no_password(&text);
    for (_, _, shown) in SECRET_URLS {
        assert!(text.contains(&format!("url = \"{shown}\"")), "{text}");
    }
}

#[test]
fn help_never_shows_a_password() {
    let mut env: Vec<_> = SECRET_URLS
        .iter()
        .map(|(var, url, _)| (*var, *url))
        .collect();
    env.push(("SUMSVC_LISTEN", "127.0.0.1:1005"));
    for args in [&["--help"][..], &["serve", "--help"], &["work", "--help"]] {
        let out = sumsvc(args, &env);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_no_password(&text);
        for (var, _, _) in SECRET_URLS {
            assert!(text.contains(&format!("[env: {var}]")), "{text}");
        }
        // Values that hold no password are still shown.
        assert!(
            text.contains("[env: SUMSVC_LISTEN=127.0.0.1:1005]"),
            "{text}"
        );
    }
}

#[test]
fn errors_and_logs_never_show_a_password() {
    let debug = ("RUST_LOG", "debug");
    // A URL refused by validation.
    let out = sumsvc(
        &["config"],
        &[("SUMSVC_REDIS_URL", "http://u:redis-s3cret@cache"), debug],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("redis.url") && err.contains("http://u:***@cache"),
        "{err}"
    );
    assert_no_password(&err);

    // Text that is no URL at all, where a password could be anywhere.
    let out = sumsvc(
        &["config"],
        &[("SUMSVC_DATABASE_URL", "host=db password=pg-s3cret"), debug],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("postgres.url"), "{err}");
    assert_no_password(&err);

    // Dependencies that cannot be reached (nothing listens on port 1).
    let unreachable = [
        (
            "SUMSVC_DATABASE_URL",
            "postgres://app:pg-s3cret@127.0.0.1:1/x?password=pg-param-s3cret",
        ),
        ("SUMSVC_AMQP_URL", "amqp://app:mq-s3cret@127.0.0.1:1/v"),
        ("SUMSVC_REDIS_URL", "redis://:redis-s3cret@127.0.0.1:1/0"),
        debug,
    ];
    for role in [&["migrate"][..], &["dead", "list"]] {
        let out = sumsvc(role, &unreachable);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{role:?} succeeded: {err}");
        assert!(err.contains("127.0.0.1"), "{role:?}: {err}");
        assert_no_password(&err);
    }

    // The local RabbitMQ refuses this password, after a handshake that carried it and
    // that amiquip logs at debug level.
    let out = sumsvc(
        &["dead", "list"],
        &[
            (
                "SUMSVC_AMQP_URL",
                "amqp://guest:mq-s3cret@127.0.0.1:5672/%2f",
            ),
            ("RUST_LOG", "trace"),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("invalid credentials"), "{err}");
    assert_no_password(&err);
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
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
