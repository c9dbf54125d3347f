//! API keys (`auth.mode`), against the real services: who gets in, whose sessions they
//! read, how fast a revocation reaches every serve, the per-key limits, and
//! `sumsvc keys` as an operator runs it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sumsvc::AuthMode;
use support::cli::CleanupOnDrop;
use support::config::{direct_postgres, with_postgres, with_redis, POSTGRES, REDIS};
use support::keys::{create_key, keys, keys_config, start_with_keys, until_status, Client};
use support::process::env_of;
use support::proxy::proxy_to;
use support::wait::{wait_until, within};
use support::{unique_config, App, Reply, StuckWorker, Workers};

/// A session id no session has.
const NO_SESSION: i64 = 4_294_967_296;

/// The promise: a revoked key stops working within this on every serve.
const REVOKE_BOUND: Duration = Duration::from_secs(5);

/// The three protected operations, each asked with `client`.
async fn protected(client: &Client<'_>) -> [(&'static str, Reply); 3] {
    [
        (
            "/sync/sum",
            client.post("/sync/sum", r#"{"args": [1]}"#).await,
        ),
        (
            "/async/post_task",
            client.post("/async/post_task", r#"{"args": [1]}"#).await,
        ),
        ("/async/get_task_result", client.session(NO_SESSION).await),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_server_needs_no_key_and_ignores_one_sent() {
    let app = App::start(unique_config()).await;
    let made_up = format!("sumsvc_{}", "0".repeat(64));
    for client in [
        Client::anonymous(&app),
        Client::with_key(&app, &made_up),
        Client::with_authorization(&app, "Basic dXNlcjpwdw=="),
    ] {
        let id = client.submit("[1, 2]").await;
        let r = client.session(id).await;
        assert_eq!((r.status, &r.body["status"]), (200, &"pending".into()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_valid_key_every_protected_route_is_401_with_a_bearer_challenge() {
    let (app, _) = start_with_keys(keys_config(), &["real"]).await;
    let made_up = format!("sumsvc_{}", "0".repeat(64));
    for (client, refused) in [
        (Client::anonymous(&app), false),
        (
            Client::with_authorization(&app, "Basic dXNlcjpwdw=="),
            false,
        ),
        (Client::with_authorization(&app, "Bearer"), false),
        (Client::with_key(&app, &made_up), true),
        (Client::with_key(&app, "not-even-a-key"), true),
    ] {
        for (route, r) in protected(&client).await {
            r.assert_problem(401, "sumsvc keys create NAME");
            let challenge = r.header("www-authenticate").unwrap_or_default();
            assert!(
                challenge.starts_with(r#"Bearer realm="sumsvc""#),
                "{route}: {r:?}"
            );
            assert_eq!(
                challenge.contains(r#"error="invalid_token""#),
                refused,
                "{route}: {r:?}"
            );
            assert!(!r.text.contains(&made_up), "{route}: {r:?}");
        }
    }
    // The key is checked before the body is read: no key, no 415.
    let r = app
        .http
        .post(app.url("/async/post_task"))
        .header("content-type", "text/plain")
        .body("1, 2")
        .send()
        .await;
    Reply::read(r)
        .await
        .assert_problem(401, "Authorization: Bearer");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_probes_metrics_and_docs_need_no_key_and_the_docs_offer_the_bearer_scheme() {
    let (app, _) = start_with_keys(keys_config(), &[]).await;
    let anyone = Client::anonymous(&app);
    assert_eq!(anyone.get("/healthz").await.status, 200);
    let metrics = anyone.get("/metrics").await;
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert!(
        metrics.text.contains("sumsvc_http_requests_total"),
        "{}",
        metrics.text
    );
    app.wait_for(|r| r.status == 200, "/readyz to answer 200 without a key")
        .await;
    let spec = anyone.get("/openapi.json").await;
    assert_eq!(spec.status, 200, "{spec:?}");
    let scheme = &spec.body["components"]["securitySchemes"]["ApiKey"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"]),
        (&"http".into(), &"bearer".into()),
        "{scheme}"
    );
    // Swagger UI shows Authorize for the schemes of the document it holds.
    let docs = anyone.get("/docs").await;
    assert_eq!(docs.status, 200);
    assert!(docs.text.contains(r#""securitySchemes""#));
    assert!(docs.text.contains(r#""scheme": "bearer""#));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_is_read_only_by_the_key_that_made_it_and_others_get_404() {
    let config = keys_config();
    let (app, secrets) = start_with_keys(config.clone(), &["alice", "bob"]).await;
    let alice = Client::with_key(&app, &secrets[0]);
    let bob = Client::with_key(&app, &secrets[1]);

    let hers = alice.submit("[1, 2]").await;
    let r = alice.session(hers).await;
    assert_eq!((r.status, &r.body["status"]), (200, &"pending".into()));

    // To another key her session is one that does not exist, word for word (but for
    // the request id each problem names).
    let theirs = bob.session(hers).await;
    theirs.assert_problem(404, &format!("no session has id {hers}"));
    let missing = bob.session(NO_SESSION).await;
    let without_instance = |body: &serde_json::Value| {
        let mut body = body.clone();
        body.as_object_mut().unwrap().remove("instance");
        body.to_string()
    };
    assert_eq!(
        without_instance(&theirs.body).replace(&hers.to_string(), "N"),
        without_instance(&missing.body).replace(&NO_SESSION.to_string(), "N")
    );

    // A session made in open mode belongs to no key, and an open server reads no
    // key's session.
    let sessions = sumsvc::Sessions::new(&direct_postgres(&config), &config.tls).unwrap();
    let open_made = sessions.create(uuid::Uuid::new_v4(), None).await.unwrap();
    alice
        .session(open_made)
        .await
        .assert_problem(404, "no session has id");
    let mut open_config = config.clone();
    open_config.auth.mode = AuthMode::Open;
    let open = App::start(open_config).await;
    let anyone = Client::anonymous(&open);
    assert_eq!(anyone.session(open_made).await.status, 200);
    anyone
        .session(hers)
        .await
        .assert_problem(404, "no session has id");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_key_is_refused_by_every_running_serve_within_5_seconds() {
    let config = keys_config();
    assert_eq!(config.auth.revoke_within, REVOKE_BOUND, "the default");
    let (first, secrets) = start_with_keys(config.clone(), &["doomed", "kept"]).await;
    let second = App::start(config.clone()).await;
    let serves = [&first, &second];
    for app in serves {
        for secret in &secrets {
            let r = Client::with_key(app, secret).session(NO_SESSION).await;
            assert_eq!(r.status, 404, "accepted before the revocation: {r:?}");
        }
    }

    let started = Instant::now();
    keys(&config, &["revoke", "doomed"]).await.ok();
    for app in serves {
        let doomed = Client::with_key(app, &secrets[0]);
        let r = loop {
            let r = doomed.session(NO_SESSION).await;
            if r.status == 401 {
                break r;
            }
            assert!(
                started.elapsed() < REVOKE_BOUND,
                "still accepted {:?} after the revocation: {r:?}",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        r.assert_problem(401, "unknown or revoked");
        let challenge = r.header("www-authenticate").unwrap();
        assert!(challenge.contains(r#"error="invalid_token""#), "{r:?}");
    }
    eprintln!(
        "both serves refused the revoked key {:?} after",
        started.elapsed()
    );
    for app in serves {
        let r = Client::with_key(app, &secrets[1]).session(NO_SESSION).await;
        assert_eq!(r.status, 404, "the other key still works: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_that_cannot_be_read_again_are_not_trusted_past_revoke_within() {
    let proxy = proxy_to(POSTGRES).await;
    let mut config = keys_config();
    with_postgres(&mut config, proxy.addr);
    config.auth.revoke_within = Duration::from_secs(2);
    let (app, secrets) = start_with_keys(config.clone(), &["k"]).await;
    let _workers = Workers::start(&config);
    app.wait_for_workers(2).await;
    let k = Client::with_key(&app, &secrets[0]);
    let sum = || k.post("/sync/sum", r#"{"args": [1, 2]}"#);
    assert_eq!(sum().await.status, 200);

    // /sync/sum needs no PostgreSQL of its own: only the keys, which cannot be read now.
    proxy.cut();
    let took = until_status(503, Duration::from_secs(5), sum).await;
    assert!(
        took < config.auth.revoke_within + Duration::from_secs(1),
        "{took:?}"
    );
    let r = sum().await;
    r.assert_problem(503, "auth.revoke_within");
    assert!(
        r.body["detail"].as_str().unwrap().contains("PostgreSQL"),
        "{r:?}"
    );
    assert_eq!(r.header("retry-after"), Some("1"));

    proxy.restore();
    until_status(200, Duration::from_secs(10), sum).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_past_its_rate_gets_429_with_retry_after_and_works_again_after_it() {
    let mut config = keys_config();
    config.auth.rate = 1;
    config.auth.burst = 3;
    let (app, secrets) = start_with_keys(config, &["busy", "calm"]).await;
    let busy = Client::with_key(&app, &secrets[0]);

    // At once, so that the budget cannot refill in between.
    let replies = futures_util::future::join_all((0..4).map(|_| busy.session(NO_SESSION))).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 404).count(),
        3,
        "{replies:?}"
    );
    let limited = replies.iter().find(|r| r.status == 429).expect("one 429");
    limited.assert_problem(429, "auth.rate");
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert_eq!(retry_after, 1, "{limited:?}");

    // Another key has a budget of its own.
    let calm = Client::with_key(&app, &secrets[1]);
    assert_eq!(calm.session(NO_SESSION).await.status, 404);

    // A client that waits as told gets in.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(busy.session(NO_SESSION).await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn keyed_answers_tell_the_keys_budget_in_the_ratelimit_fields() {
    let mut config = keys_config();
    config.auth.rate = 2;
    config.auth.burst = 4;
    let (app, secrets) = start_with_keys(config, &["paced"]).await;
    let client = Client::with_key(&app, &secrets[0]);

    let replies = futures_util::future::join_all((0..5).map(|_| client.session(NO_SESSION))).await;
    let mut left: Vec<String> = replies
        .iter()
        .filter(|r| r.status == 404)
        .map(|r| {
            assert_eq!(
                r.header("ratelimit-policy"),
                Some(r#""key";q=4;w=2"#),
                "{r:?}"
            );
            r.header("ratelimit").unwrap().to_owned()
        })
        .collect();
    left.sort();
    // Each request allowed leaves one fewer; the whole burst is back within 2 s.
    assert_eq!(left.len(), 4, "{replies:?}");
    for (r, field) in [0, 1, 2, 3].iter().zip(&left) {
        assert!(field.starts_with(&format!(r#""key";r={r};t="#)), "{left:?}");
    }
    let refused = replies.iter().find(|r| r.status == 429).expect("one 429");
    assert_eq!(
        refused.header("ratelimit"),
        Some(r#""key";r=0;t=2"#),
        "{refused:?}"
    );

    let (open, _workers) = support::started::app_with_workers().await;
    let r = open
        .get(&format!("/async/get_task_result?session_id={NO_SESSION}"))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("ratelimit"), None, "an open server has no budgets");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_with_its_most_sync_requests_waiting_gets_429_and_other_keys_do_not() {
    let mut config = keys_config();
    config.auth.max_sync_waiters = 2;
    config.tasks.sync_timeout = Duration::from_secs(60);
    let (app, secrets) = start_with_keys(config.clone(), &["waiting", "other"]).await;
    let app = Arc::new(app);
    // A consumer that holds every task and finishes none: sync requests stay waiting.
    let stuck = StuckWorker::start(&config);
    app.wait_for_workers(1).await;

    let sync = |secret: &String, args: &'static str| {
        let (app, secret) = (app.clone(), secret.clone());
        tokio::spawn(async move {
            Client::with_key(&app, &secret)
                .post("/sync/sum", &format!(r#"{{"args": {args}}}"#))
                .await
        })
    };
    let waiting = [sync(&secrets[0], "[1, 2]"), sync(&secrets[0], "[3, 4]")];
    wait_until("two sync requests queued", Duration::from_secs(20), || {
        stuck.received() >= 2
    })
    .await;

    let started = Instant::now();
    let r = Client::with_key(&app, &secrets[0])
        .post("/sync/sum", r#"{"args": [5]}"#)
        .await;
    r.assert_problem(429, "auth.max_sync_waiters");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered at once"
    );
    // Its async requests are not capped; another key's sync requests are not either.
    let id = Client::with_key(&app, &secrets[0]).submit("[6]").await;
    let other = sync(&secrets[1], "[7, 8]");
    // Four tasks: two waiting, the submitted one and the other key's.
    wait_until(
        "the other key's sync request queued",
        Duration::from_secs(20),
        || stuck.received() >= 4,
    )
    .await;

    stuck.release();
    let workers = Workers::start(&config);
    let mut sums = Vec::new();
    for request in waiting.into_iter().chain([other]) {
        let r = request.await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        sums.push(r.text);
    }
    assert_eq!(
        sums,
        [r#"{"result":3}"#, r#"{"result":7}"#, r#"{"result":15}"#]
    );
    // The finished waits freed their places.
    let r = Client::with_key(&app, &secrets[0])
        .post("/sync/sum", r#"{"args": [5]}"#)
        .await;
    assert_eq!(r.text, r#"{"result":5}"#, "{r:?}");
    let done = Client::with_key(&app, &secrets[0]).session(id).await;
    assert_eq!(done.status, 200, "{done:?}");
    workers.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keys_budget_and_waiting_requests_are_counted_across_every_serve() {
    let mut config = keys_config();
    config.auth.rate = 1;
    config.auth.burst = 3;
    config.auth.max_sync_waiters = 1;
    config.tasks.sync_timeout = Duration::from_secs(5);
    let (first, secrets) = start_with_keys(config.clone(), &["busy", "waiting"]).await;
    // A second serve of the same fleet, behind the same load balancer, say.
    let second = App::start_without_migrate(config.clone()).await;
    let (first, second) = (Arc::new(first), Arc::new(second));

    // The burst is spent on one serve; the other refuses the next request.
    for _ in 0..3 {
        let r = Client::with_key(&first, &secrets[0])
            .session(NO_SESSION)
            .await;
        assert_eq!(r.status, 404, "{r:?}");
    }
    let r = Client::with_key(&second, &secrets[0])
        .session(NO_SESSION)
        .await;
    r.assert_problem(429, "auth.rate");

    // One sync request may wait, on any serve.
    let stuck = StuckWorker::start(&config);
    first.wait_for_workers(1).await;
    second.wait_for_workers(1).await;
    let waiting = {
        let (app, secret) = (first.clone(), secrets[1].clone());
        tokio::spawn(async move {
            Client::with_key(&app, &secret)
                .post("/sync/sum", r#"{"args": [1]}"#)
                .await
        })
    };
    wait_until("the sync request queued", Duration::from_secs(20), || {
        stuck.received() >= 1
    })
    .await;
    let r = Client::with_key(&second, &secrets[1])
        .post("/sync/sum", r#"{"args": [2]}"#)
        .await;
    r.assert_problem(429, "auth.max_sync_waiters");
    assert_eq!(waiting.await.unwrap().status, 202);
    // Its count ended with it.
    let r = Client::with_key(&second, &secrets[1])
        .post("/async/post_task", r#"{"args": [3]}"#)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn while_redis_does_not_answer_each_serve_counts_a_keys_use_for_itself() {
    let redis = proxy_to(REDIS).await;
    let mut config = keys_config();
    with_redis(&mut config, redis.addr);
    config.auth.rate = 1;
    config.auth.burst = 2;
    let (first, secrets) = start_with_keys(config.clone(), &["busy"]).await;
    let second = App::start_without_migrate(config.clone()).await;

    redis.cut();
    // Not a 503 for every keyed request: the limits apply per serve meanwhile.
    for app in [&first, &second] {
        let client = Client::with_key(app, &secrets[0]);
        for _ in 0..2 {
            assert_eq!(client.session(NO_SESSION).await.status, 404);
        }
        client
            .session(NO_SESSION)
            .await
            .assert_problem(429, "auth.rate");
    }

    redis.restore();
    // Counted in Redis again: one budget for the fleet, refilled meanwhile.
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_of(&first, &secrets[0]).await != 404 {
        assert!(Instant::now() < deadline, "the key is still refused");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let spent = [
        status_of(&first, &secrets[0]).await,
        status_of(&second, &secrets[0]).await,
        status_of(&second, &secrets[0]).await,
    ];
    assert!(
        spent.contains(&429),
        "the fleet's burst of 2 held: {spent:?}"
    );
}

/// The status of a read of a session no one has, with `secret`.
async fn status_of(app: &App, secret: &str) -> u16 {
    Client::with_key(app, secret)
        .session(NO_SESSION)
        .await
        .status
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_create_prints_the_secret_alone_on_the_last_line_and_stores_only_its_digest() {
    let config = keys_config();
    let _cleanup = CleanupOnDrop(config.clone());
    sumsvc::migrate_database(&config.postgres, &config.tls)
        .await
        .unwrap();

    let ran = keys(&config, &["create", "ci"]).await;
    let out = ran.ok();
    let secret = out.lines().last().unwrap();
    let hex = secret.strip_prefix("sumsvc_").expect("the prefix");
    assert!(
        hex.len() == 64 && hex.bytes().all(|c| c.is_ascii_hexdigit()),
        "{out:?}"
    );
    assert_eq!(out.matches(hex).count(), 1, "printed once: {out:?}");
    assert!(!ran.stderr.contains(hex), "{ran:?}");

    let (db, connection) = tokio_postgres::connect(&config.postgres.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = db
        .query(
            "SELECT row_to_json(k)::text, k.digest = sha256(convert_to($1, 'UTF8')) \
             FROM api_keys k",
            &[&secret],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let (row, digest_matches): (String, bool) = (rows[0].get(0), rows[0].get(1));
    assert!(digest_matches, "the digest is SHA-256 of the secret: {row}");
    assert!(!row.contains(hex), "the secret is stored: {row}");

    let taken = keys(&config, &["create", "ci"]).await;
    assert!(taken.failed().contains("exists already"), "{taken:?}");
    let bad = keys(&config, &["create", "two words"]).await;
    assert!(bad.failed().contains("is not a key name"), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_list_shows_each_key_and_its_revocation_and_no_secret() {
    let config = keys_config();
    let _cleanup = CleanupOnDrop(config.clone());
    sumsvc::migrate_database(&config.postgres, &config.tls)
        .await
        .unwrap();
    let empty = keys(&config, &["list"]).await;
    assert!(empty.ok().contains("sumsvc keys create NAME"), "{empty:?}");

    let secrets = [
        create_key(&config, "billing").await,
        create_key(&config, "ci").await,
    ];
    let revoked = keys(&config, &["revoke", "ci"]).await;
    assert!(
        revoked.ok().starts_with("revoked API key \"ci\""),
        "{revoked:?}"
    );
    let again = keys(&config, &["revoke", "ci"]).await;
    assert!(again.ok().contains("revoked already"), "{again:?}");
    let unknown = keys(&config, &["revoke", "nope"]).await;
    assert!(
        unknown.failed().contains("no API key is named \"nope\""),
        "{unknown:?}"
    );

    let ran = keys(&config, &["list"]).await;
    let lines: Vec<Vec<&str>> = ran
        .ok()
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 3, "{ran:?}");
    assert_eq!(lines[0], ["NAME", "CREATED", "REVOKED"]);
    assert_eq!((lines[1][0], lines[1][2]), ("billing", "-"), "{ran:?}");
    assert_eq!(lines[2][0], "ci", "{ran:?}");
    assert!(lines[2][2].ends_with('Z'), "revoked at a time: {ran:?}");
    for secret in &secrets {
        assert!(!ran.stdout.contains(&secret[7..]), "{ran:?}");
    }
    assert!(!ran.stdout.contains("sumsvc_"), "{ran:?}");

    // A revoked key keeps its name.
    let taken = keys(&config, &["create", "ci"]).await;
    assert!(taken.failed().contains("exists already"), "{taken:?}");
}

/// What `sumsvc serve` logs until it says it serves.
fn start_log(config: &sumsvc::Config) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sumsvc"))
        .arg("serve")
        .envs(env_of(config))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sumsvc");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("serving the API") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        log.contains("serving the API"),
        "serve did not start: {log}"
    );
    log
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_serve_warns_at_start_when_it_listens_beyond_loopback() {
    const WARNING: &str = "auth.mode is open and http.listen is not a loopback address";
    let config = unique_config();
    let _cleanup = CleanupOnDrop(config.clone());
    sumsvc::migrate_database(&config.postgres, &config.tls)
        .await
        .unwrap();
    let port = |ip: &str| {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("{ip}:{}", probe.local_addr().unwrap().port())
            .parse()
            .unwrap()
    };
    for (ip, mode, warns) in [
        ("0.0.0.0", AuthMode::Open, true),
        ("127.0.0.1", AuthMode::Open, false),
        ("0.0.0.0", AuthMode::Keys, false),
    ] {
        let mut config = config.clone();
        config.http.listen = port(ip);
        config.auth.mode = mode;
        let log = within(
            Duration::from_secs(30),
            "serve to start",
            tokio::task::spawn_blocking(move || start_log(&config)),
        )
        .await
        .unwrap();
        assert_eq!(log.contains(WARNING), warns, "{ip} {mode:?}: {log}");
    }
}
