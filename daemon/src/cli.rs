//! The command line: `rerod [--config FILE]` serves; `rerod check-config FILE`
//! validates. Only `main` turns an error into an exit code and a message.

use std::path::PathBuf;

use crate::config::{Config, Env};
use crate::wire::{Export, ExportedBooking, ExportedUser};

const USAGE: &str = "\
rerod — remote-lab hardware booking daemon

Usage:
  rerod [--config FILE]        serve (built-in defaults when no file is given)
  rerod check-config FILE      validate a config file and exit
  rerod backup --out FILE [--config FILE]
                               copy the store, consistently, while rerod runs
  rerod export [--with-hashes] [--config FILE]
                               print users and bookings as JSON
  rerod --help | --version

Environment (overrides the file): HOST, PORT, LOG_LEVEL, DATABASE_PATH,
JWT_SECRET_KEY, JWT_ALGORITHM, JWT_EXPIRE_MINUTES, BCRYPT_ROUNDS";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Serve { config: Option<PathBuf> },
    CheckConfig { file: PathBuf },
    Backup { config: Option<PathBuf>, out: PathBuf },
    Export { config: Option<PathBuf>, with_hashes: bool },
    Help,
    Version,
}

/// A failure to report to the person who ran rerod.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let mut config = None;
    let mut command = None;
    let mut out = None;
    let mut with_hashes = false;
    let mut verb = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-c" | "--config" => {
                config = Some(PathBuf::from(args.next().ok_or("--config needs a file")?));
            }
            s if s.starts_with("--config=") => config = Some(PathBuf::from(&s["--config=".len()..])),
            "backup" | "export" => verb = Some(arg.clone()),
            "--out" | "-o" => out = Some(PathBuf::from(args.next().ok_or("--out needs a file")?)),
            "--with-hashes" => with_hashes = true,
            "check-config" => {
                let file = args.next().ok_or("check-config needs a file")?;
                command = Some(Command::CheckConfig { file: PathBuf::from(file) });
            }
            other => return Err(format!("unexpected argument {other:?}\n\n{USAGE}")),
        }
    }
    match verb.as_deref() {
        Some("backup") => {
            let out = out.ok_or("backup needs --out FILE")?;
            return Ok(Command::Backup { config, out });
        }
        Some(_) => return Ok(Command::Export { config, with_hashes }),
        None if out.is_some() || with_hashes => {
            return Err(format!("--out and --with-hashes go with backup or export\n\n{USAGE}"));
        }
        None => {}
    }
    Ok(command.unwrap_or(Command::Serve { config }))
}

/// Runs a command to completion.
pub fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Help => {
            println!("{USAGE}");
            Ok(())
        }
        Command::Version => {
            println!("rerod {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::CheckConfig { file } => {
            let config = Config::load(Some(&file), &Env::from_process())?;
            println!(
                "{}: ok ({} devices, listen {}, store {})",
                file.display(),
                config.devices.len(),
                config.server.listen,
                config.store.path.display()
            );
            Ok(())
        }
        Command::Serve { config } => serve(config),
        Command::Backup { config, out } => {
            let config = Config::load(config.as_deref(), &Env::from_process())?;
            let counts = crate::store::backup(&config.store.path, &out)?;
            eprintln!(
                "backed up {} to {}: {} users, {} bookings",
                config.store.path.display(),
                out.display(),
                counts.users,
                counts.bookings
            );
            Ok(())
        }
        Command::Export { config, with_hashes } => {
            let config = Config::load(config.as_deref(), &Env::from_process())?;
            let snapshot = crate::store::snapshot(&config.store.path)?;
            println!("{}", serde_json::to_string_pretty(&export_json(&snapshot, with_hashes))?);
            Ok(())
        }
    }
}

fn serve(config_path: Option<PathBuf>) -> Result<(), Error> {
    let env = Env::from_process();
    let config = Config::load(config_path.as_deref(), &env)?;
    let logs = crate::logging::init(&config.log);
    raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("rerod-worker").build()?;
    runtime.block_on(crate::runtime::run(config, config_path, env, logs.level_control()))
}

/// The export format: users (hashes only when asked) and bookings.
fn export_json(snapshot: &crate::store::Snapshot, with_hashes: bool) -> Export {
    use crate::wire::utc;
    let users = snapshot
        .users
        .iter()
        .map(|u| ExportedUser {
            email: u.email.clone(),
            created_at: utc(u.created_at),
            disabled: u.disabled,
            password_hash: with_hashes.then(|| u.password_hash.as_stored().to_owned()),
        })
        .collect();
    let bookings = snapshot
        .bookings
        .iter()
        .map(|b| ExportedBooking {
            device: b.key.device.clone(),
            date: b.key.date.to_string(),
            slot_id: b.key.slot,
            email: b.email.clone(),
            booked_at: utc(b.booked_at),
        })
        .collect();
    Export { users, bookings }
}

/// Every connection is a file descriptor: raise the soft limit to the hard one
/// (systemd's `LimitNOFILE=` sets the hard limit for the service).
fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            let wanted = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
                tracing::warn!(soft = limit.rlim_cur, "could not raise the open-file limit");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn arguments() {
        assert_eq!(parse(&[]), Ok(Command::Serve { config: None }));
        assert_eq!(parse(&["--config", "a.toml"]), Ok(Command::Serve { config: Some("a.toml".into()) }));
        assert_eq!(parse(&["--config=a.toml"]), Ok(Command::Serve { config: Some("a.toml".into()) }));
        assert_eq!(parse(&["check-config", "a.toml"]), Ok(Command::CheckConfig { file: "a.toml".into() }));
        assert!(parse(&["--config"]).is_err());
        assert!(parse(&["frobnicate"]).is_err());
        assert_eq!(parse(&["backup", "--out", "b.redb"]), Ok(Command::Backup { config: None, out: "b.redb".into() }));
        assert!(parse(&["backup"]).is_err());
        assert_eq!(
            parse(&["export", "--with-hashes", "--config", "c.toml"]),
            Ok(Command::Export { config: Some("c.toml".into()), with_hashes: true })
        );
    }
}
