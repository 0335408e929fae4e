//! Session records as lab operations: which session a moment on a board
//! belongs to, the task per board that writes its console transcript, the
//! upload log, retention, and who may read a record (its holder and admins).
//!
//! Each board's transcript is written by a task of its own, fed by the
//! board's output broadcast and its console-input broadcast: a console never
//! waits for the disk, and a recorder that falls behind a flood loses chunks
//! (and says so in the transcript) rather than slowing the board down.

use std::sync::{Arc, Weak};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::broadcast;

use super::{App, AppError, Principal, Role};
use crate::booking::Slot;
use crate::devices::{Board, ConsoleEvent};
use crate::records::{
    Direction, RecordSummary, SessionId, SessionMeta, TranscriptLine, TranscriptWriter, UploadEntry, UploadMethod,
    UploadResult,
};
use crate::store::Booking;

/// How often boards a reload added are looked for, and retention is checked.
const SUPERVISE_EVERY: Duration = Duration::from_secs(10);
/// How often retention runs (besides at start).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// A record, with what a reader sees of it.
#[derive(Debug)]
pub struct RecordDetail {
    pub summary: RecordSummary,
    pub uploads: Vec<UploadEntry>,
    /// The camera's pictures (at each upload, at the end): name and size.
    pub snapshots: Vec<(String, u64)>,
}

/// What an upload flashed, for its log line.
#[derive(Clone, Debug)]
pub(super) struct UploadNote {
    pub sha256: String,
    pub bytes: u64,
    pub method: UploadMethod,
}

impl App {
    /// The session in progress on `device` at `now`: its holder, first slot
    /// (back-to-back slots of one holder are one session), the booking of
    /// that first slot, and the end of the slot in progress.
    pub(crate) fn session_at(&self, device: &str, now: Timestamp) -> Option<(SessionMeta, Timestamp)> {
        let calendar = self.config().lab.calendar.clone();
        let slot = calendar.slot_at(now)?;
        let mut first: Booking = self.booking_of(device, &slot).ok()??;
        let mut first_slot: Slot = slot.clone();
        // A day's worth of slots at most.
        for _ in 0..(24 * 60 / usize::from(calendar.slot_minutes().max(1))) {
            let Some(before) = first_slot
                .start
                .checked_sub(jiff::SignedDuration::from_nanos(1))
                .ok()
                .and_then(|t| calendar.slot_at(t))
            else {
                break;
            };
            match self.booking_of(device, &before) {
                Ok(Some(booking)) if booking.email == first.email => (first, first_slot) = (booking, before),
                _ => break,
            }
        }
        let meta = SessionMeta {
            device: device.to_owned(),
            date: first_slot.date,
            first_slot: first_slot.id,
            holder: first.email,
            started_at_us: first_slot.start.as_microsecond(),
            booked_at_us: Some(first.booked_at.as_microsecond()),
        };
        Some((meta, slot.end))
    }

    /// Starts the recorders: one per board now and per board a reload adds,
    /// and retention at start and hourly. Runs until the runtime stops.
    pub fn start_records(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let app = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut recording: Vec<Weak<Board>> = Vec::new();
            let mut last_retention: Option<tokio::time::Instant> = None;
            loop {
                let Some(app) = app.upgrade() else { return };
                recording.retain(|b| b.strong_count() > 0);
                for board in app.devices.boards() {
                    if !recording.iter().any(|b| b.upgrade().is_some_and(|b| Arc::ptr_eq(&b, &board))) {
                        recording.push(Arc::downgrade(&board));
                        tokio::spawn(record_board(Arc::downgrade(&app), board));
                    }
                }
                if last_retention.is_none_or(|at| at.elapsed() >= RETENTION_EVERY) {
                    last_retention = Some(tokio::time::Instant::now());
                    // Walking and deleting directories is blocking work.
                    let app = Arc::clone(&app);
                    let _ = tokio::task::spawn_blocking(move || app.enforce_retention()).await;
                }
                drop(app);
                tokio::time::sleep(SUPERVISE_EVERY).await;
            }
        })
    }

    /// Deletes records past `records.max_age_days` or beyond
    /// `records.max_total_mb`, never those of sessions in progress.
    pub fn enforce_retention(&self) {
        let config = self.config();
        let now = self.now();
        let keep: Vec<SessionId> = self
            .devices
            .boards()
            .iter()
            .filter_map(|b| self.session_at(&b.id, now))
            .filter_map(|(meta, _)| self.records.find(&meta).ok().flatten())
            .collect();
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_micros(now.as_microsecond().max(0) as u64);
        match self.records.enforce_retention(now, config.records.max_age, config.records.max_total_bytes, &keep) {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "old session records deleted"),
            Err(error) => {
                tracing::warn!(%error, path = %self.records.path().display(), "session record retention failed")
            }
        }
    }

    /// Logs an upload in the record of the session in progress on `device`
    /// (uploads outside any session, by admins, have no record).
    pub(super) fn log_upload(
        &self,
        device: &str,
        who: &Principal,
        note: &UploadNote,
        result: UploadResult,
        detail: String,
        took: Duration,
    ) {
        let now = self.now();
        let Some((meta, _)) = self.session_at(device, now) else { return };
        let entry = UploadEntry {
            at: crate::records::utc(now),
            by: who.email.clone(),
            sha256: note.sha256.clone(),
            bytes: note.bytes,
            method: note.method,
            result,
            detail,
            duration_ms: took.as_millis() as u64,
        };
        match self.records.begin(&meta).and_then(|id| self.records.log_upload(&id, &entry).map(|()| id)) {
            // What the board did with the new program, as the camera saw it.
            Ok(id) => self.picture_into_record(device, &id, format!("upload-{}", compact_utc(now))),
            Err(error) => tracing::warn!(%error, device, "could not log the upload in the session record"),
        }
    }

    /// The records `who` may read: their own; an admin's, everyone's
    /// (optionally only `device`'s or `user`'s). Untagged records, from
    /// before a record was one booking's, may mix several holders'
    /// sessions: only admins read those.
    pub fn records(
        &self,
        who: &Principal,
        device: Option<&str>,
        user: Option<&str>,
    ) -> Result<Vec<RecordSummary>, AppError> {
        let all =
            self.records.list().map_err(|e| AppError::Internal(format!("cannot list the session records: {e}")))?;
        let user = user.map(str::to_lowercase);
        Ok(all
            .into_iter()
            .filter(|r| match who.role {
                Role::Admin => user.as_deref().is_none_or(|u| r.meta.holder == u),
                Role::User => r.id.tag.is_some() && r.meta.holder == who.email,
            })
            .filter(|r| device.is_none_or(|d| r.meta.device == d))
            .collect())
    }

    /// One record, for its holder or an admin: 404 for an id that names no
    /// record (or is not an id at all), 403 for anyone else's.
    pub fn record(&self, who: &Principal, id: &str) -> Result<(SessionId, RecordDetail), AppError> {
        let unknown = || AppError::RecordNotFound(id.chars().take(100).collect());
        let id = SessionId::parse(id).ok_or_else(unknown)?;
        let internal = |e: std::io::Error| AppError::Internal(format!("cannot read session record {id}: {e}"));
        let meta = self.records.meta(&id).map_err(internal)?.ok_or_else(unknown)?;
        if who.role != Role::Admin && (id.tag.is_none() || meta.holder != who.email) {
            return Err(AppError::NotYourRecord(id.to_string()));
        }
        let uploads = self.records.uploads(&id).map_err(internal)?;
        let snapshots = self.records.snapshots(&id).map_err(internal)?;
        let transcript_bytes = self.records.transcript_len(&id);
        let summary = RecordSummary { id: id.clone(), meta, transcript_bytes, n_uploads: uploads.len() };
        Ok((id, RecordDetail { summary, uploads, snapshots }))
    }

    /// One camera picture of a record, for its holder or an admin.
    pub fn record_snapshot(&self, who: &Principal, id: &str, name: &str) -> Result<(SessionId, Vec<u8>), AppError> {
        let (id, _) = self.record(who, id)?;
        match self.records.read_snapshot(&id, name) {
            Ok(Some(jpeg)) => Ok((id, jpeg)),
            Ok(None) => Err(AppError::NoSnapshot { record: id.to_string(), name: name.chars().take(100).collect() }),
            Err(e) => Err(AppError::Internal(format!("cannot read session record {id}: {e}"))),
        }
    }

    /// A record's transcript (JSON lines), for its holder or an admin.
    pub fn record_transcript(&self, who: &Principal, id: &str) -> Result<(SessionId, Vec<u8>), AppError> {
        let (id, _) = self.record(who, id)?;
        let bytes = self
            .records
            .read_transcript(&id)
            .map_err(|e| AppError::Internal(format!("cannot read session record {id}: {e}")))?;
        Ok((id, bytes))
    }
}

/// `20261124T093000123Z`: a moment as a snapshot's name takes it.
fn compact_utc(at: Timestamp) -> String {
    format!("{}{:03}Z", at.strftime("%Y%m%dT%H%M%S"), at.subsec_millisecond())
}

/// The record of `email`'s session on `device` that just ended: the one the
/// recorder was writing; else, for a slot that just ended, that session's
/// (begun now if nothing was recorded yet); else their newest on that board.
fn ended_record(app: &App, device: &str, email: &str, writing: Option<&SessionId>) -> Option<SessionId> {
    if let Some(id) = writing
        && app.records.meta(id).ok().flatten().is_some_and(|m| m.holder == email)
    {
        return Some(id.clone());
    }
    let just_before = app.now().checked_sub(jiff::SignedDuration::from_secs(1)).ok()?;
    if let Some((meta, _)) = app.session_at(device, just_before)
        && meta.holder == email
    {
        return app.records.begin(&meta).ok();
    }
    let all = app.records.list().ok()?;
    all.into_iter().find(|r| r.meta.device == device && r.meta.holder == email && r.id.tag.is_some()).map(|r| r.id)
}

/// The transcript being written: whose session, and the file.
struct Current {
    id: SessionId,
    writer: TranscriptWriter,
}

/// Which session a board's traffic belongs to, looked up again only when a
/// booking changed or the slot in progress ended: between sessions a board
/// may print without pause, and its output must not cost a store read each.
struct Lookup {
    bookings_generation: u64,
    until: Timestamp,
    current: Option<Current>,
}

impl Lookup {
    fn stale(&self, app: &App, now: Timestamp) -> bool {
        now >= self.until
            || app.bookings_generation.load(std::sync::atomic::Ordering::Acquire) != self.bookings_generation
    }
}

/// Writes one board's console traffic into the record of the session in
/// progress, until the board leaves the config or the app stops.
async fn record_board(app: Weak<App>, board: Arc<Board>) {
    let (_, mut output) = board.port().subscribe();
    let mut input = board.subscribe_input();
    let mut events = board.subscribe();
    let mut lookup: Option<Lookup> = None;
    loop {
        let (dir, bytes) = tokio::select! {
            chunk = output.recv() => match chunk {
                Ok(bytes) => (Direction::Out, batch(bytes.to_vec(), &mut output)),
                Err(broadcast::error::RecvError::Lagged(n)) => (Direction::Out, lost(n)),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            chunk = input.recv() => match chunk {
                Ok(bytes) => (Direction::In, bytes.to_vec()),
                Err(broadcast::error::RecvError::Lagged(n)) => (Direction::In, lost(n)),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            event = events.recv() => {
                match event {
                    Ok(ConsoleEvent::SessionEnded { email, .. }) => {
                        // The board as the session left it, kept with the record.
                        if let Some(app) = app.upgrade() {
                            let writing = lookup.as_ref().and_then(|l| l.current.as_ref()).map(|c| &c.id);
                            if let Some(id) = ended_record(&app, &board.id, &email, writing) {
                                app.picture_into_record(&board.id, &id, "session-end".to_owned());
                            }
                        }
                        // The next chunk looks the session up afresh (none, after a cancel).
                        lookup = None;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => lookup = None,
                    Ok(ConsoleEvent::Removed) | Err(broadcast::error::RecvError::Closed) => return,
                    Ok(_) => {}
                }
                continue;
            }
        };
        let Some(app) = app.upgrade() else { return };
        let now = app.now();
        if lookup.as_ref().is_none_or(|l| l.stale(&app, now)) {
            lookup = Some(look_up(&app, &board.id, now));
        }
        let Some(c) = lookup.as_mut().and_then(|l| l.current.as_mut()) else { continue };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let base64 = std::str::from_utf8(&bytes).is_err().then(|| crate::records::base64(&bytes));
        let line = TranscriptLine { at: crate::records::utc(now), dir, text, base64, truncated: false };
        if let Err(error) = c.writer.write(&line) {
            tracing::warn!(%error, device = %board.id, session = %c.id, "could not write the session transcript");
        }
    }
}

/// The session in progress on `device`, its record opened for appending,
/// and until when that answer holds.
fn look_up(app: &App, device: &str, now: Timestamp) -> Lookup {
    // Read first: a booking committed after this is seen by the next chunk.
    let bookings_generation = app.bookings_generation.load(std::sync::atomic::Ordering::Acquire);
    let config = app.config();
    let slot_end = config.lab.calendar.slot_at(now).map(|slot| slot.end);
    let until = slot_end.unwrap_or_else(|| now.saturating_add(jiff::SignedDuration::from_mins(1)).unwrap_or(now));
    let current = app.session_at(device, now).and_then(|(meta, _)| {
        let opened = app.records.begin(&meta).and_then(|id| {
            let writer = app.records.transcript(&id, config.records.max_transcript_bytes)?;
            Ok(Current { id, writer })
        });
        match opened {
            Ok(current) => Some(current),
            Err(error) => {
                tracing::warn!(%error, device, holder = %meta.holder, "could not open the session record");
                None
            }
        }
    });
    Lookup { bookings_generation, until, current }
}

/// Joins the chunks already waiting to `first`, so a burst of output is
/// one line rather than many (a line holds at most about 64 KiB).
fn batch(mut first: Vec<u8>, more: &mut broadcast::Receiver<bytes::Bytes>) -> Vec<u8> {
    while first.len() < 64 << 10 {
        match more.try_recv() {
            Ok(chunk) => first.extend_from_slice(&chunk),
            Err(broadcast::error::TryRecvError::Lagged(n)) => first.extend(lost(n)),
            Err(_) => break,
        }
    }
    first
}

/// The transcript's note for chunks a recorder could not keep up with.
fn lost(n: u64) -> Vec<u8> {
    format!("[{n} chunks were not recorded: the recorder fell behind]").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::testing::{LOCALHOST, ONE_BOARD, lab_at};
    use crate::app::{DeviceRef, ErrorKind};

    fn user(email: &str) -> Principal {
        Principal { email: email.into(), role: Role::User, address: None }
    }

    #[tokio::test]
    async fn back_to_back_slots_are_one_session_named_by_the_first() {
        let (_dir, clock, app) = lab_at("2026-11-24T10:30:00Z", ONE_BOARD);
        let (device, _) = app.board(&DeviceRef::Number(0)).unwrap();
        let date = jiff::civil::date(2026, 11, 24);
        app.register("a@x.org", "plum-orbit-cactus-41", LOCALHOST).await.unwrap();
        for slot in [10, 11] {
            app.book(&user("a@x.org"), &device, date, slot).await.unwrap();
        }
        let (meta, until) = app.session_at("arm-1", app.now()).unwrap();
        assert_eq!((meta.holder.as_str(), meta.first_slot), ("a@x.org", 10));
        assert_eq!(until, "2026-11-24T11:00:00Z".parse().unwrap());
        clock.set("2026-11-24T11:59:00Z".parse().unwrap());
        assert_eq!(app.session_at("arm-1", app.now()).unwrap().0.first_slot, 10);
        clock.set("2026-11-24T12:00:00Z".parse().unwrap());
        assert!(app.session_at("arm-1", app.now()).is_none());
    }

    #[tokio::test]
    async fn a_record_is_its_holders_and_the_admins_only() {
        let (_dir, _clock, app) = lab_at("2026-11-24T10:30:00Z", ONE_BOARD);
        let meta = SessionMeta {
            device: "arm-1".into(),
            date: jiff::civil::date(2026, 11, 24),
            first_slot: 10,
            holder: "a@x.org".into(),
            started_at_us: 0,
            booked_at_us: Some(0),
        };
        let id = app.records.begin(&meta).unwrap().to_string();
        let admin = Principal { email: "admin@x.org".into(), role: Role::Admin, address: None };
        assert_eq!(app.record(&user("a@x.org"), &id).unwrap().1.summary.meta, meta);
        assert!(app.record(&admin, &id).is_ok());
        assert_eq!(app.record(&user("b@x.org"), &id).unwrap_err().kind(), ErrorKind::NotYourRecord);
        assert_eq!(app.record_transcript(&user("b@x.org"), &id).unwrap_err().kind(), ErrorKind::NotYourRecord);
        for unknown in ["arm-1_2026-11-24_10", "arm-1_2026-11-24_11", "../../etc/passwd", "arm-1_2026-11-24_10/..", ""]
        {
            assert_eq!(app.record(&admin, unknown).unwrap_err().kind(), ErrorKind::RecordNotFound, "{unknown:?}");
        }
        assert_eq!(app.records(&user("a@x.org"), None, None).unwrap().len(), 1);
        assert!(app.records(&user("b@x.org"), None, None).unwrap().is_empty());
        assert_eq!(app.records(&admin, Some("arm-1"), Some("A@x.org")).unwrap().len(), 1);
        assert!(app.records(&admin, Some("arm-2"), None).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_record_from_before_tags_is_for_admins_only() {
        let (_dir, _clock, app) = lab_at("2026-11-24T10:30:00Z", ONE_BOARD);
        let legacy = app.records.path().join("arm-1_2026-11-24_10");
        std::fs::create_dir(&legacy).unwrap();
        let meta = r#"{"device":"arm-1","date":"2026-11-24","first_slot":10,"holder":"a@x.org","started_at_us":0}"#;
        std::fs::write(legacy.join("session.json"), meta).unwrap();
        let admin = Principal { email: "admin@x.org".into(), role: Role::Admin, address: None };
        assert!(app.record(&admin, "arm-1_2026-11-24_10").is_ok());
        assert_eq!(app.records(&admin, None, None).unwrap().len(), 1);
        // It may hold later holders' sessions too: not even its first holder reads it.
        let first = user("a@x.org");
        assert_eq!(app.record(&first, "arm-1_2026-11-24_10").unwrap_err().kind(), ErrorKind::NotYourRecord);
        assert!(app.records(&first, None, None).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_slot_booked_again_after_a_cancel_is_a_new_session() {
        let (_dir, _clock, app) = lab_at("2026-11-24T10:30:00Z", ONE_BOARD);
        let (device, _) = app.board(&DeviceRef::Number(0)).unwrap();
        let date = jiff::civil::date(2026, 11, 24);
        for email in ["a@x.org", "b@x.org"] {
            app.register(email, "plum-orbit-cactus-41", LOCALHOST).await.unwrap();
        }
        app.book(&user("a@x.org"), &device, date, 10).await.unwrap();
        let (a, _) = app.session_at("arm-1", app.now()).unwrap();
        app.cancel(&user("a@x.org"), &device, date, 10).await.unwrap();
        app.book(&user("b@x.org"), &device, date, 10).await.unwrap();
        let (b, _) = app.session_at("arm-1", app.now()).unwrap();
        assert_eq!((a.holder.as_str(), b.holder.as_str()), ("a@x.org", "b@x.org"));
        assert_ne!(app.records.begin(&a).unwrap(), app.records.begin(&b).unwrap());
    }
}
