//! Runs a `sumsvc` command to its end, as an operator would from a shell, and keeps
//! what it printed.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sumsvc::Config;

/// How long a command may run before the test fails.
const LIMIT: Duration = Duration::from_secs(60);

/// A finished command: its exit status and what it printed.
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// Stdout of a command that must have succeeded.
    pub fn ok(&self) -> &str {
        assert!(self.status.success(), "{self:#?}");
        &self.stdout
    }

    /// Stderr of a command that must have failed.
    pub fn failed(&self) -> &str {
        assert!(!self.status.success(), "{self:#?}");
        &self.stderr
    }
}

/// Runs `sumsvc <args>` configured like [`spawn_binary`](crate::process::spawn_binary),
/// with stdout and stderr captured; kills it and fails the test after a minute.
pub async fn run_binary(config: &Config, args: &[&str]) -> Ran {
    run_binary_logging(config, args, "warn").await
}

/// [`run_binary`] with `RUST_LOG` set to `log`.
pub async fn run_binary_logging(config: &Config, args: &[&str], log: &str) -> Ran {
    let mut child = Command::new(crate::process::binary())
        .args(args)
        .envs(crate::process::env_of(config))
        .env("RUST_LOG", log)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sumsvc");
    let stdout = read_all(child.stdout.take().unwrap());
    let stderr = read_all(child.stderr.take().unwrap());
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sumsvc {args:?} ran longer than {LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Ran {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Reads a pipe to its end on a thread of its own.
pub fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Removes a test's database, queues and keys when dropped, even by a failed assertion.
pub struct CleanupOnDrop(pub Config);

impl Drop for CleanupOnDrop {
    fn drop(&mut self) {
        crate::cleanup::cleanup(&self.0);
    }
}
