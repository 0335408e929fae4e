//! Shared helpers: start the real `rerod` binary on a free loopback port with
//! a temporary store, and talk HTTP to it like a client.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use jiff::civil::Date;
use serde_json::{Value, json};

/// The password the helpers give every account. The daemon refuses weak new
/// passwords (`auth.min_password_score`), so it is one a person might choose
/// that passes at any level.
pub const PASSWORD: &str = "plum-orbit-cactus-41";

/// A running daemon. Killed (hard) when dropped.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    dir: Arc<tempfile::TempDir>,
    log: Arc<Mutex<String>>,
    options: Options,
}

/// How to start a daemon.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Config file contents; none means built-in defaults.
    pub config: Option<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Extra command-line arguments (`--demo`).
    pub args: Vec<String>,
    /// Leave DATABASE_PATH unset, so the store lands where the lab's
    /// settings put it (under the daemon's working directory, a fresh
    /// temporary one).
    pub store_from_settings: bool,
}

impl Options {
    pub fn config(text: &str) -> Options {
        Options { config: Some(text.to_owned()), ..Options::default() }
    }

    pub fn env(mut self, name: &str, value: &str) -> Options {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// A lab in UTC, so tests can reason about dates with the system clock.
pub const UTC_LAB: &str = "[lab]\ntimezone = \"UTC\"\n";

/// [`UTC_LAB`] without the per-student booking caps, for tests of other
/// things that book many slots as one student.
pub const UNCAPPED_LAB: &str = "[lab]\ntimezone = \"UTC\"\nmax_active_bookings = 0\nmax_bookings_per_day = 0\n";
/// [`UTC_LAB`] for a test that registers more accounts from 127.0.0.1 than
/// `auth.max_registrations_per_address_per_hour` allows by default.
pub const UTC_LAB_MANY_ACCOUNTS: &str =
    "[lab]\ntimezone = \"UTC\"\n[auth]\nmax_registrations_per_address_per_hour = 1000\n";

impl Daemon {
    /// Starts rerod with a UTC lab and otherwise default settings.
    pub fn start() -> Daemon {
        Daemon::start_with(Options::config(UTC_LAB))
    }

    pub fn start_with(options: Options) -> Daemon {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        Daemon::spawn(dir, options)
    }

    fn spawn(dir: Arc<tempfile::TempDir>, options: Options) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rerod"));
        cmd.current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("BCRYPT_ROUNDS", "4")
            .env("LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if !options.store_from_settings {
            cmd.env("DATABASE_PATH", dir.path().join("rerod.redb"));
        }
        cmd.args(&options.args);
        if let Some(config) = &options.config {
            let path = dir.path().join("rerod.toml");
            std::fs::write(&path, config).expect("writing config");
            cmd.arg("--config").arg(&path);
        }
        for (name, value) in &options.env {
            cmd.env(name, value);
        }
        let mut child = cmd.spawn().expect("starting rerod");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let log_writer = Arc::clone(&log);
        std::thread::spawn(move || {
            // Drain stderr for the whole life of the process so it never blocks on a full pipe.
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(event) = serde_json::from_str::<Value>(&line)
                    && event["message"] == "listening"
                {
                    let _ = addr_tx.send(event["address"].as_str().unwrap_or_default().to_owned());
                }
                let mut log = log_writer.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match addr_rx.recv_timeout(scaled(Duration::from_secs(20))) {
            Ok(addr) => addr.parse().expect("listening address"),
            Err(_) => {
                let _ = child.kill();
                panic!("rerod did not start listening; log:\n{}", log.lock().unwrap());
            }
        };
        Daemon { child, addr, dir, log, options }
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log once it satisfies `done` (the daemon writes its log in batches).
    pub async fn log_until(&self, done: impl Fn(&str) -> bool) -> String {
        eventually("the expected log lines", async || {
            let log = self.log();
            if done(&log) { Ok(log) } else { Err(format!("log:\n{log}")) }
        })
        .await
    }

    pub fn client(&self) -> Client {
        Client { addr: self.addr, from: None }
    }

    /// Runs `rerod user ARGS...` on the host, as the lab admin would, with the
    /// daemon's store and config and `password` (or a CSV file for `-`) on
    /// stdin; its output.
    pub fn host_command(&self, args: &[&str], password: &str) -> std::process::Output {
        use std::io::Write as _;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rerod"));
        cmd.current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DATABASE_PATH", self.store_path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if self.options.config.is_some() {
            cmd.arg("--config").arg(self.config_path());
        }
        for (name, value) in &self.options.env {
            cmd.env(name, value);
        }
        let mut child = cmd.spawn().expect("running rerod user");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin.write_all(format!("{password}\n").as_bytes()).expect("writing the password");
        drop(stdin);
        child.wait_with_output().expect("rerod user finishes")
    }

    /// Creates an account on the host (`rerod user add`, `--admin` if asked),
    /// logs it in, and returns its token: how a lab's admins get accounts.
    pub async fn host_account(&self, email: &str, admin: bool) -> String {
        let mut args = vec!["user", "add", email];
        if admin {
            args.push("--admin");
        }
        let output = self.host_command(&args, PASSWORD);
        assert!(output.status.success(), "rerod user add: {}", String::from_utf8_lossy(&output.stderr));
        self.client().login(email, PASSWORD).await
    }

    /// `kill -9`, then start again on the same store and config.
    pub fn kill9_and_restart(mut self) -> Daemon {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaping");
        self.restart()
    }

    /// Starts again on the same store and config (stopping it hard first if still running).
    pub fn restart(self) -> Daemon {
        let dir = Arc::clone(&self.dir);
        let options = self.options.clone();
        drop(self);
        Daemon::spawn(dir, options)
    }

    /// The daemon's store file.
    pub fn store_path(&self) -> std::path::PathBuf {
        if self.options.store_from_settings {
            return self.dir.path().join("data/demo/rerod.redb");
        }
        self.dir.path().join("rerod.redb")
    }

    /// `path` under the daemon's working directory.
    pub fn working_dir_file(&self, path: &str) -> std::path::PathBuf {
        self.dir.path().join(path)
    }

    /// The config file the daemon was started with.
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("rerod.toml")
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        eventually("rerod to exit after SIGTERM", async || self.child.try_wait().ok().flatten()).await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response, body read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status and, for errors, the FastAPI shape plus a code; returns the body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        let body = self.json();
        assert_eq!(self.status, status, "unexpected status; body: {body}");
        if status >= 400 {
            assert!(body["detail"].is_string(), "error without detail: {body}");
            assert!(body["code"].is_string(), "error without code: {body}");
        }
        body
    }
}

/// How long a poll waits for what it expects, unscaled, before the test fails.
pub const EVENTUALLY: Duration = Duration::from_secs(20);

/// The environment variable that multiplies every wait in the suite.
pub const TIME_SCALE_VAR: &str = "RERO_TEST_TIME_SCALE";

/// The factor every time limit in the suite is multiplied by: the number in
/// `RERO_TEST_TIME_SCALE` (default 1). A loaded machine (a build running
/// beside the suite, a slow CI runner) sets it above 1 instead of each test
/// tuning its own limits; the limits stay what a test means when it is 1.
pub fn time_scale() -> f64 {
    static SCALE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *SCALE.get_or_init(|| match std::env::var(TIME_SCALE_VAR) {
        Err(_) => 1.0,
        Ok(text) => match text.trim().parse::<f64>() {
            Ok(scale) if scale.is_finite() && scale > 0.0 => scale,
            _ => panic!("{TIME_SCALE_VAR}={text:?}: expected a positive number, such as 1 or 2.5"),
        },
    })
}

/// `limit` multiplied by [`time_scale`]: every time limit in the suite goes through here.
pub fn scaled(limit: Duration) -> Duration {
    limit.mul_f64(time_scale())
}

/// What a poll's check answers: done (with a value), or not yet. `Option`
/// says only that; `Result` also says what it saw instead (its `Err`), which
/// the failure shows, so a test that times out tells what it last found.
pub trait Outcome {
    type Done;
    fn done(self) -> Result<Self::Done, Option<String>>;
}

impl<T> Outcome for Option<T> {
    type Done = T;
    fn done(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: std::fmt::Display> Outcome for Result<T, E> {
    type Done = T;
    fn done(self) -> Result<T, Option<String>> {
        self.map_err(|seen| Some(seen.to_string()))
    }
}

/// Polls `check` every 50 ms until it is done, and answers its value; fails
/// the test, saying it waited for `what` (and what the check last saw), if
/// that takes longer than [`EVENTUALLY`] (scaled).
pub async fn eventually<R: Outcome>(what: &str, check: impl AsyncFnMut() -> R) -> R::Done {
    eventually_within(EVENTUALLY, what, check).await
}

/// [`eventually`] for what takes longer by nature (a board's health check
/// with its power cycles, a browser session): `limit` instead of
/// [`EVENTUALLY`], scaled all the same.
pub async fn eventually_within<R: Outcome>(limit: Duration, what: &str, check: impl AsyncFnMut() -> R) -> R::Done {
    match within(limit, check).await {
        Ok(done) => done,
        Err(Some(seen)) => panic!("waited {:?} for {what}; last saw: {seen}", scaled(limit)),
        Err(None) => panic!("waited {:?} for {what}", scaled(limit)),
    }
}

/// Polls `check` every 50 ms for at most `limit` (scaled); `Err` with what
/// it last saw when it was never done. For a try that the caller repeats or
/// reports itself.
pub async fn within<R: Outcome>(limit: Duration, mut check: impl AsyncFnMut() -> R) -> Result<R::Done, Option<String>> {
    let deadline = tokio::time::Instant::now() + scaled(limit);
    loop {
        let seen = match check().await.done() {
            Ok(done) => return Ok(done),
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(seen);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A minimal HTTP/1.1 client: one connection per request.
#[derive(Clone, Copy, Debug)]
pub struct Client {
    pub addr: SocketAddr,
    /// The loopback address to connect from (127.0.0.1 when unset).
    pub from: Option<std::net::IpAddr>,
}

/// A TCP connection to `addr`, from the loopback address `from` when given
/// (Linux answers on all of 127.0.0.0/8): a second client address.
pub async fn connect_from(addr: SocketAddr, from: Option<std::net::IpAddr>) -> tokio::net::TcpStream {
    let Some(from) = from else { return tokio::net::TcpStream::connect(addr).await.expect("connecting to rerod") };
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("binding a loopback address");
    socket.connect(addr).await.expect("connecting to rerod")
}

impl Client {
    /// The same client, connecting from another loopback address.
    pub fn from(self, ip: &str) -> Client {
        Client { from: Some(ip.parse().expect("an IP address")), ..self }
    }

    pub async fn request(&self, method: Method, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Resp {
        self.try_request(method, path, headers, body.into()).await.expect("sending the request")
    }

    /// [`Client::request`], for a server that may close the connection
    /// before answering (a refused connection): `Err` then.
    pub async fn try_request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Resp, hyper::Error> {
        let stream = connect_from(self.addr, self.from).await;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = Request::builder().method(method).uri(path).header("host", self.addr.to_string());
        for (name, value) in headers {
            req = req.header(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        let req = req.body(Full::new(body)).expect("request");
        let response = sender.send_request(req).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Resp { status: parts.status.as_u16(), headers: parts.headers, body })
    }

    /// The status of `GET path`, or `None` when the connection closed first.
    pub async fn get_if_served(&self, path: &str) -> Option<u16> {
        self.try_request(Method::GET, path, &[], Bytes::new()).await.ok().map(|r| r.status)
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request(Method::GET, path, &[], Bytes::new()).await
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> Resp {
        let auth = format!("Bearer {token}");
        self.request(Method::GET, path, &[("authorization", &auth)], Bytes::new()).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.request(Method::POST, path, &[("content-type", "application/json")], body.to_string()).await
    }

    pub async fn post_auth(&self, path: &str, token: &str, body: &Value) -> Resp {
        let auth = format!("Bearer {token}");
        self.request(
            Method::POST,
            path,
            &[("content-type", "application/json"), ("authorization", &auth)],
            body.to_string(),
        )
        .await
    }

    pub async fn register(&self, email: &str, password: &str) -> Resp {
        self.post("/auth/register", &json!({"email": email, "password": password})).await
    }

    /// Registers and logs in; returns the token.
    pub async fn user(&self, email: &str) -> String {
        self.register(email, PASSWORD).await.expect(200);
        self.login(email, PASSWORD).await
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        let body = self.post("/auth/login", &json!({"email": email, "password": password})).await.expect(200);
        body["token"].as_str().expect("token").to_owned()
    }

    /// Booked slot ids of the default device on `date`.
    pub async fn booked(&self, date: Date) -> Vec<u64> {
        let body = self.get(&format!("/slots?date={date}")).await.expect(200);
        body["booked_slots"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect()
    }
}

/// Today in UTC (the test labs' zone), plus `days`.
pub fn utc_date(days: i64) -> Date {
    let today = jiff::Timestamp::now().to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
    today.checked_add(jiff::Span::new().days(days)).unwrap()
}

/// A WebSocket client for the tests.
pub struct Ws {
    pub socket: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
}

impl Ws {
    pub async fn connect(addr: SocketAddr, path: &str) -> Ws {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connecting");
        Ws::handshake(addr, path, stream).await
    }

    pub async fn handshake(addr: SocketAddr, path: &str, stream: tokio::net::TcpStream) -> Ws {
        let url = format!("ws://{addr}{path}");
        let (socket, response) = tokio_tungstenite::client_async(url, stream).await.expect("WebSocket handshake");
        assert_eq!(response.status(), 101);
        Ws { socket }
    }

    pub async fn send(&mut self, value: &Value) {
        use futures_util::SinkExt;
        self.socket
            .send(tokio_tungstenite::tungstenite::Message::Text(value.to_string().into()))
            .await
            .expect("sending");
    }

    pub async fn send_raw(&mut self, message: tokio_tungstenite::tungstenite::Message) {
        use futures_util::SinkExt;
        self.socket.send(message).await.expect("sending");
    }

    /// The next message, whatever it is (pings skipped), within 10 s (scaled).
    pub async fn next(&mut self) -> Option<tokio_tungstenite::tungstenite::Message> {
        self.next_within(scaled(Duration::from_secs(10))).await
    }

    /// The next message, whatever it is (pings skipped), within `limit`.
    pub async fn next_within(&mut self, limit: Duration) -> Option<tokio_tungstenite::tungstenite::Message> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let next = tokio::time::timeout(limit, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no message within {limit:?}"));
            match next {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(message)) => return Some(message),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next JSON text message.
    pub async fn recv(&mut self) -> Value {
        self.recv_within(scaled(Duration::from_secs(10))).await
    }

    /// The next JSON text message, within `limit`.
    pub async fn recv_within(&mut self, limit: Duration) -> Value {
        match self.next_within(limit).await {
            Some(tokio_tungstenite::tungstenite::Message::Text(text)) => {
                serde_json::from_str(&text).expect("JSON message")
            }
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// Skips messages until one of `type` arrives.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let message = self.recv().await;
            if message["type"] == kind {
                return message;
            }
        }
    }
}

impl Daemon {
    /// Resident memory of the daemon process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("reading /proc");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    pub async fn ws(&self, path: &str) -> Ws {
        Ws::connect(self.addr, path).await
    }
}

/// A PostgreSQL server of one test's own, which it may stop and start
/// again (tests/pg/server.sh); stopped when dropped, and in any case once
/// the test binary exits.
pub struct OwnPgServer {
    dir: std::path::PathBuf,
}

impl OwnPgServer {
    pub fn start() -> OwnPgServer {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../target/pg-own-{}-{n}", std::process::id()));
        let server = OwnPgServer { dir };
        server.run(&["start", &server.dir.to_string_lossy(), &std::process::id().to_string()]);
        server
    }

    fn run(&self, args: &[&str]) {
        let status = Command::new(crate::pg::script()).args(args).stdin(Stdio::null()).stdout(Stdio::null()).status();
        assert!(status.expect("running tests/pg/server.sh").success(), "tests/pg/server.sh {args:?}");
    }

    /// Stops the server at once, as a crash would.
    pub fn stop(&self) {
        self.run(&["stop", &self.dir.to_string_lossy()]);
    }

    /// Starts it again on its data.
    pub fn resume(&self) {
        self.run(&["resume", &self.dir.to_string_lossy()]);
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        crate::pg::url_on(&std::fs::canonicalize(&self.dir).expect("the server's directory"), "postgres")
    }
}

impl Drop for OwnPgServer {
    fn drop(&mut self) {
        let _ = Command::new(crate::pg::script())
            .args(["stop", &self.dir.to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits for bookings of `slot` that raced each other: how many got the
/// slot (200) and how many were told it is taken (400); any other answer fails.
pub async fn race_outcome(tasks: Vec<tokio::task::JoinHandle<Resp>>, slot: u16) -> (usize, usize) {
    let (mut booked, mut refused) = (0, 0);
    for task in tasks {
        let r = task.await.unwrap();
        match r.status {
            200 => booked += 1,
            400 => {
                assert_eq!(r.json()["detail"], format!("Slot {slot} is not available"));
                refused += 1;
            }
            other => panic!("unexpected status {other}: {:?}", r.json()),
        }
    }
    (booked, refused)
}

pub use crate::pg::psql;

/// A new, empty database on the test server, for one test: its name and
/// the URL rerod connects with (`[store] url`, `DATABASE_URL`).
pub fn pg_database() -> (String, String) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!("t{}_{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let url = crate::pg::create_database(&name);
    (name, url)
}
