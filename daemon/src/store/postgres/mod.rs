//! The PostgreSQL backend: the store of a lab whose hosts share one
//! database (`[store] url`). The only module that imports tokio-postgres.
//!
//! Every write is one transaction on a pooled connection (pool.rs), and is
//! acknowledged once PostgreSQL has committed it: durable as the server's
//! `synchronous_commit` makes it. The database guards what must hold across
//! hosts: one booking per (device, date, slot) is its primary key, one
//! account per address its primary key, and the rows a check reads are
//! locked (the account's row before its admission check, an advisory lock on
//! the address's skeleton before the look-alike check).
//!
//! Booking and cancelling, the writes a busy lab makes most, go in batches
//! (batch.rs): every one that arrives while the previous batch commits is
//! sent in one statement, prepared once per connection, that is its own
//! transaction: one round trip, one commit and one notification for all.
//! A booking's admission check runs on this host against its copy of the
//! account's bookings, and the database function `rerod_write` (schema.rs)
//! books only if, under the account's lock, those are still the account's
//! bookings; when they are not (another host or request changed them a
//! moment ago), the booking is checked again in a transaction that reads
//! them under the lock.
//!
//! Reads come from this host's copy of the tables (mirror.rs), kept current
//! by notifications, so they stay synchronous like redb's and go on while the
//! database is unreachable; writes then fail with `Unavailable` (503
//! `store_unavailable`) and resume once it answers again, with no restart.
//!
//! Operations run as tasks of the caller's runtime (the daemon's), which
//! drives the pooled connections too: an operation crosses no thread on its
//! way to the database and back. tokio-postgres needs a runtime, and the
//! store's interface also has synchronous calls (open, the JWT secret, the
//! store copy) made from inside the daemon's runtime, so those, and the
//! listener, run on a runtime of the backend's own, on one thread, over
//! connections of their own; it stops when the last handle is dropped.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::StreamExt as _;
use jiff::Timestamp;
use jiff::civil::Date;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, GenericClient, Transaction};

use super::{
    Admit, AuditEntry, BookError, Booking, CancelError, Change, Counts, CreateUserError, Doomed, MaintenanceRecord,
    MoveError, SetDisabledError, SlotKey, StoreError, User, UserUpdate,
};
use crate::booking::BookingError;
use mirror::{
    BOOKING_COLUMNS, CHANNEL, Envelope, Mirror, Note, READ_DAY, USER_COLUMNS, UserRow, booking_from, insert_user_sql,
    user_from,
};
use pool::Pool;

mod batch;
mod mirror;
mod pool;
mod schema;
#[cfg(test)]
pub(super) mod testing;
#[cfg(test)]
mod tests;

/// Connections per host: writes wait for one when all are busy.
const POOL_SIZE: usize = 16;
/// How long the listener waits before connecting again.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// How long one operation may wait for the database (a pool connection
/// included) before it fails as unavailable: a database that stopped
/// answering without closing its connections must not hold requests forever.
/// Such a write may still commit; it is never acknowledged without committing.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle on the PostgreSQL store; cheap to clone.
#[derive(Clone)]
pub(super) struct Postgres {
    shared: Arc<Shared>,
    runtime: Arc<RuntimeThread>,
    path: PathBuf,
}

struct Shared {
    pool: Pool,
    /// The URL without its password, for messages.
    url: String,
    mirror: RwLock<Mirror>,
    /// Why the last write failed to reach the database, until one commits.
    write_failure: Mutex<Option<String>>,
    /// Why the listener has no connection, until it has one again.
    listen_failure: Mutex<Option<String>>,
    /// Names this process in notifications, so it knows its own.
    origin: u64,
    changes: broadcast::Sender<Change>,
    /// Where the listener takes its notifications, while it listens: this
    /// host asks it here to read days again (`Shared::apply_own`). Weak, so
    /// the channel still closes when the listening connection ends.
    follow: Mutex<Option<mpsc::WeakUnboundedSender<String>>>,
    /// Where bookings and cancellations wait for their batch (batch.rs).
    writes: mpsc::UnboundedSender<batch::Queued>,
}

/// The origin of a notification this host sends its own listener to have
/// days read again as if another host had changed them (no host is 0).
const REREAD: u64 = 0;

/// The backend's runtime thread; it stops when this is dropped.
struct RuntimeThread {
    handle: tokio::runtime::Handle,
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl Drop for RuntimeThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop.send(());
        }
    }
}

impl fmt::Debug for Postgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Postgres").field("url", &self.shared.url).finish_non_exhaustive()
    }
}

/// A tokio-postgres error as the store reports it: the database out of
/// reach (a closed connection, an I/O error, a server shutting down or
/// starting) is `Unavailable`; anything else names the database's complaint.
pub(super) fn pg(e: tokio_postgres::Error) -> StoreError {
    let unreachable = match e.code() {
        None => true,
        Some(code) => {
            let class = &code.code()[..2];
            // 08: connection exception; 57: operator intervention (shutdown); 53: insufficient resources.
            matches!(class, "08" | "57" | "53")
        }
    };
    if unreachable {
        StoreError::Unavailable(format!("the database: {e}"))
    } else {
        StoreError::Postgres(e.to_string())
    }
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

pub(super) fn timestamp_us(us: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_microsecond(us).map_err(|_| StoreError::Corrupt(format!("timestamp {us} out of range")))
}

/// The store error inside an operation's error, if that is what it is.
trait Failure {
    fn store_error(&self) -> Option<&StoreError>;
}

impl Failure for StoreError {
    fn store_error(&self) -> Option<&StoreError> {
        Some(self)
    }
}

macro_rules! failure_of {
    ($($t:ty),*) => {$(
        impl Failure for $t {
            fn store_error(&self) -> Option<&StoreError> {
                match self {
                    Self::Store(e) => Some(e),
                    _ => None,
                }
            }
        }
    )*};
}
failure_of!(CreateUserError, BookError, CancelError, SetDisabledError, MoveError);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len()).step_by(2).map(|i| text.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

impl Postgres {
    /// Connects to the database at `url`, migrates its schema, reads the
    /// shared tables and starts listening for other hosts' commits. `path`
    /// is the host's own data directory's anchor (`store.path`): the
    /// control socket and the records go beside it.
    pub(super) fn open(url: &str, path: &Path) -> Result<Postgres, StoreError> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Postgres(format!("store.url is not a PostgreSQL URL: {e}")))?;
        let runtime = start_runtime()?;
        let (changes, _) = broadcast::channel(1024);
        let (writes, queued) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            pool: Pool::new(config, POOL_SIZE),
            url: schema::redacted(url),
            mirror: RwLock::new(Mirror::default()),
            write_failure: Mutex::new(None),
            listen_failure: Mutex::new(None),
            origin: u64::from_le_bytes(
                crate::auth::random_secret()
                    .ok()
                    .and_then(|s| s.get(..8).and_then(|b| b.try_into().ok()))
                    .unwrap_or([0; 8]),
            ),
            changes,
            follow: Mutex::new(None),
            writes,
        });
        runtime.handle.spawn(batch::run(Arc::clone(&shared), queued));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let starting = Arc::clone(&shared);
        let url = url.to_owned();
        runtime.handle.spawn(async move {
            let migrated = async {
                let mut client = starting.pool.single().await.map_err(pg)?;
                schema::migrate(&mut client, &url).await
            }
            .await;
            match migrated {
                Ok(()) => starting.listen(Some(ready_tx)).await,
                Err(e) => drop(ready_tx.send(Err(e))),
            }
        });
        let ready = ready_rx.recv().unwrap_or_else(|_| Err(StoreError::WriterGone));
        ready.map_err(|e| match e {
            StoreError::Unavailable(why) => {
                StoreError::Unavailable(format!("cannot reach the database {}: {why}", shared.url))
            }
            e => e,
        })?;
        tracing::info!(url = %shared.url, "the store is the PostgreSQL database");
        Ok(Postgres { shared, runtime: Arc::new(runtime), path: path.to_owned() })
    }

    /// Runs `work` as a task of the caller's runtime, so that it finishes even
    /// if the caller stops waiting; notes whether it reached the database.
    async fn run<T, E>(&self, work: impl Future<Output = Result<T, E>> + Send + 'static) -> Result<T, E>
    where
        T: Send + 'static,
        E: Failure + From<StoreError> + Send + 'static,
    {
        let work = async move {
            match tokio::time::timeout(OPERATION_TIMEOUT, work).await {
                Ok(result) => result,
                Err(_) => Err(E::from(StoreError::Unavailable(format!(
                    "the database did not answer within {} s",
                    OPERATION_TIMEOUT.as_secs()
                )))),
            }
        };
        let result = tokio::spawn(work).await.map_err(|_| E::from(StoreError::WriterGone))?;
        let mut failure = self.shared.write_failure.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Err(e) if let Some(StoreError::Unavailable(why)) = e.store_error() => {
                if failure.is_none() {
                    tracing::error!(error = %why, "the database is unreachable; writes fail until it answers");
                }
                *failure = Some(why.clone());
            }
            _ => {
                if failure.take().is_some() {
                    tracing::info!("the database commits again");
                }
            }
        }
        result
    }

    /// Runs `work` on the backend's runtime and waits for it, blocking the
    /// calling thread: for the synchronous calls made at start. `work` must
    /// use connections of its own (`Pool::single`): the pooled ones may be
    /// driven by the very runtime this blocks.
    fn block_on<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.handle.spawn(async move { drop(tx.send(work.await)) });
        rx.recv().map_err(|_| StoreError::WriterGone)
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn url(&self) -> &str {
        &self.shared.url
    }

    pub(super) fn write_failure(&self) -> Option<String> {
        let write = self.shared.write_failure.lock().unwrap_or_else(|p| p.into_inner()).clone();
        write.or_else(|| self.shared.listen_failure.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Reads are served from memory; they always work.
    pub(super) fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.shared.changes.subscribe()
    }

    pub(super) fn jwt_secret_or_insert(
        &self,
        generate: impl FnOnce() -> std::io::Result<Vec<u8>>,
    ) -> Result<Vec<u8>, StoreError> {
        let candidate = generate().map_err(|e| StoreError::Corrupt(format!("cannot generate a secret: {e}")))?;
        let shared = Arc::clone(&self.shared);
        let stored = self.block_on(async move {
            let conn = shared.pool.single().await.map_err(pg)?;
            conn.execute(
                "INSERT INTO rerod_meta (key, value) VALUES ('jwt_secret', $1) ON CONFLICT (key) DO NOTHING",
                &[&hex(&candidate)],
            )
            .await
            .map_err(pg)?;
            let row = conn.query_one("SELECT value FROM rerod_meta WHERE key = 'jwt_secret'", &[]).await.map_err(pg)?;
            Ok::<String, StoreError>(row.get(0))
        })??;
        unhex(&stored).ok_or_else(|| StoreError::Corrupt("the stored JWT secret is not hex".into()))
    }

    pub(super) async fn create_user(&self, user: User) -> Result<User, CreateUserError> {
        let shared = Arc::clone(&self.shared);
        self.run(async move { shared.create_user(user).await }).await
    }

    pub(super) async fn book(
        &self,
        key: SlotKey,
        email: String,
        booked_at: Timestamp,
        admit: Admit,
    ) -> Result<Booking, BookError> {
        let shared = Arc::clone(&self.shared);
        self.run(async move { shared.book(key, email, booked_at, admit).await }).await
    }

    pub(super) async fn cancel(&self, key: SlotKey, requester: Option<String>) -> Result<Booking, CancelError> {
        let shared = Arc::clone(&self.shared);
        self.run(async move { shared.cancel(key, requester).await }).await
    }

    pub(super) async fn set_disabled(
        &self,
        email: String,
        disabled: bool,
        doomed: Doomed,
    ) -> Result<super::AccountChange, SetDisabledError> {
        let shared = Arc::clone(&self.shared);
        self.run(async move { shared.set_disabled(email, disabled, doomed).await }).await
    }

    pub(super) async fn update_user(
        &self,
        email: String,
        update: UserUpdate,
    ) -> Result<Option<(User, User)>, StoreError> {
        let shared = Arc::clone(&self.shared);
        self.run(async move { shared.update_user(email, update).await }).await
    }

    pub(super) async fn move_booking(&self, key: SlotKey, to_device: String) -> Result<Booking, MoveError> {
        let shared = Arc::clone(&self.shared);
        self.run(async move { shared.move_booking(key, to_device).await }).await
    }

    pub(super) async fn set_maintenance(
        &self,
        device: String,
        set: Option<MaintenanceRecord>,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let shared = Arc::clone(&self.shared);
        self.run(async move { shared.set_maintenance(device, set, audit).await }).await
    }

    pub(super) async fn audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        let shared = Arc::clone(&self.shared);
        self.run(async move { shared.audit(entry).await }).await
    }

    /// `Some(retry_after)` while `email` has `max` wrong passwords within `window`, on any host.
    pub(super) async fn login_lockout(
        &self,
        email: String,
        max: u32,
        window: Duration,
    ) -> Result<Option<Duration>, StoreError> {
        let shared = Arc::clone(&self.shared);
        self.run(async move {
            let conn = shared.pool.get().await.map_err(pg)?;
            let row = conn
                .query_one(
                    "SELECT count(*), EXTRACT(EPOCH FROM (min(at) + make_interval(secs => $2) - now()))::float8 \
                     FROM login_failures WHERE email = $1 AND at > now() - make_interval(secs => $2)",
                    &[&email, &window.as_secs_f64()],
                )
                .await
                .map_err(pg)?;
            let (count, left): (i64, Option<f64>) = (row.get(0), row.get(1));
            Ok(if count >= i64::from(max) { Some(Duration::from_secs_f64(left.unwrap_or(1.0).max(1.0))) } else { None })
        })
        .await
    }

    /// Counts a wrong password for `email`, for every host; forgets failures older than `window`.
    pub(super) async fn failed_login(&self, email: String, window: Duration) -> Result<(), StoreError> {
        let shared = Arc::clone(&self.shared);
        self.run(async move {
            let conn = shared.pool.get().await.map_err(pg)?;
            conn.execute(
                "DELETE FROM login_failures WHERE at <= now() - make_interval(secs => $1)",
                &[&window.as_secs_f64()],
            )
            .await
            .map_err(pg)?;
            conn.execute("INSERT INTO login_failures (email) VALUES ($1)", &[&email]).await.map_err(pg)?;
            Ok(())
        })
        .await
    }

    /// A right password: `email`'s failures are forgotten on every host.
    pub(super) async fn clear_failed_logins(&self, email: String) -> Result<(), StoreError> {
        let shared = Arc::clone(&self.shared);
        self.run(async move {
            let conn = shared.pool.get().await.map_err(pg)?;
            conn.execute("DELETE FROM login_failures WHERE email = $1", &[&email]).await.map_err(pg)?;
            Ok(())
        })
        .await
    }

    fn mirror(&self) -> std::sync::RwLockReadGuard<'_, Mirror> {
        self.shared.mirror.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn users(&self) -> Vec<User> {
        self.mirror().users.values().cloned().collect()
    }

    pub(super) fn user(&self, email: &str) -> Option<User> {
        self.mirror().users.get(email).cloned()
    }

    pub(super) async fn renew_presence(
        &self,
        name: String,
        advertise: String,
        boards: Vec<super::PresentBoard>,
    ) -> Result<Option<Timestamp>, StoreError> {
        let shared = Arc::clone(&self.shared);
        let boards = serde_json::to_string(&boards).expect("boards always serialize");
        self.run(async move {
            let conn = shared.pool.get().await.map_err(pg)?;
            let row = conn
                .query_one(
                    "INSERT INTO hosts (name, advertise, renewed_at, boards) VALUES ($1, $2, now(), $3) \
                     ON CONFLICT (name) DO UPDATE SET advertise = EXCLUDED.advertise, renewed_at = now(), \
                     boards = EXCLUDED.boards \
                     RETURNING (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::bigint",
                    &[&name, &advertise, &boards],
                )
                .await
                .map_err(pg)?;
            Ok(Some(timestamp_us(row.get(0))?))
        })
        .await
    }

    pub(super) async fn hosts(&self, offline_after: Duration) -> Result<Vec<super::HostPresence>, StoreError> {
        let shared = Arc::clone(&self.shared);
        self.run(async move {
            let conn = shared.pool.get().await.map_err(pg)?;
            let rows = conn
                .query(
                    "SELECT name, advertise, boards, (EXTRACT(EPOCH FROM renewed_at) * 1000000)::bigint, \
                     renewed_at > now() - make_interval(secs => $1) FROM hosts ORDER BY name",
                    &[&offline_after.as_secs_f64()],
                )
                .await
                .map_err(pg)?;
            let mut hosts = Vec::with_capacity(rows.len());
            for row in &rows {
                let boards: String = row.get(2);
                hosts.push(super::HostPresence {
                    name: row.get(0),
                    advertise: row.get(1),
                    boards: serde_json::from_str(&boards)
                        .map_err(|e| StoreError::Corrupt(format!("a host's boards: {e}")))?,
                    last_seen: timestamp_us(row.get(3))?,
                    online: row.get(4),
                });
            }
            Ok(hosts)
        })
        .await
    }

    /// Everything in the database, in one snapshot, for `rerod store copy`.
    pub(super) fn dump(&self) -> Result<super::copy::Dump, StoreError> {
        let shared = Arc::clone(&self.shared);
        self.block_on(async move {
            let mut conn = shared.pool.single().await.map_err(pg)?;
            let txn = conn
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(pg)?;
            let meta = |key: &'static str| {
                let txn = &txn;
                async move {
                    let row = txn.query_opt("SELECT value FROM rerod_meta WHERE key = $1", &[&key]).await;
                    row.map(|r| r.map(|r| r.get::<_, String>(0))).map_err(pg)
                }
            };
            let jwt_secret = meta("jwt_secret").await?.and_then(|hex| unhex(&hex));
            let next_user_id = meta("next_user_id").await?.and_then(|n| n.parse().ok()).unwrap_or(1);
            let mut users = Vec::new();
            for row in txn.query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY email"), &[]).await.map_err(pg)? {
                users.push(user_from(&row)?);
            }
            let mut bookings = Vec::new();
            let sql = format!("SELECT {BOOKING_COLUMNS} FROM bookings ORDER BY device, date, slot");
            for row in txn.query(&sql, &[]).await.map_err(pg)? {
                bookings.push(booking_from(&row)?);
            }
            let maintenance = mirror::read_maintenance(&txn).await?.into_iter().collect();
            let audit = mirror::read_audit_after(&txn, 0).await?.into_iter().map(|(_, e)| e).collect();
            txn.commit().await.map_err(pg)?;
            Ok(super::copy::Dump { users, bookings, maintenance, audit, jwt_secret, next_user_id })
        })?
    }

    /// Writes `dump` into this database, which must hold no account and no
    /// booking, in one transaction, for `rerod store copy`.
    pub(super) fn load(&self, dump: super::copy::Dump) -> Result<(), StoreError> {
        let shared = Arc::clone(&self.shared);
        self.block_on(async move {
            let mut conn = shared.pool.single().await.map_err(pg)?;
            let txn = conn.transaction().await.map_err(pg)?;
            txn.execute("LOCK TABLE users, bookings IN EXCLUSIVE MODE", &[]).await.map_err(pg)?;
            let row = txn
                .query_one("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM bookings)", &[])
                .await
                .map_err(pg)?;
            let (users, bookings): (i64, i64) = (row.get(0), row.get(1));
            if users > 0 || bookings > 0 {
                return Err(StoreError::Corrupt(format!(
                    "the database {} already holds {users} accounts and {bookings} bookings; copy into an empty one",
                    shared.url
                )));
            }
            for user in &dump.users {
                txn.execute(&insert_user_sql(), &UserRow::of(user).params()).await.map_err(pg)?;
                txn.execute(
                    "INSERT INTO email_skeletons (skeleton, email) VALUES ($1, $2)",
                    &[&crate::auth::email_skeleton(&user.email), &user.email],
                )
                .await
                .map_err(pg)?;
            }
            for booking in &dump.bookings {
                insert_booking(&txn, booking).await?;
            }
            for (device, r) in &dump.maintenance {
                txn.execute(
                    "INSERT INTO maintenance (device, reason, set_by, set_at_us) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (device) DO UPDATE SET reason = EXCLUDED.reason, set_by = EXCLUDED.set_by, \
                     set_at_us = EXCLUDED.set_at_us",
                    &[device, &r.reason, &r.set_by, &r.set_at_us],
                )
                .await
                .map_err(pg)?;
            }
            for entry in &dump.audit {
                insert_audit(&txn, entry).await?;
            }
            let next = dump.next_user_id.max(dump.users.iter().map(|u| u.id + 1).max().unwrap_or(1));
            txn.execute("UPDATE rerod_meta SET value = $1 WHERE key = 'next_user_id'", &[&next.to_string()])
                .await
                .map_err(pg)?;
            if let Some(secret) = &dump.jwt_secret {
                txn.execute(
                    "INSERT INTO rerod_meta (key, value) VALUES ('jwt_secret', $1) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    &[&hex(secret)],
                )
                .await
                .map_err(pg)?;
            }
            txn.commit().await.map_err(pg)?;
            Ok(())
        })?
    }

    /// The account of `email` read from the database (and kept in the
    /// copy); the copy's while the database is out of reach.
    pub(super) async fn user_current(&self, email: String) -> Option<User> {
        let shared = Arc::clone(&self.shared);
        let wanted = email.clone();
        let read = self
            .run(async move {
                let conn = shared.pool.get().await.map_err(pg)?;
                let user = mirror::read_user(&conn, &wanted).await?;
                shared.mirror().set_user(&wanted, user.clone());
                Ok::<_, StoreError>(user)
            })
            .await;
        read.unwrap_or_else(|error| {
            tracing::debug!(%error, "the database is out of reach; the account as this host has it");
            self.user(&email)
        })
    }

    pub(super) fn bookings_on(&self, device: &str, date: Date) -> Vec<Booking> {
        self.mirror().day(device, date)
    }

    pub(super) fn bookings_of(&self, email: &str) -> Vec<Booking> {
        let mirror = self.mirror();
        let from = (email.to_owned(), Date::MIN, String::new(), 0u16);
        mirror
            .by_holder
            .range(from..)
            .take_while(|(holder, ..)| holder == email)
            .filter_map(|(_, date, device, slot)| mirror.bookings.get(&(device.clone(), *date, *slot)).cloned())
            .collect()
    }

    pub(super) fn bookings_from(&self, device: &str, from: Date) -> Vec<Booking> {
        let range = (device.to_owned(), from, 0u16)..=(device.to_owned(), Date::MAX, u16::MAX);
        self.mirror().bookings.range(range).map(|(_, b)| b.clone()).collect()
    }

    pub(super) fn counts(&self) -> Counts {
        let mirror = self.mirror();
        Counts { users: mirror.users.len() as u64, bookings: mirror.bookings.len() as u64 }
    }

    pub(super) fn maintenance(&self) -> Vec<(String, MaintenanceRecord)> {
        self.mirror().maintenance.iter().map(|(d, r)| (d.clone(), r.clone())).collect()
    }

    pub(super) fn audit_log(&self, device: Option<&str>, limit: usize) -> Vec<AuditEntry> {
        let mirror = self.mirror();
        let entries = mirror.audit.values().rev().filter(|e| device.is_none_or(|d| d == e.device));
        entries.take(limit).cloned().collect()
    }
}

fn start_runtime() -> Result<RuntimeThread, StoreError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Corrupt(format!("cannot start the store's runtime: {e}")))?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("rerod-store-pg".into())
        .spawn(move || {
            runtime.block_on(async move {
                let _ = stopped.await;
            });
        })
        .map_err(|e| StoreError::Corrupt(format!("cannot start the store's thread: {e}")))?;
    Ok(RuntimeThread { handle, stop: Mutex::new(Some(stop)) })
}

/// The notification of `notes`, from the host `origin`.
fn payload(origin: u64, notes: Vec<Note>) -> String {
    envelope(Envelope { origin, notes, read: None })
}

fn envelope(envelope: Envelope) -> String {
    serde_json::to_string(&envelope).expect("a notification always serializes")
}

/// Sends `notes` to every host when `txn` commits.
async fn notify(txn: &Transaction<'_>, origin: u64, notes: Vec<Note>) -> Result<(), StoreError> {
    txn.execute(NOTIFY, &[&CHANNEL, &payload(origin, notes)]).await.map_err(pg)?;
    Ok(())
}

const NOTIFY: &str = "SELECT pg_notify($1, $2)";

/// Serializes the transactions that book for `email` or disable it, on
/// every host, until the transaction ends: an advisory lock, since the
/// address may have no account row to lock. `rerod_write` takes the same.
const LOCK_ACCOUNT: &str = "SELECT pg_advisory_xact_lock(hashtext('account ' || $1))";

async fn lock_account(txn: &Transaction<'_>, email: &str) -> Result<(), StoreError> {
    txn.execute(LOCK_ACCOUNT, &[&email]).await.map_err(pg)?;
    Ok(())
}

/// The admission reads of a booking checked in a transaction of its own.
const IS_DISABLED: &str = "SELECT disabled FROM users WHERE email = $1";
const IS_TAKEN: &str = "SELECT 1 FROM bookings WHERE device = $1 AND date = $2::text::date AND slot = $3";
const HELD: &str = "SELECT date::text, slot FROM bookings WHERE email = $1 ORDER BY date, device, slot";
const INSERT_BOOKING: &str = "INSERT INTO bookings (device, date, slot, email, booked_at_us, moved_from) \
                              VALUES ($1, $2::text::date, $3, $4, $5, $6)";

/// The bookings `email` holds as `rerod_write` compares them: `date slot`,
/// comma-separated, in (date, device, slot) order.
fn held_text(held: &[(Date, u16)]) -> String {
    let entries: Vec<String> = held.iter().map(|(date, slot)| format!("{date} {slot}")).collect();
    entries.join(",")
}

fn day_note(key: &SlotKey) -> Note {
    Note::Day(key.device.clone(), key.date.to_string())
}

/// A booking or cancellation of this host's, from before it is sent until
/// its outcome is known. Its notification carries the listener's count of
/// days read when it was sent, so that the listener need not read the day
/// back (`Shared::follow`). The outcome is then this host's to apply:
/// applied to the copy (`applied`), or nothing written (`refused`); a write
/// that ends any other way (an error or a timeout, which may still have
/// committed) has its day read again when it is dropped.
struct OwnWrite<'s> {
    shared: &'s Shared,
    key: SlotKey,
    since: u64,
    settled: bool,
}

impl<'s> OwnWrite<'s> {
    fn new(shared: &'s Shared, key: SlotKey) -> OwnWrite<'s> {
        OwnWrite { since: shared.days_read(), shared, key, settled: false }
    }

    /// The write's notification.
    fn payload(&self) -> String {
        envelope(Envelope { origin: self.shared.origin, notes: vec![day_note(&self.key)], read: Some(self.since) })
    }

    /// The write committed: `write` applies it to the copy.
    fn applied(mut self, write: impl FnOnce(&mut Mirror)) {
        self.settled = true;
        self.shared.apply_own(self.since, &[&self.key], write);
    }

    /// The database refused the write: nothing changed.
    fn refused(mut self) {
        self.settled = true;
    }
}

impl Drop for OwnWrite<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.shared.read_again(&[&self.key]);
        }
    }
}

async fn booking_at(client: &impl GenericClient, key: &SlotKey, lock: bool) -> Result<Option<Booking>, StoreError> {
    let sql = format!(
        "SELECT {BOOKING_COLUMNS} FROM bookings WHERE device = $1 AND date = $2::text::date AND slot = $3{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = client.query_opt(&sql, &[&key.device, &key.date.to_string(), &i32::from(key.slot)]).await.map_err(pg)?;
    row.as_ref().map(booking_from).transpose()
}

async fn insert_booking(txn: &Transaction<'_>, booking: &Booking) -> Result<bool, StoreError> {
    let k = &booking.key;
    let inserted = txn
        .execute(
            INSERT_BOOKING,
            &[
                &k.device,
                &k.date.to_string(),
                &i32::from(k.slot),
                &booking.email,
                &booking.booked_at.as_microsecond(),
                &booking.moved_from,
            ],
        )
        .await;
    match inserted {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(pg(e)),
    }
}

async fn delete_booking(txn: &Transaction<'_>, key: &SlotKey) -> Result<(), StoreError> {
    txn.execute(
        "DELETE FROM bookings WHERE device = $1 AND date = $2::text::date AND slot = $3",
        &[&key.device, &key.date.to_string(), &i32::from(key.slot)],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

impl Shared {
    fn mirror(&self) -> std::sync::RwLockWriteGuard<'_, Mirror> {
        self.mirror.write().unwrap_or_else(|p| p.into_inner())
    }

    async fn create_user(&self, mut user: User) -> Result<User, CreateUserError> {
        let mut conn = self.pool.get().await.map_err(pg)?;
        let skeleton = crate::auth::email_skeleton(&user.email);
        let txn = conn.transaction().await.map_err(pg)?;
        // Two look-alikes registering at once on two hosts take turns here.
        txn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&skeleton]).await.map_err(pg)?;
        if txn.query_opt("SELECT 1 FROM users WHERE email = $1", &[&user.email]).await.map_err(pg)?.is_some() {
            return Err(CreateUserError::Exists);
        }
        let look_alike = txn
            .query_opt(
                "SELECT 1 FROM email_skeletons WHERE skeleton = $1 AND email <> $2 LIMIT 1",
                &[&skeleton, &user.email],
            )
            .await
            .map_err(pg)?;
        if look_alike.is_some() {
            return Err(CreateUserError::LooksLikeAnother);
        }
        // Numbered in the transaction that creates it: ids are never reused.
        let row = txn
            .query_one(
                "UPDATE rerod_meta SET value = (value::bigint + 1)::text WHERE key = 'next_user_id' \
                 RETURNING value::bigint - 1",
                &[],
            )
            .await
            .map_err(pg)?;
        user.id = row.get::<_, i64>(0) as u64;
        let inserted = txn.execute(&insert_user_sql(), &UserRow::of(&user).params()).await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(CreateUserError::Exists),
            Err(e) => return Err(pg(e).into()),
        }
        txn.execute("INSERT INTO email_skeletons (skeleton, email) VALUES ($1, $2)", &[&skeleton, &user.email])
            .await
            .map_err(pg)?;
        notify(&txn, self.origin, vec![Note::User(user.email.clone())]).await?;
        txn.commit().await.map_err(pg)?;
        self.mirror().set_user(&user.email, Some(user.clone()));
        Ok(user)
    }

    async fn book(
        &self,
        key: SlotKey,
        email: String,
        booked_at: Timestamp,
        admit: Admit,
    ) -> Result<Booking, BookError> {
        let write = OwnWrite::new(self, key.clone());
        let booking = Booking { key, email, booked_at, moved_from: None };
        // First in a batch, admitted against this host's copy of the
        // account's bookings: the database books only if they are still those.
        let held = self.held_in_copy(&booking.email);
        if admit(&held).is_ok() {
            let book = batch::Write::Book { booking: booking.clone(), held: held_text(&held) };
            match self.written(book, write.since).await? {
                batch::Outcome::Booked => {
                    write.applied(|m| m.put_booking(booking.clone()));
                    return Ok(booking);
                }
                batch::Outcome::Taken => {
                    write.refused();
                    return Err(BookError::Rule(BookingError::Taken { id: booking.key.slot }));
                }
                batch::Outcome::Disabled => {
                    write.refused();
                    return Err(BookError::AccountDisabled);
                }
                batch::Outcome::Stale => {}
                other => return Err(StoreError::Corrupt(format!("a booking came back {other:?}")).into()),
            }
        }
        // The copy differs from the database (or refused): the admission
        // check again, on the account's bookings read under its lock.
        let mut conn = self.pool.get().await.map_err(pg)?;
        self.book_locked(&mut conn, booking, admit, write).await
    }

    /// The copy's count of days read by the listener, taken before a write is sent.
    fn days_read(&self) -> u64 {
        self.mirror.read().unwrap_or_else(|p| p.into_inner()).days_read
    }

    /// Applies this host's own committed write to its copy at once, so that
    /// the host reads its own writes. If the listener read a day again while
    /// the write was in flight (`since`: the count before it was sent), that
    /// read may hold a later change by another host, such as a cancel of the
    /// slot just booked, which the write has just undone: the listener is
    /// then asked to read the written days once more, as another host's
    /// change, so the copy and this host's clients end up with the database's.
    fn apply_own(&self, since: u64, days: &[&SlotKey], write: impl FnOnce(&mut Mirror)) {
        let raced = {
            let mut mirror = self.mirror();
            write(&mut mirror);
            mirror.days_read != since
        };
        if raced {
            self.read_again(days);
        }
    }

    /// Asks the listener to read the days of `keys` again, as if another
    /// host had changed them.
    fn read_again(&self, keys: &[&SlotKey]) {
        let follow = self.follow.lock().unwrap_or_else(|p| p.into_inner()).as_ref().and_then(|weak| weak.upgrade());
        if let Some(follow) = follow {
            let _ = follow.send(payload(REREAD, keys.iter().map(|key| day_note(key)).collect()));
        }
    }

    /// The account's bookings as this host's copy has them, as an admission check takes them.
    fn held_in_copy(&self, email: &str) -> Vec<(Date, u16)> {
        let mirror = self.mirror.read().unwrap_or_else(|p| p.into_inner());
        let from = (email.to_owned(), Date::MIN, String::new(), 0u16);
        let held = mirror.by_holder.range(from..).take_while(|(holder, ..)| holder == email);
        held.map(|(_, date, _, slot)| (*date, *slot)).collect()
    }

    /// `write` in the next batch (batch.rs); its outcome once committed.
    async fn written(&self, write: batch::Write, since: u64) -> Result<batch::Outcome, StoreError> {
        let (queued, outcome) = batch::Queued::new(write, since);
        self.writes.send(queued).map_err(|_| StoreError::WriterGone)?;
        outcome.await.map_err(|_| StoreError::WriterGone)?
    }

    /// A booking in a transaction that locks the account, reads what the
    /// admission check needs, checks and inserts.
    async fn book_locked(
        &self,
        conn: &mut pool::Conn<'_>,
        booking: Booking,
        admit: Admit,
        write: OwnWrite<'_>,
    ) -> Result<Booking, BookError> {
        let lock = conn.statement(LOCK_ACCOUNT).await.map_err(pg)?;
        let is_disabled = conn.statement(IS_DISABLED).await.map_err(pg)?;
        let is_taken = conn.statement(IS_TAKEN).await.map_err(pg)?;
        let held = conn.statement(HELD).await.map_err(pg)?;
        let insert = conn.statement(INSERT_BOOKING).await.map_err(pg)?;
        let notify = conn.statement(NOTIFY).await.map_err(pg)?;
        let txn = conn.transaction().await.map_err(pg)?;
        // The account is locked first: one host at a time admits its
        // bookings, so the caps hold across hosts, and a disabling waits.
        txn.execute(&lock, &[&booking.email]).await.map_err(pg)?;
        // The reads are pipelined: sent at once, answered in one round trip.
        let k = &booking.key;
        let (day, slot) = (k.date.to_string(), i32::from(k.slot));
        let by_email: [&(dyn ToSql + Sync); 1] = [&booking.email];
        let by_key: [&(dyn ToSql + Sync); 3] = [&k.device, &day, &slot];
        let (disabled, taken, held) = tokio::try_join!(
            txn.query_opt(&is_disabled, &by_email),
            txn.query_opt(&is_taken, &by_key),
            txn.query(&held, &by_email),
        )
        .map_err(pg)?;
        if taken.is_some() {
            write.refused();
            return Err(BookError::Rule(BookingError::Taken { id: k.slot }));
        }
        if disabled.is_some_and(|row| row.get::<_, bool>(0)) {
            write.refused();
            return Err(BookError::AccountDisabled);
        }
        let mut existing = Vec::with_capacity(held.len());
        for row in &held {
            let date: String = row.get(0);
            let date = date.parse().map_err(|_| StoreError::Corrupt(format!("bad date {date:?} in a booking")))?;
            existing.push((date, row.get::<_, i32>(1) as u16));
        }
        if let Err(refusal) = admit(&existing) {
            write.refused();
            return Err(BookError::Rule(refusal));
        }
        // The primary key is the last word: another host may have booked
        // the slot since the check above.
        let row: [&(dyn ToSql + Sync); 6] =
            [&k.device, &day, &slot, &booking.email, &booking.booked_at.as_microsecond(), &booking.moved_from];
        let payload = write.payload();
        let note: [&(dyn ToSql + Sync); 2] = [&CHANNEL, &payload];
        let (inserted, notified) = tokio::join!(txn.execute(&insert, &row), txn.execute(&notify, &note));
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                write.refused();
                return Err(BookError::Rule(BookingError::Taken { id: k.slot }));
            }
            Err(e) => return Err(pg(e).into()),
        }
        notified.map_err(pg)?;
        txn.commit().await.map_err(pg)?;
        write.applied(|m| m.put_booking(booking.clone()));
        Ok(booking)
    }

    async fn cancel(&self, key: SlotKey, requester: Option<String>) -> Result<Booking, CancelError> {
        let write = OwnWrite::new(self, key.clone());
        match self.written(batch::Write::Cancel { key: key.clone(), requester }, write.since).await? {
            batch::Outcome::Cancelled(booking) => {
                write.applied(|m| m.remove_booking(&key));
                Ok(booking)
            }
            batch::Outcome::NotBooked => {
                write.refused();
                Err(CancelError::NotBooked)
            }
            other => Err(StoreError::Corrupt(format!("a cancellation came back {other:?}")).into()),
        }
    }

    async fn set_disabled(
        &self,
        email: String,
        disabled: bool,
        doomed: Doomed,
    ) -> Result<super::AccountChange, SetDisabledError> {
        let mut conn = self.pool.get().await.map_err(pg)?;
        let since = self.days_read();
        let txn = conn.transaction().await.map_err(pg)?;
        lock_account(&txn, &email).await?;
        let row = txn
            .query_opt(&format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1 FOR UPDATE"), &[&email])
            .await
            .map_err(pg)?;
        let Some(row) = row else { return Err(SetDisabledError::NoSuchUser) };
        let mut user = user_from(&row)?;
        if disabled && !user.disabled {
            user.credential_generation = user.credential_generation.wrapping_add(1);
        }
        let mut cancelled = Vec::new();
        let mut notes = vec![Note::User(email.clone())];
        if disabled {
            let rows = txn
                .query(
                    &format!("SELECT {BOOKING_COLUMNS} FROM bookings WHERE email = $1 ORDER BY date, device, slot"),
                    &[&email],
                )
                .await
                .map_err(pg)?;
            for row in &rows {
                let booking = booking_from(row)?;
                if doomed(&booking.key) {
                    delete_booking(&txn, &booking.key).await?;
                    notes.push(day_note(&booking.key));
                    cancelled.push(booking);
                }
            }
        }
        user.disabled = disabled;
        txn.execute(
            "UPDATE users SET disabled = $2, credential_generation = $3 WHERE email = $1",
            &[&email, &disabled, &i64::from(user.credential_generation)],
        )
        .await
        .map_err(pg)?;
        notify(&txn, self.origin, notes).await?;
        txn.commit().await.map_err(pg)?;
        self.mirror().set_user(&email, Some(user.clone()));
        let keys: Vec<&SlotKey> = cancelled.iter().map(|b| &b.key).collect();
        self.apply_own(since, &keys, |m| {
            for booking in &cancelled {
                m.remove_booking(&booking.key);
            }
        });
        Ok(super::AccountChange { user, cancelled })
    }

    async fn update_user(&self, email: String, update: UserUpdate) -> Result<Option<(User, User)>, StoreError> {
        let mut conn = self.pool.get().await.map_err(pg)?;
        let txn = conn.transaction().await.map_err(pg)?;
        let row = txn
            .query_opt(&format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1 FOR UPDATE"), &[&email])
            .await
            .map_err(pg)?;
        let Some(row) = row else { return Ok(None) };
        let before = user_from(&row)?;
        let mut after = before.clone();
        update(&mut after);
        // The key is the address: an update cannot rename an account.
        after.email = email.clone();
        txn.execute(
            "UPDATE users SET id = $2, password_hash = $3, created_at_us = $4, disabled = $5, \
             credential_generation = $6, last_login_us = $7, admin = $8 WHERE email = $1",
            &UserRow::of(&after).params(),
        )
        .await
        .map_err(pg)?;
        notify(&txn, self.origin, vec![Note::User(email.clone())]).await?;
        txn.commit().await.map_err(pg)?;
        self.mirror().set_user(&email, Some(after.clone()));
        Ok(Some((before, after)))
    }

    async fn move_booking(&self, key: SlotKey, to_device: String) -> Result<Booking, MoveError> {
        let mut conn = self.pool.get().await.map_err(pg)?;
        let since = self.days_read();
        let txn = conn.transaction().await.map_err(pg)?;
        let Some(booking) = booking_at(&txn, &key, true).await? else { return Err(MoveError::NotBooked) };
        let target = SlotKey { device: to_device.clone(), ..key.clone() };
        if booking_at(&txn, &target, false).await?.is_some() {
            return Err(MoveError::Taken(to_device));
        }
        delete_booking(&txn, &key).await?;
        // A booking moved twice still names the board it was booked on.
        let moved_from = booking.moved_from.clone().unwrap_or_else(|| booking.key.device.clone());
        let moved = Booking { key: target, moved_from: Some(moved_from), ..booking };
        if !insert_booking(&txn, &moved).await? {
            return Err(MoveError::Taken(to_device));
        }
        let note = Note::Moved {
            email: moved.email.clone(),
            date: key.date.to_string(),
            slot: key.slot,
            from: key.device.clone(),
            to: to_device,
        };
        notify(&txn, self.origin, vec![day_note(&key), day_note(&moved.key), note]).await?;
        txn.commit().await.map_err(pg)?;
        self.apply_own(since, &[&key, &moved.key], |m| {
            m.remove_booking(&key);
            m.put_booking(moved.clone());
        });
        Ok(moved)
    }

    async fn set_maintenance(
        &self,
        device: String,
        set: Option<MaintenanceRecord>,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await.map_err(pg)?;
        let txn = conn.transaction().await.map_err(pg)?;
        match &set {
            Some(r) => {
                txn.execute(
                    "INSERT INTO maintenance (device, reason, set_by, set_at_us) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (device) DO UPDATE SET reason = EXCLUDED.reason, set_by = EXCLUDED.set_by, \
                     set_at_us = EXCLUDED.set_at_us",
                    &[&device, &r.reason, &r.set_by, &r.set_at_us],
                )
                .await
            }
            None => txn.execute("DELETE FROM maintenance WHERE device = $1", &[&device]).await,
        }
        .map_err(pg)?;
        let seq = insert_audit(&txn, &audit).await?;
        notify(&txn, self.origin, vec![Note::Maintenance, Note::Audit]).await?;
        txn.commit().await.map_err(pg)?;
        let mut mirror = self.mirror();
        match set {
            Some(record) => mirror.maintenance.insert(device, record),
            None => mirror.maintenance.remove(&device),
        };
        mirror.audit.insert(seq, audit);
        Ok(())
    }

    async fn audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await.map_err(pg)?;
        let txn = conn.transaction().await.map_err(pg)?;
        let seq = insert_audit(&txn, &entry).await?;
        notify(&txn, self.origin, vec![Note::Audit]).await?;
        txn.commit().await.map_err(pg)?;
        self.mirror().audit.insert(seq, entry);
        Ok(())
    }

    /// Listens for commits until the backend stops: connects, reads
    /// everything, then follows notifications; connects again after a
    /// failure. The first outcome goes to `ready`, where `open` waits.
    async fn listen(self: Arc<Self>, mut ready: Option<std::sync::mpsc::Sender<Result<(), StoreError>>>) {
        loop {
            let error = self.listen_once(&mut ready).await;
            if let Some(ready) = ready.take() {
                let _ = ready.send(Err(error));
                return;
            }
            {
                let mut failure = self.listen_failure.lock().unwrap_or_else(|p| p.into_inner());
                if failure.is_none() {
                    tracing::error!(%error, "lost the database's notifications; reconnecting");
                }
                *failure = Some(error.to_string());
            }
            tokio::time::sleep(RECONNECT_EVERY).await;
        }
    }

    /// One connection's worth of [`Shared::listen`]; returns why it ended.
    async fn listen_once(&self, ready: &mut Option<std::sync::mpsc::Sender<Result<(), StoreError>>>) -> StoreError {
        let (mut client, mut connection) = match self.pool.connect().await {
            Ok(pair) => pair,
            Err(e) => return pg(e),
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        *self.follow.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx.downgrade());
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(n.payload().to_owned()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(%error, "the listening connection ended");
                        return;
                    }
                }
            }
        });
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
            return pg(e);
        }
        let read_day = match client.prepare(READ_DAY).await {
            Ok(statement) => statement,
            Err(e) => return pg(e),
        };
        let fresh = match mirror::load_all(&mut client).await {
            Ok(fresh) => fresh,
            Err(e) => return e,
        };
        let changed = {
            let mut mirror = self.mirror();
            let changed = changed_days(&mirror, &fresh);
            // Counted on: a write in flight across the reconnection sees the days read.
            let days_read = mirror.days_read + 1;
            *mirror = fresh;
            mirror.days_read = days_read;
            changed
        };
        match ready.take() {
            Some(ready) => drop(ready.send(Ok(()))),
            None => {
                tracing::info!("following the database's notifications again");
                for (device, date) in changed {
                    let _ = self.changes.send(Change::Slots { device, date, cancelled: Vec::new() });
                }
            }
        }
        *self.listen_failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
        while let Some(first) = rx.recv().await {
            let mut payloads = vec![first];
            while let Ok(next) = rx.try_recv() {
                payloads.push(next);
            }
            if let Err(e) = self.follow(&client, &read_day, payloads).await {
                return e;
            }
        }
        StoreError::Unavailable("the database closed the listening connection".into())
    }

    /// Reads again what the notifications in `payloads` name, and tells
    /// this host's clients of the other hosts' booking changes.
    async fn follow(
        &self,
        client: &tokio_postgres::Client,
        read_day: &tokio_postgres::Statement,
        payloads: Vec<String>,
    ) -> Result<(), StoreError> {
        let mut users = BTreeSet::new();
        // (device, date) → whether another host changed it.
        let mut days = std::collections::BTreeMap::<(String, String), bool>::new();
        let days_read = self.days_read();
        let (mut maintenance, mut audit, mut moves) = (false, false, Vec::new());
        for payload in payloads {
            let Ok(envelope) = serde_json::from_str::<Envelope>(&payload) else {
                tracing::warn!("a notification this rerod cannot read; ignored");
                continue;
            };
            let foreign = envelope.origin != self.origin;
            // This host's own booking or cancellation, its outcome in the
            // copy already or on its way (`OwnWrite`): read back only if a
            // read of the listener's since it was sent may have undone it.
            let settled = !foreign && envelope.read == Some(days_read);
            for note in envelope.notes {
                match note {
                    Note::User(email) => drop(users.insert(email)),
                    Note::Day(..) if settled => {}
                    Note::Day(device, date) => *days.entry((device, date)).or_default() |= foreign,
                    Note::Moved { email, date, slot, from, to } if foreign => {
                        moves.push((email, date, slot, from, to));
                    }
                    Note::Moved { .. } => {}
                    Note::Maintenance => maintenance = true,
                    Note::Audit => audit = true,
                }
            }
        }
        for email in users {
            let user = mirror::read_user(client, &email).await?;
            self.mirror().set_user(&email, user);
        }
        for ((device, day), foreign) in days {
            let Ok(date) = day.parse::<Date>() else { continue };
            let bookings = mirror::read_day(client, read_day, &device, &day).await?;
            let cancelled: Vec<(u16, String)> = {
                let mut mirror = self.mirror();
                let before = mirror.day(&device, date);
                let gone =
                    before.into_iter().filter(|b| !bookings.iter().any(|n| n.key == b.key && n.email == b.email));
                let gone = gone.map(|b| (b.key.slot, b.email)).collect();
                mirror.replace_day(&device, date, bookings);
                gone
            };
            if foreign {
                let _ = self.changes.send(Change::Slots { device, date, cancelled });
            }
        }
        if maintenance {
            let now = mirror::read_maintenance(client).await?;
            self.mirror().maintenance = now;
        }
        if audit {
            let last = self.mirror.read().unwrap_or_else(|p| p.into_inner()).audit.keys().next_back().copied();
            for (seq, entry) in mirror::read_audit_after(client, last.unwrap_or(0)).await? {
                self.mirror().audit.insert(seq, entry);
            }
        }
        for (email, date, slot, from, to) in moves {
            if let Ok(date) = date.parse() {
                let _ = self.changes.send(Change::Moved { email, date, slot, from, to });
            }
        }
        Ok(())
    }
}

async fn insert_audit(txn: &Transaction<'_>, entry: &AuditEntry) -> Result<i64, StoreError> {
    let row = txn
        .query_one(
            "INSERT INTO audit (at_us, actor, device, action, detail, account, address) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
            &[&entry.at_us, &entry.actor, &entry.device, &entry.action, &entry.detail, &entry.user, &entry.address],
        )
        .await
        .map_err(pg)?;
    Ok(row.get(0))
}

/// The (device, date) whose bookings differ between `old` and `new`.
fn changed_days(old: &Mirror, new: &Mirror) -> BTreeSet<(String, Date)> {
    let mut days = BTreeSet::new();
    for ((device, date, slot), booking) in &old.bookings {
        if new.bookings.get(&(device.clone(), *date, *slot)) != Some(booking) {
            days.insert((device.clone(), *date));
        }
    }
    for ((device, date, slot), booking) in &new.bookings {
        if old.bookings.get(&(device.clone(), *date, *slot)) != Some(booking) {
            days.insert((device.clone(), *date));
        }
    }
    days
}
