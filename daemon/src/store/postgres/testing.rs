//! A PostgreSQL server for the store's unit tests: tests/pg/server.sh
//! starts one per test binary under target/ (as the `postgres` user, on a
//! unix socket), stopped once the binary exits; each test gets a database
//! of its own. The black-box suite has the same in tests/blackbox/util.rs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

fn server() -> &'static Path {
    static SERVER: OnceLock<PathBuf> = OnceLock::new();
    SERVER.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let dir = root.join(format!("target/pg-unit-{}", std::process::id()));
        let output = Command::new(root.join("tests/pg/server.sh"))
            .arg("start")
            .arg(&dir)
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("running tests/pg/server.sh");
        assert!(output.status.success(), "tests/pg/server.sh start failed");
        PathBuf::from(String::from_utf8(output.stdout).expect("a path").trim())
    })
}

/// A new, empty database: its URL.
pub(crate) fn database() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!("u{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let output = Command::new("psql")
        .arg("-h")
        .arg(server())
        .args(["-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!("CREATE DATABASE {name}"))
        .stdin(Stdio::null())
        .output()
        .expect("running psql");
    assert!(output.status.success(), "CREATE DATABASE: {}", String::from_utf8_lossy(&output.stderr));
    let host = server().to_str().expect("a UTF-8 path").replace('/', "%2F");
    format!("postgres://postgres@{host}/{name}")
}
