//! The file's shape as serde reads it: everything optional, unknown keys refused.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub store: Store,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default)]
    pub lab: Lab,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub devices: Vec<Device>,
    #[serde(default)]
    pub compilers: std::collections::BTreeMap<String, Compiler>,
    #[serde(default)]
    pub compile: Compile,
    #[serde(default)]
    pub records: Records,
    pub cluster: Option<Cluster>,
}

/// `[cluster]`: this host's part in a lab of several hosts on one shared store.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Cluster {
    pub name: Option<String>,
    pub advertise: Option<String>,
    pub secret_file: Option<String>,
    pub offline_after_secs: Option<i64>,
}

/// `[records]`: where session transcripts and upload logs are kept, and for how long.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Records {
    pub path: Option<String>,
    pub max_age_days: Option<i64>,
    pub max_total_mb: Option<i64>,
    pub max_transcript_kb: Option<i64>,
}

/// `[compile]`: how every toolchain is confined (`[compilers.<model>]` says which one runs).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Compile {
    pub sandbox: Option<String>,
    pub read_paths: Option<Vec<String>>,
    pub cpu_secs: Option<i64>,
    pub memory_mb: Option<i64>,
    pub file_size_mb: Option<i64>,
    pub max_processes: Option<i64>,
    pub max_open_files: Option<i64>,
    pub max_queued: Option<i64>,
    pub cpu_window_secs: Option<i64>,
    pub cpu_secs_per_account: Option<i64>,
    pub cpu_secs_per_address: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Compiler {
    pub argv: Option<Vec<String>>,
    pub timeout_secs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Server {
    pub listen: Option<String>,
    pub cors_origins: Option<Vec<String>>,
    pub max_connections: Option<i64>,
    pub max_json_bytes: Option<i64>,
    pub max_firmware_bytes: Option<i64>,
    pub max_upload_bytes_in_flight: Option<i64>,
    pub header_read_timeout_secs: Option<i64>,
    pub max_websocket_connections: Option<i64>,
    pub max_websocket_message_bytes: Option<i64>,
    pub max_header_bytes: Option<i64>,
    pub max_connections_per_address: Option<i64>,
    pub max_websockets_per_address: Option<i64>,
    pub max_websockets_per_account: Option<i64>,
    pub trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Store {
    pub path: Option<String>,
    pub url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Auth {
    pub jwt_secret_file: Option<String>,
    pub jwt_algorithm: Option<String>,
    pub token_minutes: Option<i64>,
    pub bcrypt_cost: Option<i64>,
    pub min_password_length: Option<i64>,
    pub max_failed_logins: Option<i64>,
    pub failed_login_window_secs: Option<i64>,
    pub max_logins_per_address: Option<i64>,
    pub address_window_secs: Option<i64>,
    pub max_queued_password_checks: Option<i64>,
    pub min_password_score: Option<i64>,
    pub max_registrations_per_address_per_hour: Option<i64>,
    pub max_registrations_per_hour: Option<i64>,
    pub registration: Option<String>,
    pub allowed_domains: Option<Vec<String>>,
    pub admins: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Lab {
    pub timezone: Option<String>,
    pub slot_minutes: Option<i64>,
    pub days_ahead: Option<i64>,
    pub max_active_bookings: Option<i64>,
    pub max_bookings_per_day: Option<i64>,
    pub privacy: Option<String>,
    pub session_warnings_minutes: Option<Vec<i64>>,
    pub legacy_camera_device: Option<String>,
    #[serde(default)]
    pub maintenance: Vec<Maintenance>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Maintenance {
    pub device: Option<String>,
    pub reason: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub weekdays: Option<Vec<String>>,
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Log {
    pub level: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Device {
    pub id: Option<String>,
    pub name: Option<String>,
    pub model: Option<String>,
    pub plugin: Option<String>,
    pub port: Option<String>,
    pub usb: Option<Usb>,
    pub baud: Option<i64>,
    pub reset: Option<toml::Value>,
    pub options: Option<toml::Table>,
    pub upload_baud: Option<i64>,
    pub flash_limit: Option<i64>,
    pub idle_firmware: Option<String>,
    pub power: Option<toml::Value>,
    pub health: Option<Health>,
    pub camera: Option<Camera>,
}

/// `camera = { mjpeg = "http://...", visibility = "holder" }`: the board's camera.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Camera {
    pub mjpeg: Option<String>,
    pub snapshot: Option<String>,
    pub snapshot_interval_ms: Option<i64>,
    pub visibility: Option<String>,
    pub max_frame_kb: Option<i64>,
    pub linger_ms: Option<i64>,
}

/// `[devices.health]`: the check run on a board between sessions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Health {
    pub expect: Option<String>,
    pub timeout_secs: Option<i64>,
    pub webhook: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Usb {
    pub vid: Option<String>,
    pub pid: Option<String>,
    pub serial_number: Option<String>,
}
