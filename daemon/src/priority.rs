//! CPU priority for the daemon's background threads.
//!
//! Request handling runs at the daemon's own priority. The broadcast
//! fan-out, bulk work of a few milliseconds at a time, runs a little below
//! it (nice +5), so a request that arrives meanwhile is answered first.
//!
//! Password hashing is not lowered. A login is a person waiting, and each
//! takes about a quarter of a second of CPU at cost 12: below the requests'
//! priority, on a host saturated with reads, four students logging in
//! waited 3–5 s each; at it, 1.1–1.3 s (tests/bench/RESULTS.md). What
//! keeps bcrypt from stalling the rest is its thread count, one per two
//! cores, and its bounded queue. On a single-core host the one hashing
//! thread shares the core evenly with request handling while logins run:
//! requests slow down for that time, they do not stop.

/// How far below request handling a background thread runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Background {
    /// The WebSocket broadcast fan-out.
    FanOut,
}

impl Background {
    fn nice(self) -> libc::c_int {
        match self {
            Background::FanOut => 5,
        }
    }
}

/// Lowers the calling thread's priority to `level`, relative to the
/// daemon's. Best effort: a failure leaves the thread as it was.
pub fn lower_current_thread(level: Background) {
    // SAFETY: gettid and getpriority have no preconditions; setpriority on our
    // own thread id only changes this thread's nice value.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        let base = libc::getpriority(libc::PRIO_PROCESS, 0);
        libc::setpriority(libc::PRIO_PROCESS, tid, base.saturating_add(level.nice()).min(19));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_of(tid: libc::id_t) -> libc::c_int {
        // SAFETY: getpriority has no preconditions.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) }
    }

    #[test]
    fn lowers_only_the_calling_thread() {
        // SAFETY: gettid has no preconditions.
        let here = unsafe { libc::gettid() } as libc::id_t;
        let base = nice_of(here);
        let lowered = std::thread::spawn(move || {
            lower_current_thread(Background::FanOut);
            // SAFETY: as above.
            nice_of(unsafe { libc::gettid() } as libc::id_t)
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (base + 5).min(19));
        assert_eq!(nice_of(here), base, "the rest of the daemon keeps its priority");
    }
}
