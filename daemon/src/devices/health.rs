//! Board health: the state each board is in (good, unknown, failing,
//! maintenance), the check that decides it, and the check's escalation.
//!
//! A check resets the board, flashes its idle firmware and waits for the
//! configured pattern on its console. When that fails it cycles the board's
//! power (if the config says how), flashes again and waits again; a board
//! that still fails is `failing`, and one that passes is `good`. Maintenance
//! is an admin's word and only an admin lifts it: checks still run on a
//! board in maintenance (an admin testing a repair) but leave its state be.
//!
//! Architecture invariant: like the rest of `devices`, this knows no
//! bookings and no accounts. It says what changed ([`HealthEvent`]); the app
//! decides what that means for bookings and who is told.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use rerod_devices::{CancelToken, PortState, ResetMethod};
use tokio::sync::broadcast;

use super::{Board, BoardError, Owner, UploadRefused, lock};
use crate::config::HealthCheckConfig;
use crate::metrics::CheckResult;

/// Checks remembered per board (the newest; older ones are dropped).
pub const HISTORY: usize = 32;
/// How long a power-cycled board has to show up again before the next flash.
const POWER_RETURN_WAIT: Duration = Duration::from_secs(15);
/// After power returns, time for the board's USB bridge and bootloader to start.
const POWER_SETTLE: Duration = Duration::from_secs(1);

/// A board's health, as bookings and clients see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Health {
    /// The last check passed.
    Good,
    /// Not checked since rerod started, or no check is configured. Takes bookings.
    #[default]
    Unknown,
    /// The last check failed even after its escalation. Takes no bookings.
    Failing { reason: String },
    /// Set by an admin until they clear it. Takes no bookings.
    Maintenance { reason: String },
}

impl Health {
    pub fn as_str(&self) -> &'static str {
        match self {
            Health::Good => "good",
            Health::Unknown => "unknown",
            Health::Failing { .. } => "failing",
            Health::Maintenance { .. } => "maintenance",
        }
    }

    /// Every state's name, for metrics that show each one.
    pub const NAMES: [&'static str; 4] = ["good", "unknown", "failing", "maintenance"];

    /// Whether new bookings may land on a board in this state.
    pub fn takes_bookings(&self) -> bool {
        matches!(self, Health::Good | Health::Unknown)
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Health::Failing { reason } | Health::Maintenance { reason } => Some(reason),
            Health::Good | Health::Unknown => None,
        }
    }
}

/// What started a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Start,
    Online,
    Session,
    Admin,
    MaintenanceCleared,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Online => "online",
            Trigger::Session => "session",
            Trigger::Admin => "admin",
            Trigger::MaintenanceCleared => "maintenance_cleared",
        }
    }
}

/// One step of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    Reset,
    Flash,
    Expect,
    PowerCycle,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Reset => "reset",
            StepKind::Flash => "flash",
            StepKind::Expect => "expect",
            StepKind::PowerCycle => "power_cycle",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckStep {
    pub kind: StepKind,
    pub ok: bool,
    pub detail: String,
    pub duration: Duration,
}

/// One finished check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckRecord {
    pub started: Timestamp,
    pub trigger: Trigger,
    /// The admin who asked, for [`Trigger::Admin`].
    pub requested_by: Option<String>,
    pub ok: bool,
    pub power_cycled: bool,
    pub steps: Vec<CheckStep>,
    pub duration: Duration,
    /// The board's health once the check was done.
    pub health: Health,
}

/// What the app hears about boards' health.
#[derive(Clone, Debug)]
pub enum HealthEvent {
    /// A board's health changed (`check` is the check that changed it, if one did).
    Changed { device: String, before: Health, after: Health, check: Option<Box<CheckRecord>> },
    /// A board with a health check came back online; the app decides when to check it.
    BackOnline { device: String },
}

/// A board's health bookkeeping.
#[derive(Debug, Default)]
pub(super) struct HealthCell {
    state: std::sync::Mutex<Health>,
    history: std::sync::Mutex<VecDeque<CheckRecord>>,
    /// One check at a time per board; a second waits for the first.
    running: tokio::sync::Mutex<()>,
    /// Set while a check runs: its own power cycle is no "back online".
    checking: AtomicBool,
}

fn step(kind: StepKind, ok: bool, detail: impl Into<String>, since: Instant) -> CheckStep {
    CheckStep { kind, ok, detail: detail.into(), duration: since.elapsed() }
}

impl Board {
    pub fn health(&self) -> Health {
        lock(&self.health.state).clone()
    }

    /// The board's checks, newest first.
    pub fn checks(&self) -> Vec<CheckRecord> {
        lock(&self.health.history).iter().rev().cloned().collect()
    }

    pub fn is_checking(&self) -> bool {
        self.health.checking.load(Ordering::Acquire)
    }

    /// Puts the board in maintenance with `reason`, or (`None`) takes it out,
    /// back to `unknown` until its next check.
    pub fn set_maintenance(&self, reason: Option<String>) {
        let after = match reason {
            Some(reason) => Health::Maintenance { reason },
            None => Health::Unknown,
        };
        self.set_health(after, None);
    }

    fn set_health(&self, after: Health, check: Option<&CheckRecord>) {
        let before = std::mem::replace(&mut *lock(&self.health.state), after.clone());
        if before != after {
            match &after {
                Health::Failing { reason } => {
                    self.metrics.record_board_failure();
                    tracing::error!(device = %self.id, %reason, "board failing its health check; it takes no bookings until it passes again");
                }
                _ => {
                    tracing::info!(device = %self.id, from = before.as_str(), to = after.as_str(), "board health changed")
                }
            }
            let check = check.cloned().map(Box::new);
            // No subscriber (unit tests) is fine.
            let _ = self.health_events.send(HealthEvent::Changed { device: self.id.clone(), before, after, check });
        }
    }

    /// Runs the board's health check, if it has one configured; the record
    /// also goes into its history.
    pub async fn check(self: &Arc<Self>, trigger: Trigger, requested_by: Option<String>) -> Option<CheckRecord> {
        let health = self.config().health.clone()?;
        let _turn = self.health.running.lock().await;
        self.health.checking.store(true, Ordering::Release);
        let (started, clock) = (Timestamp::now(), Instant::now());
        tracing::info!(device = %self.id, trigger = trigger.as_str(), "health check started");
        let mut steps = Vec::new();
        let mut result = self.attempt(&health, &mut steps).await;
        let mut power_cycled = false;
        if result.is_err() {
            power_cycled = self.power_cycle(&mut steps).await;
            result = self.attempt(&health, &mut steps).await;
        }
        self.health.checking.store(false, Ordering::Release);
        self.metrics.record_health_check(if result.is_ok() { CheckResult::Ok } else { CheckResult::Failed });
        let after = match (self.health(), &result) {
            (maintenance @ Health::Maintenance { .. }, _) => maintenance,
            (_, Ok(())) => Health::Good,
            (_, Err(reason)) => Health::Failing { reason: reason.clone() },
        };
        let record = CheckRecord {
            started,
            trigger,
            requested_by,
            ok: result.is_ok(),
            power_cycled,
            steps,
            duration: clock.elapsed(),
            health: after.clone(),
        };
        match &result {
            Ok(()) => tracing::info!(device = %self.id, power_cycled, "health check passed"),
            Err(reason) => tracing::warn!(device = %self.id, %reason, power_cycled, "health check failed"),
        }
        {
            let mut history = lock(&self.health.history);
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(record.clone());
        }
        self.set_health(after, Some(&record));
        Some(record)
    }

    /// Reset, flash the idle firmware, wait for the pattern.
    async fn attempt(self: &Arc<Self>, health: &HealthCheckConfig, steps: &mut Vec<CheckStep>) -> Result<(), String> {
        let config = self.config();
        let Some(idle) = config.idle_firmware.clone() else {
            // The config compiler requires idle_firmware with a health check.
            return Err("no idle_firmware is configured".to_owned());
        };
        let since = Instant::now();
        match self.reset_board().await {
            Ok(note) => steps.push(step(StepKind::Reset, true, note.unwrap_or_else(|| "reset".into()), since)),
            Err(error) => {
                steps.push(step(StepKind::Reset, false, error.clone(), since));
                return Err(format!("the reset failed: {error}"));
            }
        }
        let since = Instant::now();
        // What the board printed before is not the idle firmware's answer.
        self.port.clear_scrollback();
        match self.upload(Arc::clone(&idle.firmware), Owner::Lab, || Ok::<(), BoardError>(())).await {
            Ok(report) => {
                let detail = format!("{} bytes written in {} ms", report.bytes_written, report.duration.as_millis());
                steps.push(step(StepKind::Flash, true, detail, since));
            }
            Err(UploadRefused::Board(error) | UploadRefused::Unauthorized(error)) => {
                // Admins read checks: they get the protocol's detail.
                steps.push(step(StepKind::Flash, false, error.detail(), since));
                return Err(format!("the idle firmware did not flash: {}", error.detail()));
            }
        }
        let since = Instant::now();
        if self.wait_for(&health.expect, health.timeout).await {
            steps.push(step(StepKind::Expect, true, format!("{:?} seen", health.expect), since));
            Ok(())
        } else {
            let why =
                format!("{:?} did not appear on the console within {} s", health.expect, health.timeout.as_secs());
            steps.push(step(StepKind::Expect, false, why.clone(), since));
            Err(why)
        }
    }

    /// Whether `pattern` appears in the board's output within `timeout`
    /// (what it printed since the scrollback was cleared counts).
    async fn wait_for(&self, pattern: &str, timeout: Duration) -> bool {
        let pattern = pattern.as_bytes();
        let (scrollback, mut output) = self.port.subscribe();
        let mut window = scrollback.to_vec();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if window.windows(pattern.len()).any(|w| w == pattern) {
                return true;
            }
            // Only a pattern's length less one byte can straddle two reads.
            let keep = pattern.len() - 1;
            if window.len() > keep {
                window.drain(..window.len() - keep);
            }
            match tokio::time::timeout_at(deadline, output.recv()).await {
                Err(_) | Ok(Err(broadcast::error::RecvError::Closed)) => return false,
                Ok(Ok(bytes)) => window.extend_from_slice(&bytes),
                // A flood outran us: what was skipped cannot be searched.
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => window.clear(),
            }
        }
    }

    /// Cycles the board's power with its configured method and waits for
    /// its port to be back; false when there is no method or it failed.
    async fn power_cycle(&self, steps: &mut Vec<CheckStep>) -> bool {
        let since = Instant::now();
        let Some(power) = self.config().power.clone() else {
            steps.push(step(StepKind::PowerCycle, false, "skipped: no power method is configured", since));
            return false;
        };
        let argv = power.argv();
        tracing::warn!(device = %self.id, command = ?argv, "health check failed; cycling the board's power");
        let ran = tokio::task::spawn_blocking(move || ResetMethod::Command(argv).run(None, &CancelToken::new())).await;
        if let Err(error) = ran.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
            steps.push(step(StepKind::PowerCycle, false, error, since));
            return false;
        }
        let mut state = self.port.state();
        // Only whether it came back is kept: the state's guard must not live across the settle wait.
        let back =
            matches!(tokio::time::timeout(POWER_RETURN_WAIT, state.wait_for(PortState::is_online)).await, Ok(Ok(_)));
        tokio::time::sleep(POWER_SETTLE).await;
        match back {
            true => {
                steps.push(step(StepKind::PowerCycle, true, "power cycled", since));
                true
            }
            _ => {
                let detail =
                    format!("power cycled, but the port did not come back within {} s", POWER_RETURN_WAIT.as_secs());
                steps.push(step(StepKind::PowerCycle, false, detail, since));
                false
            }
        }
    }
}

/// Watches a board's port: when it comes back after being offline, and no
/// check of its own is cycling it, the app hears [`HealthEvent::BackOnline`].
pub(super) fn watch_port(board: &Arc<Board>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let weak = Arc::downgrade(board);
    let mut state = board.port.state();
    runtime.spawn(async move {
        let mut seen_online = state.borrow().is_online();
        let mut offline_since_online = false;
        while state.changed().await.is_ok() {
            let online = state.borrow_and_update().is_online();
            let Some(board) = weak.upgrade() else { return };
            if !online {
                offline_since_online = seen_online;
                continue;
            }
            seen_online = true;
            if offline_since_online && !board.is_checking() && board.config().health.is_some() {
                let _ = board.health_events.send(HealthEvent::BackOnline { device: board.id.clone() });
            }
            offline_since_online = false;
        }
    });
}
