//! Test helpers the plugin crates share: the simulated Arduino rig (tests/rig), the uploader compliance checks, and
//! the scaffolding of in-memory fake bootloaders ([`FakeBootloader`]).
//!
//! Only built for tests (`cfg(test)` here, feature `testkit` for the plugin
//! crates' dev-dependencies). Helpers panic with a full explanation instead of
//! returning errors: they are assertions.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::io::{self, BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::cancel::CancelToken;
use crate::error::UploadError;
use crate::firmware::Firmware;
use crate::link::SerialLink;
use crate::port::open_port;
use crate::reset::ResetMethod;
use crate::upload::{Phase, UploadContext, UploadEvent, UploadJob, UploadReport, Uploader};

/// The workspace root (where tests/rig lives).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("devices/ has a parent").to_path_buf()
}

/// The rig's output directory, as tests/rig/setup.sh left it.
///
/// Tests never build the rig themselves: setting it up may install Debian
/// packages as root and compile for seconds, which belongs before `cargo
/// test` (tests/run.sh runs setup.sh first), not inside a test racing others
/// on a loaded machine. A missing or outdated rig fails the test, saying so.
pub fn rig_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace_root();
        let out = root.join("target/rig");
        if let Err(problem) = rig_prepared(&root.join("tests/rig"), &out) {
            panic!("{problem}: run tests/rig/setup.sh first (tests/run.sh does)");
        }
        out
    })
    .clone()
}

/// What setup.sh builds the rig from, under tests/rig/ (a folder counts
/// with everything in it); its documentation and checks are not among them.
const RIG_SOURCES: [&str; 3] = ["setup.sh", "harness.c", "firmware"];

/// Whether setup.sh finished in `out` (it writes `ready` last) after the
/// last change to the rig's sources in `rig`; if not, what is wrong.
fn rig_prepared(rig: &Path, out: &Path) -> Result<(), String> {
    let stamp = out.join("ready");
    let built = std::fs::metadata(&stamp)
        .and_then(|m| m.modified())
        .map_err(|_| format!("the simulated board rig is not built ({} is missing)", stamp.display()))?;
    let mut pending: Vec<PathBuf> = RIG_SOURCES.iter().map(|name| rig.join(name)).collect();
    while let Some(path) = pending.pop() {
        let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.is_dir() {
            let entries = std::fs::read_dir(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            for entry in entries {
                pending.push(entry.map_err(|e| format!("reading {}: {e}", path.display()))?.path());
            }
        } else if meta.modified().is_ok_and(|changed| changed > built) {
            return Err(format!("{} changed since the rig was built", path.display()));
        }
    }
    Ok(())
}

/// A file the rig setup built (`counter.hex`, `big.hex`, `counter-mega.hex`, ...).
pub fn rig_file(name: &str) -> PathBuf {
    let path = rig_dir().join(name);
    assert!(path.exists(), "{} is missing: run tests/rig/setup.sh first (tests/run.sh does)", path.display());
    path
}

pub fn load_firmware(name: &str) -> Arc<Firmware> {
    let path = rig_file(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    Arc::new(Firmware::detect(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// Which board a rig simulates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Board {
    /// Arduino Uno: ATmega328P, Optiboot in a 1 KB boot section (STK500v1).
    #[default]
    Uno,
    /// Arduino Mega 2560: ATmega2560, Debian's stk500boot_v2_mega2560.hex (STK500v2).
    Mega2560,
}

impl Board {
    /// The harness's `--mcu`.
    fn mcu(self) -> &'static str {
        match self {
            Board::Uno => "atmega328p",
            Board::Mega2560 => "atmega2560",
        }
    }

    /// The bootloader's file in the rig dir.
    fn bootloader(self) -> &'static str {
        match self {
            Board::Uno => "optiboot_atmega328.hex",
            Board::Mega2560 => "stk500boot_v2_mega2560.hex",
        }
    }

    /// The rerod model name of the board.
    pub fn model(self) -> &'static str {
        match self {
            Board::Uno => "uno",
            Board::Mega2560 => "mega2560",
        }
    }

    /// Flash left for programs below the rig's bootloader: the Uno's
    /// Optiboot takes 1 KB (see tests/rig/README.md), the Mega's 8 KB.
    pub fn flash_limit(self) -> u64 {
        match self {
            Board::Uno => 31_744,
            Board::Mega2560 => 253_952,
        }
    }

    /// The rig's hex file of test program `program` ("counter", "echo")
    /// built for this board: "counter.hex", "counter-mega.hex".
    pub fn firmware(self, program: &str) -> String {
        match self {
            Board::Uno => format!("{program}.hex"),
            Board::Mega2560 => format!("{program}-mega.hex"),
        }
    }
}

/// How to start a simulated board.
#[derive(Debug, Clone, Default)]
pub struct RigOptions {
    /// Reset whenever the port is first opened, like an Arduino's DTR.
    pub reset_on_open: bool,
    /// A program (file in the rig dir, e.g. "counter.hex") the board starts with.
    pub app: Option<String>,
    /// The board to simulate (a Uno unless said otherwise).
    pub board: Board,
}

/// A running simulated Arduino (Uno with Optiboot, or Mega 2560) on its own pty link.
#[derive(Debug)]
pub struct Rig {
    child: Child,
    dir: PathBuf,
    link: PathBuf,
    log: PathBuf,
}

impl Rig {
    pub fn start(options: RigOptions) -> Rig {
        static N: AtomicUsize = AtomicUsize::new(0);
        let out = rig_dir();
        let dir =
            std::env::temp_dir().join(format!("rerod-rig-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("rig temp dir");
        let link = dir.join(options.board.model());
        let log = dir.join("rig.log");
        let mut cmd = Command::new(out.join("rig"));
        cmd.arg("--mcu").arg(options.board.mcu());
        cmd.arg("--bootloader").arg(out.join(options.board.bootloader())).arg("--link").arg(&link).arg("-v");
        if options.reset_on_open {
            cmd.arg("--reset-on-open");
        }
        if let Some(app) = &options.app {
            cmd.arg("--app").arg(out.join(app));
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("rig log"))
            .spawn()
            .expect("start the rig");
        // The rig prints exactly one line, "ready PATH", once the link exists.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let rig = Rig { child, dir, link, log };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.starts_with("ready ") => rig,
            other => panic!("the rig did not become ready ({other:?}); its log:\n{}", rig.log()),
        }
    }

    /// The port path (a link to the rig's pty).
    pub fn path(&self) -> &Path {
        &self.link
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resets the board now (SIGUSR1, the rig's RESET pin), e.g. right
    /// before another program (avrdude) opens the port.
    pub fn reset(&self) {
        signal(self.pid(), libc::SIGUSR1);
    }

    /// Resets the board by signal, as a reset command would.
    pub fn reset_command(&self) -> ResetMethod {
        ResetMethod::Command(vec!["kill".into(), "-USR1".into(), self.pid().to_string()])
    }

    /// Where the rig's stderr goes, for a test that waits for a line from another thread.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The rig's stderr so far (resets, opens), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        signal(self.child.id(), libc::SIGTERM);
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `sig` to `pid` (e.g. SIGKILL to a rig to pull the board's plug).
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Opens `path` and reads until `needle` has been seen; returns what was read.
pub fn read_serial_until(path: &Path, needle: &str, timeout: Duration) -> String {
    let mut port = open_port(path, 115_200).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&got).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} from the board within {timeout:?}; got {:?}",
            String::from_utf8_lossy(&got)
        );
        match port.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("reading {}: {e}", path.display()),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// An [`UploadContext`] that records every event.
pub fn recording_context(cancel: CancelToken) -> (UploadContext, Arc<Mutex<Vec<UploadEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (UploadContext::new(cancel, move |e| sink.lock().unwrap().push(e)), events)
}

/// A [`recording_context`] that, once `phase` progress reaches `percent`,
/// stops process `pid` (a rig) for `stall` and then lets it go on: a host
/// too busy to run the board's side in time, so a reply misses its deadline.
pub fn stalling_context(
    pid: u32,
    phase: Phase,
    percent: u8,
    stall: Duration,
) -> (UploadContext, Arc<Mutex<Vec<UploadEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let stalled = std::sync::atomic::AtomicBool::new(false);
    let ctx = UploadContext::new(CancelToken::new(), move |e| {
        if let UploadEvent::Progress(p) = e
            && p.phase == phase
            && p.percent >= percent
            && !stalled.swap(true, Ordering::SeqCst)
        {
            // Stopped before this call returns, so the next request is sent to a stopped board.
            signal(pid, libc::SIGSTOP);
            std::thread::spawn(move || {
                std::thread::sleep(stall);
                signal(pid, libc::SIGCONT);
            });
        }
        sink.lock().unwrap().push(e);
    });
    (ctx, events)
}

/// A job for the rig's Uno, whose bootloader takes 1 KB (31,744 bytes for programs).
pub fn rig_job(firmware: Arc<Firmware>, port: &Path, reset: ResetMethod, options: toml::Table) -> UploadJob {
    board_job(Board::Uno, firmware, port, reset, options)
}

/// A job for a rig simulating `board` (both bootloaders talk at 115200).
pub fn board_job(
    board: Board,
    firmware: Arc<Firmware>,
    port: &Path,
    reset: ResetMethod,
    options: toml::Table,
) -> UploadJob {
    UploadJob {
        firmware,
        port: port.to_owned(),
        baud: 115_200,
        reset,
        model: board.model().into(),
        flash_limit: Some(board.flash_limit()),
        options,
    }
}

/// Asserts that progress phases never go backwards, percentages never drop
/// within a phase, and the last event is Done at 100 %.
pub fn assert_progress_well_formed(events: &[UploadEvent]) {
    let progress: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            UploadEvent::Progress(p) => Some(*p),
            UploadEvent::Log(_) => None,
        })
        .collect();
    for pair in progress.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(
            b.phase > a.phase || (b.phase == a.phase && b.percent >= a.percent),
            "progress went back: {a:?} then {b:?}"
        );
    }
    let last = progress.last().copied();
    assert!(last.is_some_and(|p| p.phase == Phase::Done && p.percent == 100), "last progress {last:?}, want done 100");
}

/// What every uploader must do without any hardware: accept its valid
/// options and refuse typos; refuse an oversized image, a missing port and a
/// cancelled job with the right error, without touching anything.
pub async fn check_offline_contract(uploader: &dyn Uploader, valid_options: toml::Table) {
    assert!(!uploader.name().is_empty());
    uploader.check_options(&valid_options).unwrap_or_else(|e| panic!("valid options refused: {e:?}"));
    let mut typo = valid_options.clone();
    typo.insert("no_such_option".into(), toml::Value::Boolean(true));
    let errors = uploader.check_options(&typo).expect_err("an unknown option is refused");
    assert!(errors.iter().any(|e| e.key == "no_such_option"), "{errors:?}");

    let missing = Path::new("/nonexistent/rerod-compliance-port");
    let small = Arc::new(Firmware::from_binary(vec![0x0C; 300], 0).unwrap());
    let run = |firmware: Arc<Firmware>, limit: Option<u64>, cancel: CancelToken| {
        let mut job = rig_job(firmware, missing, ResetMethod::None, valid_options.clone());
        job.flash_limit = limit;
        let (ctx, _) = recording_context(cancel);
        uploader.upload(job, ctx)
    };

    let big = Arc::new(Firmware::from_binary(vec![0x0C; 2000], 0).unwrap());
    let result = run(big, Some(1000), CancelToken::new()).await;
    assert!(matches!(result, Err(UploadError::TooLarge { size: 2000, limit: 1000 })), "{result:?}");

    let result = run(small.clone(), Some(1000), CancelToken::new()).await;
    assert!(matches!(result, Err(UploadError::PortNotFound { .. })), "{result:?}");

    let cancel = CancelToken::new();
    cancel.cancel();
    let result = run(small, Some(1000), cancel).await;
    assert!(matches!(result, Err(UploadError::Cancelled)), "{result:?}");
}

/// On a simulated board: flash the counter program built for it, check the
/// report and the progress, then see the new program run. Returns the report.
pub async fn check_rig_contract(
    uploader: &dyn Uploader,
    options: toml::Table,
    rig_options: RigOptions,
    reset: fn(&Rig) -> ResetMethod,
) -> UploadReport {
    let board = rig_options.board;
    let rig = Rig::start(rig_options);
    let firmware = load_firmware(&board.firmware("counter"));
    let (ctx, events) = recording_context(CancelToken::new());
    let job = board_job(board, firmware.clone(), rig.path(), reset(&rig), options);
    let report =
        uploader.upload(job, ctx).await.unwrap_or_else(|e| panic!("upload failed: {e}\nrig log:\n{}", rig.log()));
    assert_eq!(report.bytes_written, firmware.len());
    assert!(!report.log.is_empty(), "the report carries a log");
    assert_progress_well_formed(&events.lock().unwrap());
    let path = rig.path().to_owned();
    let seen =
        tokio::task::spawn_blocking(move || read_serial_until(&path, "count ", Duration::from_secs(10))).await.unwrap();
    assert!(seen.contains("count "), "{seen}");
    report
}

/// The wire side of an in-memory fake bootloader: what the uploader wrote
/// and the fake has not parsed yet, what the fake answered and the uploader
/// has not read yet, and the DTR line whose rising edge resets the board.
#[derive(Debug)]
pub struct FakeWire {
    pub input: Vec<u8>,
    pub output: VecDeque<u8>,
    pub dtr: bool,
}

impl Default for FakeWire {
    /// Idle line, DTR asserted (as after the port is opened).
    fn default() -> FakeWire {
        FakeWire { input: Vec::new(), output: VecDeque::new(), dtr: true }
    }
}

/// An in-memory fake board for a protocol plugin's unit tests. It answers
/// synchronously: every write is parsed at once and its answers queued for
/// the next reads. Implementing this is all a fake needs to be a
/// [`SerialLink`]; only the protocol (`process`, `reset`) differs per plugin.
pub trait FakeBootloader: Send {
    fn wire(&mut self) -> &mut FakeWire;

    /// Parses every complete message in the wire's input and queues the answers.
    fn process(&mut self);

    /// DTR was asserted again: the board resets into its bootloader.
    fn reset(&mut self);

    /// Called before every read: a fake that delays a reply moves it onto
    /// the wire here once its time has come.
    fn poll(&mut self) {}

    /// The port is gone: reads hang up, writes fail with EIO.
    fn vanished(&self) -> bool {
        false
    }

    /// A pty-like port: setting DTR fails with ENOTTY.
    fn no_modem_lines(&self) -> bool {
        false
    }
}

impl<B: FakeBootloader> SerialLink for B {
    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        if self.vanished() {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "hang-up"));
        }
        self.poll();
        if self.wire().output.is_empty() {
            // A silent board: the time passes as it would on the wire, and
            // a reply delayed into that time arrives at its end.
            std::thread::sleep(timeout);
            self.poll();
        }
        let output = &mut self.wire().output;
        if output.is_empty() {
            return Ok(0);
        }
        let n = buf.len().min(output.len());
        for (slot, byte) in buf.iter_mut().zip(output.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.vanished() {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.wire().input.extend_from_slice(bytes);
        self.process();
        Ok(())
    }

    fn discard_input(&mut self) -> io::Result<()> {
        // Only what is already "on the wire" is dropped; noise after a reset
        // arrives later on a real board, so keep it here.
        Ok(())
    }

    fn set_dtr_rts(&mut self, asserted: bool) -> io::Result<()> {
        if self.no_modem_lines() {
            return Err(io::Error::from_raw_os_error(libc::ENOTTY));
        }
        if asserted && !self.wire().dtr {
            self.reset();
        }
        self.wire().dtr = asserted;
        Ok(())
    }
}

/// A firmware image of `len` bytes at `base` with a pattern that makes a
/// misplaced byte show.
pub fn pattern_firmware(len: usize, base: u32) -> Arc<Firmware> {
    let data = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    Arc::new(Firmware::from_binary(data, base).expect("firmware"))
}

/// A job for a fake `board` behind `port` (115200 baud, DTR reset, the
/// model's own flash limit), with `options` as TOML text.
pub fn fake_job(board: Board, port: &str, firmware: Arc<Firmware>, options: &str) -> UploadJob {
    UploadJob {
        firmware,
        port: PathBuf::from(port),
        baud: 115_200,
        reset: ResetMethod::Dtr,
        model: board.model().into(),
        flash_limit: None,
        options: toml::from_str(options).expect("options"),
    }
}

/// Runs `upload` with a [`recording_context`] and returns its result and events.
pub fn upload_recorded(
    upload: impl FnOnce(&UploadContext) -> Result<UploadReport, UploadError>,
) -> (Result<UploadReport, UploadError>, Vec<UploadEvent>) {
    let (ctx, events) = recording_context(CancelToken::new());
    let result = upload(&ctx);
    let events = events.lock().unwrap().clone();
    (result, events)
}

/// An [`UploadContext`] that cancels its own token once `phase` progress
/// reaches `percent`: a user pressing cancel mid-upload.
pub fn cancelling_context(phase: Phase, percent: u8) -> UploadContext {
    let cancel = CancelToken::new();
    let trigger = cancel.clone();
    UploadContext::new(cancel, move |e| {
        if let UploadEvent::Progress(p) = e
            && p.phase == phase
            && p.percent >= percent
        {
            trigger.cancel();
        }
    })
}

// The rig's own files are checked here rather than in `firmware`, which sits
// at the bottom of the crate and so must not reach up into the testkit.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rig_firmware_parses_like_its_binary() {
        // The rig's setup builds counter.hex and counter.bin from one ELF.
        let hex = std::fs::read(rig_file("counter.hex")).expect("counter.hex");
        let bin = std::fs::read(rig_file("counter.bin")).expect("counter.bin");
        let fw = Firmware::detect(&hex).expect("counter.hex parses");
        assert_eq!(fw.flatten().bytes, bin);
    }

    #[test]
    fn a_rig_missing_or_older_than_its_sources_is_refused_by_name() {
        let sources = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::create_dir(sources.path().join("firmware")).unwrap();
        let source = sources.path().join("firmware/echo.c");
        let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        for name in ["setup.sh", "harness.c", "firmware/echo.c"] {
            let path = sources.path().join(name);
            std::fs::write(&path, "").unwrap();
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(an_hour_ago).unwrap();
        }
        let problem = rig_prepared(sources.path(), out.path()).unwrap_err();
        assert!(problem.contains("not built") && problem.contains("ready"), "{problem}");

        // setup.sh ran after the last change: prepared, whatever the
        // documentation says since.
        std::fs::write(out.path().join("ready"), "").unwrap();
        std::fs::write(sources.path().join("README.md"), "edited after the build").unwrap();
        assert_eq!(rig_prepared(sources.path(), out.path()), Ok(()));

        // A source edited since (in a subfolder too): outdated, and which file says why.
        let later = std::time::SystemTime::now() + Duration::from_secs(60);
        std::fs::File::options().write(true).open(&source).unwrap().set_modified(later).unwrap();
        let problem = rig_prepared(sources.path(), out.path()).unwrap_err();
        assert!(problem.contains("echo.c") && problem.contains("changed"), "{problem}");
    }
}
