//! A PostgreSQL server for the store's unit tests (tests/common/pg.rs: one
//! per test binary, under target/); each test gets a database of its own.

use std::sync::atomic::{AtomicUsize, Ordering};

#[path = "../../../../tests/common/pg.rs"]
mod pg;

/// A new, empty database: its URL.
pub(crate) fn database() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    pg::create_database(&format!("u{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)))
}
