//! Protocol tests against an in-memory fake Mega 2560 bootloader behind `SerialLink`.

use std::sync::Arc;

use rerod_devices::testkit::{
    Board, FakeBootloader, FakeWire, assert_progress_well_formed, cancelling_context, check_offline_contract, fake_job,
    pattern_firmware as firmware, upload_recorded,
};
use rerod_devices::{Firmware, Phase, Progress, UploadEvent};

use super::*;

const STATUS_CMD_FAILED: u8 = 0xC0;
const STATUS_CMD_UNKNOWN: u8 = 0xC9;
const M2560: [u8; 3] = [0x1E, 0x98, 0x01];
/// The ATmega2560's flash page (SPM_PAGESIZE) and where its boot section begins.
const SPM_PAGESIZE: usize = 256;
const APP_END: usize = 0x3_E000;

/// A fake ATmega2560 with the Arduino STK500v2 bootloader (stk500boot.c),
/// answering synchronously: each write is parsed at once and its answers
/// queued for the next reads. Like the real one it drops frames with a bad
/// token or checksum, echoes the request's sequence number, erases one page
/// per PROGRAM_FLASH_ISP in order from 0 (not the page written), and starts
/// the program on LEAVE_PROGMODE_ISP. Its flash is like real flash: writing
/// can only clear bits, so an unerased page ends up old AND new.
struct FakeMega {
    flash: Vec<u8>,
    signature: [u8; 3],
    address: usize,
    wire: FakeWire,
    /// In the bootloader (after a reset) rather than running the program.
    listening: bool,
    /// The bootloader never starts (wrong baud, broken auto-reset).
    dead: bool,
    /// Bytes the old program "printed" that arrive right after a reset.
    noise_on_reset: Vec<u8>,
    /// A flash cell that reads back wrong.
    stuck: Option<(usize, u8)>,
    /// Answers to this command go out with a wrong checksum / sequence number.
    bad_checksum_on: Option<u8>,
    bad_seq_on: Option<u8>,
    /// Every LOAD_ADDRESS value received, as sent (bit 31 included).
    loaded: Vec<u32>,
    pages_written: usize,
    /// The page the next PROGRAM_FLASH_ISP erases (stk500boot.c's `eraseAddress`).
    erase_next: usize,
    /// The answer to this page write (counted from 0) is lost, once.
    drop_reply_on_page: Option<usize>,
    /// The answer to this page read (counted from 0) comes this late, once.
    late_reply_on_read: Option<(usize, Duration)>,
    pages_read: usize,
    /// A held-back answer and when it reaches the wire.
    held: Option<(Instant, Vec<u8>)>,
    /// The next answer to this command carries a wrong sequence number, once.
    bad_seq_once_on: Option<u8>,
}

impl FakeMega {
    fn new() -> FakeMega {
        FakeMega {
            flash: vec![0xFF; 256 * 1024],
            signature: M2560,
            address: 0,
            wire: FakeWire::default(),
            listening: false,
            dead: false,
            noise_on_reset: Vec::new(),
            stuck: None,
            bad_checksum_on: None,
            bad_seq_on: None,
            loaded: Vec::new(),
            pages_written: 0,
            erase_next: 0,
            drop_reply_on_page: None,
            late_reply_on_read: None,
            pages_read: 0,
            held: None,
            bad_seq_once_on: None,
        }
    }

    fn answer(&mut self, seq: u8, body: &[u8]) {
        let once = self.bad_seq_once_on.take_if(|c| *c == body[0]).is_some();
        let seq = if once || self.bad_seq_on == Some(body[0]) { seq.wrapping_add(7) } else { seq };
        let mut out = frame(seq, body);
        if self.bad_checksum_on == Some(body[0]) {
            *out.last_mut().expect("a frame is never empty") ^= 0x55;
        }
        self.wire.output.extend(out);
    }
}

impl FakeBootloader for FakeMega {
    fn wire(&mut self) -> &mut FakeWire {
        &mut self.wire
    }

    /// Parses every complete message in `input`.
    fn process(&mut self) {
        while self.listening && !self.wire.input.is_empty() {
            // Waiting for MESSAGE_START: anything else is dropped.
            if self.wire.input[0] != MESSAGE_START {
                self.wire.input.remove(0);
                continue;
            }
            if self.wire.input.len() < 5 {
                return;
            }
            let size = usize::from(self.wire.input[2]) << 8 | usize::from(self.wire.input[3]);
            if self.wire.input.len() < 5 + size + 1 {
                return;
            }
            let message: Vec<u8> = self.wire.input.drain(..5 + size + 1).collect();
            if message[4] != TOKEN || checksum(&message[..5 + size]) != message[5 + size] {
                continue;
            }
            let seq = message[1];
            let body = &message[5..5 + size];
            match body[0] {
                CMD_SIGN_ON => self.answer(seq, b"\x01\x00\x08AVRISP_2"),
                CMD_ENTER_PROGMODE_ISP => {
                    let status = if body.len() == 12 { STATUS_CMD_OK } else { STATUS_CMD_FAILED };
                    self.answer(seq, &[CMD_ENTER_PROGMODE_ISP, status]);
                }
                CMD_READ_SIGNATURE_ISP => {
                    let value = self.signature[usize::from(body[4]).min(2)];
                    self.answer(seq, &[CMD_READ_SIGNATURE_ISP, STATUS_CMD_OK, value, STATUS_CMD_OK]);
                }
                CMD_LOAD_ADDRESS => {
                    let raw = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
                    self.loaded.push(raw);
                    // stk500boot shifts the word address left: bit 31 falls off.
                    self.address = (raw << 1) as usize;
                    self.answer(seq, &[CMD_LOAD_ADDRESS, STATUS_CMD_OK]);
                }
                CMD_PROGRAM_FLASH_ISP => {
                    let n = usize::from(body[1]) << 8 | usize::from(body[2]);
                    let data = &body[10..];
                    if data.len() != n || body[3] != FLASH_MODE || body[5..8] != FLASH_CMDS {
                        self.answer(seq, &[CMD_PROGRAM_FLASH_ISP, STATUS_CMD_FAILED]);
                        continue;
                    }
                    if self.erase_next < APP_END {
                        self.flash[self.erase_next..self.erase_next + SPM_PAGESIZE].fill(0xFF);
                        self.erase_next += SPM_PAGESIZE;
                    }
                    for (cell, byte) in self.flash[self.address..self.address + n].iter_mut().zip(data) {
                        *cell &= byte;
                    }
                    self.address += n;
                    let page = self.pages_written;
                    self.pages_written += 1;
                    if self.drop_reply_on_page.take_if(|n| *n == page).is_some() {
                        continue;
                    }
                    self.answer(seq, &[CMD_PROGRAM_FLASH_ISP, STATUS_CMD_OK]);
                }
                CMD_READ_FLASH_ISP => {
                    let n = usize::from(body[1]) << 8 | usize::from(body[2]);
                    let mut data = self.flash[self.address..self.address + n].to_vec();
                    if let Some((at, value)) = self.stuck
                        && (self.address..self.address + n).contains(&at)
                    {
                        data[at - self.address] = value;
                    }
                    self.address += n;
                    let mut answer = vec![CMD_READ_FLASH_ISP, STATUS_CMD_OK];
                    answer.extend_from_slice(&data);
                    answer.push(STATUS_CMD_OK);
                    let page = self.pages_read;
                    self.pages_read += 1;
                    if let Some((_, delay)) = self.late_reply_on_read.take_if(|(n, _)| *n == page) {
                        self.held = Some((Instant::now() + delay, frame(seq, &answer)));
                        continue;
                    }
                    self.answer(seq, &answer);
                }
                CMD_LEAVE_PROGMODE_ISP => {
                    self.answer(seq, &[CMD_LEAVE_PROGMODE_ISP, STATUS_CMD_OK]);
                    self.listening = false;
                }
                other => self.answer(seq, &[other, STATUS_CMD_UNKNOWN]),
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
        self.erase_next = 0;
    }
}

fn job(firmware: Arc<Firmware>, options: &str) -> UploadJob {
    fake_job(Board::Mega2560, "/dev/fake-mega", firmware, options)
}

fn upload(board: &mut FakeMega, job: &UploadJob) -> (Result<UploadReport, UploadError>, Vec<UploadEvent>) {
    upload_recorded(|ctx| upload_over(board, job, ctx))
}

#[test]
fn frames_carry_size_token_and_xor_checksum() {
    assert_eq!(frame(1, &[CMD_SIGN_ON]), [0x1B, 0x01, 0x00, 0x01, 0x0E, 0x01, 0x1B ^ 0x01 ^ 0x01 ^ 0x0E ^ 0x01]);
    let reply = frame(9, b"\x01\x00\x08AVRISP_2");
    // Noise with a stray MESSAGE_START before the frame, and half a frame after it.
    let mut stream = vec![b'x', MESSAGE_START, 9, 0xFF, b'\n'];
    stream.extend_from_slice(&reply);
    stream.extend_from_slice(&reply[..4]);
    assert_eq!(find_frame(&stream, 9).as_deref(), Some(&b"\x01\x00\x08AVRISP_2"[..]));
    assert_eq!(find_frame(&stream, 8), None, "another sequence number");
    assert_eq!(find_frame(&reply[..reply.len() - 1], 9), None, "not complete yet");
    let mut corrupt = reply.clone();
    corrupt[7] ^= 1;
    assert_eq!(find_frame(&corrupt, 9), None, "bad checksum");
}

#[test]
fn writes_and_verifies_every_page() {
    let mut board = FakeMega::new();
    // The old program's output, with a stray MESSAGE_START in it.
    board.noise_on_reset = b"count 41\r\n\x1b[0mcount 42\r\n".to_vec();
    let fw = firmware(1000, 0);
    let (result, events) = upload(&mut board, &job(fw.clone(), ""));
    let report = result.expect("upload succeeds");
    assert_eq!(report.bytes_written, 1000);
    assert_eq!(board.pages_written, 4, "ceil(1000 / 256) pages");
    assert_eq!(&board.flash[..1000], &fw.flatten().bytes[..]);
    assert!(board.flash[1000..1024].iter().all(|b| *b == 0xFF), "the last page is padded with 0xFF");
    assert!(!board.listening, "LEAVE_PROGMODE_ISP starts the program");
    assert_progress_well_formed(&events);
    for phase in [Phase::Sync, Phase::Write, Phase::Verify, Phase::Done] {
        assert!(events.iter().any(|e| matches!(e, UploadEvent::Progress(p) if p.phase == phase)), "{phase} reported");
    }
    assert!(events.contains(&UploadEvent::Progress(Progress { phase: Phase::Verify, percent: 100 })));
    assert!(report.log.contains("AVRISP_2"), "{}", report.log);
    assert!(report.log.contains("signature 1e 98 01"), "{}", report.log);
}

#[test]
fn a_reply_with_a_bad_checksum_is_a_protocol_error() {
    let mut board = FakeMega::new();
    board.bad_checksum_on = Some(CMD_LOAD_ADDRESS);
    let (result, _) = upload(&mut board, &job(firmware(600, 0), ""));
    match result {
        Err(UploadError::Protocol { command: "LOAD_ADDRESS", .. }) => {}
        other => panic!("want a LOAD_ADDRESS protocol error, got {other:?}"),
    }
    assert_eq!(board.pages_written, 0, "nothing written after a corrupt answer");
}

#[test]
fn a_reply_always_out_of_sequence_is_a_protocol_error_after_three_attempts() {
    let mut board = FakeMega::new();
    board.bad_seq_on = Some(CMD_PROGRAM_FLASH_ISP);
    let (result, events) = upload(&mut board, &job(firmware(600, 0), ""));
    match result {
        Err(UploadError::Protocol { command: "PROGRAM_FLASH_ISP", .. }) => {}
        other => panic!("want a PROGRAM_FLASH_ISP protocol error, got {other:?}"),
    }
    assert_eq!(board.pages_written, 3, "stopped at the first page whose answer was wrong, tried three times");
    assert!(
        events.iter().any(|e| matches!(e, UploadEvent::Log(l) if l.contains("giving up after 3 attempt(s)"))),
        "{events:?}"
    );
}

#[test]
fn a_lost_page_reply_is_retried_after_a_sign_on() {
    let mut board = FakeMega::new();
    board.drop_reply_on_page = Some(1);
    let fw = firmware(1000, 0);
    let (result, events) = upload(&mut board, &job(fw.clone(), ""));
    let report = result.expect("the page is written again and the upload verifies");
    // The retry moved the erase pointer one page ahead; every page is still erased before it is written.
    assert_eq!(&board.flash[..1000], &fw.flatten().bytes[..]);
    assert_eq!(board.pages_written, 5, "4 pages, the second twice");
    assert!(report.log.contains("writing the page at 0x0100: attempt 1 of 3 failed"), "{}", report.log);
    assert!(report.log.contains("signed on"), "{}", report.log);
    assert!(report.log.contains("succeeded on attempt 2"), "{}", report.log);
    assert_progress_well_formed(&events);
}

#[test]
fn a_late_read_reply_is_drained_and_the_page_read_again() {
    let mut board = FakeMega::new();
    board.late_reply_on_read = Some((2, Duration::from_millis(2300)));
    let (result, _) = upload(&mut board, &job(firmware(1000, 0), ""));
    let report = result.expect("the late answer is dropped and the page read again");
    assert!(report.log.contains("stale byte(s)"), "{}", report.log);
    assert!(report.log.contains("retrying reading back the page at 0x0200"), "{}", report.log);
}

#[test]
fn an_answer_out_of_sequence_once_is_retried() {
    let mut board = FakeMega::new();
    board.bad_seq_once_on = Some(CMD_READ_SIGNATURE_ISP);
    let (result, _) = upload(&mut board, &job(firmware(600, 0), ""));
    let report = result.expect("signed on again, the signature byte read again");
    assert!(report.log.contains("READ_SIGNATURE_ISP: attempt 1 of 3 failed"), "{}", report.log);
    assert!(report.log.contains("signature 1e 98 01"), "{}", report.log);
}

#[test]
fn a_board_that_never_answers_is_no_sync() {
    let mut board = FakeMega::new();
    board.dead = true;
    let (result, events) = upload(&mut board, &job(firmware(100, 0), "sync_window_ms = 100\nreset_attempts = 2"));
    let err = result.expect_err("no sync");
    assert!(matches!(err, UploadError::NoSync { attempts: 2, baud: 115_200 }), "{err}");
    assert!(events.iter().any(|e| matches!(e, UploadEvent::Log(l) if l.contains("attempt 2 of 2"))));
}

#[test]
fn another_chip_is_a_wrong_signature() {
    let mut board = FakeMega::new();
    board.signature = [0x1E, 0x97, 0x03]; // ATmega1280
    let (result, _) = upload(&mut board, &job(firmware(100, 0), ""));
    let err = result.expect_err("wrong chip");
    assert!(matches!(err, UploadError::WrongSignature { .. }), "{err}");
    assert!(err.to_string().contains("1e 97 03") && err.to_string().contains("1e 98 01"), "{err}");
    assert_eq!(board.pages_written, 0, "nothing is written to the wrong chip");
    assert!(!board.listening, "the board is let go back to its program");

    // The signature option overrides the model's.
    let mut board = FakeMega::new();
    board.signature = [0x1E, 0x97, 0x03];
    let (result, _) = upload(&mut board, &job(firmware(100, 0), "signature = \"1e9703\""));
    result.expect("configured signature matches");
}

#[test]
fn a_bad_flash_cell_is_a_verify_mismatch_at_its_address() {
    let mut board = FakeMega::new();
    board.stuck = Some((700, 0x00));
    let fw = firmware(1000, 0);
    let expected = fw.flatten().bytes[700];
    let (result, _) = upload(&mut board, &job(fw, ""));
    match result {
        Err(UploadError::VerifyMismatch { address: 700, expected: e, got: 0 }) => assert_eq!(e, expected),
        other => panic!("want a mismatch at 700, got {other:?}"),
    }
    // Without verify the same board "succeeds".
    let mut board = FakeMega::new();
    board.stuck = Some((700, 0x00));
    let (result, events) = upload(&mut board, &job(firmware(1000, 0), "verify = false"));
    result.expect("no verify, no mismatch");
    assert!(!events.iter().any(|e| matches!(e, UploadEvent::Progress(p) if p.phase == Phase::Verify)));
}

#[test]
fn cancel_stops_between_pages() {
    let mut board = FakeMega::new();
    let ctx = cancelling_context(Phase::Write, 50);
    let result = upload_over(&mut board, &job(firmware(2048, 0), ""), &ctx);
    assert!(matches!(result, Err(UploadError::Cancelled)), "{result:?}");
    assert_eq!(board.pages_written, 4, "stopped right after the page that reached 50 %");
}

#[test]
fn oversized_firmware_is_refused_before_the_board_is_touched() {
    let mut board = FakeMega::new();
    let (result, events) = upload(&mut board, &job(firmware(253_953, 0), ""));
    assert!(matches!(result, Err(UploadError::TooLarge { size: 253_953, limit: 253_952 })), "{result:?}");
    assert!(events.is_empty());
    assert!(!board.listening, "never reset");
}

#[test]
fn load_address_sets_bit_31_on_a_part_above_128_kib() {
    // 512 bytes from 0x1ff00: one page below 128 KiB, one above.
    let fw = firmware(512, 0x1_FF00);
    let mut board = FakeMega::new();
    let (result, _) = upload(&mut board, &job(fw.clone(), ""));
    result.expect("upload succeeds");
    // Every page from 0 is written (see the sparse-image test), then verified.
    let words: Vec<u32> = (0..0x2_0100).step_by(256).map(|a| 0x8000_0000 | (a / 2)).collect();
    assert_eq!(board.loaded, [words.clone(), words].concat(), "word addresses with bit 31, for write then verify");
    assert_eq!(&board.flash[0x1_FF00..0x2_0100], &fw.flatten().bytes[..]);

    // A part with at most 128 KiB has no extended byte to load.
    let mut board = FakeMega::new();
    let mut small = job(firmware(300, 0x1_0000), "");
    small.flash_limit = Some(0x2_0000);
    let (result, _) = upload(&mut board, &small);
    result.expect("upload succeeds");
    let words: Vec<u32> = (0..0x1_0200).step_by(256).map(|a| a / 2).collect();
    assert_eq!(board.loaded, [words.clone(), words].concat());
}

#[test]
fn a_sparse_image_is_written_from_page_0_so_each_page_is_erased_first() {
    // An old program cleared every bit of the first 8 KB. The image starts at
    // 0x1000: had only its two pages been sent, the bootloader would have
    // erased pages 0 and 1 and written 0x1000 unerased (old AND new = 0).
    let mut board = FakeMega::new();
    board.flash[..0x2000].fill(0x00);
    let fw = firmware(300, 0x1000);
    let (result, _) = upload(&mut board, &job(fw.clone(), ""));
    let report = result.expect("upload succeeds");
    assert_eq!(board.pages_written, 18, "pages 0x0000 to 0x1100");
    assert_eq!(&board.flash[0x1000..0x1000 + 300], &fw.flatten().bytes[..]);
    assert!(board.flash[..0x1000].iter().all(|b| *b == 0xFF), "the gap below is written blank");
    assert!(board.flash[0x1000 + 300..0x1200].iter().all(|b| *b == 0xFF), "the last page is padded");
    assert_eq!(&board.flash[0x1200..0x2000], &[0x00; 0xE00][..], "pages above the image are left alone");
    assert!(report.log.contains("also writing 16 blank pages"), "{}", report.log);
}

#[test]
fn pages_from_zero_fill_gaps_and_keep_the_image_pages() {
    let page = |fill: u8| vec![fill; 4];
    let filled = from_page_zero(vec![(4, page(1)), (12, page(2))], 4);
    assert_eq!(filled, [(0, page(0xFF)), (4, page(1)), (8, page(0xFF)), (12, page(2))]);
    assert_eq!(from_page_zero(Vec::new(), 4), []);
}

#[test]
fn options_are_checked_with_their_keys() {
    let table: toml::Table =
        toml::from_str("signature = \"zz\"\npage_size = 100\nreset_attempts = 0\nverify = \"yes\"").expect("toml");
    let errors = Stk500v2.check_options(&table).expect_err("four bad options");
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["signature", "page_size", "reset_attempts", "verify"]);
    // A bigger page than the bootloader's buffer holds would overrun it.
    let errors = Stk500v2.check_options(&toml::from_str("page_size = 512").expect("toml")).expect_err("too big");
    assert_eq!(errors[0].key, "page_size");
    assert!(errors[0].to_string().contains("between 2 and 256"), "{}", errors[0]);
    assert_eq!(
        read_settings(&toml::Table::new(), "mega2560"),
        Ok(Settings {
            signature: Some(M2560),
            page_size: 256,
            reset_attempts: 3,
            sync_window: Duration::from_millis(1500),
            verify: true
        })
    );
}

#[tokio::test]
async fn passes_the_offline_contract() {
    check_offline_contract(&Stk500v2, toml::from_str("verify = true").expect("toml")).await;
}
