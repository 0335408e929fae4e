//! Protocol tests against an in-memory fake Optiboot behind `SerialLink`.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rerod_devices::testkit::{assert_progress_well_formed, check_offline_contract, recording_context};
use rerod_devices::{CancelToken, Firmware, Phase, Progress, ResetMethod, UploadEvent};

use super::*;

/// A fake ATmega328P with Optiboot 4.4, answering synchronously: each write
/// is parsed at once and its replies queued for the next reads. It follows
/// Optiboot's code paths, including its habit of resetting into the program
/// when a command does not end in CRC_EOP.
struct FakeOptiboot {
    flash: Vec<u8>,
    signature: [u8; 3],
    address: usize,
    input: Vec<u8>,
    output: VecDeque<u8>,
    /// In the bootloader (after a reset) rather than running the program.
    listening: bool,
    dtr: bool,
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
}

impl FakeOptiboot {
    fn new() -> FakeOptiboot {
        FakeOptiboot {
            flash: vec![0xFF; 32 * 1024],
            signature: [0x1E, 0x95, 0x0F],
            address: 0,
            input: Vec::new(),
            output: VecDeque::new(),
            listening: false,
            dtr: true,
            no_modem_lines: false,
            dead: false,
            noise_on_reset: Vec::new(),
            stuck: None,
            vanish_after: None,
            hang_after: None,
            pages_written: 0,
        }
    }

    fn vanished(&self) -> bool {
        self.vanish_after.is_some_and(|n| self.pages_written >= n)
    }

    fn reset(&mut self) {
        self.input.clear();
        self.output = self.noise_on_reset.iter().copied().collect();
        self.listening = !self.dead;
    }

    fn reply(&mut self, payload: &[u8]) {
        self.output.push_back(STK_INSYNC);
        self.output.extend(payload);
        self.output.push_back(STK_OK);
    }

    /// Parses every complete command in `input`.
    fn process(&mut self) {
        while self.listening && !self.input.is_empty() {
            let len = match self.input[0] {
                STK_GET_SYNC | STK_ENTER_PROGMODE | STK_LEAVE_PROGMODE | STK_READ_SIGN => 2,
                STK_GET_PARAMETER => 3,
                STK_LOAD_ADDRESS => 4,
                STK_READ_PAGE => 5,
                STK_PROG_PAGE if self.input.len() >= 4 => {
                    5 + usize::from(self.input[1]) * 256 + usize::from(self.input[2])
                }
                STK_PROG_PAGE => return,
                // Optiboot's catch-all: verifySpace fails on the next byte → watchdog reset.
                _ => 2,
            };
            if self.input.len() < len {
                return;
            }
            let cmd: Vec<u8> = self.input.drain(..len).collect();
            if cmd[len - 1] != CRC_EOP || !matches!(cmd[0], 0x30 | 0x41 | 0x50 | 0x51 | 0x55 | 0x64 | 0x74 | 0x75) {
                // verifySpace failed: the watchdog resets the board into its program.
                self.listening = false;
                self.input.clear();
                return;
            }
            match cmd[0] {
                STK_GET_PARAMETER => {
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
                    let data = &cmd[4..len - 1];
                    self.flash[self.address..self.address + data.len()].copy_from_slice(data);
                    self.pages_written += 1;
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
            self.input.clear();
        }
    }
}

impl SerialLink for FakeOptiboot {
    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        if self.vanished() {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "hang-up"));
        }
        if self.output.is_empty() {
            // A silent board: the time passes as it would on the wire.
            std::thread::sleep(timeout);
            return Ok(0);
        }
        let n = buf.len().min(self.output.len());
        for (slot, byte) in buf.iter_mut().zip(self.output.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.vanished() {
            return Err(io::Error::from_raw_os_error(libc_eio()));
        }
        self.input.extend_from_slice(bytes);
        self.process();
        Ok(())
    }

    fn discard_input(&mut self) -> io::Result<()> {
        // Only what is already "on the wire" is dropped; noise after a reset
        // arrives later on a real board, so keep it here.
        Ok(())
    }

    fn set_dtr_rts(&mut self, asserted: bool) -> io::Result<()> {
        if self.no_modem_lines {
            return Err(io::Error::from_raw_os_error(25)); // ENOTTY
        }
        if asserted && !self.dtr {
            self.reset();
        }
        self.dtr = asserted;
        Ok(())
    }
}

fn libc_eio() -> i32 {
    5
}

fn firmware(len: usize, base: u32) -> Arc<Firmware> {
    let data = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    Arc::new(Firmware::from_binary(data, base).expect("firmware"))
}

fn job(firmware: Arc<Firmware>, options: &str) -> UploadJob {
    UploadJob {
        firmware,
        port: PathBuf::from("/dev/fake-uno"),
        baud: 115_200,
        reset: ResetMethod::Dtr,
        model: "uno".into(),
        flash_limit: None,
        options: toml::from_str(options).expect("options"),
    }
}

fn upload(board: &mut FakeOptiboot, job: &UploadJob) -> (Result<UploadReport, UploadError>, Vec<UploadEvent>) {
    let (ctx, events) = recording_context(CancelToken::new());
    let result = upload_over(board, job, &ctx);
    let events = events.lock().expect("events").clone();
    (result, events)
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
    let cancel = CancelToken::new();
    let trigger = cancel.clone();
    let ctx = UploadContext::new(cancel, move |e| {
        if let UploadEvent::Progress(Progress { phase: Phase::Write, percent }) = e
            && percent >= 50
        {
            trigger.cancel();
        }
    });
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
    let (result, _) = upload(&mut board, &job(firmware(2048, 0), ""));
    let err = result.expect_err("timeout");
    assert!(matches!(err, UploadError::Timeout { .. }), "{err}");
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
