//! The `rerod` binary: parse the command line, run, and turn a failure into a
//! message and an exit code (the only place that does).

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = match rerod::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version go to stdout with 0; a usage error to stderr
            // with 2. A reader that went away before the help was printed
            // changes neither.
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    match rerod::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rerod: {error}");
            ExitCode::FAILURE
        }
    }
}
