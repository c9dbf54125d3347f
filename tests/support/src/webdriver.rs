//! Headless Chromium for tests, driven through chromedriver with the W3C WebDriver
//! protocol (JSON over HTTP): the dozen commands the browser tests use, sent with
//! reqwest. WebDriver crates were weighed and cost more than these lines: fantoccini
//! pulls in Mozilla's `webdriver` crate with second copies of http, icu and a dozen
//! more, thirtyfour a second reqwest and a newer Rust than this crate's.
//!
//! Each [`Browser`] has a directory of its own for the profile, chromedriver's log and
//! screenshots. A test that passes removes it; one that fails keeps it and prints its
//! path, and a wait that times out takes a screenshot first.

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// How long a page may take to show what a test waits for.
const PATIENCE: Duration = Duration::from_secs(20);

/// Chromium flags for a machine without network, display or sandbox: without them it
/// stalls on background fetches and first-run work.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,2400",
];

/// An element as chromedriver refers to it: its reference object, passed back as is.
#[derive(Debug, Clone)]
pub struct Element(Value);

impl Element {
    fn id(&self) -> &str {
        // One key, the W3C element identifier; its value is the id.
        self.0
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .expect("an element reference")
    }

    /// The element a script returned, if it returned one.
    pub fn from_script(value: Value) -> Option<Element> {
        value.is_object().then_some(Element(value))
    }
}

/// One Chromium, through its own chromedriver, with one WebDriver session.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    driver: Child,
    dir: Dir,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium with a fresh
    /// profile. Fails, naming the Debian package, when either is not installed.
    pub async fn start() -> Browser {
        let chromium = installed("chromium", "chromium");
        let chromedriver = installed("chromedriver", "chromium-driver");
        let dir = Dir::new();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.path.join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::new();
        let driver_url = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            http,
            session: String::new(),
            driver,
            dir,
        };
        let (http, status) = (&browser.http, &format!("{driver_url}/status"));
        browser
            .wait_for("chromedriver to be ready", || async move {
                let reply = http.get(status).send().await.ok()?;
                let body: Value = reply.json().await.ok()?;
                body["value"]["ready"].as_bool().filter(|ready| *ready)
            })
            .await;
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            browser.dir.path.join("profile").display()
        ));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let session = browser
            .send(
                reqwest::Method::POST,
                format!("{driver_url}/session"),
                Some(capabilities),
            )
            .await;
        let id = session["sessionId"].as_str().expect("a session id");
        browser.session = format!("{driver_url}/session/{id}");
        browser
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// The elements matching a CSS selector inside `within`, in document order.
    pub async fn find_all_in(&self, within: &Element, css: &str) -> Vec<Element> {
        let found = self
            .command(
                reqwest::Method::POST,
                &format!("/element/{}/elements", within.id()),
                json!({"using": "css selector", "value": css}),
            )
            .await;
        let found = found.as_array().expect("a list of elements");
        found.iter().cloned().map(Element).collect()
    }

    /// The first element matching `css` inside `within`, waiting for it to appear.
    pub async fn find_in(&self, within: &Element, css: &str) -> Element {
        self.wait_for(&format!("an element {css}"), || async move {
            self.find_all_in(within, css).await.into_iter().next()
        })
        .await
    }

    pub async fn click(&self, element: &Element) {
        self.element_command(reqwest::Method::POST, element, "/click", json!({}))
            .await;
    }

    /// Empties an input, then types `text` into it.
    pub async fn replace_text(&self, element: &Element, text: &str) {
        self.element_command(reqwest::Method::POST, element, "/clear", json!({}))
            .await;
        self.element_command(
            reqwest::Method::POST,
            element,
            "/value",
            json!({ "text": text }),
        )
        .await;
    }

    /// The element's rendered text.
    pub async fn text(&self, element: &Element) -> String {
        let text = self
            .element_command(reqwest::Method::GET, element, "/text", Value::Null)
            .await;
        text.as_str().expect("text").to_owned()
    }

    /// Runs a script in the page; `arguments[i]` are `args`, elements as [`Element::arg`].
    pub async fn script(&self, script: &str, args: Vec<Value>) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// Saves a PNG of the window, or of one element (scrolled into view), as
    /// `<dir>/<name>.png`.
    pub async fn screenshot(&self, name: &str, element: Option<&Element>) -> PathBuf {
        let png = match element {
            Some(e) => {
                self.element_command(reqwest::Method::GET, e, "/screenshot", Value::Null)
                    .await
            }
            None => {
                self.command(reqwest::Method::GET, "/screenshot", Value::Null)
                    .await
            }
        };
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("a base64 screenshot"))
            .expect("a base64 screenshot");
        let path = self.dir.path.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Polls `check` until it gives a value, for at most 20 s; then saves a screenshot
    /// and fails, naming what it waited for and where the screenshot is.
    pub async fn wait_for<T, F: Future<Output = Option<T>>>(
        &self,
        what: &str,
        mut check: impl FnMut() -> F,
    ) -> T {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if Instant::now() >= deadline {
                let shot = if self.session.is_empty() {
                    "no screenshot: no browser yet".to_owned()
                } else {
                    let path = self.screenshot("timed-out", None).await;
                    format!("screenshot {}", path.display())
                };
                panic!("timed out after {PATIENCE:?} waiting for {what} ({shot})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn element_command(
        &self,
        method: reqwest::Method,
        element: &Element,
        path: &str,
        body: Value,
    ) -> Value {
        self.command(method, &format!("/element/{}{path}", element.id()), body)
            .await
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let body = (!body.is_null()).then_some(body);
        self.send(method, format!("{}{path}", self.session), body)
            .await
    }

    /// One WebDriver request; its `value`, or a failure naming the WebDriver error.
    async fn send(&self, method: reqwest::Method, url: String, body: Option<Value>) -> Value {
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"));
        let status = response.status();
        let mut reply: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: not JSON: {e}"));
        assert!(
            status.is_success(),
            "{method} {url}: {status}: {} (chromedriver's log is in {})",
            reply["value"],
            self.dir.path.display()
        );
        reply["value"].take()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes Chromium; chromedriver goes after it. Drop cannot
        // await, so the request runs on a thread of its own.
        if !self.session.is_empty() {
            let session = self.session.clone();
            let closed = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let client = reqwest::Client::new();
                    let request = client.delete(session).timeout(Duration::from_secs(10));
                    let _ = request.send().await;
                });
            });
            let _ = closed.join();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The path of a program on `PATH`; fails naming the Debian package that installs it.
fn installed(program: &str, package: &str) -> String {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    });
    let path = found.unwrap_or_else(|| {
        panic!(
            "`{program}` is not installed: the browser tests need Debian's `{package}` \
             package (apt-get install chromium chromium-driver)"
        )
    });
    path.display().to_string()
}

/// A directory of one browser's files: removed when the test passes, kept (and named)
/// when it fails.
struct Dir {
    path: PathBuf,
}

impl Dir {
    fn new() -> Dir {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let path = std::env::temp_dir().join(format!("sumsvc-browser-{}", &id[..12]));
        std::fs::create_dir_all(&path).unwrap();
        Dir { path }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "the browser's screenshots and chromedriver's log are in {}",
                self.path.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
