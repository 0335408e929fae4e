//! The wire contract: every JSON body of the HTTP API and every message of
//! both WebSocket protocols, as typed serde structs, and how domain values
//! become them. The seed backend's field names are a contract with existing
//! clients: they appear here verbatim, and rerod's additions sit alongside.
//!
//! `requests` holds what clients send, `responses` what HTTP answers,
//! `messages` what the sockets send, `health` board health (admin routes,
//! check records, the webhook's alert), `records` session records and the
//! audit log; the shapes both share (a day's slots, a
//! booking, an error) and the time formats are here.

mod control;
mod health;
mod messages;
mod records;
mod requests;
mod responses;

/// How a request names a board, by number or by id: a field of the requests
/// below, so part of the contract clients (`rero`) build.
pub use crate::app::DeviceRef;
pub use control::{ControlRequest, ControlResponse};
pub use health::{
    AuditJson, BoardHealthResponse, CheckJson, CheckResponse, CheckStepJson, DeviceHealthJson, HealthAlert,
    MaintenanceRequest, MaintenanceResponse,
};
pub use messages::{BookingReply, BookingServerMessage, ConsoleServerMessage, DeviceDescription, UploadPhase};
pub use records::{
    AuditLogJson, AuditLogResponse, RecordJson, RecordResponse, RecordsResponse, SnapshotJson, UploadLogJson,
    UploadMethod, UploadResult,
};
pub use requests::{
    BodyCredentials, BookingClientMessage, ChangePasswordRequest, CompileRequest, ConsoleClientMessage, EmailPassword,
    EmailRequest, FromJson, MessageError, MyBookingsRequest, SlotMessage, SlotRequest, UploadCodeRequest,
};
pub use responses::*;

use jiff::Timestamp;
use jiff::civil::Time;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::app::{App, DaySlots};
use crate::booking::{self, Slot};
use crate::store::Booking;

/// A timestamp as the seed wrote them, in UTC with microseconds: `2026-11-24T10:30:00.123456Z`.
pub fn utc(ts: Timestamp) -> String {
    crate::records::utc(ts)
}

/// An instant in the lab's zone, RFC 3339: `2026-11-24T09:00:00+01:00`.
pub fn lab_time(ts: Timestamp, tz: &TimeZone) -> String {
    ts.to_zoned_datetime(tz.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// A civil time of day as the seed shows slot bounds: `09:00`.
pub fn hh_mm(time: Time) -> String {
    time.strftime("%H:%M").to_string()
}

/// Every error answer: FastAPI's `detail`, rerod's stable `code`, and the
/// request field at fault for 422s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub detail: String,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// One slot of a day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotJson {
    pub id: u16,
    pub start_time: String,
    pub end_time: String,
    pub is_booked: bool,
    pub booked_by: Option<String>,
    pub booked_at: Option<String>,
    pub start: String,
    pub end: String,
    pub status: SlotStatus,
}

/// How a slot looks to the one who asked: [`booking::SlotStatus`] on the
/// wire. The domain type stays free of serde; this is the one place the two
/// meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotStatus {
    Available,
    Booked,
    Mine,
    Past,
    Blocked,
}

impl SlotStatus {
    pub const ALL: [SlotStatus; 5] =
        [SlotStatus::Available, SlotStatus::Booked, SlotStatus::Mine, SlotStatus::Past, SlotStatus::Blocked];
}

impl From<booking::SlotStatus> for SlotStatus {
    fn from(status: booking::SlotStatus) -> SlotStatus {
        match status {
            booking::SlotStatus::Available => SlotStatus::Available,
            booking::SlotStatus::Booked => SlotStatus::Booked,
            booking::SlotStatus::Mine => SlotStatus::Mine,
            booking::SlotStatus::Past => SlotStatus::Past,
            booking::SlotStatus::Blocked => SlotStatus::Blocked,
        }
    }
}

/// The seed's slot listing (`GET /slots`, `slots_update.data`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotsJson {
    pub slots: Vec<SlotJson>,
    pub available_slots: Vec<u16>,
    pub booked_slots: Vec<u16>,
    pub date: String,
    pub device: String,
    /// The board's health (`good`, `unknown`, `failing`, `maintenance`), so
    /// clients can grey out a board that takes no bookings.
    pub health: String,
}

impl SlotsJson {
    pub fn new(app: &App, day: &DaySlots, viewer: Option<&str>) -> SlotsJson {
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
                status: e.status.into(),
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
}

/// One entry of `/my-bookings`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingJson {
    pub id: u16,
    pub date: String,
    pub device: String,
    pub start_time: String,
    pub end_time: String,
    pub start: String,
    pub end: String,
    pub booked_at: String,
    /// The device it was booked on, when rerod moved it off a broken board.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<String>,
    /// Its board's health when that board takes no bookings (`failing`,
    /// `maintenance`) and no healthy board was free to move it to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board_health: Option<String>,
}

impl BookingJson {
    pub fn new(booking: &Booking, slot: &Slot, tz: &TimeZone) -> BookingJson {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_look_like_the_seeds() {
        let ts: Timestamp = "2026-11-24T10:30:00.5Z".parse().unwrap();
        assert_eq!(utc(ts), "2026-11-24T10:30:00.500000Z");
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(lab_time(ts, &tz), "2026-11-24T11:30:00+01:00");
        assert_eq!(hh_mm(Time::midnight()), "00:00");
    }
}
