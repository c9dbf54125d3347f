//! What a benchmark needs that a test gets from its harness: a runtime, and settings
//! from the environment.

/// Runs a benchmark's body on a multi-threaded runtime (benches have no test macro).
pub fn bench_main<F: std::future::Future<Output = ()>>(body: F) {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(body)
}

/// A whole-number setting of a benchmark from its environment variable.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
