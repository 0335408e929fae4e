//! Log output: human-readable on a terminal or in the journal, JSON lines
//! otherwise or when asked. Fields are structured; secrets never appear.
//!
//! Lines are written by one background thread, so a request never waits on
//! a `write(2)` to stderr: at tens of thousands of requests a second, one
//! syscall per access-log line would cost more than serving the request.
//! The access log goes further: a request only records its line's fields
//! (a few words, no formatting) and the background thread formats it, in
//! the same place among the other lines and in the same format as any
//! other event, when it writes the batch out. What is buffered is written
//! out when the daemon stops (the [`LogGuard`] is dropped).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::SystemTime;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry, reload};

use crate::config::{LogConfig, LogFormat};

/// Past this many buffered bytes, a logging thread writes through itself
/// instead of growing the buffer (backpressure, not loss).
const MAX_BUFFERED: usize = 1 << 20;

/// How long the writer thread lets lines gather between writes.
const BATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(5);

/// About how many bytes an access line takes, for [`MAX_BUFFERED`].
const ACCESS_LINE_BYTES: usize = 200;

/// The target of access-log lines, so they can be filtered on their own
/// (`LOG_LEVEL=info,rerod::access=warn` turns them off).
pub const ACCESS_TARGET: &str = "rerod::access";

/// Where access lines go once [`init`] has run: the writer, and the format
/// it writes them in.
static ACCESS: OnceLock<(BufferedStderr, LineFormat)> = OnceLock::new();

/// Installs the global subscriber. Call once, before anything logs. Keep the
/// returned guard alive: dropping it flushes what is buffered.
pub fn init(config: &LogConfig) -> LogGuard {
    let (filter, level) = reload::Layer::new(parse_filter(&config.level));
    let terminal = std::io::stderr().is_terminal();
    // journald timestamps every line itself and shows JSON poorly.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let json = match config.format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !terminal && !journal,
    };
    // An ANSI terminal is for a person watching: its access lines go through
    // the ordinary formatter, on the request path.
    let line_format = match (json, journal && !terminal, terminal) {
        (true, _, _) => LineFormat::Json,
        (false, true, _) => LineFormat::Plain { time: false },
        (false, false, false) => LineFormat::Plain { time: true },
        (false, false, true) => LineFormat::Inline,
    };
    let writer = BufferedStderr::start(line_format);
    let _ = ACCESS.set((writer.clone(), line_format));
    type Filtered = tracing_subscriber::layer::Layered<reload::Layer<Targets, Registry>, Registry>;
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
    level: reload::Handle<Targets, Registry>,
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
pub struct LevelControl(reload::Handle<Targets, Registry>);

impl LevelControl {
    /// Sets the filter, e.g. `debug` or `rerod=debug,info`.
    pub fn set(&self, level: &str) {
        if let Err(error) = self.0.reload(parse_filter(level)) {
            tracing::warn!(%error, "could not change the log level");
        }
    }
}

/// The filter a `log.level` names: a level (`info`), or comma-separated
/// `target=level` directives with an optional bare default level
/// (`rerod=debug,info`). Targets match by module path prefix. Config
/// validation refuses what does not parse, so the fallback (`info`) is only
/// for a value that was never validated.
pub fn parse_filter(level: &str) -> Targets {
    level.parse().unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO))
}

/// How the writer formats access lines: as the subscriber formats events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineFormat {
    /// JSON, one object per line, fields flattened.
    Json,
    /// Human-readable without colours, with or without a timestamp.
    Plain { time: bool },
    /// Through the subscriber itself, on the request path (colours on a terminal).
    Inline,
}

/// One request's access-log line, as data: formatted by the writer thread.
#[derive(Clone, Debug)]
pub struct AccessLine {
    /// When the request was answered.
    pub at: SystemTime,
    pub method: hyper::Method,
    /// The route's pattern from the route table, `(unknown)` for none.
    pub route: &'static str,
    pub status: u16,
    pub latency_us: u64,
    /// The client's address (behind trusted proxies: the client's).
    pub peer: SocketAddr,
}

/// Logs one request at INFO under [`ACCESS_TARGET`], unless the level
/// filter turns that off. `line` is only called when it is logged.
pub fn access(line: impl FnOnce() -> AccessLine) {
    if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
        return;
    }
    match ACCESS.get() {
        Some((writer, format)) if *format != LineFormat::Inline => writer.push_access(line()),
        _ => line().emit(),
    }
}

impl AccessLine {
    /// The line as an ordinary event, formatted by the subscriber now.
    fn emit(&self) {
        tracing::info!(
            target: ACCESS_TARGET,
            method = %self.method,
            route = self.route,
            status = self.status,
            latency_us = self.latency_us,
            peer = %self.peer,
            "request"
        );
    }

    /// Appends the line as the subscriber's formatter would write it.
    /// `clock` caches the formatted date and time to the second.
    fn format(&self, format: LineFormat, clock: &mut Clock, out: &mut Vec<u8>) {
        match format {
            LineFormat::Json => {
                out.extend_from_slice(b"{\"timestamp\":\"");
                clock.format(self.at, out);
                out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"method\":");
                json_string(self.method.as_str(), out);
                out.extend_from_slice(b",\"route\":");
                json_string(self.route, out);
                out.extend_from_slice(b",\"status\":");
                push_decimal(out, u64::from(self.status));
                out.extend_from_slice(b",\"latency_us\":");
                push_decimal(out, self.latency_us);
                out.extend_from_slice(b",\"peer\":\"");
                push_address(out, self.peer);
                out.extend_from_slice(b"\",\"target\":\"");
                out.extend_from_slice(ACCESS_TARGET.as_bytes());
                out.extend_from_slice(b"\"}\n");
            }
            LineFormat::Plain { time } => {
                if time {
                    clock.format(self.at, out);
                    out.push(b' ');
                }
                out.extend_from_slice(b" INFO ");
                out.extend_from_slice(ACCESS_TARGET.as_bytes());
                out.extend_from_slice(b": request method=");
                out.extend_from_slice(self.method.as_str().as_bytes());
                out.extend_from_slice(b" route=");
                push_debug_str(out, self.route);
                out.extend_from_slice(b" status=");
                push_decimal(out, u64::from(self.status));
                out.extend_from_slice(b" latency_us=");
                push_decimal(out, self.latency_us);
                out.extend_from_slice(b" peer=");
                push_address(out, self.peer);
                out.push(b'\n');
            }
            LineFormat::Inline => self.emit(),
        }
    }
}

// The access line is written by hand rather than with `write!`: it is
// formatted once per request, and `core::fmt` took most of the log thread's
// time under load (tests/bench/RESULTS.md). The test below holds it to the
// subscriber's own output.

/// `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `n` in decimal, zero-padded to six digits (`n` < 1,000,000).
fn push_micros(out: &mut Vec<u8>, n: u32) {
    let mut digits = [b'0'; 6];
    let mut rest = n;
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&digits);
}

/// `text` as `{:?}` writes it: quoted, and escaped where it must be (a
/// route pattern never needs it).
fn push_debug_str(out: &mut Vec<u8>, text: &str) {
    use std::io::Write as _;
    if text.bytes().all(|b| (b.is_ascii_graphic() || b == b' ') && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{text:?}");
    }
}

/// `address` as `Display` writes it.
fn push_address(out: &mut Vec<u8>, address: SocketAddr) {
    use std::io::Write as _;
    match address {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_decimal(out, u64::from(octet));
            }
            out.push(b':');
            push_decimal(out, u64::from(v4.port()));
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{address}");
        }
    }
}

/// `text` as a JSON string.
fn json_string(text: &str, out: &mut Vec<u8>) {
    // A &str always serializes.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// RFC 3339 UTC timestamps with microseconds, as the subscriber writes them
/// (`2026-12-03T11:39:49.704746Z`); the part up to the second is formatted
/// once per second.
#[derive(Debug, Default)]
struct Clock {
    second: Option<(u64, String)>,
}

impl Clock {
    fn format(&mut self, at: SystemTime, out: &mut Vec<u8>) {
        let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        if self.second.as_ref().is_none_or(|(s, _)| *s != secs) {
            let text = jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or(i64::MAX))
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S").to_string())
                .unwrap_or_default();
            self.second = Some((secs, text));
        }
        if let Some((_, text)) = &self.second {
            out.extend_from_slice(text.as_bytes());
        }
        out.push(b'.');
        push_micros(out, since.subsec_micros());
        out.push(b'Z');
    }
}

/// What is waiting to be written: bytes of formatted lines, and access lines
/// still to format, each with the length `bytes` had when it was logged.
#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    access: Vec<(usize, AccessLine)>,
    /// The writer thread waits for a signal; loggers signal only then.
    idle: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.access.is_empty()
    }

    fn size(&self) -> usize {
        self.bytes.len() + self.access.len() * ACCESS_LINE_BYTES
    }

    /// Appends every line, in the order they were logged.
    fn render(&self, format: LineFormat, clock: &mut Clock, out: &mut Vec<u8>) {
        let mut done = 0;
        for (at, line) in &self.access {
            out.extend_from_slice(&self.bytes[done..*at]);
            line.format(format, clock, out);
            done = *at;
        }
        out.extend_from_slice(&self.bytes[done..]);
    }
}

#[derive(Debug)]
struct Shared {
    /// Held while writing to stderr, so batches go out in order. Taken before `pending`.
    io: Mutex<Output>,
    pending: Mutex<Pending>,
    wake: Condvar,
}

/// The writing side: how access lines are formatted, and the buffers it reuses.
#[derive(Debug)]
struct Output {
    format: LineFormat,
    clock: Clock,
    batch: Vec<u8>,
}

impl Shared {
    /// Writes out everything pending, in order with other writers, then `then`.
    fn write_out(&self, then: &[u8]) -> std::io::Result<()> {
        let mut io = self.io.lock().unwrap_or_else(|p| p.into_inner());
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let Output { format, clock, batch } = &mut *io;
        batch.clear();
        pending.render(*format, clock, batch);
        batch.extend_from_slice(then);
        let result = std::io::stderr().lock().write_all(batch);
        // Keep a batch's worth of room, not a burst's.
        batch.truncate(0);
        batch.shrink_to(MAX_BUFFERED);
        result
    }

    /// Queues with `add`, or writes through when the buffer is full.
    fn queue(&self, size: usize, add: impl FnOnce(&mut Pending)) -> Result<(), ()> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.size() + size > MAX_BUFFERED {
            return Err(());
        }
        add(&mut pending);
        if std::mem::take(&mut pending.idle) {
            drop(pending);
            self.wake.notify_one();
        }
        Ok(())
    }
}

/// A stderr writer whose bytes a background thread writes out in batches.
#[derive(Clone, Debug)]
struct BufferedStderr(Arc<Shared>);

impl BufferedStderr {
    fn start(format: LineFormat) -> BufferedStderr {
        let output = Output { format, clock: Clock::default(), batch: Vec::new() };
        let shared = Arc::new(Shared { io: Mutex::new(output), pending: Mutex::default(), wake: Condvar::new() });
        let flusher = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("rerod-log".into())
            .spawn(move || {
                loop {
                    {
                        let mut pending = flusher.pending.lock().unwrap_or_else(|p| p.into_inner());
                        while pending.is_empty() {
                            pending.idle = true;
                            pending = flusher.wake.wait(pending).unwrap_or_else(|p| p.into_inner());
                        }
                        pending.idle = false;
                    }
                    // Nowhere to report a failure to write the log.
                    let _ = flusher.write_out(&[]);
                    // Let lines gather: while this thread is not waiting on
                    // the condvar, logging wakes nobody.
                    std::thread::sleep(BATCH_INTERVAL);
                }
            })
            .expect("spawning the log writer thread");
        BufferedStderr(shared)
    }

    fn flush_now(&self) {
        let _ = self.0.write_out(&[]);
    }

    /// Queues an access line, to be formatted where it stands among the other lines.
    fn push_access(&self, line: AccessLine) {
        let mut line = Some(line);
        let queued = self.0.queue(ACCESS_LINE_BYTES, |pending| {
            let at = pending.bytes.len();
            pending.access.extend(line.take().map(|line| (at, line)));
        });
        if queued.is_err() {
            // Backpressure: the buffer is full, so this request writes it out.
            let mut io = self.0.io.lock().unwrap_or_else(|p| p.into_inner());
            let Output { format, clock, .. } = &mut *io;
            let mut text = Vec::with_capacity(ACCESS_LINE_BYTES);
            if let Some(line) = line {
                line.format(*format, clock, &mut text);
            }
            drop(io);
            let _ = self.0.write_out(&text);
        }
    }
}

impl Write for BufferedStderr {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.0.queue(data.len(), |pending| pending.bytes.extend_from_slice(data)).is_err() {
            self.0.write_out(data)?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, micros: u32) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(secs, micros * 1000)
    }

    fn line(method: hyper::Method, route: &'static str, peer: &str) -> AccessLine {
        AccessLine {
            at: at(1_796_297_989, 704_746),
            method,
            route,
            status: 200,
            latency_us: 199,
            peer: peer.parse().unwrap(),
        }
    }

    fn formatted(line: &AccessLine, format: LineFormat) -> String {
        let mut out = Vec::new();
        line.format(format, &mut Clock::default(), &mut out);
        String::from_utf8(out).unwrap()
    }

    /// A writer into a shared buffer, for the subscriber under comparison.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The time of [`line`], as the subscriber's own timer writes it.
    struct FixedTime;

    impl tracing_subscriber::fmt::time::FormatTime for FixedTime {
        fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
            w.write_str("2026-12-03T11:39:49.704746Z")
        }
    }

    /// What the subscriber, set up as [`init`] sets it up, writes for the same event.
    fn by_the_subscriber(line: &AccessLine, format: LineFormat) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let base = tracing_subscriber::fmt::layer().with_writer(move || writer.clone()).with_timer(FixedTime);
        let layer: Box<dyn Layer<Registry> + Send + Sync> = match format {
            LineFormat::Json => base.json().flatten_event(true).with_current_span(false).with_span_list(false).boxed(),
            LineFormat::Plain { time: false } => base.with_ansi(false).without_time().boxed(),
            LineFormat::Plain { time: true } | LineFormat::Inline => base.with_ansi(false).boxed(),
        };
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || line.emit());
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn access_lines_read_exactly_as_the_subscriber_writes_them() {
        let lines = [
            line(hyper::Method::GET, "/slots", "127.0.0.1:51338"),
            line(hyper::Method::POST, "(unknown)", "[2001:db8::1]:443"),
            line(hyper::Method::from_bytes(b"PURGE").unwrap(), "/devices/{device}", "10.0.0.7:9"),
        ];
        for line in &lines {
            for format in [LineFormat::Json, LineFormat::Plain { time: true }, LineFormat::Plain { time: false }] {
                assert_eq!(formatted(line, format), by_the_subscriber(line, format), "{format:?}");
            }
        }
        let json: serde_json::Value = serde_json::from_str(&formatted(&lines[0], LineFormat::Json)).unwrap();
        assert_eq!(json["route"], "/slots");
        assert_eq!(json["target"], "rerod::access");
    }

    #[test]
    fn numbers_and_names_read_as_core_fmt_writes_them() {
        for n in [0, 7, 10, 99, 65_535, 1_000_000, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
        for text in ["/slots", "(unknown)", "/devices/{device}", "a \"quoted\" \\ one", "tab\there", "é"] {
            let mut out = Vec::new();
            push_debug_str(&mut out, text);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{text:?}"));
        }
        for address in ["0.0.0.0:0", "255.255.255.255:65535", "10.20.3.4:80", "[::1]:8000", "[2001:db8::7]:1"] {
            let address: SocketAddr = address.parse().unwrap();
            let mut out = Vec::new();
            push_address(&mut out, address);
            assert_eq!(String::from_utf8(out).unwrap(), address.to_string());
        }
    }

    #[test]
    fn timestamps_are_utc_to_the_microsecond() {
        let mut clock = Clock::default();
        let cases = [
            (at(0, 0), "1970-01-01T00:00:00.000000Z"),
            (at(951_782_400, 1), "2000-02-29T00:00:00.000001Z"),
            (at(1_796_297_989, 704_746), "2026-12-03T11:39:49.704746Z"),
            // The same second again comes from the cache.
            (at(1_796_297_989, 5), "2026-12-03T11:39:49.000005Z"),
            (at(4_102_444_799, 999_999), "2099-12-31T23:59:59.999999Z"),
        ];
        for (time, expected) in cases {
            let mut out = Vec::new();
            clock.format(time, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

    #[test]
    fn access_lines_keep_their_place_among_other_lines() {
        let shared = Shared {
            io: Mutex::new(Output {
                format: LineFormat::Plain { time: false },
                clock: Clock::default(),
                batch: Vec::new(),
            }),
            pending: Mutex::default(),
            wake: Condvar::new(),
        };
        let writer = BufferedStderr(Arc::new(shared));
        let mut w = writer.clone();
        w.write_all(b"first\n").unwrap();
        writer.push_access(line(hyper::Method::GET, "/slots", "127.0.0.1:1"));
        w.write_all(b"last\n").unwrap();
        let mut out = Vec::new();
        writer.0.pending.lock().unwrap().render(LineFormat::Plain { time: false }, &mut Clock::default(), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "first\n INFO rerod::access: request method=GET route=\"/slots\" status=200 latency_us=199 peer=127.0.0.1:1\nlast\n"
        );
    }

    #[test]
    fn log_levels_name_a_default_and_targets_by_module_prefix() {
        use tracing::Level;
        let filter = parse_filter("rerod=debug,info");
        assert!(filter.would_enable("rerod::http", &Level::DEBUG));
        assert!(!filter.would_enable("rerod::http", &Level::TRACE));
        assert!(filter.would_enable("hyper", &Level::INFO));
        assert!(!filter.would_enable("hyper", &Level::DEBUG));
        // The README's way to turn the access log off and keep the rest.
        let filter = parse_filter("info,rerod::access=warn");
        assert!(!filter.would_enable(ACCESS_TARGET, &Level::INFO));
        assert!(filter.would_enable("rerod::runtime", &Level::INFO));
        let filter = parse_filter("warn");
        assert!(!filter.would_enable("rerod::runtime", &Level::INFO));
        assert!(filter.would_enable("rerod::runtime", &Level::WARN));
    }
}
