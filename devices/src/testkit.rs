//! Test helpers the plugin crates share: the simulated Arduino rig (tests/rig) and the uploader compliance checks.
//!
//! Only built for tests (`cfg(test)` here, feature `testkit` for the plugin
//! crates' dev-dependencies). Helpers panic with a full explanation instead of
//! returning errors: they are assertions.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::{CancelToken, Firmware, Phase, ResetMethod, UploadContext, UploadError, UploadEvent, UploadJob, Uploader};

/// The workspace root (where tests/rig lives).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("devices/ has a parent").to_path_buf()
}

/// Builds the rig once per test process (tests/rig/setup.sh: idempotent,
/// ~0.1 s when up to date, installs Debian packages when missing) and
/// returns its output directory.
pub fn rig_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace_root();
        let out = root.join("target/rig");
        let result = Command::new(root.join("tests/rig/setup.sh")).arg(&out).output().expect("run tests/rig/setup.sh");
        assert!(
            result.status.success(),
            "tests/rig/setup.sh failed ({}):\n{}",
            result.status,
            String::from_utf8_lossy(&result.stderr)
        );
        out
    })
    .clone()
}

/// A file the rig setup built (`counter.hex`, `big.hex`, `counter-mega.hex`, ...).
pub fn rig_file(name: &str) -> PathBuf {
    rig_dir().join(name)
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
    let mut port = crate::open_port(path, 115_200).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
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
) -> crate::UploadReport {
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
