//! The framing-independent half of a serial-bootloader upload (STK500v1,
//! STK500v2): sending and receiving with a reply deadline, cancellation,
//! the upload log, the reset-and-connect loop, the page loops, and the glue
//! from [`Uploader::upload`](crate::Uploader::upload) to a blocking run.
//!
//! Both plugins drive a board the same way and differ mainly in how a message
//! looks on the wire and how the bootloader is first reached (sync versus
//! sign-on); this module holds the former so a fix to timeouts, logging or
//! error mapping reaches both. Framing, command bytes and addressing stay in
//! the plugins.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::bootloader::Settings;
use crate::error::{ResetError, UploadError};
use crate::link::{READ_SLICE, ReadError, SerialLink, TtyLink, classify_io, drain, read_exact};
use crate::reset::ResetMethod;
use crate::upload::{Phase, UploadContext, UploadFuture, UploadJob, UploadReport, spawn_blocking_upload};

/// How long to wait for an answer to one sync or sign-on request before
/// sending another.
pub const SYNC_RETRY: Duration = Duration::from_millis(50);
/// Fixed slack on top of the wire time of a reply (latency, flash write time,
/// and a busy host: a lab host compiling sketches may not run the upload
/// thread, or a USB adapter's driver, for a good fraction of a second).
/// avrdude waits 5 s; a board that really stopped answering is reported
/// within this.
const REPLY_SLACK: Duration = Duration::from_secs(2);
/// How many times one step (a page write, a parameter read) is tried before
/// the upload fails. A busy host can miss one reply deadline or read a
/// stale byte; three tries ride that out, as avrdude does, while a board
/// that really stopped answering still fails within seconds.
pub const STEP_ATTEMPTS: u32 = 3;
/// No retry of a step starts later than this after the step first began, so
/// a failing board ends the upload in bounded time whatever its timeouts
/// (each attempt may take a reply's deadline, a drain and a re-sync).
pub const STEP_DEADLINE: Duration = Duration::from_secs(15);
/// How many retries one whole upload may spend, over all its steps: a
/// board or line that slips on page after page is failing, and the student
/// hears so in seconds rather than after every page has used its attempts.
pub const UPLOAD_RETRIES: u32 = 8;
/// How long one re-sync may try before the step is given up.
const RESYNC_WINDOW: Duration = Duration::from_secs(1);
/// Stale input is dropped until the line has been quiet this long (or for
/// at most `DRAIN_MAX`): a late reply must be gone, whole, before the
/// re-sync, or STK500v1, which has no sequence numbers, would take its
/// tail for the answer to the next request. The quiet time is longer than
/// the slack a reply gets, so a reply still on its way when its deadline
/// passed lands in the drain instead of being cut in half by it.
const DRAIN_QUIET: Duration = REPLY_SLACK.saturating_add(Duration::from_millis(500));
const DRAIN_MAX: Duration = Duration::from_secs(8);
/// How often a drain sends its keep-alive (see [`BootloaderSession::keep_alive`]).
const KEEP_ALIVE_EVERY: Duration = Duration::from_millis(250);

/// One upload in progress over a link: sends, receives, and keeps the log.
pub struct LinkSession<'a> {
    link: &'a mut dyn SerialLink,
    port: &'a Path,
    baud: u32,
    ctx: &'a UploadContext,
    log: String,
    /// What is left of [`UPLOAD_RETRIES`].
    retries_left: u32,
}

impl std::fmt::Debug for LinkSession<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSession").field("port", &self.port).field("baud", &self.baud).finish_non_exhaustive()
    }
}

impl<'a> LinkSession<'a> {
    /// A session for `job` over `link`, which is already open at the job's baud rate.
    pub fn new(link: &'a mut dyn SerialLink, job: &'a UploadJob, ctx: &'a UploadContext) -> LinkSession<'a> {
        LinkSession { link, port: &job.port, baud: job.baud, ctx, log: String::new(), retries_left: UPLOAD_RETRIES }
    }

    /// The link itself, for protocol steps that read in their own way.
    pub fn link(&mut self) -> &mut dyn SerialLink {
        self.link
    }

    /// The job's context: progress sink and cancel token.
    pub fn ctx(&self) -> &'a UploadContext {
        self.ctx
    }

    /// Adds a line to the upload log, the live log and the daemon's debug log.
    pub fn note(&mut self, line: String) {
        tracing::debug!(port = %self.port.display(), "{line}");
        let _ = writeln!(self.log, "{line}");
        self.ctx.log(line);
    }

    /// An I/O error on this port as the error a user can act on (see [`classify_io`]).
    pub fn classify(&self, context: &str, e: std::io::Error) -> UploadError {
        classify_io(self.port, context, e)
    }

    /// Writes `bytes` in one call; a vanished port is [`UploadError::PortVanished`].
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), UploadError> {
        self.link.write_all(bytes).map_err(|e| classify_io(self.port, "writing", e))
    }

    /// Wire time of `n` bytes (10 bits each) plus slack.
    pub fn reply_timeout(&self, n: usize) -> Duration {
        Duration::from_micros(n as u64 * 10_000_000 / u64::from(self.baud.max(1))) + REPLY_SLACK
    }

    /// Fills `buf` within [`reply_timeout`](Self::reply_timeout); a timeout
    /// names `waiting_for` and how much of the reply came.
    pub fn recv(&mut self, buf: &mut [u8], waiting_for: &str) -> Result<(), UploadError> {
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

    /// Resets the board with `reset` (into its bootloader) and drops what
    /// the old program printed.
    pub fn reset_board(&mut self, reset: &ResetMethod) -> Result<(), UploadError> {
        match reset.run(Some(&mut *self.link), self.ctx.cancel_token()) {
            Ok(Some(note)) => self.note(note),
            Ok(None) => {}
            Err(ResetError::Cancelled) => return Err(UploadError::Cancelled),
            Err(e) => return Err(e.into()),
        }
        self.discard_input()
    }

    /// Drops whatever the board sent that nobody read yet (a reply that came
    /// after its deadline, the rest of one that was out of sync); returns
    /// how many bytes were dropped.
    pub fn drain_stale(&mut self) -> Result<usize, UploadError> {
        self.discard_input()?;
        drain(self.link, DRAIN_QUIET, DRAIN_MAX).map_err(|e| classify_io(self.port, "reading", e))
    }

    /// Drops what the OS has buffered from the board so far.
    pub fn discard_input(&mut self) -> Result<(), UploadError> {
        self.link.discard_input().map_err(|e| classify_io(self.port, "flushing", e))
    }

    /// Reads whatever arrives before `until`, waiting at most [`READ_SLICE`]
    /// so the caller's loop checks the clock (and cancellation) often.
    pub fn read_some(&mut self, buf: &mut [u8], until: Instant) -> Result<usize, UploadError> {
        let wait = until.saturating_duration_since(Instant::now()).min(READ_SLICE);
        self.link.read_timeout(buf, wait).map_err(|e| classify_io(self.port, "reading", e))
    }

    /// Ends a successful upload: `left` is the answer to "leave programming
    /// mode", which only a cancel or a vanished port turns into a failure (the
    /// program is already written and verified), then the report for `plugin`.
    pub fn finish(
        mut self,
        job: &UploadJob,
        start: Instant,
        left: Result<(), UploadError>,
        plugin: &str,
    ) -> Result<UploadReport, UploadError> {
        if let Err(e) = left {
            if matches!(e, UploadError::Cancelled | UploadError::PortVanished { .. }) {
                return Err(e);
            }
            self.note(format!("leaving programming mode: {e}"));
        }
        self.ctx.progress(Phase::Done, 100);
        let duration = start.elapsed();
        let bytes_written = job.firmware.len();
        self.note(format!("{bytes_written} bytes written in {:.2} s", duration.as_secs_f64()));
        tracing::info!(port = %job.port.display(), bytes = bytes_written, ms = duration.as_millis() as u64, "{plugin} upload done");
        Ok(UploadReport { bytes_written, duration, log: self.log })
    }
}

/// A plugin's session: its protocol state around a [`LinkSession`]. The
/// provided methods are the steps whose logic does not depend on framing.
pub trait BootloaderSession<'a> {
    /// The shared half of the session.
    fn io(&mut self) -> &mut LinkSession<'a>;

    /// Gets back in step with a bootloader that is still in programming
    /// mode, after stale input was drained: the protocol's sync handshake
    /// (GET_SYNC, SIGN_ON), tried for at most `window`. A protocol whose
    /// bootloader can be reset mid-upload without harm may do so when the
    /// handshake goes unanswered (STK500v1: Optiboot's watchdog may have
    /// started the program). `false` when the bootloader did not answer.
    fn resync(&mut self, window: Duration) -> Result<bool, UploadError>;

    /// A request that changes nothing and that the bootloader answers with
    /// exactly `n` bytes (STK500v1: GET_SYNC, answered INSYNC OK), sent
    /// while stale input is drained: waiting for a quiet line longer than a
    /// reply's slack would otherwise let a bootloader with a watchdog
    /// (Optiboot's is 1 s) leave programming mode. `None`: the protocol
    /// needs none.
    fn keep_alive(&self) -> Option<(&'static [u8], usize)> {
        None
    }

    /// Drops stale input until the line has been quiet for [`DRAIN_QUIET`]
    /// (at most [`DRAIN_MAX`]): quiet but for the answers to the
    /// [`keep_alive`](Self::keep_alive) requests, one every
    /// [`KEEP_ALIVE_EVERY`]. The bootloader answers in order, so once it has
    /// answered only the keep-alives for that long, a late reply is gone
    /// whole. Returns how many bytes were dropped besides those answers.
    fn drain_stale(&mut self) -> Result<usize, UploadError> {
        let Some((request, answer)) = self.keep_alive() else {
            return self.io().drain_stale();
        };
        self.io().discard_input()?;
        let started = Instant::now();
        let mut quiet_since = started;
        // A bootloader that answers nothing at all is gone (Optiboot's
        // watchdog started the program) or hung: nothing late is on its way
        // then either, and waiting out DRAIN_MAX would only delay the re-sync.
        let mut silent_since = started;
        let (mut received, mut sent) = (0, 0);
        let mut buf = [0u8; 512];
        while quiet_since.elapsed() < DRAIN_QUIET
            && silent_since.elapsed() < DRAIN_QUIET
            && started.elapsed() < DRAIN_MAX
        {
            self.io().ctx.check_cancelled()?;
            self.io().send(request)?;
            sent += 1;
            let until = Instant::now() + KEEP_ALIVE_EVERY;
            let mut got = 0;
            while Instant::now() < until {
                got += self.io().read_some(&mut buf, until)?;
            }
            received += got;
            if got != answer {
                quiet_since = Instant::now();
            }
            if got > 0 {
                silent_since = Instant::now();
            }
        }
        Ok(received.saturating_sub(sent * answer))
    }

    /// Runs `step`, named `what` in the log; a missed reply or a lost sync
    /// drains stale input, re-syncs and runs it again, up to
    /// [`STEP_ATTEMPTS`] times, never starting after [`STEP_DEADLINE`], and
    /// no more than [`UPLOAD_RETRIES`] retries in the whole upload.
    /// Every step a plugin retries this way must be safe to repeat: each
    /// sets its own address and rewrites or rereads the same bytes.
    fn retrying<T>(
        &mut self,
        what: &str,
        mut step: impl FnMut(&mut Self) -> Result<T, UploadError>,
    ) -> Result<T, UploadError>
    where
        Self: Sized,
    {
        let deadline = Instant::now() + STEP_DEADLINE;
        let mut attempt = 1;
        loop {
            let err = match step(self) {
                Ok(value) => {
                    if attempt > 1 {
                        self.io().note(format!("{what}: succeeded on attempt {attempt}"));
                    }
                    return Ok(value);
                }
                // Only these mean the conversation slipped; anything else
                // (a cancel, a vanished port, a verify mismatch) would fail again.
                Err(e @ (UploadError::Timeout { .. } | UploadError::Protocol { .. })) => e,
                Err(e) => return Err(e),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if attempt >= STEP_ATTEMPTS || left.is_zero() {
                self.io().note(format!("{what}: giving up after {attempt} attempt(s): {err}"));
                return Err(err);
            }
            if self.io().retries_left == 0 {
                self.io()
                    .note(format!("{what}: giving up, this upload has used all its {UPLOAD_RETRIES} retries: {err}"));
                return Err(err);
            }
            self.io().retries_left -= 1;
            self.io().note(format!("{what}: attempt {attempt} of {STEP_ATTEMPTS} failed ({err}); re-syncing"));
            // A starved board may still be sending the late reply while the
            // first re-sync runs, and garble it: a failed re-sync uses up an
            // attempt and is tried again, while attempts and time remain.
            loop {
                self.io().ctx.check_cancelled()?;
                let dropped = self.drain_stale()?;
                if dropped > 0 {
                    self.io().note(format!("dropped {dropped} stale byte(s) before re-syncing"));
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if self.resync(left.min(RESYNC_WINDOW))? {
                    break;
                }
                attempt += 1;
                if attempt >= STEP_ATTEMPTS || deadline <= Instant::now() {
                    self.io().note(format!("{what}: the bootloader did not answer the re-sync; giving up"));
                    return Err(err);
                }
                self.io().note(format!("{what}: the bootloader did not answer the re-sync; trying again"));
            }
            self.io().note(format!("back in sync with the bootloader; retrying {what}"));
            attempt += 1;
        }
    }

    /// Resets the board into its bootloader and reaches it with `connect`,
    /// up to `settings.reset_attempts` times. `connect` tries for the sync
    /// window and returns how it got in ("in sync with the bootloader") or
    /// `None` when the bootloader never answered.
    fn reset_and_connect(
        &mut self,
        job: &UploadJob,
        settings: &Settings,
        mut connect: impl FnMut(&mut Self, Duration) -> Result<Option<String>, UploadError>,
    ) -> Result<(), UploadError>
    where
        Self: Sized,
    {
        let attempts = settings.reset_attempts;
        self.io().ctx.progress(Phase::Reset, 0);
        for attempt in 1..=attempts {
            let started = Instant::now();
            let this = self.io();
            this.reset_board(&job.reset)?;
            this.ctx.progress(Phase::Sync, ((attempt - 1) * 100 / attempts) as u8);
            if let Some(how) = connect(self, settings.sync_window)? {
                self.io().note(format!("{how} after {} ms (attempt {attempt})", started.elapsed().as_millis()));
                return Ok(());
            }
            self.io().note(format!(
                "no answer from the bootloader within {} ms (attempt {attempt} of {attempts})",
                settings.sync_window.as_millis()
            ));
        }
        Err(UploadError::NoSync { attempts, baud: job.baud })
    }

    /// Writes every page with `write_page`, then logs the total.
    fn write_pages(
        &mut self,
        pages: &[(u32, Vec<u8>)],
        write_page: impl FnMut(&mut Self, u32, &[u8]) -> Result<(), UploadError>,
    ) -> Result<(), UploadError>
    where
        Self: Sized,
    {
        let started = Instant::now();
        self.each_page(pages, Phase::Write, "writing", write_page)?;
        let bytes: usize = pages.iter().map(|(_, d)| d.len()).sum();
        self.io().note(format!("wrote {} pages ({bytes} bytes) in {} ms", pages.len(), started.elapsed().as_millis()));
        Ok(())
    }

    /// Reads every page back with `read_page` (address, length → the bytes)
    /// and compares; the first differing byte is a
    /// [`UploadError::VerifyMismatch`] at its address.
    fn verify_pages(
        &mut self,
        pages: &[(u32, Vec<u8>)],
        mut read_page: impl FnMut(&mut Self, u32, usize) -> Result<Vec<u8>, UploadError>,
    ) -> Result<(), UploadError>
    where
        Self: Sized,
    {
        let started = Instant::now();
        self.each_page(pages, Phase::Verify, "reading back", |session, address, data| {
            let read = read_page(session, address, data.len())?;
            match data.iter().zip(&read).position(|(a, b)| a != b) {
                Some(at) => {
                    Err(UploadError::VerifyMismatch { address: address + at as u32, expected: data[at], got: read[at] })
                }
                None => Ok(()),
            }
        })?;
        self.io().note(format!("verified {} pages in {} ms", pages.len(), started.elapsed().as_millis()));
        Ok(())
    }

    /// Runs `step` on every page in order, checking for cancellation before
    /// each (a page is never left half sent), retrying a page that slipped
    /// (see [`retrying`](Self::retrying); `doing` names it in the log), and
    /// reporting `phase` progress after each.
    fn each_page(
        &mut self,
        pages: &[(u32, Vec<u8>)],
        phase: Phase,
        doing: &str,
        mut step: impl FnMut(&mut Self, u32, &[u8]) -> Result<(), UploadError>,
    ) -> Result<(), UploadError>
    where
        Self: Sized,
    {
        for (i, (address, data)) in pages.iter().enumerate() {
            self.io().ctx.check_cancelled()?;
            self.retrying(&format!("{doing} the page at {address:#06x}"), |session| step(session, *address, data))?;
            self.io().ctx.progress(phase, ((i + 1) * 100 / pages.len()) as u8);
        }
        Ok(())
    }
}

/// The protocol half of a bootloader plugin, for the shared entry glue.
pub trait Protocol {
    /// Everything decided before the port is touched (settings, pages).
    type Plan: Send + 'static;

    /// Refuses what can be refused (bad options, firmware too large) without the board.
    fn plan(job: &UploadJob) -> Result<Self::Plan, UploadError>;

    /// The upload proper over an open link; `start` is when the upload began.
    fn run(
        link: &mut dyn SerialLink,
        job: &UploadJob,
        plan: &Self::Plan,
        ctx: &UploadContext,
        start: Instant,
    ) -> Result<UploadReport, UploadError>;
}

/// [`Uploader::upload`](crate::Uploader::upload) for protocol `P`: plans,
/// then opens the job's port and runs on the blocking pool.
pub fn upload_tty<P: Protocol>(job: UploadJob, ctx: UploadContext) -> UploadFuture {
    spawn_blocking_upload(ctx.cancel_token().clone(), move || {
        let start = Instant::now();
        // Everything that can be refused is refused before the port is touched.
        let plan = P::plan(&job)?;
        ctx.check_cancelled()?;
        let mut link = TtyLink::open(&job.port, job.baud)?;
        P::run(&mut link, &job, &plan, &ctx, start)
    })
}

/// Runs a whole upload of protocol `P` over an already open link (tests use a fake bootloader).
pub fn upload_over<P: Protocol>(
    link: &mut dyn SerialLink,
    job: &UploadJob,
    ctx: &UploadContext,
) -> Result<UploadReport, UploadError> {
    let start = Instant::now();
    let plan = P::plan(job)?;
    ctx.check_cancelled()?;
    P::run(link, job, &plan, ctx, start)
}
