//! What this host keeps of the shared tables: a copy in memory that every
//! read is served from, so reads stay synchronous and cheap (a token check
//! per request), and go on while the database is unreachable.
//!
//! The copy follows the database through notifications: every write
//! transaction sends one (`pg_notify`, delivered on commit) naming what it
//! changed, and each host's listener reads those rows again. A host applies
//! its own writes to its copy as soon as they commit (it reads its own
//! writes) and reads them again when their notification arrives, so that the
//! copy ends at the database's state whatever order the two come in. After
//! the listener loses its connection it reads everything again.

use std::collections::{BTreeMap, BTreeSet};

use jiff::civil::Date;
use serde::{Deserialize, Serialize};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::super::{AuditEntry, Booking, MaintenanceRecord, SlotKey, StoreError, User};
use super::{pg, timestamp_us};
use crate::auth::PasswordHash;

/// The channel every host listens on.
pub(super) const CHANNEL: &str = "rerod";

/// What a committed transaction changed, as its notification says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Note {
    User(String),
    /// Every booking of (device, date).
    Day(String, String),
    /// A booking moved off a broken board (its two days come as `Day`s too).
    Moved {
        email: String,
        date: String,
        slot: u16,
        from: String,
        to: String,
    },
    Maintenance,
    Audit,
}

/// A notification: which host sent it, and what changed.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Envelope {
    pub origin: u64,
    pub notes: Vec<Note>,
    /// For a booking or cancellation: how many days the sending host's
    /// listener had read when the write was sent (`Mirror::days_read`). The
    /// sender's listener need not read its days back if it has read none
    /// since (`Shared::follow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<u64>,
}

#[derive(Debug, Default)]
pub(super) struct Mirror {
    pub users: BTreeMap<String, User>,
    pub bookings: BTreeMap<(String, Date, u16), Booking>,
    /// (e-mail, date, device, slot): "my bookings" in their documented order.
    pub by_holder: BTreeSet<(String, Date, String, u16)>,
    pub maintenance: BTreeMap<String, MaintenanceRecord>,
    pub audit: BTreeMap<i64, AuditEntry>,
    /// How many days the listener has read again from the database: a write
    /// of this host's during which it changed may have undone a later change
    /// of another host's (`Shared::apply_own`).
    pub days_read: u64,
}

impl Mirror {
    pub(super) fn put_booking(&mut self, booking: Booking) {
        let k = &booking.key;
        self.by_holder.insert((booking.email.clone(), k.date, k.device.clone(), k.slot));
        if let Some(old) = self.bookings.insert((k.device.clone(), k.date, k.slot), booking.clone())
            && old.email != booking.email
        {
            self.by_holder.remove(&(old.email, k.date, k.device.clone(), k.slot));
        }
    }

    pub(super) fn remove_booking(&mut self, key: &SlotKey) {
        if let Some(old) = self.bookings.remove(&(key.device.clone(), key.date, key.slot)) {
            self.by_holder.remove(&(old.email, key.date, key.device.clone(), key.slot));
        }
    }

    /// Replaces the bookings of (device, date) with `now`; whether they differed.
    pub(super) fn replace_day(&mut self, device: &str, date: Date, now: Vec<Booking>) -> bool {
        self.days_read += 1;
        let before = self.day(device, date);
        if before == now {
            return false;
        }
        for booking in &before {
            self.remove_booking(&booking.key);
        }
        for booking in now {
            self.put_booking(booking);
        }
        true
    }

    pub(super) fn day(&self, device: &str, date: Date) -> Vec<Booking> {
        let from = (device.to_owned(), date, 0u16);
        let to = (device.to_owned(), date, u16::MAX);
        self.bookings.range(from..=to).map(|(_, b)| b.clone()).collect()
    }

    pub(super) fn set_user(&mut self, email: &str, user: Option<User>) {
        match user {
            Some(user) => self.users.insert(email.to_owned(), user),
            None => self.users.remove(email),
        };
    }
}

pub(super) const USER_COLUMNS: &str =
    "email, id, password_hash, created_at_us, disabled, credential_generation, last_login_us, admin";
/// The columns [`booking_from`] reads, as a macro so that statements built
/// with `concat!` can be constants (prepared once per connection).
macro_rules! booking_columns {
    () => {
        "device, date::text, slot, email, booked_at_us, moved_from"
    };
}
pub(super) const BOOKING_COLUMNS: &str = booking_columns!();
/// The bookings of one (device, date): `$1`, `$2`.
pub(super) const READ_DAY: &str =
    concat!("SELECT ", booking_columns!(), " FROM bookings WHERE device = $1 AND date = $2::text::date ORDER BY slot");
const AUDIT_COLUMNS: &str = "seq, at_us, actor, device, action, detail, account, address";

/// The statement that adds one account, its values bound by [`UserRow::params`].
pub(super) fn insert_user_sql() -> String {
    format!("INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
}

/// An account's values as the database keeps them, in the order of
/// [`USER_COLUMNS`]: what [`user_from`] reads back.
pub(super) struct UserRow<'a> {
    email: &'a str,
    id: i64,
    password_hash: &'a str,
    created_at_us: i64,
    disabled: bool,
    credential_generation: i64,
    last_login_us: Option<i64>,
    admin: bool,
}

impl<'a> UserRow<'a> {
    pub(super) fn of(user: &'a User) -> UserRow<'a> {
        UserRow {
            email: &user.email,
            id: user.id as i64,
            password_hash: user.password_hash.as_stored(),
            created_at_us: user.created_at.as_microsecond(),
            disabled: user.disabled,
            credential_generation: i64::from(user.credential_generation),
            last_login_us: user.last_login.map(|t| t.as_microsecond()),
            admin: user.admin,
        }
    }

    /// The values as `$1` to `$8`.
    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 8] {
        [
            &self.email,
            &self.id,
            &self.password_hash,
            &self.created_at_us,
            &self.disabled,
            &self.credential_generation,
            &self.last_login_us,
            &self.admin,
        ]
    }
}

pub(super) fn user_from(row: &Row) -> Result<User, StoreError> {
    Ok(User {
        email: row.get(0),
        id: row.get::<_, i64>(1) as u64,
        password_hash: PasswordHash::from_stored(row.get(2)),
        created_at: timestamp_us(row.get(3))?,
        disabled: row.get(4),
        credential_generation: row.get::<_, i64>(5) as u32,
        last_login: row.get::<_, Option<i64>>(6).map(timestamp_us).transpose()?,
        admin: row.get(7),
    })
}

pub(super) fn booking_from(row: &Row) -> Result<Booking, StoreError> {
    let date: String = row.get(1);
    let date = date.parse().map_err(|_| StoreError::Corrupt(format!("bad date {date:?} in a booking")))?;
    Ok(Booking {
        key: SlotKey { device: row.get(0), date, slot: row.get::<_, i32>(2) as u16 },
        email: row.get(3),
        booked_at: timestamp_us(row.get(4))?,
        moved_from: row.get(5),
    })
}

fn audit_from(row: &Row) -> (i64, AuditEntry) {
    let entry = AuditEntry {
        at_us: row.get(1),
        actor: row.get(2),
        device: row.get(3),
        action: row.get(4),
        detail: row.get(5),
        user: row.get(6),
        address: row.get(7),
    };
    (row.get(0), entry)
}

/// Everything, read in one repeatable-read transaction (one snapshot).
pub(super) async fn load_all(client: &mut Client) -> Result<Mirror, StoreError> {
    let txn = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg)?;
    let mut mirror = Mirror::default();
    for row in txn.query(&format!("SELECT {USER_COLUMNS} FROM users"), &[]).await.map_err(pg)? {
        let user = user_from(&row)?;
        mirror.users.insert(user.email.clone(), user);
    }
    for row in txn.query(&format!("SELECT {BOOKING_COLUMNS} FROM bookings"), &[]).await.map_err(pg)? {
        mirror.put_booking(booking_from(&row)?);
    }
    mirror.maintenance = read_maintenance(&txn).await?;
    for row in txn.query(&format!("SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq"), &[]).await.map_err(pg)? {
        let (seq, entry) = audit_from(&row);
        mirror.audit.insert(seq, entry);
    }
    txn.commit().await.map_err(pg)?;
    Ok(mirror)
}

pub(super) async fn read_user(client: &Client, email: &str) -> Result<Option<User>, StoreError> {
    let row =
        client.query_opt(&format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1"), &[&email]).await.map_err(pg)?;
    row.as_ref().map(user_from).transpose()
}

/// The bookings of (device, date); `read_day` is [`READ_DAY`] prepared on `client`.
pub(super) async fn read_day(
    client: &Client,
    read_day: &Statement,
    device: &str,
    date: &str,
) -> Result<Vec<Booking>, StoreError> {
    let rows = client.query(read_day, &[&device, &date]).await.map_err(pg)?;
    rows.iter().map(booking_from).collect()
}

pub(super) async fn read_maintenance(
    client: &impl tokio_postgres::GenericClient,
) -> Result<BTreeMap<String, MaintenanceRecord>, StoreError> {
    let rows = client.query("SELECT device, reason, set_by, set_at_us FROM maintenance", &[]).await.map_err(pg)?;
    Ok(rows
        .iter()
        .map(|row| (row.get(0), MaintenanceRecord { reason: row.get(1), set_by: row.get(2), set_at_us: row.get(3) }))
        .collect())
}

pub(super) async fn read_audit_after(
    client: &impl tokio_postgres::GenericClient,
    seq: i64,
) -> Result<Vec<(i64, AuditEntry)>, StoreError> {
    let rows = client
        .query(&format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > $1 ORDER BY seq"), &[&seq])
        .await
        .map_err(pg)?;
    Ok(rows.iter().map(audit_from).collect())
}
