//! The web app the daemon serves: `GET /` for browsers and API clients, its
//! files' caching and compression, and two students and an admin driving it
//! in headless chromium against the simulated Uno (tests/web/flow.mjs).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rerod_devices::testkit;

use crate::compile::AVR_GCC;
use crate::devices::{Board, lab_config};
use crate::util::{Daemon, Options, PASSWORD, TIME_SCALE_VAR, scaled, time_scale, within};

#[tokio::test]
async fn browsers_get_the_app_and_api_clients_keep_the_json() {
    let daemon = Daemon::start();
    let c = daemon.client();
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

    let page = c.request(hyper::Method::GET, "/", &[("accept", browser)], Vec::new()).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let policy = page.header("content-security-policy").expect("the page has a policy");
    assert!(policy.starts_with("default-src 'self';"), "{policy}");
    assert!(!policy.contains("http"), "no origin but this one: {policy}");
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    let html = String::from_utf8(page.body.to_vec()).unwrap();
    let script = html.split("src=\"").nth(1).and_then(|s| s.split('"').next()).expect("the page loads a script");
    assert!(script.starts_with("/app/") && script.ends_with("/main.js"), "{script}");

    // curl and the old clients keep the seed's JSON.
    for accept in ["*/*", "application/json"] {
        let json = c.request(hyper::Method::GET, "/", &[("accept", accept)], Vec::new()).await.expect(200);
        assert_eq!(json["websocket_endpoint"], "/slot-booking", "Accept: {accept}");
    }
    c.get("/").await.expect(200);

    // The bundle's files: compressed when asked, cached for good, revalidated.
    let gz = c.request(hyper::Method::GET, script, &[("accept-encoding", "gzip, br")], Vec::new()).await;
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(gz.header("content-type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(gz.header("cache-control"), Some("public, max-age=31536000, immutable"));
    let etag = gz.header("etag").expect("an ETag").to_owned();
    let plain = c.get(script).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-encoding"), None);
    assert!(plain.body.len() > gz.body.len());
    let again = c.request(hyper::Method::GET, script, &[("if-none-match", &etag)], Vec::new()).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    // Another build's files, or none at all, are not found.
    let old = script.replacen("/app/", "/app/0", 1);
    assert_eq!(c.get(&old).await.expect(404)["code"], "not_found");
    c.get("/app/").await.expect(404);
}

/// Checks that tests/web/setup.sh has installed chromium, node and the
/// Playwright driver: installing them (apt, npm) is its job before `cargo
/// test` (tests/run.sh runs it first), never a test's.
pub(crate) fn browser_tools() {
    let root = workspace_root();
    let driver = root.join("target/web-tests/node_modules/playwright-core/package.json");
    for (what, present) in [
        ("chromium", on_path("chromium")),
        ("node", on_path("node")),
        ("the Playwright driver (target/web-tests/)", driver.exists()),
    ] {
        assert!(present, "{what} is not installed: run tests/web/setup.sh first (tests/run.sh does)");
    }
}

/// Whether `program` is an executable file in one of `PATH`'s folders.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .filter_map(|dir| std::fs::metadata(dir.join(program)).ok())
        .any(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

pub(crate) fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("daemon/ has a parent").to_path_buf()
}

/// The admin the flow signs in as; `Daemon::host_account` gives it this password.
const FLOW_ADMIN: &str = "head@example.com";

#[test]
fn two_students_and_an_admin_use_the_lab_in_a_browser() {
    browser_tools();
    let board = Board::start(None);
    // The rig has no Arduino core for every host, so sketches are compiled
    // by avr-gcc alone, as in the compile tests.
    let compiler = format!("[compilers.uno]\n{AVR_GCC}\ntimeout_secs = 30\n");
    let daemon = Daemon::start_with(Options::config(&lab_config(&board, &compiler)));
    // An admin made on the host, as a lab's first admin is.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(daemon.host_account(FLOW_ADMIN, true));
    // A second lab with quarter-hour slots and no board, whose day is long
    // enough that a phone must scroll to reach the slot in progress.
    let short_slots = Daemon::start_with(Options::config("[lab]\ntimezone = \"UTC\"\nslot_minutes = 15\n"));
    let root = workspace_root();
    let shots = root.join("target/web-screenshots");
    // Only this run's screenshots: an earlier run's would look like steps of this one.
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    // The flow's output goes to a file, so a chatty run never blocks on a pipe.
    let log_path = shots.join("flow.log");
    let log = std::fs::File::create(&log_path).expect("flow log");
    let mut flow = Command::new("node")
        .arg(root.join("tests/web/flow.mjs"))
        .env("APP_URL", format!("http://{}", daemon.addr))
        .env("SHORT_SLOTS_URL", format!("http://{}", short_slots.addr))
        .env("HELLO_HEX", testkit::rig_file("hello.hex"))
        .env("ECHO_HEX", testkit::rig_file("echo.hex"))
        .env("ADMIN_EMAIL", FLOW_ADMIN)
        .env("ADMIN_PASSWORD", PASSWORD)
        .env("SHOTS", &shots)
        // The flow's own waits scale as the suite's do.
        .env(TIME_SCALE_VAR, time_scale().to_string())
        .stdout(log.try_clone().expect("flow log"))
        .stderr(log)
        .spawn()
        .expect("node runs");
    let limit = Duration::from_secs(240);
    let status = match runtime.block_on(within(limit, async || flow.try_wait().expect("waiting for node"))) {
        Ok(status) => status,
        Err(_) => {
            let _ = flow.kill();
            let _ = flow.wait();
            panic!("the browser flow did not finish within {:?}:\n{}", scaled(limit), read(&log_path));
        }
    };
    assert!(
        status.success(),
        "the browser flow failed (screenshots in {}):\n{}\ndaemon log:\n{}",
        shots.display(),
        read(&log_path),
        daemon.log()
    );
    println!("{}", read(&log_path));
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
