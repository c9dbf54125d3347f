//! What a PostgreSQL error means to a client of the store.

use crate::dependency::{Dependency, Unavailable};

/// The error as a 503's cause, with the fix when the schema is older than this build.
pub fn failed(e: tokio_postgres::Error) -> Unavailable {
    let mut u = Unavailable::from_chain(Dependency::Postgres, &e);
    // A missing table or column, or session ids the database still counts itself: the
    // schema is older than this build.
    if [
        Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE),
        Some(&tokio_postgres::error::SqlState::UNDEFINED_COLUMN),
        Some(&tokio_postgres::error::SqlState::GENERATED_ALWAYS),
    ]
    .contains(&e.code())
    {
        u.cause.push_str(" (run `sumsvc migrate` first)");
    }
    u
}
