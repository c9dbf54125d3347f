//! TLS to PostgreSQL, RabbitMQ and Redis. The real services sit behind proxies that end
//! TLS with certificates from a CA the test makes, and `tls.ca_file` names that CA.

use sumsvc::Config;
use support::cli::{run_binary, CleanupOnDrop};
use support::config::{database, direct_postgres, POSTGRES, RABBITMQ, REDIS};
use support::tls_proxy::{Ca, Start, TlsProxy};
use support::{unique_config, App, Workers};

/// The three dependencies behind TLS proxies whose certificates `ca` signed.
struct OverTls {
    postgres: TlsProxy,
    rabbitmq: TlsProxy,
    redis: TlsProxy,
}

impl OverTls {
    async fn start(ca: &Ca) -> OverTls {
        OverTls {
            postgres: TlsProxy::start(POSTGRES, ca.server_identity(), Start::Postgres).await,
            rabbitmq: TlsProxy::start(RABBITMQ, ca.server_identity(), Start::Tls).await,
            redis: TlsProxy::start(REDIS, ca.server_identity(), Start::Tls).await,
        }
    }

    /// Points the config's URLs at the proxies, each asking for TLS its own way.
    fn configure(&self, config: &mut Config) {
        let db = database(&config.postgres.url).to_owned();
        config.postgres.url = format!(
            "postgres://postgres@{}/{db}?sslmode=require",
            self.postgres.addr
        );
        config.rabbitmq.url = format!("amqps://guest:guest@{}/%2f", self.rabbitmq.addr).into();
        config.redis.url = format!("rediss://{}/0", self.redis.addr).into();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_role_works_with_all_three_dependencies_over_tls() {
    let ca = Ca::new("sumsvc test CA");
    let tls = OverTls::start(&ca).await;
    let mut config = unique_config();
    tls.configure(&mut config);
    config.tls.ca_file = ca.ca_file();
    let _cleanup = CleanupOnDrop(config.clone());

    run_binary(&config, &["migrate"]).await.ok();
    assert!(tls.postgres.handshakes() > 0, "migrate did not use TLS");
    let app = App::start_without_migrate(config.clone()).await;
    let _workers = Workers::start(&config);
    let ready = app
        .wait_for(
            |r| r.body["status"] == "ready" && r.body["workers"] == 2,
            "readiness over TLS",
        )
        .await;
    assert_eq!(ready.status, 200, "{ready:?}");

    let r = app.post("/sync/sum", r#"{"args": [0.1, 0.2]}"#).await;
    assert_eq!((r.status, r.text.as_str()), (200, r#"{"result":0.3}"#));
    let r = app.post("/async/post_task", r#"{"args": [1, 2.5]}"#).await;
    let session_id = r.body["session_id"].as_i64().expect("session_id");
    let r = app.poll(session_id).await;
    assert_eq!(r.body["status"], "done", "{r:?}");
    assert!(r.text.contains(r#""result":3.5"#), "{}", r.text);

    let listed = run_binary(&config, &["dead", "list"]).await;
    assert!(listed.ok().starts_with("0 messages"), "{listed:?}");
    // The publisher, two consumers and `dead`; the pool and the result subscription.
    assert!(
        tls.rabbitmq.handshakes() >= 4,
        "{}",
        tls.rabbitmq.handshakes()
    );
    assert!(tls.redis.handshakes() >= 2, "{}", tls.redis.handshakes());
}

#[tokio::test(flavor = "multi_thread")]
async fn sslmode_require_refuses_a_postgres_without_tls_and_says_so() {
    let ca = Ca::new("sumsvc test CA");
    let plain = TlsProxy::start(POSTGRES, ca.server_identity(), Start::PostgresWithoutTls).await;
    let mut config = unique_config();
    let _cleanup = CleanupOnDrop(config.clone());
    let db = database(&config.postgres.url).to_owned();
    config.postgres.url = format!("postgres://postgres@{}/{db}?sslmode=require", plain.addr);

    let ran = run_binary(&config, &["migrate"]).await;
    let stderr = ran.failed();
    assert!(stderr.contains("cannot connect to PostgreSQL"), "{stderr}");
    assert!(
        stderr.contains("PostgreSQL does not offer TLS") && stderr.contains("sslmode=require"),
        "{stderr}"
    );
    let sessions = sumsvc::Sessions::new(&config.postgres, &config.tls).unwrap();
    let down = sessions.ping().await.unwrap_err();
    assert_eq!(down.dependency, sumsvc::Dependency::Postgres);
    assert!(down.cause.contains("does not offer TLS"), "{down}");

    // The same server with TLS preferred rather than required: plain text it is.
    config.postgres.url = format!("postgres://postgres@{}/{db}?sslmode=prefer", plain.addr);
    run_binary(&config, &["migrate"]).await.ok();
    assert_eq!(plain.handshakes(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_from_another_ca_is_refused_naming_the_dependency() {
    let (trusted, other) = (Ca::new("trusted CA"), Ca::new("another CA"));
    let tls = OverTls::start(&other).await;
    let mut config = unique_config();
    tls.configure(&mut config);
    config.tls.ca_file = trusted.ca_file();
    let _cleanup = CleanupOnDrop(config.clone());
    let untrusted = |stderr: &str, dependency: &str| {
        assert!(
            stderr.contains(&format!("{dependency}'s certificate is not trusted"))
                && stderr.contains("tls.ca_file"),
            "{stderr}"
        );
    };

    untrusted(
        run_binary(&config, &["migrate"]).await.failed(),
        "PostgreSQL",
    );
    untrusted(
        run_binary(&config, &["dead", "list"]).await.failed(),
        "RabbitMQ",
    );

    // `serve` starts with PostgreSQL reached directly and tells what is wrong with the
    // other two in /readyz.
    let mut serving = config.clone();
    serving.postgres = direct_postgres(&config);
    let app = App::start(serving).await;
    let ready = app
        .wait_for(
            |r| {
                ["rabbitmq", "redis"].iter().all(|d| {
                    r.body[d]["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("certificate is not trusted"))
                })
            },
            "both links to report the certificate",
        )
        .await;
    assert_eq!(ready.status, 503, "{ready:?}");
    untrusted(
        ready.body["rabbitmq"]["error"].as_str().unwrap(),
        "RabbitMQ",
    );
    untrusted(ready.body["redis"]["error"].as_str().unwrap(), "Redis");
    let r = app.post("/async/post_task", r#"{"args": [1]}"#).await;
    r.assert_problem(503, "RabbitMQ");
    untrusted(r.body["detail"].as_str().unwrap(), "RabbitMQ");
}

#[tokio::test(flavor = "multi_thread")]
async fn sslmode_prefer_encrypts_without_checking_the_certificate() {
    // No tls.ca_file, so the system's CAs, which never signed this test's certificate:
    // `require` refuses it, `prefer` takes it, as libpq does.
    let ca = Ca::new("sumsvc test CA");
    let proxy = TlsProxy::start(POSTGRES, ca.server_identity(), Start::Postgres).await;
    let mut config = unique_config();
    let _cleanup = CleanupOnDrop(config.clone());
    let db = database(&config.postgres.url).to_owned();

    config.postgres.url = format!("postgres://postgres@{}/{db}?sslmode=require", proxy.addr);
    let refused = run_binary(&config, &["migrate"]).await;
    assert!(
        refused.failed().contains("certificate is not trusted"),
        "{refused:?}"
    );
    config.postgres.url = format!("postgres://postgres@{}/{db}?sslmode=prefer", proxy.addr);
    run_binary(&config, &["migrate"]).await.ok();
    assert!(proxy.handshakes() > 0, "prefer did not use TLS");
}
