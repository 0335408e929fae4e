//! Unit tests of config loading: defaults, environment overrides, and every
//! problem reported under its key path.

use super::*;
use crate::booking::MaintenanceWindow;
use jiff::civil::Weekday;

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
    assert_eq!(config.auth.min_password_score, 1);
    assert_eq!(config.auth.max_registrations_per_address_per_hour, 20);
    assert_eq!(config.auth.max_registrations_per_hour, 500);
    assert_eq!(config.lab.calendar.slot_minutes(), 60);
    // A teaching lab's caps, on unless lifted.
    let caps = Policy { max_active_bookings: Some(4), max_bookings_per_day: Some(2), ..Policy::default() };
    assert_eq!(config.lab.policy, caps);
    assert_eq!(config.server.max_json_bytes, 65536);
    assert_eq!(config.server.max_header_bytes, 16 << 10);
    assert_eq!(config.server.max_connections_per_address, 256);
    assert_eq!((config.server.max_websockets_per_address, config.server.max_websockets_per_account), (128, 16));
    assert!(config.server.trusted_proxies.is_empty());
    assert!(config.devices.is_empty());
    assert!(config.auth.jwt_secret.is_none());
}

#[test]
fn booking_caps_are_lifted_with_zero_and_proxies_must_be_addresses() {
    let config = load("[lab]\nmax_active_bookings = 0\nmax_bookings_per_day = 0\n").unwrap();
    assert_eq!((config.lab.policy.max_active_bookings, config.lab.policy.max_bookings_per_day), (None, None));
    let config = load("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n").unwrap();
    assert_eq!(config.server.trusted_proxies.len(), 2);
    let error = format!("{:?}", load("[server]\ntrusted_proxies = [\"proxy.lab\", \"10.0.0.0/40\"]\n").unwrap_err());
    assert!(
        error.contains("server.trusted_proxies") && error.contains("proxy.lab") && error.contains("10.0.0.0/40"),
        "{error}"
    );
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
    assert_eq!(config.auth.jwt_algorithm, crate::auth::TokenAlgorithm::Hs512);
    assert_eq!(config.auth.token_lifetime, Duration::from_secs(300));
    assert_eq!(config.auth.bcrypt_cost, 4);
}

#[test]
fn a_log_level_is_a_level_or_target_directives() {
    for good in ["warn", "rerod=debug,info", "info,rerod::access=warn", "off"] {
        assert!(load(&format!("[log]\nlevel = \"{good}\"\n")).is_ok(), "{good}");
    }
    for bad in ["rerod=loud", "info,a=b=c", "rerod[{x}=info"] {
        let problems = load(&format!("[log]\nlevel = \"{bad}\"\n")).unwrap_err();
        assert_eq!(keys(&problems), ["log.level"], "{bad}");
    }
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
fn a_model_rerod_does_not_know_needs_its_flash_limit() {
    let board = "[[devices]]\nid = \"x\"\nmodel = \"esp-thing\"\nplugin = \"command\"\nport = \"/dev/ttyUSB0\"\n\
                 options = { argv = [\"true\", \"{firmware}\"] }\n";
    let problems = load(board).unwrap_err();
    assert_eq!(keys(&problems), ["devices[0].flash_limit"]);
    assert!(problems[0].to_string().contains("esp-thing"), "{}", problems[0]);
    let config = load(&format!("{board}flash_limit = 4194304\n")).unwrap();
    assert_eq!(config.devices[0].flash_limit, 4 << 20);
    // No board rerod supports has more than MAX_FLASH: larger limits are refused too.
    let problems = load(&format!("{board}flash_limit = 4294967296\n")).unwrap_err();
    assert_eq!(keys(&problems), ["devices[0].flash_limit"]);
}

#[test]
fn a_minimal_uno_entry_is_enough_and_takes_the_models_defaults() {
    let config = load("[[devices]]\nid = \"arm-1\"\nplugin = \"stk500v1\"\nport = \"/dev/ttyACM0\"\n").unwrap();
    let d = &config.devices[0];
    assert_eq!((d.name.as_str(), d.model.as_str(), d.baud, d.upload_baud), ("arm-1", "uno", 115_200, 115_200));
    assert_eq!(d.flash_limit, 32_256);
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
    assert_eq!((a.upload_baud, a.flash_limit), (57_600, 31_744));
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
fn compile_sandbox_and_limits() {
    let config = load("").unwrap();
    assert_eq!(config.compile.sandbox, SandboxMode::Landlock);
    assert_eq!(config.compile.limits, ToolLimits::default());
    let config = load(
        "[compile]\nsandbox = \"off\"\nread_paths = [\"/usr/share\"]\ncpu_secs = 5\nmemory_mb = 256\nfile_size_mb = 2\nmax_processes = 16\nmax_open_files = 64\ncpu_window_secs = 300\ncpu_secs_per_account = 30\ncpu_secs_per_address = 90\n",
    )
    .unwrap();
    assert_eq!(config.compile.sandbox, SandboxMode::Off);
    assert_eq!(config.compile.read_paths, [std::path::PathBuf::from("/usr/share")]);
    assert_eq!(
        config.compile.limits,
        ToolLimits { cpu_secs: 5, memory_mb: 256, file_size_mb: 2, max_processes: 16, max_open_files: 64 }
    );
    let shares = (config.compile.cpu_window, config.compile.cpu_per_account, config.compile.cpu_per_address);
    assert_eq!(shares, (Duration::from_secs(300), Duration::from_secs(30), Duration::from_secs(90)));

    let problems = load(
        "[compile]\nsandbox = \"none\"\nread_paths = [\"lib\", \"/nonexistent/arduino\"]\ncpu_secs = 0\nmemory_mb = 1\nfile_size_mb = -1\nmax_processes = 1\nmax_open_files = 3\ncpu_window_secs = 0\ncpu_secs_per_account = -1\ncpu_secs_per_address = 0\n",
    )
    .unwrap_err();
    assert_eq!(
        keys(&problems),
        [
            "compile.sandbox",
            "compile.read_paths[0]",
            "compile.read_paths[1]",
            "compile.cpu_secs",
            "compile.memory_mb",
            "compile.file_size_mb",
            "compile.max_processes",
            "compile.max_open_files",
            "compile.cpu_window_secs",
            "compile.cpu_secs_per_account",
            "compile.cpu_secs_per_address",
        ]
    );
    assert!(load("[compile]\nmemory = 5\n").is_err(), "unknown keys are errors");
}

#[test]
fn registration_policies() {
    let config = load("[auth]\nregistration = \"closed\"\n").unwrap();
    assert_eq!(config.auth.registration, Registration::Closed);
    let config = load("[auth]\nallowed_domains = [\"@Uni.Example\"]\n").unwrap();
    assert_eq!(config.auth.registration, Registration::Domains(vec!["uni.example".into()]));
    let problems = load("[auth]\nregistration = \"domains\"\n").unwrap_err();
    assert_eq!(keys(&problems), ["auth.allowed_domains"]);
    let text = "[auth]\nmin_password_score = 5\nmax_registrations_per_hour = 0\n\
                max_registrations_per_address_per_hour = -1\n";
    let problems = load(text).unwrap_err();
    assert_eq!(
        keys(&problems),
        ["auth.min_password_score", "auth.max_registrations_per_address_per_hour", "auth.max_registrations_per_hour"]
    );
}

#[test]
fn session_warnings_and_records() {
    let config = load("").unwrap();
    assert_eq!(config.lab.session_warnings, [5, 1]);
    assert_eq!(config.records.path, PathBuf::from("data/records"), "beside the store by default");
    assert_eq!(config.records.max_age, Duration::from_secs(30 * 86_400));
    assert_eq!((config.records.max_total_bytes, config.records.max_transcript_bytes), (512 << 20, 1 << 20));
    let env = Env::from_pairs([("DATABASE_PATH", "/var/lib/rerod/rerod.redb")]);
    let config = Config::from_toml("", &env).unwrap();
    assert_eq!(config.records.path, PathBuf::from("/var/lib/rerod/records"), "beside the store wherever it is");
    let config =
        load("[lab]\nsession_warnings_minutes = [1, 10]\n[records]\npath = \"/srv/r\"\nmax_transcript_kb = 4\n")
            .unwrap();
    assert_eq!(config.lab.session_warnings, [10, 1], "largest first");
    assert_eq!((config.records.path.to_str(), config.records.max_transcript_bytes), (Some("/srv/r"), 4096));
    let config = load("[lab]\nsession_warnings_minutes = []\n").unwrap();
    assert!(config.lab.session_warnings.is_empty(), "no warnings at all");
    let problems = load(
        "[lab]\nsession_warnings_minutes = [5, 0, 5]\n[records]\npath = \"\"\nmax_age_days = 0\nmax_total_mb = -1\n",
    )
    .unwrap_err();
    assert_eq!(
        keys(&problems),
        [
            "lab.session_warnings_minutes[1]",
            "lab.session_warnings_minutes[2]",
            "records.path",
            "records.max_age_days",
            "records.max_total_mb"
        ]
    );
}

#[test]
fn maintenance_windows_are_read_in_the_lab_zone() {
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

    let problems = load("[[lab.maintenance]]\nweekdays = [\"someday\"]\nfrom = \"9\"\nto = \"10:00\"\n").unwrap_err();
    assert_eq!(keys(&problems), ["lab.maintenance[0].weekdays[0]", "lab.maintenance[0].from"]);
}

#[test]
fn the_example_lab_in_the_repository_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/example-lab.toml");
    let config = Config::load(Some(&path), &Env::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(!config.devices.is_empty());
}

/// config/rerod.toml is the reference: loading it gives exactly the
/// built-in defaults, and it names every key the file may hold.
#[test]
fn the_reference_config_holds_every_key_at_its_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rerod.toml");
    let reference = Config::load(Some(&path), &Env::default()).unwrap_or_else(|e| panic!("{e}"));
    let defaults = Config::from_toml("", &Env::default()).expect("the defaults are valid");
    assert_eq!(format!("{reference:?}"), format!("{defaults:?}"), "a value in config/rerod.toml is not the default");
    let text = std::fs::read_to_string(&path).expect("readable");
    let mut missing = Vec::new();
    let devices: Vec<&str> = properties::DEVICE_KEYS.iter().copied().chain(["idle_firmware"]).collect();
    let maintenance = ["device", "start", "end", "weekdays", "from", "to", "reason"];
    let sections =
        properties::SECTIONS.into_iter().chain([("devices", &devices[..]), ("lab.maintenance", &maintenance)]);
    for (section, keys) in sections {
        for key in keys {
            // Set, commented out as an example, or a table of its own.
            let named = text.lines().any(|line| {
                let line = line.trim_start_matches(['#', ' ']);
                line.starts_with(&format!("{key} =")) || line.starts_with(&format!("[{section}.{key}]"))
            });
            if !named {
                missing.push(format!("{section}.{key}"));
            }
        }
    }
    assert!(missing.is_empty(), "config/rerod.toml does not explain {missing:?}");
}

mod properties {
    use proptest::prelude::*;
    use toml::{Table, Value};

    use super::*;

    /// Every key of the file, by section. `devices.idle_firmware` is left
    /// out: its value is a path the loader reads, and a generated one could
    /// name a device file that never ends.
    pub(super) const SECTIONS: [(&str, &[&str]); 7] = [
        (
            "server",
            &[
                "listen",
                "cors_origins",
                "max_connections",
                "max_json_bytes",
                "max_firmware_bytes",
                "max_upload_bytes_in_flight",
                "header_read_timeout_secs",
                "max_websocket_connections",
                "max_websocket_message_bytes",
                "max_header_bytes",
                "max_connections_per_address",
                "max_websockets_per_address",
                "max_websockets_per_account",
                "trusted_proxies",
            ],
        ),
        ("store", &["path"]),
        (
            "auth",
            &[
                "jwt_secret_file",
                "jwt_algorithm",
                "token_minutes",
                "bcrypt_cost",
                "min_password_length",
                "max_failed_logins",
                "failed_login_window_secs",
                "max_logins_per_address",
                "address_window_secs",
                "max_queued_password_checks",
                "min_password_score",
                "max_registrations_per_address_per_hour",
                "max_registrations_per_hour",
                "registration",
                "allowed_domains",
                "admins",
            ],
        ),
        (
            "lab",
            &[
                "timezone",
                "slot_minutes",
                "days_ahead",
                "max_active_bookings",
                "max_bookings_per_day",
                "privacy",
                "session_warnings_minutes",
            ],
        ),
        ("records", &["path", "max_age_days", "max_total_mb", "max_transcript_kb"]),
        ("log", &["level", "format"]),
        (
            "compile",
            &[
                "sandbox",
                "read_paths",
                "cpu_secs",
                "memory_mb",
                "file_size_mb",
                "max_processes",
                "max_open_files",
                "max_queued",
                "cpu_window_secs",
                "cpu_secs_per_account",
                "cpu_secs_per_address",
            ],
        ),
    ];
    pub(super) const DEVICE_KEYS: [&str; 12] = [
        "id",
        "name",
        "model",
        "plugin",
        "port",
        "usb",
        "baud",
        "reset",
        "options",
        "upload_baud",
        "flash_limit",
        "camera",
    ];
    const MAINTENANCE_KEYS: [&str; 7] = ["device", "reason", "start", "end", "weekdays", "from", "to"];

    /// Values a lab admin might write, right or wrong for any key.
    fn value() -> impl Strategy<Value = Value> {
        let scalar = prop_oneof![
            any::<i64>().prop_map(Value::Integer),
            (-5i64..100_000).prop_map(Value::Integer),
            any::<f64>().prop_map(Value::Float),
            any::<bool>().prop_map(Value::Boolean),
            ".{0,16}".prop_map(Value::String),
            prop::sample::select(
                &[
                    "127.0.0.1:0",
                    "uno",
                    "mega2560",
                    "stk500v1",
                    "stk500v2",
                    "command",
                    "Europe/Berlin",
                    "UTC",
                    "dtr",
                    "none",
                    "open",
                    "closed",
                    "domains",
                    "hide_others",
                    "debug",
                    "json",
                    "off",
                    "landlock",
                    "2026-11-30T09:00",
                    "monday",
                    "09:00",
                    "2341",
                    "0043",
                    "*",
                    "a@b.c",
                ][..]
            )
            .prop_map(|s| Value::String(s.to_owned())),
        ];
        scalar.prop_recursive(2, 12, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[a-z_]{1,10}", inner), 0..4)
                    .prop_map(|pairs| Value::Table(pairs.into_iter().collect())),
            ]
        })
    }

    fn table_of(keys: &'static [&'static str]) -> impl Strategy<Value = Table> {
        prop::collection::vec((prop::sample::select(keys), value()), 0..5)
            .prop_map(|pairs| pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// A file of known sections and keys with generated values.
    fn document() -> impl Strategy<Value = Table> {
        let sections = prop::collection::vec(
            prop::sample::select(&SECTIONS[..]).prop_flat_map(|(name, keys)| (Just(name), table_of(keys))),
            0..4,
        );
        let devices = prop::collection::vec(table_of(&DEVICE_KEYS), 0..3);
        let maintenance = prop::collection::vec(table_of(&MAINTENANCE_KEYS), 0..2);
        (sections, devices, maintenance).prop_map(|(sections, devices, maintenance)| {
            let mut file = Table::new();
            for (name, table) in sections {
                file.insert(name.to_owned(), Value::Table(table));
            }
            if !devices.is_empty() {
                file.insert("devices".to_owned(), Value::Array(devices.into_iter().map(Value::Table).collect()));
            }
            if !maintenance.is_empty() {
                let lab = file.entry("lab").or_insert_with(|| Value::Table(Table::new()));
                if let Value::Table(lab) = lab {
                    lab.insert(
                        "maintenance".to_owned(),
                        Value::Array(maintenance.into_iter().map(Value::Table).collect()),
                    );
                }
            }
            file
        })
    }

    /// Every problem must say where it is: a key path, or a line and column.
    fn check_located(text: &str) -> Result<(), TestCaseError> {
        if let Err(problems) = load(text) {
            prop_assert!(!problems.is_empty(), "refused without a reason:\n{}", text);
            for problem in &problems {
                prop_assert!(
                    !problem.key.is_empty() || problem.location.is_some(),
                    "{} has neither key nor location in:\n{}",
                    problem,
                    text
                );
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            check_located(&text)?;
        }

        #[test]
        fn toml_like_text_never_panics(
            text in prop::collection::vec(
                prop_oneof!["[\\[\\]a-z_.=\" \n0-9{},#'-]{1,12}", "\\[{1,2}(server|lab|auth|devices|lab.maintenance)\\]{1,2}\n"],
                0..16,
            ).prop_map(|pieces| pieces.concat()),
        ) {
            check_located(&text)?;
        }

        #[test]
        fn arbitrary_values_for_known_keys_never_panic(file in document()) {
            let text = toml::to_string(&file).expect("a table serializes");
            check_located(&text)?;
        }

        #[test]
        fn damaged_files_never_panic(file in document(), at in any::<prop::sample::Index>(), junk in ".{0,4}") {
            let mut text = toml::to_string(&file).expect("a table serializes");
            let mut cut = at.index(text.len() + 1);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.insert_str(cut, &junk);
            check_located(&text)?;
        }
    }
}

#[test]
fn health_checks_power_and_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let idle = dir.path().join("idle.hex");
    std::fs::write(&idle, ":0400000001020304F2\n:00000001FF\n").unwrap();
    let text = format!(
        r#"
        [[devices]]
        id = "a"
        plugin = "stk500v1"
        port = "/dev/ttyACM0"
        idle_firmware = "{idle}"
        power = {{ uhubctl = {{ location = "1-1.4", port = 2 }} }}
        [devices.health]
        webhook = "http://alerts.lab:8080/hooks/rerod?board=a"
        [[devices]]
        id = "b"
        plugin = "stk500v1"
        port = "/dev/ttyACM1"
        idle_firmware = "{idle}"
        power = ["kill", "-USR2", "42"]
        [devices.health]
        expect = "idle ok"
        timeout_secs = 9
        "#,
        idle = idle.display()
    );
    let config = load(&text).unwrap();
    let (a, b) = (&config.devices[0], &config.devices[1]);
    let health = a.health.as_ref().unwrap();
    assert_eq!((health.expect.as_str(), health.timeout), ("READY", std::time::Duration::from_secs(5)));
    assert_eq!(health.webhook.as_ref().unwrap().to_string(), "http://alerts.lab:8080/hooks/rerod?board=a");
    assert_eq!(a.power.as_ref().unwrap().argv(), ["uhubctl", "-l", "1-1.4", "-p", "2", "-a", "cycle", "-d", "2"]);
    assert_eq!(b.health.as_ref().map(|h| (h.expect.as_str(), h.timeout.as_secs())), Some(("idle ok", 9)));
    assert_eq!(b.power.as_ref().unwrap().argv(), ["kill", "-USR2", "42"]);
    assert!(config.devices.iter().all(|d| d.health.is_some()));
    assert!(
        load("[[devices]]\nid = \"c\"\nplugin = \"stk500v1\"\nport = \"/dev/x\"\n").unwrap().devices[0]
            .health
            .is_none()
    );

    let problems = load(
        r#"
        [[devices]]
        id = "a"
        plugin = "stk500v1"
        port = "/dev/x"
        power = { uhubctl = { location = "1-1", port = 0 } }
        [devices.health]
        expect = ""
        timeout_secs = 0
        webhook = "https://alerts.lab/"
        [[devices]]
        id = "b"
        plugin = "stk500v1"
        port = "/dev/y"
        power = "cycle"
        [devices.health]
        webhook = "http://user:pw@alerts.lab/"
        "#,
    )
    .unwrap_err();
    assert_eq!(
        keys(&problems),
        [
            "devices[0].power.uhubctl",
            "devices[0].health.expect",
            "devices[0].health.timeout_secs",
            "devices[0].health.webhook",
            "devices[0].idle_firmware",
            "devices[1].power",
            "devices[1].health.webhook",
            "devices[1].idle_firmware",
        ]
    );
}

#[test]
fn cameras_take_a_stream_or_a_snapshot_url_and_a_visibility() {
    let board = "[[devices]]\nid = \"arm-1\"\nplugin = \"stk500v1\"\nport = \"/dev/null\"\n";
    let config = load(&format!(
        "[lab]\nlegacy_camera_device = \"arm-1\"\n{board}camera = {{ mjpeg = \"http://127.0.0.1:8081/stream\" }}\n"
    ))
    .unwrap();
    let camera = config.devices[0].camera.clone().unwrap();
    assert_eq!(camera.source.url().to_string(), "http://127.0.0.1:8081/stream");
    assert!(matches!(camera.source, CameraSource::Mjpeg(_)));
    assert_eq!(camera.visibility, Visibility::Holder, "no one else by default");
    assert_eq!((camera.max_frame_bytes, camera.linger), (2 << 20, Duration::from_secs(10)));
    assert_eq!(config.lab.legacy_camera_device.as_deref(), Some("arm-1"));

    let config = load(&format!(
        "{board}camera = {{ snapshot = \"http://cam.lab/jpg\", snapshot_interval_ms = 200, visibility = \"public\", \
         max_frame_kb = 64, linger_ms = 50 }}\n"
    ))
    .unwrap();
    let camera = config.devices[0].camera.clone().unwrap();
    assert_eq!(
        camera.source,
        CameraSource::Snapshot {
            url: WebhookUrl { host: "cam.lab".into(), port: 80, path: "/jpg".into() },
            interval: Duration::from_millis(200)
        }
    );
    assert_eq!(
        (camera.visibility, camera.max_frame_bytes, camera.linger),
        (Visibility::Public, 64 << 10, Duration::from_millis(50))
    );

    let bad = [
        ("camera = { mjpeg = \"https://cam/stream\" }", "devices[0].camera.mjpeg"),
        ("camera = { mjpeg = \"http://a/s\", snapshot = \"http://a/j\" }", "devices[0].camera"),
        ("camera = { visibility = \"public\" }", "devices[0].camera"),
        ("camera = { mjpeg = \"http://a/s\", visibility = \"everyone\" }", "devices[0].camera.visibility"),
        ("camera = { mjpeg = \"http://a/s\", max_frame_kb = 1 }", "devices[0].camera.max_frame_kb"),
    ];
    for (line, key) in bad {
        let problems = load(&format!("{board}{line}\n")).unwrap_err();
        assert_eq!(keys(&problems), [key], "{line}: {problems:?}");
    }
    let problems = load(&format!("[lab]\nlegacy_camera_device = \"arm-1\"\n{board}")).unwrap_err();
    assert_eq!(keys(&problems), ["lab.legacy_camera_device"], "{problems:?}");
    assert!(problems[0].message.contains("has no camera"), "{problems:?}");
    // An unknown key inside the camera table is located by line.
    let problems = load(&format!("{board}camera = {{ mjpeg = \"http://a/s\", fps = 5 }}\n")).unwrap_err();
    assert_eq!(problems[0].location.map(|(line, _)| line), Some(5), "{problems:?}");
}

#[test]
fn a_shared_store_and_a_cluster_are_checked_and_their_secrets_never_shown() {
    let config = load("[store]\nurl = \"postgres://rerod@db.lab.example/lab\"\n").unwrap();
    assert_eq!(config.store.url.as_deref(), Some("postgres://rerod@db.lab.example/lab"));
    assert!(config.cluster.is_none());
    let env = Env::from_pairs([("DATABASE_URL", "postgresql://rerod:pw@db/lab")]);
    let config = Config::from_toml("", &env).unwrap();
    assert_eq!(config.store.url.as_deref(), Some("postgresql://rerod:pw@db/lab"), "the environment wins");
    assert!(!format!("{config:?}").contains("pw@"), "Debug shows no URL");
    let problems = load("[store]\nurl = \"mysql://root:hunter2@db/lab\"\n").unwrap_err();
    assert_eq!(keys(&problems), ["store.url"]);
    assert!(!format!("{problems:?}").contains("hunter2"));

    let cluster = "[cluster]\nname = \"bench-2\"\nadvertise = \"http://bench-2.lab.example:8000\"\n\
                   secret_file = \"/etc/rerod/cluster.secret\"\n";
    let config = load(&format!("[store]\nurl = \"postgres://db/lab\"\n{cluster}")).unwrap();
    let c = config.cluster.unwrap();
    assert_eq!((c.name.as_str(), c.offline_after), ("bench-2", Duration::from_secs(15)));
    // A cluster needs the shared store.
    assert_eq!(keys(&load(cluster).unwrap_err()), ["cluster"]);
    let bad = "[store]\nurl = \"postgres://db/lab\"\n[cluster]\nname = \"bench 2\"\nadvertise = \"bench-2:8000\"\n\
               offline_after_secs = 1\n";
    assert_eq!(
        keys(&load(bad).unwrap_err()),
        ["cluster.name", "cluster.advertise", "cluster.secret_file", "cluster.offline_after_secs"]
    );
    // Hosts forward to each other over plain HTTP only; a TLS address would fail every forward.
    let tls = format!("[store]\nurl = \"postgres://db/lab\"\n{}", cluster.replace("http://", "https://"));
    let problems = load(&tls).unwrap_err();
    assert_eq!(keys(&problems), ["cluster.advertise"]);
    assert!(problems[0].message.contains("plain HTTP"), "{problems:?}");
}
