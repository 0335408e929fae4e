//! Consistent backups and snapshots of a redb store, for `rerod backup` and
//! `rerod export`: of a file no daemon has open, or of the running daemon's
//! own store, which it makes when asked over its control socket (the daemon
//! holds its file exclusively, so no other process can open it meanwhile).

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use redb::backends::FileBackend;
use redb::{ConcurrencyMode, Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::health::{AUDIT, MAINTENANCE};
use super::records::{decode_booking, parse_date, read_users};
use super::{BOOKINGS, Booking, Counts, EMAIL_SKELETONS, META, SlotKey, StoreError, USER_BOOKINGS, USERS, User, db};

/// Everything in a store, for `rerod export`.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub users: Vec<User>,
    pub bookings: Vec<Booking>,
}

fn open_read_only(path: &Path) -> Result<redb::ReadOnlyDatabase, StoreError> {
    Database::builder()
        .set_concurrency_mode(ConcurrencyMode::ExclusiveWriter)
        .open_read_only(path)
        .map_err(|source| StoreError::Open { path: path.to_owned(), source: Box::new(source) })
}

/// Copies one consistent snapshot of the store file at `from`, which no
/// daemon has open, into a new store file `to` (see [`backup_of`]). While a
/// daemon runs on it, this fails with [`StoreError::is_held`].
pub fn backup(from: &Path, to: &Path) -> Result<Counts, StoreError> {
    refuse_existing(to)?;
    backup_of(&open_read_only(from)?, to)
}

/// Refuses `to` when it exists: a backup never overwrites a file.
pub fn refuse_existing(to: &Path) -> Result<(), StoreError> {
    match to.exists() {
        true => Err(StoreError::Exists { path: to.to_owned() }),
        false => Ok(()),
    }
}

/// Copies one consistent snapshot of `source` into a new store file `to`,
/// which must not exist yet. The copy is written beside `to` and renamed
/// into place when complete.
///
/// The copy holds the JWT secret and every password hash, so it is created
/// readable by its owner only (mode 0600). It is created with that mode
/// rather than changed afterwards, so no other user can open it in between.
pub(super) fn backup_of(source: &impl ReadableDatabase, to: &Path) -> Result<Counts, StoreError> {
    refuse_existing(to)?;
    let snapshot = source.begin_read().map_err(db)?;
    let partial = to.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(|source| StoreError::CreateFile { path: partial.clone(), source })?;
    let open = |source| StoreError::Open { path: partial.clone(), source: Box::new(source) };
    let target = Database::builder().create_with_backend(FileBackend::new(file).map_err(open)?).map_err(open)?;
    let txn = target.begin_write().map_err(db)?;
    let counts = {
        fn copy<K: redb::Key + 'static, V: redb::Value + 'static>(
            snapshot: &redb::ReadTransaction,
            txn: &redb::WriteTransaction,
            table: TableDefinition<K, V>,
        ) -> Result<u64, StoreError> {
            let mut to = txn.open_table(table).map_err(db)?;
            let from = match snapshot.open_table(table) {
                Ok(from) => from,
                // A store written by an older rerod, not opened by this one
                // since, lacks the tables added after it.
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
                Err(e) => return Err(db(e)),
            };
            let mut n = 0;
            for entry in from.iter().map_err(db)? {
                let (k, v) = entry.map_err(db)?;
                to.insert(k.value(), v.value()).map_err(db)?;
                n += 1;
            }
            Ok(n)
        }
        // Every table, so that a restored store is the store: accounts and
        // their look-alike index, bookings and their index, maintenance and
        // the audit log, and the JWT secret in META.
        copy(&snapshot, &txn, META)?;
        copy(&snapshot, &txn, USER_BOOKINGS)?;
        copy(&snapshot, &txn, EMAIL_SKELETONS)?;
        copy(&snapshot, &txn, MAINTENANCE)?;
        copy(&snapshot, &txn, AUDIT)?;
        Counts { users: copy(&snapshot, &txn, USERS)?, bookings: copy(&snapshot, &txn, BOOKINGS)? }
    };
    txn.commit().map_err(db)?;
    drop(target);
    std::fs::rename(&partial, to)
        .map_err(|e| StoreError::Corrupt(format!("cannot move the backup into place: {e}")))?;
    Ok(counts)
}

/// Reads every user and booking of the store file at `path`, which no
/// daemon has open (see [`backup`]).
pub fn snapshot(path: &Path) -> Result<Snapshot, StoreError> {
    snapshot_of(&open_read_only(path)?)
}

/// Reads every user and booking of `source`, in one read transaction.
pub(super) fn snapshot_of(source: &impl ReadableDatabase) -> Result<Snapshot, StoreError> {
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
