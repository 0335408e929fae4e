//! The daemon's side of the wire contract: the types of `rerod_wire` (every
//! HTTP body and WebSocket message, shared with `rero`), re-exported so the
//! daemon names them in one place, and how the domain's values become them.

pub use rerod_wire::*;

use jiff::tz::TimeZone;
use rerod_devices::Phase;

use crate::app::{App, Credentials, DaySlots};
use crate::booking::{self, Slot};
use crate::devices::{CheckRecord, Health};
use crate::records::RecordSummary;
use crate::store::{AuditEntry, Booking};

/// The credentials a request body carries: its token, or else both e-mail and password.
pub fn body_credentials(body: &BodyCredentials) -> Option<Credentials> {
    if let Some(token) = &body.token {
        return Some(Credentials::Token(token.clone()));
    }
    match (&body.email, &body.password) {
        (Some(email), Some(password)) => {
            Some(Credentials::Password { email: email.clone(), password: password.clone() })
        }
        _ => None,
    }
}

/// A device's day as `viewer` sees it (`GET /slots`, `slots_update.data`).
pub fn slots_json(app: &App, day: &DaySlots, viewer: Option<&str>) -> SlotsJson {
    let config = app.config();
    let tz = config.lab.calendar.time_zone();
    let slots = day
        .entries
        .iter()
        .map(|e| SlotJson {
            id: e.slot.id,
            start_time: hh_mm(e.slot.start_time),
            end_time: hh_mm(e.slot.end_time),
            is_booked: e.booking.is_some(),
            booked_by: e.booking.as_ref().filter(|b| app.shows_booker(b, viewer)).map(|b| b.email.clone()),
            booked_at: e.booking.as_ref().map(|b| utc(b.booked_at)),
            start: lab_time(e.slot.start, tz),
            end: lab_time(e.slot.end, tz),
            status: slot_status(e.status),
        })
        .collect();
    SlotsJson {
        slots,
        available_slots: day.available_ids(),
        booked_slots: day.booked_ids(),
        date: day.date.to_string(),
        health: match &day.device.remote {
            Some(remote) => remote.health.clone(),
            None => app.devices.board(&day.device.id).map_or("unknown", |b| b.health().as_str()).to_owned(),
        },
        device: day.device.id.clone(),
    }
}

fn slot_status(status: booking::SlotStatus) -> SlotStatus {
    match status {
        booking::SlotStatus::Available => SlotStatus::Available,
        booking::SlotStatus::Booked => SlotStatus::Booked,
        booking::SlotStatus::Mine => SlotStatus::Mine,
        booking::SlotStatus::Past => SlotStatus::Past,
        booking::SlotStatus::Blocked => SlotStatus::Blocked,
    }
}

/// One entry of `/my-bookings`.
pub fn booking_json(booking: &Booking, slot: &Slot, tz: &TimeZone) -> BookingJson {
    BookingJson {
        id: slot.id,
        date: slot.date.to_string(),
        device: booking.key.device.clone(),
        start_time: hh_mm(slot.start_time),
        end_time: hh_mm(slot.end_time),
        start: lab_time(slot.start, tz),
        end: lab_time(slot.end, tz),
        booked_at: utc(booking.booked_at),
        moved_from: booking.moved_from.clone(),
        board_health: None,
    }
}

/// A board's health as `/health` lists it.
pub fn device_health(id: &str, health: &Health) -> DeviceHealthJson {
    DeviceHealthJson {
        id: id.to_owned(),
        health: health.as_str().to_owned(),
        reason: health.reason().map(str::to_owned),
    }
}

/// An upload's step as the console's `upload_progress` names it.
pub fn upload_phase(phase: Phase) -> UploadPhase {
    match phase {
        Phase::Reset => UploadPhase::Reset,
        Phase::Sync => UploadPhase::Sync,
        Phase::Write => UploadPhase::Write,
        Phase::Verify => UploadPhase::Verify,
        Phase::Done => UploadPhase::Done,
    }
}

pub fn check_json(record: &CheckRecord) -> CheckJson {
    CheckJson {
        started: utc(record.started),
        trigger: record.trigger.as_str().to_owned(),
        requested_by: record.requested_by.clone(),
        ok: record.ok,
        power_cycled: record.power_cycled,
        duration_ms: record.duration.as_millis() as u64,
        health: record.health.as_str().to_owned(),
        steps: record
            .steps
            .iter()
            .map(|s| CheckStepJson {
                step: s.kind.as_str().to_owned(),
                ok: s.ok,
                detail: s.detail.clone(),
                duration_ms: s.duration.as_millis() as u64,
            })
            .collect(),
    }
}

/// An admin action as a board's health report lists it.
pub fn audit_json(entry: &AuditEntry) -> AuditJson {
    AuditJson {
        at: utc(entry.at()),
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        detail: entry.detail.clone(),
    }
}

/// An admin action as `GET /admin/audit` lists it.
pub fn audit_log_json(entry: &AuditEntry) -> AuditLogJson {
    AuditLogJson {
        at: utc(entry.at()),
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        device: (!entry.device.is_empty()).then(|| entry.device.clone()),
        user: entry.user.clone(),
        detail: entry.detail.clone(),
        address: entry.address.clone(),
    }
}

pub fn record_json(record: &RecordSummary) -> RecordJson {
    let meta = &record.meta;
    RecordJson {
        id: record.id.to_string(),
        device: meta.device.clone(),
        date: meta.date.to_string(),
        first_slot: meta.first_slot,
        holder: meta.holder.clone(),
        started_at: utc(meta.started_at()),
        transcript_bytes: record.transcript_bytes,
        uploads: record.n_uploads,
    }
}

/// The export format: users (hashes only when asked) and bookings.
pub fn export(snapshot: &crate::store::Snapshot, with_hashes: bool) -> Export {
    let users = snapshot
        .users
        .iter()
        .map(|u| ExportedUser {
            email: u.email.clone(),
            created_at: utc(u.created_at),
            disabled: u.disabled,
            password_hash: with_hashes.then(|| u.password_hash.as_stored().to_owned()),
        })
        .collect();
    let bookings = snapshot
        .bookings
        .iter()
        .map(|b| ExportedBooking {
            device: b.key.device.clone(),
            date: b.key.date.to_string(),
            slot_id: b.key.slot,
            email: b.email.clone(),
            booked_at: utc(b.booked_at),
        })
        .collect();
    Export { users, bookings }
}
