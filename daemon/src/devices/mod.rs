//! The device runtime: one [`Board`] per configured device (its port, its
//! uploads, its console events), who may use a board now, and what happens to
//! a board when a session ends.
//!
//! A board's port belongs to its `DevicePort` (devices crate): the console
//! thread reads it, and an upload takes it over through a lease, so the
//! console pauses during an upload and resumes by itself afterwards. Uploads
//! run in their own task: a client that hangs up mid-upload does not leave a
//! half-flashed board behind.
//!
//! Architecture invariant: nothing here knows HTTP, WebSocket or JSON. Front
//! ends subscribe to a board's [`ConsoleEvent`]s and its serial output.
//!
//! `health.rs` holds each board's health and the check that decides it.

mod health;

pub use health::{CheckRecord, CheckStep, HISTORY, Health, HealthEvent, StepKind, Trigger};

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rerod_devices::{
    CancelToken, ConsoleConfig, DevicePort, Firmware, PortError, PortSpec, PortState, Progress, TtyLink, UploadError,
    UploadEvent, UploadJob, UploadReport,
};
use tokio::sync::broadcast;

use crate::config::{Config, DeviceConfig};
use crate::metrics::{Direction, Metrics};

/// How long an upload waits for the lab's own flash (idle firmware) to finish.
const LAB_FLASH_WAIT: Duration = Duration::from_secs(120);

/// Every configured board, in config order.
#[derive(Debug)]
pub struct Devices {
    boards: RwLock<Vec<Arc<Board>>>,
    metrics: Arc<Metrics>,
    health_events: broadcast::Sender<HealthEvent>,
}

/// What a board tells its console viewers besides serial output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsoleEvent {
    Progress(Progress),
    /// An upload finished; `ok` false with the reason otherwise.
    UploadDone {
        ok: bool,
        message: String,
    },
    /// `email`'s session on this board ends at `end`, `minutes_left` from now.
    SessionEnding {
        email: String,
        minutes_left: u16,
        end: jiff::Timestamp,
    },
    /// `email`'s session on this board is over (slot ended, booking cancelled).
    SessionEnded {
        email: String,
        message: String,
    },
    /// Who watches the board's console besides its holder (admins), after
    /// one joined or left.
    Watchers(Vec<String>),
    /// The board left the config (or changed port); its consoles close.
    Removed,
}

/// A console watching a board; dropping it says the watcher left.
#[derive(Debug)]
pub struct Watching {
    board: Arc<Board>,
    who: String,
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut watchers = lock(&self.board.watchers);
        if let Some(at) = watchers.iter().position(|w| *w == self.who) {
            watchers.remove(at);
        }
        let _ = self.board.events.send(ConsoleEvent::Watchers(watchers.clone()));
    }
}

/// On whose behalf an upload runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// An account: the session's holder, or an admin (whose uploads outlive
    /// other people's sessions).
    User { email: String, admin: bool },
    /// The lab itself: idle firmware after a session.
    Lab,
}

/// Why a board did not flash.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("Firmware refused: {0}")]
    Firmware(rerod_devices::FirmwareError),
    #[error("Device {device} is offline: {reason}")]
    Offline { device: String, reason: String },
    #[error("Device {0} is busy: another upload is running on it; try again when it has finished")]
    Busy(String),
    /// What the student reads is in plain words ([`plain_words`]); the
    /// protocol's detail goes to the log and the session record
    /// ([`BoardError::detail`]).
    #[error("Upload to {device} failed: {}", plain_words(error))]
    Failed { device: String, error: UploadError },
    #[error("The upload to {device} was aborted: {reason}; the board was reset")]
    Aborted { device: String, reason: String },
    #[error("Internal error: {0}")]
    Internal(String),
}

impl BoardError {
    /// The whole story, for the log and the session record: a failed
    /// upload's protocol detail (which command, which bytes, how long)
    /// that [`plain_words`] leaves out of what the student reads.
    pub fn detail(&self) -> String {
        match self {
            BoardError::Failed { device, error } => format!("Upload to {device} failed: {error}"),
            other => other.to_string(),
        }
    }
}

/// Why an upload failed, in words for the student at the board: what
/// happened to them and what to do, never the bootloader's protocol. A
/// firmware problem is the student's own to fix and is told as it is.
pub fn plain_words(error: &UploadError) -> String {
    const ASK: &str = "ask an admin to check the board";
    match error {
        UploadError::NoSync { .. } | UploadError::Timeout { .. } | UploadError::Protocol { .. } => {
            format!("the board did not answer; try again, or {ASK}")
        }
        UploadError::VerifyMismatch { .. } => {
            format!("the board did not keep the program (it read back differently); try again, or {ASK}")
        }
        UploadError::WrongSignature { .. } => format!("the board is not the model the lab has it down as; {ASK}"),
        UploadError::PortNotFound { .. } | UploadError::PortOpen { .. } => {
            format!("the board is not connected; try again later, or {ASK}")
        }
        UploadError::PortVanished { .. } => {
            format!("the board went away during the upload (unplugged); try again once it is back online, or {ASK}")
        }
        UploadError::ToolFailed { .. } => format!("the flashing tool failed; try again, or {ASK}"),
        UploadError::ToolNotFound { .. }
        | UploadError::BadOptions(_)
        | UploadError::Reset(_)
        | UploadError::Io { .. }
        | UploadError::Internal(_) => format!("the lab cannot flash this board right now (a setup problem); {ASK}"),
        UploadError::Cancelled => "the upload was cancelled".to_owned(),
        UploadError::TooLarge { .. } | UploadError::Firmware(_) => error.to_string(),
    }
}

/// Why [`Board::upload`] did not flash: the caller's own check refused it
/// once the port was held, or the board failed.
#[derive(Debug)]
pub enum UploadRefused<E> {
    Unauthorized(E),
    Board(BoardError),
}

impl<E> From<BoardError> for UploadRefused<E> {
    fn from(error: BoardError) -> UploadRefused<E> {
        UploadRefused::Board(error)
    }
}

/// One configured board at run time.
#[derive(Debug)]
pub struct Board {
    pub id: String,
    config: RwLock<Arc<DeviceConfig>>,
    port: DevicePort,
    events: broadcast::Sender<ConsoleEvent>,
    /// What consoles wrote to the board, for whoever records sessions.
    input: broadcast::Sender<bytes::Bytes>,
    /// Who watches the console besides the holder, one entry per console.
    watchers: Mutex<Vec<String>>,
    upload: Mutex<Option<Running>>,
    /// Who flashed the program now on the board, until the idle firmware replaces it.
    dirty: Mutex<Option<String>>,
    /// Restores (idle firmware, or a reset) started by a session end and not yet done.
    pending_restores: std::sync::atomic::AtomicUsize,
    restored: tokio::sync::Notify,
    health: health::HealthCell,
    metrics: Arc<Metrics>,
    health_events: broadcast::Sender<HealthEvent>,
}

/// The upload in progress on a board.
#[derive(Debug)]
struct Running {
    owner: Owner,
    cancel: CancelToken,
    /// Why it was aborted, when the session ended under it.
    abort_reason: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn port_spec(d: &DeviceConfig) -> PortSpec {
    match (&d.port, &d.usb) {
        (Some(path), _) => PortSpec::Path(path.clone()),
        (None, Some(usb)) => PortSpec::Usb(rerod_devices::UsbMatch {
            vid: usb.vid,
            pid: usb.pid,
            serial_number: usb.serial_number.clone(),
        }),
        // The config compiler requires one of the two.
        (None, None) => PortSpec::Path("/dev/null/no-port-configured".into()),
    }
}

impl Devices {
    /// Starts one port thread per configured device.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Devices {
        let (health_events, _) = broadcast::channel(256);
        let boards = config.devices.iter().map(|d| Board::new(d.clone(), &metrics, &health_events)).collect();
        Devices { boards: RwLock::new(boards), metrics, health_events }
    }

    /// Changes of every board's health, and boards back online.
    pub fn subscribe_health(&self) -> broadcast::Receiver<HealthEvent> {
        self.health_events.subscribe()
    }

    /// Follows a reloaded config: a board whose port and baud are unchanged
    /// keeps its port (and its consoles); others are started afresh, and
    /// removed ones are closed (their consoles are told). Answers the boards
    /// started afresh and those that just gained a health check: the app
    /// checks them as it does every board at start.
    pub fn apply(&self, config: &Config) -> Vec<Arc<Board>> {
        let mut boards = self.boards.write().unwrap_or_else(|p| p.into_inner());
        let mut next = Vec::with_capacity(config.devices.len());
        let mut fresh = Vec::new();
        for d in &config.devices {
            let kept = boards.iter().find(|b| {
                let old = b.config();
                b.id == d.id && port_spec(&old) == port_spec(d) && old.baud == d.baud
            });
            match kept {
                Some(board) => {
                    let gained_check = board.config().health.is_none() && d.health.is_some();
                    *board.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(d.clone());
                    next.push(Arc::clone(board));
                    if gained_check {
                        fresh.push(Arc::clone(board));
                    }
                }
                None => {
                    let board = Board::new(d.clone(), &self.metrics, &self.health_events);
                    fresh.push(Arc::clone(&board));
                    next.push(board);
                }
            }
        }
        for old in boards.iter() {
            if !next.iter().any(|b| Arc::ptr_eq(b, old)) {
                tracing::info!(device = %old.id, "device removed or its port changed; closing its port");
                old.cancel_upload("the device was removed from the configuration");
                let _ = old.events.send(ConsoleEvent::Removed);
            }
        }
        *boards = next;
        fresh
    }

    pub fn board(&self, id: &str) -> Option<Arc<Board>> {
        self.boards.read().unwrap_or_else(|p| p.into_inner()).iter().find(|b| b.id == id).cloned()
    }

    pub fn boards(&self) -> Vec<Arc<Board>> {
        self.boards.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Ends `email`'s session on device `id`, if it has a board.
    pub fn end_session(&self, id: &str, email: &str, message: String) {
        if let Some(board) = self.board(id) {
            board.end_session(email, message);
        }
    }

    /// Daemon shutdown: aborts running uploads and waits for them to let go
    /// of their ports, then closes every port.
    pub async fn shutdown(&self) {
        for board in self.boards() {
            if board.cancel_upload("the daemon is stopping") {
                // The lease comes back once the aborted upload has closed the port.
                let _ = tokio::time::timeout(Duration::from_secs(5), board.port.lease()).await;
            }
            board.port.shutdown().await;
        }
    }
}

/// Counts the bytes a board sends, once however many consoles watch it.
fn meter_serial_input(port: &DevicePort, metrics: Arc<Metrics>) {
    // Outside a runtime (some unit tests) there is nothing to meter.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let (_, mut output) = port.subscribe();
    runtime.spawn(async move {
        loop {
            match output.recv().await {
                Ok(bytes) => metrics.record_serial_bytes(Direction::In, bytes.len() as u64),
                // Under a flood a few chunks go uncounted rather than slowing the port.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

impl Board {
    fn new(config: DeviceConfig, metrics: &Arc<Metrics>, health_events: &broadcast::Sender<HealthEvent>) -> Arc<Board> {
        let port = DevicePort::spawn(ConsoleConfig::new(port_spec(&config), config.baud));
        meter_serial_input(&port, Arc::clone(metrics));
        let (events, _) = broadcast::channel(256);
        let (input, _) = broadcast::channel(256);
        let board = Arc::new(Board {
            id: config.id.clone(),
            config: RwLock::new(Arc::new(config)),
            port,
            events,
            input,
            watchers: Mutex::new(Vec::new()),
            upload: Mutex::new(None),
            dirty: Mutex::new(None),
            pending_restores: Default::default(),
            restored: tokio::sync::Notify::new(),
            health: Default::default(),
            metrics: Arc::clone(metrics),
            health_events: health_events.clone(),
        });
        health::watch_port(&board);
        board
    }

    pub fn config(&self) -> Arc<DeviceConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn port(&self) -> &DevicePort {
        &self.port
    }

    pub fn is_online(&self) -> bool {
        self.port.current_state().is_online()
    }

    pub fn is_uploading(&self) -> bool {
        lock(&self.upload).is_some()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ConsoleEvent> {
        self.events.subscribe()
    }

    /// Writes a console's input to the board; what was written is also
    /// broadcast to [`Board::subscribe_input`] (never waiting for a listener).
    pub async fn write_input(&self, data: bytes::Bytes) -> Result<(), PortError> {
        self.port.write(data.clone()).await?;
        let _ = self.input.send(data);
        Ok(())
    }

    /// Registers `who` as watching the console until the guard is dropped;
    /// consoles are told who watches now.
    pub fn watch(self: &Arc<Self>, who: &str) -> Watching {
        let mut watchers = lock(&self.watchers);
        watchers.push(who.to_owned());
        let _ = self.events.send(ConsoleEvent::Watchers(watchers.clone()));
        Watching { board: Arc::clone(self), who: who.to_owned() }
    }

    /// Who watches the console now (one entry per console), in the order they came.
    pub fn watchers(&self) -> Vec<String> {
        lock(&self.watchers).clone()
    }

    /// Console input as it is written to the board.
    pub fn subscribe_input(&self) -> broadcast::Receiver<bytes::Bytes> {
        self.input.subscribe()
    }

    /// Flashes `firmware`: size-checked first, then the port is leased from
    /// the console, the device's plugin runs, and the console resumes.
    /// Flashes `firmware` for `owner`. `authorize` says whether the owner
    /// may still use the board; it runs once the port is held, under the lock
    /// [`Board::end_session`] takes, so a session that ends before the upload
    /// starts refuses it, and one that ends later finds it running and aborts
    /// it: an upload never outlives its session, however long compiling or
    /// waiting for the port took.
    pub async fn upload<E>(
        self: &Arc<Self>,
        firmware: Arc<Firmware>,
        owner: Owner,
        authorize: impl FnOnce() -> Result<(), E>,
    ) -> Result<UploadReport, UploadRefused<E>> {
        let config = self.config();
        // Before the port is touched, and before any plugin lays the image out.
        firmware.check_fits(config.flash_limit).map_err(BoardError::Firmware)?;
        if let PortState::Offline { reason } = self.port.current_state() {
            Err(BoardError::Offline { device: self.id.clone(), reason })?;
        }
        let plugin = crate::plugins::lookup(&config.plugin)
            .ok_or_else(|| BoardError::Internal(format!("plugin {:?} is not registered", config.plugin)))?;
        if owner != Owner::Lab {
            // The board is restored after a session before anyone's next
            // upload: the next holder starts from the lab's idle firmware.
            self.restores_done().await;
        }
        let lab_flashing = matches!(lock(&self.upload).as_ref(), Some(r) if r.owner == Owner::Lab);
        let lease = if owner == Owner::Lab || lab_flashing {
            // The lab's own flash is short and the new session's first upload
            // should not fail because of it: wait for it.
            tokio::time::timeout(LAB_FLASH_WAIT, self.port.lease()).await.unwrap_or(Err(PortError::Busy))
        } else {
            self.port.try_lease().await
        };
        let lease = lease.map_err(|e| match e {
            PortError::Busy => BoardError::Busy(self.id.clone()),
            other => BoardError::Offline { device: self.id.clone(), reason: other.to_string() },
        })?;
        let cancel = CancelToken::new();
        {
            let mut running = lock(&self.upload);
            authorize().map_err(UploadRefused::Unauthorized)?;
            *running = Some(Running { owner: owner.clone(), cancel: cancel.clone(), abort_reason: None });
        }
        if let Owner::User { email, .. } = &owner {
            // Even a failed upload may have written part of the flash.
            *lock(&self.dirty) = Some(email.clone());
        }
        let job = UploadJob {
            firmware: Arc::clone(&firmware),
            port: lease.path().to_owned(),
            baud: config.upload_baud,
            reset: config.reset.clone(),
            model: config.model.clone(),
            flash_limit: Some(config.flash_limit),
            options: config.options.clone(),
        };
        let events = self.events.clone();
        let id = self.id.clone();
        let ctx = rerod_devices::UploadContext::new(cancel, move |event| match event {
            // No viewer is fine.
            UploadEvent::Progress(p) => drop(events.send(ConsoleEvent::Progress(p))),
            UploadEvent::Log(line) => tracing::debug!(device = %id, "upload: {line}"),
        });
        let who = match &owner {
            Owner::User { email, .. } => email.clone(),
            Owner::Lab => "(lab)".to_owned(),
        };
        tracing::info!(device = %self.id, email = %who, bytes = firmware.len(), plugin = %config.plugin, "upload started");
        let board = Arc::clone(self);
        // Its own task: the upload finishes (or is aborted) whatever the client does.
        let task = tokio::spawn(async move {
            let result = plugin.upload(job, ctx).await;
            drop(lease);
            let running = lock(&board.upload).take();
            let result = match result {
                Ok(report) => {
                    if owner == Owner::Lab {
                        *lock(&board.dirty) = None;
                    }
                    tracing::info!(device = %board.id, email = %who, bytes = report.bytes_written, duration_ms = report.duration.as_millis() as u64, "upload done");
                    Ok(report)
                }
                Err(UploadError::Cancelled) => {
                    let reason = running.and_then(|r| r.abort_reason).unwrap_or_else(|| "it was cancelled".into());
                    tracing::info!(device = %board.id, email = %who, %reason, "upload aborted");
                    Err(BoardError::Aborted { device: board.id.clone(), reason })
                }
                Err(error) => {
                    tracing::warn!(device = %board.id, email = %who, %error, "upload failed");
                    Err(BoardError::Failed { device: board.id.clone(), error })
                }
            };
            let done = match &result {
                Ok(report) => ConsoleEvent::UploadDone {
                    ok: true,
                    message: format!("{} bytes written in {} ms", report.bytes_written, report.duration.as_millis()),
                },
                Err(e) => ConsoleEvent::UploadDone { ok: false, message: e.to_string() },
            };
            let _ = board.events.send(done);
            result
        });
        let report = task.await.map_err(|e| BoardError::Internal(format!("the upload task failed: {e}")))??;
        Ok(report)
    }

    /// Aborts the running upload, whoever owns it; true if there was one.
    fn cancel_upload(&self, reason: &str) -> bool {
        let mut running = lock(&self.upload);
        match running.as_mut() {
            Some(r) => {
                r.abort_reason = Some(reason.to_owned());
                r.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Tells the consoles that `email`'s session ends soon.
    pub fn warn_session(&self, email: &str, minutes_left: u16, end: jiff::Timestamp) {
        tracing::info!(device = %self.id, %email, minutes_left, "session ending soon");
        // No console open is fine.
        let _ = self.events.send(ConsoleEvent::SessionEnding { email: email.to_owned(), minutes_left, end });
    }

    /// Ends `email`'s session: consoles are told, that user's upload is
    /// aborted, and the board is restored in the background (reset after an
    /// abort; the idle firmware when a user's program is on it).
    pub fn end_session(self: &Arc<Self>, email: &str, message: String) {
        tracing::info!(device = %self.id, %email, reason = %message, "session ended");
        let _ = self.events.send(ConsoleEvent::SessionEnded { email: email.to_owned(), message: message.clone() });
        let aborted = {
            let mut running = lock(&self.upload);
            match running.as_mut() {
                Some(r) if matches!(&r.owner, Owner::User { email: owner, admin: false } if owner == email) => {
                    r.abort_reason = Some(message);
                    r.cancel.cancel();
                    true
                }
                _ => false,
            }
        };
        // What this session's program printed is not the next session's to see.
        self.port.clear_scrollback();
        let dirty = lock(&self.dirty).is_some();
        if aborted || dirty {
            // Counted before the task starts, so no upload can slip in first.
            self.pending_restores.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            let board = Arc::clone(self);
            tokio::spawn(async move {
                Arc::clone(&board).restore(aborted, dirty).await;
                // What the old program printed until the restore took the port.
                board.port.clear_scrollback();
                board.pending_restores.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                board.restored.notify_waiters();
            });
        }
    }

    /// Waits (at most the lab flash's allowance) until no restore is pending.
    async fn restores_done(&self) {
        let pending = || self.pending_restores.load(std::sync::atomic::Ordering::Acquire) > 0;
        let wait = async {
            while pending() {
                let restored = self.restored.notified();
                if !pending() {
                    break;
                }
                restored.await;
            }
        };
        if tokio::time::timeout(LAB_FLASH_WAIT, wait).await.is_err() {
            tracing::warn!(device = %self.id, "the board's restore is taking long; the upload goes ahead");
        }
    }

    /// After a session: the idle firmware if one is configured and a user's
    /// program is on the board (else, on a known board, a blank program),
    /// else a reset if an upload was cut short.
    async fn restore(self: Arc<Self>, aborted: bool, dirty: bool) {
        let config = self.config();
        if config.health.is_some() && (aborted || dirty) {
            // The health check flashes the idle firmware itself, and says
            // whether the board came back from what the session left on it.
            self.check(Trigger::Session, None).await;
            return;
        }
        match &config.idle_firmware {
            Some(idle) if dirty || aborted => {
                tracing::info!(device = %self.id, firmware = %idle.path.display(), "restoring the idle firmware");
                let flashed = self.upload(Arc::clone(&idle.firmware), Owner::Lab, || Ok::<(), BoardError>(())).await;
                if let Err(UploadRefused::Board(error) | UploadRefused::Unauthorized(error)) = flashed {
                    tracing::warn!(device = %self.id, %error, "could not restore the idle firmware; resetting the board");
                    let _ = self.reset_board().await;
                }
            }
            // No idle firmware: the last user's program would go on printing
            // to the next user's console. A known (AVR) board gets the blank
            // program instead; a board of unknown make is only reset.
            None if dirty && rerod_devices::model::lookup(&config.model).is_some() => {
                tracing::info!(device = %self.id, "no idle_firmware: flashing a blank program over the last session's");
                let Ok(blank) = Firmware::from_binary(rerod_devices::model::AVR_BLANK_PROGRAM.to_vec(), 0) else {
                    return;
                };
                let flashed = self.upload(Arc::new(blank), Owner::Lab, || Ok::<(), BoardError>(())).await;
                if let Err(UploadRefused::Board(error) | UploadRefused::Unauthorized(error)) = flashed {
                    tracing::warn!(device = %self.id, error = %error.detail(), "could not flash the blank program; resetting the board");
                    let _ = self.reset_board().await;
                }
            }
            _ if aborted => drop(self.reset_board().await),
            _ => {}
        }
    }

    /// Resets the board with its configured method, holding the port
    /// meanwhile; the result (logged too) is a note, or why it failed.
    pub async fn reset_board(&self) -> Result<Option<String>, String> {
        let lease = match tokio::time::timeout(LAB_FLASH_WAIT, self.port.lease()).await {
            Ok(Ok(lease)) => lease,
            Ok(Err(error)) => {
                tracing::warn!(device = %self.id, %error, "board reset skipped: port unavailable");
                return Err(format!("the port is unavailable: {error}"));
            }
            Err(_) => {
                tracing::warn!(device = %self.id, "board reset skipped: the port stayed busy");
                return Err("the port stayed busy".to_owned());
            }
        };
        let config = self.config();
        let path = lease.path().to_owned();
        let result = tokio::task::spawn_blocking(move || {
            let mut link = TtyLink::open(&path, config.baud).map_err(|e| e.to_string())?;
            config.reset.run(Some(&mut link), &CancelToken::new()).map_err(|e| e.to_string())
        })
        .await;
        drop(lease);
        match result {
            Ok(Ok(note)) => {
                tracing::info!(device = %self.id, note = note.as_deref().unwrap_or(""), "board reset");
                Ok(note)
            }
            Ok(Err(error)) => {
                tracing::warn!(device = %self.id, %error, "board reset failed");
                Err(error)
            }
            Err(error) => {
                tracing::warn!(device = %self.id, %error, "board reset task failed");
                Err(error.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    const ONE_BOARD: &str =
        "[[devices]]\nid = \"arm-1\"\nplugin = \"stk500v1\"\nport = \"/nonexistent/rerod-test-board\"\n";

    #[tokio::test]
    async fn a_reload_keeps_unchanged_boards_and_closes_removed_ones() {
        let env = Env::default();
        let devices = Devices::new(&Config::from_toml(ONE_BOARD, &env).unwrap(), Arc::new(Metrics::new()));
        let before = devices.board("arm-1").unwrap();
        let mut events = before.subscribe();
        let renamed = ONE_BOARD.replace("plugin = \"stk500v1\"", "name = \"Arm\"\nplugin = \"stk500v1\"");
        devices.apply(&Config::from_toml(&renamed, &env).unwrap());
        let after = devices.board("arm-1").unwrap();
        assert!(Arc::ptr_eq(&before, &after));
        assert_eq!(after.config().name, "Arm");
        let moved = ONE_BOARD.replace("rerod-test-board", "rerod-other-board");
        devices.apply(&Config::from_toml(&moved, &env).unwrap());
        assert!(!Arc::ptr_eq(&before, &devices.board("arm-1").unwrap()));
        assert_eq!(events.recv().await.unwrap(), ConsoleEvent::Removed);
    }
}
