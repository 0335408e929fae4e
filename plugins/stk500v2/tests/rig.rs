//! The stk500v2 uploader against the simulated Arduino Mega 2560 (Debian's
//! real stk500boot_v2_mega2560.hex in simavr, tests/rig), cross-checked with avrdude.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rerod_devices::testkit::{
    self, Board, Rig, RigOptions, board_job, check_rig_contract, read_serial_until, recording_context, rig_file,
};
use rerod_devices::{CancelToken, Firmware, Phase, ResetMethod, UploadError, Uploader};
use rerod_stk500v2::Stk500v2;

/// A simulated Mega, optionally running one of the rig's test programs ("counter", "echo").
fn mega(reset_on_open: bool, program: Option<&str>) -> RigOptions {
    RigOptions { reset_on_open, app: program.map(|p| Board::Mega2560.firmware(p)), board: Board::Mega2560 }
}

#[tokio::test]
async fn flashes_a_blank_mega_reset_by_command() {
    let report = check_rig_contract(&Stk500v2, toml::Table::new(), mega(false, None), Rig::reset_command).await;
    assert!(report.log.contains("AVRISP_2"), "{}", report.log);
    assert!(report.log.contains("(as expected)"), "{}", report.log);
}

#[tokio::test]
async fn reset_on_open_mega_with_dtr_reset_is_flashed() {
    // As on a pty, DTR cannot be pulsed; the open itself reset the board.
    check_rig_contract(&Stk500v2, toml::Table::new(), mega(true, None), |_| ResetMethod::Dtr).await;
}

#[tokio::test]
async fn replaces_a_running_program() {
    check_rig_contract(&Stk500v2, toml::Table::new(), mega(false, Some("echo")), Rig::reset_command).await;
}

#[tokio::test]
async fn a_running_program_without_reset_is_no_sync() {
    let rig = Rig::start(mega(false, Some("counter")));
    // Power-on is no shortcut on a Mega: its bootloader listens for about a
    // second first (only a watchdog reset goes straight to the program).
    read_serial_until(rig.path(), "count ", Duration::from_secs(10));
    let options = toml::from_str("sync_window_ms = 300\nreset_attempts = 2").expect("toml");
    let (ctx, _) = recording_context(CancelToken::new());
    let firmware = testkit::load_firmware(&Board::Mega2560.firmware("counter"));
    let job = board_job(Board::Mega2560, firmware, rig.path(), ResetMethod::None, options);
    let result = Stk500v2.upload(job, ctx).await;
    assert!(matches!(result, Err(UploadError::NoSync { attempts: 2, .. })), "{result:?}");
}

/// A host too busy to run the board for 3 s mid-upload (longer than a
/// reply's 2 s of slack): the page whose
/// reply missed its deadline is sent again after a SIGN_ON, and the upload
/// verifies.
#[tokio::test]
async fn a_mega_stalled_mid_upload_is_retried_and_verifies() {
    let rig = Rig::start(mega(true, None));
    let (ctx, events) = testkit::stalling_context(rig.pid(), Phase::Write, 30, Duration::from_secs(3));
    let firmware = testkit::load_firmware(&Board::Mega2560.firmware("counter"));
    let job = board_job(Board::Mega2560, firmware, rig.path(), ResetMethod::Dtr, toml::Table::new());
    let report =
        Stk500v2.upload(job, ctx).await.unwrap_or_else(|e| panic!("upload failed: {e}\nrig log:\n{}", rig.log()));
    assert!(report.log.contains("attempt 1 of 3 failed"), "{}", report.log);
    assert!(report.log.contains("verified"), "{}", report.log);
    testkit::assert_progress_well_formed(&events.lock().expect("events"));
}

/// Runs avrdude as the Arduino IDE does for a Mega (`-c wiring`, no chip
/// erase) on the rig's port right after resetting the board; returns its log.
fn avrdude(rig: &Rig, memory_operation: &str) -> String {
    rig.reset();
    let output = Command::new("timeout")
        .args(["60", "avrdude", "-c", "wiring", "-p", "m2560", "-b", "115200", "-D", "-P"])
        .arg(rig.path())
        .args(["-U", memory_operation])
        .output()
        .expect("run avrdude");
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "avrdude -U {memory_operation} failed ({}):\n{log}\nrig log:\n{}",
        output.status,
        rig.log()
    );
    log
}

/// avrdude's `-U` for writing ('w') or verifying ('v') flash against an Intel hex file.
fn flash_operation(mode: char, hex: &Path) -> String {
    format!("flash:{mode}:{}:i", hex.display())
}

/// avrdude flashes the simulated Mega (the rig is a board avrdude believes
/// in), rerod overwrites that program, and avrdude then reads the flash back
/// and finds exactly what rerod wrote.
#[tokio::test]
async fn avrdude_and_rerod_agree_on_the_flash() {
    let rig = Rig::start(mega(false, None));
    let echo = Board::Mega2560.firmware("echo");
    let counter = Board::Mega2560.firmware("counter");

    let log = avrdude(&rig, &flash_operation('w', &rig_file(&echo)));
    assert!(log.contains("bytes of flash verified"), "{log}");

    let firmware = testkit::load_firmware(&counter);
    let (ctx, _) = recording_context(CancelToken::new());
    let job = board_job(Board::Mega2560, firmware.clone(), rig.path(), rig.reset_command(), toml::Table::new());
    let report = Stk500v2.upload(job, ctx).await.unwrap_or_else(|e| panic!("upload: {e}\nrig log:\n{}", rig.log()));
    assert_eq!(report.bytes_written, firmware.len());

    let log = avrdude(&rig, &flash_operation('v', &rig_file(&counter)));
    let verified = format!("{} bytes of flash verified", firmware.len());
    assert!(log.contains(&verified), "want {verified:?}:\n{log}");

    // Leaving programming mode, avrdude let the bootloader start rerod's program.
    let seen = read_serial_until(rig.path(), "count ", Duration::from_secs(10));
    assert!(seen.contains("count "), "{seen}");
}

/// An image with a gap and a page above 64 KiB: the bootloader must use
/// RAMPZ (ELPM, extended SPM) there, rerod must write the gap blank (the
/// bootloader erases pages in order from 0), and avrdude must read back the
/// same bytes. The counter program still runs from page 0.
#[tokio::test]
async fn a_sparse_image_above_64_kib_is_written_and_read_back() {
    let counter = testkit::load_firmware(&Board::Mega2560.firmware("counter"));
    let marker: Vec<u8> = (0..=255u8).map(|i| i ^ 0xA5).collect();
    let marker = Firmware::from_binary(marker, 0x1_0000).expect("marker page");
    // The counter's records without their end-of-file record, then the marker's.
    let mut hex: String =
        counter.to_ihex().lines().filter(|line| *line != ":00000001FF").map(|l| l.to_owned() + "\n").collect();
    hex.push_str(&marker.to_ihex());
    let firmware = Arc::new(Firmware::parse_ihex(hex.as_bytes()).expect("sparse image"));
    assert_eq!(firmware.segments().len(), 2);

    let rig = Rig::start(mega(false, None));
    let (ctx, _) = recording_context(CancelToken::new());
    let job = board_job(Board::Mega2560, firmware.clone(), rig.path(), rig.reset_command(), toml::Table::new());
    let report = Stk500v2.upload(job, ctx).await.unwrap_or_else(|e| panic!("upload: {e}\nrig log:\n{}", rig.log()));
    assert!(report.log.contains("also writing 253 blank pages"), "{}", report.log);

    let file = std::env::temp_dir().join(format!("rerod-sparse-mega-{}.hex", std::process::id()));
    std::fs::write(&file, &hex).expect("write the sparse hex");
    let log = avrdude(&rig, &flash_operation('v', &file));
    let _ = std::fs::remove_file(&file);
    assert!(log.contains(&format!("{} bytes of flash verified", firmware.len())), "{log}");

    let seen = read_serial_until(rig.path(), "count ", Duration::from_secs(10));
    assert!(seen.contains("count "), "{seen}");
}
