//! The `rero` command line against the real daemon and the simulated Uno:
//! log in, book the slot in progress, upload with progress, the console
//! piped and interactive (in tmux), cancel.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rerod::wire::{SlotsJson, UploadResponse};
use rerod_devices::testkit;
use serde_json::json;

use crate::devices::{Board, lab_config};

/// The `rero` binary. It is a package of its own (daemon/cli), so Cargo
/// gives this suite no path to it: it is built into the same folder as the
/// daemon by `cargo test --workspace` (tests/run.sh), for the package's own
/// tests.
fn rero_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_rerod")).with_file_name("rero");
    assert!(path.is_file(), "{} is missing: build it with `cargo build -p rero` (tests/run.sh does)", path.display());
    path
}
use crate::util::{Daemon, Options, PASSWORD, eventually, eventually_within, scaled, within};

/// `rero` with its own config folder (`XDG_CONFIG_HOME`), as one user on one machine.
pub(crate) struct Rero {
    config: tempfile::TempDir,
}

impl Rero {
    pub(crate) fn new() -> Rero {
        Rero { config: tempfile::tempdir().expect("temp dir") }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(rero_binary());
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.config.path())
            .env("XDG_CONFIG_HOME", self.config.path())
            .args(args);
        cmd
    }

    /// Runs `rero ARGS` with `stdin` as its input.
    pub(crate) fn run_with(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting rero");
        let mut input = child.stdin.take().expect("stdin is piped");
        input.write_all(stdin).expect("writing stdin");
        drop(input);
        let output = child.wait_with_output().expect("rero finishes");
        // A debug aid when an assertion below fails.
        eprintln!(
            "$ rero {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, b"")
    }

    /// Runs `rero ARGS`, expects success; its stdout.
    #[track_caller]
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(output.status.success(), "rero {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn credentials(&self) -> PathBuf {
        self.config.path().join("rero/credentials.toml")
    }
}

fn rig_path(name: &str) -> String {
    testkit::rig_file(name).to_string_lossy().into_owned()
}

/// Output a child writes, collected by a thread as it comes.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<u8>>>);

impl Collected {
    fn from(mut pipe: impl std::io::Read + Send + 'static) -> Collected {
        let collected = Collected::default();
        let sink = collected.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 1024];
            while let Ok(n @ 1..) = pipe.read(&mut buffer) {
                sink.0.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        collected
    }

    fn contains(&self, needle: &[u8]) -> bool {
        self.0.lock().unwrap().windows(needle.len()).any(|w| w == needle)
    }

    async fn wait_for(&self, needle: &str, limit: Duration) {
        eventually_within(limit, &format!("{needle:?}"), async || {
            if self.contains(needle.as_bytes()) {
                Ok(())
            } else {
                Err(format!("{:?}", String::from_utf8_lossy(&self.0.lock().unwrap())))
            }
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rero_logs_in_books_uploads_uses_the_console_and_cancels() {
    let board = Board::start(None);
    let daemon = Daemon::start_with(Options::config(&lab_config(&board, "")));
    let c = daemon.client();
    c.register("ada@example.com", PASSWORD).await.expect(200);
    let rero = Rero::new();
    let server = format!("http://{}", daemon.addr);

    // Not logged in yet: one clear line and a failure.
    let output = rero.run(&["bookings"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("rero login"), "{output:?}");

    // A wrong password: the server's detail, and nothing stored.
    let output = rero.run_with(&["login", "ada@example.com", "--server", &server], b"wrong-password\n");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Invalid email or password") && stderr.lines().count() == 1, "{stderr}");
    assert!(!rero.credentials().exists());

    // The password from stdin; the token kept 0600 and never printed.
    let output = rero.run_with(&["login", "ada@example.com", "--server", &server], format!("{PASSWORD}\n").as_bytes());
    assert!(output.status.success(), "{output:?}");
    let mode = std::fs::metadata(rero.credentials()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "credentials mode {mode:o}");
    let stored: toml::Table = toml::from_str(&std::fs::read_to_string(rero.credentials()).unwrap()).unwrap();
    let token = stored["token"].as_str().unwrap().to_owned();
    assert!(!token.is_empty());
    let printed = [output.stdout, output.stderr].concat();
    assert!(!String::from_utf8_lossy(&printed).contains(&token), "the token was printed");

    let boards = rero.ok(&["boards"]);
    assert!(boards.contains("uno-1") && boards.contains("Simulated Uno"), "{boards}");
    c.device_until("online", |d| d["online"] == true).await;

    // `watch` shows the day, then each change to it; book the slot in progress by saying `now`.
    let mut watch = rero.command(&["watch", "--json"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let watched = Collected::from(watch.stdout.take().unwrap());
    watched.wait_for("\"booked_slots\":[]", Duration::from_secs(10)).await;
    let booked = rero.ok(&["book", "now", "--board", "uno-1"]);
    assert!(booked.contains("slot 0"), "{booked}");
    watched.wait_for("\"booked_slots\":[0]", Duration::from_secs(10)).await;
    let _ = watch.kill();
    let _ = watch.wait();
    let slots = rero.ok(&["slots", "--board", "0"]);
    assert!(slots.contains("yours") && slots.contains("ada@example.com"), "{slots}");
    assert!(!slots.contains('\u{1b}'), "piped output has no colour codes: {slots:?}");
    let listing: SlotsJson = serde_json::from_str(&rero.ok(&["slots", "--json"])).unwrap();
    assert_eq!((listing.device.as_str(), listing.booked_slots.as_slice()), ("uno-1", &[0][..]));
    let mine = rero.ok(&["bookings"]);
    assert!(mine.contains("uno-1"), "{mine}");

    // Upload: progress shown phase by phase (stderr is not a terminal here).
    let output = rero.run(&["upload", &rig_path("hello.hex")]);
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for phase in ["upload: write", "upload: verify", "upload: done"] {
        assert!(stderr.contains(phase), "no {phase:?} in {stderr}");
    }
    assert!(String::from_utf8_lossy(&output.stdout).contains("Firmware uploaded to uno-1"));

    // A sketch that does not compile: the compiler's output, then one error line.
    let sketch = rero.config.path().join("broken.ino");
    std::fs::write(&sketch, "void setup() { nonsense }\nvoid loop() {}\n").unwrap();
    let output = rero.run(&["upload", sketch.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nonsense"), "no compiler output: {stderr}");
    assert!(stderr.trim_end().lines().last().unwrap().starts_with("rero: compilation failed"), "{stderr}");

    // The console shows the board's output while stdin stays open, and ends when it closes.
    let mut console = rero
        .command(&["console"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rero console");
    let stdout = Collected::from(console.stdout.take().unwrap());
    let stderr = Collected::from(console.stderr.take().unwrap());
    stdout.wait_for("hello from the board", Duration::from_secs(20)).await;
    stderr.wait_for("Connected to uno-1", Duration::from_secs(1)).await;
    drop(console.stdin.take());
    assert!(wait_exit(&mut console, Duration::from_secs(10)).await.success());

    // Piped input goes to the echo program and comes back. Until the
    // console holds the port again after the upload, typed bytes may be
    // lost (see devices.rs), so a few tries are allowed.
    let output = rero.run(&["upload", "--json", &rig_path("echo.hex")]);
    let uploaded: UploadResponse = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("upload --json: {e}; stderr: {}", String::from_utf8_lossy(&output.stderr)));
    assert!(uploaded.success);
    let echoed = (0..20).any(|i| {
        let line = format!("ping {i}\n");
        let output = rero.run_with(&["console", "--raw"], line.as_bytes());
        assert!(output.status.success(), "{output:?}");
        assert!(output.stderr.is_empty(), "--raw prints no status lines: {output:?}");
        output.stdout.windows(line.len()).any(|w| w == line.as_bytes())
    });
    assert!(echoed, "the echo program never answered rero console");

    // Cancel; a second cancel is refused with the server's detail.
    let cancelled = rero.ok(&["cancel", "0", "--board", "uno-1"]);
    assert!(cancelled.contains("slot 0"), "{cancelled}");
    assert!(rero.ok(&["bookings"]).contains("No bookings"));
    let output = rero.run(&["cancel", "0"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("rero: Slot 0 was not booked by you") && stderr.lines().count() == 1, "{stderr}");

    rero.ok(&["logout"]);
    assert!(!rero.credentials().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rero_prints_completions_and_a_man_page() {
    let rero = Rero::new();
    assert!(rero.ok(&["completions", "bash"]).contains("rero"));
    assert!(rero.ok(&["completions", "zsh"]).contains("#compdef rero"));
    assert!(rero.ok(&["completions", "fish"]).contains("complete -c rero"));
    let man = rero.ok(&["man"]);
    assert!(man.contains(".TH rero") && man.contains("console"), "{man}");
    for command in ["login", "slots", "book", "upload", "console", "watch"] {
        assert!(rero.ok(&[command, "--help"]).contains("Usage: rero"));
    }
}

/// Regression: `rero completions bash | head` panicked on the closed pipe.
#[test]
fn rero_printing_into_a_closed_pipe_exits_0() {
    let rero = Rero::new();
    for args in [&["completions", "bash"][..], &["completions", "zsh"], &["man"], &["--help"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = rero
            .command(args)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{args:?}: {:?} {stderr}", output.status);
        assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{args:?}: {stderr}");
    }
}

async fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    match within(limit, async || child.try_wait().unwrap()).await {
        Ok(status) => status,
        Err(_) => {
            let _ = child.kill();
            panic!("rero did not exit within {:?}", scaled(limit));
        }
    }
}

/// A tmux server of the test's own, killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Tmux { socket: format!("rero-test-{}-{n}", std::process::id()) }
    }

    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("running tmux");
        assert!(output.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Starts `rero console` in a detached 120x40 window called `name`; the
    /// pane stays after rero exits and shows its exit status.
    fn console(&self, name: &str, env: &[(&str, &Path)], server: &str, token: &str) {
        let rero = rero_binary();
        let rero = rero.display();
        let mut args = vec!["new-session".to_owned(), "-d".into(), "-s".into(), name.into(), "-x".into(), "120".into()];
        args.extend(["-y".into(), "40".into()]);
        for (var, value) in env {
            args.extend(["-e".into(), format!("{var}={}", value.display())]);
        }
        args.extend(["-e".into(), format!("RERO_SERVER={server}"), "-e".into(), format!("RERO_TOKEN={token}")]);
        args.push(format!("'{rero}' console; echo \"rero exited $?\"; exec sleep 600"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args);
    }

    fn screen(&self, name: &str) -> String {
        self.run(&["capture-pane", "-p", "-t", name])
    }

    /// Polls the pane for `limit` (scaled); whether it showed `needle`.
    async fn shows_within(&self, name: &str, needle: &str, limit: Duration) -> bool {
        within(limit, async || self.screen(name).contains(needle).then_some(())).await.is_ok()
    }

    async fn expect(&self, name: &str, needle: &str) {
        eventually(&format!("the pane to show {needle:?}"), async || {
            let screen = self.screen(name);
            if screen.contains(needle) { Ok(()) } else { Err(format!("\n{screen}")) }
        })
        .await
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-L").arg(&self.socket).arg("kill-server").output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rero_console_in_a_terminal_types_quits_with_tilde_dot_and_sees_the_session_end() {
    let board = Board::start(Some("echo.hex"));
    let daemon = Daemon::start_with(Options::config(&lab_config(&board, "")));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    c.book_today(&ada).await;
    c.device_until("online", |d| d["online"] == true).await;
    let home = tempfile::tempdir().unwrap();
    let env = [("HOME", home.path()), ("XDG_CONFIG_HOME", home.path())];
    let server = format!("http://{}", daemon.addr);
    let tmux = Tmux::new();

    // Typing: the keys go to the echo program, whose answer is all that
    // shows (raw mode does not echo locally). Typed bytes may be lost
    // while the console takes the port, so a few lines are allowed.
    tmux.console("typing", &env, &server, &ada);
    tmux.expect("typing", "Connected to uno-1").await;
    let mut echoed = false;
    for i in 0..10 {
        let text = format!("hello tmux {i}");
        tmux.run(&["send-keys", "-t", "typing", "-l", &text]);
        tmux.run(&["send-keys", "-t", "typing", "Enter"]);
        if tmux.shows_within("typing", &text, Duration::from_secs(2)).await {
            echoed = true;
            break;
        }
    }
    assert!(echoed, "the board never echoed:\n{}", tmux.screen("typing"));

    // Cancelling the booking over HTTP ends the session: rero says so and exits 0.
    c.post_auth("/cancel-slot", &ada, &json!({"slot_id": 0, "device": "uno-1"})).await.expect(200);
    tmux.expect("typing", "Session ended").await;
    tmux.expect("typing", "rero exited 0").await;

    // `~.` at the start of a line quits, and the terminal is usable again.
    c.book_today(&ada).await;
    tmux.console("quitting", &env, &server, &ada);
    tmux.expect("quitting", "Connected to uno-1").await;
    tmux.run(&["send-keys", "-t", "quitting", "Enter"]);
    tmux.run(&["send-keys", "-t", "quitting", "-l", "~."]);
    tmux.expect("quitting", "rero exited 0").await;
    let screen = tmux.screen("quitting");
    assert!(screen.contains("Disconnected") && !screen.contains("Session ended"), "{screen}");
}

/// `rero register` makes the account and logs in; `rero status` says which
/// lab, who, and the booking; times are the lab's, its zone named once;
/// booking your own slot again says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rero_registers_says_where_it_is_and_knows_your_own_slot() {
    let daemon = Daemon::start();
    let rero = Rero::new();
    let server = format!("http://{}", daemon.addr);

    // An address without its scheme gets the scheme, not TLS advice.
    let bare = server.trim_start_matches("http://").to_owned();
    // Refused before the password is read, so nothing is written to its stdin.
    let output = rero.run(&["register", "newcomer@example.org", "--server", &bare]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("write it as http://{bare}")) && !stderr.contains("TLS"), "{stderr}");

    let output =
        rero.run_with(&["register", "newcomer@example.org", "--server", &server], format!("{PASSWORD}\n").as_bytes());
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Registered newcomer@example.org") && stdout.contains("Logged in"), "{stdout}");
    assert!(rero.credentials().exists());

    // The same address again: refused in plain words, the login kept.
    let kept = std::fs::read(rero.credentials()).unwrap();
    let output =
        rero.run_with(&["register", "newcomer@example.org", "--server", &server], format!("{PASSWORD}\n").as_bytes());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already exists") && !stderr.contains("panicked"), "{stderr}");
    assert_eq!(std::fs::read(rero.credentials()).unwrap(), kept, "a refused register changed the saved login");

    let status = rero.ok(&["status"]);
    assert!(status.contains(&server) && status.contains("times in UTC"), "{status}");
    assert!(status.contains("Account: newcomer@example.org") && status.contains("Booking: none"), "{status}");

    let booked = rero.ok(&["book", "now"]);
    assert!(booked.starts_with("Booked default, slot "), "{booked}");
    assert!(booked.contains("(UTC)") && !booked.contains("+00:00") && !booked.contains(":00Z"), "{booked}");
    assert_eq!(booked.matches("UTC").count(), 1, "the zone is named once: {booked}");
    let status = rero.ok(&["status"]);
    assert!(status.contains("Booking: in progress on default"), "{status}");

    let output = rero.run(&["book", "now"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is already yours") && stderr.lines().count() == 1, "{stderr}");

    let slots = rero.ok(&["slots"]);
    let mine: Vec<&str> = slots.lines().filter(|l| l.contains("yours")).collect();
    assert_eq!(mine.len(), 1, "{slots}");
    assert!(mine[0].contains("now"), "the slot in progress is marked: {slots}");
    let bookings = rero.ok(&["bookings"]);
    assert!(bookings.contains("in progress") && bookings.contains("times in UTC"), "{bookings}");
}

/// A text file named .hex is refused before anything is sent, with the
/// line of its first error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rero_checks_a_hex_file_before_uploading_it() {
    let daemon = Daemon::start();
    let c = daemon.client();
    let token = c.user("ada@example.com").await;
    let rero = Rero::new();
    let bad = rero.config.path().join("bad.hex");
    // The case (a text file, once flashed as its raw bytes), a
    // broken second line, and a record whose checksum is wrong.
    for (text, line) in [("hello\n", 1), (":00000001FF\nnot hex\n", 2), (":0100000000FE\n:00000001FF\n", 1)] {
        std::fs::write(&bad, text).unwrap();
        let output = rero
            .command(&["upload", bad.to_str().unwrap()])
            .env("RERO_SERVER", format!("http://{}", daemon.addr))
            .env("RERO_TOKEN", &token)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{text:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("bad.hex: Intel HEX line {line}")) && stderr.contains("nothing was uploaded"),
            "{text:?}: {stderr}"
        );
    }
    assert!(!daemon.log().contains("/devices/upload"), "nothing reached the server");
}

/// Regression: `rero console --raw | head` ended with an error. A reader
/// that has what it wanted is no failure: exit 0, no panic, no backtrace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rero_console_into_a_closed_pipe_exits_0() {
    let board = Board::start(Some("hello.hex"));
    let daemon = Daemon::start_with(Options::config(&lab_config(&board, "")));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    c.book_today(&ada).await;
    c.device_until("online", |d| d["online"] == true).await;
    let rero = Rero::new();
    let mut console = rero
        .command(&["console", "--raw"])
        .env("RERO_SERVER", format!("http://{}", daemon.addr))
        .env("RERO_TOKEN", &ada)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = console.stdout.take().unwrap();
    let mut first = [0u8; 64];
    let n = std::io::Read::read(&mut stdout, &mut first).unwrap();
    assert!(n > 0, "the board's output came first");
    // `head` has its lines and goes away; the board keeps printing.
    drop(stdout);
    let status = wait_exit(&mut console, Duration::from_secs(10)).await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut console.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
}
