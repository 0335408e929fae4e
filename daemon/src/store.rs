//! The store: users, bookings and daemon metadata in one redb file.
//!
//! Architecture invariant: this is the only module that imports redb. It
//! exposes domain operations (book, cancel, create a user), never tables.
//!
//! Writes go through one writer thread that takes every request waiting in its
//! queue, applies them in one transaction, commits (fsync) and only then
//! answers each. Concurrent writers share one fsync, every acknowledged write
//! is durable, and since one transaction sees the previous ones, two requests
//! for the same slot can never both succeed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use jiff::civil::Date;
use redb::{ConcurrencyMode, Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::auth::PasswordHash;
use crate::booking::BookingError;

/// Bumped whenever the layout of the tables below changes.
const SCHEMA_VERSION: u32 = 1;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// E-mail → user record (JSON).
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// (device, date, slot) → booking record (JSON). At most one per key: the uniqueness guarantee.
const BOOKINGS: TableDefinition<(&str, &str, u16), &[u8]> = TableDefinition::new("bookings");
/// (e-mail, date, device, slot): the index behind "my bookings" and the per-user caps.
const USER_BOOKINGS: TableDefinition<(&str, &str, &str, u16), ()> = TableDefinition::new("user_bookings");

const META_SCHEMA_VERSION: &str = "schema_version";
const META_JWT_SECRET: &str = "jwt_secret";

/// How many queued writes one transaction takes at most.
const MAX_BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the store's directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open the store {path}: {source}")]
    Open { path: PathBuf, source: Box<redb::DatabaseError> },
    #[error(
        "the store {path} has schema version {found}, this rerod understands {SCHEMA_VERSION}; \
         use a matching rerod or restore a backup"
    )]
    SchemaMismatch { path: PathBuf, found: u32 },
    #[error("store failure: {0}")]
    Db(#[from] Box<redb::Error>),
    #[error("corrupt record in the store: {0}")]
    Corrupt(String),
    #[error("the store's writer has stopped")]
    WriterGone,
}

fn db<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(Box::new(e.into()))
}

/// A registered user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub email: String,
    pub password_hash: PasswordHash,
    pub created_at: Timestamp,
    pub disabled: bool,
    /// Bumped on password change or disabling; tokens carry the one they were issued under.
    pub credential_generation: u32,
}

/// One booked slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Booking {
    pub key: SlotKey,
    pub email: String,
    pub booked_at: Timestamp,
}

/// A slot of a device's calendar.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotKey {
    pub device: String,
    pub date: Date,
    pub slot: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("User with this email already exists")]
    Exists,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum BookError {
    #[error(transparent)]
    Rule(BookingError),
    /// The account was disabled after the request was authenticated.
    #[error("the account is disabled")]
    AccountDisabled,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum SetDisabledError {
    #[error("no such user")]
    NoSuchUser,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// Nobody booked the slot, or (when a requester is given) somebody else did.
    #[error("slot was not booked by you or does not exist")]
    NotBooked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The admission check a booking must pass inside its transaction, given the
/// (date, slot) of every booking the user already holds. The store knows
/// nothing of policy; the caller supplies it.
pub type Admit = Box<dyn FnOnce(&[(Date, u16)]) -> Result<(), BookingError> + Send>;

/// Which of an account's bookings go when it is disabled (those not yet
/// ended, say). The store knows no calendar; the caller decides.
pub type Doomed = Box<dyn Fn(&SlotKey) -> bool + Send>;

/// An account after an admin changed it, and the bookings that went with it.
#[derive(Clone, Debug)]
pub struct AccountChange {
    pub user: User,
    pub cancelled: Vec<Booking>,
}

#[derive(Serialize, Deserialize)]
struct UserRecord {
    password_hash: String,
    created_at_us: i64,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    credential_generation: u32,
}

#[derive(Serialize, Deserialize)]
struct BookingRecord {
    email: String,
    booked_at_us: i64,
}

enum Write {
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
    /// Finish what is queued before this, then stop.
    Close,
}

/// A handle on the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    writes: mpsc::Sender<Write>,
    writer: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
    path: PathBuf,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir { path: dir.to_owned(), source })?;
        }
        // One writer (this daemon); other processes (`rerod backup`,
        // `rerod export`) may open the file read-only meanwhile.
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::SingleWriter)
            .create(path)
            .map_err(|source| StoreError::Open { path: path.to_owned(), source: Box::new(source) })?;
        init_schema(&db, path)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let writer_db = Arc::clone(&db);
        let writer = std::thread::Builder::new()
            .name("rerod-store-writer".into())
            .spawn(move || run_writer(&writer_db, rx))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the writer thread: {e}")))?;
        Ok(Store { db, writes: tx, writer: Arc::new(std::sync::Mutex::new(Some(writer))), path: path.to_owned() })
    }

    /// Lets the writer finish every queued write, then stops it. Every write
    /// acknowledged before this call is on disk; later ones fail with `WriterGone`.
    pub async fn close(&self) {
        let _ = self.writes.send(Write::Close).await;
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks that the store can be read.
    pub fn check(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        txn.open_table(META).map_err(db)?;
        Ok(())
    }

    /// The stored JWT secret, generated by `generate` and stored on first use.
    pub fn jwt_secret_or_insert(
        &self,
        generate: impl FnOnce() -> std::io::Result<Vec<u8>>,
    ) -> Result<Vec<u8>, StoreError> {
        let txn = self.db.begin_write().map_err(db)?;
        let secret = {
            let mut meta = txn.open_table(META).map_err(db)?;
            let existing = meta.get(META_JWT_SECRET).map_err(db)?.map(|v| v.value().to_vec());
            match existing {
                Some(secret) => secret,
                None => {
                    let secret =
                        generate().map_err(|e| StoreError::Corrupt(format!("cannot generate a secret: {e}")))?;
                    meta.insert(META_JWT_SECRET, secret.as_slice()).map_err(db)?;
                    secret
                }
            }
        };
        txn.commit().map_err(db)?;
        Ok(secret)
    }

    async fn submit<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Write) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writes.send(make(tx)).await.map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)
    }

    pub async fn create_user(&self, user: User) -> Result<User, CreateUserError> {
        self.submit(|reply| Write::CreateUser { user, reply }).await?
    }

    /// Books `key` for `email` if it is free and `admit` accepts.
    pub async fn book(
        &self,
        key: SlotKey,
        email: String,
        booked_at: Timestamp,
        admit: Admit,
    ) -> Result<Booking, BookError> {
        self.submit(|reply| Write::Book { key, email, booked_at, admit, reply }).await?
    }

    /// Cancels the booking of `key`; with a `requester`, only if it is theirs.
    pub async fn cancel(&self, key: SlotKey, requester: Option<String>) -> Result<Booking, CancelError> {
        self.submit(|reply| Write::Cancel { key, requester, reply }).await?
    }

    /// Disables or re-enables the account of `email`. Disabling also bumps its
    /// credential generation, so every token issued before stays refused even
    /// once it is enabled again, and removes the bookings `doomed` picks, in
    /// the same transaction: no booking of a disabled account commits after it.
    pub async fn set_disabled(
        &self,
        email: String,
        disabled: bool,
        doomed: Doomed,
    ) -> Result<AccountChange, SetDisabledError> {
        self.submit(|reply| Write::SetDisabled { email, disabled, doomed, reply }).await?
    }

    /// Every account, by e-mail.
    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        read_users(&txn.open_table(USERS).map_err(db)?)
    }

    pub fn user(&self, email: &str) -> Result<Option<User>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let users = txn.open_table(USERS).map_err(db)?;
        let record = users.get(email).map_err(db)?;
        record.map(|r| decode_user(email, r.value())).transpose()
    }

    /// Every booking of `device` on `date`, by slot.
    pub fn bookings_on(&self, device: &str, date: Date) -> Result<Vec<Booking>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let bookings = txn.open_table(BOOKINGS).map_err(db)?;
        let day = date.to_string();
        let range = bookings.range((device, day.as_str(), 0u16)..=(device, day.as_str(), u16::MAX)).map_err(db)?;
        let mut out = Vec::new();
        for entry in range {
            let (k, v) = entry.map_err(db)?;
            let (_, _, slot) = k.value();
            out.push(decode_booking(SlotKey { device: device.to_owned(), date, slot }, v.value())?);
        }
        Ok(out)
    }

    /// Every booking `email` holds, by date, device and slot.
    pub fn bookings_of(&self, email: &str) -> Result<Vec<Booking>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let index = txn.open_table(USER_BOOKINGS).map_err(db)?;
        let bookings = txn.open_table(BOOKINGS).map_err(db)?;
        let mut out = Vec::new();
        for key in user_keys(&index, email)? {
            out.extend(get_booking(&bookings, key)?);
        }
        Ok(out)
    }

    /// Numbers for /health and /stats.
    pub fn counts(&self) -> Result<Counts, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        Ok(Counts {
            users: txn.open_table(USERS).map_err(db)?.len().map_err(db)?,
            bookings: txn.open_table(BOOKINGS).map_err(db)?.len().map_err(db)?,
        })
    }
}

/// Everything in a store, for `rerod export`.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub users: Vec<User>,
    pub bookings: Vec<Booking>,
}

fn open_read_only(path: &Path) -> Result<redb::ReadOnlyDatabase, StoreError> {
    Database::builder()
        .set_concurrency_mode(ConcurrencyMode::SingleWriter)
        .open_read_only(path)
        .map_err(|source| StoreError::Open { path: path.to_owned(), source: Box::new(source) })
}

/// Copies one consistent snapshot of the store at `from` (a running daemon
/// may have it open) into a new store file `to`, which must not exist yet.
/// The copy is written beside `to` and renamed into place when complete.
pub fn backup(from: &Path, to: &Path) -> Result<Counts, StoreError> {
    if to.exists() {
        return Err(StoreError::Corrupt(format!("{} already exists; choose a new file", to.display())));
    }
    let source = open_read_only(from)?;
    let snapshot = source.begin_read().map_err(db)?;
    let partial = to.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let target = Database::create(&partial)
        .map_err(|source| StoreError::Open { path: partial.clone(), source: Box::new(source) })?;
    let txn = target.begin_write().map_err(db)?;
    let counts = {
        fn copy<K: redb::Key + 'static, V: redb::Value + 'static>(
            snapshot: &redb::ReadTransaction,
            txn: &redb::WriteTransaction,
            table: TableDefinition<K, V>,
        ) -> Result<u64, StoreError> {
            let from = snapshot.open_table(table).map_err(db)?;
            let mut to = txn.open_table(table).map_err(db)?;
            let mut n = 0;
            for entry in from.iter().map_err(db)? {
                let (k, v) = entry.map_err(db)?;
                to.insert(k.value(), v.value()).map_err(db)?;
                n += 1;
            }
            Ok(n)
        }
        copy(&snapshot, &txn, META)?;
        copy(&snapshot, &txn, USER_BOOKINGS)?;
        Counts { users: copy(&snapshot, &txn, USERS)?, bookings: copy(&snapshot, &txn, BOOKINGS)? }
    };
    txn.commit().map_err(db)?;
    drop(target);
    std::fs::rename(&partial, to)
        .map_err(|e| StoreError::Corrupt(format!("cannot move the backup into place: {e}")))?;
    Ok(counts)
}

/// Reads every user and booking of the store at `path` (which a running daemon may have open).
pub fn snapshot(path: &Path) -> Result<Snapshot, StoreError> {
    let source = open_read_only(path)?;
    let txn = source.begin_read().map_err(db)?;
    let users = read_users(&txn.open_table(USERS).map_err(db)?)?;
    let mut bookings = Vec::new();
    for entry in txn.open_table(BOOKINGS).map_err(db)?.iter().map_err(db)? {
        let (k, v) = entry.map_err(db)?;
        let (device, day, slot) = k.value();
        let key = SlotKey { device: device.to_owned(), date: parse_date(day)?, slot };
        bookings.push(decode_booking(key, v.value())?);
    }
    Ok(Snapshot { users, bookings })
}

fn read_users(table: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<Vec<User>, StoreError> {
    let mut users = Vec::new();
    for entry in table.iter().map_err(db)? {
        let (k, v) = entry.map_err(db)?;
        users.push(decode_user(k.value(), v.value())?);
    }
    Ok(users)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    pub users: u64,
    pub bookings: u64,
}

fn init_schema(db: &Database, path: &Path) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut meta = txn.open_table(META).map_err(db_err)?;
        let found = meta.get(META_SCHEMA_VERSION).map_err(db_err)?.map(|v| {
            let bytes: [u8; 4] = v.value().try_into().unwrap_or([0xff; 4]);
            u32::from_le_bytes(bytes)
        });
        match found {
            Some(SCHEMA_VERSION) => {}
            Some(found) => return Err(StoreError::SchemaMismatch { path: path.to_owned(), found }),
            None => {
                meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION.to_le_bytes().as_slice()).map_err(db_err)?;
            }
        }
        // Create every table so readers never meet a missing one.
        txn.open_table(USERS).map_err(db_err)?;
        txn.open_table(BOOKINGS).map_err(db_err)?;
        txn.open_table(USER_BOOKINGS).map_err(db_err)?;
    }
    txn.commit().map_err(db_err)?;
    Ok(())
}

fn db_err<E: Into<redb::Error>>(e: E) -> StoreError {
    db(e)
}

fn parse_date(text: &str) -> Result<Date, StoreError> {
    text.parse().map_err(|_| StoreError::Corrupt(format!("bad date {text:?} in a booking key")))
}

fn timestamp_us(us: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_microsecond(us).map_err(|_| StoreError::Corrupt(format!("timestamp {us} out of range")))
}

fn decode_user(email: &str, bytes: &[u8]) -> Result<User, StoreError> {
    let r: UserRecord = serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("user record: {e}")))?;
    Ok(User {
        email: email.to_owned(),
        password_hash: PasswordHash::from_stored(r.password_hash),
        created_at: timestamp_us(r.created_at_us)?,
        disabled: r.disabled,
        credential_generation: r.credential_generation,
    })
}

fn encode_user(user: &User) -> Vec<u8> {
    serde_json::to_vec(&UserRecord {
        password_hash: user.password_hash.as_stored().to_owned(),
        created_at_us: user.created_at.as_microsecond(),
        disabled: user.disabled,
        credential_generation: user.credential_generation,
    })
    .expect("a user record always serializes")
}

fn decode_booking(key: SlotKey, bytes: &[u8]) -> Result<Booking, StoreError> {
    let r: BookingRecord =
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("booking record: {e}")))?;
    Ok(Booking { key, email: r.email, booked_at: timestamp_us(r.booked_at_us)? })
}

/// The writer thread: batches queued writes into one transaction each.
fn run_writer(db: &Database, mut rx: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut closing = false;
    while !closing {
        let Some(first) = rx.blocking_recv() else { break };
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
        apply_batch(db, &mut batch);
    }
}

/// An answer computed inside the transaction, sent only after it commits.
enum Outcome {
    User(oneshot::Sender<Result<User, CreateUserError>>, Result<User, CreateUserError>),
    Book(oneshot::Sender<Result<Booking, BookError>>, Result<Booking, BookError>),
    Cancel(oneshot::Sender<Result<Booking, CancelError>>, Result<Booking, CancelError>),
    Account(oneshot::Sender<Result<AccountChange, SetDisabledError>>, Result<AccountChange, SetDisabledError>),
}

impl Outcome {
    fn send(self) {
        // A requester that went away no longer needs its answer.
        match self {
            Outcome::User(tx, r) => drop(tx.send(r)),
            Outcome::Book(tx, r) => drop(tx.send(r)),
            Outcome::Cancel(tx, r) => drop(tx.send(r)),
            Outcome::Account(tx, r) => drop(tx.send(r)),
        }
    }

    /// The same answer, turned into a storage failure (the batch did not commit).
    fn fail(self, error: &StoreError) {
        let e = || StoreError::Corrupt(format!("transaction failed: {error}"));
        match self {
            Outcome::User(tx, _) => drop(tx.send(Err(e().into()))),
            Outcome::Book(tx, _) => drop(tx.send(Err(e().into()))),
            Outcome::Cancel(tx, _) => drop(tx.send(Err(e().into()))),
            Outcome::Account(tx, _) => drop(tx.send(Err(e().into()))),
        }
    }
}

fn apply_batch(db: &Database, batch: &mut Vec<Write>) {
    let mut outcomes = Vec::with_capacity(batch.len());
    let result = (|| -> Result<(), StoreError> {
        let txn = db.begin_write().map_err(db_err)?;
        {
            let mut users = txn.open_table(USERS).map_err(db_err)?;
            let mut bookings = txn.open_table(BOOKINGS).map_err(db_err)?;
            let mut index = txn.open_table(USER_BOOKINGS).map_err(db_err)?;
            for write in batch.drain(..) {
                outcomes.push(match write {
                    Write::CreateUser { user, reply } => {
                        let result = if users.get(user.email.as_str()).map_err(db_err)?.is_some() {
                            Err(CreateUserError::Exists)
                        } else {
                            users.insert(user.email.as_str(), encode_user(&user).as_slice()).map_err(db_err)?;
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
                                        let record = serde_json::to_vec(&BookingRecord {
                                            email: email.clone(),
                                            booked_at_us: booked_at.as_microsecond(),
                                        })
                                        .expect("a booking record always serializes");
                                        bookings
                                            .insert((key.device.as_str(), day.as_str(), key.slot), record.as_slice())
                                            .map_err(db_err)?;
                                        index
                                            .insert((email.as_str(), day.as_str(), key.device.as_str(), key.slot), ())
                                            .map_err(db_err)?;
                                        Ok(Booking { key, email, booked_at })
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
                });
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(())
    })();
    match result {
        Ok(()) => outcomes.into_iter().for_each(Outcome::send),
        Err(error) => {
            tracing::error!(%error, "store transaction failed; its writes were not applied");
            // Writes not yet turned into outcomes have already been dropped,
            // which their requesters see as WriterGone.
            outcomes.into_iter().for_each(|o| o.fail(&error));
        }
    }
}

fn is_disabled(users: &redb::Table<'_, &'static str, &'static [u8]>, email: &str) -> Result<bool, StoreError> {
    match users.get(email).map_err(db_err)? {
        Some(record) => Ok(decode_user(email, record.value())?.disabled),
        None => Ok(false),
    }
}

/// The booking of `key`, if there is one.
fn get_booking(
    bookings: &impl ReadableTable<(&'static str, &'static str, u16), &'static [u8]>,
    key: SlotKey,
) -> Result<Option<Booking>, StoreError> {
    let day = key.date.to_string();
    let record = bookings.get((key.device.as_str(), day.as_str(), key.slot)).map_err(db_err)?;
    record.map(|v| decode_booking(key, v.value())).transpose()
}

/// Removes a booking and its entry in the per-user index.
fn remove_booking(
    bookings: &mut redb::Table<'_, (&'static str, &'static str, u16), &'static [u8]>,
    index: &mut redb::Table<'_, (&'static str, &'static str, &'static str, u16), ()>,
    booking: &Booking,
) -> Result<(), StoreError> {
    let (key, day) = (&booking.key, booking.key.date.to_string());
    bookings.remove((key.device.as_str(), day.as_str(), key.slot)).map_err(db_err)?;
    index.remove((booking.email.as_str(), day.as_str(), key.device.as_str(), key.slot)).map_err(db_err)?;
    Ok(())
}

/// The slots `email` has booked, from the per-user index.
fn user_keys(
    index: &impl ReadableTable<(&'static str, &'static str, &'static str, u16), ()>,
    email: &str,
) -> Result<Vec<SlotKey>, StoreError> {
    let mut out = Vec::new();
    for entry in index.range((email, "", "", 0u16)..).map_err(db_err)? {
        let (k, _) = entry.map_err(db_err)?;
        let (owner, day, device, slot) = k.value();
        if owner != email {
            break;
        }
        out.push(SlotKey { device: device.to_owned(), date: parse_date(day)?, slot });
    }
    Ok(out)
}

/// The (date, slot) of every booking `email` holds, for the admission check.
fn user_slots(
    index: &redb::Table<'_, (&'static str, &'static str, &'static str, u16), ()>,
    email: &str,
) -> Result<Vec<(Date, u16)>, StoreError> {
    Ok(user_keys(index, email)?.into_iter().map(|key| (key.date, key.slot)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn user(email: &str) -> User {
        User {
            email: email.into(),
            password_hash: PasswordHash::from_stored("$2b$04$x".into()),
            created_at: Timestamp::from_second(1_700_000_000).unwrap(),
            disabled: false,
            credential_generation: 0,
        }
    }

    fn key(device: &str, slot: u16) -> SlotKey {
        SlotKey { device: device.into(), date: date(2026, 11, 24), slot }
    }

    fn admit_all() -> Admit {
        Box::new(|_| Ok(()))
    }

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("sub/rerod.redb")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn users_are_unique_by_email() {
        let (_dir, store) = temp_store();
        store.create_user(user("a@x.org")).await.unwrap();
        assert!(matches!(store.create_user(user("a@x.org")).await, Err(CreateUserError::Exists)));
        assert_eq!(store.user("a@x.org").unwrap().unwrap(), user("a@x.org"));
        assert_eq!(store.user("b@x.org").unwrap(), None);
    }

    #[tokio::test]
    async fn concurrent_bookings_of_one_slot_yield_exactly_one() {
        let (_dir, store) = temp_store();
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store.book(key("d", 5), format!("u{i}@x.org"), Timestamp::now(), admit_all()).await
                })
            })
            .collect();
        let mut n_ok = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => n_ok += 1,
                Err(BookError::Rule(BookingError::Taken { id: 5 })) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(n_ok, 1);
        assert_eq!(store.bookings_on("d", date(2026, 11, 24)).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn admission_sees_the_users_bookings_including_the_same_batch() {
        let (_dir, store) = temp_store();
        // Allow one booking per user: of ten concurrent requests by one user, one wins.
        let tasks: Vec<_> = (0..10)
            .map(|slot| {
                let store = store.clone();
                let admit: Admit = Box::new(|existing| match existing.len() {
                    0 => Ok(()),
                    _ => Err(BookingError::ActiveLimit { max: 1 }),
                });
                tokio::spawn(async move { store.book(key("d", slot), "a@x.org".into(), Timestamp::now(), admit).await })
            })
            .collect();
        let mut n_ok = 0;
        for task in tasks {
            n_ok += usize::from(task.await.unwrap().is_ok());
        }
        assert_eq!(n_ok, 1);
        assert_eq!(store.bookings_of("a@x.org").unwrap().len(), 1);
    }

    #[tokio::test]
    async fn cancel_only_by_the_owner_unless_forced() {
        let (_dir, store) = temp_store();
        store.book(key("d", 1), "a@x.org".into(), Timestamp::now(), admit_all()).await.unwrap();
        assert!(matches!(store.cancel(key("d", 1), Some("b@x.org".into())).await, Err(CancelError::NotBooked)));
        assert!(matches!(store.cancel(key("d", 2), Some("a@x.org".into())).await, Err(CancelError::NotBooked)));
        let cancelled = store.cancel(key("d", 1), None).await.unwrap();
        assert_eq!(cancelled.email, "a@x.org");
        assert!(store.bookings_of("a@x.org").unwrap().is_empty());
        assert!(store.bookings_on("d", date(2026, 11, 24)).unwrap().is_empty());
    }

    #[tokio::test]
    async fn disabling_removes_the_picked_bookings_and_refuses_new_ones() {
        let (_dir, store) = temp_store();
        store.create_user(user("a@x.org")).await.unwrap();
        store.create_user(user("b@x.org")).await.unwrap();
        for slot in [1, 2, 3] {
            store.book(key("d", slot), "a@x.org".into(), Timestamp::now(), admit_all()).await.unwrap();
        }
        store.book(key("d", 4), "b@x.org".into(), Timestamp::now(), admit_all()).await.unwrap();

        // Slot 1 stands for one that has ended: it stays, as history.
        let change = store.set_disabled("a@x.org".into(), true, Box::new(|k| k.slot != 1)).await.unwrap();
        assert!(change.user.disabled);
        assert_eq!(change.user.credential_generation, 1, "tokens issued before are refused");
        let mut cancelled: Vec<u16> = change.cancelled.iter().map(|b| b.key.slot).collect();
        cancelled.sort_unstable();
        assert_eq!(cancelled, [2, 3]);
        let left: Vec<(String, u16)> =
            store.bookings_on("d", date(2026, 11, 24)).unwrap().into_iter().map(|b| (b.email, b.key.slot)).collect();
        assert_eq!(left, [("a@x.org".to_owned(), 1), ("b@x.org".to_owned(), 4)]);
        assert_eq!(store.bookings_of("a@x.org").unwrap().len(), 1, "the per-user index agrees");
        assert!(store.user("a@x.org").unwrap().unwrap().disabled);

        // A booking authenticated before the disabling cannot commit after it.
        let late = store.book(key("d", 5), "a@x.org".into(), Timestamp::now(), admit_all()).await;
        assert!(matches!(late, Err(BookError::AccountDisabled)), "{late:?}");

        // Disabling twice does not bump the generation again; enabling keeps it.
        store.set_disabled("a@x.org".into(), true, Box::new(|k| k.slot != 1)).await.unwrap();
        let enabled = store.set_disabled("a@x.org".into(), false, Box::new(|_| true)).await.unwrap();
        assert!(!enabled.user.disabled && enabled.cancelled.is_empty());
        assert_eq!(enabled.user.credential_generation, 1);
        assert_eq!(store.bookings_of("a@x.org").unwrap().len(), 1, "enabling cancels nothing");
        store.book(key("d", 5), "a@x.org".into(), Timestamp::now(), admit_all()).await.unwrap();

        let unknown = store.set_disabled("c@x.org".into(), true, Box::new(|_| true)).await;
        assert!(matches!(unknown, Err(SetDisabledError::NoSuchUser)));
        let emails: Vec<String> = store.users().unwrap().into_iter().map(|u| u.email).collect();
        assert_eq!(emails, ["a@x.org", "b@x.org"]);
    }

    #[tokio::test]
    async fn bookings_of_a_user_do_not_leak_into_a_prefix_sharing_user() {
        let (_dir, store) = temp_store();
        store.book(key("d", 1), "a@x.org".into(), Timestamp::now(), admit_all()).await.unwrap();
        store.book(key("d", 2), "a@x.org.uk".into(), Timestamp::now(), admit_all()).await.unwrap();
        store.book(key("e", 1), "a@x.org".into(), Timestamp::now(), admit_all()).await.unwrap();
        let mine: Vec<_> =
            store.bookings_of("a@x.org").unwrap().into_iter().map(|b| (b.key.device, b.key.slot)).collect();
        assert_eq!(mine, [("d".to_owned(), 1), ("e".to_owned(), 1)]);
    }

    #[tokio::test]
    async fn data_and_secret_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rerod.redb");
        let secret = {
            let store = Store::open(&path).unwrap();
            store.book(key("d", 3), "a@x.org".into(), Timestamp::now(), admit_all()).await.unwrap();
            let secret = store.jwt_secret_or_insert(|| Ok(vec![7; 32])).unwrap();
            store.close().await;
            secret
        };
        let store = Store::open(&path).unwrap();
        assert_eq!(store.jwt_secret_or_insert(|| Ok(vec![9; 32])).unwrap(), secret);
        assert_eq!(store.bookings_on("d", date(2026, 11, 24)).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn backups_are_consistent_copies_taken_while_the_store_is_open() {
        let (dir, store) = temp_store();
        store.create_user(user("a@x.org")).await.unwrap();
        store.book(key("d", 1), "a@x.org".into(), Timestamp::now(), admit_all()).await.unwrap();
        let secret = store.jwt_secret_or_insert(|| Ok(vec![5; 32])).unwrap();
        let out = dir.path().join("backup.redb");
        assert_eq!(backup(store.path(), &out).unwrap(), Counts { users: 1, bookings: 1 });
        assert!(backup(store.path(), &out).is_err(), "an existing file is never overwritten");
        // Writes after the backup are not in it.
        store.book(key("d", 2), "a@x.org".into(), Timestamp::now(), admit_all()).await.unwrap();
        let restored = Store::open(&out).unwrap();
        assert_eq!(restored.bookings_of("a@x.org").unwrap().len(), 1);
        assert_eq!(restored.user("a@x.org").unwrap(), Some(user("a@x.org")));
        assert_eq!(restored.jwt_secret_or_insert(|| Ok(vec![9; 32])).unwrap(), secret);
        let all = snapshot(store.path()).unwrap();
        assert_eq!((all.users.len(), all.bookings.len()), (1, 2));
    }

    #[test]
    fn a_store_of_another_schema_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rerod.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert(META_SCHEMA_VERSION, 99u32.to_le_bytes().as_slice()).unwrap();
            txn.commit().unwrap();
        }
        assert!(matches!(Store::open(&path), Err(StoreError::SchemaMismatch { found: 99, .. })));
    }
}
