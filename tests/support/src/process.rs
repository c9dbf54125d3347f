//! `sumsvc` as a child process: the binary under test, the environment that configures
//! it, signals, and a guard that kills it.
//!
//! Only the crate that tests sumsvc knows where its binary is: Cargo gives
//! `env!("CARGO_BIN_EXE_sumsvc")` to sumsvc's integration tests and benchmarks, and not
//! to this library. So each test binary and benchmark hands the path over once, at its
//! root, with [`sumsvc_binary!`](crate::sumsvc_binary), and [`binary`] reads it back.
//! One that forgets does not link: the symbol `SUMSVC_BINARY_UNDER_TEST` is undefined.

use std::process::{Child, Command, Stdio};

use sumsvc::config::Config;

/// Names the `sumsvc` binary this build tests, for [`binary`]. Written once at the root
/// of each test binary and benchmark that links this library:
///
/// ```ignore
/// support::sumsvc_binary!();
/// ```
#[macro_export]
macro_rules! sumsvc_binary {
    () => {
        /// The `sumsvc` binary under test, read by `support::process::binary`.
        #[unsafe(no_mangle)]
        static SUMSVC_BINARY_UNDER_TEST: &str = env!("CARGO_BIN_EXE_sumsvc");
    };
}

// SAFETY: `sumsvc_binary!` is the only definition, with this type.
unsafe extern "Rust" {
    safe static SUMSVC_BINARY_UNDER_TEST: &'static str;
}

/// The path of the `sumsvc` binary under test.
pub fn binary() -> &'static str {
    SUMSVC_BINARY_UNDER_TEST
}

/// `sumsvc <args>` as a child process configured through `SUMSVC_` variables.
pub fn spawn_binary(config: &Config, args: &[&str]) -> Child {
    Command::new(binary())
        .args(args)
        .envs(env_of(config))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn sumsvc")
}

/// The `SUMSVC_` environment that reproduces `config`, with no config file read.
pub fn env_of(c: &Config) -> Vec<(String, String)> {
    let mut env = vec![("SUMSVC_CONFIG".to_owned(), "/dev/null".to_owned())];
    env.extend(c.to_env());
    env
}

/// Sends a signal to a child process (`STOP`, `CONT`, `TERM`, `KILL`).
pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([format!("-{sig}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} failed");
}

/// A child process killed when this guard is dropped, even by a panic.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
