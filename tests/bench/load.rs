//! Load benchmark: starts the real `rerod` binary (build with `cargo bench`,
//! so it is a release build) on a loopback port and measures it from this
//! process over keep-alive HTTP/1.1 connections.
//!
//!     cargo bench -p rerod --bench load -- [slots|book-cancel|slots-during-logins|all] [--secs N] [--conns N]
//!         [--store redb|postgres [--pg-set NAME=VALUE]...]
//!     cargo bench -p rerod --bench load -- slots --store lab
//!     cargo bench -p rerod --bench load -- slots --ceiling [--control] [--runs N] [--secs N]
//!     cargo bench -p rerod --bench load -- idle [--runs N]
//!     PORT=N target/release/deps/load-HASH ceiling-server
//!
//! `--ceiling` measures the limit beside rerod in the same run: a bare hyper
//! server in this process (its own runtime, one worker per core, as rerod
//! has) answers every request with the very bytes rerod's `GET /slots` gave,
//! with the same `content-type`. The two sides take turns, `--runs` times
//! each (default 2), against the same connections count, and each pair's
//! ratio is printed. Both sides first get two seconds of the same load,
//! not counted, so that neither pays for starting cold. After the runs come
//! all the pairs summed up: in how many each half of the target holds, and
//! each side's percentiles over all its runs together.
//!
//! `--control` puts a second bare hyper, identical to the ceiling, where
//! rerod stood: the same comparison between two equal servers, which shows
//! how far this machine's noise alone moves the figures.
//!
//! With `--store postgres` the daemon's store is a PostgreSQL database on a
//! server this benchmark starts under target/ (tests/pg/server.sh: Debian's
//! PostgreSQL, default settings, so commits are durable: fsync and
//! synchronous_commit on), a fresh database per scenario. `--pg-set` changes
//! a server setting for the run (and prints it): `synchronous_commit=off` to
//! see the fsync's share (a measurement, never a headline figure), or a
//! setting a lab is told to set.
//!
//! `--store lab` serves `GET /slots` from host A of a lab of two hosts on
//! that server, for a board of host B's 40.
//!
//! Results and the machine they were taken on are in tests/bench/RESULTS.md.

// Tests and benchmarks fail loudly: an unwrap that panics is the report.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

#[path = "daemon.rs"]
mod daemon;
use daemon::Daemon;

async fn connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    sender
}

async fn send(sender: &mut SendRequest<Full<Bytes>>, req: Request<Full<Bytes>>) -> (u16, Bytes) {
    sender.ready().await.expect("connection ready");
    let response = sender.send_request(req).await.expect("request");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, body)
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).header("host", "bench").body(Full::new(Bytes::new())).unwrap()
}

fn post(path: &str, token: Option<&str>, body: &Value) -> Request<Full<Bytes>> {
    let mut req = Request::post(path).header("host", "bench").header("content-type", "application/json");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    req.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// Registers `email` and returns a token.
async fn user(addr: SocketAddr, email: &str) -> String {
    let mut s = connect(addr).await;
    let creds = json!({"email": email, "password": "plum-orbit-cactus-41"});
    let (status, _) = send(&mut s, post("/auth/register", None, &creds)).await;
    assert_eq!(status, 200);
    let (status, body) = send(&mut s, post("/auth/login", None, &creds)).await;
    assert_eq!(status, 200);
    serde_json::from_slice::<Value>(&body).unwrap()["token"].as_str().unwrap().to_owned()
}

struct Report {
    name: String,
    ops: usize,
    errors: usize,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl Report {
    /// The `p` quantile of the latencies, in ms; they must be sorted.
    fn percentile(&self, p: f64) -> f64 {
        let i = ((self.latencies_us.len() as f64 * p).ceil() as usize).saturating_sub(1);
        f64::from(self.latencies_us.get(i).copied().unwrap_or(0)) / 1000.0
    }

    fn print(mut self) {
        self.latencies_us.sort_unstable();
        let pct = |p: f64| self.percentile(p);
        println!(
            "{:<28} {:>9.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  max {:>7.2} ms  ({} ops, {} errors, {:.1} s)",
            self.name,
            self.ops as f64 / self.elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            pct(0.999),
            pct(1.0),
            self.ops,
            self.errors,
            self.elapsed.as_secs_f64()
        );
    }
}

/// Runs `n_conns` connections, each calling `make(conn_idx, iteration)` back to back for `secs`.
async fn drive<F>(name: &str, addr: SocketAddr, n_conns: usize, secs: u64, expected: u16, make: F) -> Report
where
    F: Fn(usize, usize) -> Request<Full<Bytes>> + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..n_conns)
        .map(|conn_idx| {
            let make = Arc::clone(&make);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut sender = connect(addr).await;
                let mut latencies = Vec::with_capacity(1 << 16);
                let mut errors = 0;
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let req = make(conn_idx, i);
                    let t = Instant::now();
                    let (status, _) = send(&mut sender, req).await;
                    latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                    errors += usize::from(status != expected);
                    i += 1;
                }
                (latencies, errors)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut report =
        Report { name: name.to_owned(), ops: 0, errors: 0, elapsed: Duration::ZERO, latencies_us: Vec::new() };
    for task in tasks {
        let (latencies, errors) = task.await.unwrap();
        report.ops += latencies.len();
        report.errors += errors;
        report.latencies_us.extend(latencies);
    }
    report.elapsed = started.elapsed();
    report
}

/// Which store the daemon under benchmark uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    Redb,
    Postgres,
    /// Two hosts of one lab on PostgreSQL (`slots` only): host B serves
    /// [`LAB_BOARDS`] boards, and the requests go to host A.
    Lab,
}

/// How many boards host B serves with `--store lab`: a lab of ten hosts
/// with four robots each.
const LAB_BOARDS: usize = 40;

/// Starts the daemon on `store`: redb in its temporary directory, or a new
/// database on the benchmark's PostgreSQL server.
fn start_daemon(bcrypt_cost: u32, store: Store) -> Daemon {
    let config = daemon::CONFIG;
    match store {
        Store::Redb => Daemon::start_with(bcrypt_cost, config),
        Store::Postgres => {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let url = daemon::pg_database(&format!("bench{}", N.fetch_add(1, Ordering::Relaxed)));
            Daemon::start_with_env(bcrypt_cost, config, &[("DATABASE_URL", &url)])
        }
        Store::Lab => panic!("--store lab goes with the slots scenario"),
    }
}

/// `GET /slots` on host A of a lab of two hosts for the last of host B's
/// [`LAB_BOARDS`] boards: the request looks the board up in the lab-wide
/// list before it reads the day.
async fn bench_slots_lab(secs: u64, n_conns: usize) {
    let devices: String = (0..LAB_BOARDS)
        .map(|i| format!("[[devices]]\nid = \"b-{i}\"\nplugin = \"stk500v1\"\nport = \"/dev/rerod-bench-{i}\"\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let db = format!("benchlab{}", N.fetch_add(1, Ordering::Relaxed));
    let (a, _b) = daemon::two_hosts(daemon::CONFIG, &devices, &db, dir.path());
    let path = format!("/slots?device=b-{}", LAB_BOARDS - 1);
    // Host A lists B's boards once B's first presence is read.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = send(&mut connect(a.addr).await, get(&path)).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "host A never listed host B's boards");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let name = format!("GET {path} on host A ({n_conns} conns)");
    drive(&name, a.addr, n_conns, secs, 200, move |_, _| get(&path)).await.print();
}

/// A daemon with a few booked slots, so the listing has both kinds.
async fn slots_daemon(store: Store) -> Daemon {
    let daemon = start_daemon(4, store);
    let token = user(daemon.addr, "seed@example.com").await;
    let mut s = connect(daemon.addr).await;
    for slot in [20, 21, 23] {
        send(&mut s, post("/book-slot", Some(&token), &json!({"slot_id": slot}))).await;
    }
    daemon
}

async fn bench_slots(secs: u64, n_conns: usize, store: Store) {
    let daemon = slots_daemon(store).await;
    drive(&format!("GET /slots ({n_conns} conns)"), daemon.addr, n_conns, secs, 200, |_, _| get("/slots"))
        .await
        .print();
}

/// A bare hyper HTTP/1.1 server answering every request with `body` as
/// `application/json`: the ceiling for serving cached bytes on this
/// machine. Runs on its own runtime with one worker per core, in threads
/// of its own, so it shares nothing with the load generator but the CPUs.
fn start_bare_hyper(body: Bytes) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || bare_hyper(listener, body, std::future::pending()));
    addr
}

/// Serves `body` on `listener` as [`start_bare_hyper`] describes, until `stop`.
fn bare_hyper(listener: std::net::TcpListener, body: Bytes, stop: impl std::future::Future<Output = ()>) {
    listener.set_nonblocking(true).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("bare-hyper").build().unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let mut stop = std::pin::pin!(stop);
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => accepted.unwrap(),
                () = &mut stop => return,
            };
            stream.set_nodelay(true).unwrap();
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let mut response = hyper::Response::new(Full::new(body.clone()));
                    response.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// `ceiling-server`: the ceiling alone in this process, on 127.0.0.1 port
/// `$PORT`, until SIGTERM, serving a body the size of rerod's `GET /slots`
/// (its bytes do not change the work): so that `tests/bench/instructions.sh`
/// counts what bare hyper does per request, beside rerod's count.
fn serve_ceiling() {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).expect("PORT=N");
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        term.recv().await;
    };
    bare_hyper(listener, Bytes::from(vec![b'x'; SLOTS_BODY_BYTES]), stop);
}

/// The size of `GET /slots` on the bench's daemon (three slots booked).
const SLOTS_BODY_BYTES: usize = 4766;

/// Seconds of unmeasured load each side of the ceiling comparison gets first.
const WARM_UP_SECS: u64 = 2;

/// Which server stands against the bare-hyper ceiling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contender {
    Rerod,
    /// A second bare hyper, the same as the ceiling (`--control`): how far
    /// two identical servers differ in this comparison on this machine,
    /// the noise every rerod figure stands in.
    Control,
}

/// `GET /slots` beside the bare-hyper ceiling serving the same bytes,
/// alternating, `runs` times each; prints each pair's ratio, then all the
/// pairs summed up.
async fn bench_slots_ceiling(secs: u64, n_conns: usize, runs: usize, store: Store, contender: Contender) {
    let daemon = slots_daemon(store).await;
    let (status, body) = send(&mut connect(daemon.addr).await, get("/slots")).await;
    assert_eq!(status, 200);
    println!("GET /slots body: {} bytes; the ceiling serves the same bytes", body.len());
    let bare = start_bare_hyper(body.clone());
    let (label, against) = match contender {
        Contender::Rerod => ("rerod", daemon.addr),
        Contender::Control => ("control", start_bare_hyper(body)),
    };
    // Both sides, and this generator, start cold: connection buffers,
    // allocator arenas and page-cache pages come in during the first
    // seconds of load. Unwarmed, that cost fell on whichever side went
    // first in run 1 (always rerod). Each side gets the same warm-up,
    // not counted.
    for addr in [against, bare] {
        drive("warm-up", addr, n_conns, WARM_UP_SECS, 200, |_, _| get("/slots")).await;
    }
    println!("warm-up: {WARM_UP_SECS} s of the same load on each side first, not counted");
    let mut pairs = Pairs::default();
    for run in 1..=runs {
        // Alternate which side goes first, so neither always gets the warmer or quieter turn.
        let (first_is_contender, mut contended, mut ceiling) = (run % 2 == 1, None, None);
        for turn in 0..2 {
            let on_contender = (turn == 0) == first_is_contender;
            let (name, addr) = match (on_contender, contender) {
                (true, Contender::Rerod) => (format!("run {run}: rerod GET /slots"), against),
                (true, Contender::Control) => (format!("run {run}: control, bare hyper"), against),
                (false, _) => (format!("run {run}: bare hyper, same bytes"), bare),
            };
            let mut report = drive(&name, addr, n_conns, secs, 200, |_, _| get("/slots")).await;
            report.latencies_us.sort_unstable();
            match on_contender {
                true => contended = Some(report),
                false => ceiling = Some(report),
            }
        }
        let (contended, ceiling) = (contended.unwrap(), ceiling.unwrap());
        let (ratio, p99, ceiling_p99) = pairs.add(&contended, &ceiling);
        println!(
            "run {run}: {label} / ceiling = {:.1}% of throughput; p99 {p99:.2} ms against {ceiling_p99:.2} ms",
            ratio * 100.0
        );
        contended.print();
        ceiling.print();
    }
    pairs.print(label);
}

/// The pairs of a ceiling comparison, summed up: how many meet each half
/// of the target, and each side's latencies over all its runs.
#[derive(Default)]
struct Pairs {
    /// Each pair's rate ratio and the two p99s (ms).
    each: Vec<(f64, f64, f64)>,
    contender: Vec<u32>,
    ceiling: Vec<u32>,
    contender_rate: Vec<f64>,
    ceiling_rate: Vec<f64>,
}

impl Pairs {
    /// Adds one pair; returns its rate ratio and the two p99s.
    fn add(&mut self, contender: &Report, ceiling: &Report) -> (f64, f64, f64) {
        let rate = |r: &Report| r.ops as f64 / r.elapsed.as_secs_f64();
        let pair = (rate(contender) / rate(ceiling), contender.percentile(0.99), ceiling.percentile(0.99));
        self.each.push(pair);
        self.contender.extend(&contender.latencies_us);
        self.ceiling.extend(&ceiling.latencies_us);
        self.contender_rate.push(rate(contender));
        self.ceiling_rate.push(rate(ceiling));
        pair
    }

    fn print(self, label: &str) {
        let n = self.each.len();
        if n < 2 {
            return;
        }
        let median = |mut v: Vec<f64>| {
            v.sort_unstable_by(f64::total_cmp);
            (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0
        };
        let rate_met = self.each.iter().filter(|(ratio, ..)| *ratio >= 0.9).count();
        let p99_met = self.each.iter().filter(|(_, p99, ceiling)| p99 <= ceiling).count();
        let ratios = self.each.iter().map(|(ratio, ..)| *ratio).collect();
        let differences = self.each.iter().map(|(_, p99, ceiling)| p99 - ceiling).collect();
        println!(
            "{n} pairs: {label} at 90% or more of the ceiling's rate in {rate_met} (median {:.1}%); \
             its p99 at or below the ceiling's in {p99_met} (median difference {:+.2} ms)",
            median(ratios) * 100.0,
            median(differences)
        );
        for (name, latencies, rates) in
            [(label, self.contender, self.contender_rate), ("ceiling", self.ceiling, self.ceiling_rate)]
        {
            let mut all = Report {
                name: format!("all {n} runs: {name}"),
                ops: 0,
                errors: 0,
                elapsed: Duration::ZERO,
                latencies_us: latencies,
            };
            all.latencies_us.sort_unstable();
            println!(
                "{:<24} median rate {:>7.0} req/s  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms",
                all.name,
                median(rates),
                all.percentile(0.5),
                all.percentile(0.99),
                all.percentile(0.999)
            );
        }
    }
}

async fn bench_book_cancel(secs: u64, n_conns: usize, store: Store) {
    let daemon = start_daemon(4, store);
    let mut tokens = Vec::new();
    for i in 0..n_conns {
        tokens.push(user(daemon.addr, &format!("u{i}@example.com")).await);
    }
    let today = jiff::Timestamp::now().to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
    let tokens = Arc::new(tokens);
    // Each connection owns one slot (its own date and id) and books, cancels, books...
    let report =
        drive(&format!("book+cancel ({n_conns} conns, {store:?})"), daemon.addr, n_conns, secs, 200, move |c, i| {
            let date = today.checked_add(jiff::Span::new().days(1 + (c / 24) as i64)).unwrap().to_string();
            let body = json!({"slot_id": c % 24, "date": date});
            let path = if i % 2 == 0 { "/book-slot" } else { "/cancel-slot" };
            post(path, Some(&tokens[c]), &body)
        })
        .await;
    report.print();
}

async fn bench_slots_during_logins(secs: u64, n_conns: usize, store: Store) {
    // The default bcrypt cost: each login is about a quarter second of CPU.
    let daemon = start_daemon(12, store);
    let addr = daemon.addr;
    user(addr, "login@example.com").await;
    let stop = Arc::new(AtomicBool::new(false));
    let logins: Vec<_> = (0..4)
        .map(|_| {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut s = connect(addr).await;
                let creds = json!({"email": "login@example.com", "password": "plum-orbit-cactus-41"});
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let (status, _) = send(&mut s, post("/auth/login", None, &creds)).await;
                    assert_eq!(status, 200);
                    latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                }
                latencies
            })
        })
        .collect();
    let report =
        drive(&format!("GET /slots + 4 logins ({n_conns} conns)"), addr, n_conns, secs, 200, |_, _| get("/slots"))
            .await;
    let elapsed = report.elapsed;
    stop.store(true, Ordering::Relaxed);
    let mut login_report =
        Report { name: "  the logins meanwhile".to_owned(), ops: 0, errors: 0, elapsed, latencies_us: Vec::new() };
    for login in logins {
        // A login still running when the load stopped counts too: it waited through it.
        login_report.latencies_us.extend(login.await.unwrap());
    }
    login_report.ops = login_report.latencies_us.len();
    report.print();
    login_report.print();
}

/// Start to ready (the port accepts) and resident memory of a fresh daemon
/// left idle for a second, `runs` times.
fn bench_idle(runs: usize) {
    for run in 1..=runs {
        let daemon = Daemon::start(12);
        let ready = daemon.ready_after;
        std::thread::sleep(Duration::from_secs(1));
        println!(
            "idle run {run}: start to ready {:.1} ms, RSS after 1 s idle {} KiB",
            ready.as_secs_f64() * 1e3,
            daemon.rss_kib()
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut scenario = "all".to_owned();
    let mut secs = 10;
    let mut n_conns = 64;
    let mut ceiling = false;
    let mut contender = Contender::Rerod;
    let mut runs = 2;
    let mut store = Store::Redb;
    let mut pg_settings = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--secs" => secs = it.next().and_then(|s| s.parse().ok()).expect("--secs N"),
            "--conns" => n_conns = it.next().and_then(|s| s.parse().ok()).expect("--conns N"),
            "--runs" => runs = it.next().and_then(|s| s.parse().ok()).expect("--runs N"),
            "--ceiling" => ceiling = true,
            "--control" => contender = Contender::Control,
            "--pg-set" => pg_settings.push(it.next().expect("--pg-set NAME=VALUE").clone()),
            "--store" => {
                store = match it.next().map(String::as_str) {
                    Some("redb") => Store::Redb,
                    Some("postgres") => Store::Postgres,
                    Some("lab") => Store::Lab,
                    _ => panic!("--store redb|postgres|lab"),
                }
            }
            other => scenario = other.to_owned(),
        }
    }
    assert!(ceiling || contender == Contender::Rerod, "--control goes with --ceiling");
    if !pg_settings.is_empty() {
        assert_eq!(store, Store::Postgres, "--pg-set goes with --store postgres");
        daemon::pg_settings(&pg_settings);
    }
    if scenario == "idle" {
        return bench_idle(runs);
    }
    if scenario == "ceiling-server" {
        return serve_ceiling();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        if ceiling {
            assert_eq!(scenario, "slots", "--ceiling goes with the slots scenario");
            bench_slots_ceiling(secs, n_conns, runs, store, contender).await;
            return;
        }
        if store == Store::Lab {
            assert_eq!(scenario, "slots", "--store lab goes with the slots scenario");
            return bench_slots_lab(secs, n_conns).await;
        }
        if matches!(scenario.as_str(), "all" | "slots") {
            bench_slots(secs, n_conns, store).await;
        }
        if matches!(scenario.as_str(), "all" | "book-cancel") {
            bench_book_cancel(secs, n_conns, store).await;
        }
        if matches!(scenario.as_str(), "all" | "slots-during-logins") {
            bench_slots_during_logins(secs, n_conns, store).await;
        }
    });
}
