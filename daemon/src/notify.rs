//! The systemd notify protocol (`sd_notify(3)`), spoken directly: readiness,
//! status lines, watchdog pings, reload and stop announcements as datagrams
//! on `$NOTIFY_SOCKET`.
//!
//! The protocol is small and declared stable by systemd, so a crate would buy
//! nothing. Everything here is a no-op when rerod is not started by systemd
//! (no `NOTIFY_SOCKET`), so callers never need to ask. Nothing here changes
//! the process environment: unsetting `NOTIFY_SOCKET` would race with other
//! threads reading the environment, and children we spawn (upload tools) are
//! started with an explicit environment anyway.

use std::ffi::OsString;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::Duration;

/// Where notifications go: `$NOTIFY_SOCKET`, or nowhere.
#[derive(Clone, Debug)]
pub struct Notifier {
    target: Option<Target>,
}

/// A notify socket address, as `$NOTIFY_SOCKET` spells it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    /// A socket file, e.g. `/run/systemd/notify`.
    Path(PathBuf),
    /// A Linux abstract socket, written `@name` (the `@` stands for the leading NUL).
    Abstract(Vec<u8>),
}

impl Notifier {
    /// The notifier systemd asked for, or a disabled one when `NOTIFY_SOCKET`
    /// is unset or names a kind of socket rerod does not speak (e.g. `vsock:`).
    pub fn from_env() -> Notifier {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(value) => Notifier::from_socket_value(value),
            None => Notifier::disabled(),
        }
    }

    /// A notifier for the given `NOTIFY_SOCKET` value: a path, or `@name` for
    /// an abstract socket. Tests point this at a socket of their own.
    pub fn from_socket_value(value: impl Into<OsString>) -> Notifier {
        use std::os::unix::ffi::OsStringExt;
        let bytes = value.into().into_vec();
        let target = match bytes.first() {
            Some(b'/') => Some(Target::Path(PathBuf::from(OsString::from_vec(bytes)))),
            Some(b'@') if bytes.len() > 1 => Some(Target::Abstract(bytes[1..].to_vec())),
            _ => {
                tracing::warn!(
                    notify_socket = %String::from_utf8_lossy(&bytes),
                    "NOTIFY_SOCKET is neither a path nor an @abstract socket; systemd notifications are off"
                );
                None
            }
        };
        Notifier { target }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier { target: None }
    }

    /// Whether notifications go anywhere (rerod runs under a notify-aware manager).
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// `READY=1`: startup is finished and the listener accepts connections.
    /// Also ends a reload started with [`Notifier::reloading`].
    pub fn ready(&self) -> io::Result<()> {
        self.send("READY=1")
    }

    /// `READY=1` and a status line in one datagram, so `systemctl status`
    /// never shows a stale status next to the new state.
    pub fn ready_with_status(&self, status: &str) -> io::Result<()> {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)))
    }

    /// `STATUS=...`: the free-form line `systemctl status` shows.
    pub fn status(&self, status: &str) -> io::Result<()> {
        self.send(&format!("STATUS={}", one_line(status)))
    }

    /// `WATCHDOG=1`: proof of life, due every [`watchdog_interval`].
    pub fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }

    /// `RELOADING=1` with the `MONOTONIC_USEC` timestamp systemd requires to
    /// tell this reload from an older one (mandatory for `Type=notify-reload`).
    /// Follow it with [`Notifier::ready`] once the new config is in force or
    /// was rejected; until then systemd shows the unit as "reloading".
    pub fn reloading(&self) -> io::Result<()> {
        if !self.is_enabled() {
            return Ok(());
        }
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()?))
    }

    /// `STOPPING=1`: shutdown has begun, so systemd shows "deactivating"
    /// while connections drain and the store flushes.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1")
    }

    /// Sends one datagram of newline-separated `KEY=VALUE` assignments.
    /// A no-op when notifications are off.
    pub fn send(&self, state: &str) -> io::Result<()> {
        let Some(target) = &self.target else { return Ok(()) };
        let address = match target {
            Target::Path(path) => SocketAddr::from_pathname(path)?,
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)?
            }
        };
        // A fresh unbound socket per message: notifications are rare (a watchdog
        // ping every few seconds at most), and holding no socket means nothing
        // to share between threads or to recreate after an error.
        let socket = UnixDatagram::unbound()?;
        let sent = socket.send_to_addr(state.as_bytes(), &address)?;
        if sent != state.len() {
            // Datagrams are all-or-nothing; a short count would mean a truncated message.
            return Err(io::Error::new(io::ErrorKind::WriteZero, "notify datagram was truncated"));
        }
        Ok(())
    }
}

impl Notifier {
    /// Sends `WATCHDOG=1` every `interval` (see [`watchdog_interval`]) for as
    /// long as the future is polled, but only on ticks where `healthy()` says
    /// so: a daemon whose store stopped answering should stop feeding the
    /// watchdog and be restarted, not be kept alive by a timer task that
    /// still runs. `healthy` runs on the runtime, so it must be quick.
    pub async fn feed_watchdog(&self, interval: Duration, mut healthy: impl FnMut() -> bool) {
        let mut ticks = tokio::time::interval(interval);
        // After a stall, one ping is enough; a burst of catch-up pings would hide it.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if !healthy() {
                tracing::warn!("health check failed; not feeding the systemd watchdog");
                continue;
            }
            if let Err(error) = self.watchdog() {
                tracing::warn!(%error, "cannot send the systemd watchdog ping");
            }
        }
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, as `sd_watchdog_enabled(3)`
/// recommends, so one late ping does not get rerod killed. `None` when the
/// watchdog is off, or when `WATCHDOG_PID` names another process (the
/// variables were inherited, not meant for us).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`watchdog_interval`] on given values, so tests need not touch the environment.
fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&usec| usec > 0)?;
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(our_pid)
    {
        return None;
    }
    Some(Duration::from_micros(usec / 2))
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares
/// `MONOTONIC_USEC` against. `std::time::Instant` uses the same clock on Linux
/// but does not expose its value, hence libc.
pub fn monotonic_usec() -> io::Result<u64> {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let secs = u64::try_from(now.tv_sec).map_err(|_| io::Error::other("CLOCK_MONOTONIC is negative"))?;
    let nanos = u64::try_from(now.tv_nsec).map_err(|_| io::Error::other("CLOCK_MONOTONIC is negative"))?;
    Ok(secs * 1_000_000 + nanos / 1_000)
}

/// A status text fit for one `STATUS=` assignment: a newline would start a
/// new assignment and let the text forge other fields.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket playing systemd's part, in a temp dir of its own.
    struct Manager {
        _dir: tempfile::TempDir,
        socket: UnixDatagram,
        path: PathBuf,
    }

    impl Manager {
        fn new() -> Manager {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("notify");
            let socket = UnixDatagram::bind(&path).unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            Manager { _dir: dir, socket, path }
        }

        fn notifier(&self) -> Notifier {
            Notifier::from_socket_value(self.path.clone())
        }

        fn recv(&self) -> String {
            let mut buf = [0u8; 4096];
            let n = self.socket.recv(&mut buf).unwrap();
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }
    }

    #[test]
    fn sends_each_state_as_one_datagram() {
        let manager = Manager::new();
        let notifier = manager.notifier();
        assert!(notifier.is_enabled());
        notifier.ready().unwrap();
        assert_eq!(manager.recv(), "READY=1");
        notifier.status("serving 3 devices").unwrap();
        assert_eq!(manager.recv(), "STATUS=serving 3 devices");
        notifier.watchdog().unwrap();
        assert_eq!(manager.recv(), "WATCHDOG=1");
        notifier.stopping().unwrap();
        assert_eq!(manager.recv(), "STOPPING=1");
        notifier.ready_with_status("config generation 2").unwrap();
        assert_eq!(manager.recv(), "READY=1\nSTATUS=config generation 2");
    }

    #[test]
    fn reloading_carries_the_monotonic_clock() {
        let manager = Manager::new();
        let before = monotonic_usec().unwrap();
        manager.notifier().reloading().unwrap();
        let after = monotonic_usec().unwrap();
        let message = manager.recv();
        let (first, second) = message.split_once('\n').unwrap();
        assert_eq!(first, "RELOADING=1");
        let usec: u64 = second.strip_prefix("MONOTONIC_USEC=").unwrap().parse().unwrap();
        assert!((before..=after).contains(&usec), "{before} <= {usec} <= {after}");
    }

    #[test]
    fn a_status_cannot_forge_other_assignments() {
        let manager = Manager::new();
        manager.notifier().status("bad\nREADY=1").unwrap();
        assert_eq!(manager.recv(), "STATUS=bad READY=1");
    }

    #[test]
    fn abstract_sockets() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("rerod-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&address).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Notifier::from_socket_value(format!("@{name}")).ready().unwrap();
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn disabled_notifiers_send_nothing_and_succeed() {
        for notifier in
            [Notifier::disabled(), Notifier::from_socket_value("vsock:2:1234"), Notifier::from_socket_value("")]
        {
            assert!(!notifier.is_enabled());
            notifier.ready().unwrap();
            notifier.reloading().unwrap();
            notifier.status("x").unwrap();
        }
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let notifier = Notifier::from_socket_value(dir.path().join("gone"));
        assert!(notifier.ready().is_err());
    }

    #[test]
    fn the_watchdog_is_fed_only_while_healthy() {
        let manager = Manager::new();
        let notifier = manager.notifier();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut checks = 0;
        runtime.block_on(async {
            let receiver = tokio::net::UnixDatagram::from_std({
                manager.socket.set_nonblocking(true).unwrap();
                manager.socket.try_clone().unwrap()
            })
            .unwrap();
            // Every second check fails, so two pings take at least three checks.
            let feed = notifier.feed_watchdog(Duration::from_millis(1), || {
                checks += 1;
                checks != 2
            });
            let two_pings = async {
                let mut buf = [0u8; 64];
                for _ in 0..2 {
                    let n = receiver.recv(&mut buf).await.unwrap();
                    assert_eq!(&buf[..n], b"WATCHDOG=1");
                }
            };
            tokio::select! {
                () = feed => unreachable!("feeding never ends by itself"),
                () = two_pings => {}
            }
        });
        assert!(checks >= 3, "{checks} checks");
    }

    #[test]
    fn watchdog_interval_is_half_of_what_systemd_allows() {
        assert_eq!(watchdog_interval_from(Some("30000000"), None, 42), Some(Duration::from_secs(15)));
        assert_eq!(watchdog_interval_from(Some("30000000"), Some("42"), 42), Some(Duration::from_secs(15)));
        // Inherited from a parent the watchdog was meant for.
        assert_eq!(watchdog_interval_from(Some("30000000"), Some("41"), 42), None);
        assert_eq!(watchdog_interval_from(Some("30000000"), Some("x"), 42), None);
        assert_eq!(watchdog_interval_from(None, Some("42"), 42), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, 42), None);
    }
}
