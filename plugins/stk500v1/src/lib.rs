//! Native STK500v1 uploader: the protocol of Optiboot and the old ATmegaBOOT (avrdude's `-c arduino`).
//!
//! One upload is: reset the board into its bootloader (the job's reset
//! method), sync (`STK_GET_SYNC` until it answers `INSYNC OK`, several reset
//! attempts), read the bootloader version and the signature (checked against
//! the model's), enter programming mode, write every page the firmware
//! touches, read each back and compare, leave programming mode (Optiboot then
//! starts the new program by itself).
//!
//! Speed: the line is the limit, so the code never sleeps between commands,
//! writes each command in one syscall, and reads exactly the reply length.
//! `LOAD_ADDRESS` and the `PROG_PAGE`/`READ_PAGE` after it go out in one
//! write: the bootloader answers `LOAD_ADDRESS` with two bytes it sends
//! without waiting, so it is back reading its UART before the next byte
//! arrives — this saves a round trip per page and is safe even with the
//! AVR's two-byte receive buffer. Pages are never pipelined beyond that:
//! while Optiboot writes flash or sends a page it does not read, and a real
//! UART would overrun.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use rerod_devices::bootloader::{self, Defaults, Settings};
use rerod_devices::link::{READ_SLICE, ReadError, SerialLink, classify_io, drain, read_exact};
use rerod_devices::{
    OptionError, Phase, ResetError, Signature, TtyLink, UploadContext, UploadError, UploadFuture, UploadJob,
    UploadReport, Uploader, spawn_blocking_upload,
};

/// The STK500v1 uploader, registered as `plugin = "stk500v1"`.
///
/// Options (all optional): `signature` (hex, e.g. "1e950f"; default: the
/// model's), `page_size` (bytes; default: the model's, else 128),
/// `reset_attempts` (default 3), `sync_window_ms` (how long to try to sync
/// after each reset; default 1500), `verify` (read back and compare; default
/// true).
#[derive(Debug, Default, Clone, Copy)]
pub struct Stk500v1;

pub const NAME: &str = "stk500v1";

const STK_OK: u8 = 0x10;
const STK_INSYNC: u8 = 0x14;
const CRC_EOP: u8 = 0x20;
const STK_GET_SYNC: u8 = 0x30;
const STK_GET_PARAMETER: u8 = 0x41;
const STK_ENTER_PROGMODE: u8 = 0x50;
const STK_LEAVE_PROGMODE: u8 = 0x51;
const STK_LOAD_ADDRESS: u8 = 0x55;
const STK_PROG_PAGE: u8 = 0x64;
const STK_READ_PAGE: u8 = 0x74;
const STK_READ_SIGN: u8 = 0x75;
const PARAM_SW_MAJOR: u8 = 0x81;
const PARAM_SW_MINOR: u8 = 0x82;

/// How long to wait for an answer to one sync request before sending another.
const SYNC_RETRY: Duration = Duration::from_millis(50);
/// Fixed slack on top of the wire time of a reply (latency, flash write time).
const REPLY_SLACK: Duration = Duration::from_millis(500);
/// LOAD_ADDRESS takes a 16-bit word address: 128 KiB is all STK500v1 reaches.
const ADDRESS_SPACE: u64 = 0x2_0000;

/// The typical board, for option defaults and messages.
const DEFAULTS: Defaults = Defaults { page_size: 128, chip: "ATmega328P", signature_example: "1e950f" };

fn read_settings(options: &toml::Table, model_name: &str) -> Result<Settings, Vec<OptionError>> {
    bootloader::read_settings(options, model_name, DEFAULTS)
}

impl Uploader for Stk500v1 {
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

/// What will be written: the settings and the pages (address → full page).
#[derive(Debug)]
struct Plan {
    settings: Settings,
    pages: Vec<(u32, Vec<u8>)>,
}

impl Plan {
    fn new(job: &UploadJob) -> Result<Plan, UploadError> {
        let settings = read_settings(&job.options, &job.model).map_err(UploadError::BadOptions)?;
        job.firmware.check_fits(bootloader::flash_limit(job, ADDRESS_SPACE))?;
        let pages = bootloader::pages(&job.firmware, usize::from(settings.page_size));
        Ok(Plan { settings, pages })
    }
}

/// One upload in progress over a link: sends, receives, and keeps the log.
struct Session<'a> {
    link: &'a mut dyn SerialLink,
    port: &'a Path,
    baud: u32,
    ctx: &'a UploadContext,
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

    /// Reads `INSYNC payload OK` and returns the payload.
    fn reply(&mut self, payload: usize, command: &'static str) -> Result<Vec<u8>, UploadError> {
        let mut buf = vec![0u8; payload + 2];
        // The first byte alone first: a NOSYNC (0x15) reply is one byte long,
        // and waiting for the full length would turn it into a timeout.
        self.recv(&mut buf[..1], command)?;
        if buf[0] != STK_INSYNC {
            return Err(UploadError::Protocol { command, got: buf[..1].to_vec() });
        }
        self.recv(&mut buf[1..], command)?;
        if buf[payload + 1] != STK_OK {
            return Err(UploadError::Protocol { command, got: buf });
        }
        buf.pop();
        buf.remove(0);
        Ok(buf)
    }

    fn command(&mut self, request: &[u8], payload: usize, name: &'static str) -> Result<Vec<u8>, UploadError> {
        self.ctx.check_cancelled()?;
        self.send(request)?;
        self.reply(payload, name)
    }

    /// Tries to sync for `window`. Returns false when the bootloader never answered.
    fn sync(&mut self, window: Duration) -> Result<bool, UploadError> {
        let end = Instant::now() + window;
        let mut seen: Vec<u8> = Vec::new();
        let mut buf = [0u8; 64];
        while Instant::now() < end {
            self.ctx.check_cancelled()?;
            self.send(&[STK_GET_SYNC, CRC_EOP])?;
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
                // Anything before INSYNC OK is the old program's output or line noise.
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(2).any(|w| w == [STK_INSYNC, STK_OK]) {
                    if self.confirm_sync()? {
                        return Ok(true);
                    }
                    seen.clear();
                    break;
                }
            }
            let keep = seen.len().saturating_sub(1);
            seen.drain(..keep);
        }
        Ok(false)
    }

    /// After a first answer: swallow the answers to earlier sync requests,
    /// then one more request must get exactly `INSYNC OK`.
    fn confirm_sync(&mut self) -> Result<bool, UploadError> {
        drain(self.link, Duration::from_millis(20), Duration::from_millis(300))
            .map_err(|e| classify_io(self.port, "reading", e))?;
        self.send(&[STK_GET_SYNC, CRC_EOP])?;
        let mut reply = [0u8; 2];
        let deadline = Instant::now() + self.reply_timeout(2);
        match read_exact(self.link, &mut reply, deadline, self.ctx.cancel_token()) {
            Ok(()) => Ok(reply == [STK_INSYNC, STK_OK]),
            Err(ReadError::Cancelled) => Err(UploadError::Cancelled),
            Err(ReadError::Timeout { .. }) => Ok(false),
            Err(ReadError::Io(e)) => Err(classify_io(self.port, "reading", e)),
        }
    }

    fn reset_and_sync(&mut self, job: &UploadJob, settings: &Settings) -> Result<(), UploadError> {
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
            if self.sync(settings.sync_window)? {
                self.note(format!(
                    "in sync with the bootloader after {} ms (attempt {attempt})",
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

    fn identify(&mut self, settings: &Settings) -> Result<(), UploadError> {
        let major = self.command(&[STK_GET_PARAMETER, PARAM_SW_MAJOR, CRC_EOP], 1, "GET_PARAMETER")?[0];
        let minor = self.command(&[STK_GET_PARAMETER, PARAM_SW_MINOR, CRC_EOP], 1, "GET_PARAMETER")?[0];
        self.note(format!("bootloader version {major}.{minor}"));
        let got = self.command(&[STK_READ_SIGN, CRC_EOP], 3, "READ_SIGN")?;
        let got = Signature([got[0], got[1], got[2]]);
        match settings.signature {
            Some(expected) if expected != got.0 => {
                return Err(UploadError::WrongSignature { expected: Signature(expected), got });
            }
            Some(_) => self.note(format!("signature {got} (as expected)")),
            None => self.note(format!("signature {got} (not checked: no signature configured for this model)")),
        }
        Ok(())
    }

    fn write_pages(&mut self, pages: &[(u32, Vec<u8>)]) -> Result<(), UploadError> {
        let started = Instant::now();
        let mut request = Vec::new();
        for (i, (address, data)) in pages.iter().enumerate() {
            self.ctx.check_cancelled()?;
            request.clear();
            push_load_address(&mut request, *address);
            request.extend_from_slice(&[STK_PROG_PAGE, (data.len() >> 8) as u8, data.len() as u8, b'F']);
            request.extend_from_slice(data);
            request.push(CRC_EOP);
            self.send(&request)?;
            self.reply(0, "LOAD_ADDRESS")?;
            self.reply(0, "PROG_PAGE")?;
            self.ctx.progress(Phase::Write, ((i + 1) * 100 / pages.len()) as u8);
        }
        let bytes: usize = pages.iter().map(|(_, d)| d.len()).sum();
        self.note(format!("wrote {} pages ({bytes} bytes) in {} ms", pages.len(), started.elapsed().as_millis()));
        Ok(())
    }

    fn verify_pages(&mut self, pages: &[(u32, Vec<u8>)]) -> Result<(), UploadError> {
        let started = Instant::now();
        let mut request = Vec::new();
        for (i, (address, data)) in pages.iter().enumerate() {
            self.ctx.check_cancelled()?;
            request.clear();
            push_load_address(&mut request, *address);
            request.extend_from_slice(&[STK_READ_PAGE, (data.len() >> 8) as u8, data.len() as u8, b'F', CRC_EOP]);
            self.send(&request)?;
            self.reply(0, "LOAD_ADDRESS")?;
            let read = self.reply(data.len(), "READ_PAGE")?;
            if let Some(at) = data.iter().zip(&read).position(|(a, b)| a != b) {
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

fn push_load_address(request: &mut Vec<u8>, byte_address: u32) {
    let word = byte_address / 2;
    request.extend_from_slice(&[STK_LOAD_ADDRESS, word as u8, (word >> 8) as u8, CRC_EOP]);
}

fn run(
    link: &mut dyn SerialLink,
    job: &UploadJob,
    plan: &Plan,
    ctx: &UploadContext,
    start: Instant,
) -> Result<UploadReport, UploadError> {
    let mut session = Session { link, port: &job.port, baud: job.baud, ctx, log: String::new() };
    session.reset_and_sync(job, &plan.settings)?;
    session.identify(&plan.settings)?;
    session.command(&[STK_ENTER_PROGMODE, CRC_EOP], 0, "ENTER_PROGMODE")?;
    session.write_pages(&plan.pages)?;
    if plan.settings.verify {
        session.verify_pages(&plan.pages)?;
    }
    // The program is written (and verified); a lost reply here changes nothing.
    if let Err(e) = session.command(&[STK_LEAVE_PROGMODE, CRC_EOP], 0, "LEAVE_PROGMODE") {
        if matches!(e, UploadError::Cancelled | UploadError::PortVanished { .. }) {
            return Err(e);
        }
        session.note(format!("leaving programming mode: {e}"));
    }
    ctx.progress(Phase::Done, 100);
    let duration = start.elapsed();
    let bytes_written = job.firmware.len();
    session.note(format!("{bytes_written} bytes written in {:.2} s", duration.as_secs_f64()));
    tracing::info!(port = %job.port.display(), bytes = bytes_written, ms = duration.as_millis() as u64, "stk500v1 upload done");
    Ok(UploadReport { bytes_written, duration, log: session.log })
}

#[cfg(test)]
mod tests;
