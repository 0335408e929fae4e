//! Native STK500v1 uploader: the protocol of Optiboot and the old ATmegaBOOT (avrdude's `-c arduino`).
//!
//! One upload is: reset the board into its bootloader (the job's reset
//! method), sync (`STK_GET_SYNC` until it answers `INSYNC OK`, several reset
//! attempts), read the bootloader version and the signature (checked against
//! the model's), enter programming mode, write every page the firmware
//! touches, read each back and compare, leave programming mode (Optiboot then
//! starts the new program by itself). A step whose reply misses its
//! deadline or comes back out of sync is retried after draining stale input
//! and a fresh GET_SYNC (see [`BootloaderSession::retrying`]).
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

use std::time::{Duration, Instant};

use protocol::{
    CRC_EOP, PARAM_SW_MAJOR, PARAM_SW_MINOR, STK_ENTER_PROGMODE, STK_GET_PARAMETER, STK_GET_SYNC, STK_INSYNC,
    STK_LEAVE_PROGMODE, STK_LOAD_ADDRESS, STK_OK, STK_PROG_PAGE, STK_READ_PAGE, STK_READ_SIGN,
};

use rerod_devices::bootloader::{self, Defaults, Settings};
use rerod_devices::link::{ReadError, SerialLink, drain, read_exact};
use rerod_devices::link_session::{self, BootloaderSession, LinkSession, Protocol, SYNC_RETRY};
use rerod_devices::{
    OptionError, ResetMethod, Signature, UploadContext, UploadError, UploadFuture, UploadJob, UploadReport, Uploader,
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

pub mod protocol;

/// LOAD_ADDRESS takes a 16-bit word address: 128 KiB is all STK500v1 reaches.
const ADDRESS_SPACE: u64 = 0x2_0000;

/// The typical board, for option defaults and messages.
// Optiboot and ATmegaBOOT take a page into a 256-byte buffer; no AVR page is larger.
const DEFAULTS: Defaults =
    Defaults { page_size: 128, chip: "ATmega328P", signature_example: "1e950f", max_page_size: 256 };

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
        link_session::upload_tty::<Stk500v1>(job, ctx)
    }
}

impl Protocol for Stk500v1 {
    type Plan = Plan;

    /// Everything that can be refused is refused here, before the port is touched.
    fn plan(job: &UploadJob) -> Result<Plan, UploadError> {
        let settings = read_settings(&job.options, &job.model).map_err(UploadError::BadOptions)?;
        job.firmware.check_fits(bootloader::flash_limit(job, ADDRESS_SPACE))?;
        let pages = bootloader::pages(&job.firmware, usize::from(settings.page_size));
        Ok(Plan { settings, pages })
    }

    fn run(
        link: &mut dyn SerialLink,
        job: &UploadJob,
        plan: &Plan,
        ctx: &UploadContext,
        start: Instant,
    ) -> Result<UploadReport, UploadError> {
        let mut session =
            Session { io: LinkSession::new(link, job, ctx), reset: &job.reset, sync_window: plan.settings.sync_window };
        session.reset_and_connect(job, &plan.settings, Session::sync)?;
        session.identify(&plan.settings)?;
        session.retrying("ENTER_PROGMODE", |s| s.command(&[STK_ENTER_PROGMODE, CRC_EOP], 0, "ENTER_PROGMODE"))?;
        session.program(&plan.pages)?;
        if plan.settings.verify {
            session.verify(&plan.pages)?;
        }
        let left = session.command(&[STK_LEAVE_PROGMODE, CRC_EOP], 0, "LEAVE_PROGMODE").map(|_| ());
        session.io.finish(job, start, left, NAME)
    }
}

/// Runs a whole upload over an already open link (tests use a fake bootloader).
pub fn upload_over(
    link: &mut dyn SerialLink,
    job: &UploadJob,
    ctx: &UploadContext,
) -> Result<UploadReport, UploadError> {
    link_session::upload_over::<Stk500v1>(link, job, ctx)
}

/// What will be written: the settings and the pages (address → full page).
/// Public only because [`Protocol`] names it; its fields stay private.
#[derive(Debug)]
pub struct Plan {
    settings: Settings,
    pages: Vec<(u32, Vec<u8>)>,
}

/// One upload in progress: STK500v1 commands over the shared link session.
struct Session<'a> {
    io: LinkSession<'a>,
    /// How the board is reset into Optiboot, for a re-sync that finds it gone.
    reset: &'a ResetMethod,
    sync_window: Duration,
}

impl<'a> BootloaderSession<'a> for Session<'a> {
    fn io(&mut self) -> &mut LinkSession<'a> {
        &mut self.io
    }

    fn resync(&mut self, window: Duration) -> Result<bool, UploadError> {
        // Optiboot answers GET_SYNC in programming mode too, and leaves its
        // state (programming mode, nothing else) as it was.
        if self.sync(window)?.is_some() {
            return Ok(true);
        }
        // Optiboot starts the program after a second without a byte (its
        // watchdog), which a stalled host easily gives it. A reset brings it
        // back, and the upload goes on where it was: the pages written stay,
        // every PROG_PAGE erases its own page, and Optiboot needs no
        // ENTER_PROGMODE.
        self.io.note("no answer to the re-sync; resetting the board into its bootloader again".into());
        self.io.reset_board(self.reset)?;
        Ok(self.sync(self.sync_window)?.is_some())
    }

    fn keep_alive(&self) -> Option<(&'static [u8], usize)> {
        // Every byte Optiboot receives resets its watchdog.
        Some((&[STK_GET_SYNC, CRC_EOP], 2))
    }
}

impl Session<'_> {
    /// Reads `INSYNC payload OK` and returns the payload.
    fn reply(&mut self, payload: usize, command: &'static str) -> Result<Vec<u8>, UploadError> {
        let mut buf = vec![0u8; payload + 2];
        // The first byte alone first: a NOSYNC (0x15) reply is one byte long,
        // and waiting for the full length would turn it into a timeout.
        self.io.recv(&mut buf[..1], command)?;
        if buf[0] != STK_INSYNC {
            return Err(UploadError::Protocol { command, got: buf[..1].to_vec() });
        }
        self.io.recv(&mut buf[1..], command)?;
        if buf[payload + 1] != STK_OK {
            return Err(UploadError::Protocol { command, got: buf });
        }
        buf.pop();
        buf.remove(0);
        Ok(buf)
    }

    fn command(&mut self, request: &[u8], payload: usize, name: &'static str) -> Result<Vec<u8>, UploadError> {
        self.io.ctx().check_cancelled()?;
        self.io.send(request)?;
        self.reply(payload, name)
    }

    /// Tries to sync for `window`; `None` when the bootloader never answered.
    fn sync(&mut self, window: Duration) -> Result<Option<String>, UploadError> {
        let end = Instant::now() + window;
        let mut seen: Vec<u8> = Vec::new();
        let mut buf = [0u8; 64];
        while Instant::now() < end {
            self.io.ctx().check_cancelled()?;
            self.io.send(&[STK_GET_SYNC, CRC_EOP])?;
            let attempt_end = (Instant::now() + SYNC_RETRY).min(end);
            while Instant::now() < attempt_end {
                let n = self.io.read_some(&mut buf, attempt_end)?;
                // Anything before INSYNC OK is the old program's output or line noise.
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(2).any(|w| w == [STK_INSYNC, STK_OK]) {
                    if self.confirm_sync()? {
                        return Ok(Some("in sync with the bootloader".into()));
                    }
                    seen.clear();
                    break;
                }
            }
            let keep = seen.len().saturating_sub(1);
            seen.drain(..keep);
        }
        Ok(None)
    }

    /// After a first answer: swallow the answers to earlier sync requests,
    /// then one more request must get exactly `INSYNC OK`.
    fn confirm_sync(&mut self) -> Result<bool, UploadError> {
        drain(self.io.link(), Duration::from_millis(20), Duration::from_millis(300))
            .map_err(|e| self.io.classify("reading", e))?;
        self.io.send(&[STK_GET_SYNC, CRC_EOP])?;
        let mut reply = [0u8; 2];
        let deadline = Instant::now() + self.io.reply_timeout(2);
        let cancel = self.io.ctx().cancel_token();
        match read_exact(self.io.link(), &mut reply, deadline, cancel) {
            Ok(()) => Ok(reply == [STK_INSYNC, STK_OK]),
            Err(ReadError::Cancelled) => Err(UploadError::Cancelled),
            Err(ReadError::Timeout { .. }) => Ok(false),
            Err(ReadError::Io(e)) => Err(self.io.classify("reading", e)),
        }
    }

    fn identify(&mut self, settings: &Settings) -> Result<(), UploadError> {
        let parameter = |session: &mut Self, param: u8, what: &str| {
            session.retrying(what, |s| s.command(&[STK_GET_PARAMETER, param, CRC_EOP], 1, "GET_PARAMETER"))
        };
        let major = parameter(self, PARAM_SW_MAJOR, "GET_PARAMETER (major version)")?[0];
        let minor = parameter(self, PARAM_SW_MINOR, "GET_PARAMETER (minor version)")?[0];
        self.io.note(format!("bootloader version {major}.{minor}"));
        let got = self.retrying("READ_SIGN", |s| s.command(&[STK_READ_SIGN, CRC_EOP], 3, "READ_SIGN"))?;
        let got = Signature([got[0], got[1], got[2]]);
        match settings.signature {
            Some(expected) if expected != got.0 => {
                return Err(UploadError::WrongSignature { expected: Signature(expected), got });
            }
            Some(_) => self.io.note(format!("signature {got} (as expected)")),
            None => self.io.note(format!("signature {got} (not checked: no signature configured for this model)")),
        }
        Ok(())
    }

    fn program(&mut self, pages: &[(u32, Vec<u8>)]) -> Result<(), UploadError> {
        let mut request = Vec::new();
        BootloaderSession::write_pages(self, pages, |session, address, data| {
            request.clear();
            push_load_address(&mut request, address);
            request.extend_from_slice(&[STK_PROG_PAGE, (data.len() >> 8) as u8, data.len() as u8, b'F']);
            request.extend_from_slice(data);
            request.push(CRC_EOP);
            session.io.send(&request)?;
            session.reply(0, "LOAD_ADDRESS")?;
            session.reply(0, "PROG_PAGE").map(|_| ())
        })
    }

    fn verify(&mut self, pages: &[(u32, Vec<u8>)]) -> Result<(), UploadError> {
        let mut request = Vec::new();
        BootloaderSession::verify_pages(self, pages, |session, address, len| {
            request.clear();
            push_load_address(&mut request, address);
            request.extend_from_slice(&[STK_READ_PAGE, (len >> 8) as u8, len as u8, b'F', CRC_EOP]);
            session.io.send(&request)?;
            session.reply(0, "LOAD_ADDRESS")?;
            session.reply(len, "READ_PAGE")
        })
    }
}

fn push_load_address(request: &mut Vec<u8>, byte_address: u32) {
    let word = byte_address / 2;
    request.extend_from_slice(&[STK_LOAD_ADDRESS, word as u8, (word >> 8) as u8, CRC_EOP]);
}

#[cfg(test)]
mod tests;
