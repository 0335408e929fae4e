//! The store: users, bookings and daemon metadata, in one redb file (a lab
//! on one host, the default) or in a PostgreSQL database that several
//! hosts of one lab share (`[store] url`).
//!
//! Architecture invariant: this is the only module that imports redb, and
//! its `postgres` submodule the only one that imports tokio-postgres. It
//! exposes domain operations (book, cancel, create a user), never tables,
//! through one interface, [`Store`] (`backend.rs`: an enum over the two
//! backends, and why). Both backends keep the same contract; the property
//! test in model.rs holds each to it.
//!
//! The redb backend: writes go through one writer thread that takes every request waiting in its
//! queue, applies them in one transaction, commits (fsync) and only then
//! answers each. Concurrent writers share one fsync, every acknowledged write
//! is durable, and since one transaction sees the previous ones, two requests
//! for the same slot can never both succeed.
//!
//! Here: the domain types, the errors, the tables and the redb handle with
//! its reads. `writer` holds the writer thread and its transaction,
//! `handle` the open database and its recovery after a failed commit,
//! `records` the encoding of rows, and `backup` what other processes read
//! (`rerod backup`, `rerod export`). `postgres/` is the other backend.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use jiff::civil::Date;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use crate::auth::PasswordHash;
use crate::booking::BookingError;

mod backend;
mod backup;
mod copy;
mod handle;
mod health;
mod postgres;
mod records;
mod writer;

pub use backend::{Change, HostPresence, PresentBoard, PresentCamera, Store};
pub use backup::{Snapshot, backup, refuse_existing, snapshot};
pub use copy::{Copied, copy, is_database_url};
pub use health::{AuditEntry, MaintenanceRecord, MoveError};

use handle::{Handle, Opener};
use records::{decode_booking, decode_user, get_booking, read_users, user_keys};
use writer::{MAX_BATCH, Write, run_writer};

/// Bumped whenever the layout of the tables below changes.
const SCHEMA_VERSION: u32 = 1;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// E-mail → user record (JSON).
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// (device, date, slot) → booking record (JSON). At most one per key: the uniqueness guarantee.
const BOOKINGS: TableDefinition<(&str, &str, u16), &[u8]> = TableDefinition::new("bookings");
/// (e-mail, date, device, slot): the index behind "my bookings" and the per-user caps.
const USER_BOOKINGS: TableDefinition<(&str, &str, &str, u16), ()> = TableDefinition::new("user_bookings");
/// (confusable skeleton, e-mail) of every account: finds a look-alike of a
/// new address without reading every account. More than one account may
/// share a skeleton (those registered before the check existed).
const EMAIL_SKELETONS: TableDefinition<(&str, &str), ()> = TableDefinition::new("email_skeletons");

const META_SCHEMA_VERSION: &str = "schema_version";
/// The id the next new account gets (u64, little-endian).
const META_NEXT_USER_ID: &str = "next_user_id";
const META_JWT_SECRET: &str = "jwt_secret";
/// The [`crate::auth::skeleton_version`] the stored skeletons were computed with.
const META_SKELETON_VERSION: &str = "email_skeleton_version";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the store's directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot create {path}: {source}")]
    CreateFile { path: PathBuf, source: std::io::Error },
    #[error("{path} already exists; choose a new file")]
    Exists { path: PathBuf },
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
    /// A write failed (a full disk, say) and the store has not committed since.
    #[error("the store cannot write: {0}")]
    Unavailable(String),
    #[error("the database: {0}")]
    Postgres(String),
    #[error(
        "the database {database} has schema version {found}, newer than this rerod knows ({known}): \
         a host of the lab runs a newer rerod; upgrade this one too"
    )]
    SchemaTooNew { database: String, found: u32, known: u32 },
}

impl StoreError {
    /// The file could not be opened because another process (a running
    /// daemon) holds it.
    pub fn is_held(&self) -> bool {
        matches!(self, StoreError::Open { source, .. } if matches!(**source, redb::DatabaseError::DatabaseAlreadyOpen))
    }
}

fn db<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(Box::new(e.into()))
}

/// A registered user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// A number that names the account for good (the old backend's
    /// `user.id`), given by the store when the account is created: whatever
    /// the caller sets is replaced.
    pub id: u64,
    pub email: String,
    pub password_hash: PasswordHash,
    pub created_at: Timestamp,
    pub disabled: bool,
    /// Bumped on password change or disabling; tokens carry the one they were issued under.
    pub credential_generation: u32,
    /// The latest successful login.
    pub last_login: Option<Timestamp>,
    /// Made a lab admin on the host (`rerod user add --admin`); addresses in
    /// `auth.admins` are admins whatever this says.
    pub admin: bool,
}

/// One booked slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Booking {
    pub key: SlotKey,
    pub email: String,
    pub booked_at: Timestamp,
    /// The device it was first booked on, when rerod moved it off a broken board.
    pub moved_from: Option<String>,
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
    /// Another account's address has the same confusable skeleton.
    #[error("the address looks the same as an existing account's")]
    LooksLikeAnother,
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
/// (date, slot) of every booking the user already holds, in (date, device,
/// slot) order. The store knows nothing of policy; the caller supplies it.
/// It may be called more than once for one booking (the PostgreSQL store
/// checks first against its copy of the tables, and again against the
/// database's rows when those differ); only a check against the bookings
/// the user holds when the booking commits decides.
pub type Admit = Box<dyn Fn(&[(Date, u16)]) -> Result<(), BookingError> + Send>;

/// Which of an account's bookings go when it is disabled (those not yet
/// ended, say). The store knows no calendar; the caller decides.
pub type Doomed = Box<dyn Fn(&SlotKey) -> bool + Send>;

/// A change to one account, applied inside the write transaction.
pub type UserUpdate = Box<dyn FnOnce(&mut User) + Send>;

/// An account after an admin changed it, and the bookings that went with it.
#[derive(Clone, Debug)]
pub struct AccountChange {
    pub user: User,
    pub cancelled: Vec<Booking>,
}

/// The redb backend: a handle on the file and its writer; cheap to clone.
#[derive(Clone)]
struct Redb {
    handle: Arc<Handle>,
    writes: mpsc::Sender<Write>,
    writer: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
    path: PathBuf,
}

impl fmt::Debug for Redb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redb").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Redb {
    /// Opens (or creates) the store at `path` and starts its writer thread.
    fn open(path: &Path) -> Result<Redb, StoreError> {
        Redb::open_with(path, Box::new(handle::open_file))
    }

    /// [`Store::open`], with the function that opens the file (at start and
    /// again after a failed commit) given: tests pass one whose disk fills up.
    fn open_with(path: &Path, opener: Opener) -> Result<Redb, StoreError> {
        create_private(path)?;
        let handle = Arc::new(Handle::open(path, opener)?);
        init_schema(&*handle.get()?, path)?;
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let writer_handle = Arc::clone(&handle);
        let writer = std::thread::Builder::new()
            .name("rerod-store-writer".into())
            .spawn(move || run_writer(&writer_handle, rx))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the writer thread: {e}")))?;
        Ok(Redb { handle, writes: tx, writer: Arc::new(std::sync::Mutex::new(Some(writer))), path: path.to_owned() })
    }

    /// Why the last write failed, while the store cannot commit (a full
    /// disk, say); `None` once a write commits again. Reads go on meanwhile.
    pub fn write_failure(&self) -> Option<String> {
        self.handle.write_failure()
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

    /// Copies one consistent snapshot of the open store into a new file `to`.
    pub fn backup_to(&self, to: &Path) -> Result<Counts, StoreError> {
        backup::backup_of(&*self.handle.get()?, to)
    }

    /// Every user and booking, in one read transaction.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        backup::snapshot_of(&*self.handle.get()?)
    }

    /// Checks that the store can be read.
    pub fn check(&self) -> Result<(), StoreError> {
        let txn = self.handle.get()?.begin_read().map_err(db)?;
        txn.open_table(META).map_err(db)?;
        Ok(())
    }

    /// The stored JWT secret, generated by `generate` and stored on first use.
    pub fn jwt_secret_or_insert(
        &self,
        generate: impl FnOnce() -> std::io::Result<Vec<u8>>,
    ) -> Result<Vec<u8>, StoreError> {
        let txn = self.handle.get()?.begin_write().map_err(db)?;
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

    /// Changes the account `email` in one transaction; answers it before
    /// and after, or `None` if there is no such account.
    pub async fn update_user(&self, email: String, update: UserUpdate) -> Result<Option<(User, User)>, StoreError> {
        self.submit(|reply| Write::UpdateUser { email, update, reply }).await?
    }

    /// Every account, by e-mail.
    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        let txn = self.handle.get()?.begin_read().map_err(db)?;
        read_users(&txn.open_table(USERS).map_err(db)?)
    }

    pub fn user(&self, email: &str) -> Result<Option<User>, StoreError> {
        let txn = self.handle.get()?.begin_read().map_err(db)?;
        let users = txn.open_table(USERS).map_err(db)?;
        let record = users.get(email).map_err(db)?;
        record.map(|r| decode_user(email, r.value())).transpose()
    }

    /// Every booking of `device` on `date`, by slot.
    pub fn bookings_on(&self, device: &str, date: Date) -> Result<Vec<Booking>, StoreError> {
        let txn = self.handle.get()?.begin_read().map_err(db)?;
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
        let txn = self.handle.get()?.begin_read().map_err(db)?;
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
        let txn = self.handle.get()?.begin_read().map_err(db)?;
        Ok(Counts {
            users: txn.open_table(USERS).map_err(db)?.len().map_err(db)?,
            bookings: txn.open_table(BOOKINGS).map_err(db)?.len().map_err(db)?,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    pub users: u64,
    pub bookings: u64,
}

/// Creates the store's file 0600 and the directories rerod makes for it
/// 0700, whatever the umask: the file holds every password hash and the
/// generated token secret. A file an older rerod created readable by others
/// is tightened; a directory that already existed is the admin's and keeps
/// its mode.
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        let created = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir);
        // The umask may have taken bits off the mode asked for, never added any.
        created.map_err(|source| StoreError::CreateDir { path: dir.to_owned(), source })?;
    }
    let open = |source| StoreError::CreateFile { path: path.to_owned(), source };
    // redb takes an empty file as a new database.
    let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path).map_err(open)?;
    let mode = file.metadata().map_err(open)?.permissions().mode();
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700)).map_err(open)?;
    }
    Ok(())
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
        health::create_tables(&txn)?;
    }
    index_skeletons(&txn)?;
    number_accounts(&txn)?;
    txn.commit().map_err(db_err)?;
    Ok(())
}

/// Gives every account without an id one, oldest first, after the highest
/// id given so far: a store from before accounts had ids. One pass over the
/// accounts at open, and nothing to write once every account has one.
fn number_accounts(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(db_err)?;
    let mut users = txn.open_table(USERS).map_err(db_err)?;
    let all = read_users(&users)?;
    let mut next = next_user_id(&meta)?.max(all.iter().map(|u| u.id + 1).max().unwrap_or(1));
    let mut unnumbered: Vec<User> = all.into_iter().filter(|u| u.id == 0).collect();
    unnumbered.sort_by(|a, b| (a.created_at, &a.email).cmp(&(b.created_at, &b.email)));
    let n = unnumbered.len();
    for mut user in unnumbered {
        user.id = next;
        next += 1;
        users.insert(user.email.as_str(), records::encode_user(&user).as_slice()).map_err(db_err)?;
    }
    meta.insert(META_NEXT_USER_ID, next.to_le_bytes().as_slice()).map_err(db_err)?;
    if n > 0 {
        tracing::info!(accounts = n, "numbered the accounts from before accounts had ids");
    }
    Ok(())
}

/// The id the next new account gets (1 in a new store).
fn next_user_id(meta: &impl redb::ReadableTable<&'static str, &'static [u8]>) -> Result<u64, StoreError> {
    match meta.get(META_NEXT_USER_ID).map_err(db_err)? {
        None => Ok(1),
        Some(bytes) => bytes
            .value()
            .try_into()
            .map(u64::from_le_bytes)
            .map_err(|_| StoreError::Corrupt("the next account id is not 8 bytes".into())),
    }
}

/// Builds the skeleton index afresh unless it covers every account under
/// today's rules: a store from before the index existed, or one whose
/// skeletons came from other Unicode data, or one an older rerod added
/// accounts to without indexing them. One pass over the accounts, at open.
fn index_skeletons(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let version = crate::auth::skeleton_version();
    let mut meta = txn.open_table(META).map_err(db_err)?;
    let users = txn.open_table(USERS).map_err(db_err)?;
    let stored = meta.get(META_SKELETON_VERSION).map_err(db_err)?.map(|v| v.value().to_vec());
    let n_indexed = txn.open_table(EMAIL_SKELETONS).map_err(db_err)?.len().map_err(db_err)?;
    if stored.as_deref() == Some(version.as_bytes()) && n_indexed == users.len().map_err(db_err)? {
        return Ok(());
    }
    txn.delete_table(EMAIL_SKELETONS).map_err(db_err)?;
    let mut index = txn.open_table(EMAIL_SKELETONS).map_err(db_err)?;
    let mut n_users = 0;
    for entry in users.iter().map_err(db_err)? {
        let (email, _) = entry.map_err(db_err)?;
        let email = email.value();
        records::index_skeleton(&mut index, &crate::auth::email_skeleton(email), email)?;
        n_users += 1;
    }
    meta.insert(META_SKELETON_VERSION, version.as_bytes()).map_err(db_err)?;
    tracing::info!(accounts = n_users, "indexed the look-alike skeletons of the accounts' addresses");
    Ok(())
}

/// [`db`] under another name, for functions whose `db` parameter shadows it.
fn db_err<E: Into<redb::Error>>(e: E) -> StoreError {
    db(e)
}

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;
