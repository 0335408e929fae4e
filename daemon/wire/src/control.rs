//! The control socket's messages: what `rerod user ...` on the host asks the
//! running daemon, one JSON line each way.

use serde::{Deserialize, Serialize};

/// A request from the host's command line.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    /// `rerod user add EMAIL [--admin]`.
    UserAdd { email: String, password: String, admin: bool },
    /// `rerod user passwd EMAIL`.
    UserPasswd { email: String, password: String },
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
}
