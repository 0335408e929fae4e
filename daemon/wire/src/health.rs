//! Board health on the wire: the admin routes' requests and answers, a
//! check's record, and the webhook's alert body.

use serde::{Deserialize, Serialize};

/// `POST`/`DELETE /admin/devices/maintenance/{device}`: the board's health after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MaintenanceResponse {
    #[cfg_attr(feature = "schema", schemars(extend("enum" = [true])))]
    pub success: bool,
    pub message: String,
    pub device: String,
    #[cfg_attr(feature = "schema", schemars(extend("enum" = crate::schema::HEALTH)))]
    pub health: String,
    pub reason: Option<String>,
}

/// One step of a check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CheckStepJson {
    /// `reset`, `flash`, `expect` or `power_cycle`.
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["reset", "flash", "expect", "power_cycle"])))]
    pub step: String,
    pub ok: bool,
    pub detail: String,
    pub duration_ms: u64,
}

/// One finished health check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CheckJson {
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub started: String,
    /// `start`, `online`, `session`, `admin` or `maintenance_cleared`.
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["start", "online", "session", "admin", "maintenance_cleared"])))]
    pub trigger: String,
    pub requested_by: Option<String>,
    pub ok: bool,
    pub power_cycled: bool,
    pub duration_ms: u64,
    /// The board's health once the check was done.
    #[cfg_attr(feature = "schema", schemars(extend("enum" = crate::schema::HEALTH)))]
    pub health: String,
    pub steps: Vec<CheckStepJson>,
}

/// `POST /admin/devices/check/{device}`: the check just run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CheckResponse {
    /// Whether the check passed.
    pub success: bool,
    pub message: String,
    pub device: String,
    #[cfg_attr(feature = "schema", schemars(extend("enum" = crate::schema::HEALTH)))]
    pub health: String,
    pub check: CheckJson,
}

/// One admin action on a board, from the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AuditJson {
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub at: String,
    pub actor: String,
    /// `maintenance_set`, `maintenance_cleared` or `check_requested`.
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["maintenance_set", "maintenance_cleared", "check_requested"])))]
    pub action: String,
    pub detail: String,
}

/// `GET /admin/devices/checks/{device}`: health, checks (newest first) and audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BoardHealthResponse {
    #[cfg_attr(feature = "schema", schemars(extend("enum" = [true])))]
    pub success: bool,
    pub device: String,
    #[cfg_attr(feature = "schema", schemars(extend("enum" = crate::schema::HEALTH)))]
    pub health: String,
    pub reason: Option<String>,
    pub checks: Vec<CheckJson>,
    pub audit: Vec<AuditJson>,
}

/// A board's health in `GET /health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeviceHealthJson {
    pub id: String,
    #[cfg_attr(feature = "schema", schemars(extend("enum" = crate::schema::HEALTH)))]
    pub health: String,
    pub reason: Option<String>,
}

/// What the webhook of `[devices.health]` is sent when its board turns `failing`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthAlert {
    /// Always `board_failing`.
    pub event: String,
    pub device: String,
    pub name: String,
    pub model: String,
    pub health: String,
    pub reason: Option<String>,
    pub timestamp: String,
    /// The check that failed.
    pub check: Option<CheckJson>,
}
