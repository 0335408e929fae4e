//! Prometheus metrics: a small fixed registry of rerod's counters, gauges and
//! the request latency histogram, rendered in the text exposition format 0.0.4
//! for `GET /metrics`.
//!
//! Recording is lock-free: every series is an atomic, and series with labels
//! that are only known at run time (route × method × status) live in
//! append-only slot tables claimed by compare-and-swap, so the request path
//! never waits on a lock. Label values are either enums or `&'static str`
//! route patterns, so a raw path or any other client-controlled text cannot
//! become a label and grow the registry without bound.
//!
//! It is kept rather than the Prometheus project's `prometheus-client`
//! because that costs about three times as much per recorded request
//! (`cargo bench -p rerod --bench metrics`, tests/bench/RESULTS.md).
//!
//! Architecture invariant: this module knows no HTTP types and no `App`; front
//! ends call its `record_*` methods with what they already have.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the latency histogram's buckets, in microseconds and as
/// rendered. From half a millisecond (a cached `GET /slots`) to ten seconds (a
/// login queued behind others, a firmware upload).
const LATENCY_BUCKETS: [(u64, &str); 14] = [
    (500, "0.0005"),
    (1_000, "0.001"),
    (2_500, "0.0025"),
    (5_000, "0.005"),
    (10_000, "0.01"),
    (25_000, "0.025"),
    (50_000, "0.05"),
    (100_000, "0.1"),
    (250_000, "0.25"),
    (500_000, "0.5"),
    (1_000_000, "1"),
    (2_500_000, "2.5"),
    (5_000_000, "5"),
    (10_000_000, "10"),
];

/// Distinct route patterns tracked; more go to the [`OVERFLOW_ROUTE`] series.
/// Patterns are `&'static str`, so the router's table bounds them; this is a
/// backstop, far above the ~20 routes rerod has.
const MAX_ROUTES: usize = 64;

/// The route label of requests beyond [`MAX_ROUTES`].
pub const OVERFLOW_ROUTE: &str = "(overflow)";

/// Distinct status codes tracked per route and method; more are counted
/// under `status="other"`. A route answers with a handful of codes.
const MAX_STATUSES: usize = 24;

/// The methods that get their own label; anything else is `method="other"`,
/// since extension methods are client-chosen text.
const METHODS: [&str; 9] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE"];
const OTHER_METHOD: usize = METHODS.len();

/// A booking change, for `rerod_bookings_total{action}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BookingAction {
    Book,
    Cancel,
}

impl BookingAction {
    const ALL: [BookingAction; 2] = [BookingAction::Book, BookingAction::Cancel];

    fn label(self) -> &'static str {
        match self {
            BookingAction::Book => "book",
            BookingAction::Cancel => "cancel",
        }
    }
}

/// Whether an attempt (a login, a config reload) succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
}

impl Outcome {
    const ALL: [Outcome; 2] = [Outcome::Ok, Outcome::Failed];

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
        }
    }
}

/// What became of a booking-socket client that fell behind, for
/// `rerod_websocket_slow_clients_total{action}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowClient {
    /// It missed broadcasts and was sent a fresh view instead.
    Resynced,
    /// It stopped reading for the whole send timeout and was disconnected.
    Dropped,
}

impl SlowClient {
    const ALL: [SlowClient; 2] = [SlowClient::Resynced, SlowClient::Dropped];

    fn label(self) -> &'static str {
        match self {
            SlowClient::Resynced => "resynced",
            SlowClient::Dropped => "dropped",
        }
    }
}

/// How a firmware upload ended: the `result` label of `rerod_uploads_total`.
pub use rerod_wire::UploadResult;

/// How a board's health check ended, for `rerod_health_checks_total{result}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckResult {
    Ok,
    Failed,
}

/// Which way serial bytes went, seen from rerod: `In` from the board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    const ALL: [Direction; 2] = [Direction::In, Direction::Out];

    fn label(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// One camera's numbers, taken at scrape time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CameraSample {
    pub device: String,
    /// `idle`, `connecting`, `live`, `offline` or `removed`.
    pub state: &'static str,
    pub viewers: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    /// Frames viewers skipped because they were behind (or asked for fewer).
    pub frames_dropped: u64,
    /// Frames over the camera's size bound, dropped.
    pub frames_oversized: u64,
    /// Connections to the source opened, the first included.
    pub upstream_connections: u64,
    /// Times the source failed or ended and was tried again.
    pub upstream_reconnects: u64,
}

/// Every metric rerod exports. One per daemon, shared through `App`.
#[derive(Debug)]
pub struct Metrics {
    routes: [OnceLock<Box<RouteMetrics>>; MAX_ROUTES],
    overflow: RouteMetrics,
    websocket_connections: AtomicI64,
    /// Compiles running and waiting, set at scrape time.
    compiles: [AtomicI64; 2],
    slow_clients: [AtomicU64; 2],
    bookings: [AtomicU64; 2],
    logins: [AtomicU64; 2],
    uploads: [AtomicU64; 4],
    serial_bytes: [AtomicU64; 2],
    config_reloads: [AtomicU64; 2],
    health_checks: [AtomicU64; 2],
    board_failures: AtomicU64,
    /// Each board's health, set at scrape time: (device, state name).
    device_health: std::sync::Mutex<Vec<(String, &'static str)>>,
    /// Each camera's numbers, set at scrape time.
    cameras: std::sync::Mutex<Vec<CameraSample>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            routes: std::array::from_fn(|_| OnceLock::new()),
            overflow: RouteMetrics::new(OVERFLOW_ROUTE),
            websocket_connections: AtomicI64::new(0),
            compiles: Default::default(),
            slow_clients: Default::default(),
            bookings: Default::default(),
            logins: Default::default(),
            uploads: Default::default(),
            serial_bytes: Default::default(),
            config_reloads: Default::default(),
            health_checks: Default::default(),
            board_failures: AtomicU64::new(0),
            device_health: Default::default(),
            cameras: Default::default(),
        }
    }

    /// A registry that knows `routes` up front, so each has a (zero) latency
    /// series from the first scrape: rate() over a series that appears late
    /// misses its first requests, and dashboards show every route.
    pub fn with_routes(routes: impl IntoIterator<Item = &'static str>) -> Metrics {
        let metrics = Metrics::new();
        for route in routes {
            metrics.route(route);
        }
        metrics
    }

    /// Counts one answered HTTP request. `route` is the route pattern (never
    /// the raw path), `method` the request method, `status` the status code
    /// sent, `elapsed` the time from request to response head.
    pub fn record_request(&self, route: &'static str, method: &str, status: u16, elapsed: Duration) {
        let route = self.route(route);
        route.latency.observe(elapsed);
        route.statuses[method_index(method)].count(status);
    }

    /// Sets the number of open WebSocket connections. Setting it from the
    /// daemon's own counter at scrape time keeps one source of truth.
    pub fn set_websocket_connections(&self, open: usize) {
        self.websocket_connections.store(i64::try_from(open).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Sets the compiles running and waiting for a compiler, from the queue at scrape time.
    pub fn set_compiles(&self, running: usize, waiting: usize) {
        for (gauge, n) in self.compiles.iter().zip([running, waiting]) {
            gauge.store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
        }
    }

    /// One more open WebSocket connection (for callers not using [`Metrics::set_websocket_connections`]).
    pub fn websocket_opened(&self) {
        self.websocket_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// One WebSocket connection fewer.
    pub fn websocket_closed(&self) {
        self.websocket_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts a booking-socket client that fell behind.
    pub fn record_slow_client(&self, what: SlowClient) {
        self.slow_clients[what as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a committed booking or cancellation (whatever the front end).
    pub fn record_booking(&self, action: BookingAction) {
        self.bookings[action as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a login attempt by its outcome.
    pub fn record_login(&self, outcome: Outcome) {
        self.logins[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a firmware upload by how it ended.
    pub fn record_upload(&self, result: UploadResult) {
        self.uploads[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` bytes moved over a serial port.
    pub fn record_serial_bytes(&self, direction: Direction, n: u64) {
        self.serial_bytes[direction as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a config reload (file watcher or SIGHUP) by its outcome.
    pub fn record_config_reload(&self, outcome: Outcome) {
        self.config_reloads[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a finished health check by its result.
    pub fn record_health_check(&self, result: CheckResult) {
        self.health_checks[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a board turning `failing`.
    pub fn record_board_failure(&self) {
        self.board_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets every board's health (device id, state name), from the boards at scrape time.
    pub fn set_device_health(&self, boards: Vec<(String, &'static str)>) {
        *self.device_health.lock().unwrap_or_else(|p| p.into_inner()) = boards;
    }

    /// Sets every camera's numbers, from the cameras at scrape time.
    pub fn set_cameras(&self, cameras: Vec<CameraSample>) {
        *self.cameras.lock().unwrap_or_else(|p| p.into_inner()) = cameras;
    }

    /// The series of one route pattern, created on first sight.
    fn route(&self, pattern: &'static str) -> &RouteMetrics {
        // Slots fill in order and never change once set, so the first slot
        // holding `pattern` is the only one: a thread that finds an empty slot
        // has seen every earlier slot hold another pattern, and get_or_init
        // lets only one thread fill a slot (a loser sees the winner's pattern).
        for slot in &self.routes {
            let metrics = slot.get_or_init(|| Box::new(RouteMetrics::new(pattern)));
            if metrics.pattern == pattern {
                return metrics;
            }
        }
        &self.overflow
    }

    /// Every family in the Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let routes: Vec<&RouteMetrics> =
            self.routes.iter().map_while(OnceLock::get).map(|b| &**b).chain(Some(&self.overflow)).collect();

        family(
            &mut out,
            "rerod_http_requests_total",
            "counter",
            "HTTP requests answered, by route pattern, method and status code.",
        );
        for route in &routes {
            for (method_idx, statuses) in route.statuses.iter().enumerate() {
                let method = METHODS.get(method_idx).copied().unwrap_or("other");
                for (status, count) in statuses.snapshot() {
                    let status = status.map_or_else(|| "other".to_owned(), |s| s.to_string());
                    sample(
                        &mut out,
                        "rerod_http_requests_total",
                        &[("route", route.pattern), ("method", method), ("status", &status)],
                        count,
                    );
                }
            }
        }

        family(
            &mut out,
            "rerod_http_request_duration_seconds",
            "histogram",
            "Time from an HTTP request's arrival to its response, by route pattern.",
        );
        for route in &routes {
            // The overflow series is only shown once something landed there.
            if route.pattern == OVERFLOW_ROUTE && route.latency.is_empty() {
                continue;
            }
            route.latency.render(&mut out, "rerod_http_request_duration_seconds", route.pattern);
        }

        family(
            &mut out,
            "rerod_websocket_connections",
            "gauge",
            "Open WebSocket connections (booking and serial console).",
        );
        sample(&mut out, "rerod_websocket_connections", &[], self.websocket_connections.load(Ordering::Relaxed));

        family(&mut out, "rerod_compiles", "gauge", "Sketch compiles running, and waiting for a compiler.");
        for (gauge, state) in self.compiles.iter().zip(["running", "waiting"]) {
            sample(&mut out, "rerod_compiles", &[("state", state)], gauge.load(Ordering::Relaxed));
        }

        family(
            &mut out,
            "rerod_websocket_slow_clients_total",
            "counter",
            "Booking-socket clients that fell behind: resynced with a fresh view, or dropped after the send timeout.",
        );
        for what in SlowClient::ALL {
            let value = load(&self.slow_clients[what as usize]);
            sample(&mut out, "rerod_websocket_slow_clients_total", &[("action", what.label())], value);
        }

        family(&mut out, "rerod_bookings_total", "counter", "Committed bookings and cancellations.");
        for action in BookingAction::ALL {
            sample(
                &mut out,
                "rerod_bookings_total",
                &[("action", action.label())],
                load(&self.bookings[action as usize]),
            );
        }

        family(&mut out, "rerod_logins_total", "counter", "Login attempts, by result.");
        for outcome in Outcome::ALL {
            sample(
                &mut out,
                "rerod_logins_total",
                &[("result", outcome.label())],
                load(&self.logins[outcome as usize]),
            );
        }

        family(&mut out, "rerod_uploads_total", "counter", "Firmware uploads, by how they ended.");
        for result in UploadResult::ALL {
            sample(
                &mut out,
                "rerod_uploads_total",
                &[("result", result.label())],
                load(&self.uploads[result as usize]),
            );
        }

        family(
            &mut out,
            "rerod_serial_bytes_total",
            "counter",
            "Bytes moved over board serial ports; in is from the board.",
        );
        for direction in Direction::ALL {
            let value = load(&self.serial_bytes[direction as usize]);
            sample(&mut out, "rerod_serial_bytes_total", &[("direction", direction.label())], value);
        }

        family(&mut out, "rerod_config_reloads_total", "counter", "Config reloads (file change or SIGHUP), by result.");
        for outcome in Outcome::ALL {
            let value = load(&self.config_reloads[outcome as usize]);
            sample(&mut out, "rerod_config_reloads_total", &[("result", outcome.label())], value);
        }

        family(&mut out, "rerod_health_checks_total", "counter", "Board health checks finished, by result.");
        for (result, counter) in ["ok", "failed"].into_iter().zip(&self.health_checks) {
            sample(&mut out, "rerod_health_checks_total", &[("result", result)], load(counter));
        }
        family(&mut out, "rerod_board_failures_total", "counter", "Times a board turned failing after a health check.");
        sample(&mut out, "rerod_board_failures_total", &[], load(&self.board_failures));
        family(
            &mut out,
            "rerod_device_health",
            "gauge",
            "1 for each board's health state (good, unknown, failing, maintenance).",
        );
        for (device, state) in self.device_health.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            for name in ["good", "unknown", "failing", "maintenance"] {
                sample(
                    &mut out,
                    "rerod_device_health",
                    &[("device", device), ("state", name)],
                    u8::from(*state == name),
                );
            }
        }

        let cameras = self.cameras.lock().unwrap_or_else(|p| p.into_inner()).clone();
        family(&mut out, "rerod_camera_viewers", "gauge", "Viewers watching each board's camera.");
        for camera in &cameras {
            sample(&mut out, "rerod_camera_viewers", &[("device", &camera.device)], camera.viewers);
        }
        family(&mut out, "rerod_camera_state", "gauge", "1 for each camera's state (idle, connecting, live, offline).");
        for camera in &cameras {
            for name in ["idle", "connecting", "live", "offline"] {
                let labels = [("device", camera.device.as_str()), ("state", name)];
                sample(&mut out, "rerod_camera_state", &labels, u8::from(camera.state == name));
            }
        }
        family(
            &mut out,
            "rerod_camera_frames_total",
            "counter",
            "Camera frames: in from the source, out to viewers, dropped (skipped by viewers behind), oversized \
             (over the size bound).",
        );
        for camera in &cameras {
            for (what, value) in [
                ("in", camera.frames_in),
                ("out", camera.frames_out),
                ("dropped", camera.frames_dropped),
                ("oversized", camera.frames_oversized),
            ] {
                sample(&mut out, "rerod_camera_frames_total", &[("device", &camera.device), ("kind", what)], value);
            }
        }
        family(
            &mut out,
            "rerod_camera_upstream_connections_total",
            "counter",
            "Connections opened to each camera's source.",
        );
        for camera in &cameras {
            let value = camera.upstream_connections;
            sample(&mut out, "rerod_camera_upstream_connections_total", &[("device", &camera.device)], value);
        }
        family(
            &mut out,
            "rerod_camera_upstream_reconnects_total",
            "counter",
            "Times each camera's source failed or ended and was tried again.",
        );
        for camera in &cameras {
            let value = camera.upstream_reconnects;
            sample(&mut out, "rerod_camera_upstream_reconnects_total", &[("device", &camera.device)], value);
        }

        family(&mut out, "rerod_build_info", "gauge", "Always 1; the labels say which rerod is running.");
        sample(&mut out, "rerod_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);
        out
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The index of a method's label; unknown methods share one.
fn method_index(method: &str) -> usize {
    METHODS.iter().position(|m| *m == method).unwrap_or(OTHER_METHOD)
}

/// The series of one route pattern.
#[derive(Debug)]
struct RouteMetrics {
    pattern: &'static str,
    latency: Histogram,
    /// Indexed by [`method_index`].
    statuses: [StatusCounters; METHODS.len() + 1],
}

impl RouteMetrics {
    fn new(pattern: &'static str) -> RouteMetrics {
        RouteMetrics { pattern, latency: Histogram::default(), statuses: Default::default() }
    }
}

/// Request counts by status code: a fixed table of (code, count) slots,
/// claimed by compare-and-swap the first time a code is seen.
#[derive(Debug)]
struct StatusCounters {
    /// 0 marks a free slot (no response has status 0).
    codes: [AtomicU16; MAX_STATUSES],
    counts: [AtomicU64; MAX_STATUSES],
    /// Codes that found the table full.
    other: AtomicU64,
}

impl Default for StatusCounters {
    fn default() -> StatusCounters {
        StatusCounters { codes: Default::default(), counts: Default::default(), other: AtomicU64::new(0) }
    }
}

impl StatusCounters {
    fn count(&self, status: u16) {
        if status == 0 {
            self.other.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // As with routes: slots fill in order and never change, so the first
        // slot holding `status` is the only one.
        for (code, count) in self.codes.iter().zip(&self.counts) {
            let held = match code.compare_exchange(0, status, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => status,
                Err(held) => held,
            };
            if held == status {
                count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.other.fetch_add(1, Ordering::Relaxed);
    }

    /// The (code, count) pairs in use, by code; `None` is the overflow.
    fn snapshot(&self) -> Vec<(Option<u16>, u64)> {
        let mut pairs: Vec<(Option<u16>, u64)> = self
            .codes
            .iter()
            .zip(&self.counts)
            .map(|(code, count)| (code.load(Ordering::Acquire), count.load(Ordering::Relaxed)))
            .take_while(|&(code, _)| code != 0)
            .map(|(code, count)| (Some(code), count))
            .collect();
        pairs.sort_unstable();
        let other = self.other.load(Ordering::Relaxed);
        if other > 0 {
            pairs.push((None, other));
        }
        pairs
    }
}

/// A latency histogram over [`LATENCY_BUCKETS`]. Each observation lands in
/// one bucket; rendering makes the counts cumulative, as Prometheus wants.
#[derive(Debug, Default)]
struct Histogram {
    /// One per bound, plus the last for observations above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let idx = LATENCY_BUCKETS.iter().position(|&(bound, _)| micros <= bound).unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[idx].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn is_empty(&self) -> bool {
        self.buckets.iter().all(|b| b.load(Ordering::Relaxed) == 0)
    }

    fn render(&self, out: &mut String, name: &str, route: &str) {
        let bucket_name = format!("{name}_bucket");
        // `_count` is the +Inf bucket, taken from the same reads, so the two
        // agree even while requests are being recorded.
        let mut cumulative = 0;
        for (idx, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = LATENCY_BUCKETS.get(idx).map_or("+Inf", |&(_, text)| text);
            sample(out, &bucket_name, &[("route", route), ("le", le)], cumulative);
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{} {sum}", labels(&[("route", route)]));
        sample(out, &format!("{name}_count"), &[("route", route)], cumulative);
    }
}

/// Writes a family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    // HELP text escapes backslash and newline (not quotes), per format 0.0.4.
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Writes one sample line.
fn sample(out: &mut String, name: &str, label_pairs: &[(&str, &str)], value: impl std::fmt::Display) {
    let _ = writeln!(out, "{name}{} {value}", labels(label_pairs));
}

/// `{a="x",b="y"}` with values escaped, or nothing without labels.
fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut text = String::from("{");
    for (idx, (name, value)) in pairs.iter().enumerate() {
        if idx > 0 {
            text.push(',');
        }
        text.push_str(name);
        text.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => text.push_str("\\\\"),
                '"' => text.push_str("\\\""),
                '\n' => text.push_str("\\n"),
                c => text.push(c),
            }
        }
        text.push('"');
    }
    text.push('}');
    text
}

#[cfg(test)]
mod tests;
