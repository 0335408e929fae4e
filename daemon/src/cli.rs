//! The command line: `rerod [--config FILE]` serves; `rerod check-config FILE`
//! validates; `rerod user ...` manages accounts through the running daemon's
//! control socket. Only `main` turns an error into an exit code and a message.

use std::path::PathBuf;

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::config::{Config, Env};
use crate::wire::{ControlRequest, ControlResponse, Export, ExportedBooking, ExportedUser};

const USAGE: &str = "\
rerod — remote-lab hardware booking daemon

Usage:
  rerod [--config FILE]        serve (built-in defaults when no file is given)
  rerod check-config FILE      validate a config file and exit
  rerod backup --out FILE [--config FILE]
                               copy the store, consistently, while rerod runs
  rerod export [--with-hashes] [--config FILE]
                               print users and bookings as JSON
  rerod user add EMAIL [--admin] [--config FILE]
                               create an account (a lab admin with --admin)
  rerod user passwd EMAIL [--config FILE]
                               set an account's password
                               (both ask the running daemon; the password is
                               read from the terminal, or one line of stdin)
  rerod user import FILE.csv [--config FILE]
                               create an account for each row (email, and
                               optionally password); prints email,password
                               of each account made, passwords generated
                               where the file has none
  rerod --help | --version

Environment (overrides the file): HOST, PORT, LOG_LEVEL, DATABASE_PATH,
JWT_SECRET_KEY, JWT_ALGORITHM, JWT_EXPIRE_MINUTES, BCRYPT_ROUNDS";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Serve { config: Option<PathBuf> },
    CheckConfig { file: PathBuf },
    Backup { config: Option<PathBuf>, out: PathBuf },
    Export { config: Option<PathBuf>, with_hashes: bool },
    User { config: Option<PathBuf>, action: UserAction },
    Help,
    Version,
}

/// What `rerod user` does.
#[derive(Debug, PartialEq, Eq)]
pub enum UserAction {
    Add {
        email: String,
        admin: bool,
    },
    Passwd {
        email: String,
    },
    /// Accounts from a CSV file (`-`: stdin); see [`crate::roster`].
    Import {
        file: PathBuf,
    },
}

/// A failure to report to the person who ran rerod.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let mut config = None;
    let mut command = None;
    let mut out = None;
    let mut with_hashes = false;
    let mut admin = false;
    let mut verb = None;
    let mut user = None;
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
            "--admin" => admin = true,
            "user" => {
                let action = args.next().ok_or("user needs add, passwd or import")?;
                let what = if action == "import" { "a CSV file" } else { "an e-mail address" };
                let email = args.next().ok_or_else(|| format!("user {action} needs {what}"))?;
                match action.as_str() {
                    "add" | "passwd" | "import" => user = Some((action, email)),
                    other => {
                        return Err(format!("unknown user command {other:?}: add, passwd or import\n\n{USAGE}"));
                    }
                }
            }
            "check-config" => {
                let file = args.next().ok_or("check-config needs a file")?;
                command = Some(Command::CheckConfig { file: PathBuf::from(file) });
            }
            other => return Err(format!("unexpected argument {other:?}\n\n{USAGE}")),
        }
    }
    if let Some((action, email)) = user {
        let action = match action.as_str() {
            "add" => UserAction::Add { email, admin },
            _ if admin => return Err("--admin goes with user add".to_owned()),
            "import" => UserAction::Import { file: PathBuf::from(email) },
            _ => UserAction::Passwd { email },
        };
        return Ok(Command::User { config, action });
    }
    if admin {
        return Err(format!("--admin goes with user add\n\n{USAGE}"));
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
        Command::User { config, action } => {
            let config = Config::load(config.as_deref(), &Env::from_process())?;
            let socket = crate::control::socket_path(&config.store.path);
            let request = match action {
                UserAction::Import { file } => return import_users(&socket, &file),
                UserAction::Add { email, admin } => {
                    let password = read_password(&format!("Password for {email}: "))?;
                    ControlRequest::UserAdd { email, password, admin }
                }
                UserAction::Passwd { email } => {
                    let password = read_password(&format!("New password for {email}: "))?;
                    ControlRequest::UserPasswd { email, password }
                }
            };
            let response = ask_daemon(&socket, &request)?;
            if response.success {
                println!("{}", response.message);
                Ok(())
            } else {
                Err(response.message.into())
            }
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

/// `rerod user import`: asks the daemon for one account per row of the
/// roster, as `rerod user add` would. What a lab admin needs next goes to
/// stdout, ready to mail out: `email,password` for each account made.
/// Refused rows (taken, look-alike, weak password) are reported on stderr by
/// line and skipped; the command fails if any was, so a script notices, and
/// it can be run again on the same file once the file is fixed.
fn import_users(socket: &Path, file: &Path) -> Result<(), Error> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?
    };
    let rows = crate::roster::parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "email,password")?;
    let (mut n_created, mut n_refused) = (0, 0);
    for row in rows {
        let password = match row.password {
            Some(password) => password,
            None => crate::auth::generate_password()?,
        };
        let email = crate::auth::normalize_email(&row.email).unwrap_or_else(|_| row.email.clone());
        let request = ControlRequest::UserAdd { email: row.email.clone(), password: password.clone(), admin: false };
        let response = ask_daemon(socket, &request)?;
        if response.success {
            writeln!(out, "{},{}", csv_field(&email), csv_field(&password))?;
            n_created += 1;
        } else {
            eprintln!("line {}: {}: {}", row.line, row.email, response.message);
            n_refused += 1;
        }
    }
    out.flush()?;
    eprintln!("{n_created} accounts created, {n_refused} rows refused");
    if n_refused > 0 {
        return Err(format!("{n_refused} rows of {} were refused (see above)", file.display()).into());
    }
    Ok(())
}

/// A CSV field, quoted when it has to be.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) || text.starts_with(' ') || text.ends_with(' ') {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Sends one request over the control socket at `path` and reads the answer.
fn ask_daemon(path: &Path, request: &ControlRequest) -> Result<ControlResponse, Error> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot reach the running daemon at {}: {e}; rerod must be running (with the same --config or \
             DATABASE_PATH), and this command run as root or as rerod's user",
            path.display()
        )
    })?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    Ok(serde_json::from_str(&answer).map_err(|e| format!("unexpected answer from the daemon: {e}"))?)
}

/// A password from the terminal (not echoed, asked twice) or, when stdin is
/// not a terminal, its first line. Never from the command line, where other
/// users of the host could read it.
fn read_password(prompt: &str) -> Result<String, Error> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_owned());
    }
    let first = read_hidden(prompt)?;
    let second = read_hidden("Again: ")?;
    if first != second {
        return Err("the two passwords differ; nothing was changed".into());
    }
    Ok(first)
}

/// One line from the terminal with echo off (`rero login` asks with it too).
pub fn read_hidden(prompt: &str) -> Result<String, Error> {
    let fd = libc::STDIN_FILENO;
    let mut saved = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: tcgetattr writes a termios for the valid fd 0 into `saved`.
    if unsafe { libc::tcgetattr(fd, saved.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: tcgetattr succeeded, so `saved` is initialised.
    let saved = unsafe { saved.assume_init() };
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    eprint!("{prompt}");
    // SAFETY: both calls pass a valid fd and a valid termios.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    // SAFETY: restores the settings read above, on the same valid fd.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
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
            parse(&["user", "add", "boss@lab.example", "--admin"]),
            Ok(Command::User {
                config: None,
                action: UserAction::Add { email: "boss@lab.example".into(), admin: true }
            })
        );
        assert_eq!(
            parse(&["--config", "c.toml", "user", "passwd", "ada@lab.example"]),
            Ok(Command::User {
                config: Some("c.toml".into()),
                action: UserAction::Passwd { email: "ada@lab.example".into() }
            })
        );
        assert_eq!(
            parse(&["user", "import", "class.csv"]),
            Ok(Command::User { config: None, action: UserAction::Import { file: "class.csv".into() } })
        );
        assert!(parse(&["user", "import", "class.csv", "--admin"]).is_err());
        assert!(parse(&["user", "add"]).is_err());
        assert!(parse(&["user", "remove", "a@b.c"]).is_err());
        assert!(parse(&["user", "passwd", "a@b.c", "--admin"]).is_err());
        assert!(parse(&["--admin"]).is_err());
        assert_eq!(
            parse(&["export", "--with-hashes", "--config", "c.toml"]),
            Ok(Command::Export { config: Some("c.toml".into()), with_hashes: true })
        );
    }
}
