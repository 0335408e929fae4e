//! `Store`: the one interface the rest of rerod uses, over two backends.
//!
//! An enum over the backends rather than a trait object: there are exactly
//! two, both known here; their operations take `FnOnce` closures (the
//! admission check, an account update) and are async, which a `dyn` trait
//! could only offer through boxed futures; and each method below is one
//! `match`, so a new operation that one backend lacks does not compile.
//! Reads are synchronous on both: redb reads its file, PostgreSQL its
//! in-memory copy of the shared tables (`postgres/mirror.rs`).

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::Date;
use tokio::sync::broadcast;

use super::postgres::Postgres;
use super::{
    AccountChange, Admit, AuditEntry, BookError, Booking, CancelError, Counts, CreateUserError, Doomed,
    MaintenanceRecord, MoveError, Redb, SetDisabledError, SlotKey, StoreError, User, UserUpdate,
};

fn shared_store_refused() -> StoreError {
    StoreError::Postgres(
        "`rerod backup` and `rerod export` read a redb store; back this one up with pg_dump".to_owned(),
    )
}

/// A handle on the store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone, Debug)]
enum Backend {
    /// One host's lab: the redb file.
    Redb(Redb),
    /// A lab of several hosts sharing a PostgreSQL database.
    Postgres(Postgres),
}

/// A host of the lab, as the shared store last heard from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPresence {
    pub name: String,
    /// Where the other hosts reach it.
    pub advertise: String,
    /// The boards of its own config.
    pub boards: Vec<PresentBoard>,
    /// When it last renewed its presence (the database's clock).
    pub last_seen: Timestamp,
    /// Whether that was within the offline limit asked for.
    pub online: bool,
}

/// A board a host serves.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PresentBoard {
    pub id: String,
    pub model: String,
    /// What the other hosts show of it (the fields below are kept as JSON
    /// in the host's row, so they need no schema change).
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub plugin: String,
    #[serde(default)]
    pub baud: u32,
    /// Its port answers.
    #[serde(default)]
    pub online: bool,
    #[serde(default = "unknown_health")]
    pub health: String,
    #[serde(default)]
    pub health_reason: Option<String>,
    #[serde(default)]
    pub in_use: bool,
    /// Its camera, if it has one.
    #[serde(default)]
    pub camera: Option<PresentCamera>,
}

/// A board's camera as the other hosts show it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PresentCamera {
    pub state: String,
    pub visibility: String,
    pub viewers: usize,
}

fn unknown_health() -> String {
    "unknown".to_owned()
}

/// A booking change another host committed, for this host's live views.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The bookings of `device` on `date` changed; `cancelled` are the
    /// bookings (slot, holder) that are gone, as far as this host saw them.
    Slots { device: String, date: Date, cancelled: Vec<(u16, String)> },
    /// A booking moved off a broken board.
    Moved { email: String, date: Date, slot: u16, from: String, to: String },
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match &$self.backend {
            Backend::Redb($s) => $e,
            Backend::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// Opens (or creates) the redb store at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store { backend: Backend::Redb(Redb::open(path)?) })
    }

    /// [`Store::open`], with the function that opens the file given.
    #[cfg(test)]
    pub(super) fn open_with(path: &Path, opener: super::handle::Opener) -> Result<Store, StoreError> {
        Ok(Store { backend: Backend::Redb(Redb::open_with(path, opener)?) })
    }

    /// Connects to the PostgreSQL database at `url` (migrating its schema);
    /// `path` anchors this host's own files (the control socket, records).
    pub fn open_postgres(url: &str, path: &Path) -> Result<Store, StoreError> {
        Ok(Store { backend: Backend::Postgres(Postgres::open(url, path)?) })
    }

    /// The database's URL without its password; `None` for the redb file.
    pub fn database_url(&self) -> Option<&str> {
        match &self.backend {
            Backend::Redb(_) => None,
            Backend::Postgres(pg) => Some(pg.url()),
        }
    }

    /// Booking changes other hosts commit; `None` on a one-host store.
    pub fn subscribe_changes(&self) -> Option<broadcast::Receiver<Change>> {
        match &self.backend {
            Backend::Redb(_) => None,
            Backend::Postgres(pg) => Some(pg.subscribe()),
        }
    }

    /// Why the last write failed, while the store cannot commit; `None`
    /// once a write commits again. Reads go on meanwhile.
    pub fn write_failure(&self) -> Option<String> {
        each!(self, s => s.write_failure())
    }

    /// Lets every queued write finish; later writes fail.
    pub async fn close(&self) {
        if let Backend::Redb(s) = &self.backend {
            s.close().await;
        }
    }

    /// The store file, or with PostgreSQL the path this host's own files go beside.
    pub fn path(&self) -> &Path {
        each!(self, s => s.path())
    }

    /// Checks that the store can be read.
    pub fn check(&self) -> Result<(), StoreError> {
        each!(self, s => s.check())
    }

    /// Copies one consistent snapshot of the open store into a new redb
    /// file `to`, for `rerod backup` while the daemon runs. A shared store
    /// is backed up with PostgreSQL's own tools instead.
    pub fn backup_to(&self, to: &Path) -> Result<Counts, StoreError> {
        match &self.backend {
            Backend::Redb(s) => s.backup_to(to),
            Backend::Postgres(_) => Err(shared_store_refused()),
        }
    }

    /// Every user and booking, in one snapshot, for `rerod export` while the daemon runs.
    pub fn snapshot(&self) -> Result<super::Snapshot, StoreError> {
        match &self.backend {
            Backend::Redb(s) => s.snapshot(),
            Backend::Postgres(_) => Err(shared_store_refused()),
        }
    }

    /// The stored JWT secret, generated by `generate` and stored on first use.
    pub fn jwt_secret_or_insert(
        &self,
        generate: impl FnOnce() -> std::io::Result<Vec<u8>>,
    ) -> Result<Vec<u8>, StoreError> {
        each!(self, s => s.jwt_secret_or_insert(generate))
    }

    pub async fn create_user(&self, user: User) -> Result<User, CreateUserError> {
        each!(self, s => s.create_user(user).await)
    }

    /// Books `key` for `email` if it is free and `admit` accepts.
    pub async fn book(
        &self,
        key: SlotKey,
        email: String,
        booked_at: Timestamp,
        admit: Admit,
    ) -> Result<Booking, BookError> {
        each!(self, s => s.book(key, email, booked_at, admit).await)
    }

    /// Cancels the booking of `key`; with a `requester`, only if it is theirs.
    pub async fn cancel(&self, key: SlotKey, requester: Option<String>) -> Result<Booking, CancelError> {
        each!(self, s => s.cancel(key, requester).await)
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
        each!(self, s => s.set_disabled(email, disabled, doomed).await)
    }

    /// Changes the account `email` in one transaction; answers it before
    /// and after, or `None` if there is no such account.
    pub async fn update_user(
        &self,
        email: String,
        update: impl FnOnce(&mut User) + Send + 'static,
    ) -> Result<Option<(User, User)>, StoreError> {
        let update: UserUpdate = Box::new(update);
        each!(self, s => s.update_user(email, update).await)
    }

    /// Moves the booking of `key` to `to_device`'s same slot, in one transaction.
    pub async fn move_booking(&self, key: SlotKey, to_device: String) -> Result<Booking, MoveError> {
        each!(self, s => s.move_booking(key, to_device).await)
    }

    /// Puts `device` in maintenance (`Some`) or takes it out (`None`), and
    /// records `audit`, in one transaction.
    pub async fn set_maintenance(
        &self,
        device: String,
        set: Option<MaintenanceRecord>,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        each!(self, s => s.set_maintenance(device, set, audit).await)
    }

    /// Appends to the audit log.
    pub async fn audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        each!(self, s => s.audit(entry).await)
    }

    /// With a shared store, `Some(retry_after)` while `email` has had `max`
    /// wrong passwords within `window` on any host. A one-host store keeps
    /// no such count (the daemon's own throttle does): always `None`.
    pub async fn login_lockout(&self, email: &str, max: u32, window: Duration) -> Result<Option<Duration>, StoreError> {
        match &self.backend {
            Backend::Redb(_) => Ok(None),
            Backend::Postgres(pg) => pg.login_lockout(email.to_owned(), max, window).await,
        }
    }

    /// Counts a wrong password for `email` where every host sees it (shared stores only).
    pub async fn failed_login(&self, email: &str, window: Duration) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Redb(_) => Ok(()),
            Backend::Postgres(pg) => pg.failed_login(email.to_owned(), window).await,
        }
    }

    /// Forgets `email`'s wrong passwords on every host (shared stores only).
    pub async fn clear_failed_logins(&self, email: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Redb(_) => Ok(()),
            Backend::Postgres(pg) => pg.clear_failed_logins(email.to_owned()).await,
        }
    }

    /// Says the host `name` is up, reachable at `advertise`, serving
    /// `boards`, as of the database's clock now (shared stores only).
    /// Returns the database's clock as it answered, so the host can tell how
    /// far its own is from the lab's; `None` on a one-host store.
    pub async fn renew_presence(
        &self,
        name: &str,
        advertise: &str,
        boards: Vec<PresentBoard>,
    ) -> Result<Option<Timestamp>, StoreError> {
        match &self.backend {
            Backend::Redb(_) => Ok(None),
            Backend::Postgres(pg) => pg.renew_presence(name.to_owned(), advertise.to_owned(), boards).await,
        }
    }

    /// Every host of the lab by name, online if it renewed its presence
    /// within `offline_after`; none on a one-host store.
    pub async fn hosts(&self, offline_after: Duration) -> Result<Vec<HostPresence>, StoreError> {
        match &self.backend {
            Backend::Redb(_) => Ok(Vec::new()),
            Backend::Postgres(pg) => pg.hosts(offline_after).await,
        }
    }

    /// Every account, by e-mail.
    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        match &self.backend {
            Backend::Redb(s) => s.users(),
            Backend::Postgres(s) => Ok(s.users()),
        }
    }

    pub fn user(&self, email: &str) -> Result<Option<User>, StoreError> {
        match &self.backend {
            Backend::Redb(s) => s.user(email),
            Backend::Postgres(s) => Ok(s.user(email)),
        }
    }

    /// The account of `email` as the database has it now, for a password
    /// check: with a shared store, an account made or changed on another
    /// host a moment ago counts here at once. While the database is out of
    /// reach, this host's copy answers.
    pub async fn user_current(&self, email: &str) -> Result<Option<User>, StoreError> {
        match &self.backend {
            Backend::Redb(s) => s.user(email),
            Backend::Postgres(s) => Ok(s.user_current(email.to_owned()).await),
        }
    }

    /// Every booking of `device` on `date`, by slot.
    pub fn bookings_on(&self, device: &str, date: Date) -> Result<Vec<Booking>, StoreError> {
        match &self.backend {
            Backend::Redb(s) => s.bookings_on(device, date),
            Backend::Postgres(s) => Ok(s.bookings_on(device, date)),
        }
    }

    /// Every booking `email` holds, by date, device and slot.
    pub fn bookings_of(&self, email: &str) -> Result<Vec<Booking>, StoreError> {
        match &self.backend {
            Backend::Redb(s) => s.bookings_of(email),
            Backend::Postgres(s) => Ok(s.bookings_of(email)),
        }
    }

    /// Every booking of `device` from `from` on, by date and slot.
    pub fn bookings_from(&self, device: &str, from: Date) -> Result<Vec<Booking>, StoreError> {
        match &self.backend {
            Backend::Redb(s) => s.bookings_from(device, from),
            Backend::Postgres(s) => Ok(s.bookings_from(device, from)),
        }
    }

    /// Numbers for /health and /stats.
    pub fn counts(&self) -> Result<Counts, StoreError> {
        match &self.backend {
            Backend::Redb(s) => s.counts(),
            Backend::Postgres(s) => Ok(s.counts()),
        }
    }

    /// Every device in maintenance.
    pub fn maintenance(&self) -> Result<Vec<(String, MaintenanceRecord)>, StoreError> {
        match &self.backend {
            Backend::Redb(s) => s.maintenance(),
            Backend::Postgres(s) => Ok(s.maintenance()),
        }
    }

    /// The audit log of `device` (every device with `None`), newest first, at most `limit`.
    pub fn audit_log(&self, device: Option<&str>, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        match &self.backend {
            Backend::Redb(s) => s.audit_log(device, limit),
            Backend::Postgres(s) => Ok(s.audit_log(device, limit)),
        }
    }
}
