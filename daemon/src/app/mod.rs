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
mod camera;
mod cluster;
mod compile_queue;
mod current;
mod error;
mod health;
mod records;

pub use accounts::{AccountUpdate, Login};
pub use boards::{Access, Caller, UploadSource, Uploaded};
pub use calendar::{DaySlots, NextBooking, SlotEntry};
pub use camera::{CameraAccess, CameraTicket};
pub use cluster::LabHosts;
pub use compile_queue::ShareOf;
pub use current::ConfigRef;
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
    config: current::CurrentConfig,
    /// Why the last reload was refused, until one succeeds.
    last_reload_error: Mutex<Option<String>>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Wrong passwords per account.
    login_throttle: crate::throttle::Throttle,
    /// Logins and registrations per client address.
    address_throttle: crate::throttle::Throttle,
    /// New accounts per client address, and from everywhere (key [`accounts::EVERYONE`]), per hour.
    registration_throttle: crate::throttle::Throttle,
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
    /// Live `/websocket/{quality}` camera sockets.
    camera_connections: AtomicUsize,
    /// Live `/slot-booking` sockets, for `active_connections` and against
    /// `server.max_websocket_connections`.
    ws_connections: AtomicUsize,
    /// WebSockets of both kinds per client address (its key).
    sockets_per_address: Arc<crate::client::Shares<std::net::IpAddr>>,
    /// WebSockets per signed-in account: consoles, identified feeds.
    sockets_per_account: Arc<crate::client::Shares<String>>,
    changes: broadcast::Sender<SlotsChanged>,
    /// Bookings moved off broken boards.
    moves: broadcast::Sender<BookingMoved>,
    /// Sessions about to end, for their holders' booking sockets.
    warnings: broadcast::Sender<SessionWarning>,
    /// Accounts whose tokens stopped working, for their open sockets.
    sign_outs: broadcast::Sender<SignOut>,
    /// The configured boards: ports, uploads, sessions (see `devices.rs`).
    pub devices: crate::devices::Devices,
    /// Session transcripts and upload logs on disk (`records.path`, read once).
    pub records: crate::records::Records,
    /// Turns at the sketch compilers (they are CPU-heavy).
    compiles: compile_queue::CompileQueue,
    /// The boards' cameras (see `camera/`).
    pub cameras: crate::camera::Cameras,
    /// Short-lived tickets that open a camera stream without a token in its URL.
    camera_tickets: camera::Tickets,
    /// The lab's hosts as last read, and its boards made from them
    /// (`[cluster]`; see `cluster.rs`).
    lab: RwLock<cluster::Lab>,
    /// The lab's secret between hosts (`cluster.secret_file`, read once at start).
    cluster_secret: Option<cluster::Secret>,
    /// The addresses the other hosts' advertised names resolve to, as last read.
    peer_addresses: RwLock<Vec<std::net::IpAddr>>,
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

/// An account whose tokens stopped working: disabled by an admin, signed
/// out everywhere, or its password changed. Its open sockets are told at
/// once instead of at its next request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignOut {
    pub email: String,
    pub reason: SignOutReason,
}

/// Why an account was signed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignOutReason {
    Disabled,
    SignedOutEverywhere,
    PasswordChanged,
}

impl SignOutReason {
    /// The `code` of the `signed_out` message.
    pub fn code(self) -> &'static str {
        match self {
            SignOutReason::Disabled => "account_disabled",
            SignOutReason::SignedOutEverywhere => "signed_out",
            SignOutReason::PasswordChanged => "password_changed",
        }
    }

    /// What the account's sockets say, after "You are signed out: ".
    pub fn message(self) -> &'static str {
        match self {
            SignOutReason::Disabled => "a lab admin disabled this account",
            SignOutReason::SignedOutEverywhere => "this account signed out everywhere",
            SignOutReason::PasswordChanged => "this account's password was changed; sign in with the new one",
        }
    }
}

/// Who is asking, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub email: String,
    pub role: Role,
    /// Where the request came from (behind trusted proxies), when a front
    /// end knows it: the audit log records it beside an admin's action.
    pub address: Option<std::net::IpAddr>,
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
    /// Its place in the lab's list: config order on one host; in a lab of
    /// several hosts, by host name and then each host's config order, the
    /// same on every host.
    pub number: usize,
    pub id: String,
    pub name: String,
    pub model: String,
    pub plugin: String,
    pub port: Option<String>,
    pub baud: u32,
    /// The host serving it, in a lab of several hosts (`[cluster]`).
    pub host: Option<String>,
    /// Set when another host of the lab serves it: where to reach that
    /// host, and the board's state as that host last said.
    pub remote: Option<RemoteBoard>,
}

/// A board another host of the lab serves, as its presence row last said
/// (renewed every third of `cluster.offline_after_secs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteBoard {
    /// The owner's `cluster.advertise` address.
    pub advertise: String,
    /// The owner host is online and its port answers.
    pub online: bool,
    /// The owner host is online (it renewed its presence in time).
    pub host_online: bool,
    pub health: String,
    pub health_reason: Option<String>,
    pub in_use: bool,
    /// Its camera (its stream and state are the owner's routes, forwarded).
    pub camera: Option<crate::store::PresentCamera>,
}

/// The two kinds of WebSocket, counted apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketKind {
    /// `/slot-booking`: the seed's `active_connections`.
    Booking,
    /// `/devices/read/{device}`.
    Console,
    /// `/websocket/{quality}`: the old client's camera feed.
    Camera,
}

/// Counts one open WebSocket until dropped: in its kind's count, its
/// client address's share and, once it says who it is, its account's.
#[derive(Debug)]
pub struct OpenSocket {
    app: Arc<App>,
    kind: SocketKind,
    _address: crate::client::Share<std::net::IpAddr>,
    account: Option<crate::client::Share<String>>,
}

impl OpenSocket {
    pub fn kind(&self) -> SocketKind {
        self.kind
    }

    /// Counts the socket as `email`'s, unless that account already holds
    /// `server.max_websockets_per_account`. Saying it again is free; saying
    /// another account gives the first one's share back.
    pub fn claim_account(&mut self, email: &str) -> Result<(), AppError> {
        if self.account.as_ref().is_some_and(|share| share.key() == email) {
            return Ok(());
        }
        self.account = None;
        let max = self.app.config().server.max_websockets_per_account;
        match self.app.sockets_per_account.try_take(email.to_owned(), max) {
            Some(share) => {
                self.account = Some(share);
                Ok(())
            }
            None => Err(AppError::TooManySockets(format!(
                "your account already has {max} WebSockets open (server.max_websockets_per_account); close a tab \
                 or a console and try again"
            ))),
        }
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.app.socket_counter(self.kind).fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a WebSocket was not opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketRefused {
    /// `server.max_websocket_connections` feeds are open.
    Full,
    /// The client's address holds `server.max_websockets_per_address`.
    Address,
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
pub use rerod_wire::DeviceRef;

impl App {
    /// Builds the app: opens the store, settles the JWT secret, starts hashing threads.
    pub fn new(config: Config, clock: Arc<dyn Clock>, metrics: Metrics) -> Result<App, AppError> {
        let cluster_secret = cluster::read_cluster_secret(&config)?;
        let store = match &config.store.url {
            Some(url) => Store::open_postgres(url, &config.store.path)?,
            None => Store::open(&config.store.path)?,
        };
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
        let (sign_outs, _) = broadcast::channel(256);
        let metrics = Arc::new(metrics);
        let devices = crate::devices::Devices::new(&config, Arc::clone(&metrics));
        let cameras = crate::camera::Cameras::new(&config);
        Ok(App {
            tokens: TokenKeys::new(&secret, config.auth.jwt_algorithm),
            config: current::CurrentConfig::new(config),
            last_reload_error: Mutex::new(None),
            store,
            metrics,
            login_throttle: crate::throttle::Throttle::default(),
            address_throttle: crate::throttle::Throttle::default(),
            registration_throttle: crate::throttle::Throttle::default(),
            hasher,
            hash_costs,
            clock,
            started: Instant::now(),
            bookings_generation: AtomicU64::new(0),
            views: Mutex::new(HashMap::new()),
            console_connections: AtomicUsize::new(0),
            camera_connections: AtomicUsize::new(0),
            ws_connections: AtomicUsize::new(0),
            sockets_per_address: Arc::default(),
            sockets_per_account: Arc::default(),
            changes,
            moves,
            warnings,
            sign_outs,
            devices,
            records,
            compiles: compile_queue::CompileQueue::new(boards::MAX_COMPILES),
            cameras,
            camera_tickets: camera::Tickets::default(),
            lab: RwLock::default(),
            cluster_secret,
            peer_addresses: RwLock::new(Vec::new()),
        })
    }

    /// The config in force; a reload swaps it whole.
    pub fn config(&self) -> ConfigRef {
        self.config.get()
    }

    /// Changes with every reload.
    pub fn config_generation(&self) -> u64 {
        self.config.generation()
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
        if new.store.url != old.store.url {
            needs_restart.push("store.url");
        }
        if new.cluster != old.cluster {
            needs_restart.push("cluster");
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
        self.cameras.apply(&new);
        self.config.replace(new);
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

    /// Tells `email`'s open sockets that its tokens no longer work.
    pub fn sign_out(&self, email: &str, reason: SignOutReason) {
        // No socket listening is fine.
        let _ = self.sign_outs.send(SignOut { email: email.to_owned(), reason });
    }

    /// Sign-outs, as they happen.
    pub fn subscribe_sign_outs(&self) -> broadcast::Receiver<SignOut> {
        self.sign_outs.subscribe()
    }

    /// Session warnings, as they are sent.
    pub fn subscribe_warnings(&self) -> broadcast::Receiver<SessionWarning> {
        self.warnings.subscribe()
    }

    /// `text` as someone who is not an admin may see it: the host paths
    /// rerod knows (each board's port, the store, the records directory)
    /// replaced by names. Host paths are the admins' business; a student's
    /// console status and the public `/health` show none.
    pub fn without_host_paths(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for board in self.devices.boards() {
            let port = board.port().config().spec.to_string();
            if !port.is_empty() && text.contains(&port) {
                text = text.replace(&port, &format!("{}'s port", board.id));
            }
        }
        for (path, name) in [(self.store.path(), "the store"), (self.records.path(), "the records directory")] {
            let path = path.display().to_string();
            if !path.is_empty() && text.contains(&path) {
                text = text.replace(&path, name);
            }
        }
        text
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

    /// Counts a WebSocket of `kind` from `client` as open until the returned
    /// guard is dropped. Every socket counts against its address's share.
    /// `/slot-booking` feeds also count against `server.max_websocket_connections`,
    /// taken in one atomic step so racing upgrades cannot pass it; consoles
    /// do not, so feeds can never take the capacity a session holder's
    /// console needs (a console that is not the holder's or an admin's is
    /// closed as soon as it says who it is).
    pub fn try_open_socket(
        self: &Arc<Self>,
        kind: SocketKind,
        client: std::net::IpAddr,
    ) -> Result<OpenSocket, SocketRefused> {
        let server = &self.config().server;
        let key = crate::client::address_key(client);
        let address =
            self.sockets_per_address.try_take(key, server.max_websockets_per_address).ok_or(SocketRefused::Address)?;
        let counter = self.socket_counter(kind);
        match kind {
            SocketKind::Booking => {
                let max = server.max_websocket_connections;
                counter
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| (open < max).then_some(open + 1))
                    .map_err(|_| SocketRefused::Full)?;
            }
            SocketKind::Console | SocketKind::Camera => {
                counter.fetch_add(1, Ordering::AcqRel);
            }
        }
        Ok(OpenSocket { app: Arc::clone(self), kind, _address: address, account: None })
    }

    fn socket_counter(&self, kind: SocketKind) -> &AtomicUsize {
        match kind {
            SocketKind::Booking => &self.ws_connections,
            SocketKind::Console => &self.console_connections,
            SocketKind::Camera => &self.camera_connections,
        }
    }

    /// Live `/slot-booking` sockets: the seed's `active_connections`.
    pub fn ws_connections(&self) -> usize {
        self.ws_connections.load(Ordering::Relaxed)
    }

    pub fn console_connections(&self) -> usize {
        self.console_connections.load(Ordering::Relaxed)
    }

    pub fn camera_connections(&self) -> usize {
        self.camera_connections.load(Ordering::Relaxed)
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

    /// With a store shared by several hosts, passes the booking changes the
    /// other hosts commit to this host's live views, as if made here: each
    /// host sends `slots_update` and `booking_moved` to its own clients.
    /// `None` on a one-host store.
    pub fn start_following_store(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let mut changes = self.store.subscribe_changes()?;
        let app = Arc::clone(self);
        Some(tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(crate::store::Change::Slots { device, date, cancelled }) => {
                        app.end_cancelled_sessions(&device, date, &cancelled);
                        app.changed(&SlotKey { device, date, slot: 0 });
                    }
                    Ok(crate::store::Change::Moved { email, date, slot, from, to }) => {
                        let _ = app.moves.send(BookingMoved { email, date, slot, from, to });
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "fell behind the other hosts' booking changes");
                        // Live views are rendered again from the store.
                        app.bookings_generation.fetch_add(1, Ordering::AcqRel);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }))
    }

    /// Ends the session on this host's board `device` whose booking another
    /// host cancelled (or moved) while its slot is in progress, as a cancel
    /// made here does.
    fn end_cancelled_sessions(&self, device: &str, date: jiff::civil::Date, cancelled: &[(u16, String)]) {
        if cancelled.is_empty() || self.devices.board(device).is_none() {
            return;
        }
        let Some(slot) = self.config().lab.calendar.slot_at(self.now()) else { return };
        for (_, email) in cancelled.iter().filter(|(id, _)| slot.date == date && *id == slot.id) {
            let message = format!("the booking of slot {} was cancelled", slot.id);
            self.devices.end_session(device, email, message);
        }
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
    use super::testing::{LOCALHOST, lab_at};
    use super::{SocketKind, SocketRefused};

    #[tokio::test]
    async fn feeds_are_capped_and_consoles_are_not_taken_by_them() {
        let (_dir, _clock, app) = lab_at("2026-11-24T10:30:00Z", "[server]\nmax_websocket_connections = 3\n");
        let open: Vec<_> = (0..4).filter_map(|_| app.try_open_socket(SocketKind::Booking, LOCALHOST).ok()).collect();
        assert_eq!(open.len(), 3, "feeds stop at the cap");
        assert_eq!(app.try_open_socket(SocketKind::Booking, LOCALHOST).unwrap_err(), SocketRefused::Full);
        let console = app.try_open_socket(SocketKind::Console, LOCALHOST).expect("a console is outside the feeds' cap");
        assert_eq!((app.ws_connections(), app.console_connections()), (3, 1));
        drop(console);
        drop(open);
        assert!(app.try_open_socket(SocketKind::Booking, LOCALHOST).is_ok(), "a closed socket frees its place");
        assert_eq!(app.console_connections(), 0);
    }

    #[tokio::test]
    async fn sockets_are_capped_per_address_and_per_account() {
        let config = "[server]\nmax_websockets_per_address = 2\nmax_websockets_per_account = 1\n";
        let (_dir, _clock, app) = lab_at("2026-11-24T10:30:00Z", config);
        let other: std::net::IpAddr = "192.0.2.9".parse().unwrap();
        let mut a = app.try_open_socket(SocketKind::Console, LOCALHOST).unwrap();
        let _b = app.try_open_socket(SocketKind::Booking, LOCALHOST).unwrap();
        assert_eq!(app.try_open_socket(SocketKind::Booking, LOCALHOST).unwrap_err(), SocketRefused::Address);
        let mut c = app.try_open_socket(SocketKind::Console, other).expect("another address has its own share");
        a.claim_account("ada@x.org").unwrap();
        a.claim_account("ada@x.org").expect("claiming again is free");
        assert_eq!(c.claim_account("ada@x.org").unwrap_err().kind(), super::ErrorKind::TooManySockets);
        drop(a);
        c.claim_account("ada@x.org").expect("the account's socket was given back");
    }
}
