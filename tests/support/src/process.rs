//! `sumsvc` as a child process: the binary under test, the environment that configures
//! it, signals, and a guard that kills it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use sumsvc::Config;

/// The path of the `sumsvc` binary under test. Cargo builds a package's binaries before
/// its integration tests and benchmarks, beside them: they run from
/// `target/<profile>/deps/`, the binary is `target/<profile>/sumsvc`. (Cargo names it in
/// `CARGO_BIN_EXE_sumsvc` to the test crates themselves, not to this library.)
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("the path of the running test");
        let profile = exe
            .parent()
            .and_then(Path::parent)
            .expect("tests run from target/<profile>/deps/");
        let binary = profile.join(format!("sumsvc{}", std::env::consts::EXE_SUFFIX));
        assert!(
            binary.is_file(),
            "{} is not built: run the tests with cargo test, which builds it",
            binary.display()
        );
        binary
    })
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
