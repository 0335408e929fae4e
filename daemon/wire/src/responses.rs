//! What the HTTP API answers: one type per response body. The seed's field
//! names come first and keep their meaning; rerod's additions follow.

use serde::{Deserialize, Serialize};

use super::BookingJson;

/// `GET /`: the seed's greeting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RootResponse {
    pub message: String,
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["/slot-booking"])))]
    pub websocket_endpoint: String,
    pub active_connections: usize,
    /// Today's booked slot ids on the default device.
    pub booked_slots: Vec<u16>,
}

/// The seed's `database` block of `/health` and `/stats`: today on the default device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DatabaseCounts {
    pub total_slots: usize,
    pub booked_slots: usize,
    /// Bookable now: the same slots as `available_slots` of `GET /slots`.
    pub available_slots: usize,
    pub database_path: String,
}

/// `/health`'s `database` block when the store does not answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DatabaseFailure {
    pub error: String,
    pub database_path: String,
}

/// `/health`'s `database` block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum HealthDatabase {
    Counts(DatabaseCounts),
    Failure(DatabaseFailure),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ConfigStatus {
    pub generation: u64,
    /// Why the last reload was refused, until one succeeds.
    pub last_reload_error: Option<String>,
}

/// `/health`'s `store` block: whether the store can write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StoreStatus {
    /// Why the last write failed (a full disk, say), until one commits
    /// again; writes answer 503 meanwhile, reads go on.
    pub last_write_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeviceCounts {
    /// Boards in the config.
    pub configured: usize,
    /// Booking calendars (the boards, or the one default calendar).
    pub calendars: usize,
    pub online: usize,
    pub offline: usize,
}

/// How sketches are compiled on this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CompileHealth {
    /// `landlock` (toolchains are confined), `off` (the admin turned the
    /// sandbox off) or `unavailable` (no Landlock in the kernel: compiling is refused).
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["landlock", "off", "unavailable"])))]
    pub sandbox: String,
}

/// `GET /health`: 200 with `status: "healthy"` while the store answers,
/// 200 with `"degraded"` while it answers reads but cannot write (see
/// `store.last_write_error`), 503 with `"unhealthy"` (and no slot counts)
/// when it cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HealthResponse {
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["healthy", "degraded", "unhealthy"])))]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_slots: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booked_slots_count: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_slots_count: Option<usize>,
    pub database: HealthDatabase,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub timestamp: String,
    pub active_connections: usize,
    pub console_connections: usize,
    pub uptime_seconds: u64,
    pub version: String,
    pub config: ConfigStatus,
    pub store: StoreStatus,
    pub devices: DeviceCounts,
    /// Each board's health.
    pub device_health: Vec<super::DeviceHealthJson>,
    /// Each board camera's state.
    #[serde(default)]
    pub cameras: Vec<CameraHealthJson>,
    pub compile: CompileHealth,
    pub lab: LabInfo,
    /// This host's clock against the lab database's: only on a host of a
    /// lab of several, once it has renewed its presence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_clock: Option<ClusterClock>,
}

/// How far a host's clock is from its lab database's. Every host starts
/// and ends its own boards' sessions by its own clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ClusterClock {
    /// This host's clock minus the database's, in milliseconds (negative:
    /// behind).
    pub ahead_ms: i64,
    /// The reading is good to within this many milliseconds (half its
    /// round trip).
    pub uncertainty_ms: i64,
    /// More than a second apart however the round trip divided: `status`
    /// is then `degraded`.
    pub off: bool,
}

/// One camera in `/health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CameraHealthJson {
    pub device: String,
    #[serde(flatten)]
    pub camera: CameraJson,
}

/// The lab's calendar, so a client shows times in the lab's zone and by its name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LabInfo {
    /// The IANA name of the lab's time zone (`Europe/Berlin`); null when the
    /// host's zone has no name (slot times still carry their UTC offset).
    pub timezone: Option<String>,
    pub slot_minutes: u16,
    /// The built-in demo lab (`rerod --demo`): its board is simulated.
    pub demo: bool,
    /// Who may register: `open`, `closed` (admins make accounts) or
    /// `domains` (addresses in `allowed_domains`), so the sign-in page can say.
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["open", "closed", "domains"])))]
    pub registration: String,
    pub allowed_domains: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WebSocketStats {
    pub active_connections: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SlotStats {
    pub total: usize,
    pub booked: usize,
    pub available: usize,
}

/// One device's day in `/stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeviceStats {
    pub number: usize,
    pub id: String,
    pub name: String,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date")))]
    pub date: String,
    pub total_slots: usize,
    pub booked_slots: usize,
    pub available_slots: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Total {
    pub total: u64,
}

/// `GET /cluster`: every host of a lab of several hosts, with its boards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ClusterResponse {
    /// The host that answered; null when it is not part of a cluster.
    pub host: Option<String>,
    /// Every host that ever renewed its presence, by name (empty on a one-host lab).
    pub hosts: Vec<ClusterHost>,
}

/// One host of the lab.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ClusterHost {
    pub name: String,
    /// Where the other hosts reach it.
    pub advertise: String,
    /// Whether it renewed its presence within `cluster.offline_after_secs`;
    /// its boards are offline when it did not.
    pub online: bool,
    /// When it last renewed its presence (UTC).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub last_seen: String,
    pub boards: Vec<ClusterBoard>,
}

/// A board of the lab, on the host that owns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ClusterBoard {
    pub id: String,
    pub model: String,
}

/// `GET /stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StatsResponse {
    pub database: DatabaseCounts,
    pub websocket: WebSocketStats,
    pub slots: SlotStats,
    pub devices: Vec<DeviceStats>,
    pub users: Total,
    pub bookings: Total,
}

/// `POST /book-slot`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BookSlotResponse {
    #[cfg_attr(feature = "schema", schemars(extend("enum" = [true])))]
    pub success: bool,
    pub message: String,
    pub slot_id: u16,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date")))]
    pub date: String,
    pub device: String,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub start: String,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub end: String,
}

/// `POST /cancel-slot`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CancelSlotResponse {
    #[cfg_attr(feature = "schema", schemars(extend("enum" = [true])))]
    pub success: bool,
    pub message: String,
    pub slot_id: u16,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date")))]
    pub date: String,
    pub device: String,
}

/// `GET`/`POST /my-bookings`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MyBookingsResponse {
    #[cfg_attr(feature = "schema", schemars(extend("enum" = [true])))]
    pub success: bool,
    pub total_bookings: usize,
    pub bookings: Vec<BookingJson>,
}

/// `GET`/`POST /slots/user`: the booking in progress, or else the next one;
/// every field but `success` and `has_booking` is null (`is_current` false)
/// when there is none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UserSlotResponse {
    #[cfg_attr(feature = "schema", schemars(extend("enum" = [true])))]
    pub success: bool,
    pub has_booking: bool,
    pub slot: Option<u16>,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date")))]
    pub date: Option<String>,
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(extend("pattern" = crate::schema::HH_MM)))]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(extend("pattern" = crate::schema::HH_MM)))]
    pub end_time: Option<String>,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub start: Option<String>,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub end: Option<String>,
    pub is_current: bool,
}

/// An account as its owner sees it after registering.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RegisteredUser {
    /// The account's number, for good.
    pub id: u64,
    pub email: String,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub created_at: String,
}

/// `POST /auth/register` (200, as the old backend's code answered).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RegisterResponse {
    #[cfg_attr(feature = "schema", schemars(extend("enum" = [true])))]
    pub success: bool,
    pub message: String,
    /// The old client reads the address here too.
    pub email: String,
    pub user: RegisteredUser,
}

/// The account that logged in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LoggedInUser {
    /// The account's number, the same at every login (the old backend's `user.id`).
    pub id: u64,
    pub email: String,
    /// `user` or `admin`.
    #[cfg_attr(feature = "schema", schemars(extend("enum" = crate::schema::ROLE)))]
    pub role: String,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub created_at: String,
    /// The previous successful login; null on the first.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub last_login: Option<String>,
}

/// `POST /auth/login`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LoginResponse {
    #[cfg_attr(feature = "schema", schemars(extend("enum" = [true])))]
    pub success: bool,
    pub message: String,
    pub token: String,
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["bearer"])))]
    pub token_type: String,
    /// The token's lifetime in seconds.
    pub expires_in: u64,
    pub user: LoggedInUser,
}

/// `POST /auth/password`: a token under the new password (the old ones are revoked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PasswordChangedResponse {
    #[cfg_attr(feature = "schema", schemars(extend("enum" = [true])))]
    pub success: bool,
    pub message: String,
    pub token: String,
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["bearer"])))]
    pub token_type: String,
    pub expires_in: u64,
}

/// `POST /auth/logout-all`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LoggedOutResponse {
    #[cfg_attr(feature = "schema", schemars(extend("enum" = [true])))]
    pub success: bool,
    pub message: String,
}

/// One board of `GET /devices`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeviceJson {
    pub number: usize,
    pub id: String,
    pub name: String,
    pub model: String,
    pub plugin: String,
    pub port: String,
    pub online: bool,
    /// The console's speed.
    pub baud: u32,
    /// The slot in progress is booked, or an upload runs.
    pub in_use: bool,
    /// `good`, `unknown`, `failing` or `maintenance`.
    #[cfg_attr(feature = "schema", schemars(extend("enum" = crate::schema::HEALTH)))]
    pub health: String,
    /// Why a board is failing or in maintenance.
    pub health_reason: Option<String>,
    /// The board's camera; null when it has none.
    #[serde(default)]
    pub camera: Option<CameraJson>,
    /// The host serving the board, in a lab of several hosts; absent on a
    /// lab of one host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A board's camera as `GET /devices` and `GET /devices/camera/{device}` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CameraJson {
    /// `idle` (no one watches), `connecting`, `live`, `offline` (the source
    /// failed; retried while anyone watches).
    #[cfg_attr(feature = "schema", schemars(extend("enum" = crate::schema::CAMERA_STATE)))]
    pub state: String,
    /// Who may watch besides the holder and admins: `holder`, `signed_in`, `public`.
    #[cfg_attr(feature = "schema", schemars(extend("enum" = crate::schema::CAMERA_VISIBILITY)))]
    pub visibility: String,
    pub viewers: usize,
    /// Why the camera is offline (the source's address and error for
    /// admins; others are told only that the source does not answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /devices/camera/{device}`: the camera's state, for someone who may watch it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CameraStatusResponse {
    pub success: bool,
    pub device: String,
    pub camera: CameraJson,
    /// Why the caller may watch: `holder`, `admin` or `visibility`.
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["holder", "admin", "visibility"])))]
    pub access: String,
}

/// `POST /devices/camera/{device}/ticket`: opens one stream, once, soon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CameraTicketResponse {
    pub success: bool,
    pub ticket: String,
    /// Seconds the ticket stays valid.
    pub expires_in: u64,
    /// The stream's path with the ticket, ready for an `<img src>`.
    pub stream_url: String,
}

/// `GET /devices`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DevicesResponse {
    #[cfg_attr(feature = "schema", schemars(extend("enum" = [true])))]
    pub success: bool,
    pub count: usize,
    pub devices: Vec<DeviceJson>,
    pub supported_models: Vec<String>,
}

/// `POST /devices/compile`: 200 whether or not the code compiles; `success`
/// says which, and `program_bytes`/`duration_ms` come only with success.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CompileResponse {
    pub success: bool,
    pub message: String,
    pub compile_output: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_bytes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// `POST /devices/upload/{device}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UploadResponse {
    pub success: bool,
    pub message: String,
    pub device: String,
    /// What the compiler said, when a sketch was sent; null for firmware.
    pub compile_output: Option<String>,
    pub upload_output: String,
    pub bytes_written: u64,
    pub duration_ms: u64,
}

/// An account as a lab admin sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AccountJson {
    pub email: String,
    #[cfg_attr(feature = "schema", schemars(extend("enum" = crate::schema::ROLE)))]
    pub role: String,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub created_at: String,
    pub disabled: bool,
}

/// `GET /admin/users`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AccountsResponse {
    #[cfg_attr(feature = "schema", schemars(extend("enum" = [true])))]
    pub success: bool,
    pub count: usize,
    pub users: Vec<AccountJson>,
}

/// The account an admin changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChangedAccount {
    pub email: String,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub created_at: String,
    pub disabled: bool,
}

/// `POST /admin/users/disable` and `/admin/users/enable`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AccountChangeResponse {
    #[cfg_attr(feature = "schema", schemars(extend("enum" = [true])))]
    pub success: bool,
    pub message: String,
    pub user: ChangedAccount,
    /// The bookings cancelled with the account (none when enabling).
    pub cancelled_bookings: Vec<BookingJson>,
}

/// One account in `rerod export`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedUser {
    pub email: String,
    pub created_at: String,
    pub disabled: bool,
    /// Only with `--with-hashes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
}

/// One booking in `rerod export`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedBooking {
    pub device: String,
    pub date: String,
    pub slot_id: u16,
    pub email: String,
    pub booked_at: String,
}

/// What `rerod export` prints: the store's accounts and bookings, for admins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Export {
    pub users: Vec<ExportedUser>,
    pub bookings: Vec<ExportedBooking>,
}
