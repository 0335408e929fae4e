//! Session records and the admins' audit log on the wire: `GET /records`,
//! `GET /records/{id}` and `GET /admin/audit`. (A transcript itself is
//! served as the JSON-lines file it is kept as.)

use serde::{Deserialize, Serialize};

use super::utc;
use crate::records::{RecordSummary, UploadEntry};
pub use crate::records::{UploadMethod, UploadResult};
use crate::store::AuditEntry;

/// One session's record as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordJson {
    /// `<device>_<date>_<first slot>_<random tag>`: the path segment of its
    /// routes (untagged in records from before tags existed).
    pub id: String,
    pub device: String,
    pub date: String,
    pub first_slot: u16,
    pub holder: String,
    pub started_at: String,
    pub transcript_bytes: u64,
    pub uploads: usize,
}

impl RecordJson {
    pub fn new(record: &RecordSummary) -> RecordJson {
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
}

/// `GET /records`: the caller's records (an admin's: everyone's), newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordsResponse {
    pub success: bool,
    pub count: usize,
    pub records: Vec<RecordJson>,
}

/// One upload of a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadLogJson {
    pub at: String,
    pub by: String,
    pub sha256: String,
    pub bytes: u64,
    pub method: UploadMethod,
    pub result: UploadResult,
    pub detail: String,
    pub duration_ms: u64,
}

impl UploadLogJson {
    pub fn new(entry: &UploadEntry) -> UploadLogJson {
        UploadLogJson {
            at: entry.at.clone(),
            by: entry.by.clone(),
            sha256: entry.sha256.clone(),
            bytes: entry.bytes,
            method: entry.method,
            result: entry.result,
            detail: entry.detail.clone(),
            duration_ms: entry.duration_ms,
        }
    }
}

/// `GET /records/{id}`: a record and its upload log, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
pub struct SnapshotJson {
    /// `upload-<UTC time>` or `session-end`.
    pub name: String,
    pub bytes: u64,
    /// Where to download it (Bearer, the holder or an admin).
    pub url: String,
}

/// One admin action in `GET /admin/audit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLogJson {
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

impl AuditLogJson {
    pub fn new(entry: &AuditEntry) -> AuditLogJson {
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
}

/// `GET /admin/audit?limit=`: admins' actions, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLogResponse {
    pub success: bool,
    pub count: usize,
    pub audit: Vec<AuditLogJson>,
}
