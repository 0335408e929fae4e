//! What the server sends over its two WebSocket protocols, one enum per
//! protocol, tagged by the seed's `type` field.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::SlotsJson;

/// A `/slot-booking` message from the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BookingServerMessage {
    /// A device's day: on connect, on `get_slots`, after every committed
    /// change and when a slot ends.
    SlotsUpdate {
        data: SlotsJson,
        #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
        timestamp: String,
    },
    BookingResponse(BookingReply),
    CancellationResponse(BookingReply),
    /// A booking moved off a broken board to the same slot on a healthy
    /// one; `booked_by` follows the same privacy rule as `slots_update`, so
    /// the holder's client recognises its own booking.
    BookingMoved {
        #[cfg_attr(feature = "schema", schemars(extend("format" = "date")))]
        date: String,
        slot_id: u16,
        from_device: String,
        to_device: String,
        booked_by: Option<String>,
        message: String,
        #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
        timestamp: String,
    },
    /// Sent only to a socket that identified as the holder: their session
    /// on `device` ends at `end` (lab time), `minutes_left` from now.
    SessionEnding {
        device: String,
        minutes_left: u16,
        #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
        end: String,
        message: String,
    },
    /// The answer to `identify`: this socket now gets its account's `session_ending`.
    Identified {
        email: String,
        message: String,
    },
    /// To a socket identified as an account whose tokens just stopped
    /// working (`code`: `account_disabled`, `signed_out` or
    /// `password_changed`); the socket is anonymous from then on.
    SignedOut {
        email: String,
        #[cfg_attr(feature = "schema", schemars(extend("enum" = ["account_disabled", "signed_out", "password_changed"])))]
        code: String,
        message: String,
    },
    Error {
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
    },
}

/// The answer to `book_slot` or `cancel_slot`: `code` on failure, `date`
/// and `device` on success.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BookingReply {
    pub success: bool,
    pub message: String,
    pub slot_id: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// The step an upload is at (`upload_progress.phase`): the board's
/// step while it runs (`reset`, `sync`, `write`, `verify`), then `done` or
/// `failed` with the result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum UploadPhase {
    Reset,
    Sync,
    Write,
    Verify,
    Done,
    Failed,
}

impl UploadPhase {
    pub const ALL: [UploadPhase; 6] = [
        UploadPhase::Reset,
        UploadPhase::Sync,
        UploadPhase::Write,
        UploadPhase::Verify,
        UploadPhase::Done,
        UploadPhase::Failed,
    ];

    /// Whether the upload is over (the message carries its result).
    pub fn is_last(self) -> bool {
        matches!(self, UploadPhase::Done | UploadPhase::Failed)
    }
}

impl fmt::Display for UploadPhase {
    /// The wire word, for people reading progress in a terminal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UploadPhase::Reset => f.write_str("reset"),
            UploadPhase::Sync => f.write_str("sync"),
            UploadPhase::Write => f.write_str("write"),
            UploadPhase::Verify => f.write_str("verify"),
            UploadPhase::Done => f.write_str("done"),
            UploadPhase::Failed => f.write_str("failed"),
        }
    }
}

/// What the console says about its board.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeviceDescription {
    pub model: String,
    pub port: String,
    pub description: String,
}

/// A `/devices/read/{device}` message from the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConsoleServerMessage {
    ConnectionEstablished {
        device_number: usize,
        device: String,
        device_info: DeviceDescription,
        online: bool,
        message: String,
    },
    /// Only the bytes new since the previous message; the first carries the scrollback.
    SerialOutput {
        device_number: usize,
        /// UTF-8 text; bytes that are not UTF-8 show as U+FFFD ...
        output: String,
        #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
        timestamp: String,
        /// ... and then the exact bytes come here too.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "schema", schemars(extend("format" = "byte")))]
        output_base64: Option<String>,
    },
    UploadProgress {
        phase: UploadPhase,
        #[cfg_attr(feature = "schema", schemars(range(max = 100)))]
        percent: u8,
        /// The result, with the last message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// To the holder: the session ends at `end` (lab time), `minutes_left` from now.
    SessionEnding {
        minutes_left: u16,
        #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
        end: String,
        message: String,
    },
    /// To the holder: who watches this console (admins, read-only), after
    /// one joined or left; empty when no one does.
    Watchers {
        watchers: Vec<String>,
        message: String,
    },
    /// The holder's session ended (slot over, booking cancelled, device removed); the socket closes.
    SessionEnded {
        message: String,
    },
    /// The board came back online.
    DeviceStatus {
        online: bool,
        message: String,
    },
    Error {
        code: String,
        message: String,
    },
}
