//! How lab operations fail: [`AppError`], with its message, and its
//! [`ErrorKind`], the stable machine-readable code every front end shows.
//!
//! Front ends choose what an error looks like on their wire by matching on
//! the kind (HTTP: `http/error.rs` picks the status; WebSocket: the `code`
//! field), never on the code's text.

use std::time::Duration;

use crate::auth::TokenError;
use crate::booking::BookingError;
use crate::compile::CompileError;
use crate::devices::BoardError;
use crate::store::StoreError;

use super::ShareOf;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("Invalid email or password")]
    InvalidCredentials,
    #[error("Too many failed logins for this account; try again in {} s", retry_after.as_secs().max(1))]
    Throttled { retry_after: Duration },
    #[error("Too many logins from this address; try again in {} s", retry_after.as_secs().max(1))]
    AddressThrottled { retry_after: Duration },
    /// Too much of something is in flight (`what`: "checking passwords", ...).
    #[error("The server is busy {what}; try again in a moment")]
    Overloaded { what: &'static str },
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
    /// Too many accounts registered within the hour, from the caller's
    /// address (`from_address`) or from everywhere.
    #[error(
        "Too many new accounts {} in the last hour; try again in {} s, or ask a lab admin for an account",
        if *from_address { "from this address" } else { "were registered" },
        retry_after.as_secs().max(1)
    )]
    RegistrationThrottled { retry_after: Duration, from_address: bool },
    /// The address has the confusable skeleton of an account's or an admin's
    /// (which one is not said: that would tell who has an account).
    #[error(
        "{0} looks the same as an existing account (look-alike letters, or letters from another script); \
         register with a different address"
    )]
    LooksLikeAnAccount(String),
    /// A new password an attacker would try early (the address, a common one).
    #[error("{message}")]
    WeakPassword { field: &'static str, message: String },
    #[error("{message}")]
    InvalidField { field: &'static str, message: String },
    #[error("{0} is required")]
    MissingField(&'static str),
    /// A request body or socket message that could not be read.
    #[error(transparent)]
    Decode(#[from] rerod_wire::DecodeError),
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
    #[error(transparent)]
    Board(#[from] BoardError),
    #[error("{0}")]
    Compile(CompileError),
    #[error("A compile of yours is already running or waiting; send the next when it has finished")]
    CompileAlreadyQueued,
    #[error("Too many compiles are waiting; try again shortly")]
    CompileQueueFull,
    /// The caller's account or address has used its share of compile time,
    /// or is over it while the line is full: others' compiles go first.
    #[error(
        "This {} has used its share of compile time for now, and others' compiles go first; try again in {} s",
        match of { ShareOf::Account => "account", ShareOf::Address => "client address" },
        retry_after.as_secs().max(1)
    )]
    CompileShareUsed { of: ShareOf, retry_after: Duration },
    #[error(
        "Device {device} takes no bookings: it is {health}{}; book another board",
        reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
    )]
    DeviceUnavailable { device: String, health: &'static str, reason: Option<String> },
    #[error("Device {0} is not in maintenance")]
    NotInMaintenance(String),
    #[error("Device {0} has no health check: add [devices.health] (and idle_firmware) to its config")]
    NoHealthCheck(String),
    #[error("No session record {0:?}; GET /records lists yours")]
    RecordNotFound(String),
    #[error("Session record {record} has no camera picture {name:?}; GET /records/{record} lists them")]
    NoSnapshot { record: String, name: String },
    #[error("Session record {0} is someone else's: only its holder and lab admins may read it")]
    NotYourRecord(String),
    /// The account holds `server.max_websockets_per_account` already.
    #[error("Too many WebSockets: {0}")]
    TooManySockets(String),
    #[error("Device {0} has no camera")]
    NoCamera(String),
    /// The camera's visibility does not admit the caller now.
    #[error("{0}")]
    CameraNotVisible(String),
    #[error("The camera of device {device} is offline: {reason}; rerod keeps trying")]
    CameraOffline { device: String, reason: String },
    #[error(
        "This camera ticket is unknown, used or expired: ask for a new one (POST /devices/camera/{{device}}/ticket)"
    )]
    InvalidTicket,
}

/// What went wrong, as clients see it: one variant per stable `code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    // Who is asking.
    InvalidCredentials,
    TooManyAttempts,
    NotAuthenticated,
    TokenExpired,
    InvalidToken,
    AccountDisabled,
    AdminOnly,
    UserNotFound,
    AccountIsAdmin,
    EmailTaken,
    EmailConfusable,
    RegistrationRefused,
    TooManyRegistrations,
    Overloaded,
    TooManySockets,
    // What they sent.
    InvalidField,
    MissingField,
    WeakPassword,
    // Booking rules.
    SlotNotFound,
    SlotSkipped,
    SlotInPast,
    DateTooFarAhead,
    SlotBlocked,
    SlotUnavailable,
    ActiveBookingLimit,
    DailyBookingLimit,
    NotBookedByYou,
    DeviceUnavailable,
    // Boards.
    DeviceNotFound,
    NotYourSlot,
    DeviceBusy,
    DeviceOffline,
    DeviceMisconfigured,
    FirmwareTooLarge,
    InvalidFirmware,
    UploadFailed,
    UploadAborted,
    NotInMaintenance,
    NoHealthCheck,
    /// An admin watching someone else's session may read the console, not type into it.
    ConsoleReadOnly,
    // Cameras.
    NoCamera,
    CameraNotVisible,
    CameraOffline,
    InvalidTicket,
    // Session records.
    RecordNotFound,
    NotYourRecord,
    // Compiling sketches.
    NoCompiler,
    CompileFailed,
    CompileTimeout,
    CompileAlreadyQueued,
    CompileQueueFull,
    CompileShareUsed,
    CompilerUnavailable,
    CompileSandboxUnavailable,
    // The service itself.
    StoreUnavailable,
    Internal,
}

impl ErrorKind {
    /// The stable machine-readable name, the same on every front end.
    pub fn code(self) -> &'static str {
        use ErrorKind as K;
        match self {
            K::InvalidCredentials => "invalid_credentials",
            K::TooManyAttempts => "too_many_attempts",
            K::Overloaded => "overloaded",
            K::TooManySockets => "too_many_account_sockets",
            K::NotAuthenticated => "not_authenticated",
            K::TokenExpired => "token_expired",
            K::InvalidToken => "invalid_token",
            K::AccountDisabled => "account_disabled",
            K::AdminOnly => "admin_only",
            K::UserNotFound => "user_not_found",
            K::AccountIsAdmin => "account_is_admin",
            K::EmailTaken => "email_taken",
            K::EmailConfusable => "email_confusable",
            K::RegistrationRefused => "registration_refused",
            K::TooManyRegistrations => "too_many_registrations",
            K::WeakPassword => "weak_password",
            K::InvalidField => "invalid_field",
            K::MissingField => "missing_field",
            K::SlotNotFound => "slot_not_found",
            K::SlotSkipped => "slot_skipped",
            K::SlotInPast => "slot_in_past",
            K::DateTooFarAhead => "date_too_far_ahead",
            K::SlotBlocked => "slot_blocked",
            K::SlotUnavailable => "slot_unavailable",
            K::ActiveBookingLimit => "active_booking_limit",
            K::DailyBookingLimit => "daily_booking_limit",
            K::NotBookedByYou => "not_booked_by_you",
            K::DeviceUnavailable => "device_unavailable",
            K::NotInMaintenance => "not_in_maintenance",
            K::NoHealthCheck => "no_health_check",
            K::ConsoleReadOnly => "console_read_only",
            K::NoCamera => "no_camera",
            K::CameraNotVisible => "camera_not_visible",
            K::CameraOffline => "camera_offline",
            K::InvalidTicket => "invalid_ticket",
            K::RecordNotFound => "record_not_found",
            K::NotYourRecord => "not_your_record",
            K::DeviceNotFound => "device_not_found",
            K::NotYourSlot => "not_your_slot",
            K::DeviceBusy => "device_busy",
            K::DeviceOffline => "device_offline",
            K::DeviceMisconfigured => "device_misconfigured",
            K::FirmwareTooLarge => "firmware_too_large",
            K::InvalidFirmware => "invalid_firmware",
            K::UploadFailed => "upload_failed",
            K::UploadAborted => "upload_aborted",
            K::NoCompiler => "no_compiler",
            K::CompileFailed => "compile_failed",
            K::CompileTimeout => "compile_timeout",
            K::CompileAlreadyQueued => "compile_already_queued",
            K::CompileQueueFull => "compile_queue_full",
            K::CompileShareUsed => "compile_share_used",
            K::CompilerUnavailable => "compiler_unavailable",
            K::CompileSandboxUnavailable => "compile_sandbox_unavailable",
            K::StoreUnavailable => "store_unavailable",
            K::Internal => "internal",
        }
    }
}

impl AppError {
    pub fn kind(&self) -> ErrorKind {
        use ErrorKind as K;
        match self {
            AppError::InvalidCredentials => K::InvalidCredentials,
            AppError::Throttled { .. } | AppError::AddressThrottled { .. } => K::TooManyAttempts,
            AppError::Overloaded { .. } => K::Overloaded,
            AppError::NotAuthenticated => K::NotAuthenticated,
            AppError::InvalidToken(TokenError::Expired) => K::TokenExpired,
            AppError::InvalidToken(TokenError::Invalid) => K::InvalidToken,
            AppError::AccountDisabled => K::AccountDisabled,
            AppError::AdminOnly => K::AdminOnly,
            AppError::UnknownUser(_) => K::UserNotFound,
            AppError::AccountIsAdmin(_) => K::AccountIsAdmin,
            AppError::EmailTaken => K::EmailTaken,
            AppError::RegistrationRefused(_) => K::RegistrationRefused,
            AppError::RegistrationThrottled { .. } => K::TooManyRegistrations,
            AppError::LooksLikeAnAccount(_) => K::EmailConfusable,
            AppError::WeakPassword { .. } => K::WeakPassword,
            AppError::InvalidField { .. } => K::InvalidField,
            AppError::MissingField(_) | AppError::Decode(rerod_wire::DecodeError::Missing(_)) => K::MissingField,
            AppError::Decode(rerod_wire::DecodeError::Invalid { .. }) => K::InvalidField,
            AppError::Booking(rule) => booking_kind(rule),
            AppError::UnknownDevice(_) => K::DeviceNotFound,
            AppError::Store(_) => K::StoreUnavailable,
            AppError::Internal(_) => K::Internal,
            AppError::Forbidden { .. } => K::NotYourSlot,
            AppError::Board(BoardError::Busy(_)) => K::DeviceBusy,
            AppError::Board(BoardError::Offline { .. }) => K::DeviceOffline,
            AppError::Board(BoardError::Firmware(rerod_devices::FirmwareError::TooLarge { .. })) => K::FirmwareTooLarge,
            AppError::Board(BoardError::Firmware(_)) => K::InvalidFirmware,
            AppError::Board(BoardError::Failed { error, .. }) => upload_kind(error),
            AppError::Board(BoardError::Aborted { .. }) => K::UploadAborted,
            AppError::Board(BoardError::Internal(_)) => K::Internal,
            AppError::Compile(e) => compile_kind(e),
            AppError::CompileAlreadyQueued => K::CompileAlreadyQueued,
            AppError::CompileQueueFull => K::CompileQueueFull,
            AppError::CompileShareUsed { .. } => K::CompileShareUsed,
            AppError::DeviceUnavailable { .. } => K::DeviceUnavailable,
            AppError::NotInMaintenance(_) => K::NotInMaintenance,
            AppError::NoHealthCheck(_) => K::NoHealthCheck,
            AppError::RecordNotFound(_) | AppError::NoSnapshot { .. } => K::RecordNotFound,
            AppError::NotYourRecord(_) => K::NotYourRecord,
            AppError::TooManySockets(_) => K::TooManySockets,
            AppError::NoCamera(_) => K::NoCamera,
            AppError::CameraNotVisible(_) => K::CameraNotVisible,
            AppError::CameraOffline { .. } => K::CameraOffline,
            AppError::InvalidTicket => K::InvalidTicket,
        }
    }

    /// The stable machine-readable name of [`AppError::kind`].
    pub fn code(&self) -> &'static str {
        self.kind().code()
    }

    /// The request field at fault, when the request itself was malformed.
    pub fn field(&self) -> Option<&str> {
        match self {
            AppError::InvalidField { field, .. }
            | AppError::MissingField(field)
            | AppError::WeakPassword { field, .. } => Some(field),
            AppError::Decode(error) => Some(error.field()),
            AppError::Board(BoardError::Firmware(_)) => Some("body"),
            AppError::Board(BoardError::Failed { error: rerod_devices::UploadError::Firmware(_), .. }) => Some("body"),
            AppError::Compile(CompileError::EmptyCode) => Some("code"),
            _ => None,
        }
    }

    /// How long the caller should wait before trying again, when throttled.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AppError::Throttled { retry_after }
            | AppError::AddressThrottled { retry_after }
            | AppError::RegistrationThrottled { retry_after, .. } => Some(*retry_after),
            AppError::CompileShareUsed { retry_after, .. } => Some(*retry_after),
            // Checks queued now are answered within a second or two.
            AppError::Overloaded { .. } => Some(Duration::from_secs(1)),
            // A compile takes seconds; by then a place has likely come free.
            AppError::CompileAlreadyQueued | AppError::CompileQueueFull => Some(Duration::from_secs(5)),
            _ => None,
        }
    }

    /// A malformed field of a request.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> AppError {
        AppError::InvalidField { field, message: message.into() }
    }
}

impl From<crate::auth::HashError> for AppError {
    fn from(error: crate::auth::HashError) -> AppError {
        match error {
            crate::auth::HashError::Overloaded => AppError::Overloaded { what: "checking passwords" },
            crate::auth::HashError::Failed(message) => AppError::Internal(message),
        }
    }
}

fn booking_kind(rule: &BookingError) -> ErrorKind {
    use ErrorKind as K;
    match rule {
        BookingError::NoSuchSlot { .. } => K::SlotNotFound,
        BookingError::SkippedByClockChange { .. } => K::SlotSkipped,
        BookingError::Past { .. } => K::SlotInPast,
        BookingError::TooFarAhead { .. } => K::DateTooFarAhead,
        BookingError::Blocked { .. } => K::SlotBlocked,
        BookingError::Taken { .. } => K::SlotUnavailable,
        BookingError::ActiveLimit { .. } => K::ActiveBookingLimit,
        BookingError::DailyLimit { .. } => K::DailyBookingLimit,
        BookingError::NotBooked { .. } => K::NotBookedByYou,
    }
}

fn upload_kind(error: &rerod_devices::UploadError) -> ErrorKind {
    use ErrorKind as K;
    use rerod_devices::UploadError as E;
    match error {
        E::PortNotFound { .. } | E::PortVanished { .. } | E::PortOpen { .. } => K::DeviceOffline,
        E::TooLarge { .. } => K::FirmwareTooLarge,
        E::Firmware(_) => K::InvalidFirmware,
        E::ToolNotFound { .. } | E::BadOptions(_) | E::Reset(_) | E::Io { .. } | E::Internal(_) => {
            K::DeviceMisconfigured
        }
        E::Cancelled => K::UploadAborted,
        E::NoSync { .. }
        | E::WrongSignature { .. }
        | E::VerifyMismatch { .. }
        | E::Timeout { .. }
        | E::Protocol { .. }
        | E::ToolFailed { .. } => K::UploadFailed,
    }
}

fn compile_kind(error: &CompileError) -> ErrorKind {
    use CompileError as E;
    use ErrorKind as K;
    match error {
        E::NoCompiler { .. } => K::NoCompiler,
        E::EmptyCode => K::InvalidField,
        E::Failed { .. } => K::CompileFailed,
        E::Timeout { .. } => K::CompileTimeout,
        E::Spawn { .. } | E::NoOutput | E::BadOutput(_) => K::CompilerUnavailable,
        E::SandboxUnavailable { .. } => K::CompileSandboxUnavailable,
        E::Io(_) => K::Internal,
    }
}
