//! Running rerod like a lab host does: systemd notifications, live config
//! reload, metrics, the OpenAPI document and rerod's own command line.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{Client, Daemon, Options, PASSWORD, UTC_LAB, eventually, scaled, utc_date};

/// Receives datagrams until one contains `wanted`; returns them all.
fn until(socket: &UnixDatagram, wanted: &str) -> Vec<String> {
    let deadline = Instant::now() + scaled(Duration::from_secs(10));
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {wanted:?} from rerod; got {seen:?}");
        socket.set_read_timeout(Some(left)).unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = message.lines().any(|l| l == wanted);
            seen.push(message);
            if done {
                return seen;
            }
        }
    }
}

#[tokio::test]
async fn systemd_notify_ready_reload_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let mut daemon = Daemon::start_with(
        Options::config(UTC_LAB).env("NOTIFY_SOCKET", socket_path.to_str().unwrap()).env("WATCHDOG_USEC", "400000"),
    );
    let ready = until(&socket, "READY=1");
    // READY comes once the port accepts.
    std::net::TcpStream::connect(daemon.addr).expect("listening when READY=1 arrives");
    assert!(ready.last().unwrap().contains("STATUS=serving"), "{ready:?}");
    // WATCHDOG_USEC=400ms: a ping at least every 200 ms.
    let started = Instant::now();
    until(&socket, "WATCHDOG=1");
    until(&socket, "WATCHDOG=1");
    assert!(started.elapsed() < scaled(Duration::from_secs(2)));

    daemon.signal(libc::SIGHUP);
    let reload = until(&socket, "RELOADING=1");
    assert!(reload.last().unwrap().lines().any(|l| l.starts_with("MONOTONIC_USEC=")), "{reload:?}");
    until(&socket, "READY=1");

    let status = daemon.terminate().await;
    until(&socket, "STOPPING=1");
    assert!(status.success(), "{status:?}");
}

/// Polls /health until the config generation reaches `generation`.
async fn wait_generation(c: &Client, generation: u64) -> serde_json::Value {
    eventually(&format!("config generation {generation}"), async || {
        let health = c.get("/health").await.expect(200);
        if health["config"]["generation"].as_u64() >= Some(generation) { Ok(health) } else { Err(health) }
    })
    .await
}

/// Polls /health until a reload error shows.
async fn wait_reload_error(c: &Client) -> serde_json::Value {
    eventually("a reload error on /health", async || {
        let health = c.get("/health").await.expect(200);
        if health["config"]["last_reload_error"].is_string() { Ok(health) } else { Err(health) }
    })
    .await
}

#[tokio::test]
async fn config_edits_take_effect_live_and_broken_ones_are_refused() {
    let daemon = Daemon::start_with(Options::config(&format!("{UTC_LAB}days_ahead = 7\n")));
    let c = daemon.client();
    let token = c.user("ada@example.com").await;
    let path = daemon.config_path();
    let far = json!({"slot_id": 3, "date": utc_date(3).to_string()});

    // In place: the horizon shrinks to one day.
    std::fs::write(&path, format!("{UTC_LAB}days_ahead = 1\n")).unwrap();
    wait_generation(&c, 2).await;
    assert_eq!(c.post_auth("/book-slot", &token, &far).await.expect(400)["code"], "date_too_far_ahead");

    // A broken edit is refused whole; the running config stays and /health says why.
    std::fs::write(&path, format!("{UTC_LAB}days_ahead = 1\nslot_minutes = 7\n")).unwrap();
    let health = wait_reload_error(&c).await;
    assert_eq!(health["config"]["generation"], 2);
    let error = health["config"]["last_reload_error"].as_str().unwrap();
    assert!(error.contains("lab.slot_minutes") && error.contains("rerod.toml"), "{error}");
    // The public /health names the file, not where it lives on the host.
    assert!(!error.contains(&path.parent().unwrap().display().to_string()), "{error}");
    assert_eq!(c.get("/slots").await.expect(200)["slots"].as_array().unwrap().len(), 24);
    assert_eq!(c.post_auth("/book-slot", &token, &far).await.expect(400)["code"], "date_too_far_ahead");

    // Fixed by writing a new file and renaming it over the old one, as editors do.
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, format!("{UTC_LAB}days_ahead = 5\n")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let health = wait_generation(&c, 3).await;
    assert_eq!(health["config"]["last_reload_error"], json!(null));
    c.post_auth("/book-slot", &token, &far).await.expect(200);

    // A TOML syntax error names the line.
    std::fs::write(&path, "[lab\n").unwrap();
    let health = wait_reload_error(&c).await;
    assert!(health["config"]["last_reload_error"].as_str().unwrap().contains("line 1"), "{health}");
    daemon.log_until(|log| log.contains("configuration rejected")).await;
}

#[tokio::test]
async fn sighup_reloads_the_file() {
    let daemon = Daemon::start_with(Options::config(&format!("{UTC_LAB}[auth]\nregistration = \"open\"\n")));
    let c = daemon.client();
    let path = daemon.config_path();
    // Write without the watcher noticing first is not possible, so check that a
    // SIGHUP alone reloads by bumping the generation once more after the watcher's.
    std::fs::write(&path, format!("{UTC_LAB}[auth]\nregistration = \"closed\"\n")).unwrap();
    let generation = wait_generation(&c, 2).await["config"]["generation"].as_u64().unwrap();
    daemon.signal(libc::SIGHUP);
    wait_generation(&c, generation + 1).await;
    assert_eq!(c.register("new@example.com", PASSWORD).await.expect(403)["code"], "registration_refused");
}

#[tokio::test]
async fn metrics_move_with_requests() {
    let daemon = Daemon::start();
    let c = daemon.client();
    let token = c.user("ada@example.com").await;
    c.post_auth("/book-slot", &token, &json!({"slot_id": 2, "date": utc_date(1).to_string()})).await.expect(200);
    c.get("/slots").await.expect(200);
    c.get("/no/such/path?email=secret@example.com").await;
    let r = c.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
    };
    assert_eq!(value(r#"rerod_http_requests_total{route="/slots",method="GET",status="200"}"#), 1.0);
    assert_eq!(value(r#"rerod_bookings_total{action="book"}"#), 1.0);
    assert_eq!(value(r#"rerod_logins_total{result="ok"}"#), 1.0);
    assert!(text.contains("rerod_http_request_duration_seconds_bucket"));
    assert!(text.contains("rerod_build_info"));
    // Route labels are patterns, never raw paths or user data.
    assert!(!text.contains("secret@example.com") && !text.contains("/no/such/path"));
}

#[tokio::test]
async fn openapi_document_is_served() {
    let daemon = Daemon::start();
    let doc = daemon.client().get("/openapi.json").await.expect(200);
    assert_eq!(doc["openapi"], "3.0.3");
    for path in ["/auth/login", "/slots", "/book-slot", "/slot-booking", "/metrics"] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify_and_security() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = std::process::Command::new(repo.join("systemd/check.sh"))
        .env("BINARY", env!("CARGO_BIN_EXE_rerod"))
        .output()
        .expect("running systemd/check.sh (tests/run.sh installs systemd-analyze)");
    let shown = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{shown}");
    assert!(shown.contains("== systemd-analyze security"), "{shown}");
}

/// A reload that changes the slot length would move every stored booking to
/// other hours; it is refused whole until the file is put back.
#[tokio::test]
async fn reload_changing_the_calendar_is_refused_and_bookings_stay() {
    let daemon = Daemon::start_with(Options::config(&format!("{UTC_LAB}slot_minutes = 60\n")));
    let c = daemon.client();
    let token = c.user("ada@example.com").await;
    let date = utc_date(1).to_string();
    c.post_auth("/book-slot", &token, &json!({"slot_id": 9, "date": date})).await.expect(200);
    let path = daemon.config_path();

    // Slots of 30 minutes would turn the 09:00 booking into one at 04:30.
    std::fs::write(&path, format!("{UTC_LAB}slot_minutes = 30\n")).unwrap();
    daemon.signal(libc::SIGHUP);
    let health = wait_reload_error(&c).await;
    assert_eq!(health["config"]["generation"], 1);
    let error = health["config"]["last_reload_error"].as_str().unwrap();
    assert!(error.contains("lab.slot_minutes") && error.contains("restart"), "{error}");
    let slots = c.get(&format!("/slots?date={date}")).await.expect(200);
    let slots = slots["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 24);
    assert_eq!(slots[9]["start_time"], "09:00");
    assert_eq!(slots[9]["is_booked"], true);

    // The old value back: the next reload is taken and the error clears.
    std::fs::write(&path, format!("{UTC_LAB}slot_minutes = 60\ndays_ahead = 5\n")).unwrap();
    daemon.signal(libc::SIGHUP);
    let health = wait_generation(&c, 2).await;
    assert_eq!(health["config"]["last_reload_error"], json!(null));
}

/// Runs the rerod binary with `args` on an empty state directory, stdout
/// going to `stdout`.
fn rerod_command(args: &[&str], stdout: impl Into<std::process::Stdio>) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_rerod"))
        .args(args)
        .env("DATABASE_PATH", dir.path().join("rerod.redb"))
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap()
}

/// `--help` after a command is that command's help: `rerod user add --help`
/// prints it and exits 0, instead of asking the daemon to create an account
/// called "--help".
#[test]
fn rerod_user_add_help_prints_help() {
    let output = rerod_command(&["user", "add", "--help"], std::process::Stdio::piped());
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("Usage: rerod user add [OPTIONS] <EMAIL>"), "{stdout}");
    assert!(stdout.contains("--admin"), "{stdout}");
    assert!(!stderr.contains("daemon"), "{stderr}");

    let output = rerod_command(&["user", "add"], std::process::Stdio::piped());
    assert_eq!(output.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&output.stderr).contains("<EMAIL>"));
}

#[test]
fn rerod_prints_completions_and_a_man_page() {
    let text = |args: &[&str]| {
        let output = rerod_command(args, std::process::Stdio::piped());
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    assert!(text(&["completions", "bash"]).contains("check-config"));
    assert!(text(&["completions", "zsh"]).contains("#compdef rerod"));
    assert!(text(&["completions", "fish"]).contains("complete -c rerod"));
    let man = text(&["man"]);
    assert!(man.contains(".TH rerod"), "{man}");
    assert!(man.contains("check\\-config"), "{man}");
}

/// `rerod completions bash | head -1`: the reader goes away before rerod has
/// written everything. That is what the reader wanted, so rerod exits 0,
/// quietly, without a panic.
#[test]
fn printing_into_a_closed_pipe_exits_0() {
    for args in [&["completions", "bash"][..], &["man"], &["--help"], &["user", "add", "--help"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = rerod_command(args, writer);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{args:?}: {:?} {stderr}", output.status);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
