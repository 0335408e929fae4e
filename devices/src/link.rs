//! `SerialLink`: the byte pipe a protocol uploader talks through, the real tty behind it, and exact reads with deadlines.
//!
//! Protocol plugins (stk500v1, stk500v2) are written against this trait so
//! their tests can put an in-memory fake bootloader behind it; in production
//! it is a [`TtyLink`] around an open serial port.

use std::io::{self, Write as _};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serialport::{ClearBuffer, SerialPort, TTYPort};

use crate::cancel::CancelToken;
use crate::error::UploadError;
use crate::port::{PortError, open_port};

/// How long one blocking read may wait before the cancel flag is checked again.
pub const READ_SLICE: Duration = Duration::from_millis(50);

/// A bidirectional serial byte stream with modem-line control.
pub trait SerialLink: Send {
    /// Reads what is available, waiting at most `timeout`; `Ok(0)` means
    /// nothing arrived in time.
    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize>;

    /// Writes all of `bytes` (one syscall for a whole command where the OS allows).
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Drops bytes received but not read yet (stale output from the running program).
    fn discard_input(&mut self) -> io::Result<()>;

    /// Sets DTR and RTS together (`true` = asserted). Fails with ENOTTY on a
    /// port without modem lines, such as a pty.
    fn set_dtr_rts(&mut self, asserted: bool) -> io::Result<()>;
}

/// A serial port opened for an upload.
#[derive(Debug)]
pub struct TtyLink {
    port: TTYPort,
    path: PathBuf,
}

impl TtyLink {
    /// Opens `path` at `baud` (8N1, no flow control, exclusive).
    pub fn open(path: &Path, baud: u32) -> Result<TtyLink, UploadError> {
        match open_port(path, baud) {
            Ok(port) => Ok(TtyLink { port, path: path.to_owned() }),
            Err(PortError::NotFound { path }) => Err(UploadError::PortNotFound { path }),
            Err(e) => Err(UploadError::PortOpen { path: path.to_owned(), message: e.to_string() }),
        }
    }

    /// Wraps a port opened elsewhere (the console thread).
    pub(crate) fn from_port(port: TTYPort, path: PathBuf) -> TtyLink {
        TtyLink { port, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Turns an I/O error on this port into the upload error a user can act
    /// on: a port that stopped existing or hung up is `PortVanished`.
    pub fn classify(&self, context: &str, e: io::Error) -> UploadError {
        classify_io(&self.path, context, e)
    }
}

/// `PortVanished` when the error or the missing device node says the board
/// went away (unplugged USB, killed pty), `Io` otherwise.
pub fn classify_io(path: &Path, context: &str, e: io::Error) -> UploadError {
    if is_vanished(&e) || !path.exists() {
        UploadError::PortVanished { path: path.to_owned() }
    } else {
        UploadError::Io { context: format!("{context} on {}", path.display()), source: e }
    }
}

/// Errors a serial port gives once its device is gone: hang-up (serialport
/// reports POLLHUP as BrokenPipe), EIO, ENXIO, ENODEV.
pub fn is_vanished(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::NotFound)
        || matches!(e.raw_os_error(), Some(libc::EIO | libc::ENXIO | libc::ENODEV))
}

impl SerialLink for TtyLink {
    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        // serialport's read polls with the port's timeout; setting it is a field store.
        self.port.set_timeout(timeout).map_err(io::Error::from)?;
        match io::Read::read(&mut self.port, buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        // A whole page must fit the tty's output buffer; give it time to drain.
        self.port.set_timeout(Duration::from_secs(2)).map_err(io::Error::from)?;
        self.port.write_all(bytes)
    }

    fn discard_input(&mut self) -> io::Result<()> {
        self.port.clear(ClearBuffer::Input).map_err(io::Error::from)
    }

    fn set_dtr_rts(&mut self, asserted: bool) -> io::Result<()> {
        // serialport's own DTR calls drop the errno, and ENOTTY ("no modem
        // lines", a pty) must stay recognisable, so this is the ioctl itself.
        let request = if asserted { libc::TIOCMBIS } else { libc::TIOCMBIC };
        let bits: libc::c_int = libc::TIOCM_DTR | libc::TIOCM_RTS;
        // SAFETY: the descriptor is open for the lifetime of `self.port`, and
        // TIOCMBIS/TIOCMBIC read one c_int through the pointer, which lives
        // across the call.
        let rc = unsafe { libc::ioctl(self.port.as_raw_fd(), request, &bits) };
        if rc == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }
}

/// Why [`read_exact`] stopped short.
#[derive(Debug)]
pub enum ReadError {
    /// The deadline passed with `got` bytes read.
    Timeout {
        got: usize,
    },
    Cancelled,
    Io(io::Error),
}

/// Fills `buf` before `deadline`, checking `cancel` at least every [`READ_SLICE`].
pub fn read_exact(
    link: &mut dyn SerialLink,
    buf: &mut [u8],
    deadline: Instant,
    cancel: &CancelToken,
) -> Result<(), ReadError> {
    let mut got = 0;
    while got < buf.len() {
        if cancel.is_cancelled() {
            return Err(ReadError::Cancelled);
        }
        let now = Instant::now();
        if now >= deadline {
            // The deadline may have passed while this thread was not running
            // (a busy host) with the reply already waiting in the kernel: what
            // has arrived is taken before the board is called silent.
            got += link.read_timeout(&mut buf[got..], Duration::ZERO).map_err(ReadError::Io)?;
            if got < buf.len() {
                return Err(ReadError::Timeout { got });
            }
            break;
        }
        let slice = (deadline - now).min(READ_SLICE);
        got += link.read_timeout(&mut buf[got..], slice).map_err(ReadError::Io)?;
    }
    Ok(())
}

/// Reads and drops input until the line has been quiet for `quiet`, or `max` has passed.
pub fn drain(link: &mut dyn SerialLink, quiet: Duration, max: Duration) -> io::Result<usize> {
    let end = Instant::now() + max;
    let mut buf = [0u8; 256];
    let mut dropped = 0;
    while Instant::now() < end {
        let n = link.read_timeout(&mut buf, quiet)?;
        if n == 0 {
            break;
        }
        dropped += n;
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply that is already in the kernel's buffer, read by a thread that
    /// was not scheduled until after the deadline: every blocking read comes
    /// back empty, only a read made at or after the deadline sees the bytes.
    struct LateThread {
        reply: Vec<u8>,
        deadline: Instant,
    }

    impl SerialLink for LateThread {
        fn read_timeout(&mut self, buf: &mut [u8], _: Duration) -> io::Result<usize> {
            if Instant::now() < self.deadline {
                return Ok(0);
            }
            let n = buf.len().min(self.reply.len());
            buf[..n].copy_from_slice(&self.reply[..n]);
            self.reply.drain(..n);
            Ok(n)
        }
        fn write_all(&mut self, _: &[u8]) -> io::Result<()> {
            Ok(())
        }
        fn discard_input(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn set_dtr_rts(&mut self, _: bool) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_reply_waiting_when_the_deadline_passes_is_read_not_a_timeout() {
        let deadline = Instant::now();
        let mut link = LateThread { reply: vec![0x14, 0x10], deadline };
        let mut buf = [0u8; 2];
        read_exact(&mut link, &mut buf, deadline, &CancelToken::new()).expect("the reply was there");
        assert_eq!(buf, [0x14, 0x10]);
    }

    #[test]
    fn a_reply_still_short_at_the_deadline_is_a_timeout_that_counts_what_came() {
        let deadline = Instant::now();
        let mut link = LateThread { reply: vec![0x14], deadline };
        let mut buf = [0u8; 2];
        let err = read_exact(&mut link, &mut buf, deadline, &CancelToken::new()).expect_err("one byte short");
        assert!(matches!(err, ReadError::Timeout { got: 1 }), "{err:?}");
    }
}
