//! Slow and greedy clients: half a head, half a body, idle connections, more
//! connections than the cap, HTTP/2 streams, uploads beyond the body budget, and a
//! flood that exhausts the file descriptors of `serve`. Each against the real
//! services, with timers of a second or so and waits longer than each of them.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sumsvc::Config;
use support::cleanup::cleanup;
use support::config::{direct_postgres, ListenOnFreePort};
use support::process::env_of;
use support::wait::{wait_until, within};
use support::{unique_config, App, KillOnDrop, Reply, StuckWorker};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Room for a loaded machine between a timer and what a client sees of it.
const SLACK: Duration = Duration::from_secs(3);

fn addr_of(app: &App) -> SocketAddr {
    app.base.trim_start_matches("http://").parse().unwrap()
}

/// A response read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {self:?}"))
    }
}

/// Longest any test waits for a response it expects.
const RESPONSE: Duration = Duration::from_secs(30);

/// Reads one HTTP/1.1 response (with a `Content-Length`) from `stream`.
async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> Raw {
    within(RESPONSE, "a response", read_response_unbounded(stream)).await
}

async fn read_response_unbounded(stream: &mut (impl AsyncRead + Unpin)) -> Raw {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.expect("read a response");
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut raw = Raw {
        status,
        head,
        body: String::new(),
    };
    let length: usize = raw
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.expect("read a body");
        assert!(n > 0, "closed within a body");
        buf.extend_from_slice(&chunk[..n]);
    }
    raw.body = String::from_utf8(buf[head_end..head_end + length].to_vec()).unwrap();
    raw
}

/// Sends a request on a new connection and reads its response.
async fn request(addr: SocketAddr, text: &str) -> (TcpStream, Raw) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(text.as_bytes()).await.unwrap();
    let raw = read_response(&mut stream).await;
    (stream, raw)
}

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: sumsvc\r\n\r\n";

/// Waits until the server closes `stream` (reading and dropping whatever it sends),
/// for at most `limit`; returns when, measured from `since`.
async fn closed(stream: &mut TcpStream, since: Instant, limit: Duration) -> Duration {
    let mut sink = [0u8; 4096];
    within(limit, "the server to close the connection", async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
    since.elapsed()
}

/// Asserts that a timer of `timer` closed a connection `after` a moment: not before
/// it, not long after it.
fn assert_cut_at(after: Duration, timer: Duration, what: &str) {
    assert!(
        after >= timer - Duration::from_millis(50) && after < timer + SLACK,
        "{what}: closed after {after:?}, the timer is {timer:?}"
    );
}

fn short_timers() -> Config {
    let mut config = unique_config();
    config.http.header_timeout = Duration::from_secs(1);
    config.http.body_timeout = Duration::from_secs(1);
    config.http.idle_timeout = Duration::from_secs(3);
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_sends_half_a_head_is_cut_off_at_the_header_timeout() {
    let config = short_timers();
    let timer = config.http.header_timeout;
    let app = App::start(config).await;
    let addr = addr_of(&app);

    let half_head = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let opened = Instant::now();
        s.write_all(b"POST /sync/sum HTTP/1.1\r\nHost: sumsvc\r\nContent-Ty")
            .await
            .unwrap();
        closed(&mut s, opened, timer + SLACK).await
    };
    // A byte every 200 ms: the timer bounds the whole head, not a pause.
    let trickle = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let opened = Instant::now();
        let head = b"GET /healthz HTTP/1.1\r\nHost: sumsvc\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        for byte in head {
            if s.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        closed(&mut s, opened, timer + SLACK).await
    };
    let silent = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        closed(&mut s, Instant::now(), timer + SLACK).await
    };
    // Less than the 24 bytes that tell HTTP/1 from HTTP/2.
    let undecided = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let opened = Instant::now();
        s.write_all(b"PRI * HTTP/2.0").await.unwrap();
        closed(&mut s, opened, timer + SLACK).await
    };
    // HTTP/2 by prior knowledge: the preface and settings, then no stream.
    let h2_no_stream = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let opened = Instant::now();
        s.write_all(H2_PREFACE).await.unwrap();
        s.write_all(&h2_empty_settings()).await.unwrap();
        closed(&mut s, opened, timer + SLACK).await
    };
    let (half_head, trickle, silent, undecided, h2_no_stream) =
        tokio::join!(half_head, trickle, silent, undecided, h2_no_stream);
    assert_cut_at(half_head, timer, "half a head");
    assert_cut_at(trickle, timer, "a head trickled a byte at a time");
    assert_cut_at(silent, timer, "a connection that says nothing");
    assert_cut_at(
        undecided,
        timer,
        "a connection that never says its protocol",
    );
    assert_cut_at(h2_no_stream, timer, "an HTTP/2 connection with no stream");

    // The service is unharmed.
    let (_, r) = request(addr, HEALTHZ).await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout_and_not_before() {
    let config = short_timers();
    let (header, idle) = (config.http.header_timeout, config.http.idle_timeout);
    let app = App::start(config).await;
    let (mut s, r) = request(addr_of(&app), HEALTHZ).await;
    assert_eq!(r.status, 200, "{r:?}");

    // Idle past the header timeout: the connection still takes a request.
    tokio::time::sleep(header + Duration::from_secs(1)).await;
    s.write_all(HEALTHZ.as_bytes()).await.unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 200, "{r:?}");
    let answered = Instant::now();

    let after = closed(&mut s, answered, idle + SLACK).await;
    assert_cut_at(after, idle, "an idle connection");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_waits_longer_than_every_timer_is_answered() {
    let config = short_timers();
    let app = App::start(config.clone()).await;
    let _stuck = StuckWorker::start(&config);
    app.wait_for_workers(1).await;
    let body = r#"{"args": [1, 2]}"#;
    let (_, r) = request(
        addr_of(&app),
        &format!(
            "POST /sync/sum HTTP/1.1\r\nHost: sumsvc\r\nContent-Type: application/json\r\n\
             Prefer: wait=5\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    // Five seconds of waiting for a worker: longer than the header, body and idle
    // timeouts, and answered all the same.
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.json()["status"], "pending", "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_stalls_gets_408_and_its_connection_closed() {
    let config = short_timers();
    let timer = config.http.body_timeout;
    let app = App::start(config).await;
    let addr = addr_of(&app);

    // Ten bytes of a hundred, then nothing.
    let half_body = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"POST /async/post_task HTTP/1.1\r\nHost: sumsvc\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"args\": [",
        )
        .await
        .unwrap();
        let sent = Instant::now();
        let r = read_response(&mut s).await;
        (r, sent.elapsed(), closed(&mut s, sent, timer + SLACK).await)
    };
    // A chunk every 300 ms, never the last: the timer bounds the whole body.
    let trickle = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"POST /sync/sum HTTP/1.1\r\nHost: sumsvc\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\n\r\na\r\n{\"args\": [\r\n",
        )
        .await
        .unwrap();
        let sent = Instant::now();
        let (mut read, mut write) = s.into_split();
        let dribble = tokio::spawn(async move {
            while write.write_all(b"2\r\n1,\r\n").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        let r = read_response(&mut read).await;
        let answered = sent.elapsed();
        dribble.abort();
        (r, answered)
    };
    let ((r, answered, closed_after), (trickled, trickle_answered)) =
        tokio::join!(half_body, trickle);
    for (r, answered) in [(&r, answered), (&trickled, trickle_answered)] {
        assert_eq!(r.status, 408, "{r:?}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(r.header("connection"), Some("close"), "{r:?}");
        let detail = r.json()["detail"].as_str().unwrap().to_owned();
        assert!(detail.contains("http.body_timeout"), "{detail}");
        assert_cut_at(answered, timer, "a stalled body's answer");
    }
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("10 bytes came"),
        "{r:?}"
    );
    assert!(closed_after < timer + SLACK, "{closed_after:?}");
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn h2_empty_settings() -> [u8; 9] {
    // Length 0, type SETTINGS (4), no flags, stream 0.
    [0, 0, 0, 4, 0, 0, 0, 0, 0]
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_advertises_the_stream_cap_in_its_settings() {
    let mut config = short_timers();
    config.http.http2_max_streams = 7;
    let app = App::start(config).await;
    let mut s = TcpStream::connect(addr_of(&app)).await.unwrap();
    s.write_all(H2_PREFACE).await.unwrap();
    s.write_all(&h2_empty_settings()).await.unwrap();
    // The server's first frame is its SETTINGS.
    let mut header = [0u8; 9];
    s.read_exact(&mut header).await.unwrap();
    assert_eq!(header[3], 4, "not a SETTINGS frame: {header:?}");
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; length];
    s.read_exact(&mut payload).await.unwrap();
    let settings: Vec<(u16, u32)> = payload
        .chunks(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    // SETTINGS_MAX_CONCURRENT_STREAMS is 0x3.
    assert!(settings.contains(&(3, 7)), "{settings:?}");

    // Three times as many requests at once on one connection: the excess wait for a
    // stream, and all are answered.
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(TcpStream::connect(addr_of(&app)).await.unwrap()),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // Once one request is answered the client knows the server's SETTINGS; before,
    // it may open more streams than the cap, and the server refuses the excess.
    let healthz = || {
        hyper::Request::get(app.url("/healthz"))
            .body(String::new())
            .unwrap()
    };
    let first = sender.clone().send_request(healthz()).await.unwrap();
    assert_eq!(first.status(), 200);
    let requests = (0..21).map(|_| {
        let mut sender = sender.clone();
        let request = healthz();
        async move { sender.send_request(request).await }
    });
    for r in futures_util::future::join_all(requests).await {
        let r = r.unwrap();
        assert_eq!(r.version(), hyper::Version::HTTP_2);
        assert_eq!(r.status(), 200);
    }
}

/// A body of exactly `len` bytes: `{"args":[1,1,...,1]}`.
fn body_of(len: usize) -> String {
    let ones = (len - r#"{"args":[1]}"#.len()) / 2;
    let body = format!(r#"{{"args":[{}1]}}"#, "1,".repeat(ones));
    format!("{body}{}", " ".repeat(len - body.len()))
}

/// The head of a `post_task` upload of `len` bytes, with `extra` header lines.
fn post_head(len: usize, extra: &str) -> String {
    format!(
        "POST /async/post_task HTTP/1.1\r\nHost: sumsvc\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\n{extra}\r\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_beyond_the_body_budget_get_503_until_the_budget_frees() {
    const SIZE: usize = 100_000;
    let mut config = unique_config();
    // Large tasks at once on a loaded machine: the broker's confirms may take a while.
    config.rabbitmq.timeout = Duration::from_secs(10);
    config.limits.max_body_bytes = SIZE;
    // Room for three bodies of SIZE and a small one.
    config.limits.body_budget_bytes = 3 * SIZE + 10_000;
    let app = App::start(config).await;
    app.wait_for(|r| r.body["rabbitmq"]["status"] == "up", "RabbitMQ")
        .await;
    let addr = addr_of(&app);
    let body = body_of(SIZE);

    // Three uploads take their share of the budget (the server reserves a body's
    // length before it reads a byte, and it says "100 Continue" when it starts to
    // read), send a first part, and hold it.
    let mut holding = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = post_head(SIZE, "Expect: 100-continue\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let mut go_on = [0u8; 25];
        s.read_exact(&mut go_on).await.unwrap();
        assert_eq!(&go_on, b"HTTP/1.1 100 Continue\r\n\r\n");
        s.write_all(&body.as_bytes()[..1000]).await.unwrap();
        holding.push(s);
    }
    let upload = |body: String| {
        let http = reqwest::Client::new();
        let url = app.url("/async/post_task");
        async move {
            let r = http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            Reply::read(r).await
        }
    };
    // Every other large upload is refused while the three hold the budget, those sent
    // chunked (no Content-Length) too; a small one still fits.
    let others: Vec<_> = (0..4).map(|_| upload(body.clone())).collect();
    for r in futures_util::future::join_all(others).await {
        r.assert_problem(503, "limits.body_budget_bytes");
        assert!(r.header("retry-after").is_some(), "{r:?}");
    }
    let chunked = app
        .http
        .post(app.url("/async/post_task"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            body.as_bytes()
                .chunks(10_000)
                .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
                .collect::<Vec<_>>(),
        )))
        .send()
        .await;
    Reply::read(chunked)
        .await
        .assert_problem(503, "limits.body_budget_bytes");
    // A client that waits for 100 Continue is answered at once and sends nothing.
    let (mut s, r) = request(addr, &post_head(SIZE, "Expect: 100-continue\r\n")).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("limits.body_budget_bytes"), "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    closed(&mut s, Instant::now(), SLACK).await;
    let small = upload(r#"{"args": [1, 2]}"#.to_owned()).await;
    assert_eq!(small.status, 200, "{small:?}");

    // The three finish their bodies and are accepted.
    for s in &mut holding {
        s.write_all(&body.as_bytes()[1000..]).await.unwrap();
    }
    for s in &mut holding {
        let r = read_response(s).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.json()["session_id"].is_i64(), "{r:?}");
    }
    // With the budget free again, three large uploads at once all succeed.
    let again: Vec<_> = (0..3).map(|_| upload(body.clone())).collect();
    for r in futures_util::future::join_all(again).await {
        assert_eq!(r.status, 200, "{r:?}");
    }
}

/// `serve` as a child process, started through `command` (which may limit it).
async fn spawn_serve(config: &mut Config, mut command: Command) -> KillOnDrop {
    sumsvc::migrate_database(&direct_postgres(config), &config.tls)
        .await
        .unwrap();
    ListenOnFreePort::listen_on_free_port(config);
    let child = command
        .arg("serve")
        .envs(env_of(config))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    // Ready once /healthz answers; each probe closes its connection.
    let addr = config.http.listen;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let probe = "GET /healthz HTTP/1.1\r\nHost: sumsvc\r\nConnection: close\r\n\r\n";
            if s.write_all(probe.as_bytes()).await.is_ok() {
                let mut text = String::new();
                let _ = s.read_to_string(&mut text).await;
                if text.starts_with("HTTP/1.1 200") {
                    return child;
                }
            }
        }
        assert!(Instant::now() < deadline, "serve did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sumsvc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sumsvc"))
}

/// Open file descriptors of a process.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_cap_wait_and_are_served_once_others_close() {
    const CAP: usize = 4;
    let mut config = short_timers();
    config.http.max_connections = CAP;
    config.http.idle_timeout = Duration::from_secs(60);
    let serve = spawn_serve(&mut config, sumsvc()).await;
    let addr = config.http.listen;
    let pid = serve.0.id();

    // CAP kept-alive connections, each served once.
    let mut first = Vec::new();
    for _ in 0..CAP {
        let (s, r) = request(addr, HEALTHZ).await;
        assert_eq!(r.status, 200, "{r:?}");
        first.push(s);
    }
    let before = fds(pid);

    // More connect (the kernel queues them) but get no answer, and take no descriptor.
    let mut waiting = Vec::new();
    for _ in 0..CAP {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(HEALTHZ.as_bytes()).await.unwrap();
        waiting.push(s);
    }
    let mut byte = [0u8; 1];
    for s in &mut waiting {
        let read = tokio::time::timeout(Duration::from_millis(500), s.peek(&mut byte)).await;
        assert!(read.is_err(), "a connection beyond the cap was answered");
    }
    let during = fds(pid);
    assert!(
        during < before + CAP / 2,
        "serve holds {during} descriptors with {CAP} connections waiting, {before} before"
    );

    // Once the first ones close, the waiting ones are served.
    drop(first);
    for s in &mut waiting {
        let r = within(
            Duration::from_secs(5),
            "a waiting connection's answer",
            async { read_response(s).await },
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    drop(serve);
    cleanup(&config);
}

/// CPU time (user and system) a process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses: utime and stime are
    // the 14th and 15th of the whole line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_file_descriptors_serve_backs_off_and_answers_again_after_the_flood() {
    const NOFILE: u64 = 256;
    let mut config = unique_config();
    // The flood's connections would otherwise be closed for their missing heads.
    config.http.header_timeout = Duration::from_secs(60);
    let mut command = sumsvc();
    // SAFETY: setrlimit is async-signal-safe, as a pre_exec hook must be.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: NOFILE,
                rlim_max: NOFILE,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let serve = spawn_serve(&mut config, command).await;
    let addr = config.http.listen;
    let pid = serve.0.id();

    // Twice as many connections as serve has descriptors.
    let mut flood = Vec::new();
    for _ in 0..2 * NOFILE {
        flood.push(TcpStream::connect(addr).await.unwrap());
    }
    wait_until(
        "serve to run out of descriptors",
        Duration::from_secs(10),
        || fds(pid) as u64 >= NOFILE - 1,
    )
    .await;

    // Out of descriptors with connections waiting: a loop that retried at once
    // would burn a core for these seconds.
    let (cpu_before, since) = (cpu_time(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (used, over) = (cpu_time(pid) - cpu_before, since.elapsed());
    assert!(
        used < over / 10,
        "serve used {used:?} of CPU in {over:?} while out of descriptors"
    );

    drop(flood);
    let (_, r) = within(
        Duration::from_secs(10),
        "serve to answer after the flood",
        request(addr, HEALTHZ),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    drop(serve);
    cleanup(&config);
}
