//! The command line, parsed with clap: `rerod [--config FILE]` serves;
//! `rerod check-config FILE` validates; `rerod backup` and `rerod export`
//! read the store; `rerod user ...` manages accounts through the running
//! daemon's control socket; `rerod completions` and `rerod man` describe the
//! command line itself. Only `main` turns an error into an exit code and a
//! message.

use std::path::PathBuf;

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{Config, Env};
use crate::wire::{ControlRequest, ControlResponse};

/// rerod, the remote-lab hardware booking daemon: students book an hour on a
/// robot board, then flash it and use its serial console.
///
/// With no command, rerod serves (with the built-in defaults when no config
/// file is given).
#[derive(Debug, Parser)]
#[command(
    name = "rerod",
    version,
    propagate_version = true,
    after_help = "Environment (overrides the file): HOST, PORT, LOG_LEVEL, DATABASE_PATH, DATABASE_URL, JWT_SECRET_KEY, \
                  JWT_ALGORITHM, JWT_EXPIRE_MINUTES, BCRYPT_ROUNDS"
)]
pub struct Cli {
    /// The config file (TOML); every key is optional.
    #[arg(short, long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve the demo lab: one simulated Uno built into rerod, open
    /// registration, its own store (data/demo/). Nothing to plug in; never
    /// with --config. With `user ...`, reach the running demo lab.
    #[arg(long, global = true, conflicts_with = "config")]
    pub demo: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve the lab (what rerod does with no command).
    Serve,
    /// Validate a config file and exit.
    CheckConfig {
        /// The config file to check.
        file: PathBuf,
    },
    /// Copy the store, consistently, while rerod runs.
    Backup {
        /// Where to write the copy.
        #[arg(short, long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print users and bookings as JSON.
    Export {
        /// Include the password hashes.
        #[arg(long)]
        with_hashes: bool,
    },
    /// Manage accounts through the running daemon.
    ///
    /// `add` and `passwd` read the password from the terminal (not echoed,
    /// asked twice), or from the first line of stdin when stdin is not a
    /// terminal; never from the command line. Run as root or as rerod's user,
    /// with the same --config or DATABASE_PATH as the running daemon.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Work on a store as a whole (no daemon may have it open).
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

/// What `rerod user` does.
#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum UserAction {
    /// Create an account.
    Add {
        /// The account's e-mail address.
        email: String,
        /// Make it a lab admin.
        #[arg(long)]
        admin: bool,
    },
    /// Set an account's password.
    Passwd {
        /// The account's e-mail address.
        email: String,
    },
    /// Create an account for each row of a CSV class list.
    ///
    /// Each row has an e-mail address and optionally a password. Prints
    /// `email,password` of each account made, with passwords generated where
    /// the file has none; refused rows are reported on stderr and make the
    /// command fail.
    Import {
        /// The CSV file (`-`: stdin).
        #[arg(value_name = "FILE.csv")]
        file: PathBuf,
    },
}

/// What `rerod store` does.
#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum StoreAction {
    /// Copy a lab's store into a new one: accounts with their password
    /// hashes, bookings, maintenance, the audit log and the JWT secret.
    ///
    /// Each store is a redb file's path or a PostgreSQL URL
    /// (postgres://USER@HOST/DB): from one host's file to the database a
    /// lab of several hosts shares, or back. Stop the daemons first. The
    /// target must be new: a file that does not exist, or a database with
    /// no accounts and no bookings.
    Copy {
        /// The store to read.
        #[arg(long, value_name = "PATH|URL")]
        from: String,
        /// The new store to write.
        #[arg(long, value_name = "PATH|URL")]
        to: String,
    },
}

/// A failure to report to the person who ran rerod.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Runs a command to completion.
pub fn run(cli: Cli) -> Result<(), Error> {
    let (config, demo) = (cli.config, cli.demo);
    // The settings of the lab a host command works on: the demo's, the file's, or the defaults.
    let load = |config: Option<&Path>| -> Result<Config, Error> {
        if demo {
            // Only the store's place matters here; the board is the running daemon's.
            return Ok(crate::demo::config(Path::new("/dev/null"), &Env::from_process())?);
        }
        Ok(Config::load(config, &Env::from_process())?)
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve if demo => serve_demo(),
        Command::Serve => serve(config),
        Command::CheckConfig { file } => {
            let config = Config::load(Some(&file), &Env::from_process())?;
            let line = format!(
                "{}: ok ({} devices, listen {}, store {})\n",
                file.display(),
                config.devices.len(),
                config.server.listen,
                config.store.path.display()
            );
            print_stdout(line.as_bytes())
        }
        Command::Backup { out } => {
            let config = load(config.as_deref())?;
            refuse_shared_store(&config, "pg_dump, or `rerod store copy --from URL --to FILE.redb`")?;
            let copied = match crate::store::backup(&config.store.path, &out) {
                Ok(counts) => format!("{} users, {} bookings", counts.users, counts.bookings),
                // The running daemon holds its file: it takes the copy itself.
                Err(e) if e.is_held() => backup_through_daemon(&crate::control::socket_path(&config.store.path), &out)?,
                Err(e) => return Err(e.into()),
            };
            eprintln!("backed up {} to {}: {copied}", config.store.path.display(), out.display());
            Ok(())
        }
        Command::User { action } => {
            let config = load(config.as_deref())?;
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
        Command::Export { with_hashes } => {
            let config = load(config.as_deref())?;
            refuse_shared_store(
                &config,
                "`rerod store copy --from URL --to FILE.redb`, then export with DATABASE_PATH=FILE.redb",
            )?;
            match crate::store::snapshot(&config.store.path) {
                Ok(snapshot) => {
                    let mut json = serde_json::to_string_pretty(&crate::wire::export(&snapshot, with_hashes))?;
                    json.push('\n');
                    print_stdout(json.as_bytes())
                }
                // The running daemon holds its file: it reads the snapshot itself.
                Err(e) if e.is_held() => {
                    let socket = crate::control::socket_path(&config.store.path);
                    let request = ControlRequest::Export { with_hashes };
                    let (_, length, payload) = ask_daemon_for_payload(&socket, &request)?;
                    let mut json = Vec::new();
                    payload.take(length).read_to_end(&mut json)?;
                    if json.len() as u64 != length {
                        return Err("the daemon's export ended early; nothing was printed".into());
                    }
                    print_stdout(&json)
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Store { action: StoreAction::Copy { from, to } } => {
            let copied = crate::store::copy(&from, &to)?;
            // A URL may carry a password: the message names neither store.
            eprintln!(
                "copied {} accounts, {} bookings, {} maintenance records and {} audit entries",
                copied.users, copied.bookings, copied.maintenance, copied.audit
            );
            Ok(())
        }
        Command::Completions { shell } => {
            // Generated whole first: clap_complete panics on a failed write,
            // and a reader such as `head` may go away before the end.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "rerod", &mut script);
            print_stdout(&script)
        }
        Command::Man => {
            let mut page = Vec::new();
            // Section 8: a system daemon and its administration commands.
            clap_mangen::Man::new(Cli::command()).section("8").render(&mut page)?;
            print_stdout(&page)
        }
    }
}

/// `backup` and `export` read the redb file: with `store.url` set, the
/// lab's data is in PostgreSQL, and `instead` says what to use.
fn refuse_shared_store(config: &Config, instead: &str) -> Result<(), Error> {
    match config.store.url {
        Some(_) => {
            Err(format!("the store is the PostgreSQL database of store.url (or DATABASE_URL): use {instead}").into())
        }
        None => Ok(()),
    }
}

/// Writes `bytes` to stdout. A reader that stopped reading (`rerod man |
/// head`) has what it wanted: that is not a failure.
fn print_stdout(bytes: &[u8]) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => Ok(result?),
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

/// `rerod --demo`: the simulated board first, then the lab around it.
fn serve_demo() -> Result<(), Error> {
    let env = Env::from_process();
    let board = crate::demo::start().map_err(|e| format!("cannot start the demo board (no pseudo-terminal): {e}"))?;
    let config = crate::demo::config(&board.path, &env)?;
    let logs = crate::logging::init(&config.log);
    raise_open_file_limit();
    tracing::info!(
        port = %board.path.display(),
        store = %config.store.path.display(),
        "demo lab: one simulated Uno (demo-1); register in the web app, book the current slot, upload a .hex"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("rerod-worker").build()?;
    runtime.block_on(crate::runtime::run(config, None, env, logs.level_control()))
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

/// Has the running daemon copy its store into a new file `out` (mode 0600,
/// written beside it and renamed into place when whole); says what it holds.
fn backup_through_daemon(socket: &Path, out: &Path) -> Result<String, Error> {
    crate::store::refuse_existing(out)?;
    let (copied, length, mut payload) = ask_daemon_for_payload(socket, &ControlRequest::Backup)?;
    let partial = out.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    let written = std::io::copy(&mut (&mut payload).take(length), &mut file)
        .and_then(|n| file.sync_all().map(|()| n))
        .map_err(|e| format!("writing {}: {e}", partial.display()));
    let whole = match written {
        Ok(n) if n == length => Ok(()),
        Ok(_) => Err("the daemon's backup ended early".to_owned()),
        Err(e) => Err(e),
    };
    if let Err(e) = whole {
        let _ = std::fs::remove_file(&partial);
        return Err(e.into());
    }
    std::fs::rename(&partial, out).map_err(|e| format!("cannot move the backup into place: {e}"))?;
    Ok(copied)
}

/// Sends a request whose answer carries a payload (a backup, an export);
/// returns what the daemon said of it, its length and the stream it follows on.
fn ask_daemon_for_payload(
    path: &Path,
    request: &ControlRequest,
) -> Result<(String, u64, BufReader<UnixStream>), Error> {
    let (response, stream) = ask_daemon_stream(path, request)?;
    match (response.success, response.length) {
        (true, Some(length)) => Ok((response.message, length, stream)),
        (true, None) => Err("unexpected answer from the daemon: no payload".into()),
        (false, _) => Err(response.message.into()),
    }
}

/// Sends one request over the control socket at `path` and reads the answer.
fn ask_daemon(path: &Path, request: &ControlRequest) -> Result<ControlResponse, Error> {
    Ok(ask_daemon_stream(path, request)?.0)
}

/// Sends one request and reads the answer's line; what follows it is left in the stream.
fn ask_daemon_stream(path: &Path, request: &ControlRequest) -> Result<(ControlResponse, BufReader<UnixStream>), Error> {
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
    let mut stream = BufReader::new(stream);
    stream.read_line(&mut answer)?;
    let response = serde_json::from_str(&answer).map_err(|e| format!("unexpected answer from the daemon: {e}"))?;
    Ok((response, stream))
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
    let first = crate::terminal::read_hidden(prompt)?;
    let second = crate::terminal::read_hidden("Again: ")?;
    if first != second {
        return Err("the two passwords differ; nothing was changed".into());
    }
    Ok(first)
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

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("rerod").chain(args.iter().copied()))
    }

    #[test]
    fn the_demo_takes_no_config_file() {
        assert!(parse(&["--demo"]).is_ok_and(|cli| cli.demo && cli.config.is_none()));
        assert!(parse(&["--demo", "user", "add", "a@b.c"]).is_ok_and(|cli| cli.demo));
        let error = parse(&["--demo", "--config", "a.toml"]).map(|_| ()).expect_err("refused");
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    /// (config, command) of a command line that parses.
    fn parsed(args: &[&str]) -> (Option<PathBuf>, Option<Command>) {
        let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        (cli.config, cli.command)
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn arguments() {
        assert_eq!(parsed(&[]), (None, None));
        assert_eq!(parsed(&["--config", "a.toml"]), (Some("a.toml".into()), None));
        assert_eq!(parsed(&["--config=a.toml"]), (Some("a.toml".into()), None));
        assert_eq!(parsed(&["-c", "a.toml", "serve"]), (Some("a.toml".into()), Some(Command::Serve)));
        assert_eq!(parsed(&["check-config", "a.toml"]), (None, Some(Command::CheckConfig { file: "a.toml".into() })));
        assert!(parse(&["--config"]).is_err());
        assert!(parse(&["frobnicate"]).is_err());
        assert_eq!(parsed(&["backup", "--out", "b.redb"]), (None, Some(Command::Backup { out: "b.redb".into() })));
        assert_eq!(parsed(&["backup", "-o", "b.redb"]), (None, Some(Command::Backup { out: "b.redb".into() })));
        assert!(parse(&["backup"]).is_err());
        assert_eq!(
            parsed(&["user", "add", "boss@lab.example", "--admin"]),
            (None, Some(Command::User { action: UserAction::Add { email: "boss@lab.example".into(), admin: true } }))
        );
        // The daemon's own flags go anywhere, as the black-box tests and
        // systemd units pass them.
        assert_eq!(
            parsed(&["user", "passwd", "ada@lab.example", "--config", "c.toml"]),
            (
                Some("c.toml".into()),
                Some(Command::User { action: UserAction::Passwd { email: "ada@lab.example".into() } })
            )
        );
        assert_eq!(
            parsed(&["--config", "c.toml", "user", "passwd", "ada@lab.example"]).0,
            Some(PathBuf::from("c.toml"))
        );
        assert_eq!(
            parsed(&["store", "copy", "--from", "a.redb", "--to", "postgres://rerod@db/lab"]),
            (
                None,
                Some(Command::Store {
                    action: StoreAction::Copy { from: "a.redb".into(), to: "postgres://rerod@db/lab".into() }
                })
            )
        );
        assert_eq!(
            parsed(&["user", "import", "class.csv"]),
            (None, Some(Command::User { action: UserAction::Import { file: "class.csv".into() } }))
        );
        assert!(parse(&["user", "import", "class.csv", "--admin"]).is_err());
        assert!(parse(&["user", "add"]).is_err());
        assert!(parse(&["user", "remove", "a@b.c"]).is_err());
        assert!(parse(&["user", "passwd", "a@b.c", "--admin"]).is_err());
        assert!(parse(&["--admin"]).is_err());
        assert!(parse(&["--with-hashes"]).is_err());
        assert_eq!(
            parsed(&["export", "--with-hashes", "--config", "c.toml"]),
            (Some("c.toml".into()), Some(Command::Export { with_hashes: true }))
        );
    }

    /// `--help` after a command asks for that command's help; it is never
    /// taken for an e-mail address or a file.
    #[test]
    fn help_is_help_wherever_it_is() {
        for args in [&["user", "add", "--help"][..], &["user", "--help"], &["--help"], &["check-config", "--help"]] {
            let error = parse(args).expect_err("help stops parsing");
            assert_eq!(error.kind(), clap::error::ErrorKind::DisplayHelp, "{args:?}");
        }
        assert_eq!(parse(&["--version"]).map(|_| ()).unwrap_err().kind(), clap::error::ErrorKind::DisplayVersion);
    }
}
