//! `DevicePort`: one owner at a time for a device's serial port — the console reader, or an upload holding a `PortLease`.
//!
//! Each device gets one `DevicePort`. It runs a dedicated thread that keeps
//! the port open while the board is there, reads its output into a
//! scrollback buffer and a broadcast channel, and takes the console's input.
//! An upload calls [`DevicePort::lease`]: the thread closes the port (so the
//! uploader, or an external tool, can open it) and reports `Leased`; dropping
//! the lease hands the port back and the console reopens it.
//!
//! Unplugging is not an error state to recover from by hand: a failed read
//! closes the port, the state turns `Offline`, and the thread tries to
//! reopen (resolving a USB match afresh) every `reopen_interval` until the
//! board is back.

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serialport::{SerialPort as _, TTYPort};
use tokio::sync::{broadcast, oneshot, watch};

use crate::cancel::CancelToken;
use crate::error::ResetError;
use crate::link::{READ_SLICE, SerialLink, TtyLink};
use crate::port::{PortError, PortSpec, open_port};
use crate::reset::ResetMethod;

/// How a device's console port is found and kept.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    pub spec: PortSpec,
    /// The console's baud rate (the program's, not the bootloader's).
    pub baud: u32,
    /// Bytes of recent output kept for clients that connect later.
    pub scrollback: usize,
    /// How often an offline port is tried again.
    pub reopen_interval: Duration,
}

impl ConsoleConfig {
    pub fn new(spec: PortSpec, baud: u32) -> ConsoleConfig {
        ConsoleConfig { spec, baud, scrollback: 10_000, reopen_interval: Duration::from_secs(1) }
    }
}

/// Who has the port, as far as the console knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortState {
    /// The thread has not tried to open the port yet.
    Starting,
    /// The console has the port open.
    Online { path: PathBuf },
    /// The port is missing or failed; it is retried every `reopen_interval`.
    Offline { reason: String },
    /// An upload holds the port; the console is paused.
    Leased,
}

impl PortState {
    /// Online for the lab's purposes: the console has it, or an upload does.
    pub fn is_online(&self) -> bool {
        matches!(self, PortState::Online { .. } | PortState::Leased)
    }
}

/// The handle to one device's port. Cheap to clone; the thread stops when
/// the last clone is dropped or [`DevicePort::shutdown`] is called.
#[derive(Debug, Clone)]
pub struct DevicePort {
    inner: Arc<Inner>,
}

struct Inner {
    io: Arc<PortIo>,
    commands: mpsc::Sender<Command>,
    // Held by the current lease; a second upload waits (or is refused by try_lease).
    lease_lock: Arc<tokio::sync::Mutex<()>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevicePort").field("port", &self.io.config.spec.to_string()).finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
    }
}

/// What the console thread shares with the handles.
struct PortIo {
    config: ConsoleConfig,
    // A second descriptor of the open port, so input is written at once
    // instead of waiting for the reader's next slice. None while closed.
    writer: Mutex<Option<TTYPort>>,
    console: Mutex<Scrollback>,
    state: watch::Sender<PortState>,
}

struct Scrollback {
    bytes: VecDeque<u8>,
    capacity: usize,
    tx: broadcast::Sender<Bytes>,
}

enum Command {
    Pause(oneshot::Sender<()>),
    Resume,
    Reset(ResetMethod, oneshot::Sender<Result<Option<String>, ResetError>>),
    Shutdown,
}

impl DevicePort {
    /// Starts the console thread for one device. It opens the port at once
    /// if it can; watch [`DevicePort::state`] for the outcome.
    pub fn spawn(config: ConsoleConfig) -> DevicePort {
        let (tx, _) = broadcast::channel(256);
        let io = Arc::new(PortIo {
            console: Mutex::new(Scrollback { bytes: VecDeque::new(), capacity: config.scrollback, tx }),
            writer: Mutex::new(None),
            state: watch::Sender::new(PortState::Starting),
            config,
        });
        let (commands, rx) = mpsc::channel();
        let thread_io = io.clone();
        let thread = std::thread::Builder::new()
            .name(format!("rerod-port {}", io.config.spec))
            .spawn(move || run(&thread_io, &rx))
            .map_err(|e| {
                let reason = format!("cannot start the port thread: {e}");
                io.state.send_replace(PortState::Offline { reason });
            })
            .ok();
        DevicePort {
            inner: Arc::new(Inner {
                io,
                commands,
                lease_lock: Arc::new(tokio::sync::Mutex::new(())),
                thread: Mutex::new(thread),
            }),
        }
    }

    pub fn config(&self) -> &ConsoleConfig {
        &self.inner.io.config
    }

    /// Port state changes (online, offline, leased).
    pub fn state(&self) -> watch::Receiver<PortState> {
        self.inner.io.state.subscribe()
    }

    pub fn current_state(&self) -> PortState {
        self.inner.io.state.borrow().clone()
    }

    /// The recent output (up to `scrollback` bytes) and a receiver for every
    /// byte after it, taken atomically: nothing is lost or repeated between
    /// the two. A receiver that falls behind gets `Lagged` and should resend
    /// the scrollback.
    pub fn subscribe(&self) -> (Bytes, broadcast::Receiver<Bytes>) {
        let console = lock(&self.inner.io.console);
        let (front, back) = console.bytes.as_slices();
        (Bytes::from([front, back].concat()), console.tx.subscribe())
    }

    /// Passes `data` on as if the board had printed it: for tests of what
    /// reads the console's output (a reader that falls behind, say).
    #[cfg(any(test, feature = "testkit"))]
    pub fn inject_output(&self, data: &[u8]) {
        self.inner.io.publish(data);
    }

    /// Forgets the recent output, so the next subscriber's scrollback starts
    /// from now: what one session's program printed is not shown to the next.
    pub fn clear_scrollback(&self) {
        lock(&self.inner.io.console).bytes.clear();
    }

    /// Sends input to the board. Fails while the port is offline or leased.
    pub async fn write(&self, data: Bytes) -> Result<(), PortError> {
        let io = self.inner.io.clone();
        tokio::task::spawn_blocking(move || io.write(&data)).await.map_err(|_| PortError::Closed)?
    }

    /// Takes the port from the console for an upload, waiting for a running
    /// upload to finish first. When this returns, the console has closed the
    /// port and `lease.path()` is the resolved path to open.
    pub async fn lease(&self) -> Result<PortLease, PortError> {
        let guard = self.inner.lease_lock.clone().lock_owned().await;
        self.pause(guard).await
    }

    /// Like [`DevicePort::lease`], but refuses with `Busy` while another upload runs.
    pub async fn try_lease(&self) -> Result<PortLease, PortError> {
        let guard = self.inner.lease_lock.clone().try_lock_owned().map_err(|_| PortError::Busy)?;
        self.pause(guard).await
    }

    async fn pause(&self, guard: tokio::sync::OwnedMutexGuard<()>) -> Result<PortLease, PortError> {
        let (ack, acked) = oneshot::channel();
        self.inner.commands.send(Command::Pause(ack)).map_err(|_| PortError::Closed)?;
        // Built before waiting, so a caller that gives up still resumes the console.
        let mut lease = PortLease { commands: self.inner.commands.clone(), path: PathBuf::new(), _guard: guard };
        acked.await.map_err(|_| PortError::Closed)?;
        lease.path = self.inner.io.config.spec.resolve()?;
        Ok(lease)
    }

    /// Resets the board (e.g. when a session ends). DTR is pulsed on the
    /// console's open port; while an upload holds the port only a command
    /// reset can act. Returns a note when the reset could not be done as asked.
    pub async fn reset(&self, method: ResetMethod) -> Result<Option<String>, ResetError> {
        let (reply, result) = oneshot::channel();
        self.inner.commands.send(Command::Reset(method, reply)).map_err(|_| ResetError::PortClosed)?;
        result.await.map_err(|_| ResetError::PortClosed)?
    }

    /// Stops the thread and closes the port; waits until it is closed.
    pub async fn shutdown(&self) {
        let _ = self.inner.commands.send(Command::Shutdown);
        let thread = lock(&self.inner.thread).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Exclusive use of a device's port for an upload. The console is paused
/// (its descriptor closed) until this is dropped.
#[derive(Debug)]
pub struct PortLease {
    commands: mpsc::Sender<Command>,
    path: PathBuf,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl PortLease {
    /// The port's path, resolved when the lease was taken.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        // Sent before the guard is released, so a waiting lease's Pause is queued after it.
        let _ = self.commands.send(Command::Resume);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PortIo {
    fn write(&self, data: &[u8]) -> Result<(), PortError> {
        let mut writer = lock(&self.writer);
        match writer.as_mut() {
            Some(port) => {
                std::io::Write::write_all(port, data).map_err(|e| PortError::Write { message: e.to_string() })
            }
            None => Err(match &*self.state.borrow() {
                PortState::Leased => PortError::Leased,
                PortState::Offline { reason } => {
                    PortError::Offline { port: self.config.spec.to_string(), reason: reason.clone() }
                }
                PortState::Starting | PortState::Online { .. } => {
                    PortError::Offline { port: self.config.spec.to_string(), reason: "not open yet".into() }
                }
            }),
        }
    }

    fn publish(&self, data: &[u8]) {
        let mut console = lock(&self.console);
        let console = &mut *console;
        console.bytes.extend(data);
        let excess = console.bytes.len().saturating_sub(console.capacity);
        console.bytes.drain(..excess);
        // No receivers is fine: nobody is watching the console right now.
        let _ = console.tx.send(Bytes::copy_from_slice(data));
    }

    fn set_state(&self, state: PortState) {
        self.state.send_if_modified(|current| {
            if *current == state {
                return false;
            }
            match &state {
                PortState::Online { path } => {
                    tracing::info!(port = %self.config.spec, path = %path.display(), "serial port online")
                }
                PortState::Offline { reason } => {
                    tracing::warn!(port = %self.config.spec, %reason, "serial port offline")
                }
                PortState::Leased => tracing::debug!(port = %self.config.spec, "serial port leased to an upload"),
                PortState::Starting => {}
            }
            *current = state;
            true
        });
    }
}

/// The console thread: open, read, publish; obey commands between reads.
fn run(io: &PortIo, commands: &mpsc::Receiver<Command>) {
    let mut port: Option<TtyLink> = None;
    let mut paused = false;
    let mut next_open = Instant::now();
    let mut buf = vec![0u8; 4096];
    let close = |port: &mut Option<TtyLink>| {
        // Take the writer first: an input write in flight finishes before the close.
        *lock(&io.writer) = None;
        *port = None;
    };

    loop {
        let command = if paused {
            Some(commands.recv().unwrap_or(Command::Shutdown))
        } else if port.is_none() {
            match commands.recv_timeout(next_open.saturating_duration_since(Instant::now())) {
                Ok(c) => Some(c),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => Some(Command::Shutdown),
            }
        } else {
            match commands.try_recv() {
                Ok(c) => Some(c),
                Err(mpsc::TryRecvError::Empty) => None,
                Err(mpsc::TryRecvError::Disconnected) => Some(Command::Shutdown),
            }
        };
        match command {
            Some(Command::Pause(ack)) => {
                close(&mut port);
                paused = true;
                io.set_state(PortState::Leased);
                let _ = ack.send(());
                continue;
            }
            Some(Command::Resume) => {
                paused = false;
                next_open = Instant::now();
                continue;
            }
            Some(Command::Reset(method, reply)) => {
                let link = port.as_mut().map(|p| p as &mut dyn SerialLink);
                let _ = reply.send(method.run(link, &CancelToken::new()));
                continue;
            }
            Some(Command::Shutdown) => {
                close(&mut port);
                io.set_state(PortState::Offline {
                    reason: "the device was removed from the config or the daemon is stopping".into(),
                });
                return;
            }
            None => {}
        }

        let Some(link) = port.as_mut() else {
            match open(io) {
                Ok(link) => port = Some(link),
                Err(e) => {
                    io.set_state(PortState::Offline { reason: e.to_string() });
                    next_open = Instant::now() + io.config.reopen_interval;
                }
            }
            continue;
        };
        match link.read_timeout(&mut buf, READ_SLICE) {
            Ok(0) => {}
            Ok(n) => io.publish(&buf[..n]),
            Err(e) => {
                let reason = format!("reading {} failed ({e}): unplugged? retrying", link.path().display());
                close(&mut port);
                io.set_state(PortState::Offline { reason });
                next_open = Instant::now() + io.config.reopen_interval;
            }
        }
    }
}

fn open(io: &PortIo) -> Result<TtyLink, PortError> {
    let path = io.config.spec.resolve()?;
    let port = open_port(&path, io.config.baud)?;
    let mut writer = port.try_clone_native().map_err(|e| PortError::Open {
        path: path.clone(),
        message: format!("cannot duplicate the descriptor: {e}"),
    })?;
    // Input writes wait at most this long for room in the tty's buffer.
    let _ = writer.set_timeout(Duration::from_secs(1));
    *lock(&io.writer) = Some(writer);
    io.set_state(PortState::Online { path: path.clone() });
    Ok(TtyLink::from_port(port, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::symlink;
    use std::path::Path;

    /// A stand-in board: a pty pair whose slave is reached through a link
    /// we can repoint, like a by-id link when a board is plugged back in.
    struct FakeBoard {
        master: TTYPort,
        slave_path: PathBuf,
    }

    impl FakeBoard {
        fn plug(link: &Path) -> FakeBoard {
            let (master, slave) = TTYPort::pair().expect("pty pair");
            let slave_path = PathBuf::from(slave.name().expect("slave name"));
            drop(slave);
            let tmp = link.with_extension("tmp");
            let _ = std::fs::remove_file(&tmp);
            symlink(&slave_path, &tmp).expect("symlink");
            std::fs::rename(&tmp, link).expect("repoint link");
            FakeBoard { master, slave_path }
        }

        fn send(&mut self, bytes: &[u8]) {
            self.master.write_all(bytes).expect("write to master");
        }

        fn expect(&mut self, wanted: &[u8]) {
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut buf = [0u8; 64];
            while !got.windows(wanted.len()).any(|w| w == wanted) {
                assert!(Instant::now() < deadline, "board never received {wanted:?}; got {got:?}");
                self.master.set_timeout(Duration::from_millis(100)).expect("timeout");
                if let Ok(n) = self.master.read(&mut buf) {
                    got.extend_from_slice(&buf[..n]);
                }
            }
        }
    }

    /// How many of this process's descriptors point at `path`.
    fn open_fds_to(path: &Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .expect("proc")
            .flatten()
            .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == path))
            .count()
    }

    async fn wait_state(port: &DevicePort, what: &str, want: impl Fn(&PortState) -> bool) -> PortState {
        let mut rx = port.state();
        let waited = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| want(s))).await;
        match waited {
            Ok(Ok(state)) => state.clone(),
            _ => panic!("port never became {what}; state {:?}", port.current_state()),
        }
    }

    async fn recv_until(rx: &mut broadcast::Receiver<Bytes>, wanted: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        let until = async {
            while !got.windows(wanted.len()).any(|w| w == wanted) {
                got.extend_from_slice(&rx.recv().await.expect("console open"));
            }
        };
        tokio::time::timeout(Duration::from_secs(10), until).await.expect("console output arrives");
        got
    }

    fn config(link: &Path) -> ConsoleConfig {
        ConsoleConfig {
            reopen_interval: Duration::from_millis(50),
            scrollback: 16,
            ..ConsoleConfig::new(PortSpec::Path(link.to_owned()), 115_200)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn console_reads_writes_keeps_scrollback_and_hands_over() {
        let dir = tempfile::tempdir().expect("tmp");
        let link = dir.path().join("board");
        let mut board = FakeBoard::plug(&link);
        let port = DevicePort::spawn(config(&link));
        wait_state(&port, "online", PortState::is_online).await;

        let (_, mut rx) = port.subscribe();
        board.send(b"hello from the board, more than sixteen bytes\n");
        recv_until(&mut rx, b"bytes\n").await;
        let (scrollback, _) = port.subscribe();
        assert_eq!(&scrollback[..], b"n sixteen bytes\n", "the last 16 bytes");
        port.clear_scrollback();
        assert!(port.subscribe().0.is_empty(), "a cleared scrollback shows nothing");
        port.write(Bytes::from_static(b"ping")).await.expect("write");
        board.expect(b"ping");

        // Lease: the console closes every descriptor it had on the port.
        let lease = port.lease().await.expect("lease");
        assert_eq!(lease.path(), link.as_path());
        assert_eq!(port.current_state(), PortState::Leased);
        assert_eq!(open_fds_to(&board.slave_path), 0, "console closed the port for the upload");
        assert!(matches!(port.write(Bytes::from_static(b"x")).await, Err(PortError::Leased)));
        assert!(matches!(port.try_lease().await, Err(PortError::Busy)));
        // The uploader opens it itself meanwhile.
        let mut uploader = open_port(&link, 115_200).expect("uploader opens the leased port");
        uploader.write_all(b"upload").expect("write");
        board.expect(b"upload");
        drop(uploader);
        drop(lease);

        wait_state(&port, "online again", |s| matches!(s, PortState::Online { .. })).await;
        board.send(b"after\n");
        recv_until(&mut rx, b"after\n").await;
        port.shutdown().await;
        assert_eq!(open_fds_to(&board.slave_path), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unplugged_board_goes_offline_and_comes_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let link = dir.path().join("board");
        let board = FakeBoard::plug(&link);
        let port = DevicePort::spawn(config(&link));
        wait_state(&port, "online", PortState::is_online).await;

        drop(board); // the master side closing is the pty's "unplug"
        let state = wait_state(&port, "offline", |s| matches!(s, PortState::Offline { .. })).await;
        assert!(format!("{state:?}").contains("retrying"), "{state:?}");

        let mut board = FakeBoard::plug(&link);
        wait_state(&port, "online again", |s| matches!(s, PortState::Online { .. })).await;
        let (_, mut rx) = port.subscribe();
        board.send(b"back\n");
        recv_until(&mut rx, b"back\n").await;
    }

    #[tokio::test]
    async fn a_missing_port_is_offline_with_the_reason() {
        let port = DevicePort::spawn(config(Path::new("/nonexistent/rerod-board")));
        let state = wait_state(&port, "offline", |s| matches!(s, PortState::Offline { .. })).await;
        assert!(format!("{state:?}").contains("plugged in"), "{state:?}");
        assert!(matches!(port.write(Bytes::from_static(b"x")).await, Err(PortError::Offline { .. })));
        assert!(matches!(port.lease().await, Err(PortError::NotFound { .. })));
        // The failed lease resumed the console: it is retrying, not leased.
        wait_state(&port, "offline again", |s| matches!(s, PortState::Offline { .. })).await;
    }
}
