//! Configuration: the TOML file (or built-in defaults), the seed's environment
//! variables on top, compiled into typed, validated settings.
//!
//! Loading is two steps, as in a compiler: serde reads the raw file shape
//! (`raw` structs, every field optional), then `compile` checks every value and
//! builds the typed [`Config`], collecting one [`Problem`] per bad key instead
//! of stopping at the first.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;

use crate::booking::{Calendar, Maintenance, MaintenanceWindow, Policy};
use rerod_devices::{Firmware, ResetMethod};

/// The compiled configuration the daemon runs on.
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
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `*` allows any origin.
    pub cors_origins: Vec<String>,
    pub max_connections: usize,
    pub max_json_bytes: usize,
    pub max_firmware_bytes: usize,
    pub header_read_timeout: Duration,
    pub max_websocket_connections: usize,
    pub max_websocket_message_bytes: usize,
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub path: PathBuf,
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub jwt_secret: Option<JwtSecret>,
    pub jwt_algorithm: jsonwebtoken::Algorithm,
    pub token_lifetime: Duration,
    pub bcrypt_cost: u32,
    pub min_password_len: usize,
    /// Wrong passwords for one address within `failed_login_window` before logins are throttled.
    pub max_failed_logins: u32,
    pub failed_login_window: Duration,
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
    /// Flash available to programs, in bytes (default: the model's).
    pub flash_limit: Option<u64>,
    /// Flashed when a session that uploaded something ends, so the next user starts clean.
    pub idle_firmware: Option<IdleFirmware>,
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

    /// Parses and compiles TOML text with `env` on top.
    pub fn from_toml(text: &str, env: &Env) -> Result<Config, Vec<Problem>> {
        let raw: raw::File = toml::from_str(text).map_err(|e| vec![parse_problem(text, &e)])?;
        compile(raw, env)
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

/// The file's shape as serde reads it: everything optional, unknown keys refused.
mod raw {
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
        pub header_read_timeout_secs: Option<i64>,
        pub max_websocket_connections: Option<i64>,
        pub max_websocket_message_bytes: Option<i64>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Store {
        pub path: Option<String>,
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
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Usb {
        pub vid: Option<String>,
        pub pid: Option<String>,
        pub serial_number: Option<String>,
    }
}

/// Collects problems while compiling; each check reports under its key path.
struct Compiler {
    problems: Vec<Problem>,
}

impl Compiler {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { key: key.into(), location: None, message: message.into() });
    }

    /// An integer in `range`, or `default` when absent.
    fn int<T: TryFrom<i64> + Copy>(
        &mut self,
        key: &str,
        value: Option<i64>,
        range: std::ops::RangeInclusive<i64>,
        default: T,
    ) -> T {
        let Some(v) = value else { return default };
        match T::try_from(v) {
            Ok(t) if range.contains(&v) => t,
            _ => {
                self.problem(key, format!("must be between {} and {}, got {v}", range.start(), range.end()));
                default
            }
        }
    }

    /// An integer from the environment, which wins over the file.
    fn env_int(&mut self, env: &Env, name: &str, file_value: Option<i64>) -> Option<i64> {
        match env.get(name) {
            None => file_value,
            Some(text) => match text.trim().parse::<i64>() {
                Ok(v) => Some(v),
                Err(_) => {
                    self.problem(format!("environment {name}"), format!("must be an integer, got {text:?}"));
                    file_value
                }
            },
        }
    }
}

fn compile(raw: raw::File, env: &Env) -> Result<Config, Vec<Problem>> {
    let mut c = Compiler { problems: Vec::new() };
    let server = compile_server(&mut c, raw.server, env);
    let store = StoreConfig {
        path: PathBuf::from(
            env.get("DATABASE_PATH")
                .map(str::to_owned)
                .or(raw.store.path)
                .unwrap_or_else(|| "data/rerod.redb".to_owned()),
        ),
    };
    let auth = compile_auth(&mut c, raw.auth, env);
    let lab = compile_lab(&mut c, raw.lab);
    let log = compile_log(&mut c, raw.log, env);
    let devices = compile_devices(&mut c, raw.devices);
    let compilers = compile_compilers(&mut c, raw.compilers);
    if c.problems.is_empty() {
        Ok(Config { server, store, auth, lab, log, devices, compilers })
    } else {
        Err(c.problems)
    }
}

fn compile_server(c: &mut Compiler, raw: raw::Server, env: &Env) -> ServerConfig {
    let default_listen = SocketAddr::from(([0, 0, 0, 0], 8000));
    let mut listen = match raw.listen.as_deref() {
        None => default_listen,
        Some(text) => text.parse().unwrap_or_else(|_| {
            c.problem("server.listen", format!("must be an address and port such as \"0.0.0.0:8000\", got {text:?}"));
            default_listen
        }),
    };
    if let Some(host) = env.get("HOST") {
        match host.parse::<IpAddr>() {
            Ok(ip) => listen.set_ip(ip),
            Err(_) => c.problem("environment HOST", format!("must be an IP address, got {host:?}")),
        }
    }
    if let Some(port) = c.env_int(env, "PORT", None) {
        match u16::try_from(port) {
            Ok(port) => listen.set_port(port),
            Err(_) => c.problem("environment PORT", format!("must be a port number, got {port}")),
        }
    }
    ServerConfig {
        listen,
        cors_origins: raw.cors_origins.unwrap_or_else(|| vec!["*".to_owned()]),
        max_connections: c.int("server.max_connections", raw.max_connections, 1..=1_000_000, 10_000),
        max_json_bytes: c.int("server.max_json_bytes", raw.max_json_bytes, 1024..=16 << 20, 64 << 10),
        max_firmware_bytes: c.int("server.max_firmware_bytes", raw.max_firmware_bytes, 1024..=256 << 20, 4 << 20),
        header_read_timeout: Duration::from_secs(c.int(
            "server.header_read_timeout_secs",
            raw.header_read_timeout_secs,
            1..=3600,
            10,
        )),
        max_websocket_connections: c.int(
            "server.max_websocket_connections",
            raw.max_websocket_connections,
            0..=1_000_000,
            20_000,
        ),
        max_websocket_message_bytes: c.int(
            "server.max_websocket_message_bytes",
            raw.max_websocket_message_bytes,
            1024..=16 << 20,
            64 << 10,
        ),
    }
}

fn compile_auth(c: &mut Compiler, raw: raw::Auth, env: &Env) -> AuthConfig {
    let jwt_secret = match (env.get("JWT_SECRET_KEY"), raw.jwt_secret_file) {
        (Some(secret), _) => Some(JwtSecret::Env(secret.to_owned())),
        (None, Some(path)) => Some(JwtSecret::File(PathBuf::from(path))),
        (None, None) => None,
    };
    let algorithm_name = env.get("JWT_ALGORITHM").map(str::to_owned).or(raw.jwt_algorithm);
    let jwt_algorithm = match algorithm_name.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("HS256") => jsonwebtoken::Algorithm::HS256,
        Some("HS384") => jsonwebtoken::Algorithm::HS384,
        Some("HS512") => jsonwebtoken::Algorithm::HS512,
        Some(other) => {
            let key =
                if env.get("JWT_ALGORITHM").is_some() { "environment JWT_ALGORITHM" } else { "auth.jwt_algorithm" };
            c.problem(key, format!("must be HS256, HS384 or HS512 (a shared-secret algorithm), got {other:?}"));
            jsonwebtoken::Algorithm::HS256
        }
    };
    let minutes = c.env_int(env, "JWT_EXPIRE_MINUTES", raw.token_minutes);
    let token_minutes: u64 = c.int("auth.token_minutes", minutes, 1..=525_600, 60);
    let cost = c.env_int(env, "BCRYPT_ROUNDS", raw.bcrypt_cost);
    let bcrypt_cost = c.int("auth.bcrypt_cost", cost, 4..=31, 12);
    let min_password_len = c.int("auth.min_password_length", raw.min_password_length, 1..=72, 6);
    let max_failed_logins = c.int("auth.max_failed_logins", raw.max_failed_logins, 1..=1_000_000, 10);
    let failed_login_window =
        Duration::from_secs(c.int("auth.failed_login_window_secs", raw.failed_login_window_secs, 1..=86_400, 300));
    let domains: Vec<String> = raw
        .allowed_domains
        .unwrap_or_default()
        .iter()
        .map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
        .collect();
    let registration = match raw.registration.as_deref() {
        None | Some("open") if domains.is_empty() => Registration::Open,
        None | Some("domains") => Registration::Domains(domains),
        Some("open") => {
            c.problem("auth.allowed_domains", "only applies with registration = \"domains\"");
            Registration::Open
        }
        Some("closed") => Registration::Closed,
        Some(other) => {
            c.problem("auth.registration", format!("must be \"open\", \"closed\" or \"domains\", got {other:?}"));
            Registration::Open
        }
    };
    if registration == Registration::Domains(Vec::new()) {
        c.problem("auth.allowed_domains", "must list at least one domain when registration = \"domains\"");
    }
    let mut admins = BTreeSet::new();
    for (i, admin) in raw.admins.unwrap_or_default().iter().enumerate() {
        match crate::auth::normalize_email(admin) {
            Ok(email) => {
                admins.insert(email);
            }
            Err(e) => c.problem(format!("auth.admins[{i}]"), e.to_string()),
        }
    }
    AuthConfig {
        jwt_secret,
        jwt_algorithm,
        token_lifetime: Duration::from_secs(token_minutes * 60),
        bcrypt_cost,
        min_password_len,
        max_failed_logins,
        failed_login_window,
        registration,
        admins,
    }
}

fn compile_lab(c: &mut Compiler, raw: raw::Lab) -> LabConfig {
    let tz = match raw.timezone.as_deref() {
        None => TimeZone::system(),
        Some(name) => TimeZone::get(name).unwrap_or_else(|_| {
            c.problem(
                "lab.timezone",
                format!("unknown time zone {name:?}; use an IANA name such as \"Europe/Berlin\""),
            );
            TimeZone::UTC
        }),
    };
    let slot_minutes: u16 = c.int("lab.slot_minutes", raw.slot_minutes, 1..=1440, 60);
    let slot_minutes = if 1440 % slot_minutes == 0 {
        slot_minutes
    } else {
        c.problem("lab.slot_minutes", format!("must divide a day (1440 minutes) evenly, got {slot_minutes}"));
        60
    };
    let mut maintenance = Vec::new();
    for (i, m) in raw.maintenance.into_iter().enumerate() {
        if let Some(m) = compile_maintenance(c, &format!("lab.maintenance[{i}]"), m, &tz) {
            maintenance.push(m);
        }
    }
    let policy = Policy {
        days_ahead: c.int("lab.days_ahead", raw.days_ahead, 0..=366, 7),
        max_active_bookings: raw.max_active_bookings.map(|v| c.int("lab.max_active_bookings", Some(v), 1..=10_000, 1)),
        max_bookings_per_day: raw.max_bookings_per_day.map(|v| c.int("lab.max_bookings_per_day", Some(v), 1..=1440, 1)),
        maintenance,
    };
    let privacy = match raw.privacy.as_deref() {
        None | Some("show-emails") => Privacy::ShowEmails,
        Some("hide-others") => Privacy::HideOthers,
        Some(other) => {
            c.problem("lab.privacy", format!("must be \"show-emails\" or \"hide-others\", got {other:?}"));
            Privacy::ShowEmails
        }
    };
    LabConfig { calendar: Calendar::new(tz, slot_minutes), policy, privacy }
}

fn compile_maintenance(c: &mut Compiler, key: &str, raw: raw::Maintenance, tz: &TimeZone) -> Option<Maintenance> {
    let reason = raw.reason.unwrap_or_else(|| "maintenance".to_owned());
    let civil_time = |c: &mut Compiler, field: &str, text: &str| -> Option<Time> {
        let parsed = text.parse::<Time>().ok();
        if parsed.is_none() {
            c.problem(format!("{key}.{field}"), format!("must be a time such as \"08:00\", got {text:?}"));
        }
        parsed
    };
    let when = match (raw.start, raw.end, raw.weekdays, raw.from, raw.to) {
        (Some(start), Some(end), None, None, None) => {
            let mut instant = |field: &str, text: &str| match text.parse::<jiff::civil::DateTime>() {
                Ok(dt) => tz.to_ambiguous_timestamp(dt).compatible().ok(),
                Err(_) => {
                    c.problem(
                        format!("{key}.{field}"),
                        format!("must be a lab-local date and time such as \"2026-12-24T08:00\", got {text:?}"),
                    );
                    None
                }
            };
            let (start, end) = (instant("start", &start)?, instant("end", &end)?);
            if start >= end {
                c.problem(format!("{key}.end"), "must be after start");
                return None;
            }
            MaintenanceWindow::Once { start, end }
        }
        (None, None, Some(days), Some(from), Some(to)) => {
            let mut weekdays = Vec::new();
            for (i, day) in days.iter().enumerate() {
                match parse_weekday(day) {
                    Some(d) => weekdays.push(d),
                    None => c.problem(
                        format!("{key}.weekdays[{i}]"),
                        format!("must be a weekday such as \"mon\" or \"monday\", got {day:?}"),
                    ),
                }
            }
            let (from, to) = (civil_time(c, "from", &from)?, civil_time(c, "to", &to)?);
            if to != Time::midnight() && to <= from {
                c.problem(format!("{key}.to"), "must be after from (\"00:00\" means the end of the day)");
                return None;
            }
            MaintenanceWindow::Weekly { weekdays, from, to }
        }
        _ => {
            c.problem(key, "give either start and end (a one-off window) or weekdays, from and to (a weekly one)");
            return None;
        }
    };
    Some(Maintenance { device: raw.device, when, reason })
}

/// Accepts a weekday's English name or any prefix of it of three letters or more.
fn parse_weekday(text: &str) -> Option<Weekday> {
    let lower = text.trim().to_ascii_lowercase();
    let days = [
        ("monday", Weekday::Monday),
        ("tuesday", Weekday::Tuesday),
        ("wednesday", Weekday::Wednesday),
        ("thursday", Weekday::Thursday),
        ("friday", Weekday::Friday),
        ("saturday", Weekday::Saturday),
        ("sunday", Weekday::Sunday),
    ];
    days.iter().find(|(name, _)| lower.len() >= 3 && name.starts_with(&lower)).map(|(_, day)| *day)
}

fn compile_log(c: &mut Compiler, raw: raw::Log, env: &Env) -> LogConfig {
    let level =
        env.get("LOG_LEVEL").map(str::to_owned).or(raw.level).unwrap_or_else(|| "info".to_owned()).to_ascii_lowercase();
    if tracing_subscriber::EnvFilter::builder().parse(&level).is_err() {
        c.problem("log.level", format!("must be a level (error, warn, info, debug, trace) or a filter, got {level:?}"));
    }
    let format = match raw.format.as_deref() {
        None | Some("auto") => LogFormat::Auto,
        Some("human") => LogFormat::Human,
        Some("json") => LogFormat::Json,
        Some(other) => {
            c.problem("log.format", format!("must be \"auto\", \"human\" or \"json\", got {other:?}"));
            LogFormat::Auto
        }
    };
    LogConfig { level, format }
}

fn compile_devices(c: &mut Compiler, raw: Vec<raw::Device>) -> Vec<DeviceConfig> {
    let mut devices: Vec<DeviceConfig> = Vec::new();
    for (i, d) in raw.into_iter().enumerate() {
        let key = format!("devices[{i}]");
        let id = match d.id.map(|s| s.trim().to_owned()) {
            None => {
                c.problem(format!("{key}.id"), "is required (a stable name such as \"arm-1\")");
                continue;
            }
            Some(id) if !valid_device_id(&id) => {
                c.problem(
                    format!("{key}.id"),
                    format!(
                        "must be letters, digits, '-' or '_', not only digits (those are device numbers), got {id:?}"
                    ),
                );
                continue;
            }
            Some(id) => id,
        };
        if devices.iter().any(|other| other.id == id) {
            c.problem(format!("{key}.id"), format!("{id:?} is already used by another device"));
            continue;
        }
        let Some(plugin) = d.plugin else {
            c.problem(format!("{key}.plugin"), "is required (the upload method, e.g. \"stk500v1\")");
            continue;
        };
        match (&d.port, &d.usb) {
            (Some(_), Some(_)) => c.problem(&key, "give either port or usb, not both"),
            (None, None) => c.problem(
                &key,
                "give port (a path such as \"/dev/serial/by-id/...\") or usb (vid, pid and optionally serial_number)",
            ),
            _ => {}
        }
        let usb = d.usb.and_then(|usb| compile_usb(c, &format!("{key}.usb"), usb));
        let model_name = d.model.unwrap_or_else(|| "uno".to_owned());
        let model = rerod_devices::model::lookup(&model_name);
        match crate::plugins::lookup(&plugin) {
            None => c.problem(
                format!("{key}.plugin"),
                format!("unknown upload method {plugin:?} (known: {})", crate::plugins::NAMES.join(", ")),
            ),
            Some(uploader) => {
                if let Err(errors) = uploader.check_options(d.options.as_ref().unwrap_or(&toml::Table::new())) {
                    for e in errors {
                        c.problem(format!("{key}.options.{}", e.key), e.message);
                    }
                }
            }
        }
        let reset = compile_reset(c, &format!("{key}.reset"), d.reset);
        let flash_limit = match d.flash_limit {
            Some(v) => Some(c.int(&format!("{key}.flash_limit"), Some(v), 256..=1 << 30, 32_256)),
            None => model.map(|m| m.flash_limit),
        };
        let idle_firmware = d.idle_firmware.and_then(|path| {
            let path = PathBuf::from(path);
            let checked =
                std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display())).and_then(|bytes| {
                    let firmware = Firmware::detect(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
                    if let Some(limit) = flash_limit {
                        firmware.check_fits(limit).map_err(|e| format!("{}: {e}", path.display()))?;
                    }
                    Ok(firmware)
                });
            match checked {
                Ok(firmware) => Some(IdleFirmware { path, firmware: std::sync::Arc::new(firmware) }),
                Err(message) => {
                    c.problem(format!("{key}.idle_firmware"), message);
                    None
                }
            }
        });
        devices.push(DeviceConfig {
            name: d.name.unwrap_or_else(|| id.clone()),
            id,
            plugin,
            port: d.port.map(PathBuf::from),
            usb,
            baud: c.int(&format!("{key}.baud"), d.baud, 300..=4_000_000, 115_200),
            reset,
            options: d.options.unwrap_or_default(),
            upload_baud: c.int(
                &format!("{key}.upload_baud"),
                d.upload_baud,
                300..=4_000_000,
                model.map_or(115_200, |m| m.upload_baud),
            ),
            flash_limit,
            idle_firmware,
            model: model_name,
        });
    }
    devices
}

/// `reset = "dtr" | "none" | ["program", "arg", ...]`; default DTR.
fn compile_reset(c: &mut Compiler, key: &str, raw: Option<toml::Value>) -> ResetMethod {
    let wrong = "must be \"dtr\", \"none\", or a command as an array of strings such as [\"usbreset\", \"2341:0043\"]";
    match raw {
        None => ResetMethod::Dtr,
        Some(toml::Value::String(s)) if s == "dtr" => ResetMethod::Dtr,
        Some(toml::Value::String(s)) if s == "none" => ResetMethod::None,
        Some(toml::Value::Array(items)) if !items.is_empty() => {
            let argv: Option<Vec<String>> = items.iter().map(|v| v.as_str().map(str::to_owned)).collect();
            argv.map(ResetMethod::Command).unwrap_or_else(|| {
                c.problem(key, wrong);
                ResetMethod::Dtr
            })
        }
        Some(_) => {
            c.problem(key, wrong);
            ResetMethod::Dtr
        }
    }
}

/// `[compilers.<model>]`: an argv template and a timeout per board model.
fn compile_compilers(
    c: &mut Compiler,
    raw: std::collections::BTreeMap<String, raw::Compiler>,
) -> std::collections::BTreeMap<String, CompilerConfig> {
    let mut out = std::collections::BTreeMap::new();
    for (model, compiler) in raw {
        let key = format!("compilers.{model}");
        let argv = compiler.argv.unwrap_or_default();
        if argv.is_empty() || argv[0].is_empty() {
            c.problem(format!("{key}.argv"), "is required: the compiler and its arguments, using {sketch} and {build}");
            continue;
        }
        if !argv.iter().any(|a| a.contains("{sketch}") || a.contains("{sketch_dir}")) {
            c.problem(format!("{key}.argv"), "must use {sketch} or {sketch_dir}, where the user's code is written");
        }
        let timeout = Duration::from_secs(c.int(&format!("{key}.timeout_secs"), compiler.timeout_secs, 1..=3600, 120));
        out.insert(model.to_ascii_lowercase(), CompilerConfig { argv, timeout });
    }
    out
}

fn compile_usb(c: &mut Compiler, key: &str, raw: raw::Usb) -> Option<UsbMatch> {
    let mut hex = |field: &str, value: Option<String>| -> Option<u16> {
        let Some(text) = value else {
            c.problem(format!("{key}.{field}"), "is required, as four hex digits such as \"2341\"");
            return None;
        };
        let parsed = u16::from_str_radix(text.trim_start_matches("0x"), 16).ok();
        if parsed.is_none() {
            c.problem(format!("{key}.{field}"), format!("must be four hex digits such as \"2341\", got {text:?}"));
        }
        parsed
    };
    let vid = hex("vid", raw.vid);
    let pid = hex("pid", raw.pid);
    Some(UsbMatch { vid: vid?, pid: pid?, serial_number: raw.serial_number })
}

fn valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        && !id.chars().all(|ch| ch.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, Vec<Problem>> {
        Config::from_toml(text, &Env::default())
    }

    fn keys(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn defaults_need_no_file() {
        let config = load("").unwrap();
        assert_eq!(config.server.listen, "0.0.0.0:8000".parse().unwrap());
        assert_eq!(config.store.path, PathBuf::from("data/rerod.redb"));
        assert_eq!(config.auth.bcrypt_cost, 12);
        assert_eq!(config.auth.token_lifetime, Duration::from_secs(3600));
        assert_eq!(config.auth.min_password_len, 6);
        assert_eq!(config.auth.registration, Registration::Open);
        assert_eq!(config.lab.calendar.slot_minutes(), 60);
        assert_eq!(config.lab.policy, Policy::default());
        assert_eq!(config.server.max_json_bytes, 65536);
        assert!(config.devices.is_empty());
        assert!(config.auth.jwt_secret.is_none());
    }

    #[test]
    fn the_seed_environment_variables_override_the_file() {
        let env = Env::from_pairs([
            ("HOST", "127.0.0.1"),
            ("PORT", "9001"),
            ("LOG_LEVEL", "DEBUG"),
            ("DATABASE_PATH", "/tmp/x.redb"),
            ("JWT_SECRET_KEY", "s3cret"),
            ("JWT_ALGORITHM", "hs512"),
            ("JWT_EXPIRE_MINUTES", "5"),
            ("BCRYPT_ROUNDS", "4"),
        ]);
        let config = Config::from_toml("[auth]\nbcrypt_cost = 10\n[store]\npath = \"a.redb\"\n", &env).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(config.log.level, "debug");
        assert_eq!(config.store.path, PathBuf::from("/tmp/x.redb"));
        assert!(matches!(config.auth.jwt_secret, Some(JwtSecret::Env(ref s)) if s == "s3cret"));
        assert_eq!(config.auth.jwt_algorithm, jsonwebtoken::Algorithm::HS512);
        assert_eq!(config.auth.token_lifetime, Duration::from_secs(300));
        assert_eq!(config.auth.bcrypt_cost, 4);
    }

    #[test]
    fn every_bad_key_is_reported_with_its_path() {
        let problems = load(
            r#"
            [server]
            listen = "nowhere"
            [auth]
            bcrypt_cost = 2
            jwt_algorithm = "none"
            admins = ["not-an-email"]
            [lab]
            timezone = "Mars/Olympus"
            slot_minutes = 7
            [[devices]]
            id = "1"
            plugin = "stk500v1"
            [[devices]]
            id = "arm-1"
            "#,
        )
        .unwrap_err();
        assert_eq!(
            keys(&problems),
            [
                "server.listen",
                "auth.jwt_algorithm",
                "auth.bcrypt_cost",
                "auth.admins[0]",
                "lab.timezone",
                "lab.slot_minutes",
                "devices[0].id",
                "devices[1].plugin",
            ]
        );
    }

    #[test]
    fn syntax_errors_and_unknown_keys_carry_line_and_column() {
        let problems = load("[lab]\nslot_minutes = 60\nslot_minuets = 30\n").unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].location, Some((3, 1)));
        assert!(problems[0].message.contains("slot_minuets"), "{}", problems[0].message);

        let problems = load("[lab\n").unwrap_err();
        assert_eq!(problems[0].location.map(|(line, _)| line), Some(1));

        let problems = load("[lab]\nslot_minutes = \"sixty\"\n").unwrap_err();
        assert_eq!(problems[0].location.map(|(line, _)| line), Some(2));
    }

    #[test]
    fn duplicate_device_ids_are_refused() {
        let problems = load(
            "[[devices]]\nid = \"a\"\nplugin = \"stk500v1\"\nport = \"/dev/ttyACM0\"\n\
             [[devices]]\nid = \"a\"\nplugin = \"stk500v1\"\nport = \"/dev/ttyACM1\"\n",
        )
        .unwrap_err();
        assert_eq!(keys(&problems), ["devices[1].id"]);
    }

    #[test]
    fn a_minimal_uno_entry_is_enough_and_takes_the_models_defaults() {
        let config = load("[[devices]]\nid = \"arm-1\"\nplugin = \"stk500v1\"\nport = \"/dev/ttyACM0\"\n").unwrap();
        let d = &config.devices[0];
        assert_eq!((d.name.as_str(), d.model.as_str(), d.baud, d.upload_baud), ("arm-1", "uno", 115_200, 115_200));
        assert_eq!(d.flash_limit, Some(32_256));
        assert_eq!(d.reset, ResetMethod::Dtr);
        assert!(d.options.is_empty() && d.idle_firmware.is_none());
    }

    #[test]
    fn device_reset_options_and_compilers() {
        let dir = tempfile::tempdir().unwrap();
        let idle = dir.path().join("idle.hex");
        std::fs::write(&idle, ":0400000001020304F2\n:00000001FF\n").unwrap();
        let text = format!(
            r#"
            [[devices]]
            id = "a"
            model = "nano-old"
            plugin = "command"
            port = "/dev/ttyUSB0"
            reset = ["kill", "-USR1", "42"]
            flash_limit = 31744
            idle_firmware = "{}"
            options = {{ argv = ["avrdude", "-P", "{{port}}", "-U", "flash:w:{{firmware}}:i"] }}
            [[devices]]
            id = "b"
            plugin = "stk500v1"
            usb = {{ vid = "2341", pid = "0043" }}
            reset = "none"
            [compilers.uno]
            argv = ["cc", "{{sketch}}", "-o", "{{build}}"]
            "#,
            idle.display()
        );
        let config = load(&text).unwrap();
        let (a, b) = (&config.devices[0], &config.devices[1]);
        assert_eq!(a.reset, ResetMethod::Command(vec!["kill".into(), "-USR1".into(), "42".into()]));
        assert_eq!((a.upload_baud, a.flash_limit), (57_600, Some(31_744)));
        assert_eq!(a.idle_firmware.as_ref().map(|f| f.firmware.len()), Some(4));
        assert_eq!(b.reset, ResetMethod::None);
        assert_eq!(config.compilers["uno"].argv[1], "{sketch}");

        let problems = load(
            r#"
            [[devices]]
            id = "a"
            plugin = "stk500v3"
            port = "/dev/x"
            [[devices]]
            id = "b"
            plugin = "stk500v1"
            reset = "pulse"
            idle_firmware = "/nonexistent/idle.hex"
            options = { verfy = true, page_size = 100 }
            [[devices]]
            id = "c"
            plugin = "command"
            port = "/dev/y"
            [compilers.uno]
            argv = ["cc"]
            "#,
        )
        .unwrap_err();
        assert_eq!(
            keys(&problems),
            [
                "devices[0].plugin",
                "devices[1]",
                "devices[1].options.verfy",
                "devices[1].options.page_size",
                "devices[1].reset",
                "devices[1].idle_firmware",
                "devices[2].options.argv",
                "compilers.uno.argv",
            ]
        );
    }

    #[test]
    fn registration_policies() {
        let config = load("[auth]\nregistration = \"closed\"\n").unwrap();
        assert_eq!(config.auth.registration, Registration::Closed);
        let config = load("[auth]\nallowed_domains = [\"@Uni.Example\"]\n").unwrap();
        assert_eq!(config.auth.registration, Registration::Domains(vec!["uni.example".into()]));
        let problems = load("[auth]\nregistration = \"domains\"\n").unwrap_err();
        assert_eq!(keys(&problems), ["auth.allowed_domains"]);
    }

    #[test]
    fn maintenance_windows_compile_in_the_lab_zone() {
        let config = load(
            r#"
            [lab]
            timezone = "Europe/Berlin"
            [[lab.maintenance]]
            device = "arm-1"
            start = "2026-12-24T08:00"
            end = "2026-12-27T00:00"
            reason = "holidays"
            [[lab.maintenance]]
            weekdays = ["mon", "Friday"]
            from = "07:00"
            to = "09:00"
            "#,
        )
        .unwrap();
        let m = &config.lab.policy.maintenance;
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0].when,
            MaintenanceWindow::Once {
                start: "2026-12-24T07:00:00Z".parse().unwrap(),
                end: "2026-12-26T23:00:00Z".parse().unwrap()
            }
        );
        assert_eq!(m[1].reason, "maintenance");
        assert!(
            matches!(&m[1].when, MaintenanceWindow::Weekly { weekdays, .. } if weekdays == &[Weekday::Monday, Weekday::Friday])
        );

        let problems =
            load("[[lab.maintenance]]\nweekdays = [\"someday\"]\nfrom = \"9\"\nto = \"10:00\"\n").unwrap_err();
        assert_eq!(keys(&problems), ["lab.maintenance[0].weekdays[0]", "lab.maintenance[0].from"]);
    }

    #[test]
    fn the_example_config_in_the_repository_compiles() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rerod.toml");
        let config = Config::load(Some(&path), &Env::default()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!config.devices.is_empty());
    }
}
