//! Starting an external tool (a compiler, a flashing program) so that
//! nothing it starts can outlive it.
//!
//! The tool runs in a process group of its own: a helper it forks (avrdude's
//! programmer daemons, a compiler's sub-processes) shares the group, so
//! killing the group on cancel, timeout or completion stops them all and
//! frees the serial port and the pipes.

use std::process::Stdio;

use crate::reset::kill_process_group;

/// `program args…` with stdin from /dev/null, stdout and stderr piped, in a
/// new process group, and killed if the handle is dropped while it runs.
pub fn command(program: &str, args: &[String]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    command
}

/// A started tool's process group, killed (SIGKILL) when this is dropped.
/// The group id stays taken while any member lives, so this cannot hit a
/// stranger; with no member left the kill is a harmless ESRCH.
#[derive(Debug)]
pub struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    /// The group of a child started with [`command`] (its own pid).
    pub fn of(child: &tokio::process::Child) -> ProcessGroup {
        ProcessGroup(child.id())
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            kill_process_group(pgid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_the_group_stops_what_the_tool_started() {
        // The tool starts a long sleep in the background and exits at once.
        let script = "sleep 30 >/dev/null 2>&1 & echo $!".to_owned();
        let child = command("sh", &["-c".to_owned(), script]).spawn().expect("sh starts");
        let group = ProcessGroup::of(&child);
        let output = child.wait_with_output().await.expect("sh finishes");
        let sleeper: libc::pid_t = String::from_utf8_lossy(&output.stdout).trim().parse().expect("a pid");
        // SAFETY: signal 0 only checks that the process exists.
        assert_eq!(unsafe { libc::kill(sleeper, 0) }, 0, "the helper outlived its tool");
        drop(group);
        let gone = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            // SAFETY: as above; a zombie still counts, so also check its state.
            let alive = unsafe { libc::kill(sleeper, 0) } == 0;
            !alive || std::fs::read_to_string(format!("/proc/{sleeper}/stat")).is_ok_and(|s| s.contains(") Z "))
        });
        assert!(gone, "the helper survived its group being killed");
    }
}
