//! The store's writer thread: it batches queued writes into one redb transaction, commits, and only then answers each.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::Date;
use redb::{Database, ReadableTable};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use super::handle::Handle;
use super::health::{AuditEntry, MaintenanceRecord, MoveError, append_audit, move_booking, set_maintenance};
use super::records::{
    decode_user, encode_user, get_booking, index_skeleton, insert_booking, remove_booking, skeleton_taken, user_keys,
};
use super::{
    AccountChange, Admit, BOOKINGS, BookError, Booking, CancelError, CreateUserError, Doomed, EMAIL_SKELETONS, META,
    META_NEXT_USER_ID, SetDisabledError, SlotKey, StoreError, USER_BOOKINGS, USERS, User, UserUpdate, db_err,
    next_user_id,
};
use crate::booking::BookingError;

/// How many queued writes one transaction takes at most.
pub(super) const MAX_BATCH: usize = 512;

pub(super) enum Write {
    CreateUser {
        user: User,
        reply: oneshot::Sender<Result<User, CreateUserError>>,
    },
    Book {
        key: SlotKey,
        email: String,
        booked_at: Timestamp,
        admit: Admit,
        reply: oneshot::Sender<Result<Booking, BookError>>,
    },
    Cancel {
        key: SlotKey,
        requester: Option<String>,
        reply: oneshot::Sender<Result<Booking, CancelError>>,
    },
    SetDisabled {
        email: String,
        disabled: bool,
        doomed: Doomed,
        reply: oneshot::Sender<Result<AccountChange, SetDisabledError>>,
    },
    UpdateUser {
        email: String,
        update: UserUpdate,
        reply: oneshot::Sender<Result<Option<(User, User)>, StoreError>>,
    },
    /// Moves a booking to another device's same slot (see `health.rs`).
    MoveBooking {
        key: SlotKey,
        to_device: String,
        reply: oneshot::Sender<Result<Booking, MoveError>>,
    },
    /// Sets or clears a device's maintenance, with its audit entry.
    Maintenance {
        device: String,
        set: Option<MaintenanceRecord>,
        audit: AuditEntry,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Appends to the audit log.
    Audit {
        entry: AuditEntry,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Finish what is queued before this, then stop.
    Close,
}

/// How often the writer tries to open the file again while it cannot.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// The writer thread: batches queued writes into one transaction each.
pub(super) fn run_writer(handle: &Handle, mut rx: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut closing = false;
    while !closing {
        let Some(first) = next_write(handle, &mut rx) else { break };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        if let Some(at) = batch.iter().position(|w| matches!(w, Write::Close)) {
            // Writes queued after the close are dropped; their senders see WriterGone.
            batch.truncate(at);
            closing = true;
        }
        // The file may be closed: opening it again after a failed write failed too.
        let db = match handle.get().or_else(|_| {
            handle.reopen();
            handle.get()
        }) {
            Ok(db) => db,
            Err(error) => {
                fail_unapplied(&mut batch, &error);
                continue;
            }
        };
        apply_batch(handle, db, &mut batch);
    }
}

/// The next queued write. While the file is not open (opening it again
/// after a failed write failed too), tries again every [`REOPEN_INTERVAL`],
/// so reads come back once the disk has room even with no write queued.
fn next_write(handle: &Handle, rx: &mut mpsc::Receiver<Write>) -> Option<Write> {
    loop {
        if handle.get().is_ok() || handle.reopen() {
            return rx.blocking_recv();
        }
        let deadline = std::time::Instant::now() + REOPEN_INTERVAL;
        while std::time::Instant::now() < deadline {
            match rx.try_recv() {
                Ok(write) => return Some(write),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// Answers every write of a batch that was never applied with `error`.
fn fail_unapplied(batch: &mut Vec<Write>, error: &StoreError) {
    let reason = match error {
        StoreError::Unavailable(reason) => reason.clone(),
        other => other.to_string(),
    };
    let e = || StoreError::Unavailable(reason.clone());
    for write in batch.drain(..) {
        match write {
            Write::CreateUser { reply, .. } => drop(reply.send(Err(e().into()))),
            Write::Book { reply, .. } => drop(reply.send(Err(e().into()))),
            Write::Cancel { reply, .. } => drop(reply.send(Err(e().into()))),
            Write::SetDisabled { reply, .. } => drop(reply.send(Err(e().into()))),
            Write::UpdateUser { reply, .. } => drop(reply.send(Err(e()))),
            Write::MoveBooking { reply, .. } => drop(reply.send(Err(e().into()))),
            Write::Maintenance { reply, .. } | Write::Audit { reply, .. } => drop(reply.send(Err(e()))),
            Write::Close => {}
        }
    }
}

/// An answer computed inside the transaction, sent only after it commits.
enum Outcome {
    User(oneshot::Sender<Result<User, CreateUserError>>, Result<User, CreateUserError>),
    Book(oneshot::Sender<Result<Booking, BookError>>, Result<Booking, BookError>),
    Cancel(oneshot::Sender<Result<Booking, CancelError>>, Result<Booking, CancelError>),
    Account(oneshot::Sender<Result<AccountChange, SetDisabledError>>, Result<AccountChange, SetDisabledError>),
    Updated(oneshot::Sender<Result<Option<(User, User)>, StoreError>>, Option<(User, User)>),
    Moved(oneshot::Sender<Result<Booking, MoveError>>, Result<Booking, MoveError>),
    Done(oneshot::Sender<Result<(), StoreError>>),
}

impl Outcome {
    fn send(self) {
        // A requester that went away no longer needs its answer.
        match self {
            Outcome::User(tx, r) => drop(tx.send(r)),
            Outcome::Book(tx, r) => drop(tx.send(r)),
            Outcome::Cancel(tx, r) => drop(tx.send(r)),
            Outcome::Account(tx, r) => drop(tx.send(r)),
            Outcome::Updated(tx, change) => drop(tx.send(Ok(change))),
            Outcome::Moved(tx, r) => drop(tx.send(r)),
            Outcome::Done(tx) => drop(tx.send(Ok(()))),
        }
    }

    /// The same answer, turned into a storage failure (the batch did not commit).
    fn fail(self, error: &StoreError) {
        let e = || StoreError::Unavailable(format!("transaction failed: {error}"));
        match self {
            Outcome::User(tx, _) => drop(tx.send(Err(e().into()))),
            Outcome::Book(tx, _) => drop(tx.send(Err(e().into()))),
            Outcome::Cancel(tx, _) => drop(tx.send(Err(e().into()))),
            Outcome::Account(tx, _) => drop(tx.send(Err(e().into()))),
            Outcome::Updated(tx, _) => drop(tx.send(Err(e()))),
            Outcome::Moved(tx, _) => drop(tx.send(Err(e().into()))),
            Outcome::Done(tx) => drop(tx.send(Err(e()))),
        }
    }
}

/// Applies and commits `batch`, then answers each write. On a failure from
/// redb the handle recovers first (see [`Handle::write_failed`]), so that a
/// requester told of the failure finds reads working and the failure in
/// `/health` when it looks.
fn apply_batch(handle: &Handle, db: Arc<Database>, batch: &mut Vec<Write>) {
    let mut outcomes = Vec::with_capacity(batch.len());
    let result = (|| -> Result<(), StoreError> {
        let txn = db.begin_write().map_err(db_err)?;
        {
            let mut users = txn.open_table(USERS).map_err(db_err)?;
            let mut bookings = txn.open_table(BOOKINGS).map_err(db_err)?;
            let mut index = txn.open_table(USER_BOOKINGS).map_err(db_err)?;
            let mut skeletons = txn.open_table(EMAIL_SKELETONS).map_err(db_err)?;
            let mut meta = txn.open_table(META).map_err(db_err)?;
            // Taken from the back of the reversed batch, so that on a failure
            // the writes not yet applied stay in it, to be answered.
            batch.reverse();
            while let Some(write) = batch.pop() {
                outcomes.push(match write {
                    Write::CreateUser { mut user, reply } => {
                        // Checked here, in the transaction, so that two look-alikes
                        // registering at once cannot both succeed.
                        let skeleton = crate::auth::email_skeleton(&user.email);
                        let result = if users.get(user.email.as_str()).map_err(db_err)?.is_some() {
                            Err(CreateUserError::Exists)
                        } else if skeleton_taken(&skeletons, &skeleton, &user.email)? {
                            Err(CreateUserError::LooksLikeAnother)
                        } else {
                            // Numbered in the transaction that creates it: ids are never reused.
                            user.id = next_user_id(&meta)?;
                            meta.insert(META_NEXT_USER_ID, (user.id + 1).to_le_bytes().as_slice()).map_err(db_err)?;
                            users.insert(user.email.as_str(), encode_user(&user).as_slice()).map_err(db_err)?;
                            index_skeleton(&mut skeletons, &skeleton, &user.email)?;
                            Ok(user)
                        };
                        Outcome::User(reply, result)
                    }
                    Write::Book { key, email, booked_at, admit, reply } => {
                        let day = key.date.to_string();
                        let result =
                            if bookings.get((key.device.as_str(), day.as_str(), key.slot)).map_err(db_err)?.is_some() {
                                Err(BookError::Rule(BookingError::Taken { id: key.slot }))
                            } else if is_disabled(&users, &email)? {
                                Err(BookError::AccountDisabled)
                            } else {
                                let existing = user_slots(&index, &email)?;
                                match admit(&existing) {
                                    Err(rule) => Err(BookError::Rule(rule)),
                                    Ok(()) => {
                                        let booking = Booking { key, email, booked_at, moved_from: None };
                                        insert_booking(&mut bookings, &mut index, &booking)?;
                                        Ok(booking)
                                    }
                                }
                            };
                        Outcome::Book(reply, result)
                    }
                    Write::Close => continue,
                    Write::Cancel { key, requester, reply } => {
                        let result = match get_booking(&bookings, key)? {
                            Some(booking) if requester.as_deref().is_none_or(|r| r == booking.email) => {
                                remove_booking(&mut bookings, &mut index, &booking)?;
                                Ok(booking)
                            }
                            _ => Err(CancelError::NotBooked),
                        };
                        Outcome::Cancel(reply, result)
                    }
                    Write::SetDisabled { email, disabled, doomed, reply } => {
                        let existing = users.get(email.as_str()).map_err(db_err)?.map(|v| v.value().to_vec());
                        let result = match existing {
                            None => Err(SetDisabledError::NoSuchUser),
                            Some(bytes) => {
                                let mut user = decode_user(&email, &bytes)?;
                                let mut cancelled = Vec::new();
                                if disabled && !user.disabled {
                                    user.credential_generation = user.credential_generation.wrapping_add(1);
                                }
                                if disabled {
                                    for key in user_keys(&index, &email)?.into_iter().filter(|key| doomed(key)) {
                                        if let Some(booking) = get_booking(&bookings, key)? {
                                            remove_booking(&mut bookings, &mut index, &booking)?;
                                            cancelled.push(booking);
                                        }
                                    }
                                }
                                user.disabled = disabled;
                                users.insert(email.as_str(), encode_user(&user).as_slice()).map_err(db_err)?;
                                Ok(AccountChange { user, cancelled })
                            }
                        };
                        Outcome::Account(reply, result)
                    }
                    Write::UpdateUser { email, update, reply } => {
                        let existing = users.get(email.as_str()).map_err(db_err)?.map(|v| v.value().to_vec());
                        let change = match existing {
                            Some(bytes) => {
                                let before = decode_user(&email, &bytes)?;
                                let mut after = before.clone();
                                update(&mut after);
                                // The key is the address: an update cannot rename an account.
                                after.email = email.clone();
                                users.insert(email.as_str(), encode_user(&after).as_slice()).map_err(db_err)?;
                                Some((before, after))
                            }
                            None => None,
                        };
                        Outcome::Updated(reply, change)
                    }
                    Write::MoveBooking { key, to_device, reply } => {
                        let result = move_booking(&mut bookings, &mut index, key, to_device)?;
                        Outcome::Moved(reply, result)
                    }
                    Write::Maintenance { device, set, audit, reply } => {
                        set_maintenance(&txn, &device, set.as_ref())?;
                        append_audit(&txn, &audit)?;
                        Outcome::Done(reply)
                    }
                    Write::Audit { entry, reply } => {
                        append_audit(&txn, &entry)?;
                        Outcome::Done(reply)
                    }
                });
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(())
    })();
    match result {
        Ok(()) => {
            handle.committed();
            outcomes.into_iter().for_each(Outcome::send);
        }
        Err(error) => {
            tracing::error!(%error, "store transaction failed; its writes were not applied");
            if let StoreError::Db(_) = error {
                // A redb failure may have latched the handle (a failed write
                // does), so it is closed and the file opened again. The
                // writer's own reference must go first for it to close.
                drop(db);
                handle.write_failed(&error);
            }
            // A record that does not decode fails its batch, not the file.
            outcomes.into_iter().for_each(|o| o.fail(&error));
            // Writes not yet turned into outcomes (the failure came first) get the same answer.
            fail_unapplied(batch, &error);
        }
    }
}

fn is_disabled(users: &redb::Table<'_, &'static str, &'static [u8]>, email: &str) -> Result<bool, StoreError> {
    match users.get(email).map_err(db_err)? {
        Some(record) => Ok(decode_user(email, record.value())?.disabled),
        None => Ok(false),
    }
}

/// The (date, slot) of every booking `email` holds, for the admission check.
fn user_slots(
    index: &redb::Table<'_, (&'static str, &'static str, &'static str, u16), ()>,
    email: &str,
) -> Result<Vec<(Date, u16)>, StoreError> {
    Ok(user_keys(index, email)?.into_iter().map(|key| (key.date, key.slot)).collect())
}
