//! `rero`, the lab from a terminal: log in, book, upload firmware and use a
//! board's serial console, speaking rerod's typed wire contract.
//!
//! `main` parses the command line, runs the command, and is the only place
//! that turns an error into a message and an exit code.

// Unit tests fail loudly: an unwrap that panics is the report.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod api;
mod calendar;
mod camera;
mod console;
mod credentials;
mod table;
// The password prompt, shared with `rerod user` as one source file rather
// than through a crate of its own.
#[path = "../../src/terminal.rs"]
mod terminal;
mod time;
mod upload;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use jiff::civil::Date;

use crate::api::Error;

/// The lab from a terminal: book a robot board, upload firmware, use its
/// serial console.
///
/// rero speaks plain http:// to rerod. A lab that serves rerod over TLS does
/// so through its own reverse proxy; from outside the lab's network, reach
/// rerod through an SSH tunnel (ssh -L 8000:localhost:8000 LABHOST) and use
/// --server http://localhost:8000.
#[derive(Debug, Parser)]
#[command(name = "rero", version, propagate_version = true)]
struct Cli {
    /// Print the server's answer as JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in and keep the token (XDG config dir, mode 0600).
    ///
    /// The password is read from the terminal without echo, or from the first
    /// line of stdin when stdin is not a terminal; never from the command line.
    Login {
        /// The account's e-mail address.
        email: String,
        /// rerod's address, plain http:// (default: $RERO_SERVER, the stored
        /// server, else http://localhost:8000).
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Create an account, then log in with it.
    ///
    /// The password is read from the terminal without echo (asked twice), or
    /// from the first line of stdin when stdin is not a terminal.
    Register {
        /// The new account's e-mail address.
        email: String,
        /// rerod's address, plain http:// (default: $RERO_SERVER, the stored
        /// server, else http://localhost:8000).
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Which lab rero talks to, who you are there, and your booking in progress or next.
    Status,
    /// Forget the stored server and token.
    Logout,
    /// List the lab's boards.
    Boards,
    /// Show a day's slots: time, state and holder.
    Slots(DayArgs),
    /// Book a slot: its number, its start time (HH:MM) or `now`.
    Book(SlotArgs),
    /// Cancel a booking: its slot number, start time (HH:MM) or `now`.
    Cancel(SlotArgs),
    /// List your bookings (upcoming and current).
    Bookings {
        /// Include bookings that have ended.
        #[arg(long)]
        history: bool,
    },
    /// Show a day's calendar live, as bookings change.
    Watch(DayArgs),
    /// Upload firmware (.hex, .bin) or a sketch (.ino, compiled by the lab).
    Upload {
        /// The file: Intel HEX (.hex), raw binary (.bin) or an Arduino sketch (.ino).
        file: PathBuf,
        #[command(flatten)]
        board: BoardArg,
    },
    /// Open the board's serial console (type ~. at the start of a line to quit).
    ///
    /// On a terminal it is interactive (raw mode). When stdin is not a
    /// terminal, stdin goes to the board and the board's output to stdout,
    /// until stdin closes or the session ends.
    Console {
        #[command(flatten)]
        board: BoardArg,
        /// Only the board's bytes: no connection, progress or warning lines.
        #[arg(long)]
        raw: bool,
    },
    /// Show the board's camera state, or save its picture (--snapshot FILE).
    ///
    /// The holder of the session in progress and admins may always; others
    /// as the camera's visibility admits them (a public camera needs no login).
    Camera {
        #[command(flatten)]
        board: BoardArg,
        /// Save the camera's newest picture (JPEG) to this file.
        #[arg(long, value_name = "FILE")]
        snapshot: Option<PathBuf>,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

/// Which board: its number or its id.
#[derive(Debug, Args)]
struct BoardArg {
    /// The board, by number or id (default: the board of your booking in
    /// progress, else the first).
    #[arg(long, value_name = "BOARD")]
    board: Option<String>,
}

#[derive(Debug, Args)]
struct DayArgs {
    /// The day, YYYY-MM-DD (default: today in the lab's time zone).
    #[arg(long, value_name = "YYYY-MM-DD")]
    date: Option<Date>,
    /// The board, by number or id (default: the first).
    #[arg(long, value_name = "BOARD")]
    board: Option<String>,
}

#[derive(Debug, Args)]
struct SlotArgs {
    /// The slot: its number, its start time (HH:MM), or `now` for the slot in progress.
    slot: String,
    #[command(flatten)]
    day: DayArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rero: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report(&error);
            ExitCode::FAILURE
        }
    }
}

/// One clear line on stderr; a failed compile shows the compiler's output first.
fn report(error: &Error) {
    let _ = std::io::stdout().flush();
    if let Error::Api { body, .. } = error
        && body.code == "compile_failed"
        && let Some((headline, output)) = body.detail.split_once('\n')
    {
        eprintln!("{}", output.trim_end());
        eprintln!("rero: {}", headline.trim_end_matches(':'));
        return;
    }
    eprintln!("rero: {error}");
}

async fn run(cli: Cli) -> Result<(), Error> {
    let json = cli.json;
    match cli.command {
        Command::Login { email, server } => credentials::login(&email, server.as_deref(), json).await,
        Command::Register { email, server } => credentials::register(&email, server.as_deref(), json).await,
        Command::Status => credentials::status(json).await,
        Command::Logout => credentials::logout(),
        Command::Boards => calendar::boards(&credentials::client()?, json).await,
        Command::Slots(day) => calendar::slots(&credentials::client()?, &day.into(), json).await,
        Command::Book(args) => calendar::book(&credentials::client()?, &args.slot, &args.day.into(), json).await,
        Command::Cancel(args) => calendar::cancel(&credentials::client()?, &args.slot, &args.day.into(), json).await,
        Command::Bookings { history } => calendar::bookings(&credentials::client()?, history, json).await,
        Command::Watch(day) => calendar::watch(&credentials::client()?, &day.into(), json).await,
        Command::Upload { file, board } => upload::upload(&credentials::client()?, &file, board.board, json).await,
        Command::Console { board, raw } => console::console(&credentials::client()?, board.board, raw).await,
        Command::Camera { board, snapshot } => {
            camera::camera(&credentials::client()?, board.board, snapshot.as_deref(), json).await
        }
        Command::Completions { shell } => {
            // Made whole first: clap_complete panics when a write to stdout fails.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "rero", &mut script);
            print_stdout(&script)
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut page).map_err(|e| Error::message(e.to_string()))?;
            print_stdout(&page)
        }
    }
}

/// Writes `bytes` to stdout. A reader that went away (`rero completions bash
/// | head -1`) has all it wanted: that is no error.
fn print_stdout(bytes: &[u8]) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.map_err(|e| Error::message(e.to_string())),
    }
}

impl From<DayArgs> for calendar::Day {
    fn from(args: DayArgs) -> calendar::Day {
        calendar::Day { date: args.date, board: args.board }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
