//! sumsvc's integration tests, in one binary: each module below is what one test binary
//! held before, and they share this process and one build of the harness (the
//! `support` crate in tests/support). Every test has a database, queue names and a
//! Redis key prefix of its own, so they run side by side. One module alone:
//! `cargo test --test it api::`.
//!
//! Three run apart, as binaries of their own: `tests/soak.rs` (long quiet periods),
//! `tests/browser.rs` (headless Chromium) and `tests/fleet.rs` (failovers under load).

mod api;
mod auth;
mod bounds;
mod bulk;
mod chaos;
mod config;
mod dead;
mod deploy;
mod dev;
mod events;
mod examples;
mod faults;
mod idempotency;
mod metrics;
mod migrate;
mod purge;
mod redis_durability;
mod redis_full;
mod secrets;
mod sessions;
mod shape;
mod slow_clients;
mod sum_examples;
mod sum_fuzz;
mod sum_properties;
mod tls;
mod tracing;
mod worker;
