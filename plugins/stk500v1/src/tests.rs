//! Protocol tests against an in-memory fake Optiboot behind `SerialLink`.

use std::sync::Arc;

use rerod_devices::testkit::{
    Board, FakeBootloader, FakeWire, assert_progress_well_formed, cancelling_context, check_offline_contract, fake_job,
    pattern_firmware as firmware, upload_recorded,
};
use rerod_devices::{Firmware, Phase, Progress, UploadEvent};

use super::*;

const STK_NOSYNC: u8 = 0x15;

/// A fake ATmega328P with Optiboot 4.4, answering synchronously: each write
/// is parsed at once and its replies queued for the next reads. It follows
/// Optiboot's code paths, including its habit of resetting into the program
/// when a command does not end in CRC_EOP.
struct FakeOptiboot {
    flash: Vec<u8>,
    signature: [u8; 3],
    address: usize,
    wire: FakeWire,
    /// In the bootloader (after a reset) rather than running the program.
    listening: bool,
    /// A pty-like port: DTR fails with ENOTTY.
    no_modem_lines: bool,
    /// The bootloader never starts (wrong baud, broken auto-reset).
    dead: bool,
    /// Bytes the old program "printed" that arrive right after a reset.
    noise_on_reset: Vec<u8>,
    /// A flash cell that reads back wrong.
    stuck: Option<(usize, u8)>,
    /// After this many page writes, the port is gone / the board goes silent.
    vanish_after: Option<usize>,
    hang_after: Option<usize>,
    pages_written: usize,
    /// The answer to this page write (counted from 0) is lost, once.
    drop_reply_on_page: Option<usize>,
    /// The answer to this page write comes this late, once.
    late_reply_on_page: Option<(usize, Duration)>,
    /// A held-back answer and when it reaches the wire.
    held: Option<(Instant, Vec<u8>)>,
    /// A stray byte of the old program's output arrives just before the
    /// first GET_PARAMETER answer, as on a busy host.
    stray_before_parameter: Option<u8>,
    /// Every page write is answered NOSYNC.
    nosync_on_pages: bool,
    /// Answers NOSYNC once, to the PROG_PAGE of this page (counted from 0).
    nosync_once_on_page: Option<usize>,
    /// After writing this page (counted from 0) Optiboot's watchdog starts
    /// the program, once: the next command goes unanswered until a reset.
    leave_after_page: Option<usize>,
    /// The first PROG_PAGE at each address is answered NOSYNC, the next one written.
    nosync_first_try: bool,
    nosync_address: Option<usize>,
}

impl FakeOptiboot {
    fn new() -> FakeOptiboot {
        FakeOptiboot {
            flash: vec![0xFF; 32 * 1024],
            signature: [0x1E, 0x95, 0x0F],
            address: 0,
            wire: FakeWire::default(),
            listening: false,
            no_modem_lines: false,
            dead: false,
            noise_on_reset: Vec::new(),
            stuck: None,
            vanish_after: None,
            hang_after: None,
            pages_written: 0,
            drop_reply_on_page: None,
            late_reply_on_page: None,
            held: None,
            stray_before_parameter: None,
            nosync_on_pages: false,
            nosync_once_on_page: None,
            leave_after_page: None,
            nosync_first_try: false,
            nosync_address: None,
        }
    }

    fn reply(&mut self, payload: &[u8]) {
        self.wire.output.push_back(STK_INSYNC);
        self.wire.output.extend(payload);
        self.wire.output.push_back(STK_OK);
    }
}

impl FakeBootloader for FakeOptiboot {
    fn wire(&mut self) -> &mut FakeWire {
        &mut self.wire
    }

    /// Parses every complete command in `input`.
    fn process(&mut self) {
        while self.listening && !self.wire.input.is_empty() {
            let len = match self.wire.input[0] {
                STK_GET_SYNC | STK_ENTER_PROGMODE | STK_LEAVE_PROGMODE | STK_READ_SIGN => 2,
                STK_GET_PARAMETER => 3,
                STK_LOAD_ADDRESS => 4,
                STK_READ_PAGE => 5,
                STK_PROG_PAGE if self.wire.input.len() >= 4 => {
                    5 + usize::from(self.wire.input[1]) * 256 + usize::from(self.wire.input[2])
                }
                STK_PROG_PAGE => return,
                // Optiboot's catch-all: verifySpace fails on the next byte → watchdog reset.
                _ => 2,
            };
            if self.wire.input.len() < len {
                return;
            }
            let cmd: Vec<u8> = self.wire.input.drain(..len).collect();
            if cmd[len - 1] != CRC_EOP
                || !matches!(
                    cmd[0],
                    STK_GET_SYNC
                        | STK_GET_PARAMETER
                        | STK_ENTER_PROGMODE
                        | STK_LEAVE_PROGMODE
                        | STK_LOAD_ADDRESS
                        | STK_PROG_PAGE
                        | STK_READ_PAGE
                        | STK_READ_SIGN
                )
            {
                // verifySpace failed: the watchdog resets the board into its program.
                self.listening = false;
                self.wire.input.clear();
                return;
            }
            match cmd[0] {
                STK_GET_PARAMETER => {
                    if let Some(byte) = self.stray_before_parameter.take() {
                        self.wire.output.push_back(byte);
                    }
                    self.reply(&[if cmd[1] == PARAM_SW_MAJOR || cmd[1] == PARAM_SW_MINOR { 4 } else { 3 }])
                }
                STK_READ_SIGN => self.reply(&self.signature.clone()),
                STK_LOAD_ADDRESS => {
                    self.address = (usize::from(cmd[1]) | usize::from(cmd[2]) << 8) * 2;
                    self.reply(&[]);
                }
                STK_PROG_PAGE => {
                    if self.hang_after.is_some_and(|n| self.pages_written >= n) {
                        self.listening = false;
                        return;
                    }
                    let first_try =
                        self.nosync_first_try && self.nosync_address.replace(self.address) != Some(self.address);
                    if first_try
                        || self.nosync_on_pages
                        || self.nosync_once_on_page.take_if(|n| *n == self.pages_written).is_some()
                    {
                        self.wire.output.push_back(STK_NOSYNC);
                        continue;
                    }
                    let data = &cmd[4..len - 1];
                    self.flash[self.address..self.address + data.len()].copy_from_slice(data);
                    let page = self.pages_written;
                    self.pages_written += 1;
                    if self.leave_after_page.take_if(|n| *n == page).is_some() {
                        self.reply(&[]);
                        self.listening = false;
                        return;
                    }
                    if self.drop_reply_on_page.take_if(|n| *n == page).is_some() {
                        continue;
                    }
                    if let Some((_, delay)) = self.late_reply_on_page.take_if(|(n, _)| *n == page) {
                        self.held = Some((Instant::now() + delay, vec![STK_INSYNC, STK_OK]));
                        continue;
                    }
                    self.reply(&[]);
                }
                STK_READ_PAGE => {
                    let n = usize::from(cmd[1]) * 256 + usize::from(cmd[2]);
                    let mut data = self.flash[self.address..self.address + n].to_vec();
                    if let Some((at, value)) = self.stuck
                        && (self.address..self.address + n).contains(&at)
                    {
                        data[at - self.address] = value;
                    }
                    self.address += n;
                    self.reply(&data);
                }
                STK_LEAVE_PROGMODE => {
                    self.reply(&[]);
                    self.listening = false;
                }
                _ => self.reply(&[]),
            }
        }
        if !self.listening {
            // The program ignores what it is sent.
            self.wire.input.clear();
        }
    }

    fn poll(&mut self) {
        if let Some((_, bytes)) = self.held.take_if(|(at, _)| *at <= Instant::now()) {
            self.wire.output.extend(bytes);
        }
    }

    fn reset(&mut self) {
        self.wire.input.clear();
        self.wire.output = self.noise_on_reset.iter().copied().collect();
        self.listening = !self.dead;
    }

    fn vanished(&self) -> bool {
        self.vanish_after.is_some_and(|n| self.pages_written >= n)
    }

    fn no_modem_lines(&self) -> bool {
        self.no_modem_lines
    }
}

fn job(firmware: Arc<Firmware>, options: &str) -> UploadJob {
    fake_job(Board::Uno, "/dev/fake-uno", firmware, options)
}

fn upload(board: &mut FakeOptiboot, job: &UploadJob) -> (Result<UploadReport, UploadError>, Vec<UploadEvent>) {
    upload_recorded(|ctx| upload_over(board, job, ctx))
}

#[test]
fn writes_and_verifies_every_page() {
    let mut board = FakeOptiboot::new();
    board.noise_on_reset = b"count 41\r\ncount 42\r\n".to_vec();
    let fw = firmware(1000, 0);
    let (result, events) = upload(&mut board, &job(fw.clone(), ""));
    let report = result.expect("upload succeeds");
    assert_eq!(report.bytes_written, 1000);
    assert_eq!(board.pages_written, 8, "ceil(1000 / 128) pages");
    assert_eq!(&board.flash[..1000], &fw.flatten().bytes[..]);
    assert!(board.flash[1000..1024].iter().all(|b| *b == 0xFF), "the last page is padded with 0xFF");
    assert!(!board.listening, "LEAVE_PROGMODE starts the program");
    assert_progress_well_formed(&events);
    assert!(events.contains(&UploadEvent::Progress(Progress { phase: Phase::Verify, percent: 100 })));
    assert!(report.log.contains("bootloader version 4.4"), "{}", report.log);
    assert!(report.log.contains("signature 1e 95 0f"), "{}", report.log);
}

#[test]
fn only_pages_the_firmware_touches_are_written() {
    let text = Firmware::from_binary(vec![0x11; 10], 0x100).expect("fw").to_ihex()
        + &Firmware::from_binary(vec![0x22; 10], 0x1000).expect("fw").to_ihex();
    // Two images in one HEX text: join them without the first EOF record.
    let text = text.replacen(":00000001FF\n", "", 1);
    let fw = Arc::new(Firmware::parse_ihex(text.as_bytes()).expect("two segments"));
    let mut board = FakeOptiboot::new();
    let (result, _) = upload(&mut board, &job(fw, ""));
    result.expect("upload succeeds");
    assert_eq!(board.pages_written, 2);
    assert_eq!(board.flash[0x100], 0x11);
    assert_eq!(board.flash[0x1000], 0x22);
}

#[test]
fn a_board_that_never_answers_is_no_sync() {
    let mut board = FakeOptiboot::new();
    board.dead = true;
    let (result, events) = upload(&mut board, &job(firmware(100, 0), "sync_window_ms = 100\nreset_attempts = 2"));
    let err = result.expect_err("no sync");
    assert!(matches!(err, UploadError::NoSync { attempts: 2, baud: 115_200 }), "{err}");
    assert!(err.to_string().contains("reset"), "the message says what to check: {err}");
    assert!(events.iter().any(|e| matches!(e, UploadEvent::Log(l) if l.contains("attempt 2 of 2"))));
}

#[test]
fn another_chip_is_a_wrong_signature() {
    let mut board = FakeOptiboot::new();
    board.signature = [0x1E, 0x95, 0x14]; // ATmega328 (not P)
    let (result, _) = upload(&mut board, &job(firmware(100, 0), ""));
    let err = result.expect_err("wrong chip");
    assert!(matches!(err, UploadError::WrongSignature { .. }), "{err}");
    assert!(err.to_string().contains("1e 95 14") && err.to_string().contains("1e 95 0f"), "{err}");
    assert_eq!(board.pages_written, 0, "nothing is written to the wrong chip");

    // The signature option overrides the model's.
    let mut board = FakeOptiboot::new();
    board.signature = [0x1E, 0x95, 0x14];
    let (result, _) = upload(&mut board, &job(firmware(100, 0), "signature = \"1e9514\""));
    result.expect("configured signature matches");
}

#[test]
fn a_bad_flash_cell_is_a_verify_mismatch_at_its_address() {
    let mut board = FakeOptiboot::new();
    board.stuck = Some((300, 0x00));
    let fw = firmware(1000, 0);
    let expected = fw.flatten().bytes[300];
    let (result, _) = upload(&mut board, &job(fw, ""));
    match result {
        Err(UploadError::VerifyMismatch { address: 300, expected: e, got: 0 }) => assert_eq!(e, expected),
        other => panic!("want a mismatch at 300, got {other:?}"),
    }
    // Without verify the same board "succeeds".
    let mut board = FakeOptiboot::new();
    board.stuck = Some((300, 0x00));
    let (result, events) = upload(&mut board, &job(firmware(1000, 0), "verify = false"));
    result.expect("no verify, no mismatch");
    assert!(!events.iter().any(|e| matches!(e, UploadEvent::Progress(p) if p.phase == Phase::Verify)));
}

#[test]
fn cancel_stops_between_pages() {
    let mut board = FakeOptiboot::new();
    let ctx = cancelling_context(Phase::Write, 50);
    let result = upload_over(&mut board, &job(firmware(2048, 0), ""), &ctx);
    assert!(matches!(result, Err(UploadError::Cancelled)), "{result:?}");
    assert_eq!(board.pages_written, 8, "stopped right after the page that reached 50 %");
}

#[test]
fn a_port_that_disappears_is_port_vanished() {
    let mut board = FakeOptiboot::new();
    board.vanish_after = Some(3);
    let (result, _) = upload(&mut board, &job(firmware(2048, 0), ""));
    let err = result.expect_err("vanished");
    assert!(matches!(err, UploadError::PortVanished { .. }), "{err}");
    assert!(err.to_string().contains("plug it back in"), "{err}");
}

#[test]
fn a_board_that_stops_answering_times_out() {
    let mut board = FakeOptiboot::new();
    board.hang_after = Some(3);
    let (result, events) = upload(&mut board, &job(firmware(2048, 0), ""));
    let err = result.expect_err("timeout");
    assert!(matches!(err, UploadError::Timeout { .. }), "{err}");
    // Each retry resets the board back into Optiboot, which hangs on the
    // same page again: the step's attempts run out, and the log says so.
    let logged = |needle: &str| events.iter().any(|e| matches!(e, UploadEvent::Log(l) if l.contains(needle)));
    assert!(logged("resetting the board into its bootloader again"), "{events:?}");
    assert!(logged("writing the page at 0x0180: giving up after 3 attempt(s)"), "{events:?}");
}

#[test]
fn a_lost_page_reply_is_retried_after_a_resync() {
    let mut board = FakeOptiboot::new();
    board.drop_reply_on_page = Some(3);
    let fw = firmware(2048, 0);
    let (result, events) = upload(&mut board, &job(fw.clone(), ""));
    let report = result.expect("the page is written again and the upload verifies");
    assert_eq!(&board.flash[..2048], &fw.flatten().bytes[..]);
    assert_eq!(board.pages_written, 17, "16 pages, the fourth twice");
    assert!(report.log.contains("writing the page at 0x0180: attempt 1 of 3 failed"), "{}", report.log);
    assert!(report.log.contains("timed out"), "{}", report.log);
    assert!(report.log.contains("succeeded on attempt 2"), "{}", report.log);
    assert_progress_well_formed(&events);
}

#[test]
fn a_bootloader_that_left_for_the_program_is_reset_and_the_upload_goes_on() {
    let mut board = FakeOptiboot::new();
    // A host stalled for over a second after the fifth page: the watchdog ran out.
    board.leave_after_page = Some(4);
    let fw = firmware(2048, 0);
    let (result, events) = upload(&mut board, &job(fw.clone(), ""));
    let report = result.expect("reset, back in sync, and on from the sixth page");
    assert_eq!(&board.flash[..2048], &fw.flatten().bytes[..]);
    assert_eq!(board.pages_written, 16, "no page written twice: the sixth was never received");
    assert!(report.log.contains("resetting the board into its bootloader again"), "{}", report.log);
    assert!(report.log.contains("writing the page at 0x0280: succeeded on attempt 2"), "{}", report.log);
    assert!(report.log.contains("verified"), "{}", report.log);
    assert_progress_well_formed(&events);
}

#[test]
fn a_late_page_reply_is_drained_and_the_page_retried() {
    let mut board = FakeOptiboot::new();
    // Later than its deadline (the reply's slack is 2 s): it lands in the drain before the re-sync.
    board.late_reply_on_page = Some((2, Duration::from_millis(2300)));
    let fw = firmware(1024, 0);
    let (result, _) = upload(&mut board, &job(fw.clone(), ""));
    let report = result.expect("the late reply is dropped and the page written again");
    assert_eq!(&board.flash[..1024], &fw.flatten().bytes[..]);
    assert!(report.log.contains("dropped 2 stale byte(s)"), "{}", report.log);
    assert!(report.log.contains("retrying writing the page at 0x0100"), "{}", report.log);
}

#[test]
fn a_nosync_answer_to_a_page_is_retried_with_its_load_address() {
    let mut board = FakeOptiboot::new();
    board.nosync_once_on_page = Some(1);
    let fw = firmware(1024, 0);
    let (result, _) = upload(&mut board, &job(fw.clone(), ""));
    let report = result.expect("re-synced, the page sent again");
    assert_eq!(&board.flash[..1024], &fw.flatten().bytes[..], "every page, the second at its own address");
    assert!(report.log.contains("writing the page at 0x0080: attempt 1 of 3 failed"), "{}", report.log);
    assert!(report.log.contains("[15]"), "the log keeps the NOSYNC: {}", report.log);
    assert!(report.log.contains("verified"), "{}", report.log);
}

#[test]
fn an_out_of_sync_parameter_answer_is_retried() {
    let mut board = FakeOptiboot::new();
    // The "answered [44] to GET_PARAMETER" of a busy host.
    board.stray_before_parameter = Some(0x44);
    let (result, _) = upload(&mut board, &job(firmware(300, 0), ""));
    let report = result.expect("re-synced, the parameter read again");
    assert!(report.log.contains("GET_PARAMETER (major version): attempt 1 of 3 failed"), "{}", report.log);
    assert!(report.log.contains("[44]"), "the log keeps what came: {}", report.log);
    assert!(report.log.contains("bootloader version 4.4"), "{}", report.log);
}

#[test]
fn a_board_that_slips_on_every_page_fails_once_the_upload_has_spent_its_retries() {
    let mut board = FakeOptiboot::new();
    board.nosync_first_try = true;
    // 16 pages, each of which would go through on its second try.
    let (result, events) = upload(&mut board, &job(firmware(2048, 0), ""));
    let err = result.expect_err("too many retries");
    assert!(matches!(err, UploadError::Protocol { command: "PROG_PAGE", .. }), "{err}");
    let retried = events.iter().filter(|e| matches!(e, UploadEvent::Log(l) if l.contains("re-syncing"))).count();
    assert_eq!(retried, link_session::UPLOAD_RETRIES as usize, "{events:?}");
    assert!(
        events.iter().any(|e| matches!(e, UploadEvent::Log(l) if l.contains("used all its 8 retries"))),
        "{events:?}"
    );
}

#[test]
fn a_page_out_of_sync_every_time_fails_after_three_attempts() {
    let mut board = FakeOptiboot::new();
    board.nosync_on_pages = true;
    let (result, events) = upload(&mut board, &job(firmware(300, 0), ""));
    let err = result.expect_err("never written");
    assert!(matches!(err, UploadError::Protocol { command: "PROG_PAGE", .. }), "{err}");
    assert!(
        events.iter().any(|e| matches!(e, UploadEvent::Log(l) if l.contains("giving up after 3 attempt(s)"))),
        "{events:?}"
    );
}

#[test]
fn a_port_without_dtr_is_noted_and_the_upload_goes_on() {
    // Like the rig with --reset-on-open: the open reset the board already.
    let mut board = FakeOptiboot::new();
    board.no_modem_lines = true;
    board.reset();
    let (result, events) = upload(&mut board, &job(firmware(200, 0), ""));
    let report = result.expect("upload succeeds");
    assert!(report.log.contains("no modem lines"), "{}", report.log);
    assert!(events.iter().any(|e| matches!(e, UploadEvent::Log(l) if l.contains("no modem lines"))));
}

#[test]
fn oversized_firmware_is_refused_before_the_board_is_touched() {
    let mut board = FakeOptiboot::new();
    let (result, events) = upload(&mut board, &job(firmware(32_257, 0), ""));
    assert!(matches!(result, Err(UploadError::TooLarge { size: 32_257, limit: 32_256 })), "{result:?}");
    assert!(events.is_empty());
    assert!(!board.listening, "never reset");
}

#[test]
fn options_are_checked_with_their_keys() {
    let table: toml::Table =
        toml::from_str("signature = \"zz\"\npage_size = 100\nreset_attempts = 0\nverify = \"yes\"").expect("toml");
    let errors = Stk500v1.check_options(&table).expect_err("four bad options");
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["signature", "page_size", "reset_attempts", "verify"]);
    assert_eq!(
        read_settings(&toml::Table::new(), "uno"),
        Ok(Settings {
            signature: Some([0x1E, 0x95, 0x0F]),
            page_size: 128,
            reset_attempts: 3,
            sync_window: Duration::from_millis(1500),
            verify: true
        })
    );
}

#[tokio::test]
async fn passes_the_offline_contract() {
    check_offline_contract(&Stk500v1, toml::from_str("verify = true").expect("toml")).await;
}
