//! The throwaway PostgreSQL server of one test or benchmark binary:
//! tests/pg/server.sh starts it under target/ on first use (as the
//! `postgres` user, on a unix socket only), and stops it once the binary has
//! exited. Included with `#[path]` by the store's unit tests
//! (daemon/src/store/postgres/testing.rs), tests/blackbox/util.rs and
//! tests/bench/daemon.rs.

// Each includer uses its own part of this.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// tests/pg/server.sh, which starts, stops and resumes these servers.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/pg/server.sh")
}

/// The server's socket directory (its data under `target/pg-PID`).
pub fn server() -> &'static Path {
    static SERVER: OnceLock<PathBuf> = OnceLock::new();
    SERVER.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let pid = std::process::id();
        let output = Command::new(script())
            .arg("start")
            .arg(root.join(format!("target/pg-{pid}")))
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("running tests/pg/server.sh");
        assert!(output.status.success(), "tests/pg/server.sh start failed");
        PathBuf::from(String::from_utf8(output.stdout).expect("a path").trim())
    })
}

/// Runs `sql` on the server's database `db` as its superuser: what it
/// printed, unaligned and trimmed.
pub fn psql(db: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .arg("-h")
        .arg(server())
        .args(["-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .expect("running psql");
    assert!(output.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8").trim().to_owned()
}

/// Creates the empty database `name`: the URL rerod connects to it with
/// (`[store] url`, `DATABASE_URL`).
pub fn create_database(name: &str) -> String {
    psql("postgres", &format!("CREATE DATABASE {name}"));
    url_on(server(), name)
}

/// The URL of the database `name` on the server whose socket is in `dir`.
pub fn url_on(dir: &Path, name: &str) -> String {
    let host = dir.to_str().expect("a UTF-8 path").replace('/', "%2F");
    format!("postgres://postgres@{host}/{name}")
}
