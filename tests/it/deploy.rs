//! The deployment files, checked rather than hoped: the systemd units pass
//! `systemd-analyze verify` and keep their sandbox, the compose file validates, and the
//! exact command lines both give each role run the real service against the local
//! PostgreSQL, RabbitMQ and Redis. The images and the running stack are checked by
//! `scripts/compose-smoke`, which needs a Docker engine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use sumsvc::Config;
use support::cleanup::cleanup;
use support::config::ListenOnFreePort;
use support::process::{env_of, signal};
use support::{unique_config, Remote};
use yaml_rust2::{Yaml, YamlLoader};

const INSTALLED_BINARY: &str = "/usr/local/bin/sumsvc";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn tool(name: &str, package: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{name} is needed to check the deployment files: install {package}"
    );
    Command::new(name)
}

/// One role as a deployment file starts it: program arguments and environment.
#[derive(Debug, Clone)]
struct CommandLine {
    args: Vec<String>,
    env: BTreeMap<String, String>,
}

impl CommandLine {
    /// Runs it with this build's binary in place of the installed one, and the test's
    /// own connection settings and names in place of the deployment's host names.
    fn spawn(&self, local: &Config) -> Child {
        let (program, args) = self.args.split_first().expect("a command line");
        assert_eq!(program, INSTALLED_BINARY, "{self:?}");
        let mut env = self.env.clone();
        // The file the units and the image read, as installed from config/.
        env.insert(
            "SUMSVC_CONFIG".into(),
            repo("config/sumsvc.toml").display().to_string(),
        );
        env.extend(
            env_of(local)
                .into_iter()
                .filter(|(k, _)| k != "SUMSVC_CONFIG"),
        );
        env.insert("RUST_LOG".into(), "warn".into());
        Command::new(env!("CARGO_BIN_EXE_sumsvc"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }

    fn run(&self, local: &Config) -> std::process::ExitStatus {
        self.spawn(local).wait().unwrap()
    }
}

/// Starts serve and two workers from their command lines; checks they answer.
async fn run_the_stack(
    migrate: &CommandLine,
    serve: &CommandLine,
    work: &CommandLine,
    probe: Option<&CommandLine>,
) {
    let mut config = unique_config();
    config.listen_on_free_port();
    assert!(
        migrate.run(&config).success(),
        "migrate failed: {migrate:?}"
    );
    assert!(migrate.run(&config).success(), "a second migrate failed");

    let mut children = vec![
        serve.spawn(&config),
        work.spawn(&config),
        work.spawn(&config),
    ];
    // Two worker processes, each with one consumer per core by default.
    let remote = Remote::at(&config);
    remote.wait_until_ready(2).await;
    if let Some(probe) = probe {
        assert!(
            probe.run(&config).success(),
            "the health check failed: {probe:?}"
        );
    }
    assert_eq!(
        remote.sync_sum(r#"{"args": [0.1, 0.2]}"#).await,
        r#"{"result":0.3}"#
    );

    for child in &children {
        signal(child, "TERM");
    }
    for child in &mut children {
        let status = child.wait().unwrap();
        assert!(status.success(), "a role exited with {status} on SIGTERM");
    }
    cleanup(&config);
}

// ---- systemd ----

const UNITS: [&str; 4] = [
    "sumsvc-migrate.service",
    "sumsvc-serve.service",
    "sumsvc-work@.service",
    "sumsvc.target",
];

/// Reads `ExecStart=` and `Environment=` of a unit file.
fn unit_command_line(unit: &str) -> CommandLine {
    let text = std::fs::read_to_string(repo(&format!("systemd/{unit}"))).unwrap();
    let mut args = None;
    let mut env = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(cmd) = line.strip_prefix("ExecStart=") {
            args = Some(cmd.split_whitespace().map(String::from).collect());
        } else if let Some(assignment) = line.strip_prefix("Environment=") {
            let (k, v) = assignment.split_once('=').unwrap();
            env.insert(k.to_owned(), v.to_owned());
        }
    }
    CommandLine {
        args: args.unwrap_or_else(|| panic!("{unit} has no ExecStart")),
        env,
    }
}

/// The units with this build's binary in place of the installed one, in a temp folder.
fn units_for_this_build() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sumsvc-units-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    for unit in UNITS {
        let text = std::fs::read_to_string(repo(&format!("systemd/{unit}"))).unwrap();
        let text = text.replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_sumsvc"));
        std::fs::write(dir.join(unit), text).unwrap();
    }
    dir
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let dir = units_for_this_build();
    let out = tool("systemd-analyze", "systemd")
        .current_dir(&dir)
        .args(["verify", "--man=no"])
        .args([
            "sumsvc-migrate.service",
            "sumsvc-serve.service",
            "sumsvc-work@1.service",
            "sumsvc.target",
        ])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}

#[test]
fn the_systemd_units_keep_their_sandbox() {
    let dir = units_for_this_build();
    for unit in [
        "sumsvc-migrate.service",
        "sumsvc-serve.service",
        "sumsvc-work@.service",
    ] {
        let out = tool("systemd-analyze", "systemd")
            .current_dir(&dir)
            .args(["security", "--offline=yes", "--no-pager", unit])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split("exposure level for ").nth(1))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level for {unit}: {text}"));
        // systemd calls up to 2.0 "OK"; the units score 1.1 to 1.4.
        assert!(score <= 2.0, "{unit} exposure {score}: {text}");
    }
    let serve = std::fs::read_to_string(repo("systemd/sumsvc-serve.service")).unwrap();
    assert!(serve.contains("\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"));
    assert!(serve.contains("\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_command_lines_of_the_systemd_units_run_the_service() {
    let migrate = unit_command_line("sumsvc-migrate.service");
    let serve = unit_command_line("sumsvc-serve.service");
    let work = unit_command_line("sumsvc-work@.service");
    run_the_stack(&migrate, &serve, &work, None).await;
}

// ---- docker compose ----

/// The secrets docker-compose.yml requires, each with the value these tests give it.
const COMPOSE_PASSWORDS: [(&str, &str); 3] = [
    ("POSTGRES_PASSWORD", "pg-secret-1"),
    ("RABBITMQ_PASSWORD", "amqp-secret-2"),
    ("REDIS_PASSWORD", "redis-secret-3"),
];

/// `docker-compose config` on `files` with exactly `env` for interpolation (no `.env`,
/// nothing inherited that the files read).
fn docker_compose_config(files: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    // An empty file in place of a developer's .env (docker-compose refuses /dev/null).
    let no_env_file = std::env::temp_dir().join(format!("sumsvc-{}.env", uuid::Uuid::new_v4()));
    std::fs::write(&no_env_file, "").unwrap();
    let mut command = tool("docker-compose", "docker-compose");
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("--env-file")
        .arg(&no_env_file);
    for file in files {
        command.args(["-f", file]);
    }
    for (name, _) in COMPOSE_PASSWORDS {
        command.env_remove(name);
    }
    let out = command
        .env_remove("SUMSVC_HTTP_ADDRESS")
        .env_remove("SUMSVC_HTTP_PORT")
        .envs(env.iter().copied())
        .arg("config")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&no_env_file);
    out
}

/// The files validated and normalized (anchors merged), with the passwords set.
fn compose_config_of(files: &[&str]) -> Yaml {
    let out = docker_compose_config(files, &COMPOSE_PASSWORDS);
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    YamlLoader::load_from_str(&String::from_utf8(out.stdout).unwrap())
        .unwrap()
        .remove(0)
}

/// docker-compose.yml, as users run it.
fn compose_config() -> Yaml {
    compose_config_of(&["docker-compose.yml"])
}

/// A published port as (host address, host port, container port), from either form
/// `docker-compose config` prints.
fn published(port: &Yaml) -> (String, i64, i64) {
    if let Some(short) = port.as_str() {
        // HOST_IP:HOST_PORT:CONTAINER_PORT/tcp
        let parts: Vec<&str> = short.trim_end_matches("/tcp").split(':').collect();
        let [address, host, container] = parts[..] else {
            panic!("not address:port:port: {short}");
        };
        (
            address.into(),
            host.parse().unwrap(),
            container.parse().unwrap(),
        )
    } else {
        let number = |v: &Yaml| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .unwrap_or_else(|| panic!("not a port: {port:?}"))
        };
        (
            port["host_ip"].as_str().unwrap_or("0.0.0.0").into(),
            number(&port["published"]),
            number(&port["target"]),
        )
    }
}

fn strings(yaml: &Yaml) -> Vec<String> {
    yaml.as_vec()
        .unwrap_or_else(|| panic!("not a list: {yaml:?}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// The image's entrypoint, then the service's command, with its environment.
fn compose_command_line(config: &Yaml, service: &str) -> CommandLine {
    let s = &config["services"][service];
    let mut args = vec![INSTALLED_BINARY.to_owned()];
    args.extend(strings(&s["command"]));
    let env = s["environment"]
        .as_hash()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| format!("{:?}", v));
            (k.as_str().unwrap().to_owned(), v)
        })
        .collect();
    CommandLine { args, env }
}

#[test]
fn the_compose_file_has_what_production_needs() {
    let c = compose_config();
    let services = &c["services"];
    for dep in ["postgres", "rabbitmq", "redis", "serve"] {
        assert!(
            !services[dep]["healthcheck"].is_badvalue(),
            "{dep} has no health check"
        );
    }
    assert!(strings(&services["serve"]["healthcheck"]["test"]).contains(&"probe".to_owned()));
    // Results live only in Redis: kept on disk, never evicted, in bounded memory.
    let redis = strings(&services["redis"]["command"]);
    let flag = |name: &str| {
        let at = redis.iter().position(|a| a == name);
        at.and_then(|i| redis.get(i + 1)).map(String::as_str)
    };
    assert_eq!(flag("--appendonly"), Some("yes"), "{redis:?}");
    assert_eq!(flag("--appendfsync"), Some("always"), "{redis:?}");
    assert_eq!(flag("--maxmemory-policy"), Some("noeviction"), "{redis:?}");
    let maxmemory = flag("--maxmemory").unwrap_or_else(|| panic!("no --maxmemory: {redis:?}"));
    assert!(
        maxmemory
            .trim_end_matches(['k', 'm', 'g', 'b'])
            .parse::<u64>()
            .is_ok_and(|n| n > 0),
        "--maxmemory {maxmemory} is not a size"
    );
    assert_eq!(services["work"]["deploy"]["replicas"].as_i64(), Some(2));
    assert_eq!(
        services["serve"]["depends_on"]["migrate"]["condition"].as_str(),
        Some("service_completed_successfully")
    );
    // This host only, unless the operator opens it; port 80 as README.md says.
    assert_eq!(
        published(&services["serve"]["ports"][0]),
        ("127.0.0.1".into(), 80, 8000)
    );
    for role in ["serve", "work"] {
        assert_eq!(services[role]["restart"].as_str(), Some("unless-stopped"));
    }
    for volume in ["postgres-data", "rabbitmq-data", "redis-data"] {
        assert!(!c["volumes"][volume].is_badvalue(), "no volume {volume}");
    }
}

#[test]
fn the_compose_file_refuses_to_start_without_each_password() {
    for (missing, _) in COMPOSE_PASSWORDS {
        let others: Vec<(&str, &str)> = COMPOSE_PASSWORDS
            .into_iter()
            .filter(|(name, _)| *name != missing)
            .collect();
        let out = docker_compose_config(&["docker-compose.yml"], &others);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && said.contains(&format!("set {missing}")),
            "without {missing}, docker-compose config said: {said}"
        );
    }
    // Every use of a password is required (`${NAME:?...}`): none falls back to a default
    // that a forgotten .env would silently put in production.
    let text = std::fs::read_to_string(repo("docker-compose.yml")).unwrap();
    for (name, _) in COMPOSE_PASSWORDS {
        let uses = text.matches(&format!("${{{name}")).count();
        let required = text.matches(&format!("${{{name}:?")).count();
        assert!(uses > 0, "docker-compose.yml does not use {name}");
        assert_eq!(uses, required, "a use of {name} is not ${{{name}:?...}}");
    }
}

#[test]
fn the_compose_services_get_their_passwords() {
    let c = compose_config();
    let services = &c["services"];
    let password = |name: &str| {
        COMPOSE_PASSWORDS
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
    };
    let env = |service: &str, key: &str| {
        services[service]["environment"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{service} has no {key}"))
            .to_owned()
    };
    assert_eq!(
        env("postgres", "POSTGRES_PASSWORD"),
        password("POSTGRES_PASSWORD")
    );
    assert_eq!(
        env("rabbitmq", "RABBITMQ_DEFAULT_PASS"),
        password("RABBITMQ_PASSWORD")
    );
    let redis = strings(&services["redis"]["command"]);
    let requirepass = redis.iter().position(|a| a == "--requirepass");
    assert_eq!(
        requirepass
            .and_then(|i| redis.get(i + 1))
            .map(String::as_str),
        Some(password("REDIS_PASSWORD")),
        "{redis:?}"
    );
    // The health check's redis-cli authenticates, or it would see NOAUTH, not PONG.
    assert_eq!(env("redis", "REDISCLI_AUTH"), password("REDIS_PASSWORD"));
    for role in ["migrate", "serve", "work"] {
        let url = |key: &str| url::Url::parse(&env(role, key)).unwrap();
        let database = url("SUMSVC_DATABASE_URL");
        assert_eq!(database.password(), Some(password("POSTGRES_PASSWORD")));
        let amqp = url("SUMSVC_AMQP_URL");
        assert_eq!(amqp.password(), Some(password("RABBITMQ_PASSWORD")));
        let redis = url("SUMSVC_REDIS_URL");
        assert_eq!(redis.password(), Some(password("REDIS_PASSWORD")));
    }
}

/// scripts/compose-smoke runs the stack with images built on the machine: the override
/// must replace every image the default `up` starts, or compose would try to pull one
/// from a registry. (Services of a profile, such as `observability`, start only when
/// asked for, and the smoke does not ask.)
#[test]
fn the_local_images_override_replaces_every_image() {
    let c = compose_config_of(&["docker-compose.yml", "scripts/local-images/compose.yml"]);
    let services = c["services"].as_hash().unwrap();
    let started: Vec<_> = services
        .iter()
        .filter(|(_, service)| service["profiles"].is_badvalue())
        .collect();
    assert!(started.len() >= 6, "{services:?}");
    for (name, service) in started {
        let name = name.as_str().unwrap();
        let image = service["image"].as_str().unwrap_or_default();
        assert!(
            image.starts_with("sumsvc-local/"),
            "{name} runs {image:?}: add it to scripts/local-images/compose.yml"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_command_lines_of_the_compose_services_run_the_service() {
    let c = compose_config();
    let migrate = compose_command_line(&c, "migrate");
    let serve = compose_command_line(&c, "serve");
    let work = compose_command_line(&c, "work");
    let mut probe = compose_command_line(&c, "serve");
    let test = strings(&c["services"]["serve"]["healthcheck"]["test"]);
    assert_eq!(test[0], "CMD");
    probe.args = test[1..].to_vec();
    run_the_stack(&migrate, &serve, &work, Some(&probe)).await;
}

// ---- Dockerfile ----

#[test]
fn the_dockerfile_stubs_every_bench_that_cargo_toml_names() {
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(repo("Cargo.toml")).unwrap()).unwrap();
    let benches: Vec<&str> = manifest["bench"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    let stubbed = dockerfile
        .lines()
        .find_map(|l| l.split("for b in ").nth(1))
        .and_then(|l| l.split(';').next())
        .expect("the Dockerfile stubs the benches");
    let stubbed: Vec<&str> = stubbed.split_whitespace().collect();
    for bench in benches {
        assert!(
            stubbed.contains(&bench),
            "the Dockerfile does not stub bench {bench}"
        );
    }
}
