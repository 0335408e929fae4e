//! Log output: human-readable on a terminal or in the journal, JSON lines
//! otherwise or when asked. Fields are structured; secrets never appear.
//!
//! Lines are formatted where they happen but written by one background
//! thread, so a request never waits on a `write(2)` to stderr: at tens of
//! thousands of requests a second, one syscall per access-log line would cost
//! more than serving the request.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::{LogConfig, LogFormat};

/// Past this many buffered bytes, a logging thread writes through itself
/// instead of growing the buffer (backpressure, not loss).
const MAX_BUFFERED: usize = 1 << 20;

/// How long the writer thread lets lines gather between writes.
const BATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(5);

/// Installs the global subscriber. Call once, before anything logs. Keep the
/// returned guard alive: dropping it flushes what is buffered.
pub fn init(config: &LogConfig) -> LogGuard {
    let (filter, level) = reload::Layer::new(EnvFilter::builder().parse_lossy(&config.level));
    let terminal = std::io::stderr().is_terminal();
    // journald timestamps every line itself and shows JSON poorly.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let json = match config.format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !terminal && !journal,
    };
    let writer = BufferedStderr::start();
    type Filtered = tracing_subscriber::layer::Layered<reload::Layer<EnvFilter, Registry>, Registry>;
    let base = tracing_subscriber::fmt::layer().with_writer(writer.clone());
    let output: Box<dyn Layer<Filtered> + Send + Sync> = if json {
        base.json().flatten_event(true).with_current_span(false).with_span_list(false).boxed()
    } else if journal && !terminal {
        base.with_ansi(false).without_time().boxed()
    } else {
        base.with_ansi(terminal).boxed()
    };
    tracing_subscriber::registry().with(filter).with(output).init();
    LogGuard { writer, level }
}

/// Flushes buffered log lines when dropped, and changes the level at run time.
#[derive(Debug)]
pub struct LogGuard {
    writer: BufferedStderr,
    level: reload::Handle<EnvFilter, Registry>,
}

impl LogGuard {
    /// A handle that changes the level filter (for config reloads).
    pub fn level_control(&self) -> LevelControl {
        LevelControl(self.level.clone())
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.writer.flush_now();
    }
}

/// Changes the log level filter of the running daemon.
#[derive(Clone, Debug)]
pub struct LevelControl(reload::Handle<EnvFilter, Registry>);

impl LevelControl {
    /// Sets the filter, e.g. `debug` or `rerod=debug,info`.
    pub fn set(&self, level: &str) {
        let filter = EnvFilter::builder().parse_lossy(level);
        if let Err(error) = self.0.reload(filter) {
            tracing::warn!(%error, "could not change the log level");
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    /// Held while writing to stderr, so batches go out in order. Taken before `buffer`.
    io: Mutex<()>,
    buffer: Mutex<Vec<u8>>,
    wake: Condvar,
}

impl Shared {
    /// Writes out everything buffered, in order with other writers.
    fn write_out(&self, then: &[u8]) -> std::io::Result<()> {
        let _io = self.io.lock().unwrap_or_else(|p| p.into_inner());
        let batch = std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|p| p.into_inner()));
        let mut stderr = std::io::stderr().lock();
        stderr.write_all(&batch)?;
        stderr.write_all(then)
    }
}

/// A stderr writer whose bytes a background thread writes out in batches.
#[derive(Clone, Debug)]
struct BufferedStderr(Arc<Shared>);

impl BufferedStderr {
    fn start() -> BufferedStderr {
        let shared = Arc::new(Shared::default());
        let flusher = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("rerod-log".into())
            .spawn(move || {
                loop {
                    {
                        let mut buffer = flusher.buffer.lock().unwrap_or_else(|p| p.into_inner());
                        while buffer.is_empty() {
                            buffer = flusher.wake.wait(buffer).unwrap_or_else(|p| p.into_inner());
                        }
                    }
                    // Nowhere to report a failure to write the log.
                    let _ = flusher.write_out(&[]);
                    // Let lines gather: while this thread is not waiting on
                    // the condvar, waking it costs loggers nothing.
                    std::thread::sleep(BATCH_INTERVAL);
                }
            })
            .expect("spawning the log writer thread");
        BufferedStderr(shared)
    }

    fn flush_now(&self) {
        let _ = self.0.write_out(&[]);
    }
}

impl Write for BufferedStderr {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut buffer = self.0.buffer.lock().unwrap_or_else(|p| p.into_inner());
        if buffer.len() + data.len() > MAX_BUFFERED {
            drop(buffer);
            self.0.write_out(data)?;
            return Ok(data.len());
        }
        buffer.extend_from_slice(data);
        drop(buffer);
        self.0.wake.notify_one();
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BufferedStderr {
    type Writer = BufferedStderr;

    fn make_writer(&'a self) -> BufferedStderr {
        self.clone()
    }
}
