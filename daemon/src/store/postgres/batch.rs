//! Bookings and cancellations written in batches: one statement, one
//! transaction, one commit and one notification for every write that
//! arrived while the previous batch committed (`rerod_write`, schema.rs).
//!
//! A transaction that notifies holds PostgreSQL's notification lock from
//! its commit until the commit is flushed to the WAL, so transactions that
//! notify commit one at a time, each waiting for a flush of its own, however
//! many connections send them. The writes of a busy lab would then queue for
//! that lock; in a batch they share it, as the redb writer's batches share
//! one fsync (store/writer.rs).

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_postgres::error::SqlState;

use super::super::{Booking, SlotKey, StoreError};
use super::mirror::CHANNEL;
use super::{Shared, day_note, pg, timestamp_us};

/// The most writes in one batch; their notification stays well under
/// PostgreSQL's 8,000-byte limit.
pub(super) const MAX_BATCH: usize = 64;

/// Batches in flight at once: the next one runs its statement while the
/// one before waits for its commit to be flushed.
const IN_FLIGHT: usize = 2;

/// How many times a batch is sent again after the database chose it as the
/// victim of a deadlock (with another host's write that locks in another
/// order, such as moving a booking).
const RETRIES: usize = 3;

const WRITE: &str = "SELECT o_outcome, o_email, o_booked_at_us, o_moved_from \
                     FROM rerod_write($1, $2, $3::text[]::date[], $4, $5, $6, $7, $8, $9, $10)";

/// One write of a batch.
#[derive(Debug)]
pub(super) enum Write {
    /// A booking admitted against `held`, the account's bookings as this
    /// host's copy has them (`super::held_text`).
    Book { booking: Booking, held: String },
    /// A cancellation; `requester`: only if the booking is theirs.
    Cancel { key: SlotKey, requester: Option<String> },
}

impl Write {
    fn key(&self) -> &SlotKey {
        match self {
            Write::Book { booking, .. } => &booking.key,
            Write::Cancel { key, .. } => key,
        }
    }
}

/// What the database did with one write.
#[derive(Debug)]
pub(super) enum Outcome {
    Booked,
    Taken,
    Disabled,
    /// The account's bookings are not those the host checked: nothing done.
    Stale,
    Cancelled(Booking),
    NotBooked,
}

/// A write waiting for its batch.
pub(super) struct Queued {
    write: Write,
    /// The listener's count of days read when the write was sent (`OwnWrite`).
    since: u64,
    answer: oneshot::Sender<Result<Outcome, StoreError>>,
}

impl Queued {
    pub(super) fn new(write: Write, since: u64) -> (Queued, oneshot::Receiver<Result<Outcome, StoreError>>) {
        let (answer, outcome) = oneshot::channel();
        (Queued { write, since, answer }, outcome)
    }
}

/// Writes batches until the backend stops: each takes every write queued
/// while the ones before it were being committed.
pub(super) async fn run(shared: Arc<Shared>, mut queue: mpsc::UnboundedReceiver<Queued>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let permit = Arc::clone(&in_flight).acquire_owned().await.expect("the semaphore is never closed");
        let Some(first) = queue.recv().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        // In the order of their slots: see rerod_write. A write whose caller
        // stopped waiting (it timed out) is still written: its day is read
        // again (`OwnWrite`), and dropping it here would race that.
        batch.sort_by(|a, b| a.write.key().cmp(b.write.key()));
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _permit = permit;
            match write(&shared, &batch).await {
                Ok(outcomes) => {
                    for (queued, outcome) in batch.into_iter().zip(outcomes) {
                        let _ = queued.answer.send(Ok(outcome));
                    }
                }
                Err(error) => {
                    for queued in batch {
                        let _ = queued.answer.send(Err(copy(&error)));
                    }
                }
            }
        });
    }
}

/// One batch, in one statement; its outcomes in the batch's order.
async fn write(shared: &Shared, batch: &[Queued]) -> Result<Vec<Outcome>, StoreError> {
    let mut conn = shared.pool.get().await.map_err(pg)?;
    let statement = conn.statement(WRITE).await.map_err(pg)?;
    let mut kind = Vec::with_capacity(batch.len());
    let (mut device, mut date, mut slot) = (Vec::new(), Vec::new(), Vec::new());
    let (mut email, mut booked_at, mut held, mut note) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for queued in batch {
        let key = queued.write.key();
        device.push(key.device.as_str());
        date.push(key.date.to_string());
        slot.push(i32::from(key.slot));
        note.push(serde_json::to_string(&day_note(key)).expect("a note always serializes"));
        match &queued.write {
            Write::Book { booking, held: h } => {
                kind.push("book");
                email.push(Some(booking.email.as_str()));
                booked_at.push(booking.booked_at.as_microsecond());
                held.push(h.as_str());
            }
            Write::Cancel { requester, .. } => {
                kind.push("cancel");
                email.push(requester.as_deref());
                booked_at.push(0);
                held.push("");
            }
        }
    }
    let since = batch.iter().map(|q| q.since).min().unwrap_or(0);
    let head = notify_head(shared.origin, since);
    let mut attempt = 0;
    let rows = loop {
        let sent = conn
            .query(&statement, &[&kind, &device, &date, &slot, &email, &booked_at, &held, &note, &CHANNEL, &head])
            .await;
        match sent {
            Ok(rows) => break rows,
            Err(e) if attempt < RETRIES && is_deadlock(&e) => attempt += 1,
            Err(e) => return Err(pg(e)),
        }
    };
    if rows.len() != batch.len() {
        return Err(StoreError::Corrupt(format!("rerod_write answered {} of {} writes", rows.len(), batch.len())));
    }
    let mut outcomes = Vec::with_capacity(batch.len());
    for (queued, row) in batch.iter().zip(&rows) {
        let outcome = match row.get::<_, &str>(0) {
            "booked" => Outcome::Booked,
            "taken" => Outcome::Taken,
            "disabled" => Outcome::Disabled,
            "stale" => Outcome::Stale,
            "none" => Outcome::NotBooked,
            "cancelled" => Outcome::Cancelled(Booking {
                key: queued.write.key().clone(),
                email: row.get(1),
                booked_at: timestamp_us(row.get(2))?,
                moved_from: row.get(3),
            }),
            other => return Err(StoreError::Corrupt(format!("rerod_write answered {other:?}"))),
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// The start of a batch's notification, an `Envelope` up to its notes:
/// `rerod_write` appends the notes of the writes that changed something.
fn notify_head(origin: u64, read: u64) -> String {
    format!(r#"{{"origin":{origin},"read":{read},"notes":["#)
}

fn is_deadlock(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED) || e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
}

/// The batch's failure, for each of its writes.
fn copy(error: &StoreError) -> StoreError {
    match error {
        StoreError::Unavailable(why) => StoreError::Unavailable(why.clone()),
        StoreError::Postgres(why) => StoreError::Postgres(why.clone()),
        StoreError::Corrupt(why) => StoreError::Corrupt(why.clone()),
        other => StoreError::Postgres(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::mirror::{Envelope, Note};
    use super::*;

    #[test]
    fn a_batch_notification_reads_as_an_envelope() {
        let notes = [Note::Day("arm-1".into(), "2026-11-24".into()), Note::Day("d".into(), "2026-11-25".into())];
        let notes: Vec<String> = notes.iter().map(|n| serde_json::to_string(n).unwrap()).collect();
        let payload = format!("{}{}]}}", notify_head(u64::MAX, 7), notes.join(","));
        let envelope: Envelope = serde_json::from_str(&payload).unwrap();
        assert_eq!(envelope.origin, u64::MAX);
        assert_eq!(envelope.read, Some(7));
        assert_eq!(envelope.notes.len(), 2);
    }
}
