//! The uploader plugin trait and what passes through it: job, progress events, report; typed reads of plugin options.
//!
//! A plugin is a stateless value registered under its [`Uploader::name`]. The
//! daemon checks each device's plugin options when it loads the config
//! ([`Uploader::check_options`]) and, for an upload, builds an [`UploadJob`]
//! and awaits [`Uploader::upload`] with an [`UploadContext`] carrying the
//! progress sink and the cancel token. The errors an upload returns live in
//! `error`, below this module, because `link` and `reset` return them too.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use crate::cancel::CancelToken;
use crate::error::{OptionError, UploadError};
use crate::firmware::Firmware;
use crate::reset::ResetMethod;

/// The future an upload runs as. `'static`, so the daemon can spawn it.
pub type UploadFuture = Pin<Box<dyn Future<Output = Result<UploadReport, UploadError>> + Send + 'static>>;

/// An upload method ("stk500v1", "command", ...).
pub trait Uploader: Send + Sync + fmt::Debug {
    /// The name configs use in `plugin = "..."`.
    fn name(&self) -> &'static str;

    /// Checks a device's plugin options at config load time, so a typo is a
    /// config error and not a failed upload an hour later. Keys are relative
    /// to the options table.
    fn check_options(&self, options: &toml::Table) -> Result<(), Vec<OptionError>>;

    /// Flashes `job.firmware` to the board on `job.port`.
    ///
    /// The caller must own the port for the whole future (see
    /// [`crate::DevicePort::lease`]). To abort, cancel the context's token and
    /// await the future: it resolves with [`UploadError::Cancelled`] once the
    /// port is closed again. Dropping the future also cancels.
    fn upload(&self, job: UploadJob, ctx: UploadContext) -> UploadFuture;
}

/// Everything an uploader needs for one upload. Only config-derived values
/// and the firmware come in here: nothing the user typed ends up in an argv.
#[derive(Debug, Clone)]
pub struct UploadJob {
    pub firmware: Arc<Firmware>,
    /// The resolved serial port path (e.g. `/dev/ttyACM0` or a by-id link).
    pub port: PathBuf,
    /// The bootloader's baud rate (115200 for Optiboot, 57600 for ATmegaBOOT).
    pub baud: u32,
    pub reset: ResetMethod,
    /// The device's `model` from config ("uno", "nano", ...); plugins take
    /// defaults (signature, MCU name) from [`crate::model::lookup`].
    pub model: String,
    /// Refuse images reaching past this many bytes of flash. `None`: the
    /// plugin's own default for the model.
    pub flash_limit: Option<u64>,
    /// The device's plugin options, already accepted by `check_options`.
    pub options: toml::Table,
}

/// The steps of an upload, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Reset,
    Sync,
    Write,
    Verify,
    Done,
}

impl Phase {
    /// The lower-case name, for messages and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Reset => "reset",
            Phase::Sync => "sync",
            Phase::Write => "write",
            Phase::Verify => "verify",
            Phase::Done => "done",
        }
    }

    fn from_index(i: u8) -> Phase {
        match i {
            0 => Phase::Reset,
            1 => Phase::Sync,
            2 => Phase::Write,
            3 => Phase::Verify,
            _ => Phase::Done,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    /// 0..=100 within the phase.
    pub percent: u8,
}

/// What an uploader reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadEvent {
    Progress(Progress),
    /// One line of tool output or protocol notes, for the console and the log.
    Log(String),
}

type Sink = dyn Fn(UploadEvent) + Send + Sync;

/// The narrow context an upload runs in: where events go, and when to stop.
#[derive(Clone)]
pub struct UploadContext {
    sink: Arc<Sink>,
    cancel: CancelToken,
    // Last progress sent (phase << 8 | percent), so repeats are dropped.
    last: Arc<AtomicU16>,
}

impl fmt::Debug for UploadContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadContext").field("cancelled", &self.cancel.is_cancelled()).finish_non_exhaustive()
    }
}

impl UploadContext {
    /// `sink` is called from the uploader's thread; it must not block for long.
    pub fn new(cancel: CancelToken, sink: impl Fn(UploadEvent) + Send + Sync + 'static) -> UploadContext {
        UploadContext { sink: Arc::new(sink), cancel, last: Arc::new(AtomicU16::new(u16::MAX)) }
    }

    /// Reports progress; a repeat of the last value is not sent again.
    pub fn progress(&self, phase: Phase, percent: u8) {
        let percent = percent.min(100);
        let packed = (phase as u16) << 8 | u16::from(percent);
        if self.last.swap(packed, Ordering::Relaxed) != packed {
            (self.sink)(UploadEvent::Progress(Progress { phase, percent }));
        }
    }

    pub fn log(&self, line: impl Into<String>) {
        (self.sink)(UploadEvent::Log(line.into()));
    }

    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }

    pub fn check_cancelled(&self) -> Result<(), UploadError> {
        if self.cancel.is_cancelled() { Err(UploadError::Cancelled) } else { Ok(()) }
    }

    /// The last progress reported, if any.
    pub fn last_progress(&self) -> Option<Progress> {
        let packed = self.last.load(Ordering::Relaxed);
        (packed != u16::MAX).then(|| Progress { phase: Phase::from_index((packed >> 8) as u8), percent: packed as u8 })
    }
}

/// The result of a successful upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadReport {
    /// Firmware bytes written (and verified, where the method verifies).
    pub bytes_written: usize,
    pub duration: Duration,
    /// Tool output or protocol notes, one line each.
    pub log: String,
}

/// Typed reads of a plugin options table; each collects its errors so a
/// config check reports every bad key at once.
#[derive(Debug)]
pub struct Options<'a> {
    table: &'a toml::Table,
    errors: Vec<OptionError>,
}

impl<'a> Options<'a> {
    /// Starts reading `table`; keys not in `known` are errors (typos).
    pub fn new(table: &'a toml::Table, known: &[&str]) -> Options<'a> {
        let errors = table
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .map(|k| OptionError::new(k.clone(), format!("unknown option (known: {})", known.join(", "))))
            .collect();
        Options { table, errors }
    }

    pub fn string(&mut self, key: &str) -> Option<&'a str> {
        match self.table.get(key)? {
            toml::Value::String(s) => Some(s),
            _ => self.fail(key, "must be a string"),
        }
    }

    pub fn bool(&mut self, key: &str) -> Option<bool> {
        match self.table.get(key)? {
            toml::Value::Boolean(b) => Some(*b),
            _ => self.fail(key, "must be true or false"),
        }
    }

    /// An integer in `range`.
    pub fn int(&mut self, key: &str, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
        match self.table.get(key)? {
            toml::Value::Integer(i) if range.contains(i) => Some(*i),
            toml::Value::Integer(_) => {
                self.fail(key, &format!("must be between {} and {}", range.start(), range.end()))
            }
            _ => self.fail(key, "must be an integer"),
        }
    }

    pub fn string_list(&mut self, key: &str) -> Option<Vec<&'a str>> {
        let toml::Value::Array(items) = self.table.get(key)? else {
            return self.fail(key, "must be an array of strings");
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                toml::Value::String(s) => out.push(s.as_str()),
                _ => return self.fail(&format!("{key}[{i}]"), "must be a string"),
            }
        }
        Some(out)
    }

    /// Records an error for `key` (used for checks beyond the type).
    pub fn error(&mut self, key: &str, message: &str) {
        self.errors.push(OptionError::new(key, message));
    }

    fn fail<T>(&mut self, key: &str, message: &str) -> Option<T> {
        self.error(key, message);
        None
    }

    /// All errors found, or Ok.
    pub fn finish(self) -> Result<(), Vec<OptionError>> {
        if self.errors.is_empty() { Ok(()) } else { Err(self.errors) }
    }
}

/// Runs a blocking upload on tokio's blocking pool as an [`UploadFuture`].
///
/// Dropping the future cancels the token, so an abandoned upload stops and
/// closes the port instead of running on unseen.
pub fn spawn_blocking_upload<F>(cancel: CancelToken, upload: F) -> UploadFuture
where
    F: FnOnce() -> Result<UploadReport, UploadError> + Send + 'static,
{
    Box::pin(async move {
        let guard = CancelOnDrop(Some(cancel));
        let result = tokio::task::spawn_blocking(upload).await;
        guard.disarm();
        match result {
            Ok(result) => result,
            Err(e) => Err(UploadError::Internal(format!("the upload thread failed: {e}"))),
        }
    })
}

struct CancelOnDrop(Option<CancelToken>);

impl CancelOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(token) = self.0.take() {
            token.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn repeated_progress_is_sent_once() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let ctx = UploadContext::new(CancelToken::new(), move |e| sink.lock().expect("lock").push(e));
        assert_eq!(ctx.last_progress(), None);
        ctx.progress(Phase::Write, 10);
        ctx.progress(Phase::Write, 10);
        ctx.progress(Phase::Write, 250);
        ctx.log("hello");
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(
            seen,
            vec![
                UploadEvent::Progress(Progress { phase: Phase::Write, percent: 10 }),
                UploadEvent::Progress(Progress { phase: Phase::Write, percent: 100 }),
                UploadEvent::Log("hello".into()),
            ]
        );
        assert_eq!(ctx.last_progress(), Some(Progress { phase: Phase::Write, percent: 100 }));
    }

    #[test]
    fn options_report_every_bad_key() {
        let table: toml::Table =
            toml::from_str("argv = ['a', 1]\ntimeout_secs = 0\nverfy = true\nmcu = 5").expect("valid toml");
        let mut o = Options::new(&table, &["argv", "timeout_secs", "mcu"]);
        assert_eq!(o.string_list("argv"), None);
        assert_eq!(o.int("timeout_secs", 1..=3600), None);
        assert_eq!(o.string("mcu"), None);
        let errors = o.finish().expect_err("three bad keys and a typo");
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["verfy", "argv[1]", "timeout_secs", "mcu"]);
    }

    #[tokio::test]
    async fn dropping_the_future_cancels_the_upload() {
        let cancel = CancelToken::new();
        let seen = cancel.clone();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let fut = spawn_blocking_upload(cancel.clone(), move || {
            let _ = started_tx.send(());
            let cancelled = seen.wait_blocking(Duration::from_secs(60));
            let _ = done_tx.send(cancelled);
            Err(UploadError::Cancelled)
        });
        let task = tokio::spawn(fut);
        tokio::task::spawn_blocking(move || started_rx.recv()).await.expect("join").expect("started");
        task.abort();
        let cancelled = tokio::task::spawn_blocking(move || done_rx.recv()).await.expect("join").expect("done");
        assert!(cancelled, "the blocking upload saw the cancel");
    }
}
