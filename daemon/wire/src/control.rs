//! The control socket's messages: what `rerod user ...`, `rerod backup` and
//! `rerod export` on the host ask the running daemon, one JSON line each
//! way, the answer's line followed by a payload when it says so.

use serde::{Deserialize, Serialize};

/// A request from the host's command line.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    /// `rerod user add EMAIL [--admin]`.
    UserAdd { email: String, password: String, admin: bool },
    /// `rerod user passwd EMAIL`.
    UserPasswd { email: String, password: String },
    /// `rerod backup`: a consistent copy of the store, as a redb file (the payload).
    Backup,
    /// `rerod export`: users and bookings as JSON (the payload).
    Export { with_hashes: bool },
}

impl std::fmt::Debug for ControlRequest {
    // Passwords never reach a log line, even by accident.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlRequest::UserAdd { email, admin, .. } => {
                f.debug_struct("UserAdd").field("email", email).field("admin", admin).finish_non_exhaustive()
            }
            ControlRequest::UserPasswd { email, .. } => {
                f.debug_struct("UserPasswd").field("email", email).finish_non_exhaustive()
            }
            ControlRequest::Backup => f.write_str("Backup"),
            ControlRequest::Export { with_hashes } => {
                f.debug_struct("Export").field("with_hashes", with_hashes).finish()
            }
        }
    }
}

/// The daemon's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlResponse {
    pub success: bool,
    pub message: String,
    /// The error's code when `success` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// How many bytes of payload follow the answer's line (a backup, an export).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
}
