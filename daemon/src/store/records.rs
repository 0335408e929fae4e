//! How users and bookings are laid out in the store's tables: their JSON records, and the row-level reads, inserts and removals that readers and the writer share.

use jiff::Timestamp;
use jiff::civil::Date;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::{Booking, SlotKey, StoreError, User, db, db_err};
use crate::auth::PasswordHash;

#[derive(Serialize, Deserialize)]
struct UserRecord {
    /// Absent (0) in records written before accounts had ids, until the
    /// store numbers them at open.
    #[serde(default)]
    id: u64,
    password_hash: String,
    created_at_us: i64,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    credential_generation: u32,
    /// Absent in records written before logins were recorded.
    #[serde(default)]
    last_login_us: Option<i64>,
    #[serde(default)]
    admin: bool,
}

#[derive(Serialize, Deserialize)]
struct BookingRecord {
    email: String,
    booked_at_us: i64,
    /// The device it was booked on, when rerod moved it off a broken board.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    moved_from: Option<String>,
}

pub(super) fn read_users(table: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<Vec<User>, StoreError> {
    let mut users = Vec::new();
    for entry in table.iter().map_err(db)? {
        let (k, v) = entry.map_err(db)?;
        users.push(decode_user(k.value(), v.value())?);
    }
    Ok(users)
}

pub(super) fn parse_date(text: &str) -> Result<Date, StoreError> {
    text.parse().map_err(|_| StoreError::Corrupt(format!("bad date {text:?} in a booking key")))
}

fn timestamp_us(us: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_microsecond(us).map_err(|_| StoreError::Corrupt(format!("timestamp {us} out of range")))
}

pub(super) fn decode_user(email: &str, bytes: &[u8]) -> Result<User, StoreError> {
    let r: UserRecord = serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("user record: {e}")))?;
    Ok(User {
        id: r.id,
        email: email.to_owned(),
        password_hash: PasswordHash::from_stored(r.password_hash),
        created_at: timestamp_us(r.created_at_us)?,
        disabled: r.disabled,
        credential_generation: r.credential_generation,
        last_login: r.last_login_us.map(timestamp_us).transpose()?,
        admin: r.admin,
    })
}

pub(super) fn encode_user(user: &User) -> Vec<u8> {
    serde_json::to_vec(&UserRecord {
        id: user.id,
        password_hash: user.password_hash.as_stored().to_owned(),
        created_at_us: user.created_at.as_microsecond(),
        disabled: user.disabled,
        credential_generation: user.credential_generation,
        last_login_us: user.last_login.map(|t| t.as_microsecond()),
        admin: user.admin,
    })
    .expect("a user record always serializes")
}

pub(super) fn decode_booking(key: SlotKey, bytes: &[u8]) -> Result<Booking, StoreError> {
    let r: BookingRecord =
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("booking record: {e}")))?;
    Ok(Booking { key, email: r.email, booked_at: timestamp_us(r.booked_at_us)?, moved_from: r.moved_from })
}

fn encode_booking(booking: &Booking) -> Vec<u8> {
    serde_json::to_vec(&BookingRecord {
        email: booking.email.clone(),
        booked_at_us: booking.booked_at.as_microsecond(),
        moved_from: booking.moved_from.clone(),
    })
    .expect("a booking record always serializes")
}

/// The booking of `key`, if there is one.
pub(super) fn get_booking(
    bookings: &impl ReadableTable<(&'static str, &'static str, u16), &'static [u8]>,
    key: SlotKey,
) -> Result<Option<Booking>, StoreError> {
    let day = key.date.to_string();
    let record = bookings.get((key.device.as_str(), day.as_str(), key.slot)).map_err(db_err)?;
    record.map(|v| decode_booking(key, v.value())).transpose()
}

/// Stores a booking and its entry in the per-user index.
pub(super) fn insert_booking(
    bookings: &mut redb::Table<'_, (&'static str, &'static str, u16), &'static [u8]>,
    index: &mut redb::Table<'_, (&'static str, &'static str, &'static str, u16), ()>,
    booking: &Booking,
) -> Result<(), StoreError> {
    let (key, day) = (&booking.key, booking.key.date.to_string());
    bookings
        .insert((key.device.as_str(), day.as_str(), key.slot), encode_booking(booking).as_slice())
        .map_err(db_err)?;
    index.insert((booking.email.as_str(), day.as_str(), key.device.as_str(), key.slot), ()).map_err(db_err)?;
    Ok(())
}

/// Removes a booking and its entry in the per-user index.
pub(super) fn remove_booking(
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
pub(super) fn user_keys(
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

/// Whether an account other than `email` has the confusable skeleton `skeleton`.
pub(super) fn skeleton_taken(
    index: &impl ReadableTable<(&'static str, &'static str), ()>,
    skeleton: &str,
    email: &str,
) -> Result<bool, StoreError> {
    for entry in index.range((skeleton, "")..).map_err(db)? {
        let (key, _) = entry.map_err(db)?;
        let (found, owner) = key.value();
        if found != skeleton {
            return Ok(false);
        }
        if owner != email {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Adds `email`, whose confusable skeleton is `skeleton`, to the skeleton index.
pub(super) fn index_skeleton(
    index: &mut redb::Table<'_, (&'static str, &'static str), ()>,
    skeleton: &str,
    email: &str,
) -> Result<(), StoreError> {
    index.insert((skeleton, email), ()).map_err(db_err)?;
    Ok(())
}
