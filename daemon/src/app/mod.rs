//! The running daemon's state and the lab operations every front end shares
//! (HTTP routes, WebSocket messages, the command line): the config in force,
//! and the types the operations speak. The operations themselves live by
//! subject: `accounts` (register, log in, authenticate, admins' account
//! changes), `calendar` (devices, slots, book, cancel), `boards` (who may use
//! a board now, compile, upload), `health` (broken boards, maintenance,
//! moving their bookings), and `error` (how they fail).
//!
//! Architecture invariant: nothing here knows HTTP or JSON. Operations take and
//! return domain values and fail with [`AppError`], whose [`ErrorKind`] each
//! front end maps to its wire.

mod accounts;
mod boards;
mod calendar;
mod compile_queue;
mod error;
mod health;
mod records;

pub use accounts::{AccountUpdate, Login};
pub use boards::{Access, Caller, UploadSource, Uploaded};
pub use calendar::{DaySlots, NextBooking, SlotEntry};
pub use compile_queue::ShareOf;
pub use error::{AppError, ErrorKind};
pub use health::{BoardHealthReport, BookingMoved};
pub use records::RecordDetail;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use jiff::Timestamp;
use jiff::civil::Date;
use tokio::sync::broadcast;

use crate::auth::{self, Hasher, TokenKeys};
use crate::clock::Clock;
use crate::config::{Config, JwtSecret};
use crate::metrics::{Metrics, Outcome};
use crate::store::{SlotKey, Store};

/// Everything a request may need, shared by all connections.
#[derive(Debug)]
pub struct App {
    config: RwLock<Arc<Config>>,
    config_generation: AtomicU64,
    /// Why the last reload was refused, until one succeeds.
    last_reload_error: Mutex<Option<String>>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Wrong passwords per account.
    login_throttle: crate::throttle::Throttle,
    /// Logins and registrations per client address.
    address_throttle: crate::throttle::Throttle,
    hasher: Hasher,
    hash_costs: accounts::HashCosts,
    tokens: TokenKeys,
    clock: Arc<dyn Clock>,
    started: Instant,
    /// Bumped after every committed booking change; cached views compare it.
    bookings_generation: AtomicU64,
    views: Mutex<HashMap<(String, Date), CachedView>>,
    /// Live serial-console sockets (counted apart from the seed's `active_connections`).
    console_connections: AtomicUsize,
    /// Live `/slot-booking` sockets, for `active_connections`.
    ws_connections: AtomicUsize,
    /// Both kinds together, against `server.max_websocket_connections`.
    open_sockets: AtomicUsize,
    changes: broadcast::Sender<SlotsChanged>,
    /// Bookings moved off broken boards.
    moves: broadcast::Sender<BookingMoved>,
    /// Sessions about to end, for their holders' booking sockets.
    warnings: broadcast::Sender<SessionWarning>,
    /// The configured boards: ports, uploads, sessions (see `devices.rs`).
    pub devices: crate::devices::Devices,
    /// Session transcripts and upload logs on disk (`records.path`, read once).
    pub records: crate::records::Records,
    /// Turns at the sketch compilers (they are CPU-heavy).
    compiles: compile_queue::CompileQueue,
}

/// A reload refused because it changes the lab's calendar, which only a
/// restart may change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} changed, which needs a restart: stored bookings are kept by date and slot number, so a \
     reload must not change the calendar under them. The reload is refused whole and the running \
     configuration stays; restore the old value, or restart rerod to change it",
    keys.join(" and ")
)]
pub struct ReloadRefused {
    /// The calendar settings that differ from the running config.
    pub keys: Vec<&'static str>,
}

/// A rendered anonymous view of one device's day, and how long it stays true.
#[derive(Debug)]
struct CachedView {
    bookings_generation: u64,
    config_generation: u64,
    /// The next slot end: a slot's status changes from available to past then.
    valid_until: Timestamp,
    bytes: bytes::Bytes,
}

/// Views kept at most; the cache is cleared when it grows past this.
const MAX_CACHED_VIEWS: usize = 4096;

/// A committed change to one device's calendar on one date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotsChanged {
    pub device: String,
    pub date: Date,
}

/// A session that ends soon: `email`'s on `device`, at `end`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionWarning {
    pub device: String,
    pub email: String,
    pub minutes_left: u16,
    pub end: Timestamp,
}

/// Who is asking, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub email: String,
    pub role: Role,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

/// How a caller proves who they are.
#[derive(Clone, Debug)]
pub enum Credentials {
    Token(String),
    Password { email: String, password: String },
}

/// A device as the API shows it: a configured board, or the single default
/// calendar a lab without boards books on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub number: usize,
    pub id: String,
    pub name: String,
    pub model: String,
    pub plugin: String,
    pub port: Option<String>,
    pub baud: u32,
}

/// The two kinds of WebSocket, counted apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketKind {
    /// `/slot-booking`: the seed's `active_connections`.
    Booking,
    /// `/devices/read/{device}`.
    Console,
}

/// Counts one open WebSocket until dropped.
#[derive(Debug)]
pub struct OpenSocket {
    app: Arc<App>,
    kind: SocketKind,
}

impl OpenSocket {
    pub fn kind(&self) -> SocketKind {
        self.kind
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.app.socket_counter(self.kind).fetch_sub(1, Ordering::Relaxed);
        self.app.open_sockets.fetch_sub(1, Ordering::AcqRel);
    }
}

/// bcrypt threads: half the cores, so logins never take them all.
fn n_hash_threads_for_host() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// The shortest JWT signing secret rerod starts with.
const MIN_SECRET_BYTES: usize = 32;

/// The id of the calendar used when no device is configured.
pub const DEFAULT_DEVICE_ID: &str = "default";

/// How a request names a device: by number or by id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceRef {
    Number(i64),
    Id(String),
}

impl DeviceRef {
    /// Reads a query or path value: digits are a number, anything else an id.
    pub fn parse(text: &str) -> DeviceRef {
        match text.parse::<i64>() {
            Ok(n) => DeviceRef::Number(n),
            Err(_) => DeviceRef::Id(text.to_owned()),
        }
    }
}

impl App {
    /// Builds the app: opens the store, settles the JWT secret, starts hashing threads.
    pub fn new(config: Config, clock: Arc<dyn Clock>, metrics: Metrics) -> Result<App, AppError> {
        let store = Store::open(&config.store.path)?;
        let records = crate::records::Records::open(&config.records.path).map_err(|e| {
            AppError::Internal(format!(
                "cannot open the session records directory records.path = {}: {e}; create it for rerod's user \
                 or set records.path",
                config.records.path.display()
            ))
        })?;
        let secret = match &config.auth.jwt_secret {
            Some(JwtSecret::Env(secret)) => secret.as_bytes().to_vec(),
            Some(JwtSecret::File(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    AppError::Internal(format!("cannot read auth.jwt_secret_file {}: {e}", path.display()))
                })?;
                text.trim().as_bytes().to_vec()
            }
            None => store.jwt_secret_or_insert(auth::random_secret)?,
        };
        // A short secret can be guessed offline from any token: refuse to start with one.
        if secret.len() < MIN_SECRET_BYTES {
            return Err(AppError::Internal(format!(
                "the JWT secret (JWT_SECRET_KEY or auth.jwt_secret_file) is {} bytes; it must be at least \
                 {MIN_SECRET_BYTES} (for example: head -c 48 /dev/urandom | base64), or leave both unset and \
                 rerod generates one",
                secret.len()
            )));
        }
        let hash_costs = accounts::HashCosts::new(&store.users()?, config.auth.bcrypt_cost);
        let hasher = Hasher::start(n_hash_threads_for_host(), config.auth.max_queued_password_checks);
        let (changes, _) = broadcast::channel(1024);
        let (moves, _) = broadcast::channel(256);
        let (warnings, _) = broadcast::channel(256);
        let metrics = Arc::new(metrics);
        let devices = crate::devices::Devices::new(&config, Arc::clone(&metrics));
        Ok(App {
            tokens: TokenKeys::new(&secret, config.auth.jwt_algorithm),
            config: RwLock::new(Arc::new(config)),
            config_generation: AtomicU64::new(1),
            last_reload_error: Mutex::new(None),
            store,
            metrics,
            login_throttle: crate::throttle::Throttle::default(),
            address_throttle: crate::throttle::Throttle::default(),
            hasher,
            hash_costs,
            clock,
            started: Instant::now(),
            bookings_generation: AtomicU64::new(0),
            views: Mutex::new(HashMap::new()),
            console_connections: AtomicUsize::new(0),
            ws_connections: AtomicUsize::new(0),
            open_sockets: AtomicUsize::new(0),
            changes,
            moves,
            warnings,
            devices,
            records,
            compiles: compile_queue::CompileQueue::new(boards::MAX_COMPILES),
        })
    }

    /// The config in force; a reload swaps it whole.
    pub fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn config_generation(&self) -> u64 {
        self.config_generation.load(Ordering::Relaxed)
    }

    /// Puts a new config in force, whole. Settings read once at start
    /// (listen address, store, JWT secret and algorithm) keep their old
    /// values; the returned list names those that differ, for the log.
    ///
    /// A config that changes the lab's calendar (its time zone or slot
    /// length) is refused whole and recorded as the last reload error: the
    /// store keeps bookings by date and slot number, so a new calendar would
    /// silently move every one of them to other hours.
    pub fn apply_config(&self, new: Config) -> Result<Vec<&'static str>, ReloadRefused> {
        let old = self.config();
        let (old_calendar, new_calendar) = (&old.lab.calendar, &new.lab.calendar);
        let mut calendar_keys = Vec::new();
        if new_calendar.time_zone() != old_calendar.time_zone() {
            calendar_keys.push("lab.timezone");
        }
        if new_calendar.slot_minutes() != old_calendar.slot_minutes() {
            calendar_keys.push("lab.slot_minutes");
        }
        if !calendar_keys.is_empty() {
            let refused = ReloadRefused { keys: calendar_keys };
            self.reload_failed(refused.to_string());
            return Err(refused);
        }
        let mut needs_restart = Vec::new();
        if new.server.listen != old.server.listen {
            needs_restart.push("server.listen");
        }
        if new.store.path != old.store.path {
            needs_restart.push("store.path");
        }
        if new.records.path != old.records.path {
            needs_restart.push("records.path");
        }
        if new.auth.jwt_algorithm != old.auth.jwt_algorithm {
            needs_restart.push("auth.jwt_algorithm");
        }
        if format!("{:?}", new.auth.jwt_secret) != format!("{:?}", old.auth.jwt_secret) {
            needs_restart.push("auth.jwt_secret_file");
        }
        let fresh = self.devices.apply(&new);
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        self.config_generation.fetch_add(1, Ordering::AcqRel);
        *self.last_reload_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.metrics.record_config_reload(Outcome::Ok);
        self.adopt_boards(fresh);
        Ok(needs_restart)
    }

    /// Warns `warning.email` that their session ends soon: on the board's
    /// consoles and on the booking sockets they identified on.
    pub fn warn_session(&self, warning: SessionWarning) {
        if let Some(board) = self.devices.board(&warning.device) {
            board.warn_session(&warning.email, warning.minutes_left, warning.end);
        }
        // No booking socket listening is fine.
        let _ = self.warnings.send(warning);
    }

    /// Session warnings, as they are sent.
    pub fn subscribe_warnings(&self) -> broadcast::Receiver<SessionWarning> {
        self.warnings.subscribe()
    }

    /// Records a refused reload: the running config stays.
    pub fn reload_failed(&self, error: String) {
        *self.last_reload_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        self.metrics.record_config_reload(Outcome::Failed);
    }

    pub fn last_reload_error(&self) -> Option<String> {
        self.last_reload_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Counts a WebSocket of `kind` as open until the returned guard is
    /// dropped, unless `max` of both kinds are open already: taken in one
    /// atomic step, so upgrades racing each other cannot pass the cap.
    pub fn try_open_socket(self: &Arc<Self>, kind: SocketKind, max: usize) -> Option<OpenSocket> {
        self.open_sockets
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| (open < max).then_some(open + 1))
            .ok()?;
        self.socket_counter(kind).fetch_add(1, Ordering::Relaxed);
        Some(OpenSocket { app: Arc::clone(self), kind })
    }

    fn socket_counter(&self, kind: SocketKind) -> &AtomicUsize {
        match kind {
            SocketKind::Booking => &self.ws_connections,
            SocketKind::Console => &self.console_connections,
        }
    }

    /// Live `/slot-booking` sockets: the seed's `active_connections`.
    pub fn ws_connections(&self) -> usize {
        self.ws_connections.load(Ordering::Relaxed)
    }

    pub fn console_connections(&self) -> usize {
        self.console_connections.load(Ordering::Relaxed)
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// The one-line summary `systemctl status` shows.
    pub fn status_line(&self) -> String {
        format!(
            "serving {} device(s), {} WebSocket client(s), config generation {}{}",
            self.config().devices.len(),
            self.ws_connections(),
            self.config_generation(),
            if self.last_reload_error().is_some() { " (last reload rejected)" } else { "" }
        )
    }

    /// Committed booking changes, for live views.
    pub fn subscribe(&self) -> broadcast::Receiver<SlotsChanged> {
        self.changes.subscribe()
    }

    fn changed(&self, key: &SlotKey) {
        self.bookings_generation.fetch_add(1, Ordering::AcqRel);
        // No subscriber is not an error.
        let _ = self.changes.send(SlotsChanged { device: key.device.clone(), date: key.date });
    }
}

/// A lab on a manual clock, for unit tests of the operations and of what
/// builds on them.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use super::App;
    use crate::clock::ManualClock;
    use crate::config::{Config, Env};
    use crate::metrics::Metrics;

    pub(crate) fn lab_at(now: &str, devices: &str) -> (tempfile::TempDir, Arc<ManualClock>, Arc<App>) {
        let dir = tempfile::tempdir().unwrap();
        let env = Env::from_pairs([("BCRYPT_ROUNDS", "4")]);
        let mut config = Config::from_toml(&format!("[lab]\ntimezone = \"UTC\"\n{devices}"), &env).unwrap();
        config.store.path = dir.path().join("rerod.redb");
        config.records.path = dir.path().join("records");
        let clock = Arc::new(ManualClock::new(now.parse().unwrap()));
        let app = Arc::new(App::new(config, clock.clone(), Metrics::new()).unwrap());
        (dir, clock, app)
    }

    /// Where test requests come from.
    pub(crate) const LOCALHOST: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    pub(crate) const ONE_BOARD: &str =
        "[[devices]]\nid = \"arm-1\"\nplugin = \"stk500v1\"\nport = \"/nonexistent/rerod-test-board\"\n";
}

#[cfg(test)]
mod tests {
    use super::SocketKind;
    use super::testing::lab_at;

    #[tokio::test]
    async fn sockets_are_counted_against_the_cap_in_one_step() {
        let (_dir, _clock, app) = lab_at("2026-11-24T10:30:00Z", "");
        let open: Vec<_> = (0..3).filter_map(|_| app.try_open_socket(SocketKind::Booking, 4)).collect();
        let console = app.try_open_socket(SocketKind::Console, 4).expect("the fourth fits");
        assert!(app.try_open_socket(SocketKind::Booking, 4).is_none(), "both kinds count against one cap");
        assert_eq!((open.len(), app.ws_connections(), app.console_connections()), (3, 3, 1));
        drop(console);
        assert!(app.try_open_socket(SocketKind::Booking, 4).is_some(), "a closed socket frees its place");
        assert_eq!(app.console_connections(), 0);
    }
}
