//! Resetting a board into its bootloader: a DTR/RTS pulse (Arduino auto-reset) or a configured command.
//!
//! A port without modem lines (a pty, some adapters) cannot pulse DTR. That
//! is reported as a note, not an error: such a board is reset some other way
//! (reset-on-open, a command) and the uploader just tries to sync.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cancel::CancelToken;
use crate::link::SerialLink;

// Defined in `error` with the upload errors that wrap it; re-exported so
// `reset::ResetError` names it beside the method it comes from.
pub use crate::error::ResetError;

/// How a device's board gets into its bootloader.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ResetMethod {
    /// Pulse DTR/RTS: an Arduino's auto-reset capacitor turns the edge into a reset.
    #[default]
    Dtr,
    /// Run this argv (no shell), e.g. `["usbreset", "2341:0043"]` or a GPIO tool.
    Command(Vec<String>),
    /// Nothing: the board resets on open, or stays in its bootloader.
    None,
}

/// How long DTR is released before it is asserted again. avrdude uses
/// 250 ms; 100 ms recharges the auto-reset capacitor on every board we know
/// of, and the saving counts on every upload.
pub const DTR_RELEASE: Duration = Duration::from_millis(100);
/// Optiboot starts ~65 ms after reset (the Uno's start-up delay fuse), so
/// bytes sent earlier are lost: wait this long after the pulse.
pub const DTR_SETTLE: Duration = Duration::from_millis(50);
/// A reset command that takes longer than this is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

impl ResetMethod {
    /// Resets the board. `link` is the open port (needed for DTR). Returns a
    /// note for the upload log when the reset could not be done as asked but
    /// that need not be fatal (no modem lines).
    pub fn run(&self, link: Option<&mut dyn SerialLink>, cancel: &CancelToken) -> Result<Option<String>, ResetError> {
        match self {
            ResetMethod::None => Ok(None),
            ResetMethod::Dtr => match link {
                None => Ok(Some("DTR reset skipped: the port is not open".to_owned())),
                Some(link) => pulse_dtr(link, cancel),
            },
            ResetMethod::Command(argv) => run_command(argv, COMMAND_TIMEOUT, cancel).map(|()| None),
        }
    }
}

fn pulse_dtr(link: &mut dyn SerialLink, cancel: &CancelToken) -> Result<Option<String>, ResetError> {
    match link.set_dtr_rts(false) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOTTY) || e.kind() == std::io::ErrorKind::Unsupported => {
            let note = format!(
                "DTR reset not possible: the port has no modem lines ({e}); relying on reset-on-open or the bootloader being active"
            );
            tracing::info!(error = %e, "port has no DTR line; reset skipped");
            return Ok(Some(note));
        }
        Err(e) => return Err(ResetError::Dtr(e)),
    }
    if cancel.wait_blocking(DTR_RELEASE) {
        return Err(ResetError::Cancelled);
    }
    link.set_dtr_rts(true).map_err(ResetError::Dtr)?;
    if cancel.wait_blocking(DTR_SETTLE) {
        return Err(ResetError::Cancelled);
    }
    Ok(None)
}

/// Runs `argv` in its own process group, killing the group on timeout or cancel.
pub fn run_command(argv: &[String], timeout: Duration, cancel: &CancelToken) -> Result<(), ResetError> {
    let (program, args) = argv.split_first().ok_or(ResetError::EmptyCommand)?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|source| ResetError::Spawn { program: program.clone(), source })?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => return Err(ResetError::Spawn { program: program.clone(), source }),
        }
        let stop = if cancel.is_cancelled() {
            Some(ResetError::Cancelled)
        } else if Instant::now() >= deadline {
            Some(ResetError::Timeout { program: program.clone(), timeout })
        } else {
            None
        };
        if let Some(err) = stop {
            kill_process_group(child.id());
            let _ = child.wait();
            return Err(err);
        }
        // Reset commands finish in milliseconds; polling at 5 ms keeps the
        // reset-to-sync gap short without a waiter thread.
        cancel.wait_blocking(Duration::from_millis(5));
    };
    if status.success() {
        return Ok(());
    }
    let mut output = String::new();
    for pipe in [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read>),
        child.stderr.take().map(|p| Box::new(p) as _),
    ]
    .into_iter()
    .flatten()
    {
        let mut buf = Vec::new();
        let _ = pipe.take(4096).read_to_end(&mut buf);
        output.push_str(String::from_utf8_lossy(&buf).trim());
    }
    Err(ResetError::Failed { program: program.clone(), status: status.to_string(), output })
}

/// SIGKILL to a whole process group (a tool and anything it started).
pub fn kill_process_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else { return };
    // SAFETY: killpg has no memory-safety preconditions; an ESRCH (group
    // already gone) is the expected outcome when the tool exited meanwhile.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[derive(Default)]
    struct Lines {
        calls: Vec<bool>,
        no_modem_lines: bool,
    }

    impl SerialLink for Lines {
        fn read_timeout(&mut self, _: &mut [u8], _: Duration) -> io::Result<usize> {
            Ok(0)
        }
        fn write_all(&mut self, _: &[u8]) -> io::Result<()> {
            Ok(())
        }
        fn discard_input(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn set_dtr_rts(&mut self, asserted: bool) -> io::Result<()> {
            if self.no_modem_lines {
                return Err(io::Error::from_raw_os_error(libc::ENOTTY));
            }
            self.calls.push(asserted);
            Ok(())
        }
    }

    #[test]
    fn dtr_is_released_then_asserted() {
        let mut lines = Lines::default();
        let note = ResetMethod::Dtr.run(Some(&mut lines), &CancelToken::new()).expect("reset");
        assert_eq!(note, None);
        assert_eq!(lines.calls, [false, true]);
    }

    #[test]
    fn a_port_without_modem_lines_is_a_note_not_an_error() {
        let mut lines = Lines { no_modem_lines: true, ..Lines::default() };
        let note = ResetMethod::Dtr.run(Some(&mut lines), &CancelToken::new()).expect("not fatal");
        assert!(note.is_some_and(|n| n.contains("no modem lines")));
    }

    #[test]
    fn command_success_failure_and_missing_program() {
        let cancel = CancelToken::new();
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        ResetMethod::Command(argv(&["true"])).run(None, &cancel).expect("true succeeds");
        let err = ResetMethod::Command(argv(&["sh", "-c", "echo board busy >&2; exit 3"]))
            .run(None, &cancel)
            .expect_err("exit 3");
        assert!(err.to_string().contains("board busy") && err.to_string().contains('3'), "{err}");
        let err = ResetMethod::Command(argv(&["/nonexistent/reset-tool"])).run(None, &cancel).expect_err("missing");
        assert!(matches!(err, ResetError::Spawn { .. }), "{err}");
        let err = ResetMethod::Command(vec![]).run(None, &cancel).expect_err("empty");
        assert!(matches!(err, ResetError::EmptyCommand));
    }

    #[test]
    fn a_hanging_command_is_killed_at_its_timeout() {
        let start = Instant::now();
        let err = run_command(&["sleep".into(), "30".into()], Duration::from_millis(200), &CancelToken::new())
            .expect_err("times out");
        assert!(matches!(err, ResetError::Timeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn cancel_stops_a_running_command() {
        let cancel = CancelToken::new();
        let other = cancel.clone();
        let t =
            std::thread::spawn(move || run_command(&["sleep".into(), "30".into()], Duration::from_secs(60), &other));
        cancel.cancel();
        let result = t.join().expect("thread");
        assert!(matches!(result, Err(ResetError::Cancelled)));
    }
}
