//! Raw file values plus environment variables → the typed [`Config`], with
//! one [`Problem`] per bad key, located by its key path.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;

use super::raw;
use super::{
    AuthConfig, CameraConfig, CameraSource, ClusterConfig, CompileConfig, CompilerConfig, Config, DeviceConfig, Env,
    HealthCheckConfig, IdleFirmware, JwtSecret, LabConfig, LogConfig, LogFormat, PowerMethod, Privacy, Problem,
    RecordsConfig, Registration, SandboxMode, ServerConfig, StoreConfig, ToolLimits, UsbMatch, Visibility, WebhookUrl,
};
use crate::auth::TokenAlgorithm;
use crate::booking::{Calendar, Maintenance, MaintenanceWindow, Policy};
use rerod_devices::{Firmware, ResetMethod};

/// Collects problems while validating; each check reports under its key path.
struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
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

pub(super) fn validate(raw: raw::File, env: &Env) -> Result<Config, Vec<Problem>> {
    let mut v = Validator { problems: Vec::new() };
    let server = validate_server(&mut v, raw.server, env);
    let store = StoreConfig {
        path: PathBuf::from(
            env.get("DATABASE_PATH")
                .map(str::to_owned)
                .or(raw.store.path)
                .unwrap_or_else(|| "data/rerod.redb".to_owned()),
        ),
        url: validate_store_url(&mut v, env.get("DATABASE_URL").map(str::to_owned).or(raw.store.url)),
    };
    let auth = validate_auth(&mut v, raw.auth, env);
    let lab = validate_lab(&mut v, raw.lab);
    let log = validate_log(&mut v, raw.log, env);
    let devices = validate_devices(&mut v, raw.devices);
    let compilers = validate_compilers(&mut v, raw.compilers);
    let compile = validate_compile(&mut v, raw.compile);
    let records = validate_records(&mut v, raw.records, &store);
    check_legacy_camera(&mut v, &lab, &devices);
    let cluster = raw.cluster.and_then(|cluster| validate_cluster(&mut v, cluster, &store));
    if v.problems.is_empty() {
        Ok(Config { server, store, auth, lab, log, devices, compilers, compile, records, demo: false, cluster })
    } else {
        Err(v.problems)
    }
}

fn validate_server(v: &mut Validator, raw: raw::Server, env: &Env) -> ServerConfig {
    let default_listen = SocketAddr::from(([0, 0, 0, 0], 8000));
    let mut listen = match raw.listen.as_deref() {
        None => default_listen,
        Some(text) => text.parse().unwrap_or_else(|_| {
            v.problem("server.listen", format!("must be an address and port such as \"0.0.0.0:8000\", got {text:?}"));
            default_listen
        }),
    };
    if let Some(host) = env.get("HOST") {
        match host.parse::<IpAddr>() {
            Ok(ip) => listen.set_ip(ip),
            Err(_) => v.problem("environment HOST", format!("must be an IP address, got {host:?}")),
        }
    }
    if let Some(port) = v.env_int(env, "PORT", None) {
        match u16::try_from(port) {
            Ok(port) => listen.set_port(port),
            Err(_) => v.problem("environment PORT", format!("must be a port number, got {port}")),
        }
    }
    ServerConfig {
        listen,
        cors_origins: raw.cors_origins.unwrap_or_else(|| vec!["*".to_owned()]),
        max_connections: v.int("server.max_connections", raw.max_connections, 1..=1_000_000, 10_000),
        max_json_bytes: v.int("server.max_json_bytes", raw.max_json_bytes, 1024..=16 << 20, 64 << 10),
        max_firmware_bytes: v.int("server.max_firmware_bytes", raw.max_firmware_bytes, 1024..=256 << 20, 4 << 20),
        max_upload_bytes_in_flight: v.int(
            "server.max_upload_bytes_in_flight",
            raw.max_upload_bytes_in_flight,
            1024..=4 << 30,
            16 << 20,
        ),
        header_read_timeout: Duration::from_secs(v.int(
            "server.header_read_timeout_secs",
            raw.header_read_timeout_secs,
            1..=3600,
            10,
        )),
        max_websocket_connections: v.int(
            "server.max_websocket_connections",
            raw.max_websocket_connections,
            0..=1_000_000,
            20_000,
        ),
        max_websocket_message_bytes: v.int(
            "server.max_websocket_message_bytes",
            raw.max_websocket_message_bytes,
            1024..=16 << 20,
            64 << 10,
        ),
        // hyper's smallest read buffer is 8 KiB.
        max_header_bytes: v.int("server.max_header_bytes", raw.max_header_bytes, 8192..=1 << 20, 16 << 10),
        max_connections_per_address: v.int(
            "server.max_connections_per_address",
            raw.max_connections_per_address,
            1..=1_000_000,
            256,
        ),
        max_websockets_per_address: v.int(
            "server.max_websockets_per_address",
            raw.max_websockets_per_address,
            1..=1_000_000,
            128,
        ),
        max_websockets_per_account: v.int(
            "server.max_websockets_per_account",
            raw.max_websockets_per_account,
            1..=10_000,
            16,
        ),
        trusted_proxies: raw
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .filter_map(|text| match text.parse() {
                Ok(cidr) => Some(cidr),
                Err(message) => {
                    v.problem("server.trusted_proxies", message);
                    None
                }
            })
            .collect(),
    }
}

fn validate_auth(v: &mut Validator, raw: raw::Auth, env: &Env) -> AuthConfig {
    let jwt_secret = match (env.get("JWT_SECRET_KEY"), raw.jwt_secret_file) {
        (Some(secret), _) => Some(JwtSecret::Env(secret.to_owned())),
        (None, Some(path)) => Some(JwtSecret::File(PathBuf::from(path))),
        (None, None) => None,
    };
    let algorithm_name = env.get("JWT_ALGORITHM").map(str::to_owned).or(raw.jwt_algorithm);
    let jwt_algorithm = match algorithm_name.as_deref().map(|name| (name, TokenAlgorithm::parse(name))) {
        None => TokenAlgorithm::Hs256,
        Some((_, Some(algorithm))) => algorithm,
        Some((other, None)) => {
            let key =
                if env.get("JWT_ALGORITHM").is_some() { "environment JWT_ALGORITHM" } else { "auth.jwt_algorithm" };
            v.problem(key, format!("must be HS256, HS384 or HS512 (a shared-secret algorithm), got {other:?}"));
            TokenAlgorithm::Hs256
        }
    };
    let minutes = v.env_int(env, "JWT_EXPIRE_MINUTES", raw.token_minutes);
    let token_minutes: u64 = v.int("auth.token_minutes", minutes, 1..=525_600, 60);
    let cost = v.env_int(env, "BCRYPT_ROUNDS", raw.bcrypt_cost);
    let bcrypt_cost = v.int("auth.bcrypt_cost", cost, 4..=31, 12);
    let min_password_len = v.int("auth.min_password_length", raw.min_password_length, 1..=72, 6);
    let max_failed_logins = v.int("auth.max_failed_logins", raw.max_failed_logins, 1..=1_000_000, 10);
    let failed_login_window =
        Duration::from_secs(v.int("auth.failed_login_window_secs", raw.failed_login_window_secs, 1..=86_400, 300));
    let max_logins_per_address = v.int("auth.max_logins_per_address", raw.max_logins_per_address, 1..=1_000_000, 300);
    let address_window =
        Duration::from_secs(v.int("auth.address_window_secs", raw.address_window_secs, 1..=86_400, 60));
    let max_queued_password_checks =
        v.int("auth.max_queued_password_checks", raw.max_queued_password_checks, 1..=100_000, 64);
    // 1 refuses the most common passwords and keeps the old backend's example
    // password (testpass123) working; see README "Passwords".
    let min_password_score = v.int("auth.min_password_score", raw.min_password_score, 0..=4, 1);
    let max_registrations_per_address_per_hour = v.int(
        "auth.max_registrations_per_address_per_hour",
        raw.max_registrations_per_address_per_hour,
        1..=1_000_000,
        20,
    );
    let max_registrations_per_hour =
        v.int("auth.max_registrations_per_hour", raw.max_registrations_per_hour, 1..=1_000_000, 500);
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
            v.problem("auth.allowed_domains", "only applies with registration = \"domains\"");
            Registration::Open
        }
        Some("closed") => Registration::Closed,
        Some(other) => {
            v.problem("auth.registration", format!("must be \"open\", \"closed\" or \"domains\", got {other:?}"));
            Registration::Open
        }
    };
    if registration == Registration::Domains(Vec::new()) {
        v.problem("auth.allowed_domains", "must list at least one domain when registration = \"domains\"");
    }
    let mut admins = BTreeSet::new();
    for (i, admin) in raw.admins.unwrap_or_default().iter().enumerate() {
        match crate::auth::normalize_email(admin) {
            Ok(email) => {
                admins.insert(email);
            }
            Err(e) => v.problem(format!("auth.admins[{i}]"), e.to_string()),
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
        max_logins_per_address,
        address_window,
        max_queued_password_checks,
        min_password_score,
        max_registrations_per_address_per_hour,
        max_registrations_per_hour,
        registration,
        admins,
    }
}

fn validate_lab(v: &mut Validator, raw: raw::Lab) -> LabConfig {
    let tz = match raw.timezone.as_deref() {
        None => TimeZone::system(),
        Some(name) => TimeZone::get(name).unwrap_or_else(|_| {
            v.problem(
                "lab.timezone",
                format!("unknown time zone {name:?}; use an IANA name such as \"Europe/Berlin\""),
            );
            TimeZone::UTC
        }),
    };
    let slot_minutes: u16 = v.int("lab.slot_minutes", raw.slot_minutes, 1..=1440, 60);
    let slot_minutes = if 1440 % slot_minutes == 0 {
        slot_minutes
    } else {
        v.problem("lab.slot_minutes", format!("must divide a day (1440 minutes) evenly, got {slot_minutes}"));
        60
    };
    let mut maintenance = Vec::new();
    for (i, m) in raw.maintenance.into_iter().enumerate() {
        if let Some(m) = validate_maintenance(v, &format!("lab.maintenance[{i}]"), m, &tz) {
            maintenance.push(m);
        }
    }
    let policy = Policy {
        days_ahead: v.int("lab.days_ahead", raw.days_ahead, 0..=366, 7),
        // On by default, so one student cannot book the whole lab; 0 lifts a cap.
        max_active_bookings: Some(v.int("lab.max_active_bookings", raw.max_active_bookings, 0..=10_000, 4))
            .filter(|&n| n > 0),
        max_bookings_per_day: Some(v.int("lab.max_bookings_per_day", raw.max_bookings_per_day, 0..=1440, 2))
            .filter(|&n| n > 0),
        maintenance,
    };
    let privacy = match raw.privacy.as_deref() {
        None | Some("show-emails") => Privacy::ShowEmails,
        Some("hide-others") => Privacy::HideOthers,
        Some(other) => {
            v.problem("lab.privacy", format!("must be \"show-emails\" or \"hide-others\", got {other:?}"));
            Privacy::ShowEmails
        }
    };
    let mut session_warnings = Vec::new();
    for (i, minutes) in raw.session_warnings_minutes.unwrap_or_else(|| vec![5, 1]).into_iter().enumerate() {
        let key = format!("lab.session_warnings_minutes[{i}]");
        let minutes: u16 = v.int(&key, Some(minutes), 1..=1440, 1);
        if session_warnings.contains(&minutes) {
            v.problem(key, format!("{minutes} is listed twice"));
        }
        session_warnings.push(minutes);
    }
    // Largest first: the order the warnings arrive in.
    session_warnings.sort_unstable_by(|a, b| b.cmp(a));
    let legacy_camera_device = raw.legacy_camera_device.map(|id| id.trim().to_owned());
    LabConfig { calendar: Calendar::new(tz, slot_minutes), policy, privacy, session_warnings, legacy_camera_device }
}

/// A PostgreSQL URL (`postgres://USER@HOST/DB` or `postgresql://...`),
/// checked for its form here and connected to at start.
fn validate_store_url(v: &mut Validator, url: Option<String>) -> Option<String> {
    let url = url?;
    let rest = url.strip_prefix("postgres://").or_else(|| url.strip_prefix("postgresql://"));
    match rest {
        Some(rest) if !rest.is_empty() && !url.chars().any(char::is_whitespace) => Some(url),
        _ => {
            // The URL may hold a password: the message shows none of it.
            v.problem(
                "store.url",
                "must be a PostgreSQL URL such as \"postgres://rerod@db.lab.example/rerod\" (DATABASE_URL too)",
            );
            None
        }
    }
}

fn validate_cluster(v: &mut Validator, raw: raw::Cluster, store: &StoreConfig) -> Option<ClusterConfig> {
    if store.url.is_none() {
        v.problem("cluster", "the hosts of one lab share a PostgreSQL store: set store.url (or DATABASE_URL) too");
    }
    let name = raw.name.unwrap_or_default();
    let name_ok = (1..=63).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        v.problem("cluster.name", format!("must be 1 to 63 letters, digits, '-', '_' or '.', got {name:?}"));
    }
    let advertise = raw.advertise.unwrap_or_default();
    let advertise_ok =
        advertise.strip_prefix("http://").is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace));
    if advertise.starts_with("https://") {
        v.problem(
            "cluster.advertise",
            format!(
                "must be an http:// address: the hosts of a lab reach each other over plain HTTP on the lab's own \
                 network (TLS belongs to the reverse proxy in front), got {advertise:?}"
            ),
        );
    } else if !advertise_ok {
        v.problem(
            "cluster.advertise",
            format!("must be the URL other hosts reach this one at, such as \"http://bench-2.lab.example:8000\", got {advertise:?}"),
        );
    }
    let secret_file = match raw.secret_file {
        Some(path) if !path.trim().is_empty() => PathBuf::from(path),
        _ => {
            v.problem("cluster.secret_file", "must name the file holding the lab's secret between hosts");
            PathBuf::new()
        }
    };
    let offline_after: u64 = v.int("cluster.offline_after_secs", raw.offline_after_secs, 3..=3600, 15);
    Some(ClusterConfig { name, advertise, secret_file, offline_after: Duration::from_secs(offline_after) })
}

fn validate_records(v: &mut Validator, raw: raw::Records, store: &StoreConfig) -> RecordsConfig {
    let path = match raw.path {
        Some(path) if path.trim().is_empty() => {
            v.problem("records.path", "must not be empty; leave it out for records/ beside the store");
            PathBuf::new()
        }
        Some(path) => PathBuf::from(path),
        None => store.path.parent().unwrap_or(std::path::Path::new(".")).join("records"),
    };
    let days: u64 = v.int("records.max_age_days", raw.max_age_days, 1..=3650, 30);
    let total_mb: u64 = v.int("records.max_total_mb", raw.max_total_mb, 1..=1_048_576, 512);
    // A transcript is served from memory when downloaded: 64 MiB at most.
    let transcript_kb: u64 = v.int("records.max_transcript_kb", raw.max_transcript_kb, 1..=65_536, 1024);
    RecordsConfig {
        path,
        max_age: Duration::from_secs(days * 86_400),
        max_total_bytes: total_mb << 20,
        max_transcript_bytes: transcript_kb << 10,
    }
}

fn validate_maintenance(v: &mut Validator, key: &str, raw: raw::Maintenance, tz: &TimeZone) -> Option<Maintenance> {
    let reason = raw.reason.unwrap_or_else(|| "maintenance".to_owned());
    let civil_time = |v: &mut Validator, field: &str, text: &str| -> Option<Time> {
        let parsed = text.parse::<Time>().ok();
        if parsed.is_none() {
            v.problem(format!("{key}.{field}"), format!("must be a time such as \"08:00\", got {text:?}"));
        }
        parsed
    };
    let when = match (raw.start, raw.end, raw.weekdays, raw.from, raw.to) {
        (Some(start), Some(end), None, None, None) => {
            let mut instant = |field: &str, text: &str| match text.parse::<jiff::civil::DateTime>() {
                Ok(dt) => tz.to_ambiguous_timestamp(dt).compatible().ok(),
                Err(_) => {
                    v.problem(
                        format!("{key}.{field}"),
                        format!("must be a lab-local date and time such as \"2026-12-24T08:00\", got {text:?}"),
                    );
                    None
                }
            };
            let (start, end) = (instant("start", &start)?, instant("end", &end)?);
            if start >= end {
                v.problem(format!("{key}.end"), "must be after start");
                return None;
            }
            MaintenanceWindow::Once { start, end }
        }
        (None, None, Some(days), Some(from), Some(to)) => {
            let mut weekdays = Vec::new();
            for (i, day) in days.iter().enumerate() {
                match parse_weekday(day) {
                    Some(d) => weekdays.push(d),
                    None => v.problem(
                        format!("{key}.weekdays[{i}]"),
                        format!("must be a weekday such as \"mon\" or \"monday\", got {day:?}"),
                    ),
                }
            }
            let (from, to) = (civil_time(v, "from", &from)?, civil_time(v, "to", &to)?);
            if to != Time::midnight() && to <= from {
                v.problem(format!("{key}.to"), "must be after from (\"00:00\" means the end of the day)");
                return None;
            }
            MaintenanceWindow::Weekly { weekdays, from, to }
        }
        _ => {
            v.problem(key, "give either start and end (a one-off window) or weekdays, from and to (a weekly one)");
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

fn validate_log(v: &mut Validator, raw: raw::Log, env: &Env) -> LogConfig {
    let level =
        env.get("LOG_LEVEL").map(str::to_owned).or(raw.level).unwrap_or_else(|| "info".to_owned()).to_ascii_lowercase();
    if level.parse::<tracing_subscriber::filter::Targets>().is_err() {
        v.problem("log.level", format!("must be a level (error, warn, info, debug, trace) or a filter, got {level:?}"));
    }
    let format = match raw.format.as_deref() {
        None | Some("auto") => LogFormat::Auto,
        Some("human") => LogFormat::Human,
        Some("json") => LogFormat::Json,
        Some(other) => {
            v.problem("log.format", format!("must be \"auto\", \"human\" or \"json\", got {other:?}"));
            LogFormat::Auto
        }
    };
    LogConfig { level, format }
}

fn validate_devices(v: &mut Validator, raw: Vec<raw::Device>) -> Vec<DeviceConfig> {
    let mut devices: Vec<DeviceConfig> = Vec::new();
    for (i, d) in raw.into_iter().enumerate() {
        let key = format!("devices[{i}]");
        let id = match d.id.map(|s| s.trim().to_owned()) {
            None => {
                v.problem(format!("{key}.id"), "is required (a stable name such as \"arm-1\")");
                continue;
            }
            Some(id) if !valid_device_id(&id) => {
                v.problem(
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
            v.problem(format!("{key}.id"), format!("{id:?} is already used by another device"));
            continue;
        }
        let Some(plugin) = d.plugin else {
            v.problem(format!("{key}.plugin"), "is required (the upload method, e.g. \"stk500v1\")");
            continue;
        };
        match (&d.port, &d.usb) {
            (Some(_), Some(_)) => v.problem(&key, "give either port or usb, not both"),
            (None, None) => v.problem(
                &key,
                "give port (a path such as \"/dev/serial/by-id/...\") or usb (vid, pid and optionally serial_number)",
            ),
            _ => {}
        }
        let usb = d.usb.and_then(|usb| validate_usb(v, &format!("{key}.usb"), usb));
        let model_name = d.model.unwrap_or_else(|| "uno".to_owned());
        let model = rerod_devices::model::lookup(&model_name);
        match crate::plugins::lookup(&plugin) {
            None => v.problem(
                format!("{key}.plugin"),
                format!("unknown upload method {plugin:?} (known: {})", crate::plugins::NAMES.join(", ")),
            ),
            Some(uploader) => {
                if let Err(errors) = uploader.check_options(d.options.as_ref().unwrap_or(&toml::Table::new())) {
                    for e in errors {
                        v.problem(format!("{key}.options.{}", e.key), e.message);
                    }
                }
            }
        }
        let reset = validate_reset(v, &format!("{key}.reset"), d.reset);
        let flash_limit = match (d.flash_limit, model) {
            (Some(n), _) => {
                v.int(&format!("{key}.flash_limit"), Some(n), 256..=rerod_devices::firmware::MAX_FLASH as i64, 32_256)
            }
            (None, Some(model)) => model.flash_limit,
            (None, None) => {
                v.problem(
                    format!("{key}.flash_limit"),
                    format!(
                        "is required for model {model_name:?}, which rerod does not know: the flash programs may \
                         use, in bytes (known models: {})",
                        rerod_devices::model::MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
                    ),
                );
                32_256
            }
        };
        let idle_given = d.idle_firmware.is_some();
        let idle_firmware = d.idle_firmware.and_then(|path| {
            let path = PathBuf::from(path);
            let checked =
                std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display())).and_then(|bytes| {
                    let firmware = Firmware::detect(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
                    firmware.check_fits(flash_limit).map_err(|e| format!("{}: {e}", path.display()))?;
                    Ok(firmware)
                });
            match checked {
                Ok(firmware) => Some(IdleFirmware { path, firmware: std::sync::Arc::new(firmware) }),
                Err(message) => {
                    v.problem(format!("{key}.idle_firmware"), message);
                    None
                }
            }
        });
        let power = d.power.and_then(|raw| validate_power(v, &format!("{key}.power"), raw));
        let health = d.health.map(|raw| validate_health(v, &format!("{key}.health"), raw));
        let camera = d.camera.and_then(|raw| validate_camera(v, &format!("{key}.camera"), raw));
        if health.is_some() && !idle_given {
            v.problem(
                format!("{key}.idle_firmware"),
                "is required with [devices.health]: the check flashes it and waits for its pattern",
            );
        }
        devices.push(DeviceConfig {
            name: d.name.unwrap_or_else(|| id.clone()),
            id,
            plugin,
            port: d.port.map(PathBuf::from),
            usb,
            baud: v.int(&format!("{key}.baud"), d.baud, 300..=4_000_000, 115_200),
            reset,
            options: d.options.unwrap_or_default(),
            upload_baud: v.int(
                &format!("{key}.upload_baud"),
                d.upload_baud,
                300..=4_000_000,
                model.map_or(115_200, |m| m.upload_baud),
            ),
            flash_limit,
            idle_firmware,
            power,
            health,
            camera,
            model: model_name,
        });
    }
    devices
}

/// `power = { uhubctl = { location = "1-1", port = 2 } }` or `power = ["program", "arg", ...]`.
fn validate_power(v: &mut Validator, key: &str, raw: toml::Value) -> Option<PowerMethod> {
    let wrong = "must be { uhubctl = { location = \"1-1\", port = 2 } } or a command as an array of strings";
    match raw {
        toml::Value::Array(items) if !items.is_empty() => {
            let argv: Option<Vec<String>> = items.iter().map(|item| item.as_str().map(str::to_owned)).collect();
            match argv {
                Some(argv) if !argv[0].is_empty() => Some(PowerMethod::Command(argv)),
                _ => {
                    v.problem(key, wrong);
                    None
                }
            }
        }
        toml::Value::Table(table) if table.len() == 1 && table.contains_key("uhubctl") => {
            let hub = table["uhubctl"].as_table();
            let location = hub.and_then(|h| h.get("location")).and_then(toml::Value::as_str);
            let port = hub.and_then(|h| h.get("port")).and_then(toml::Value::as_integer);
            let known = hub.is_some_and(|h| h.keys().all(|k| k == "location" || k == "port"));
            match (location, port) {
                (Some(location), Some(port))
                    if known
                        && (1..=255).contains(&port)
                        && !location.is_empty()
                        && location.chars().all(|c| c.is_ascii_digit() || c == '-' || c == '.') =>
                {
                    Some(PowerMethod::Uhubctl { location: location.to_owned(), port: port as u16 })
                }
                _ => {
                    v.problem(
                        format!("{key}.uhubctl"),
                        "needs location (the hub, as uhubctl -l takes it, e.g. \"1-1.4\") and port (1-255), nothing else",
                    );
                    None
                }
            }
        }
        _ => {
            v.problem(key, wrong);
            None
        }
    }
}

/// `[devices.health]`: `expect` (default "READY"), `timeout_secs` (default 5), `webhook`.
fn validate_health(v: &mut Validator, key: &str, raw: raw::Health) -> HealthCheckConfig {
    let expect = raw.expect.unwrap_or_else(|| "READY".to_owned());
    if expect.is_empty() || expect.len() > 256 {
        v.problem(format!("{key}.expect"), "must be 1 to 256 bytes of text the idle firmware prints");
    }
    let timeout = Duration::from_secs(v.int(&format!("{key}.timeout_secs"), raw.timeout_secs, 1..=300, 5));
    let webhook = raw.webhook.and_then(|text| match parse_webhook(&text) {
        Ok(url) => Some(url),
        Err(why) => {
            v.problem(format!("{key}.webhook"), format!("{why}, got {text:?}"));
            None
        }
    });
    HealthCheckConfig { expect, timeout, webhook }
}

/// `camera = { mjpeg = "http://..." }` or `{ snapshot = "http://...", snapshot_interval_ms = 1000 }`,
/// with `visibility`, `max_frame_kb` and `linger_ms`.
fn validate_camera(v: &mut Validator, key: &str, raw: raw::Camera) -> Option<CameraConfig> {
    let interval_ms: u64 = v.int(&format!("{key}.snapshot_interval_ms"), raw.snapshot_interval_ms, 20..=60_000, 1000);
    let mut url = |name: &str, text: String| match parse_webhook(&text) {
        Ok(url) => Some(url),
        Err(why) => {
            v.problem(format!("{key}.{name}"), format!("{why}, got {text:?}"));
            None
        }
    };
    let source = match (raw.mjpeg, raw.snapshot) {
        (Some(_), Some(_)) => {
            v.problem(key, "give either mjpeg (a stream) or snapshot (a picture fetched at a rate), not both");
            None
        }
        (None, None) => {
            v.problem(
                key,
                "needs mjpeg = \"http://host:port/stream\" (an MJPEG stream such as ustreamer's) or snapshot = \
                 \"http://host:port/snapshot\"",
            );
            None
        }
        (Some(mjpeg), None) => url("mjpeg", mjpeg).map(CameraSource::Mjpeg),
        (None, Some(snapshot)) => url("snapshot", snapshot)
            .map(|url| CameraSource::Snapshot { url, interval: Duration::from_millis(interval_ms) }),
    };
    let visibility = match raw.visibility.as_deref() {
        None | Some("holder") => Visibility::Holder,
        Some("signed_in") => Visibility::SignedIn,
        Some("public") => Visibility::Public,
        Some(other) => {
            v.problem(
                format!("{key}.visibility"),
                format!("must be \"holder\", \"signed_in\" or \"public\", got {other:?}"),
            );
            Visibility::Holder
        }
    };
    let max_frame_kb: usize = v.int(&format!("{key}.max_frame_kb"), raw.max_frame_kb, 16..=65_536, 2048);
    let linger_ms: u64 = v.int(&format!("{key}.linger_ms"), raw.linger_ms, 0..=3_600_000, 10_000);
    Some(CameraConfig {
        source: source?,
        visibility,
        max_frame_bytes: max_frame_kb << 10,
        linger: Duration::from_millis(linger_ms),
    })
}

/// `lab.legacy_camera_device` must name a board that has a camera.
fn check_legacy_camera(v: &mut Validator, lab: &LabConfig, devices: &[DeviceConfig]) {
    let Some(id) = &lab.legacy_camera_device else { return };
    match devices.iter().find(|d| d.id == *id) {
        None => v.problem("lab.legacy_camera_device", format!("names no configured device, got {id:?}")),
        Some(device) if device.camera.is_none() => v.problem(
            "lab.legacy_camera_device",
            format!("device {id:?} has no camera: give it camera = {{ mjpeg = \"http://...\" }}"),
        ),
        Some(_) => {}
    }
}

/// Reads `http://host[:port][/path]`. Only plain HTTP: rerod carries no TLS
/// stack, and a lab's alert relay usually sits on its own network.
fn parse_webhook(text: &str) -> Result<WebhookUrl, &'static str> {
    let rest = text.strip_prefix("http://").ok_or("must be an http:// URL (https is not supported)")?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            (host, port.parse::<u16>().map_err(|_| "has a port that is not a number from 1 to 65535")?)
        }
        _ => (authority, 80),
    };
    let host_ok =
        !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    if !host_ok || port == 0 || authority.contains('@') {
        return Err("must name a host (and optionally a port), with no user or password");
    }
    if path.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return Err("must not contain spaces or control characters");
    }
    Ok(WebhookUrl { host: host.to_owned(), port, path })
}

/// `reset = "dtr" | "none" | ["program", "arg", ...]`; default DTR.
fn validate_reset(v: &mut Validator, key: &str, raw: Option<toml::Value>) -> ResetMethod {
    let wrong = "must be \"dtr\", \"none\", or a command as an array of strings such as [\"usbreset\", \"2341:0043\"]";
    match raw {
        None => ResetMethod::Dtr,
        Some(toml::Value::String(s)) if s == "dtr" => ResetMethod::Dtr,
        Some(toml::Value::String(s)) if s == "none" => ResetMethod::None,
        Some(toml::Value::Array(items)) if !items.is_empty() => {
            let argv: Option<Vec<String>> = items.iter().map(|item| item.as_str().map(str::to_owned)).collect();
            argv.map(ResetMethod::Command).unwrap_or_else(|| {
                v.problem(key, wrong);
                ResetMethod::Dtr
            })
        }
        Some(_) => {
            v.problem(key, wrong);
            ResetMethod::Dtr
        }
    }
}

/// `[compilers.<model>]`: an argv template and a timeout per board model.
fn validate_compilers(
    v: &mut Validator,
    raw: std::collections::BTreeMap<String, raw::Compiler>,
) -> std::collections::BTreeMap<String, CompilerConfig> {
    let mut out = std::collections::BTreeMap::new();
    for (model, compiler) in raw {
        let key = format!("compilers.{model}");
        let argv = compiler.argv.unwrap_or_default();
        if argv.is_empty() || argv[0].is_empty() {
            v.problem(format!("{key}.argv"), "is required: the compiler and its arguments, using {sketch} and {build}");
            continue;
        }
        if !argv.iter().any(|a| a.contains("{sketch}") || a.contains("{sketch_dir}")) {
            v.problem(format!("{key}.argv"), "must use {sketch} or {sketch_dir}, where the user's code is written");
        }
        let timeout = Duration::from_secs(v.int(&format!("{key}.timeout_secs"), compiler.timeout_secs, 1..=3600, 120));
        out.insert(model.to_ascii_lowercase(), CompilerConfig { argv, timeout });
    }
    out
}

/// `[compile]`: the sandbox every toolchain runs in.
fn validate_compile(v: &mut Validator, raw: raw::Compile) -> CompileConfig {
    let defaults = ToolLimits::default();
    let sandbox = match raw.sandbox.as_deref() {
        None | Some("landlock") => SandboxMode::Landlock,
        Some("off") => SandboxMode::Off,
        Some(other) => {
            v.problem("compile.sandbox", format!("must be \"landlock\" or \"off\", got {other:?}"));
            SandboxMode::Landlock
        }
    };
    let mut read_paths = Vec::new();
    for (i, text) in raw.read_paths.unwrap_or_default().into_iter().enumerate() {
        let key = format!("compile.read_paths[{i}]");
        let path = PathBuf::from(&text);
        if !path.is_absolute() {
            v.problem(key, format!("must be an absolute path, got {text:?}"));
        } else if !path.exists() {
            v.problem(key, format!("{text} does not exist"));
        } else {
            read_paths.push(path);
        }
    }
    let limits = ToolLimits {
        cpu_secs: v.int("compile.cpu_secs", raw.cpu_secs, 1..=3600, defaults.cpu_secs),
        memory_mb: v.int("compile.memory_mb", raw.memory_mb, 64..=65_536, defaults.memory_mb),
        file_size_mb: v.int("compile.file_size_mb", raw.file_size_mb, 1..=4096, defaults.file_size_mb),
        max_processes: v.int("compile.max_processes", raw.max_processes, 8..=65_536, defaults.max_processes),
        max_open_files: v.int("compile.max_open_files", raw.max_open_files, 32..=65_536, defaults.max_open_files),
    };
    let d = CompileConfig::default();
    let max_queued = v.int("compile.max_queued", raw.max_queued, 0..=10_000, d.max_queued);
    let mut secs = |key: &str, value: Option<i64>, default: Duration| {
        Duration::from_secs(v.int(key, value, 1..=1_000_000, default.as_secs()))
    };
    let cpu_window = secs("compile.cpu_window_secs", raw.cpu_window_secs, d.cpu_window);
    let cpu_per_account = secs("compile.cpu_secs_per_account", raw.cpu_secs_per_account, d.cpu_per_account);
    let cpu_per_address = secs("compile.cpu_secs_per_address", raw.cpu_secs_per_address, d.cpu_per_address);
    CompileConfig { sandbox, read_paths, limits, max_queued, cpu_window, cpu_per_account, cpu_per_address }
}

fn validate_usb(v: &mut Validator, key: &str, raw: raw::Usb) -> Option<UsbMatch> {
    let mut hex = |field: &str, value: Option<String>| -> Option<u16> {
        let Some(text) = value else {
            v.problem(format!("{key}.{field}"), "is required, as four hex digits such as \"2341\"");
            return None;
        };
        let parsed = u16::from_str_radix(text.trim_start_matches("0x"), 16).ok();
        if parsed.is_none() {
            v.problem(format!("{key}.{field}"), format!("must be four hex digits such as \"2341\", got {text:?}"));
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
