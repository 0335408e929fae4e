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
//! agree on where the conversation is. That, or a reply that missed its
//! deadline, is retried: stale input is dropped, a SIGN_ON with a fresh
//! sequence number gets back in step, and the step runs again (see
//! [`BootloaderSession::retrying`]).
//!
//! Unlike the stk500v1 plugin nothing is pipelined: the bootloader reads a
//! whole message, acts on it, then sends its answer byte by byte without
//! reading, so a second message sent early would overrun the AVR's two-byte
//! receive buffer.

use std::time::{Duration, Instant};

use rerod_devices::bootloader::{self, Defaults, Settings};
use rerod_devices::link::SerialLink;
use rerod_devices::link_session::{self, BootloaderSession, LinkSession, Protocol, SYNC_RETRY};
use rerod_devices::{
    OptionError, Signature, UploadContext, UploadError, UploadFuture, UploadJob, UploadReport, Uploader,
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

/// The largest AVR flash (ATmega2560/2561); the default limit for a model rerod does not know.
const ADDRESS_SPACE: u64 = 0x4_0000;
/// The longest answer: READ_FLASH_ISP of the largest page the options allow.
const MAX_REPLY_BODY: usize = 3 + 1024;

/// The typical board, for option defaults and messages.
// stk500boot.c keeps a whole message (10 bytes of command + the page) in a 285-byte buffer.
const DEFAULTS: Defaults =
    Defaults { page_size: 256, chip: "ATmega2560", signature_example: "1e9801", max_page_size: 256 };

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
        link_session::upload_tty::<Stk500v2>(job, ctx)
    }
}

impl Protocol for Stk500v2 {
    type Plan = Plan;

    /// Everything that can be refused is refused here, before the port is touched.
    fn plan(job: &UploadJob) -> Result<Plan, UploadError> {
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

    fn run(
        link: &mut dyn SerialLink,
        job: &UploadJob,
        plan: &Plan,
        ctx: &UploadContext,
        start: Instant,
    ) -> Result<UploadReport, UploadError> {
        let mut session = Session { io: LinkSession::new(link, job, ctx), seq: 0 };
        if plan.blank_pages > 0 {
            session.io.note(format!(
                "also writing {} blank pages outside the image: the bootloader erases pages in order from address 0",
                plan.blank_pages
            ));
        }
        session.reset_and_connect(job, &plan.settings, Session::sign_on)?;
        let mut enter = vec![CMD_ENTER_PROGMODE_ISP];
        enter.extend_from_slice(&ENTER_PROGMODE_PARAMS);
        session.retrying("ENTER_PROGMODE_ISP", |s| s.message(&enter, "ENTER_PROGMODE_ISP"))?;
        // avrdude's order: a real ISP programmer reads the signature only in programming mode.
        session.check_signature(&plan.settings)?;
        session.program(&plan.pages, plan.extended)?;
        if plan.settings.verify {
            session.verify(&plan.pages, plan.extended)?;
        }
        let left = session.message(&[CMD_LEAVE_PROGMODE_ISP, 1, 1], "LEAVE_PROGMODE_ISP").map(|_| ());
        session.io.finish(job, start, left, NAME)
    }
}

/// Runs a whole upload over an already open link (tests use a fake bootloader).
pub fn upload_over(
    link: &mut dyn SerialLink,
    job: &UploadJob,
    ctx: &UploadContext,
) -> Result<UploadReport, UploadError> {
    link_session::upload_over::<Stk500v2>(link, job, ctx)
}

/// What will be written: the settings, the pages (address → full page), how
/// many of them are blank fill (see `from_page_zero`), and whether
/// LOAD_ADDRESS must flag the extended address byte.
/// Public only because [`Protocol`] names it; its fields stay private.
#[derive(Debug)]
pub struct Plan {
    settings: Settings,
    pages: Vec<(u32, Vec<u8>)>,
    blank_pages: usize,
    extended: bool,
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

/// One upload in progress: STK500v2 messages over the shared link session.
struct Session<'a> {
    io: LinkSession<'a>,
    seq: u8,
}

impl<'a> BootloaderSession<'a> for Session<'a> {
    fn io(&mut self) -> &mut LinkSession<'a> {
        &mut self.io
    }

    fn resync(&mut self, window: Duration) -> Result<bool, UploadError> {
        // The bootloader answers SIGN_ON at any time without leaving
        // programming mode, and sign_on takes a fresh sequence number, so
        // a late answer to the failed message cannot pass for this one.
        Ok(self.sign_on(window)?.is_some())
    }
}

impl Session<'_> {
    /// The sequence number for the next message; it wraps, as avrdude's does.
    fn next_seq(&mut self) -> u8 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `body` as one message and returns the answer's body, checked:
    /// frame, sequence number, checksum, echoed command and `STATUS_CMD_OK`.
    fn message(&mut self, body: &[u8], command: &'static str) -> Result<Vec<u8>, UploadError> {
        self.io.ctx().check_cancelled()?;
        let seq = self.next_seq();
        self.io.send(&frame(seq, body))?;
        let mut header = [0u8; 5];
        self.io.recv(&mut header, command)?;
        let size = usize::from(header[2]) << 8 | usize::from(header[3]);
        if header[0] != MESSAGE_START || header[1] != seq || header[4] != TOKEN || !(2..=MAX_REPLY_BODY).contains(&size)
        {
            return Err(UploadError::Protocol { command, got: header.to_vec() });
        }
        let mut rest = vec![0u8; size + 1];
        self.io.recv(&mut rest, command)?;
        let sum = checksum(&header) ^ checksum(&rest[..size]);
        if sum != rest[size] || rest[0] != body[0] || rest[1] != STATUS_CMD_OK {
            let mut got = header.to_vec();
            got.extend_from_slice(&rest);
            return Err(UploadError::Protocol { command, got });
        }
        rest.truncate(size);
        Ok(rest)
    }

    /// Signs on for `window`. Returns how, with the programmer id the
    /// bootloader gave ("AVRISP_2"), or None when it never answered.
    fn sign_on(&mut self, window: Duration) -> Result<Option<String>, UploadError> {
        let end = Instant::now() + window;
        let mut seen: Vec<u8> = Vec::new();
        let mut buf = [0u8; 64];
        while Instant::now() < end {
            self.io.ctx().check_cancelled()?;
            // A fresh sequence number per attempt: a late answer to an
            // earlier attempt cannot be taken for this one.
            let seq = self.next_seq();
            self.io.send(&frame(seq, &[CMD_SIGN_ON]))?;
            seen.clear();
            let attempt_end = (Instant::now() + SYNC_RETRY).min(end);
            while Instant::now() < attempt_end {
                let n = self.io.read_some(&mut buf, attempt_end)?;
                seen.extend_from_slice(&buf[..n]);
                if let Some(body) = find_frame(&seen, seq)
                    && body.len() >= 2
                    && body[0] == CMD_SIGN_ON
                    && body[1] == STATUS_CMD_OK
                {
                    let len = body.get(2).map_or(0, |n| usize::from(*n));
                    let id = body.get(3..3 + len).unwrap_or_default();
                    let id = String::from_utf8_lossy(id);
                    return Ok(Some(format!("signed on to the bootloader ({id:?})")));
                }
            }
        }
        Ok(None)
    }

    fn read_signature(&mut self) -> Result<Signature, UploadError> {
        let mut signature = [0u8; 3];
        for (i, byte) in signature.iter_mut().enumerate() {
            // Body: command, retAddr (which ISP reply byte holds the value), the ISP instruction.
            let reply = self.retrying("READ_SIGNATURE_ISP", |s| {
                s.message(&[CMD_READ_SIGNATURE_ISP, 4, 0x30, 0, i as u8, 0], "READ_SIGNATURE_ISP")
            })?;
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
                self.io.note(format!("signature {got} (as expected)"));
                Ok(())
            }
            None => {
                self.io.note(format!("signature {got} (not checked: no signature configured for this model)"));
                Ok(())
            }
        }
    }

    fn load_address(&mut self, byte_address: u32, extended: bool) -> Result<(), UploadError> {
        let word = (byte_address / 2) | if extended { EXTENDED_ADDRESS } else { 0 };
        let [a3, a2, a1, a0] = word.to_be_bytes();
        self.message(&[CMD_LOAD_ADDRESS, a3, a2, a1, a0], "LOAD_ADDRESS").map(|_| ())
    }

    fn program(&mut self, pages: &[(u32, Vec<u8>)], extended: bool) -> Result<(), UploadError> {
        let mut body = Vec::new();
        // A retried page may have been written already, so its erase moved
        // the bootloader's erase pointer one page further: the next page is
        // then erased early, by that retry, still before it is written, and
        // the page written twice gets the same bytes twice, which flash keeps.
        BootloaderSession::write_pages(self, pages, |session, address, data| {
            session.load_address(address, extended)?;
            let [size_hi, size_lo] = (data.len() as u16).to_be_bytes();
            body.clear();
            body.extend_from_slice(&[CMD_PROGRAM_FLASH_ISP, size_hi, size_lo, FLASH_MODE, FLASH_DELAY_MS]);
            // Polling values 0, 0: the delay, not polling, ends the page write.
            body.extend_from_slice(&FLASH_CMDS);
            body.extend_from_slice(&[0x00, 0x00]);
            body.extend_from_slice(data);
            session.message(&body, "PROGRAM_FLASH_ISP").map(|_| ())
        })
    }

    fn verify(&mut self, pages: &[(u32, Vec<u8>)], extended: bool) -> Result<(), UploadError> {
        BootloaderSession::verify_pages(self, pages, |session, address, len| {
            session.load_address(address, extended)?;
            let [size_hi, size_lo] = (len as u16).to_be_bytes();
            let mut reply =
                session.message(&[CMD_READ_FLASH_ISP, size_hi, size_lo, READ_FLASH_CMD], "READ_FLASH_ISP")?;
            // Answer: command, STATUS_CMD_OK, the data, STATUS_CMD_OK.
            if reply.len() != len + 3 || reply.last() != Some(&STATUS_CMD_OK) {
                return Err(UploadError::Protocol { command: "READ_FLASH_ISP", got: reply });
            }
            reply.truncate(2 + len);
            reply.drain(..2);
            Ok(reply)
        })
    }
}

#[cfg(test)]
mod tests;
