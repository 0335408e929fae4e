//! The `rerod` binary: parse the command line, run, and turn a failure into a
//! message and an exit code (the only place that does).

use std::process::ExitCode;

fn main() -> ExitCode {
    let command = match rerod::cli::parse_args(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(usage) => {
            eprintln!("rerod: {usage}");
            return ExitCode::from(2);
        }
    };
    match rerod::cli::run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rerod: {error}");
            ExitCode::FAILURE
        }
    }
}
