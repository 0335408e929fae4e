//! Boards end to end: the real binary with a simulated Uno (tests/rig: real
//! Optiboot in simavr on a pty) as its device. Upload, console, access
//! control, unplugging, session end and every firmware error.
//!
//! The test labs use one slot per day (`slot_minutes = 1440`), so "the slot
//! in progress" is today's slot 0 and no test runs across a boundary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rerod_devices::testkit;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::util::{Client, Daemon, Options, Resp, Ws, eventually, scaled, utc_date};

/// A simulated board on a link we choose, so a "replugged" board (a new
/// rig) comes back under the same path, like a /dev/serial/by-id link.
pub(crate) struct Board {
    child: Option<Child>,
    link: PathBuf,
    bootloader: &'static str,
    /// The rig's `--mcu`: `None` for the Uno.
    mcu: Option<&'static str>,
    _dir: tempfile::TempDir,
}

impl Board {
    pub(crate) fn start(app: Option<&str>) -> Board {
        Board::start_with("optiboot_atmega328.hex", app)
    }

    /// A board with another bootloader in its boot section (e.g. `dead_bootloader.hex`).
    pub(crate) fn start_with(bootloader: &'static str, app: Option<&str>) -> Board {
        let dir = tempfile::tempdir().expect("temp dir");
        let link = dir.path().join("uno");
        let mut board = Board { child: None, link, bootloader, mcu: None, _dir: dir };
        board.plug(app);
        board
    }

    /// A simulated Mega 2560 with Debian's STK500v2 bootloader (tests/rig/README.md).
    pub(crate) fn start_mega() -> Board {
        let dir = tempfile::tempdir().expect("temp dir");
        let link = dir.path().join("mega");
        let bootloader = "stk500boot_v2_mega2560.hex";
        let mut board = Board { child: None, link, bootloader, mcu: Some("atmega2560"), _dir: dir };
        board.plug(None);
        board
    }

    /// Whether it is the Mega 2560 rather than the Uno.
    pub(crate) fn is_mega(&self) -> bool {
        self.mcu.is_some()
    }

    /// Sends `sig` to the rig (tests/rig/README.md: SIGUSR2 power cycle, SIGWINCH latch-up).
    pub(crate) fn signal(&self, sig: libc::c_int) {
        testkit::signal(self.child.as_ref().expect("a plugged board").id(), sig);
    }

    /// Starts a rig on the link (the board is plugged in); returns once it is ready.
    fn plug(&mut self, app: Option<&str>) {
        let out = testkit::rig_dir();
        let mut cmd = Command::new(out.join("rig"));
        cmd.arg("--bootloader").arg(out.join(self.bootloader)).arg("--link").arg(&self.link);
        if let Some(mcu) = self.mcu {
            cmd.arg("--mcu").arg(mcu);
        }
        if let Some(app) = app {
            cmd.arg("--app").arg(out.join(app));
        }
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("rig");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("rig ready line");
        assert!(line.starts_with("ready "), "rig did not start: {line:?}");
        // The reset command reads the pid from here, so it follows a replugged board.
        std::fs::write(self.pid_file(), child.id().to_string()).expect("pid file");
        self.child = Some(child);
    }

    pub(crate) fn pid_file(&self) -> PathBuf {
        self.link.with_extension("pid")
    }

    /// SIGKILL: the board is unplugged (its pty vanishes, the link dangles).
    fn unplug(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.link
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            testkit::signal(child.id(), libc::SIGTERM);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

pub(crate) const ADMIN: &str = "admin@example.com";

/// A lab with one Uno on `board`, reset by the rig's signal (a pty has no
/// DTR), sent to whichever rig is plugged in.
pub(crate) fn lab_config(board: &Board, extra: &str) -> String {
    format!(
        r#"
[lab]
timezone = "UTC"
slot_minutes = 1440
[auth]
admins = ["{ADMIN}"]
[[devices]]
id = "uno-1"
name = "Simulated Uno"
plugin = "stk500v1"
port = "{port}"
reset = ["sh", "-c", "kill -USR1 \"$(cat '{pid_file}')\""]
# The rig's Optiboot takes 1 KB (tests/rig/README.md).
flash_limit = 31744
{extra}
"#,
        port = board.path().display(),
        pid_file = board.pid_file().display(),
    )
}

pub(crate) fn rig_bytes(name: &str) -> Vec<u8> {
    std::fs::read(testkit::rig_file(name)).expect("rig firmware")
}

impl Client {
    pub(crate) async fn upload(&self, device: &str, token: &str, content_type: &str, body: Vec<u8>) -> Resp {
        let auth = format!("Bearer {token}");
        let headers = [("authorization", auth.as_str()), ("content-type", content_type)];
        self.request(hyper::Method::POST, &format!("/devices/upload/{device}"), &headers, body).await
    }

    pub(crate) async fn book_today(&self, token: &str) {
        self.post_auth("/book-slot", token, &json!({"slot_id": 0, "device": "uno-1"})).await.expect(200);
    }

    /// GET /devices until device 0 satisfies `done`.
    pub(crate) async fn device_until(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        eventually(&format!("the device to become {what}"), async || {
            let body = self.get("/devices").await.expect(200);
            if done(&body["devices"][0]) { Ok(body) } else { Err(body) }
        })
        .await
    }
}

/// A console client that keeps what it has seen.
pub(crate) struct Console {
    pub(crate) ws: Ws,
    pub(crate) output: Vec<u8>,
    events: Vec<Value>,
}

impl Console {
    /// Connects and authenticates; panics unless admitted.
    pub(crate) async fn open(daemon: &Daemon, device: &str, token: &str) -> Console {
        let mut ws = daemon.ws(&format!("/devices/read/{device}")).await;
        ws.send(&json!({"token": token})).await;
        let hello = ws.recv().await;
        assert_eq!(hello["type"], "connection_established", "{hello}");
        let mut console = Console { ws, output: Vec::new(), events: Vec::new() };
        let first = console.next().await;
        assert_eq!(first["type"], "serial_output", "the first message after the greeting carries the scrollback");
        console
    }

    /// The next message; serial output is collected (exact bytes) as it passes.
    async fn next(&mut self) -> Value {
        self.next_within(scaled(Duration::from_secs(10))).await
    }

    /// [`Console::next`] within `limit`.
    async fn next_within(&mut self, limit: Duration) -> Value {
        let message = self.ws.recv_within(limit).await;
        if message["type"] == "serial_output" {
            match message["output_base64"].as_str() {
                Some(b64) => self.output.extend(base64_decode(b64)),
                None => self.output.extend_from_slice(message["output"].as_str().expect("output").as_bytes()),
            }
        } else {
            self.events.push(message.clone());
        }
        message
    }

    /// Reads until the board's output contains `needle`; returns the output since the last call.
    pub(crate) async fn until_output(&mut self, needle: &[u8]) -> Vec<u8> {
        while !self.output.windows(needle.len()).any(|w| w == needle) {
            self.next().await;
        }
        std::mem::take(&mut self.output)
    }

    /// Types `text` into the echo program until it comes back. The program's
    /// banner may be printed before the console has the port again after an
    /// upload (the rig, like a USB adapter, drops output nobody reads), so
    /// its first line is no proof that it runs; an echo is.
    pub(crate) async fn echoes(&mut self, text: &str) {
        eventually(&format!("the board to echo {text:?}"), async || {
            self.ws.send(&json!({"type": "input", "data": text})).await;
            let echo = tokio::time::timeout(scaled(Duration::from_millis(500)), self.until_output(text.as_bytes()));
            match echo.await {
                Ok(_) => Ok(()),
                Err(_) => Err(format!("events {:?}", self.events)),
            }
        })
        .await
    }

    pub(crate) async fn until_type(&mut self, kind: &str) -> Value {
        loop {
            let message = self.next().await;
            if message["type"] == kind {
                return message;
            }
        }
    }

    /// Reads until `session_ended` (its message naming `why`), then expects close 1000.
    pub(crate) async fn session_ends(&mut self, why: &str) {
        let ended = self.until_type("session_ended").await;
        assert!(ended["message"].as_str().unwrap().contains(why), "{ended}");
        match self.ws.next().await {
            Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Normal),
            other => panic!("expected close 1000, got {other:?}"),
        }
    }

    /// Reads until `done` holds for a non-output message, within 30 s
    /// (scaled) in all: an upload that retries a step is silent while it
    /// drains and re-syncs, for longer than one message's usual wait.
    async fn until(&mut self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let limit = scaled(Duration::from_secs(30));
        let wanted = async {
            loop {
                let message = self.next_within(limit).await;
                if message["type"] != "serial_output" && done(&message) {
                    return message;
                }
            }
        };
        match tokio::time::timeout(limit, wanted).await {
            Ok(message) => message,
            Err(_) => panic!("console never saw {what}; events {:?}", self.events),
        }
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let digits: Vec<u8> = chunk.iter().filter(|&&c| c != b'=').map(|&c| value(c)).collect();
        let n = digits.iter().enumerate().fold(0u32, |acc, (i, d)| acc | u32::from(*d) << (18 - 6 * i));
        for i in 0..digits.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

const SKETCH: &str =
    "void setup() { Serial.begin(115200); }\nvoid loop() { Serial.println(\"hello sketch\"); delay(100); }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_uploads_hex_and_sketch_and_drives_the_console() {
    let board = Board::start(None);
    let daemon = Daemon::start_with(Options::config(&lab_config(&board, "")));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    c.book_today(&ada).await;

    let devices = c.device_until("online", |d| d["online"] == true).await;
    assert_eq!(devices["count"], 1);
    assert!(devices["supported_models"].as_array().unwrap().contains(&json!("uno")));
    let d = &devices["devices"][0];
    assert_eq!(
        (d["number"].clone(), d["id"].clone(), d["plugin"].clone()),
        (json!(0), json!("uno-1"), json!("stk500v1"))
    );
    assert_eq!(
        (d["in_use"].clone(), d["baud"].clone(), d["model"].clone()),
        (json!(true), json!(115200), json!("uno"))
    );

    let mut console = Console::open(&daemon, "uno-1", &ada).await;
    // A hex file, by device number: the console shows progress, then the program.
    let counter = rig_bytes("counter.hex");
    let r = c.upload("0", &ada, "application/octet-stream", counter).await;
    let body = r.expect(200);
    assert_eq!(body["success"], true);
    assert_eq!(body["device"], "uno-1");
    assert_eq!(body["compile_output"], Value::Null);
    let n_bytes = rerod_devices::Firmware::detect(&rig_bytes("counter.hex")).unwrap().len();
    assert_eq!(body["bytes_written"], n_bytes);
    assert!(body["upload_output"].as_str().unwrap().contains("bytes written"), "{body}");
    console.until_output(b"count ").await;
    let phases: Vec<&str> =
        console.events.iter().filter(|e| e["type"] == "upload_progress").filter_map(|e| e["phase"].as_str()).collect();
    for phase in ["sync", "write", "verify", "done"] {
        assert!(phases.contains(&phase), "no {phase} progress in {phases:?}");
    }

    // The echo program: typed input comes back, binary-safe both ways.
    c.upload("uno-1", &ada, "application/octet-stream", rig_bytes("echo.hex")).await.expect(200);
    console.echoes("hello board\n").await;
    console.ws.send_raw(Message::Binary(vec![0xFF, b'x', 0xC3, 0xA9, 0x00, b'!'].into())).await;
    let echoed = console.until_output(b"!").await;
    assert!(echoed.windows(6).any(|w| w == [0xFF, b'x', 0xC3, 0xA9, 0x00, b'!']), "{echoed:?}");
    // A raw binary image works too.
    c.upload("uno-1", &ada, "application/octet-stream", rig_bytes("counter.bin")).await.expect(200);
    console.until_output(b"count ").await;

    // A sketch: compiled by the device model's toolchain, then uploaded.
    let r = c.post_auth("/devices/upload/uno-1", &ada, &json!({"code": SKETCH})).await;
    let body = r.expect(200);
    assert!(!body["compile_output"].as_str().unwrap().is_empty(), "{body}");
    console.until_output(b"hello sketch").await;

    // Compiling alone.
    let body = c.post_auth("/devices/compile", &ada, &json!({"code": SKETCH, "device": "uno-1"})).await.expect(200);
    assert_eq!(body["success"], true, "{body}");
    let body = c.post_auth("/devices/compile", &ada, &json!({"code": "void setup() { nonsense }"})).await.expect(200);
    assert_eq!(body["success"], false);
    assert!(body["compile_output"].as_str().unwrap().contains("nonsense"), "{body}");
    // Compiling is public, as the old backend's route was (the old Arduino page sends no credentials).
    let body = c.post("/devices/compile", &json!({"code": SKETCH, "device": "uno-1"})).await.expect(200);
    assert_eq!(body["success"], true, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_slot_holder_and_admins_may_upload_or_read() {
    let board = Board::start(Some("counter.hex"));
    let daemon = Daemon::start_with(Options::config(&lab_config(&board, "")));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let bob = c.user("bob@example.com").await;
    let admin = daemon.host_account(ADMIN, false).await;
    let hex = rig_bytes("counter.hex");

    // Nobody holds today's slot yet: even ada needs to book it first.
    let r = c.upload("uno-1", &ada, "application/octet-stream", hex.clone()).await;
    let detail = r.expect(403)["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("slot 0") && detail.contains("book it first"), "{detail}");
    // Ada books today; bob holds only tomorrow: outside his slot he is refused too.
    c.book_today(&ada).await;
    c.post_auth("/book-slot", &bob, &json!({"slot_id": 0, "device": "uno-1", "date": utc_date(1).to_string()}))
        .await
        .expect(200);
    let r = c.upload("uno-1", &bob, "application/octet-stream", hex.clone()).await;
    let body = r.expect(403);
    assert_eq!(body["code"], "not_your_slot");
    assert!(body["detail"].as_str().unwrap().contains("someone else's session"), "{body}");
    let r = c.post_auth("/devices/upload/uno-1", &bob, &json!({"code": SKETCH})).await;
    assert_eq!(r.expect(403)["code"], "not_your_slot", "refused before compiling");

    // Console: bob is refused with the reason and the socket closes.
    let mut ws = daemon.ws("/devices/read/uno-1").await;
    ws.send(&json!({"token": bob})).await;
    let refusal = ws.recv().await;
    assert_eq!((refusal["type"].clone(), refusal["code"].clone()), (json!("error"), json!("not_your_slot")));
    assert!(matches!(ws.next().await, Some(Message::Close(Some(f))) if f.code == CloseCode::Policy));
    // Bad or missing credentials.
    for first in
        [json!({"token": "not-a-token"}), json!({"email": "bob@example.com", "password": "wrong-one"}), json!({})]
    {
        let mut ws = daemon.ws("/devices/read/uno-1").await;
        ws.send(&first).await;
        let refusal = ws.recv().await;
        assert_eq!(refusal["type"], "error", "{first}: {refusal}");
        assert!(matches!(ws.next().await, Some(Message::Close(_))));
    }
    // Unauthenticated uploads: 401 with the Bearer challenge; seed-style body credentials are not enough.
    let r = c
        .request(
            hyper::Method::POST,
            "/devices/upload/uno-1",
            &[("content-type", "application/octet-stream")],
            hex.clone(),
        )
        .await;
    assert_eq!(r.expect(401)["code"], "not_authenticated");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        c.upload("uno-1", "garbage", "application/octet-stream", hex.clone()).await.expect(401)["code"],
        "invalid_token"
    );
    // Unknown devices.
    assert_eq!(
        c.upload("uno-9", &ada, "application/octet-stream", hex.clone()).await.expect(404)["code"],
        "device_not_found"
    );
    assert_eq!(
        c.upload("7", &ada, "application/octet-stream", hex.clone()).await.expect(404)["code"],
        "device_not_found"
    );
    assert_eq!(c.get("/devices/read/nope").await.expect(404)["code"], "device_not_found");

    // The holder and an admin get in; the admin's use is logged.
    let mut console = Console::open(&daemon, "uno-1", &ada).await;
    console.until_output(b"count ").await;
    let mut admin_console = Console::open(&daemon, "uno-1", &admin).await;
    admin_console.until_output(b"count ").await;
    c.upload("uno-1", &admin, "application/octet-stream", hex.clone()).await.expect(200);
    daemon.log_until(|log| log.contains("admin using a device")).await;
    // Several viewers see the same new output.
    console.until_output(b"count ").await;
    admin_console.until_output(b"count ").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_firmware_error_is_refused_before_the_board_is_touched() {
    let board = Board::start(Some("counter.hex"));
    let extra = r#"
[[devices]]
id = "custom-1"
model = "custom-board"
flash_limit = 65536
plugin = "command"
port = "/nonexistent/custom-board"
options = { argv = ["true", "{firmware}"] }
"#;
    let config = format!("{}[server]\nmax_firmware_bytes = 65536\n", lab_config(&board, extra));
    let daemon = Daemon::start_with(Options::config(&config));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    c.book_today(&ada).await;
    c.post_auth("/book-slot", &ada, &json!({"slot_id": 0, "device": "custom-1"})).await.expect(200);
    let mut console = Console::open(&daemon, "uno-1", &ada).await;
    console.until_output(b"count ").await;

    let good = String::from_utf8(rig_bytes("counter.hex")).unwrap();
    let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
    let last = lines[0].pop().unwrap();
    lines[0].push(if last == '0' { '1' } else { '0' });
    let bad_checksum = lines.join("\n");
    let no_eof = good.replace(":00000001FF", "");
    let cases: Vec<(&str, Vec<u8>, u16, &str, &str)> = vec![
        ("bad checksum", bad_checksum.into_bytes(), 422, "invalid_firmware", "checksum"),
        ("truncated", no_eof.into_bytes(), 422, "invalid_firmware", "end-of-file"),
        ("bad digit", b":10000000ZZ\n:00000001FF\n".to_vec(), 422, "invalid_firmware", "not a hex digit"),
        ("empty", Vec::new(), 422, "invalid_firmware", "empty"),
        ("bigger than the flash", vec![0x0C; 40_000], 400, "firmware_too_large", "31744"),
        ("bigger than the limit", vec![0x0C; 70_000], 413, "body_too_large", "65536"),
    ];
    for (what, body, status, code, needle) in cases {
        let r = c.upload("uno-1", &ada, "application/octet-stream", body).await;
        let body = r.expect(status);
        assert_eq!(body["code"], code, "{what}: {body}");
        assert!(body["detail"].as_str().unwrap().contains(needle), "{what}: {body}");
    }
    // A board rerod knows nothing of has its flash_limit from the config: an
    // image with data at 0 and at 0xFFFF0000 is refused, never laid out as 4 GiB.
    let far = ":01000000AA55\n:02000004FFFFFC\n:01000000BB44\n:00000001FF\n";
    let r = c.upload("custom-1", &ada, "application/octet-stream", far.as_bytes().to_vec()).await;
    let body = r.expect(400);
    assert_eq!(body["code"], "firmware_too_large", "{body}");
    assert!(body["detail"].as_str().unwrap().contains("65536"), "{body}");
    let r = c.upload("uno-1", &ada, "image/png", rig_bytes("counter.hex")).await;
    assert_eq!(r.expect(415)["code"], "unsupported_media_type");
    let r = c.post_auth("/devices/upload/uno-1", &ada, &json!({"source": SKETCH})).await;
    assert_eq!(r.expect(422)["field"], "code");
    let r = c.post_auth("/devices/upload/uno-1", &ada, &json!({"code": "int main( {"})).await;
    let body = r.expect(400);
    assert_eq!(body["code"], "compile_failed");
    assert!(body["detail"].as_str().unwrap().contains("error"), "{body}");
    let r = c.post_auth("/devices/upload/custom-1", &ada, &json!({"code": SKETCH})).await;
    let body = r.expect(400);
    assert_eq!(body["code"], "no_compiler");
    assert!(body["detail"].as_str().unwrap().contains("custom-board"), "{body}");
    // None of that reached the board: no upload started, the program still runs.
    console.until_output(b"count ").await;
    assert!(!console.events.iter().any(|e| e["type"] == "upload_progress"), "{:?}", console.events);
    assert!(!daemon.log().contains("upload started"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplugging_mid_upload_and_mid_console_is_clear_and_the_board_comes_back() {
    let mut board = Board::start(Some("counter.hex"));
    let daemon = Daemon::start_with(Options::config(&lab_config(&board, "")));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    c.book_today(&ada).await;
    let mut console = Console::open(&daemon, "uno-1", &ada).await;
    console.until_output(b"count ").await;

    // Mid-upload: pull the plug once the write phase is under way.
    let upload = tokio::spawn({
        let (c, ada) = (c, ada.clone());
        async move { c.upload("uno-1", &ada, "application/octet-stream", rig_bytes("big.hex")).await }
    });
    console
        .until("write progress", |e| {
            e["type"] == "upload_progress" && e["phase"] == "write" && e["percent"].as_u64() >= Some(10)
        })
        .await;
    board.unplug();
    let r = upload.await.unwrap();
    let body = r.expect(503);
    assert_eq!(body["code"], "device_offline");
    assert!(body["detail"].as_str().unwrap().contains("went away"), "{body}");
    // The upload's failure and the port's offline notice are independent
    // events: they may reach the console in either order.
    let (mut failed, mut offline) = (None, false);
    while failed.is_none() || !offline {
        let event = console
            .until("upload failure and offline notice", |e| {
                (e["type"] == "upload_progress" && e["phase"] == "failed") || e["code"] == "device_offline"
            })
            .await;
        if event["code"] == "device_offline" {
            offline = true;
        } else {
            failed = Some(event);
        }
    }
    let failed = failed.unwrap();
    assert!(failed["message"].as_str().unwrap().contains("went away"), "{failed}");
    c.device_until("offline", |d| d["online"] == false).await;
    let r = c.upload("uno-1", &ada, "application/octet-stream", rig_bytes("counter.hex")).await;
    assert_eq!(r.expect(503)["code"], "device_offline");

    // Plugged back in: online again, same console, without restarting rerod.
    board.plug(Some("counter.hex"));
    c.device_until("online", |d| d["online"] == true).await;
    console.until("back online", |e| e["type"] == "device_status" && e["online"] == true).await;
    console.until_output(b"count ").await;

    // Mid-console: unplug and replug again.
    board.unplug();
    console.until("offline notice", |e| e["code"] == "device_offline").await;
    c.device_until("offline", |d| d["online"] == false).await;
    board.plug(Some("counter.hex"));
    console.until("back online", |e| e["type"] == "device_status").await;
    console.until_output(b"count ").await;
    // And uploads work again.
    c.upload("uno-1", &ada, "application/octet-stream", rig_bytes("echo.hex")).await.expect(200);
    console.echoes("back\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_the_session_closes_the_console_aborts_the_upload_and_restores_the_board() {
    let board = Board::start(Some("counter.hex"));
    let idle = format!("idle_firmware = \"{}\"\n", testkit::rig_file("counter.hex").display());
    let daemon = Daemon::start_with(Options::config(&lab_config(&board, &idle)));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let admin = daemon.host_account(ADMIN, false).await;
    c.book_today(&ada).await;
    let mut console = Console::open(&daemon, "uno-1", &ada).await;
    let mut watcher = Console::open(&daemon, "uno-1", &admin).await;
    console.until_output(b"count ").await;

    let upload = tokio::spawn({
        let (c, ada) = (c, ada.clone());
        async move { c.upload("uno-1", &ada, "application/octet-stream", rig_bytes("big.hex")).await }
    });
    console.until("write progress", |e| e["type"] == "upload_progress" && e["phase"] == "write").await;
    // Ada gives up her slot while her upload runs: the session ends at once.
    c.post_auth("/cancel-slot", &ada, &json!({"slot_id": 0, "device": "uno-1"})).await.expect(200);
    console.session_ends("cancelled").await;
    let r = upload.await.unwrap();
    let body = r.expect(409);
    assert_eq!(body["code"], "upload_aborted");
    assert!(body["detail"].as_str().unwrap().contains("cancelled"), "{body}");

    // The admin's console stays; the lab's idle firmware goes back on the board.
    watcher.until("the aborted upload", |e| e["type"] == "upload_progress" && e["phase"] == "failed").await;
    // From here on, output can only come from the restored program, which starts at 0.
    watcher.output.clear();
    watcher.until("the idle firmware", |e| e["type"] == "upload_progress" && e["phase"] == "done").await;
    watcher.until_output(b"count ").await;
    daemon.log_until(|log| log.contains("restoring the idle firmware")).await;
    // Ada no longer holds the device.
    let r = c.upload("uno-1", &ada, "application/octet-stream", rig_bytes("counter.hex")).await;
    assert_eq!(r.expect(403)["code"], "not_your_slot");
    c.device_until("free", |d| d["in_use"] == false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_the_holder_ends_the_session_at_once() {
    let board = Board::start(Some("counter.hex"));
    let daemon = Daemon::start_with(Options::config(&lab_config(&board, "")));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let admin = daemon.host_account(ADMIN, false).await;
    c.book_today(&ada).await;
    let mut console = Console::open(&daemon, "uno-1", &ada).await;
    console.until_output(b"count ").await;

    let body = c.post_auth("/admin/users/disable", &admin, &json!({"email": "ada@example.com"})).await.expect(200);
    assert_eq!(body["cancelled_bookings"][0]["device"], "uno-1", "{body}");
    console.session_ends("disabled").await;
    let r = c.upload("uno-1", &ada, "application/octet-stream", rig_bytes("counter.hex")).await;
    assert_eq!(r.expect(403)["code"], "account_disabled");
    c.device_until("free", |d| d["in_use"] == false).await;
}

/// Reads the `error` a console refuses with, then expects the close that
/// follows it: 1008, as the old backend sent.
async fn refusal(ws: &mut Ws) -> Value {
    let refusal = ws.recv().await;
    assert_eq!(refusal["type"], "error", "{refusal}");
    match ws.next().await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Policy, "after {refusal}"),
        other => panic!("expected close 1008 after {refusal}, got {other:?}"),
    }
    refusal
}

/// A lab with one Uno configured on a port where nothing is plugged in:
/// enough for what a console decides before it touches the board.
pub(crate) const UNPLUGGED_LAB: &str = "[lab]\ntimezone = \"UTC\"\nslot_minutes = 1440\n\
    [[devices]]\nid = \"uno-1\"\nplugin = \"stk500v1\"\nport = \"/nonexistent/uno-1\"\n";

/// The old backend accepted the console's WebSocket for any device and only
/// then said that the device does not exist; its clients read that message
/// and would show a bare handshake failure instead.
#[tokio::test]
async fn a_console_for_an_unknown_device_opens_then_says_not_found_and_closes_1008() {
    for options in [Options::default(), Options::config(UNPLUGGED_LAB)] {
        let daemon = Daemon::start_with(options.clone());
        for device in ["999", "no-such-board"] {
            let mut ws = daemon.ws(&format!("/devices/read/{device}")).await;
            let error = refusal(&mut ws).await;
            let expected = format!("Device {device} not found or invalid");
            let message = error["message"].as_str().unwrap_or_default();
            assert!(message.starts_with(&expected), "{options:?}, {device}: {error}");
            assert_eq!(error["code"], "device_not_found", "{options:?}, {device}: {error}");
        }
    }
}

/// Old scripts match the start of a console refusal's message, so it keeps
/// the old backend's wording there, followed by rerod's own reason.
#[tokio::test]
async fn console_refusals_start_with_the_old_backends_wording() {
    let daemon = Daemon::start_with(Options::config(UNPLUGGED_LAB));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let bob = c.user("bob@example.com").await;
    let open = |first: Value| {
        let daemon = &daemon;
        async move {
            let mut ws = daemon.ws("/devices/read/uno-1").await;
            ws.send(&first).await;
            refusal(&mut ws).await
        }
    };

    // Bad credentials: the old prefix, then what was wrong, with today's codes.
    let wrong_password = open(json!({"email": "bob@example.com", "password": "wrong-one"})).await;
    let bad_token = open(json!({"token": "not-a-token"})).await;
    for (error, code) in [(wrong_password, "invalid_credentials"), (bad_token, "invalid_token")] {
        assert_eq!(error["code"], code, "{error}");
        let message = error["message"].as_str().unwrap();
        let detail =
            message.strip_prefix("Authentication failed: ").unwrap_or_else(|| panic!("old prefix missing: {error}"));
        assert!(!detail.trim().is_empty(), "the reason follows the prefix: {error}");
    }

    // Signed in but not the holder of the slot in progress, free or booked by
    // someone else: the old prefix, then the reason naming the slot needed.
    let free = open(json!({"token": bob})).await;
    c.book_today(&ada).await;
    let taken = open(json!({"token": bob})).await;
    for error in [free, taken] {
        assert_eq!(error["code"], "not_your_slot", "{error}");
        let message = error["message"].as_str().unwrap();
        let detail = message
            .strip_prefix("You must have booked the current time slot")
            .unwrap_or_else(|| panic!("old prefix missing: {error}"));
        assert!(detail.contains("slot 0"), "the reason names the slot in progress: {error}");
    }
}

/// A board whose bootloader never answers: the student reads what happened
/// and what to do, in plain words; the protocol's detail goes to the log and
/// the session record; the progress bar stops where the upload did, marked
/// failed, never at 100%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_that_does_not_answer_is_reported_in_plain_words() {
    let board = Board::start_with("dead_bootloader.hex", None);
    let daemon = Daemon::start_with(Options::config(&lab_config(
        &board,
        "options = { reset_attempts = 1, sync_window_ms = 300 }",
    )));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    c.book_today(&ada).await;
    c.device_until("online", |d| d["online"] == true).await;
    let mut console = Console::open(&daemon, "uno-1", &ada).await;

    let r = c.upload("uno-1", &ada, "application/octet-stream", rig_bytes("counter.hex")).await;
    let body = r.expect(502);
    assert_eq!(body["code"], "upload_failed", "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("the board did not answer; try again, or ask an admin to check the board"), "{detail}");
    for jargon in ["bootloader", "baud", "sync", "STK", "0x"] {
        assert!(!detail.contains(jargon), "{jargon:?} in what the student reads: {detail}");
    }
    let failed =
        console.until("the upload's failure", |e| e["type"] == "upload_progress" && e["phase"] == "failed").await;
    assert_eq!(failed["message"].as_str(), Some(detail), "{failed}");
    assert!(failed["percent"].as_u64() < Some(100), "a failed upload is not shown full: {failed}");

    // The admin's side: the log and the session record say what the protocol did.
    let log = daemon.log_until(|log| log.contains("upload failed")).await;
    assert!(log.contains("the bootloader did not answer after 1 reset attempt"), "{log}");
    let record = eventually("the failed upload in the session record", async || {
        let listed = c.get_auth("/records", &ada).await.expect(200);
        let Some(id) = listed["records"][0]["id"].as_str() else { return Err(listed) };
        let record = c.get_auth(&format!("/records/{id}"), &ada).await.expect(200);
        if record["uploads"][0]["result"] == "failed" { Ok(record) } else { Err(record) }
    })
    .await;
    let recorded = record["uploads"][0]["detail"].as_str().unwrap();
    assert!(recorded.contains("did not answer after 1 reset attempt(s) at 115200 baud"), "{record}");
}

/// Regression: on a board without `idle_firmware`, the next student saw the
/// last student's program still printing. The session's end flashes a blank
/// program, and the scrollback goes with the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idle_firmware_the_next_student_finds_a_silent_board() {
    let board = Board::start(None);
    let daemon = Daemon::start_with(Options::config(&lab_config(&board, "")));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let bob = c.user("bob@example.com").await;
    let admin = daemon.host_account(ADMIN, false).await;
    c.book_today(&ada).await;
    c.device_until("online", |d| d["online"] == true).await;
    let mut watcher = Console::open(&daemon, "uno-1", &admin).await;
    c.upload("uno-1", &ada, "application/octet-stream", rig_bytes("counter.hex")).await.expect(200);
    watcher.until("ada's upload", |e| e["type"] == "upload_progress" && e["phase"] == "done").await;
    watcher.until_output(b"count ").await;

    // Ada's session ends; the lab flashes the blank program before anyone else may.
    c.post_auth("/cancel-slot", &ada, &json!({"slot_id": 0, "device": "uno-1"})).await.expect(200);
    watcher.until("the blank program", |e| e["type"] == "upload_progress" && e["phase"] == "done").await;
    daemon.log_until(|log| log.contains("flashing a blank program")).await;

    c.book_today(&bob).await;
    let bob_console = Console::open(&daemon, "uno-1", &bob).await;
    let seen = String::from_utf8_lossy(&bob_console.output).into_owned();
    assert!(!seen.contains("count "), "bob's console shows ada's program: {seen:?}");
}
