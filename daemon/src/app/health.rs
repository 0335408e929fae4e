//! What board health means for the lab: broken boards take no bookings,
//! their bookings move to a healthy board of the same model where one is
//! free, checks run at start and when a board comes back, and admins put
//! boards in maintenance, run checks and read their history (each admin
//! action kept in the store's audit log).
//!
//! The check itself lives with the board (`devices/health.rs`); this module
//! reacts to what it reports.

use std::sync::Arc;

use jiff::civil::Date;
use tokio::sync::broadcast;

use super::{App, AppError, DeviceInfo, DeviceRef, Principal};
use crate::devices::{Board, CheckRecord, Health, HealthEvent, Trigger};
use crate::store::{AuditEntry, MaintenanceRecord, MoveError, SlotKey};

/// The longest maintenance reason kept.
const MAX_REASON_CHARS: usize = 500;
/// Audit entries shown with a board's check history.
const AUDIT_SHOWN: usize = 50;

/// A booking rerod moved off a broken board; its holder is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookingMoved {
    pub email: String,
    pub date: Date,
    pub slot: u16,
    pub from: String,
    pub to: String,
}

/// A board's health, its checks (newest first) and the admin actions on it.
#[derive(Clone, Debug)]
pub struct BoardHealthReport {
    pub device: DeviceInfo,
    pub health: Health,
    pub checks: Vec<CheckRecord>,
    pub audit: Vec<AuditEntry>,
}

impl App {
    /// Brings back the maintenance kept in the store, starts reacting to
    /// health changes, and checks every board that has a check configured.
    pub fn start_health(self: &Arc<Self>) {
        let mut events = self.devices.subscribe_health();
        let app = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => app.on_health_event(event).await,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "health events fell behind; some moves may wait for the next change")
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        self.adopt_boards(self.devices.boards());
    }

    /// Boards rerod starts running (at start, or added by a reload): the
    /// maintenance the store keeps for them, then their first check.
    pub(super) fn adopt_boards(&self, boards: Vec<Arc<Board>>) {
        let maintenance = self.store.maintenance().unwrap_or_else(|error| {
            tracing::error!(%error, "cannot read which boards are in maintenance");
            Vec::new()
        });
        for board in boards {
            if let Some((_, record)) = maintenance.iter().find(|(device, _)| *device == board.id) {
                board.set_maintenance(Some(record.reason.clone()));
            }
            spawn_check(board, Trigger::Start);
        }
    }

    /// Bookings moved off broken boards, as they commit.
    pub fn subscribe_moves(&self) -> broadcast::Receiver<BookingMoved> {
        self.moves.subscribe()
    }

    async fn on_health_event(&self, event: HealthEvent) {
        match event {
            HealthEvent::Changed { device, after, .. } => {
                // Live views show the board's health: today's changes.
                self.changed(&SlotKey { device: device.clone(), date: self.today(), slot: 0 });
                if !after.takes_bookings() {
                    self.move_bookings_off(&device).await;
                }
            }
            HealthEvent::BackOnline { device } => {
                let Some(board) = self.devices.board(&device) else { return };
                // A session in progress keeps its board; the check after it comes soon enough.
                let slot = self.config().lab.calendar.slot_at(self.now());
                let held = slot.is_some_and(|slot| self.holder(&device, &slot).ok().flatten().is_some());
                if held {
                    tracing::info!(%device, "board back online during a session; it is checked when the session ends");
                } else {
                    spawn_check(board, Trigger::Online);
                }
            }
        }
    }

    /// Moves every booking of `device` that has not ended to a board of the
    /// same model that takes bookings, is online and is free in that slot; each move
    /// is one store transaction. Bookings with nowhere to go stay, flagged
    /// by their board's health.
    async fn move_bookings_off(&self, device: &str) {
        let Some(board) = self.devices.board(device) else { return };
        let model = board.config().model.clone();
        let (now, calendar) = (self.now(), self.config().lab.calendar.clone());
        let bookings = match self.store.bookings_from(device, self.today()) {
            Ok(bookings) => bookings,
            Err(error) => return tracing::error!(%device, %error, "cannot read the bookings of a broken board"),
        };
        let mut spares: Vec<Arc<Board>> = self
            .devices
            .boards()
            .into_iter()
            .filter(|b| b.id != device && b.config().model == model && b.health().takes_bookings() && b.is_online())
            .collect();
        // Boards known good first; unknown ones only when no good one is free.
        spares.sort_by_key(|b| b.health() != Health::Good);
        for booking in bookings {
            if calendar.slot(booking.key.date, booking.key.slot.into()).is_ok_and(|slot| slot.is_past(now)) {
                continue;
            }
            let mut moved = false;
            for spare in &spares {
                match self.store.move_booking(booking.key.clone(), spare.id.clone()).await {
                    Ok(after) => {
                        tracing::info!(email = %after.email, from = %device, to = %spare.id, date = %after.key.date, slot = after.key.slot, "booking moved off a broken board");
                        self.changed(&booking.key);
                        self.changed(&after.key);
                        let _ = self.moves.send(BookingMoved {
                            email: after.email,
                            date: after.key.date,
                            slot: after.key.slot,
                            from: device.to_owned(),
                            to: spare.id.clone(),
                        });
                        moved = true;
                        break;
                    }
                    Err(MoveError::Taken(_)) => continue,
                    // Cancelled meanwhile: nothing left to move.
                    Err(MoveError::NotBooked) => {
                        moved = true;
                        break;
                    }
                    Err(MoveError::Store(error)) => {
                        tracing::error!(%device, %error, "could not move a booking off a broken board");
                        break;
                    }
                }
            }
            if !moved {
                tracing::warn!(email = %booking.email, %device, date = %booking.key.date, slot = booking.key.slot, "no healthy board of the same model is free; the booking stays on the broken board, flagged");
            }
        }
    }

    /// Refuses a booking on a board that takes none (failing, maintenance).
    pub(super) fn check_takes_bookings(&self, info: &DeviceInfo) -> Result<(), AppError> {
        let device = info.id.as_str();
        if let Some(remote) = &info.remote {
            // Another host's board: as that host last said.
            let health = match remote.health.as_str() {
                "failing" => "failing",
                "maintenance" => "maintenance",
                _ => return Ok(()),
            };
            let reason = remote.health_reason.clone();
            return Err(AppError::DeviceUnavailable { device: device.to_owned(), health, reason });
        }
        match self.board_health_flag(device) {
            Some(health) => Err(AppError::DeviceUnavailable {
                device: device.to_owned(),
                health: health.as_str(),
                reason: health.reason().map(str::to_owned),
            }),
            None => Ok(()),
        }
    }

    /// The health of board `id` when it takes no bookings, for flagging them.
    pub fn board_health_flag(&self, id: &str) -> Option<Health> {
        self.devices.board(id).map(|b| b.health()).filter(|h| !h.takes_bookings())
    }

    /// Puts a board in maintenance (`Some(reason)`) or takes it out (`None`:
    /// back to `unknown`, and checked at once when it has a check).
    pub async fn set_maintenance(
        &self,
        who: &Principal,
        device: &DeviceRef,
        reason: Option<&str>,
    ) -> Result<(DeviceInfo, Health), AppError> {
        self.require_admin(who)?;
        let (info, board) = self.board(device)?;
        let reason = match reason.map(str::trim) {
            None => None,
            Some("") => return Err(AppError::invalid("reason", "reason must say why the board is out of service")),
            Some(r) if r.chars().count() > MAX_REASON_CHARS => {
                return Err(AppError::invalid("reason", format!("reason is at most {MAX_REASON_CHARS} characters")));
            }
            Some(r) => Some(r.to_owned()),
        };
        if reason.is_none() && !matches!(board.health(), Health::Maintenance { .. }) {
            return Err(AppError::NotInMaintenance(info.id));
        }
        let at_us = self.now().as_microsecond();
        let (action, record) = match &reason {
            Some(reason) => {
                let record = MaintenanceRecord { reason: reason.clone(), set_by: who.email.clone(), set_at_us: at_us };
                ("maintenance_set", Some(record))
            }
            None => ("maintenance_cleared", None),
        };
        let audit = AuditEntry {
            at_us,
            actor: who.email.clone(),
            device: info.id.clone(),
            action: action.to_owned(),
            detail: reason.clone().unwrap_or_default(),
            user: None,
            address: who.address.map(|a| a.to_string()),
        };
        self.store.set_maintenance(info.id.clone(), record, audit).await?;
        tracing::info!(admin = %who.email, device = %info.id, action, reason = reason.as_deref().unwrap_or(""), "board maintenance");
        let cleared = reason.is_none();
        board.set_maintenance(reason);
        if cleared {
            spawn_check(Arc::clone(&board), Trigger::MaintenanceCleared);
        }
        Ok((info, board.health()))
    }

    /// Appends an admin's action that has already taken effect to the audit
    /// log. The action stands whatever happens here, so a failed write is
    /// logged rather than reported as the action's failure.
    pub(super) async fn audit(&self, who: &Principal, device: &str, action: &str, user: Option<&str>, detail: String) {
        let entry = AuditEntry {
            at_us: self.now().as_microsecond(),
            actor: who.email.clone(),
            device: device.to_owned(),
            action: action.to_owned(),
            detail,
            user: user.map(str::to_owned),
            address: who.address.map(|a| a.to_string()),
        };
        if let Err(error) = self.store.audit(entry).await {
            tracing::error!(%error, admin = %who.email, action, "could not write the audit log");
        }
    }

    /// The audit log of every admin action, newest first, at most `limit`.
    pub fn audit_log(&self, who: &Principal, limit: usize) -> Result<Vec<AuditEntry>, AppError> {
        self.require_admin(who)?;
        Ok(self.store.audit_log(None, limit)?)
    }

    /// Runs a board's health check now, for an admin, and answers its record.
    pub async fn check_board(&self, who: &Principal, device: &DeviceRef) -> Result<CheckRecord, AppError> {
        self.require_admin(who)?;
        let (info, board) = self.board(device)?;
        if board.config().health.is_none() {
            return Err(AppError::NoHealthCheck(info.id));
        }
        let audit = AuditEntry {
            at_us: self.now().as_microsecond(),
            actor: who.email.clone(),
            device: info.id.clone(),
            action: "check_requested".to_owned(),
            detail: String::new(),
            user: None,
            address: who.address.map(|a| a.to_string()),
        };
        self.store.audit(audit).await?;
        tracing::info!(admin = %who.email, device = %info.id, "health check requested");
        board.check(Trigger::Admin, Some(who.email.clone())).await.ok_or(AppError::NoHealthCheck(info.id))
    }

    /// A board's health, check history and audit log, for an admin.
    pub fn board_health(&self, who: &Principal, device: &DeviceRef) -> Result<BoardHealthReport, AppError> {
        self.require_admin(who)?;
        let (info, board) = self.board(device)?;
        let audit = self.store.audit_log(Some(&info.id), AUDIT_SHOWN)?;
        Ok(BoardHealthReport { device: info, health: board.health(), checks: board.checks(), audit })
    }
}

/// Checks `board` in the background, if it has a check configured. A board
/// in maintenance is left alone by the automatic checks (an admin may be
/// working on it); an admin's own check, and the one when maintenance is
/// cleared, run whatever its state.
fn spawn_check(board: Arc<Board>, trigger: Trigger) {
    let automatic = matches!(trigger, Trigger::Start | Trigger::Online);
    if board.config().health.is_none() || (automatic && matches!(board.health(), Health::Maintenance { .. })) {
        return;
    }
    // Outside a runtime (unit tests of reloads) there is nothing to run it on.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move { board.check(trigger, None).await });
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ONE_BOARD, lab_at};
    use super::super::{DeviceRef, ErrorKind, Role};
    use super::*;

    #[tokio::test]
    async fn a_board_in_maintenance_takes_no_bookings_until_an_admin_clears_it() {
        let (_dir, _clock, app) = lab_at("2026-11-24T10:30:00Z", ONE_BOARD);
        let admin = Principal { email: "root@lab.example".into(), role: Role::Admin, address: None };
        let ada = Principal { email: "ada@lab.example".into(), role: Role::User, address: None };
        let device = DeviceRef::Id("arm-1".into());
        let kind = |result: Result<(DeviceInfo, Health), AppError>| result.unwrap_err().kind();
        assert_eq!(kind(app.set_maintenance(&ada, &device, Some("mine")).await), ErrorKind::AdminOnly);
        assert_eq!(kind(app.set_maintenance(&admin, &device, Some("  ")).await), ErrorKind::InvalidField);
        assert_eq!(kind(app.set_maintenance(&admin, &device, None).await), ErrorKind::NotInMaintenance);
        assert!(app.store.audit_log(None, 10).unwrap().is_empty(), "refused requests change nothing");

        let (_, health) = app.set_maintenance(&admin, &device, Some("motor")).await.unwrap();
        assert_eq!(health, Health::Maintenance { reason: "motor".into() });
        let info = app.device(Some(&device)).unwrap();
        let date = "2026-11-25".parse().unwrap();
        assert_eq!(app.book(&ada, &info, date, 9).await.unwrap_err().kind(), ErrorKind::DeviceUnavailable);
        assert_eq!(app.store.maintenance().unwrap()[0].1.set_by, "root@lab.example");

        app.set_maintenance(&admin, &device, None).await.unwrap();
        assert_eq!(app.devices.board("arm-1").unwrap().health(), Health::Unknown);
        app.book(&ada, &info, date, 9).await.unwrap();
        let actions: Vec<_> = app.store.audit_log(Some("arm-1"), 10).unwrap().into_iter().map(|e| e.action).collect();
        assert_eq!(actions, ["maintenance_cleared", "maintenance_set"]);
        assert_eq!(
            kind(app.set_maintenance(&admin, &DeviceRef::Id("nope".into()), None).await),
            ErrorKind::DeviceNotFound
        );
        assert_eq!(app.check_board(&admin, &device).await.unwrap_err().kind(), ErrorKind::NoHealthCheck);
    }
}
