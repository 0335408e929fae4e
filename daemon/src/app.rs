//! The running daemon's state and the operations every front end shares
//! (HTTP routes, WebSocket messages): register, log in, authenticate, look up
//! devices, list slots, book and cancel.
//!
//! Architecture invariant: nothing here knows HTTP or JSON. Operations take and
//! return domain values and fail with [`AppError`]; each front end decides how
//! an error looks on its wire.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use jiff::Timestamp;
use jiff::civil::Date;
use tokio::sync::broadcast;

use crate::auth::{self, Hasher, TokenError, TokenKeys};
use crate::booking::{self, BookingError, Slot, SlotStatus};
use crate::clock::Clock;
use crate::config::{Config, JwtSecret, Privacy, Registration};
use crate::metrics::{BookingAction, Metrics, Outcome};
use crate::store::{
    self, BookError, Booking, CancelError, CreateUserError, SetDisabledError, SlotKey, Store, StoreError, User,
};

/// Everything a request may need, shared by all connections.
#[derive(Debug)]
pub struct App {
    config: RwLock<Arc<Config>>,
    config_generation: AtomicU64,
    /// Why the last reload was refused, until one succeeds.
    last_reload_error: Mutex<Option<String>>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    login_throttle: crate::throttle::Throttle,
    hasher: Hasher,
    tokens: TokenKeys,
    clock: Arc<dyn Clock>,
    started: Instant,
    /// Bumped after every committed booking change; cached views compare it.
    bookings_generation: AtomicU64,
    views: Mutex<HashMap<(String, Date), CachedView>>,
    /// Live serial-console sockets (counted apart from the seed's `active_connections`).
    pub console_connections: AtomicUsize,
    /// Live WebSocket connections, for `active_connections`.
    pub ws_connections: AtomicUsize,
    changes: broadcast::Sender<SlotsChanged>,
    /// The configured boards: ports, uploads, sessions (see `devices.rs`).
    pub devices: crate::devices::Devices,
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

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("Invalid email or password")]
    InvalidCredentials,
    #[error("Too many failed logins for this account; try again in {} s", retry_after.as_secs().max(1))]
    Throttled { retry_after: std::time::Duration },
    #[error("Not authenticated: send Authorization: Bearer <token> (or email and password)")]
    NotAuthenticated,
    #[error("{0}")]
    InvalidToken(TokenError),
    #[error("This account is disabled; ask a lab admin")]
    AccountDisabled,
    #[error("Only a lab admin may do this")]
    AdminOnly,
    #[error("No account with the e-mail {0}")]
    UnknownUser(String),
    #[error("{0} is a lab admin (auth.admins in the config); remove it from there first")]
    AccountIsAdmin(String),
    #[error("User with this email already exists")]
    EmailTaken,
    #[error("{0}")]
    RegistrationRefused(String),
    #[error("{message}")]
    InvalidField { field: &'static str, message: String },
    #[error("{0} is required")]
    MissingField(&'static str),
    #[error("{0}")]
    Booking(BookingError),
    #[error("Device {0} not found")]
    UnknownDevice(String),
    #[error("Storage failure: {0}")]
    Store(#[from] StoreError),
    #[error("Internal error: {0}")]
    Internal(String),
    /// Authenticated, but not the holder of the slot in progress on the device.
    #[error("{reason}")]
    Forbidden { device: String, needed_slot: Option<u16>, reason: String },
    #[error("Device {0} is busy: another upload is running on it; try again when it has finished")]
    DeviceBusy(String),
    #[error("Device {device} is offline: {reason}")]
    DeviceOffline { device: String, reason: String },
    #[error("Firmware refused: {0}")]
    Firmware(rerod_devices::FirmwareError),
    #[error("Upload to {device} failed: {error}")]
    Upload { device: String, error: rerod_devices::UploadError },
    #[error("The upload to {device} was aborted: {reason}; the board was reset")]
    UploadAborted { device: String, reason: String },
    #[error("{0}")]
    Compile(crate::compile::CompileError),
}

impl AppError {
    /// A stable machine-readable name, the same on every front end.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::InvalidCredentials => "invalid_credentials",
            AppError::Throttled { .. } => "too_many_attempts",
            AppError::NotAuthenticated => "not_authenticated",
            AppError::InvalidToken(TokenError::Expired) => "token_expired",
            AppError::InvalidToken(TokenError::Invalid) => "invalid_token",
            AppError::AccountDisabled => "account_disabled",
            AppError::AdminOnly => "admin_only",
            AppError::UnknownUser(_) => "user_not_found",
            AppError::AccountIsAdmin(_) => "account_is_admin",
            AppError::EmailTaken => "email_taken",
            AppError::RegistrationRefused(_) => "registration_refused",
            AppError::InvalidField { .. } => "invalid_field",
            AppError::MissingField(_) => "missing_field",
            AppError::Booking(rule) => rule.code(),
            AppError::UnknownDevice(_) => "device_not_found",
            AppError::Store(_) => "store_unavailable",
            AppError::Internal(_) => "internal",
            AppError::Forbidden { .. } => "not_your_slot",
            AppError::DeviceBusy(_) => "device_busy",
            AppError::DeviceOffline { .. } => "device_offline",
            AppError::Firmware(rerod_devices::FirmwareError::TooLarge { .. }) => "firmware_too_large",
            AppError::Firmware(_) => "invalid_firmware",
            AppError::Upload { error, .. } => upload_error_code(error),
            AppError::UploadAborted { .. } => "upload_aborted",
            AppError::Compile(e) => compile_error_code(e),
        }
    }

    pub fn field(field: &'static str, message: impl Into<String>) -> AppError {
        AppError::InvalidField { field, message: message.into() }
    }
}

fn upload_error_code(error: &rerod_devices::UploadError) -> &'static str {
    use rerod_devices::UploadError as E;
    match error {
        E::PortNotFound { .. } | E::PortVanished { .. } | E::PortOpen { .. } => "device_offline",
        E::TooLarge { .. } => "firmware_too_large",
        E::Firmware(_) => "invalid_firmware",
        E::ToolNotFound { .. } | E::BadOptions(_) | E::Reset(_) | E::Io { .. } | E::Internal(_) => {
            "device_misconfigured"
        }
        E::Cancelled => "upload_aborted",
        E::NoSync { .. }
        | E::WrongSignature { .. }
        | E::VerifyMismatch { .. }
        | E::Timeout { .. }
        | E::Protocol { .. }
        | E::ToolFailed { .. } => "upload_failed",
    }
}

fn compile_error_code(error: &crate::compile::CompileError) -> &'static str {
    use crate::compile::CompileError as E;
    match error {
        E::NoCompiler { .. } => "no_compiler",
        E::EmptyCode => "invalid_field",
        E::Failed { .. } => "compile_failed",
        E::Timeout { .. } => "compile_timeout",
        E::Spawn { .. } | E::NoOutput | E::BadOutput(_) => "compiler_unavailable",
        E::Io(_) => "internal",
    }
}

/// The current-or-next booking of a user.
#[derive(Clone, Debug)]
pub struct NextBooking {
    pub booking: Booking,
    pub slot: Slot,
    pub is_current: bool,
}

/// One slot of a listing, as one viewer sees it.
#[derive(Clone, Debug)]
pub struct SlotEntry {
    pub slot: Slot,
    pub booking: Option<Booking>,
    pub status: SlotStatus,
}

/// A device's day, as one viewer sees it.
#[derive(Clone, Debug)]
pub struct DaySlots {
    pub device: DeviceInfo,
    pub date: Date,
    pub entries: Vec<SlotEntry>,
}

impl DaySlots {
    pub fn available_ids(&self) -> Vec<u16> {
        self.entries.iter().filter(|e| e.status == SlotStatus::Available).map(|e| e.slot.id).collect()
    }

    pub fn booked_ids(&self) -> Vec<u16> {
        self.entries.iter().filter(|e| e.booking.is_some()).map(|e| e.slot.id).collect()
    }
}

impl App {
    /// Builds the app: opens the store, settles the JWT secret, starts hashing threads.
    pub fn new(config: Config, clock: Arc<dyn Clock>, metrics: Metrics) -> Result<App, AppError> {
        let store = Store::open(&config.store.path)?;
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
        if secret.len() < 16 {
            tracing::warn!("the configured JWT secret is shorter than 16 bytes; tokens are easy to forge");
        }
        let n_hash_threads = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
        let (changes, _) = broadcast::channel(1024);
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
            hasher: Hasher::start(n_hash_threads),
            clock,
            started: Instant::now(),
            bookings_generation: AtomicU64::new(0),
            views: Mutex::new(HashMap::new()),
            console_connections: AtomicUsize::new(0),
            ws_connections: AtomicUsize::new(0),
            changes,
            devices,
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
    pub fn apply_config(&self, new: Config) -> Vec<&'static str> {
        let old = self.config();
        let mut needs_restart = Vec::new();
        if new.server.listen != old.server.listen {
            needs_restart.push("server.listen");
        }
        if new.store.path != old.store.path {
            needs_restart.push("store.path");
        }
        if new.auth.jwt_algorithm != old.auth.jwt_algorithm {
            needs_restart.push("auth.jwt_algorithm");
        }
        if format!("{:?}", new.auth.jwt_secret) != format!("{:?}", old.auth.jwt_secret) {
            needs_restart.push("auth.jwt_secret_file");
        }
        self.devices.apply(&new);
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        self.config_generation.fetch_add(1, Ordering::AcqRel);
        *self.last_reload_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.metrics.record_config_reload(Outcome::Ok);
        needs_restart
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

    /// Committed booking changes, for live views.
    pub fn subscribe(&self) -> broadcast::Receiver<SlotsChanged> {
        self.changes.subscribe()
    }

    fn changed(&self, key: &SlotKey) {
        self.bookings_generation.fetch_add(1, Ordering::AcqRel);
        // No subscriber is not an error.
        let _ = self.changes.send(SlotsChanged { device: key.device.clone(), date: key.date });
    }

    // ---- accounts -------------------------------------------------------

    pub async fn register(&self, email: &str, password: &str) -> Result<User, AppError> {
        let config = self.config();
        let email = auth::normalize_email(email).map_err(|e| AppError::field("email", e.to_string()))?;
        auth::check_new_password(password, config.auth.min_password_len)
            .map_err(|e| AppError::field("password", e.to_string()))?;
        match &config.auth.registration {
            Registration::Open => {}
            Registration::Closed => {
                return Err(AppError::RegistrationRefused(
                    "Registration is closed; ask a lab admin for an account".into(),
                ));
            }
            Registration::Domains(domains) => {
                let domain = email.rsplit('@').next().unwrap_or_default();
                if !domains.iter().any(|d| d == domain) {
                    return Err(AppError::RegistrationRefused(format!(
                        "Registration is open only to addresses at {}",
                        domains.join(", ")
                    )));
                }
            }
        }
        // Cheap early answer for the common duplicate; the store re-checks atomically.
        if self.store.user(&email)?.is_some() {
            return Err(AppError::EmailTaken);
        }
        let password_hash = self
            .hasher
            .hash(password.to_owned(), config.auth.bcrypt_cost)
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?;
        let user = User { email, password_hash, created_at: self.now(), disabled: false, credential_generation: 0 };
        match self.store.create_user(user).await {
            Ok(user) => {
                tracing::info!(email = %user.email, "user registered");
                Ok(user)
            }
            Err(CreateUserError::Exists) => Err(AppError::EmailTaken),
            Err(CreateUserError::Store(e)) => Err(e.into()),
        }
    }

    /// Checks an e-mail and password; answers the same way, in about the same
    /// time, whether the address is unknown or the password wrong.
    ///
    /// After `auth.max_failed_logins` wrong passwords for one address within
    /// `auth.failed_login_window_secs`, attempts are refused before any
    /// hashing until the oldest failure leaves the window, known address or not.
    pub async fn check_password(&self, email: &str, password: &str) -> Result<(User, Role), AppError> {
        let config = self.config();
        let email = auth::normalize_email(email).unwrap_or_default();
        let (max_failures, window) = (config.auth.max_failed_logins, config.auth.failed_login_window);
        self.login_throttle
            .check(&email, std::time::Instant::now(), max_failures, window)
            .map_err(|retry_after| AppError::Throttled { retry_after })?;
        let user = if email.is_empty() { None } else { self.store.user(&email)? };
        let ok = self
            .hasher
            .verify(password.to_owned(), user.as_ref().map(|u| u.password_hash.clone()), config.auth.bcrypt_cost)
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?;
        match user {
            Some(user) if ok => {
                self.login_throttle.succeeded(&email);
                if user.disabled {
                    return Err(AppError::AccountDisabled);
                }
                let role = self.role_of(&config, &user.email);
                Ok((user, role))
            }
            _ => {
                self.login_throttle.failed(&email, std::time::Instant::now(), window);
                Err(AppError::InvalidCredentials)
            }
        }
    }

    /// Logs in: a token, its lifetime in seconds, and the user's role.
    pub async fn login(&self, email: &str, password: &str) -> Result<(String, u64, Principal), AppError> {
        let checked = self.check_password(email, password).await;
        self.metrics.record_login(if checked.is_ok() { Outcome::Ok } else { Outcome::Failed });
        let (user, role) = checked?;
        let lifetime = self.config().auth.token_lifetime;
        let token = self.tokens.issue(&user.email, user.credential_generation, self.now(), lifetime);
        tracing::info!(email = %user.email, "login");
        Ok((token, lifetime.as_secs(), Principal { email: user.email, role }))
    }

    fn role_of(&self, config: &Config, email: &str) -> Role {
        if config.auth.admins.contains(email) { Role::Admin } else { Role::User }
    }

    /// Establishes who is calling. A token must still match a live account.
    pub async fn authenticate(&self, credentials: Credentials) -> Result<Principal, AppError> {
        match credentials {
            Credentials::Password { email, password } => {
                let (user, role) = self.check_password(&email, &password).await?;
                Ok(Principal { email: user.email, role })
            }
            Credentials::Token(token) => {
                let claims = self.tokens.verify(&token, self.now()).map_err(AppError::InvalidToken)?;
                let user = self.store.user(&claims.sub)?;
                match user {
                    Some(user) if user.disabled => Err(AppError::AccountDisabled),
                    Some(user) if user.credential_generation == claims.generation => {
                        let role = self.role_of(&self.config(), &user.email);
                        Ok(Principal { email: user.email, role })
                    }
                    // Deleted, or the password changed since the token was issued.
                    _ => Err(AppError::InvalidToken(TokenError::Invalid)),
                }
            }
        }
    }

    // ---- devices and slots ---------------------------------------------

    /// The devices in config order, or the default calendar when none is configured.
    pub fn devices(&self) -> Vec<DeviceInfo> {
        devices_of(&self.config())
    }

    /// Resolves a device reference; `None` means the first device.
    pub fn device(&self, reference: Option<&DeviceRef>) -> Result<DeviceInfo, AppError> {
        let devices = self.devices();
        let found = match reference {
            None => devices.into_iter().next(),
            Some(DeviceRef::Number(n)) => usize::try_from(*n).ok().and_then(|n| devices.into_iter().nth(n)),
            Some(DeviceRef::Id(id)) => devices.into_iter().find(|d| &d.id == id),
        };
        found.ok_or_else(|| {
            AppError::UnknownDevice(match reference {
                Some(DeviceRef::Number(n)) => n.to_string(),
                Some(DeviceRef::Id(id)) => format!("{id:?}"),
                None => "(none configured)".to_owned(),
            })
        })
    }

    pub fn today(&self) -> Date {
        self.config().lab.calendar.today(self.now())
    }

    /// A device's slots on `date` as `viewer` sees them.
    pub fn day_slots(&self, device: DeviceInfo, date: Date, viewer: Option<&str>) -> Result<DaySlots, AppError> {
        let config = self.config();
        let now = self.now();
        let mut bookings = self.store.bookings_on(&device.id, date)?.into_iter().peekable();
        let mut entries = Vec::new();
        for slot in config.lab.calendar.slots(date) {
            while bookings.peek().is_some_and(|b| b.key.slot < slot.id) {
                bookings.next();
            }
            let booking = bookings.next_if(|b| b.key.slot == slot.id);
            let booked_by = booking.as_ref().map(|b| b.email.as_str());
            let status = booking::slot_status(&config.lab.policy, &device.id, now, &slot, booked_by, viewer);
            entries.push(SlotEntry { slot, booking, status });
        }
        Ok(DaySlots { device, date, entries })
    }

    /// The anonymous view of a device's day, rendered by `render` and cached
    /// until a booking changes, the config changes, or a slot ends.
    pub fn day_view_cached(
        &self,
        device: DeviceInfo,
        date: Date,
        render: impl FnOnce(&DaySlots) -> bytes::Bytes,
    ) -> Result<bytes::Bytes, AppError> {
        // Read the generation before the store: a change committed meanwhile
        // bumps it afterwards, so a view that might miss it is never served.
        let bookings_generation = self.bookings_generation.load(Ordering::Acquire);
        let config_generation = self.config_generation();
        let now = self.now();
        let key = (device.id.clone(), date);
        let lock = || self.views.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(view) = lock().get(&key)
            && view.bookings_generation == bookings_generation
            && view.config_generation == config_generation
            && now < view.valid_until
        {
            return Ok(view.bytes.clone());
        }
        let day = self.day_slots(device, date, None)?;
        let bytes = render(&day);
        let valid_until =
            day.entries.iter().map(|e| e.slot.end).filter(|end| *end > now).min().unwrap_or(Timestamp::MAX);
        let mut views = lock();
        if views.len() >= MAX_CACHED_VIEWS {
            views.clear();
        }
        views.insert(key, CachedView { bookings_generation, config_generation, valid_until, bytes: bytes.clone() });
        Ok(bytes)
    }

    /// Whether `viewer` may see who booked `booking`, under the lab's privacy setting.
    pub fn shows_booker(&self, booking: &Booking, viewer: Option<&str>) -> bool {
        match self.config().lab.privacy {
            Privacy::ShowEmails => true,
            Privacy::HideOthers => viewer == Some(booking.email.as_str()),
        }
    }

    /// Books a slot for `who`.
    pub async fn book(
        &self,
        who: &Principal,
        device: &DeviceInfo,
        date: Date,
        slot_id: i64,
    ) -> Result<(Booking, Slot), AppError> {
        let config = self.config();
        let now = self.now();
        let calendar = config.lab.calendar.clone();
        let slot = booking::check_bookable(&calendar, &config.lab.policy, &device.id, now, date, slot_id)
            .map_err(AppError::Booking)?;
        let key = SlotKey { device: device.id.clone(), date, slot: slot.id };
        // Admins are not held to the per-user caps.
        let policy = config.lab.policy.clone();
        let is_admin = who.role == Role::Admin;
        let admit: store::Admit =
            Box::new(
                move |existing| {
                    if is_admin { Ok(()) } else { booking::check_caps(&calendar, &policy, now, existing, date) }
                },
            );
        match self.store.book(key, who.email.clone(), now, admit).await {
            Ok(booking) => {
                tracing::info!(email = %who.email, device = %device.id, %date, slot = slot.id, "slot booked");
                self.metrics.record_booking(BookingAction::Book);
                self.changed(&booking.key);
                Ok((booking, slot))
            }
            Err(BookError::Rule(rule)) => Err(AppError::Booking(rule)),
            Err(BookError::AccountDisabled) => Err(AppError::AccountDisabled),
            Err(BookError::Store(e)) => Err(e.into()),
        }
    }

    /// Cancels a booking: one's own, or any for an admin.
    pub async fn cancel(
        &self,
        who: &Principal,
        device: &DeviceInfo,
        date: Date,
        slot_id: i64,
    ) -> Result<Booking, AppError> {
        let config = self.config();
        let slot = booking::check_cancellable(&config.lab.calendar, self.now(), date, slot_id).map_err(|e| match e {
            BookingError::Past { .. } => e,
            _ => BookingError::NotBooked { id: slot_id },
        });
        let slot = slot.map_err(AppError::Booking)?;
        let key = SlotKey { device: device.id.clone(), date, slot: slot.id };
        let requester = (who.role != Role::Admin).then(|| who.email.clone());
        match self.store.cancel(key, requester).await {
            Ok(booking) => {
                if booking.email != who.email {
                    tracing::info!(admin = %who.email, owner = %booking.email, device = %device.id, %date, slot = slot.id, "booking cancelled by admin");
                } else {
                    tracing::info!(email = %who.email, device = %device.id, %date, slot = slot.id, "booking cancelled");
                }
                self.metrics.record_booking(BookingAction::Cancel);
                self.changed(&booking.key);
                if slot.is_in_progress(self.now()) {
                    // Cancelling the slot in progress ends its session at once.
                    let message = format!("the booking of slot {} was cancelled", slot.id);
                    self.devices.end_session(&device.id, &booking.email, message);
                }
                Ok(booking)
            }
            Err(CancelError::NotBooked) => Err(AppError::Booking(BookingError::NotBooked { id: slot_id })),
            Err(CancelError::Store(e)) => Err(e.into()),
        }
    }

    // ---- lab admin ------------------------------------------------------

    /// Every account with its role, by e-mail: admins only.
    pub fn accounts(&self, who: &Principal) -> Result<Vec<(User, Role)>, AppError> {
        require_admin(who)?;
        let config = self.config();
        let accounts = self.store.users()?.into_iter().map(|user| {
            let role = self.role_of(&config, &user.email);
            (user, role)
        });
        Ok(accounts.collect())
    }

    /// Disables or re-enables an account: admins only.
    ///
    /// A disabled account cannot log in, its tokens are refused (also after it
    /// is enabled again: it logs in afresh), and its bookings that have not
    /// ended are cancelled in the same transaction and broadcast; the one in
    /// progress ends its session at once. Ended bookings stay as history.
    /// Admins listed in the config cannot be disabled.
    pub async fn set_account_disabled(
        &self,
        who: &Principal,
        email: &str,
        disabled: bool,
    ) -> Result<AccountUpdate, AppError> {
        require_admin(who)?;
        let config = self.config();
        let email = auth::normalize_email(email).map_err(|e| AppError::field("email", e.to_string()))?;
        if disabled && self.role_of(&config, &email) == Role::Admin {
            return Err(AppError::AccountIsAdmin(email));
        }
        let (calendar, now) = (config.lab.calendar.clone(), self.now());
        // A booking whose slot the calendar no longer has is history too.
        let doomed: store::Doomed = Box::new(move |key: &SlotKey| {
            calendar.slot(key.date, i64::from(key.slot)).is_ok_and(|slot| !slot.is_past(now))
        });
        let change = match self.store.set_disabled(email.clone(), disabled, doomed).await {
            Ok(change) => change,
            Err(SetDisabledError::NoSuchUser) => return Err(AppError::UnknownUser(email)),
            Err(SetDisabledError::Store(e)) => return Err(e.into()),
        };
        let action = if disabled { "account disabled" } else { "account enabled" };
        tracing::info!(admin = %who.email, email = %email, cancelled = change.cancelled.len(), "{action}");
        let mut cancelled = Vec::with_capacity(change.cancelled.len());
        for booking in change.cancelled {
            self.metrics.record_booking(BookingAction::Cancel);
            self.changed(&booking.key);
            // Only bookings whose slot exists were picked.
            let Ok(slot) = config.lab.calendar.slot(booking.key.date, i64::from(booking.key.slot)) else { continue };
            if slot.is_in_progress(now) {
                let message = "the account was disabled by a lab admin".to_owned();
                self.devices.end_session(&booking.key.device, &booking.email, message);
            }
            cancelled.push((booking, slot));
        }
        Ok(AccountUpdate { user: change.user, cancelled })
    }

    /// A user's bookings with their slots, in time order; ended ones only with `history`.
    pub fn bookings_of(&self, email: &str, history: bool) -> Result<Vec<(Booking, Slot)>, AppError> {
        let config = self.config();
        let now = self.now();
        let mut out: Vec<(Booking, Slot)> = self
            .store
            .bookings_of(email)?
            .into_iter()
            .filter_map(|b| {
                let slot = config.lab.calendar.slot(b.key.date, i64::from(b.key.slot)).ok()?;
                Some((b, slot))
            })
            .filter(|(_, slot)| history || !slot.is_past(now))
            .collect();
        out.sort_by(|(a, sa), (b, sb)| sa.start.cmp(&sb.start).then_with(|| a.key.cmp(&b.key)));
        Ok(out)
    }

    /// The booking in progress, or else the next one.
    pub fn next_booking(&self, email: &str) -> Result<Option<NextBooking>, AppError> {
        let now = self.now();
        Ok(self.bookings_of(email, false)?.into_iter().next().map(|(booking, slot)| NextBooking {
            is_current: slot.is_in_progress(now),
            booking,
            slot,
        }))
    }
}

/// An account as an admin left it, and the bookings that went with it, with their slots.
#[derive(Debug)]
pub struct AccountUpdate {
    pub user: User,
    pub cancelled: Vec<(Booking, Slot)>,
}

fn require_admin(who: &Principal) -> Result<(), AppError> {
    if who.role == Role::Admin { Ok(()) } else { Err(AppError::AdminOnly) }
}

/// The devices a config declares, or the one default calendar.
fn devices_of(config: &Config) -> Vec<DeviceInfo> {
    if config.devices.is_empty() {
        return vec![DeviceInfo {
            number: 0,
            id: DEFAULT_DEVICE_ID.to_owned(),
            name: "Default calendar".to_owned(),
            model: String::new(),
            plugin: String::new(),
            port: None,
            baud: 0,
        }];
    }
    config
        .devices
        .iter()
        .enumerate()
        .map(|(number, d)| DeviceInfo {
            number,
            id: d.id.clone(),
            name: d.name.clone(),
            model: d.model.clone(),
            plugin: d.plugin.clone(),
            port: d.port.as_ref().map(|p| p.display().to_string()),
            baud: d.baud,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::Env;

    fn app_at(now: &str) -> (tempfile::TempDir, Arc<ManualClock>, App) {
        let dir = tempfile::tempdir().unwrap();
        let env = Env::from_pairs([("BCRYPT_ROUNDS", "4")]);
        let mut config = Config::from_toml("[lab]\ntimezone = \"UTC\"\n", &env).unwrap();
        config.store.path = dir.path().join("rerod.redb");
        let clock = Arc::new(ManualClock::new(now.parse().unwrap()));
        let app = App::new(config, clock.clone(), Metrics::new()).unwrap();
        (dir, clock, app)
    }

    fn statuses(bytes: &bytes::Bytes) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn cached_views_follow_bookings_and_the_clock() {
        let (_dir, clock, app) = app_at("2026-11-24T10:30:00Z");
        let render = |day: &DaySlots| {
            let s: Vec<&str> = day.entries.iter().map(|e| e.status.as_str()).collect();
            bytes::Bytes::from(s.join(","))
        };
        let date = jiff::civil::date(2026, 11, 24);
        let device = app.device(None).unwrap();
        let view = app.day_view_cached(device.clone(), date, render).unwrap();
        assert!(statuses(&view).starts_with(&format!("{}available,available", "past,".repeat(10))));

        // A booking shows at once.
        app.register("a@x.org", "password1").await.unwrap();
        let who = Principal { email: "a@x.org".into(), role: Role::User };
        app.book(&who, &device, date, 11).await.unwrap();
        let view = app.day_view_cached(device.clone(), date, render).unwrap();
        assert!(statuses(&view).starts_with(&format!("{}available,booked", "past,".repeat(10))));

        // When slot 10 ends it turns past, without any booking change.
        clock.set("2026-11-24T11:00:00Z".parse().unwrap());
        let view = app.day_view_cached(device, date, render).unwrap();
        assert!(statuses(&view).starts_with(&format!("{}booked", "past,".repeat(11))));
    }
}
