//! `rerod store copy`: moves a lab's data between the two backends (or
//! between two stores of one kind), for a lab that grows from one host to
//! several, or back. Accounts with their ids and password hashes, bookings,
//! maintenance, the audit log, the next account id and the generated JWT
//! secret (so issued tokens stay valid) are copied.
//!
//! The source is read in one consistent snapshot; a redb source must not
//! be open in a running daemon (rerod opens it as its only writer, and the
//! copy refuses to start then). The target must be new: a redb file that
//! does not exist yet, or a PostgreSQL database with no accounts and no
//! bookings. Nothing is written to a PostgreSQL target unless all of it is
//! (one transaction); a redb target is written beside its name and renamed
//! into place once complete.

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable};

use super::health::{append_audit, set_maintenance};
use super::postgres::Postgres;
use super::records::{decode_booking, encode_user, index_skeleton, insert_booking, parse_date};
use super::{
    AuditEntry, BOOKINGS, Booking, EMAIL_SKELETONS, META, META_JWT_SECRET, META_NEXT_USER_ID, MaintenanceRecord, Redb,
    SlotKey, StoreError, USER_BOOKINGS, USERS, User, db, next_user_id,
};

/// Everything a store holds that a lab keeps.
#[derive(Clone, Debug, Default)]
pub(super) struct Dump {
    pub users: Vec<User>,
    pub bookings: Vec<Booking>,
    pub maintenance: Vec<(String, MaintenanceRecord)>,
    /// Oldest first.
    pub audit: Vec<AuditEntry>,
    pub jwt_secret: Option<Vec<u8>>,
    pub next_user_id: u64,
}

/// What `copy` moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copied {
    pub users: usize,
    pub bookings: usize,
    pub maintenance: usize,
    pub audit: usize,
}

/// Whether `store` names a PostgreSQL database rather than a redb file.
pub fn is_database_url(store: &str) -> bool {
    store.starts_with("postgres://") || store.starts_with("postgresql://")
}

/// Copies the store `from` into the new store `to`; each is a redb file's
/// path or a `postgres://` URL.
pub fn copy(from: &str, to: &str) -> Result<Copied, StoreError> {
    let refuse = |why: String| Err(StoreError::Corrupt(why));
    if !is_database_url(to) && Path::new(to).exists() {
        return refuse(format!("{to} already exists; copy into a new file"));
    }
    if !is_database_url(from) && !Path::new(from).exists() {
        return refuse(format!("{from} does not exist"));
    }
    let dump = if is_database_url(from) {
        Postgres::open(from, Path::new("."))?.dump()?
    } else {
        dump_redb(&Redb::open(Path::new(from))?)?
    };
    let copied = Copied {
        users: dump.users.len(),
        bookings: dump.bookings.len(),
        maintenance: dump.maintenance.len(),
        audit: dump.audit.len(),
    };
    if is_database_url(to) {
        Postgres::open(to, Path::new("."))?.load(dump)?;
    } else {
        load_redb(Path::new(to), &dump)?;
    }
    Ok(copied)
}

fn dump_redb(store: &Redb) -> Result<Dump, StoreError> {
    let database = store.handle.get()?;
    let txn = database.begin_read().map_err(db)?;
    let mut bookings = Vec::new();
    for entry in txn.open_table(BOOKINGS).map_err(db)?.iter().map_err(db)? {
        let (k, v) = entry.map_err(db)?;
        let (device, day, slot) = k.value();
        let key = SlotKey { device: device.to_owned(), date: parse_date(day)?, slot };
        bookings.push(decode_booking(key, v.value())?);
    }
    let meta = txn.open_table(META).map_err(db)?;
    let jwt_secret = meta.get(META_JWT_SECRET).map_err(db)?.map(|v| v.value().to_vec());
    let mut audit = store.audit_log(None, usize::MAX)?;
    audit.reverse();
    Ok(Dump {
        users: store.users()?,
        bookings,
        maintenance: store.maintenance()?,
        audit,
        jwt_secret,
        next_user_id: next_user_id(&meta)?,
    })
}

fn load_redb(to: &Path, dump: &Dump) -> Result<(), StoreError> {
    let partial = to.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    {
        let store = Redb::open(&partial)?;
        let database = store.handle.get()?;
        let txn = database.begin_write().map_err(db)?;
        {
            let mut users = txn.open_table(USERS).map_err(db)?;
            let mut skeletons = txn.open_table(EMAIL_SKELETONS).map_err(db)?;
            for user in &dump.users {
                users.insert(user.email.as_str(), encode_user(user).as_slice()).map_err(db)?;
                index_skeleton(&mut skeletons, &crate::auth::email_skeleton(&user.email), &user.email)?;
            }
            let mut bookings = txn.open_table(BOOKINGS).map_err(db)?;
            let mut index = txn.open_table(USER_BOOKINGS).map_err(db)?;
            for booking in &dump.bookings {
                insert_booking(&mut bookings, &mut index, booking)?;
            }
            let mut meta = txn.open_table(META).map_err(db)?;
            meta.insert(META_NEXT_USER_ID, dump.next_user_id.to_le_bytes().as_slice()).map_err(db)?;
            if let Some(secret) = &dump.jwt_secret {
                meta.insert(META_JWT_SECRET, secret.as_slice()).map_err(db)?;
            }
        }
        for (device, record) in &dump.maintenance {
            set_maintenance(&txn, device, Some(record))?;
        }
        for entry in &dump.audit {
            append_audit(&txn, entry)?;
        }
        txn.commit().map_err(db)?;
        drop(database);
        // Committed; the writer thread is stopped before the file is moved.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| StoreError::Corrupt(format!("cannot start a runtime: {e}")))?;
        runtime.block_on(store.close());
    }
    std::fs::rename(&partial, to).map_err(|e| StoreError::Corrupt(format!("cannot move the copy into place: {e}")))
}
