//! The wire contract: every JSON body of the HTTP API and every message of
//! both WebSocket protocols, as typed serde structs, shared by the daemon
//! and its clients (`rero`). The seed backend's field names are a contract
//! with existing clients: they appear here verbatim, and rerod's additions
//! sit alongside.
//!
//! `requests` holds what clients send and `decode` how the server reads
//! them, `responses` what HTTP answers,
//! `messages` what the sockets send, `health` board health (admin routes,
//! check records, the webhook's alert), `records` session records and the
//! audit log; the shapes both share (a day's slots, a
//! booking, an error) and the time formats are here.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod control;
pub mod decode;
mod health;
mod messages;
mod records;
mod requests;
mod responses;
#[cfg(feature = "schema")]
pub mod schema;

pub use control::{ControlRequest, ControlResponse};
pub use decode::{DecodeError, DeviceRef};
pub use health::{
    AuditJson, BoardHealthResponse, CheckJson, CheckResponse, CheckStepJson, DeviceHealthJson, HealthAlert,
    MaintenanceResponse,
};
pub use messages::{BookingReply, BookingServerMessage, ConsoleServerMessage, DeviceDescription, UploadPhase};
pub use records::{
    AuditLogJson, AuditLogResponse, RecordJson, RecordResponse, RecordsResponse, SnapshotJson, UploadLogJson,
    UploadMethod, UploadResult,
};
pub use requests::{
    BodyCredentials, BookingClientMessage, ChangePasswordRequest, CompileRequest, ConsoleClientMessage, ConsoleInput,
    EmailPassword, EmailRequest, GetSlots, MaintenanceRequest, MessageError, MyBookingsRequest, Request, SlotMessage,
    SlotRequest, UploadCodeRequest, object_fields, request,
};
pub use responses::*;

use jiff::Timestamp;
use jiff::civil::Time;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

/// A timestamp as the seed wrote them, in UTC with microseconds: `2026-11-24T10:30:00.123456Z`.
pub fn utc(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub detail: String,
    /// Stable, for programs: `slot_unavailable`, `weak_password`, ...
    pub code: String,
    /// The request field at fault (422 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// One slot of a day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SlotJson {
    /// Index of the slot in the day (0..23 for hourly slots).
    pub id: u16,
    #[cfg_attr(feature = "schema", schemars(extend("pattern" = crate::schema::HH_MM)))]
    pub start_time: String,
    #[cfg_attr(feature = "schema", schemars(extend("pattern" = crate::schema::HH_MM)))]
    pub end_time: String,
    pub is_booked: bool,
    /// The booker's e-mail; null when free or hidden by `lab.privacy`.
    pub booked_by: Option<String>,
    /// When it was booked, UTC.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub booked_at: Option<String>,
    /// RFC 3339 in the lab's zone: `2026-11-24T09:00:00+01:00`.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub start: String,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub end: String,
    pub status: SlotStatus,
}

/// How a slot looks to the one who asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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

/// The seed's slot listing (`GET /slots`, `slots_update.data`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SlotsJson {
    pub slots: Vec<SlotJson>,
    pub available_slots: Vec<u16>,
    pub booked_slots: Vec<u16>,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date")))]
    pub date: String,
    /// The device's id.
    pub device: String,
    /// The board's health (`good`, `unknown`, `failing`, `maintenance`), so
    /// clients can grey out a board that takes no bookings.
    #[cfg_attr(feature = "schema", schemars(extend("enum" = crate::schema::HEALTH)))]
    pub health: String,
}

/// One entry of `/my-bookings`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BookingJson {
    /// The slot's index in the day.
    pub id: u16,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date")))]
    pub date: String,
    pub device: String,
    #[cfg_attr(feature = "schema", schemars(extend("pattern" = crate::schema::HH_MM)))]
    pub start_time: String,
    #[cfg_attr(feature = "schema", schemars(extend("pattern" = crate::schema::HH_MM)))]
    pub end_time: String,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub start: String,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub end: String,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub booked_at: String,
    /// The device it was booked on, when rerod moved it off a broken board.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<String>,
    /// Its board's health when that board takes no bookings (`failing`,
    /// `maintenance`) and no healthy board was free to move it to.
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["failing", "maintenance"])))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board_health: Option<String>,
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
