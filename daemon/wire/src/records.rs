//! Session records and the admins' audit log on the wire: `GET /records`,
//! `GET /records/{id}` and `GET /admin/audit`. (A transcript itself is
//! served as the JSON-lines file it is kept as.)

use serde::{Deserialize, Serialize};

/// What an upload was sent as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum UploadMethod {
    /// A compiled image (Intel HEX or binary), flashed as sent.
    Firmware,
    /// Source code, compiled by the daemon before flashing.
    Sketch,
}

impl UploadMethod {
    pub const ALL: [UploadMethod; 2] = [UploadMethod::Firmware, UploadMethod::Sketch];
}

/// How an upload ended: one word for the upload log, the metrics' `result`
/// label and the wire, so the three can never name an outcome differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum UploadResult {
    /// Flashed and verified.
    Ok,
    /// The board or the tool failed (no sync, verify mismatch, tool exit code).
    Failed,
    /// Refused before touching the board: not the slot holder, bad firmware, no compiler.
    Refused,
    /// Cut short because the session ended or the daemon stopped.
    Aborted,
}

impl UploadResult {
    pub const ALL: [UploadResult; 4] =
        [UploadResult::Ok, UploadResult::Failed, UploadResult::Refused, UploadResult::Aborted];

    /// The label, spelt as serde spells the variant (a test holds them together).
    pub fn label(self) -> &'static str {
        match self {
            UploadResult::Ok => "ok",
            UploadResult::Failed => "failed",
            UploadResult::Refused => "refused",
            UploadResult::Aborted => "aborted",
        }
    }
}

/// One session's record as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RecordJson {
    /// `<device>_<date>_<first slot>_<random tag>`: the path segment of its
    /// routes (untagged in records from before tags existed).
    pub id: String,
    pub device: String,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date")))]
    pub date: String,
    pub first_slot: u16,
    pub holder: String,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub started_at: String,
    pub transcript_bytes: u64,
    pub uploads: usize,
}

/// `GET /records`: the caller's records (an admin's: everyone's), newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RecordsResponse {
    pub success: bool,
    pub count: usize,
    pub records: Vec<RecordJson>,
    /// In a lab of several hosts, the hosts whose records could not be
    /// listed (offline, or not answering): their boards' sessions are missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreachable_hosts: Vec<String>,
}

/// One upload of a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UploadLogJson {
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub at: String,
    pub by: String,
    pub sha256: String,
    pub bytes: u64,
    pub method: UploadMethod,
    pub result: UploadResult,
    /// Why it failed or was refused (empty in log lines from before it was kept).
    #[serde(default)]
    pub detail: String,
    pub duration_ms: u64,
}

/// `GET /records/{id}`: a record and its upload log, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RecordResponse {
    pub success: bool,
    pub record: RecordJson,
    pub uploads: Vec<UploadLogJson>,
    /// The board camera's pictures: at each upload, and at the session's end.
    #[serde(default)]
    pub snapshots: Vec<SnapshotJson>,
}

/// One camera picture kept with a session record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SnapshotJson {
    /// `upload-<UTC time>` or `session-end`.
    pub name: String,
    pub bytes: u64,
    /// Where to download it (Bearer, the holder or an admin).
    pub url: String,
}

/// One admin action in `GET /admin/audit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AuditLogJson {
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub at: String,
    pub actor: String,
    pub action: String,
    /// The board acted on, if any.
    pub device: Option<String>,
    /// The account acted on, if any.
    pub user: Option<String>,
    pub detail: String,
    /// The client address the admin acted from (behind trusted proxies), when known.
    pub address: Option<String>,
}

/// `GET /admin/audit?limit=`: admins' actions, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AuditLogResponse {
    pub success: bool,
    pub count: usize,
    pub audit: Vec<AuditLogJson>,
}
