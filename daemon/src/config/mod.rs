//! Configuration: the TOML file (or built-in defaults), the seed's environment
//! variables on top, validated into typed settings.
//!
//! Loading is two steps: serde reads the raw file shape (`raw` structs, every
//! field optional), then `validate` checks every value and builds the typed
//! [`Config`], collecting one [`Problem`] per bad key instead of stopping at
//! the first.
//!
//! This file holds the typed config, the captured environment ([`Env`]), the
//! errors and loading; `raw.rs` the serde schema, `validate.rs` the checks,
//! and `tests.rs` the unit tests.

mod raw;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::booking::{Calendar, Policy};
use rerod_devices::{Firmware, ResetMethod};

/// The validated configuration the daemon runs on.
#[derive(Clone, Debug)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub auth: AuthConfig,
    pub lab: LabConfig,
    pub log: LogConfig,
    pub devices: Vec<DeviceConfig>,
    /// Sketch toolchains by board model (`[compilers.<model>]`).
    pub compilers: std::collections::BTreeMap<String, CompilerConfig>,
    /// How every toolchain is confined (`[compile]`).
    pub compile: CompileConfig,
    /// Session transcripts and upload logs on disk (`[records]`).
    pub records: RecordsConfig,
    /// The built-in demo lab (`rerod --demo`); never set from a file.
    pub demo: bool,
    /// This host's part in a lab of several hosts (`[cluster]`); read once at start.
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: how this host names itself to the lab's other hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Unique in the lab: letters, digits, `-`, `_` and `.`, 1 to 63 of them.
    pub name: String,
    /// Where the other hosts reach this one (`http://bench-2.lab.example:8000`).
    pub advertise: String,
    /// The lab's shared secret between hosts (at least 32 bytes), read at start.
    pub secret_file: PathBuf,
    /// A host that has not renewed its presence for this long shows offline.
    pub offline_after: Duration,
}

/// `[records]`: where session records are kept and what retention removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordsConfig {
    /// Default: `records/` beside the store file. Read once at start.
    pub path: PathBuf,
    /// Records older than this are deleted.
    pub max_age: Duration,
    /// Beyond this, the oldest records are deleted first.
    pub max_total_bytes: u64,
    /// One session's transcript stops growing here (a marker line says so).
    pub max_transcript_bytes: u64,
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `*` allows any origin.
    pub cors_origins: Vec<String>,
    pub max_connections: usize,
    pub max_json_bytes: usize,
    pub max_firmware_bytes: usize,
    /// Upload bodies being received at once, in bytes, across all clients.
    pub max_upload_bytes_in_flight: usize,
    pub header_read_timeout: Duration,
    /// `/slot-booking` sockets at most, together. Consoles are outside it,
    /// so a feed flood never takes the session holder's console.
    pub max_websocket_connections: usize,
    pub max_websocket_message_bytes: usize,
    /// The request line and headers together, in bytes; beyond it, 431.
    pub max_header_bytes: usize,
    /// Open connections (upgraded sockets included) from one client address.
    pub max_connections_per_address: usize,
    /// WebSockets of both kinds from one client address.
    pub max_websockets_per_address: usize,
    /// WebSockets one signed-in account holds (consoles, identified feeds).
    pub max_websockets_per_account: usize,
    /// Reverse proxies whose `Forwarded`/`X-Forwarded-For` name the client.
    pub trusted_proxies: Vec<crate::client::Cidr>,
}

#[derive(Clone)]
pub struct StoreConfig {
    /// The redb file; with `url` set, the path this host's own files
    /// (control socket, records) go beside.
    pub path: PathBuf,
    /// A PostgreSQL database the lab's hosts share (`store.url` or
    /// `DATABASE_URL`); `None` keeps the redb file. Read once at start.
    pub url: Option<String>,
}

/// The URL may carry a password: Debug says only whether there is one.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig").field("path", &self.path).field("url", &self.url.as_ref().map(|_| "…")).finish()
    }
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub jwt_secret: Option<JwtSecret>,
    pub jwt_algorithm: crate::auth::TokenAlgorithm,
    pub token_lifetime: Duration,
    pub bcrypt_cost: u32,
    pub min_password_len: usize,
    /// Wrong passwords for one address within `failed_login_window` before logins are throttled.
    pub max_failed_logins: u32,
    pub failed_login_window: Duration,
    /// Logins and registrations from one client address within `address_window`.
    pub max_logins_per_address: u32,
    pub address_window: Duration,
    /// Password checks that may wait for a hashing thread; more are refused (503).
    /// Read once at start.
    pub max_queued_password_checks: usize,
    /// The zxcvbn score (0 to 4) a new password needs; 0 checks only that it is not the address.
    pub min_password_score: u8,
    /// Accounts registered from one client address within an hour.
    pub max_registrations_per_address_per_hour: u32,
    /// Accounts registered from anywhere within an hour.
    pub max_registrations_per_hour: u32,
    pub registration: Registration,
    /// Lower-cased e-mail addresses.
    pub admins: BTreeSet<String>,
}

/// Where the JWT signing secret comes from when it is not generated.
#[derive(Clone)]
pub enum JwtSecret {
    /// `JWT_SECRET_KEY`.
    Env(String),
    /// `auth.jwt_secret_file`, read at start.
    File(PathBuf),
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret itself.
        match self {
            JwtSecret::Env(_) => f.write_str("JwtSecret::Env(..)"),
            JwtSecret::File(path) => f.debug_tuple("JwtSecret::File").field(path).finish(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Registration {
    Open,
    Closed,
    /// Only e-mail addresses in these (lower-cased) domains may register.
    Domains(Vec<String>),
}

#[derive(Clone, Debug)]
pub struct LabConfig {
    pub calendar: Calendar,
    pub policy: Policy,
    pub privacy: Privacy,
    /// Minutes before a session's end at which its holder is warned, largest first.
    pub session_warnings: Vec<u16>,
    /// The board whose camera the old client's `/websocket/{quality}` shows
    /// (only while that camera is `public`).
    pub legacy_camera_device: Option<String>,
}

/// What `booked_by` shows of other people's bookings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privacy {
    /// Everyone sees who booked (the seed's behaviour; its web client relies on it).
    ShowEmails,
    /// Only your own bookings carry your e-mail; others show `null`.
    HideOthers,
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    /// A `tracing` filter directive, e.g. `info` or `rerod=debug,info`.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON lines otherwise.
    Auto,
    Human,
    Json,
}

/// A board as the config declares it. The device layer decides how to reach it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceConfig {
    pub id: String,
    pub name: String,
    pub model: String,
    pub plugin: String,
    pub port: Option<PathBuf>,
    pub usb: Option<UsbMatch>,
    pub baud: u32,
    /// How the board is reset into its bootloader (and after an aborted upload).
    pub reset: ResetMethod,
    /// The plugin's own options, already accepted by its `check_options`.
    pub options: toml::Table,
    /// The bootloader's baud rate (default: the model's, else 115200).
    pub upload_baud: u32,
    /// Flash available to programs, in bytes (the model's unless set; required
    /// for a model rerod does not know). No image reaching past it is flashed.
    pub flash_limit: u64,
    /// Flashed when a session that uploaded something ends, so the next user starts clean.
    pub idle_firmware: Option<IdleFirmware>,
    /// How the board's power is cycled when a reset does not revive it.
    pub power: Option<PowerMethod>,
    /// The health check run between sessions (`[devices.health]`); none when unset.
    pub health: Option<HealthCheckConfig>,
    /// The board's camera (`camera = { mjpeg = "..." }`); none when unset.
    pub camera: Option<CameraConfig>,
}

/// A board's camera: where its pictures come from and who may watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CameraConfig {
    pub source: CameraSource,
    pub visibility: Visibility,
    /// A frame larger than this is dropped (and counted), never buffered.
    pub max_frame_bytes: usize,
    /// How long the upstream connection stays open after the last viewer leaves.
    pub linger: Duration,
}

/// Where a camera's JPEG frames come from. rerod never decodes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CameraSource {
    /// An HTTP MJPEG stream (`multipart/x-mixed-replace`): ustreamer,
    /// mjpg-streamer, an IP camera.
    Mjpeg(WebhookUrl),
    /// A URL answering one JPEG per GET, fetched every `interval`.
    Snapshot { url: WebhookUrl, interval: Duration },
}

impl CameraSource {
    pub fn url(&self) -> &WebhookUrl {
        match self {
            CameraSource::Mjpeg(url) | CameraSource::Snapshot { url, .. } => url,
        }
    }
}

/// Who may watch a camera besides the holder of the session in progress
/// and admins, who always may.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// No one else (the default).
    Holder,
    /// Anyone signed in.
    SignedIn,
    /// Anyone, signed in or not.
    Public,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Holder => "holder",
            Visibility::SignedIn => "signed_in",
            Visibility::Public => "public",
        }
    }
}

/// How a board's USB power is switched off and on again (`power`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PowerMethod {
    /// Debian's `uhubctl`: cycle `port` of the hub at `location` (e.g. "1-1").
    Uhubctl { location: String, port: u16 },
    /// Any argv, run without a shell.
    Command(Vec<String>),
}

impl PowerMethod {
    /// The argv that cycles the board's power.
    pub fn argv(&self) -> Vec<String> {
        match self {
            PowerMethod::Uhubctl { location, port } => {
                ["uhubctl", "-l", location, "-p", &port.to_string(), "-a", "cycle", "-d", "2"]
                    .map(str::to_owned)
                    .to_vec()
            }
            PowerMethod::Command(argv) => argv.clone(),
        }
    }
}

/// A board's health check: after its idle firmware is flashed, `expect`
/// must appear on its console within `timeout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub expect: String,
    pub timeout: Duration,
    /// Told (POST, JSON) when the board becomes `failing`.
    pub webhook: Option<WebhookUrl>,
}

/// A plain `http://` URL, split for a request without a client library
/// (a health webhook, a camera source).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookUrl {
    pub host: String,
    pub port: u16,
    /// The path and query, starting with `/`.
    pub path: String,
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
    }
}

/// A device's idle firmware, read and checked when the config is loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct IdleFirmware {
    pub path: PathBuf,
    pub firmware: std::sync::Arc<Firmware>,
}

/// How sketches for one board model are compiled: an argv (no shell) with
/// `{sketch}` (the `.ino` file), `{sketch_dir}` and `{build}` (the output
/// directory); the program is the `.hex` the tool leaves in `{build}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompilerConfig {
    pub argv: Vec<String>,
    pub timeout: Duration,
}

/// How a toolchain is confined while it compiles a user's sketch (`[compile]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileConfig {
    pub sandbox: SandboxMode,
    /// Directories (or files) the toolchain may read besides the system's and
    /// its own: an Arduino installation outside `/usr`, extra libraries.
    pub read_paths: Vec<PathBuf>,
    pub limits: ToolLimits,
    /// Compiles that may wait for a compiler; more are refused (429).
    pub max_queued: usize,
    /// How far back compile CPU time counts against a share.
    pub cpu_window: Duration,
    /// Compile CPU time each account may use within `cpu_window`.
    pub cpu_per_account: Duration,
    /// Compile CPU time each client address may use within `cpu_window`.
    pub cpu_per_address: Duration,
}

impl Default for CompileConfig {
    fn default() -> CompileConfig {
        CompileConfig {
            sandbox: SandboxMode::Landlock,
            read_paths: Vec::new(),
            limits: ToolLimits::default(),
            max_queued: 16,
            cpu_window: Duration::from_secs(600),
            cpu_per_account: Duration::from_secs(40),
            cpu_per_address: Duration::from_secs(60),
        }
    }
}

/// Whether compiling requires the Landlock filesystem sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxMode {
    /// The toolchain sees only what it needs; without kernel support, compiling is refused.
    Landlock,
    /// The admin chose to compile without Landlock (rlimits and a cleared environment still apply).
    Off,
}

/// Resource limits (rlimits) of every process a toolchain runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToolLimits {
    /// CPU time of each process (`RLIMIT_CPU`).
    pub cpu_secs: u64,
    /// Address space of each process (`RLIMIT_AS`), in MiB.
    pub memory_mb: u64,
    /// Largest file a process may write (`RLIMIT_FSIZE`), in MiB.
    pub file_size_mb: u64,
    /// Processes and threads of the service's user (`RLIMIT_NPROC`).
    pub max_processes: u64,
    /// Open file descriptors of each process (`RLIMIT_NOFILE`).
    pub max_open_files: u64,
}

impl Default for ToolLimits {
    fn default() -> ToolLimits {
        // 5 s: twice the whole process tree of a 14 KB sketch built with
        // arduino-builder (2.3 s of CPU, measured; see README "Compiling").
        ToolLimits { cpu_secs: 5, memory_mb: 1024, file_size_mb: 64, max_processes: 256, max_open_files: 256 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsbMatch {
    pub vid: u16,
    pub pid: u16,
    pub serial_number: Option<String>,
}

/// One thing wrong with a config, located by key path or by line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path (`lab.slot_minutes`, `devices[1].id`) or the environment variable.
    pub key: String,
    /// 1-based line and column in the file, when known.
    pub location: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, col)) = self.location {
            write!(f, "line {line}, column {col}: ")?
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a config could not be loaded: everything found wrong with it.
#[derive(Clone, Debug)]
pub struct ConfigError {
    /// The file, or `None` for built-in defaults plus environment.
    pub file: Option<PathBuf>,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.file {
            Some(path) => path.display().to_string(),
            None => "built-in defaults and environment".to_owned(),
        };
        write!(f, "invalid configuration in {source}")?;
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The process environment, captured once so loading is deterministic and testable.
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    pub fn from_process() -> Env {
        Env { vars: std::env::vars().collect() }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Env {
        Env { vars: pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect() }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }
}

impl Config {
    /// Loads `file` (or the built-in defaults when `None`) with `env` on top.
    pub fn load(file: Option<&Path>, env: &Env) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError { file: file.map(Path::to_path_buf), problems };
        let text = match file {
            Some(path) => std::fs::read_to_string(path).map_err(|e| {
                fail(vec![Problem { key: String::new(), location: None, message: format!("cannot read file: {e}") }])
            })?,
            None => String::new(),
        };
        Config::from_toml(&text, env).map_err(fail)
    }

    /// Parses and validates TOML text with `env` on top.
    pub fn from_toml(text: &str, env: &Env) -> Result<Config, Vec<Problem>> {
        let raw: raw::File = toml::from_str(text).map_err(|e| vec![parse_problem(text, &e)])?;
        validate::validate(raw, env)
    }
}

fn parse_problem(text: &str, error: &toml::de::Error) -> Problem {
    let location = error.span().map(|span| line_column(text, span.start));
    Problem { key: String::new(), location, message: error.message().trim().to_owned() }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
