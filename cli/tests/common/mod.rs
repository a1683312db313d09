//! Helpers the CLI crate's end-to-end tests share.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tickdb_sdk::DbConnection;

/// How long any one wait of a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A fresh scratch directory for test `name` of this process.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tickdb-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temp dir");
    dir
}

/// Applies `conn`'s messages until `done` holds; panics after the deadline.
pub fn until(conn: &DbConnection, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        conn.frame_tick_wait(Duration::from_millis(20));
    }
}
