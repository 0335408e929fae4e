//! Session records on disk: each session's console transcript and upload
//! log, kept in a directory beside the store (`records.path`), with
//! retention by age and total size.
//!
//! Layout: one directory per session, named by its [`SessionId`] (device,
//! date, first slot and a random tag), holding `session.json` (whose session
//! it is: the holder and the booking that made it theirs),
//! `transcript.jsonl` (console traffic, both directions) and `uploads.jsonl`
//! (one line per upload). Directories are 0700 and files 0600: a transcript
//! is whatever a student typed and their program printed.
//!
//! The transcript and the upload log are JSON lines: each line is a whole,
//! timestamped entry, so a file is appended to without reading it, a crash
//! loses at most the last line, bytes that are not UTF-8 fit (as base64),
//! and `jq`/`grep` read it as it is.
//!
//! A record belongs to exactly one booking. A slot that is cancelled and
//! booked again, by the same student or another, starts a new record with a
//! new tag: the calendar names the slot, never the record, so no one finds
//! another holder's session by guessing its id. Records written before tags
//! existed (`<device>_<date>_<slot>`) may hold several holders' sessions;
//! the app shows them to admins only.
//!
//! Architecture invariant: this module knows files and its own line
//! formats only; who may read a record, and when a session begins, is the
//! app's to decide. An id from a request is only ever used after
//! [`SessionId::parse`] accepted it, and its text is rebuilt from the parts,
//! so no request can name a path outside the records directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

pub use crate::metrics::UploadResult;

const SESSION_FILE: &str = "session.json";
const TRANSCRIPT_FILE: &str = "transcript.jsonl";
const UPLOADS_FILE: &str = "uploads.jsonl";
/// Camera pictures are `snapshot-<name>.jpg` beside the transcript, so
/// retention counts and removes them with their record.
const SNAPSHOT_PREFIX: &str = "snapshot-";

/// One session on one device: its device, the date, its first slot and the
/// record's random tag (`None` for a record from before tags existed).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionId {
    pub device: String,
    pub date: Date,
    pub first_slot: u16,
    pub tag: Option<u128>,
}

impl SessionId {
    /// Reads `<device>_<YYYY-MM-DD>_<slot>_<32 hex digits>` (or the untagged
    /// form of older records); anything else (a `/`, `..`, a character a
    /// device id cannot have) is refused.
    pub fn parse(text: &str) -> Option<SessionId> {
        let (rest, tag) = match text.rsplit_once('_') {
            Some((rest, tag)) if tag.len() == 32 => (rest, Some(u128::from_str_radix(tag, 16).ok()?)),
            _ => (text, None),
        };
        let mut parts = rest.rsplitn(3, '_');
        let slot = parts.next()?;
        let date = parts.next()?;
        let device = parts.next()?;
        let device_ok = !device.is_empty()
            && device.len() <= 64
            && device.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let slot_ok = !slot.is_empty() && slot.len() <= 4 && slot.chars().all(|c| c.is_ascii_digit());
        let date_ok = date.len() == 10 && date.chars().all(|c| c.is_ascii_digit() || c == '-');
        if !(device_ok && slot_ok && date_ok) {
            return None;
        }
        let id = SessionId { device: device.to_owned(), date: date.parse().ok()?, first_slot: slot.parse().ok()?, tag };
        // Only the canonical spelling names a record (no `0009` for `9`, no upper-case tag).
        (id.to_string() == text).then_some(id)
    }

    /// The part of the id the calendar gives away: every record of this
    /// device, date and first slot starts with it.
    fn slot_prefix(device: &str, date: Date, first_slot: u16) -> String {
        format!("{device}_{date}_{first_slot}")
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&SessionId::slot_prefix(&self.device, self.date, self.first_slot))?;
        match self.tag {
            Some(tag) => write!(f, "_{tag:032x}"),
            None => Ok(()),
        }
    }
}

/// A timestamp as every line writes it: UTC with microseconds, the API's own format.
pub use rerod_wire::utc;

/// Standard base64 with padding (transcripts and the console's `output_base64`).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Whose session a record is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMeta {
    pub device: String,
    pub date: Date,
    pub first_slot: u16,
    pub holder: String,
    pub started_at_us: i64,
    /// When the holder booked the first slot: with the holder, it tells one
    /// booking of a slot from the next after a cancel. (Absent in records
    /// from before tags existed.)
    #[serde(default)]
    pub booked_at_us: Option<i64>,
}

impl SessionMeta {
    /// Whether `other` is the same session: the same booking of the same slot.
    fn same_session(&self, other: &SessionMeta) -> bool {
        (&self.device, self.date, self.first_slot, &self.holder, self.booked_at_us)
            == (&other.device, other.date, other.first_slot, &other.holder, other.booked_at_us)
    }

    pub fn started_at(&self) -> Timestamp {
        Timestamp::from_microsecond(self.started_at_us).unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

/// Which way console bytes went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the board.
    Out,
    /// To the board, from a console.
    In,
}

/// One transcript line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptLine {
    /// UTC, microseconds.
    pub at: String,
    pub dir: Direction,
    /// The bytes as UTF-8 (U+FFFD where they were not) ...
    pub text: String,
    /// ... and then exactly, in base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    /// On the last line of a transcript that reached `records.max_transcript_kb`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

pub use rerod_wire::UploadMethod;

/// One upload, as its log keeps it: one JSON line of `uploads.jsonl`, the
/// same shape `GET /records/{id}` answers with.
pub use rerod_wire::UploadLogJson as UploadEntry;

/// A record as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSummary {
    pub id: SessionId,
    pub meta: SessionMeta,
    pub transcript_bytes: u64,
    pub n_uploads: usize,
}

/// The records directory.
#[derive(Debug)]
pub struct Records {
    root: PathBuf,
    /// Held while a record is looked for and begun, so two writers of one
    /// session (its recorder and an upload) never begin two records.
    beginning: std::sync::Mutex<()>,
}

fn create_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(path)?;
    // An existing directory keeps its mode otherwise.
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

fn line<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).expect("record lines always serialize");
    bytes.push(b'\n');
    bytes
}

impl Records {
    /// Opens (creating, 0700) the records directory.
    pub fn open(root: &Path) -> io::Result<Records> {
        create_dir(root)?;
        Ok(Records { root: root.to_owned(), beginning: std::sync::Mutex::new(()) })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    fn dir(&self, id: &SessionId) -> PathBuf {
        self.root.join(id.to_string())
    }

    /// The record of `meta`'s session: the one begun before (a restart in
    /// the middle of a session goes on with it), or a new one under a fresh
    /// random tag.
    pub fn begin(&self, meta: &SessionMeta) -> io::Result<SessionId> {
        let _beginning = self.beginning.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(id) = self.find(meta)? {
            return Ok(id);
        }
        let id = SessionId {
            device: meta.device.clone(),
            date: meta.date,
            first_slot: meta.first_slot,
            tag: Some(random_tag()?),
        };
        let dir = self.dir(&id);
        // Not recursive: a tag already taken is an error, never a shared record.
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(dir.join(SESSION_FILE))?;
        file.write_all(&serde_json::to_vec(meta).expect("session metadata always serializes"))?;
        Ok(id)
    }

    /// The record already begun for `meta`'s session, if any.
    pub fn find(&self, meta: &SessionMeta) -> io::Result<Option<SessionId>> {
        let prefix = format!("{}_", SessionId::slot_prefix(&meta.device, meta.date, meta.first_slot));
        for entry in fs::read_dir(&self.root)? {
            let name = entry?.file_name();
            // Untagged records are not any one booking's: no session goes on in one.
            let Some(id) = name.to_str().filter(|n| n.starts_with(&prefix)).and_then(SessionId::parse) else {
                continue;
            };
            if id.tag.is_some() && self.meta(&id)?.is_some_and(|m| m.same_session(meta)) {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// The transcript of a begun session, for appending; `limit` bounds its size.
    pub fn transcript(&self, id: &SessionId, limit: u64) -> io::Result<TranscriptWriter> {
        let path = self.dir(id).join(TRANSCRIPT_FILE);
        let file = append(&path)?;
        let written = file.metadata()?.len();
        // A transcript already cut stays cut when it is opened again.
        let full = written > 0 && ends_truncated(&path)?;
        Ok(TranscriptWriter { file, written, limit, full })
    }

    /// Appends to a begun session's upload log.
    pub fn log_upload(&self, id: &SessionId, entry: &UploadEntry) -> io::Result<()> {
        append(&self.dir(id).join(UPLOADS_FILE))?.write_all(&line(entry))
    }

    /// A session's metadata, or `None` when there is no record of it.
    pub fn meta(&self, id: &SessionId) -> io::Result<Option<SessionMeta>> {
        match fs::read(self.dir(id).join(SESSION_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", id))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A session's upload log, oldest first (unreadable lines are skipped).
    pub fn uploads(&self, id: &SessionId) -> io::Result<Vec<UploadEntry>> {
        match fs::read(self.dir(id).join(UPLOADS_FILE)) {
            Ok(bytes) => Ok(bytes.split(|b| *b == b'\n').filter_map(|l| serde_json::from_slice(l).ok()).collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Where a camera picture of a begun session is written (see [`SnapshotSink`]).
    pub fn snapshot_sink(&self, id: &SessionId) -> SnapshotSink {
        SnapshotSink { dir: self.dir(id) }
    }

    /// A session's camera pictures: (name, bytes), oldest name first.
    pub fn snapshots(&self, id: &SessionId) -> io::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(self.dir(id)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let file = entry.file_name();
            let Some(name) = file.to_str().and_then(|f| f.strip_prefix(SNAPSHOT_PREFIX)?.strip_suffix(".jpg")) else {
                continue;
            };
            out.push((name.to_owned(), entry.metadata()?.len()));
        }
        out.sort();
        Ok(out)
    }

    /// One camera picture of a session, or `None` when it has none of that name.
    pub fn read_snapshot(&self, id: &SessionId, name: &str) -> io::Result<Option<Vec<u8>>> {
        if !valid_snapshot_name(name) {
            return Ok(None);
        }
        match fs::read(self.dir(id).join(format!("{SNAPSHOT_PREFIX}{name}.jpg"))) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A session's transcript file as it is (JSON lines).
    pub fn read_transcript(&self, id: &SessionId) -> io::Result<Vec<u8>> {
        match fs::read(self.dir(id).join(TRANSCRIPT_FILE)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            other => other,
        }
    }

    /// The size of a session's transcript (0 when it has none).
    pub fn transcript_len(&self, id: &SessionId) -> u64 {
        fs::metadata(self.dir(id).join(TRANSCRIPT_FILE)).map_or(0, |m| m.len())
    }

    /// Every record, newest first.
    pub fn list(&self) -> io::Result<Vec<RecordSummary>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            let Some(id) = entry.file_name().to_str().and_then(SessionId::parse) else { continue };
            let Ok(Some(meta)) = self.meta(&id) else { continue };
            let transcript_bytes = self.transcript_len(&id);
            let n_uploads = self.uploads(&id).map_or(0, |u| u.len());
            out.push(RecordSummary { id, meta, transcript_bytes, n_uploads });
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.meta.started_at_us));
        Ok(out)
    }

    /// Deletes records older than `max_age` (by their last change), then the
    /// oldest while all together exceed `max_total_bytes`; `keep` (the
    /// sessions in progress) are never deleted. Answers how many went.
    pub fn enforce_retention(
        &self,
        now: SystemTime,
        max_age: Duration,
        max_total_bytes: u64,
        keep: &[SessionId],
    ) -> io::Result<usize> {
        let mut records = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            let Some(id) = entry.file_name().to_str().and_then(SessionId::parse) else { continue };
            let (mut size, mut changed) = (0u64, SystemTime::UNIX_EPOCH);
            for file in fs::read_dir(entry.path())? {
                let meta = file?.metadata()?;
                size += meta.len();
                changed = changed.max(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
            }
            records.push((changed, size, id));
        }
        records.sort_by_key(|(changed, _, _)| *changed);
        let mut total: u64 = records.iter().map(|(_, size, _)| size).sum();
        let mut removed = 0;
        for (changed, size, id) in records {
            let too_old = now.duration_since(changed).is_ok_and(|age| age > max_age);
            if keep.contains(&id) || !(too_old || total > max_total_bytes) {
                continue;
            }
            fs::remove_dir_all(self.dir(&id))?;
            total -= size;
            removed += 1;
        }
        Ok(removed)
    }
}

/// Writes camera pictures into one session's record; owned, so a task may
/// take it along while it waits for the camera's next frame.
#[derive(Clone, Debug)]
pub struct SnapshotSink {
    dir: PathBuf,
}

impl SnapshotSink {
    /// Writes `jpeg` as the picture `name` (letters, digits and `-`), 0600.
    pub fn save(&self, name: &str, jpeg: &[u8]) -> io::Result<()> {
        if !valid_snapshot_name(name) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad snapshot name {name:?}")));
        }
        let path = self.dir.join(format!("{SNAPSHOT_PREFIX}{name}.jpg"));
        OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?.write_all(jpeg)
    }
}

/// A snapshot's name: 1 to 64 of ASCII letters, digits and `-`; nothing a path could be made of.
fn valid_snapshot_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A fresh random tag for a new record.
fn random_tag() -> io::Result<u128> {
    let random = crate::auth::random_secret()?;
    Ok(u128::from_le_bytes(random[..16].try_into().expect("a generated secret has 32 bytes")))
}

/// Whether the last line of the transcript at `path` is the marker of a cut.
fn ends_truncated(path: &Path) -> io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(path)?;
    let length = file.metadata()?.len();
    // The marker line is short; a line longer than this is not one.
    let tail = length.min(1024);
    file.seek(SeekFrom::Start(length - tail))?;
    let mut bytes = Vec::with_capacity(tail as usize);
    file.read_to_end(&mut bytes)?;
    let last = bytes.strip_suffix(b"\n").unwrap_or(&bytes).rsplit(|b| *b == b'\n').next().unwrap_or_default();
    Ok(serde_json::from_slice::<TranscriptLine>(last).is_ok_and(|line| line.truncated))
}

/// Appends lines to one transcript, up to its size limit.
#[derive(Debug)]
pub struct TranscriptWriter {
    file: File,
    written: u64,
    limit: u64,
    full: bool,
}

impl TranscriptWriter {
    /// Appends `line`, unless the transcript is full: the line that would
    /// pass the limit is replaced by one saying the transcript was cut, and
    /// nothing is written after it.
    pub fn write(&mut self, entry: &TranscriptLine) -> io::Result<()> {
        if self.full {
            return Ok(());
        }
        let mut bytes = line(entry);
        if self.written + bytes.len() as u64 > self.limit {
            self.full = true;
            let marker = TranscriptLine {
                at: entry.at.clone(),
                dir: entry.dir,
                text: "[transcript cut: records.max_transcript_kb reached]".to_owned(),
                base64: None,
                truncated: true,
            };
            bytes = line(&marker);
        }
        self.written += bytes.len() as u64;
        self.file.write_all(&bytes)
    }

    pub fn is_full(&self) -> bool {
        self.full
    }
}

/// The lower-case hex SHA-256 of `data`, as `sha256sum` prints it: the
/// upload log's digest of the firmware, which a student can recompute.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    sha2::Sha256::digest(data).iter().fold(String::with_capacity(64), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

#[cfg(test)]
mod tests;
