//! Native STK500v2 uploader: the protocol of the Arduino Mega 2560 bootloader (avrdude's `-c wiring` / `-c stk500v2`).
//!
//! One upload is: reset the board into its bootloader (the job's reset
//! method), sign on (`CMD_SIGN_ON` until a framed answer comes back, several
//! reset attempts), enter programming mode, read the signature one byte at a
//! time (checked against the model's), write every page from address 0 to
//! the last one the firmware touches (see `from_page_zero` for why not
//! only the touched ones), read each back and compare, leave programming mode (the
//! bootloader then starts the new program by itself).
//!
//! Every message is framed: `MESSAGE_START`, a sequence number, a two-byte
//! big-endian body size, `TOKEN`, the body, and the XOR of all bytes before
//! it. Answers carry the request's sequence number and start with the
//! command byte and a status. A reply whose frame, sequence number or status
//! is wrong is a [`UploadError::Protocol`]: the board and rerod no longer
//! agree on where the conversation is, and only a new upload fixes that.
//!
//! Unlike the stk500v1 plugin nothing is pipelined: the bootloader reads a
//! whole message, acts on it, then sends its answer byte by byte without
//! reading, so a second message sent early would overrun the AVR's two-byte
//! receive buffer.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use rerod_devices::bootloader::{self, Defaults, Settings};
use rerod_devices::link::{READ_SLICE, ReadError, SerialLink, classify_io, read_exact};
use rerod_devices::{
    OptionError, Phase, ResetError, Signature, TtyLink, UploadContext, UploadError, UploadFuture, UploadJob,
    UploadReport, Uploader, spawn_blocking_upload,
};

/// The STK500v2 uploader, registered as `plugin = "stk500v2"`.
///
/// Options (all optional): `signature` (hex, e.g. "1e9801"; default: the
/// model's), `page_size` (bytes; default: the model's, else 256),
/// `reset_attempts` (default 3), `sync_window_ms` (how long to try to sign
/// on after each reset; default 1500), `verify` (read back and compare;
/// default true).
#[derive(Debug, Default, Clone, Copy)]
pub struct Stk500v2;

pub const NAME: &str = "stk500v2";

const MESSAGE_START: u8 = 0x1B;
const TOKEN: u8 = 0x0E;
const STATUS_CMD_OK: u8 = 0x00;
const CMD_SIGN_ON: u8 = 0x01;
const CMD_LOAD_ADDRESS: u8 = 0x06;
const CMD_ENTER_PROGMODE_ISP: u8 = 0x10;
const CMD_LEAVE_PROGMODE_ISP: u8 = 0x11;
const CMD_PROGRAM_FLASH_ISP: u8 = 0x13;
const CMD_READ_FLASH_ISP: u8 = 0x14;
const CMD_READ_SIGNATURE_ISP: u8 = 0x1B;

/// avrdude's ENTER_PROGMODE_ISP parameters for the ATmega2560: timeout 200,
/// stabDelay 100, cmdexeDelay 25, synchLoops 32, byteDelay 0, pollValue
/// 0x53, pollIndex 3, and the ISP "programming enable" instruction. The
/// Arduino bootloader ignores them, but a real STK500v2 programmer needs them.
const ENTER_PROGMODE_PARAMS: [u8; 11] = [200, 100, 25, 32, 0, 0x53, 3, 0xAC, 0x53, 0x00, 0x00];
/// PROGRAM_FLASH_ISP: page mode, write the page, wait `delay` ms (0xC1);
/// the ISP instructions "load page low byte", "write page", "read low byte".
const FLASH_MODE: u8 = 0xC1;
const FLASH_DELAY_MS: u8 = 10;
const FLASH_CMDS: [u8; 3] = [0x40, 0x4C, 0x20];
/// The ISP instruction "read flash low byte", for READ_FLASH_ISP.
const READ_FLASH_CMD: u8 = 0x20;
/// LOAD_ADDRESS bit 31: the part has more than 128 KiB, so the programmer
/// must also load the extended address byte (ISP `0x4D`).
const EXTENDED_ADDRESS: u32 = 0x8000_0000;
/// Word addresses past 16 bits need the extended byte.
const EXTENDED_FROM: u64 = 0x2_0000;

/// How long to wait for an answer to one sign-on before sending another.
const SYNC_RETRY: Duration = Duration::from_millis(50);
/// Fixed slack on top of the wire time of a reply (latency, flash write time).
const REPLY_SLACK: Duration = Duration::from_millis(500);
/// The largest AVR flash (ATmega2560/2561); the default limit for a model rerod does not know.
const ADDRESS_SPACE: u64 = 0x4_0000;
/// The longest answer: READ_FLASH_ISP of the largest page the options allow.
const MAX_REPLY_BODY: usize = 3 + 1024;

/// The typical board, for option defaults and messages.
const DEFAULTS: Defaults = Defaults { page_size: 256, chip: "ATmega2560", signature_example: "1e9801" };

fn read_settings(options: &toml::Table, model_name: &str) -> Result<Settings, Vec<OptionError>> {
    bootloader::read_settings(options, model_name, DEFAULTS)
}

impl Uploader for Stk500v2 {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check_options(&self, options: &toml::Table) -> Result<(), Vec<OptionError>> {
        read_settings(options, "").map(|_| ())
    }

    fn upload(&self, job: UploadJob, ctx: UploadContext) -> UploadFuture {
        spawn_blocking_upload(ctx.cancel_token().clone(), move || {
            let start = Instant::now();
            // Everything that can be refused is refused before the port is touched.
            let plan = Plan::new(&job)?;
            ctx.check_cancelled()?;
            let mut link = TtyLink::open(&job.port, job.baud)?;
            run(&mut link, &job, &plan, &ctx, start)
        })
    }
}

/// Runs a whole upload over an already open link (tests use a fake bootloader).
pub fn upload_over(
    link: &mut dyn SerialLink,
    job: &UploadJob,
    ctx: &UploadContext,
) -> Result<UploadReport, UploadError> {
    let start = Instant::now();
    let plan = Plan::new(job)?;
    ctx.check_cancelled()?;
    run(link, job, &plan, ctx, start)
}

/// What will be written: the settings, the pages (address → full page), how
/// many of them are blank fill (see [`from_page_zero`]), and whether
/// LOAD_ADDRESS must flag the extended address byte.
#[derive(Debug)]
struct Plan {
    settings: Settings,
    pages: Vec<(u32, Vec<u8>)>,
    blank_pages: usize,
    extended: bool,
}

impl Plan {
    fn new(job: &UploadJob) -> Result<Plan, UploadError> {
        let settings = read_settings(&job.options, &job.model).map_err(UploadError::BadOptions)?;
        let limit = bootloader::flash_limit(job, ADDRESS_SPACE);
        job.firmware.check_fits(limit)?;
        let touched = bootloader::pages(&job.firmware, usize::from(settings.page_size));
        let touched_count = touched.len();
        let pages = from_page_zero(touched, usize::from(settings.page_size));
        let blank_pages = pages.len() - touched_count;
        // Like avrdude, flag every address on a part with more than 128 KiB,
        // not only the high ones: a programmer then reloads the extended byte
        // each time, so verify starting again at page 0 does not read from
        // the upper half left selected by the last page written.
        Ok(Plan { settings, pages, blank_pages, extended: limit > EXTENDED_FROM })
    }
}

/// Every page from address 0 up to the last one the image touches, in
/// order, with 0xFF pages in the gaps.
///
/// The Arduino STK500v2 bootloader (stk500boot.c) does not erase the page a
/// PROGRAM_FLASH_ISP writes: each one erases the *next page counted from 0*
/// (`eraseAddress += SPM_PAGESIZE`). Skipping a page puts the two out of
/// step: later pages are written unerased (flash can only clear bits, so
/// they hold old AND new and fail verify) while pages that were meant to be
/// left alone get erased anyway. Writing every page from 0 keeps each erase
/// on the page being written; the gaps end up blank, as that bootloader
/// would have left most of them regardless.
fn from_page_zero(pages: Vec<(u32, Vec<u8>)>, page_size: usize) -> Vec<(u32, Vec<u8>)> {
    let Some(last) = pages.last().map(|(address, _)| *address) else {
        return pages;
    };
    let mut touched = pages.into_iter().peekable();
    (0..=last)
        .step_by(page_size)
        .map(|address| touched.next_if(|(a, _)| *a == address).unwrap_or_else(|| (address, vec![0xFF; page_size])))
        .collect()
}

/// One message on the wire: header, body, XOR checksum of everything before it.
fn frame(seq: u8, body: &[u8]) -> Vec<u8> {
    let size = body.len() as u16;
    let mut out = Vec::with_capacity(body.len() + 6);
    out.extend_from_slice(&[MESSAGE_START, seq, (size >> 8) as u8, size as u8, TOKEN]);
    out.extend_from_slice(body);
    out.push(checksum(&out));
    out
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |acc, b| acc ^ b)
}

/// The body of the first well-formed frame with sequence number `seq` in
/// `bytes`, if one has fully arrived. Bytes around it (the old program's
/// output, answers to earlier requests, line noise) are skipped, including
/// stray `MESSAGE_START` bytes that do not begin a valid frame.
fn find_frame(bytes: &[u8], seq: u8) -> Option<Vec<u8>> {
    (0..bytes.len()).filter(|&i| bytes[i] == MESSAGE_START).find_map(|i| {
        let header = bytes.get(i..i + 5)?;
        let size = usize::from(header[2]) << 8 | usize::from(header[3]);
        if header[1] != seq || header[4] != TOKEN || size == 0 || size > MAX_REPLY_BODY {
            return None;
        }
        let whole = bytes.get(i..i + 5 + size + 1)?;
        let (message, sum) = whole.split_at(5 + size);
        (checksum(message) == sum[0]).then(|| message[5..].to_vec())
    })
}

/// One upload in progress over a link: sends, receives, and keeps the log.
struct Session<'a> {
    link: &'a mut dyn SerialLink,
    port: &'a Path,
    baud: u32,
    ctx: &'a UploadContext,
    seq: u8,
    log: String,
}

impl Session<'_> {
    fn note(&mut self, line: String) {
        tracing::debug!(port = %self.port.display(), "{line}");
        let _ = writeln!(self.log, "{line}");
        self.ctx.log(line);
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), UploadError> {
        self.link.write_all(bytes).map_err(|e| classify_io(self.port, "writing", e))
    }

    /// The sequence number for the next message; it wraps, as avrdude's does.
    fn next_seq(&mut self) -> u8 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Wire time of `n` bytes (10 bits each) plus slack.
    fn reply_timeout(&self, n: usize) -> Duration {
        Duration::from_micros(n as u64 * 10_000_000 / u64::from(self.baud.max(1))) + REPLY_SLACK
    }

    fn recv(&mut self, buf: &mut [u8], waiting_for: &str) -> Result<(), UploadError> {
        let timeout = self.reply_timeout(buf.len());
        let deadline = Instant::now() + timeout;
        match read_exact(self.link, buf, deadline, self.ctx.cancel_token()) {
            Ok(()) => Ok(()),
            Err(ReadError::Cancelled) => Err(UploadError::Cancelled),
            Err(ReadError::Timeout { got }) => Err(UploadError::Timeout {
                waiting_for: format!("{waiting_for} (got {got} of {} bytes)", buf.len()),
                after: timeout,
            }),
            Err(ReadError::Io(e)) => Err(classify_io(self.port, "reading", e)),
        }
    }

    /// Sends `body` as one message and returns the answer's body, checked:
    /// frame, sequence number, checksum, echoed command and `STATUS_CMD_OK`.
    fn message(&mut self, body: &[u8], command: &'static str) -> Result<Vec<u8>, UploadError> {
        self.ctx.check_cancelled()?;
        let seq = self.next_seq();
        self.send(&frame(seq, body))?;
        let mut header = [0u8; 5];
        self.recv(&mut header, command)?;
        let size = usize::from(header[2]) << 8 | usize::from(header[3]);
        if header[0] != MESSAGE_START || header[1] != seq || header[4] != TOKEN || !(2..=MAX_REPLY_BODY).contains(&size)
        {
            return Err(UploadError::Protocol { command, got: header.to_vec() });
        }
        let mut rest = vec![0u8; size + 1];
        self.recv(&mut rest, command)?;
        let sum = checksum(&header) ^ checksum(&rest[..size]);
        if sum != rest[size] || rest[0] != body[0] || rest[1] != STATUS_CMD_OK {
            let mut got = header.to_vec();
            got.extend_from_slice(&rest);
            return Err(UploadError::Protocol { command, got });
        }
        rest.truncate(size);
        Ok(rest)
    }

    /// Signs on for `window`. Returns the programmer id the bootloader gave
    /// ("AVRISP_2"), or None when it never answered.
    fn sign_on(&mut self, window: Duration) -> Result<Option<String>, UploadError> {
        let end = Instant::now() + window;
        let mut seen: Vec<u8> = Vec::new();
        let mut buf = [0u8; 64];
        while Instant::now() < end {
            self.ctx.check_cancelled()?;
            // A fresh sequence number per attempt: a late answer to an
            // earlier attempt cannot be taken for this one.
            let seq = self.next_seq();
            self.send(&frame(seq, &[CMD_SIGN_ON]))?;
            seen.clear();
            let attempt_end = (Instant::now() + SYNC_RETRY).min(end);
            loop {
                let now = Instant::now();
                if now >= attempt_end {
                    break;
                }
                let n = self
                    .link
                    .read_timeout(&mut buf, (attempt_end - now).min(READ_SLICE))
                    .map_err(|e| classify_io(self.port, "reading", e))?;
                seen.extend_from_slice(&buf[..n]);
                if let Some(body) = find_frame(&seen, seq)
                    && body.len() >= 2
                    && body[0] == CMD_SIGN_ON
                    && body[1] == STATUS_CMD_OK
                {
                    let len = body.get(2).map_or(0, |n| usize::from(*n));
                    let id = body.get(3..3 + len).unwrap_or_default();
                    return Ok(Some(String::from_utf8_lossy(id).into_owned()));
                }
            }
        }
        Ok(None)
    }

    fn reset_and_sign_on(&mut self, job: &UploadJob, settings: &Settings) -> Result<(), UploadError> {
        let attempts = settings.reset_attempts;
        self.ctx.progress(Phase::Reset, 0);
        for attempt in 1..=attempts {
            let started = Instant::now();
            match job.reset.run(Some(&mut *self.link), self.ctx.cancel_token()) {
                Ok(Some(note)) => self.note(note),
                Ok(None) => {}
                Err(ResetError::Cancelled) => return Err(UploadError::Cancelled),
                Err(e) => return Err(e.into()),
            }
            // Whatever the old program printed is of no interest now.
            self.link.discard_input().map_err(|e| classify_io(self.port, "flushing", e))?;
            self.ctx.progress(Phase::Sync, ((attempt - 1) * 100 / attempts) as u8);
            if let Some(id) = self.sign_on(settings.sync_window)? {
                self.note(format!(
                    "signed on to the bootloader ({id:?}) after {} ms (attempt {attempt})",
                    started.elapsed().as_millis()
                ));
                return Ok(());
            }
            self.note(format!(
                "no answer from the bootloader within {} ms (attempt {attempt} of {attempts})",
                settings.sync_window.as_millis()
            ));
        }
        Err(UploadError::NoSync { attempts, baud: job.baud })
    }

    fn read_signature(&mut self) -> Result<Signature, UploadError> {
        let mut signature = [0u8; 3];
        for (i, byte) in signature.iter_mut().enumerate() {
            // Body: command, retAddr (which ISP reply byte holds the value), the ISP instruction.
            let reply = self.message(&[CMD_READ_SIGNATURE_ISP, 4, 0x30, 0, i as u8, 0], "READ_SIGNATURE_ISP")?;
            // Answer: command, STATUS_CMD_OK, the byte, STATUS_CMD_OK.
            match reply.as_slice() {
                [_, _, value, STATUS_CMD_OK] => *byte = *value,
                _ => return Err(UploadError::Protocol { command: "READ_SIGNATURE_ISP", got: reply }),
            }
        }
        Ok(Signature(signature))
    }

    fn check_signature(&mut self, settings: &Settings) -> Result<(), UploadError> {
        let got = self.read_signature()?;
        match settings.signature {
            Some(expected) if expected != got.0 => {
                // Let the board go back to its program; the error is what matters.
                let _ = self.message(&[CMD_LEAVE_PROGMODE_ISP, 1, 1], "LEAVE_PROGMODE_ISP");
                Err(UploadError::WrongSignature { expected: Signature(expected), got })
            }
            Some(_) => {
                self.note(format!("signature {got} (as expected)"));
                Ok(())
            }
            None => {
                self.note(format!("signature {got} (not checked: no signature configured for this model)"));
                Ok(())
            }
        }
    }

    fn load_address(&mut self, byte_address: u32, extended: bool) -> Result<(), UploadError> {
        let word = (byte_address / 2) | if extended { EXTENDED_ADDRESS } else { 0 };
        let [a3, a2, a1, a0] = word.to_be_bytes();
        self.message(&[CMD_LOAD_ADDRESS, a3, a2, a1, a0], "LOAD_ADDRESS").map(|_| ())
    }

    fn write_pages(&mut self, pages: &[(u32, Vec<u8>)], extended: bool) -> Result<(), UploadError> {
        let started = Instant::now();
        let mut body = Vec::new();
        for (i, (address, data)) in pages.iter().enumerate() {
            self.ctx.check_cancelled()?;
            self.load_address(*address, extended)?;
            let [size_hi, size_lo] = (data.len() as u16).to_be_bytes();
            body.clear();
            body.extend_from_slice(&[CMD_PROGRAM_FLASH_ISP, size_hi, size_lo, FLASH_MODE, FLASH_DELAY_MS]);
            // Polling values 0, 0: the delay, not polling, ends the page write.
            body.extend_from_slice(&FLASH_CMDS);
            body.extend_from_slice(&[0x00, 0x00]);
            body.extend_from_slice(data);
            self.message(&body, "PROGRAM_FLASH_ISP")?;
            self.ctx.progress(Phase::Write, ((i + 1) * 100 / pages.len()) as u8);
        }
        let bytes: usize = pages.iter().map(|(_, d)| d.len()).sum();
        self.note(format!("wrote {} pages ({bytes} bytes) in {} ms", pages.len(), started.elapsed().as_millis()));
        Ok(())
    }

    fn verify_pages(&mut self, pages: &[(u32, Vec<u8>)], extended: bool) -> Result<(), UploadError> {
        let started = Instant::now();
        for (i, (address, data)) in pages.iter().enumerate() {
            self.ctx.check_cancelled()?;
            self.load_address(*address, extended)?;
            let [size_hi, size_lo] = (data.len() as u16).to_be_bytes();
            let reply = self.message(&[CMD_READ_FLASH_ISP, size_hi, size_lo, READ_FLASH_CMD], "READ_FLASH_ISP")?;
            // Answer: command, STATUS_CMD_OK, the data, STATUS_CMD_OK.
            if reply.len() != data.len() + 3 || reply.last() != Some(&STATUS_CMD_OK) {
                return Err(UploadError::Protocol { command: "READ_FLASH_ISP", got: reply });
            }
            let read = &reply[2..2 + data.len()];
            if let Some(at) = data.iter().zip(read).position(|(a, b)| a != b) {
                return Err(UploadError::VerifyMismatch {
                    address: address + at as u32,
                    expected: data[at],
                    got: read[at],
                });
            }
            self.ctx.progress(Phase::Verify, ((i + 1) * 100 / pages.len()) as u8);
        }
        self.note(format!("verified {} pages in {} ms", pages.len(), started.elapsed().as_millis()));
        Ok(())
    }
}

fn run(
    link: &mut dyn SerialLink,
    job: &UploadJob,
    plan: &Plan,
    ctx: &UploadContext,
    start: Instant,
) -> Result<UploadReport, UploadError> {
    let mut session = Session { link, port: &job.port, baud: job.baud, ctx, seq: 0, log: String::new() };
    if plan.blank_pages > 0 {
        session.note(format!(
            "also writing {} blank pages outside the image: the bootloader erases pages in order from address 0",
            plan.blank_pages
        ));
    }
    session.reset_and_sign_on(job, &plan.settings)?;
    let mut enter = vec![CMD_ENTER_PROGMODE_ISP];
    enter.extend_from_slice(&ENTER_PROGMODE_PARAMS);
    session.message(&enter, "ENTER_PROGMODE_ISP")?;
    // avrdude's order: a real ISP programmer reads the signature only in programming mode.
    session.check_signature(&plan.settings)?;
    session.write_pages(&plan.pages, plan.extended)?;
    if plan.settings.verify {
        session.verify_pages(&plan.pages, plan.extended)?;
    }
    // The program is written (and verified); a lost reply here changes nothing.
    if let Err(e) = session.message(&[CMD_LEAVE_PROGMODE_ISP, 1, 1], "LEAVE_PROGMODE_ISP") {
        if matches!(e, UploadError::Cancelled | UploadError::PortVanished { .. }) {
            return Err(e);
        }
        session.note(format!("leaving programming mode: {e}"));
    }
    ctx.progress(Phase::Done, 100);
    let duration = start.elapsed();
    let bytes_written = job.firmware.len();
    session.note(format!("{bytes_written} bytes written in {:.2} s", duration.as_secs_f64()));
    tracing::info!(port = %job.port.display(), bytes = bytes_written, ms = duration.as_millis() as u64, "stk500v2 upload done");
    Ok(UploadReport { bytes_written, duration, log: session.log })
}

#[cfg(test)]
mod tests;
