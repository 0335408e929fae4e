//! What the store keeps for board health: each device's maintenance (set by
//! an admin, kept across restarts), the audit log of admins' actions,
//! and moving a booking off a broken board in one transaction.

use jiff::Timestamp;
use jiff::civil::Date;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

#[cfg(test)]
use super::Store;
use super::records::{get_booking, insert_booking, parse_date, remove_booking};
use super::writer::Write;
use super::{BOOKINGS, Booking, Redb, SlotKey, StoreError, db, db_err};

/// Device id → its maintenance record (JSON), while it is in maintenance.
pub(super) const MAINTENANCE: TableDefinition<&str, &[u8]> = TableDefinition::new("maintenance");
/// Sequence number → audit entry (JSON), oldest first.
pub(super) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// Why a device is in maintenance, and who put it there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceRecord {
    pub reason: String,
    pub set_by: String,
    pub set_at_us: i64,
}

/// One admin action on a board's health, as the audit log keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at_us: i64,
    pub actor: String,
    pub device: String,
    /// `maintenance_set`, `maintenance_cleared`, `check_requested`,
    /// `booking_cancelled`, `account_disabled`, `account_enabled`.
    pub action: String,
    #[serde(default)]
    pub detail: String,
    /// The account acted on (cancelled bookings, disabled accounts); entries
    /// written before this field existed have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The client address the admin acted from (behind trusted proxies), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl AuditEntry {
    pub fn at(&self) -> Timestamp {
        Timestamp::from_microsecond(self.at_us).unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

/// Why a booking did not move.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// The booking is gone (cancelled meanwhile).
    #[error("the booking no longer exists")]
    NotBooked,
    /// Someone holds the same slot on the target device.
    #[error("the slot is taken on {0}")]
    Taken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(MAINTENANCE).map_err(db_err)?;
    txn.open_table(AUDIT).map_err(db_err)?;
    Ok(())
}

/// Moves the booking of `key` to the same date and slot on `to_device`,
/// keeping its holder and `booked_at`. The target must be free: the store's
/// one-booking-per-slot guarantee holds for moves as for bookings.
pub(super) fn move_booking(
    bookings: &mut redb::Table<'_, (&'static str, &'static str, u16), &'static [u8]>,
    index: &mut redb::Table<'_, (&'static str, &'static str, &'static str, u16), ()>,
    key: SlotKey,
    to_device: String,
) -> Result<Result<Booking, MoveError>, StoreError> {
    let Some(booking) = get_booking(bookings, key.clone())? else { return Ok(Err(MoveError::NotBooked)) };
    let target = SlotKey { device: to_device.clone(), ..key };
    if get_booking(bookings, target.clone())?.is_some() {
        return Ok(Err(MoveError::Taken(to_device)));
    }
    remove_booking(bookings, index, &booking)?;
    // A booking moved twice still names the board it was booked on.
    let moved_from = booking.moved_from.clone().unwrap_or_else(|| booking.key.device.clone());
    let moved = Booking { key: target, moved_from: Some(moved_from), ..booking };
    insert_booking(bookings, index, &moved)?;
    Ok(Ok(moved))
}

pub(super) fn set_maintenance(
    txn: &WriteTransaction,
    device: &str,
    record: Option<&MaintenanceRecord>,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(MAINTENANCE).map_err(db_err)?;
    match record {
        Some(record) => {
            let bytes = serde_json::to_vec(record).expect("a maintenance record always serializes");
            table.insert(device, bytes.as_slice()).map_err(db_err)?;
        }
        None => {
            table.remove(device).map_err(db_err)?;
        }
    }
    Ok(())
}

pub(super) fn append_audit(txn: &WriteTransaction, entry: &AuditEntry) -> Result<(), StoreError> {
    let mut table = txn.open_table(AUDIT).map_err(db_err)?;
    let next = table.last().map_err(db_err)?.map_or(0, |(k, _)| k.value() + 1);
    let bytes = serde_json::to_vec(entry).expect("an audit entry always serializes");
    table.insert(next, bytes.as_slice()).map_err(db_err)?;
    Ok(())
}

impl Redb {
    /// Moves the booking of `key` to `to_device`'s same slot, in one transaction.
    pub async fn move_booking(&self, key: SlotKey, to_device: String) -> Result<Booking, MoveError> {
        self.submit(|reply| Write::MoveBooking { key, to_device, reply }).await?
    }

    /// Puts `device` in maintenance (`Some`) or takes it out (`None`), and
    /// records `audit`, in one transaction.
    pub async fn set_maintenance(
        &self,
        device: String,
        set: Option<MaintenanceRecord>,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.submit(|reply| Write::Maintenance { device, set, audit, reply }).await?
    }

    /// Appends to the audit log.
    pub async fn audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        self.submit(|reply| Write::Audit { entry, reply }).await?
    }

    /// Every device in maintenance.
    pub fn maintenance(&self) -> Result<Vec<(String, MaintenanceRecord)>, StoreError> {
        let txn = self.handle.get()?.begin_read().map_err(db)?;
        let table = txn.open_table(MAINTENANCE).map_err(db)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db)? {
            let (k, v) = entry.map_err(db)?;
            let record = serde_json::from_slice(v.value())
                .map_err(|e| StoreError::Corrupt(format!("maintenance record: {e}")))?;
            out.push((k.value().to_owned(), record));
        }
        Ok(out)
    }

    /// The audit log of `device` (every device with `None`), newest first, at most `limit`.
    pub fn audit_log(&self, device: Option<&str>, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let txn = self.handle.get()?.begin_read().map_err(db)?;
        let table = txn.open_table(AUDIT).map_err(db)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db)?.rev() {
            let (_, v) = entry.map_err(db)?;
            let entry: AuditEntry =
                serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt(format!("audit entry: {e}")))?;
            if device.is_none_or(|d| d == entry.device) {
                out.push(entry);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Every booking of `device` from `from` on, by date and slot.
    pub fn bookings_from(&self, device: &str, from: Date) -> Result<Vec<Booking>, StoreError> {
        let txn = self.handle.get()?.begin_read().map_err(db)?;
        let bookings = txn.open_table(BOOKINGS).map_err(db)?;
        let day = from.to_string();
        // Dates are stored as YYYY-MM-DD, so text order is date order.
        let range = bookings.range((device, day.as_str(), 0u16)..=(device, "9999-99-99", u16::MAX)).map_err(db)?;
        let mut out = Vec::new();
        for entry in range {
            let (k, v) = entry.map_err(db)?;
            let (_, date, slot) = k.value();
            let key = SlotKey { device: device.to_owned(), date: parse_date(date)?, slot };
            out.push(super::records::decode_booking(key, v.value())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(device: &str, slot: u16) -> SlotKey {
        SlotKey { device: device.into(), date: "2026-12-01".parse().unwrap(), slot }
    }

    #[tokio::test]
    async fn a_moved_booking_keeps_its_holder_and_slot_and_never_lands_on_a_taken_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let now = Timestamp::now();
        let admit = || -> super::super::Admit { Box::new(|_| Ok(())) };
        store.book(key("a", 9), "ann@lab".into(), now, admit()).await.unwrap();
        store.book(key("a", 10), "ann@lab".into(), now, admit()).await.unwrap();
        store.book(key("b", 10), "bob@lab".into(), now, admit()).await.unwrap();
        let moved = store.move_booking(key("a", 9), "b".into()).await.unwrap();
        assert_eq!((moved.key, moved.email.as_str(), moved.moved_from.as_deref()), (key("b", 9), "ann@lab", Some("a")));
        assert!(matches!(store.move_booking(key("a", 10), "b".into()).await, Err(MoveError::Taken(_))));
        assert!(matches!(store.move_booking(key("a", 9), "b".into()).await, Err(MoveError::NotBooked)));
        let anns: Vec<_> = store.bookings_of("ann@lab").unwrap().into_iter().map(|b| b.key).collect();
        assert_eq!(anns, [key("a", 10), key("b", 9)]);
        assert_eq!(store.bookings_from("a", "2026-11-30".parse().unwrap()).unwrap().len(), 1);
        assert!(store.bookings_from("a", "2026-12-02".parse().unwrap()).unwrap().is_empty());
    }

    #[tokio::test]
    async fn maintenance_and_the_audit_log_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let entry = |action: &str| AuditEntry {
            at_us: 1,
            actor: "admin@lab".into(),
            device: "a".into(),
            action: action.into(),
            detail: String::new(),
            user: None,
            address: None,
        };
        {
            let store = Store::open(&path).unwrap();
            let record = MaintenanceRecord { reason: "motor".into(), set_by: "admin@lab".into(), set_at_us: 1 };
            store.set_maintenance("a".into(), Some(record), entry("maintenance_set")).await.unwrap();
            store.audit(entry("check_requested")).await.unwrap();
            store.close().await;
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.maintenance().unwrap()[0].1.reason, "motor");
        let actions: Vec<_> = store.audit_log(Some("a"), 10).unwrap().into_iter().map(|e| e.action).collect();
        assert_eq!(actions, ["check_requested", "maintenance_set"]);
        store.set_maintenance("a".into(), None, entry("maintenance_cleared")).await.unwrap();
        assert!(store.maintenance().unwrap().is_empty());
        assert!(store.audit_log(Some("b"), 10).unwrap().is_empty());
    }
}
