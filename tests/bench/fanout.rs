//! Broadcast benchmark: N idle `/slot-booking` clients; for repeated
//! bookings, the time from sending the booking to the LAST client receiving
//! its `slots_update`, and the daemon's memory per connected client.
//!
//!     cargo bench -p rerod --bench fanout -- [--clients N] [--rounds R] [--reader-threads T] [--floor] [--leave SECS]
//!         [--store redb|postgres] [--hosts 1|2]
//!     cargo bench -p rerod --bench fanout -- --cross-host [--runs N] [--clients N] [--rounds R]
//!
//! `--store postgres`: the daemon's store is a new database on a throwaway
//! PostgreSQL server under target/ (tests/pg/server.sh, default settings:
//! durable commits). `--hosts 2` (PostgreSQL): two rerod hosts of one lab on
//! that database; the booking is made on host A, the clients listen on host
//! B, so each update crosses hosts (A's commit, its notification, B's read of
//! the day, B's fan-out). `--cross-host` runs the one-host figure (PostgreSQL)
//! and the two-host figure in turns, `--runs` times each (default 2),
//! alternating which goes first, and prints the differences. In every mode
//! the lab has one board (declared on B with two hosts), which is booked and
//! cancelled; its port does not exist, which booking does not mind.
//!
//! `--leave SECS`: after the rounds, every client disconnects; the daemon's
//! RSS is sampled for SECS seconds after, to see the memory come back.
//!
//! `--floor` measures the machine instead of rerod: per round, exactly one
//! durable commit (a one-key redb write transaction, fsync'd, in a store on
//! the same file system as the daemon's), then the same frame fed to the same
//! clients and readers by a bare loop (one thread per core, as many as
//! rerod's fan-out threads, blocking `send`s, nothing else). No server that
//! commits a booking before announcing it can reach N loopback clients
//! faster than that on the same machine. It also prints the CPU a round
//! takes (commit, senders and clients, all in this process), to set beside
//! the daemon's and the clients' figures of a run against rerod.
//!
//! Results are in tests/bench/RESULTS.md.

// Tests and benchmarks fail loudly: an unwrap that panics is the report.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde_json::{Value, json};

#[path = "daemon.rs"]
mod daemon;
use daemon::Daemon;

/// The benchmark's HTTP client: one keep-alive connection with plain
/// blocking I/O on the main thread, so no task scheduling sits between
/// taking a booking's start time and the request reaching the daemon.
struct Http {
    stream: std::io::BufReader<std::net::TcpStream>,
}

impl Http {
    fn connect(addr: SocketAddr) -> Http {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        Http { stream: std::io::BufReader::new(stream) }
    }

    /// POSTs JSON (with a Bearer token if given) and returns the status and body.
    fn post(&mut self, path: &str, token: Option<&str>, body: &Value) -> (u16, String) {
        use std::io::{BufRead, Read, Write};
        let body = body.to_string();
        let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: bench\r\n{auth}\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.get_mut().write_all(request.as_bytes()).unwrap();
        let mut status_line = String::new();
        self.stream.read_line(&mut status_line).unwrap();
        let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("an HTTP status line");
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).unwrap();
        (status, String::from_utf8(body).unwrap())
    }
}

/// Counts complete text frames in a server's byte stream (unmasked frames),
/// walking headers only: payloads are neither copied nor validated.
#[derive(Default)]
struct FrameCounter {
    header: Vec<u8>,
    payload_left: u64,
    is_text: bool,
}

impl FrameCounter {
    /// Feeds bytes; returns how many text frames completed in them.
    fn feed(&mut self, mut bytes: &[u8]) -> usize {
        let mut completed = 0;
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let take = (self.payload_left as usize).min(bytes.len());
                self.payload_left -= take as u64;
                bytes = &bytes[take..];
                if self.payload_left == 0 && self.is_text {
                    completed += 1;
                }
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            let needed = match self.header.get(1).map(|b| b & 0x7f) {
                None => continue,
                Some(126) => 4,
                Some(127) => 10,
                Some(_) => 2,
            };
            if self.header.len() < needed {
                continue;
            }
            self.payload_left = match needed {
                4 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                10 => u64::from_be_bytes(self.header[2..10].try_into().unwrap()),
                _ => u64::from(self.header[1] & 0x7f),
            };
            self.is_text = self.header[0] & 0x0f == 0x1;
            self.header.clear();
            if self.payload_left == 0 && self.is_text {
                completed += 1;
            }
        }
        completed
    }
}

/// Raises the open-file limit to its hard maximum; returns it.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

/// CPU time (user + system) this benchmark process has used so far.
fn own_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1);
    sorted[i.min(sorted.len() - 1)]
}

/// Reads every client's socket on a few plain threads with epoll: per frame,
/// one `recvmsg` and a header walk, no task wake-up or channel message.
///
/// The clients stand in for browsers on other machines, so they are kept
/// from being what is measured: each frame's arrival time is the kernel's
/// receive timestamp (`SO_TIMESTAMPNS`: when the bytes reached the client's
/// socket, stamped while the daemon's `send` delivers them), and the reader
/// threads run as `SCHED_IDLE`, so reading thousands of frames does not take
/// CPU from the daemon while it is still sending. The kernel's loopback
/// receive path still runs inside the daemon's `send`, counted against the
/// daemon: on a real network that work is done by the clients' machines.
struct Readers {
    /// Frames received by all clients, since the readers started.
    frames: Arc<AtomicU64>,
    /// One per round, when the total reaches a multiple of the client count.
    rounds: std::sync::mpsc::Receiver<RoundEnd>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Readers {
    fn start(sockets: Vec<std::net::TcpStream>, threads: usize) -> Readers {
        let n_clients = sockets.len() as u64;
        let frames = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (round_tx, rounds) = std::sync::mpsc::channel();
        let arrivals = Arc::new(Arrivals::new());
        let threads = deal(sockets, threads)
            .into_iter()
            .map(|group| {
                let (frames, stop, round_tx) = (Arc::clone(&frames), Arc::clone(&stop), round_tx.clone());
                let arrivals = Arc::clone(&arrivals);
                std::thread::spawn(move || {
                    let param = libc::sched_param { sched_priority: 0 };
                    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a valid param.
                    let set = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
                    assert_eq!(set, 0, "SCHED_IDLE");
                    read_loop(group, n_clients, &frames, &arrivals, &stop, &round_tx)
                })
            })
            .collect();
        Readers { frames, rounds, stop, threads }
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// How long a reader sleeps when it has caught up. Readers that block in
/// `epoll_wait` instead would be woken for every frame, and on loopback the
/// daemon's `send` pays for each such wake-up: a cost a real client on
/// another machine never puts on the daemon. The tick delays only the
/// "read by its process" figure; arrival times come from the kernel.
const POLL_TICK: Duration = Duration::from_millis(1);

/// Deals `items` round-robin into `n` shares.
fn deal<T>(items: Vec<T>, n: usize) -> Vec<Vec<T>> {
    let mut shares: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        shares[i % n].push(item);
    }
    shares
}

/// The kernel's arrival times of the round in progress, across all readers,
/// in nanoseconds since the Unix epoch.
struct Arrivals {
    first: AtomicU64,
    last: AtomicU64,
}

impl Arrivals {
    fn new() -> Arrivals {
        Arrivals { first: AtomicU64::new(u64::MAX), last: AtomicU64::new(0) }
    }

    fn record(&self, arrived: SystemTime) {
        let nanos = unix_nanos(arrived);
        self.first.fetch_min(nanos, Ordering::AcqRel);
        self.last.fetch_max(nanos, Ordering::AcqRel);
    }

    /// The first and last arrival of the round that just ended; starts the next.
    fn end_round(&self) -> (SystemTime, SystemTime) {
        let at = |nanos| UNIX_EPOCH + Duration::from_nanos(nanos);
        (at(self.first.swap(u64::MAX, Ordering::AcqRel)), at(self.last.load(Ordering::Acquire)))
    }
}

/// The end of a round: when its last frame reached a client's socket, and
/// when the client process read it.
struct RoundEnd {
    first: SystemTime,
    arrived: SystemTime,
    read: Instant,
}

/// Nanoseconds since the Unix epoch.
fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// One `recvmsg`: the bytes read, and the kernel's receive timestamp of the
/// last of them, if any were read.
fn recv_stamped(fd: std::os::fd::RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Option<SystemTime>)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: `msg` points at `buf` and `control`, both alive for the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                stamp = Some(UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, stamp))
}

fn read_loop(
    sockets: Vec<std::net::TcpStream>,
    n_clients: u64,
    frames: &AtomicU64,
    arrivals: &Arrivals,
    stop: &AtomicBool,
    round_tx: &std::sync::mpsc::Sender<RoundEnd>,
) {
    use std::os::fd::AsRawFd;
    // SAFETY: epoll_create1 has no preconditions; the fd is closed below.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(epoll >= 0, "epoll_create1");
    for (i, socket) in sockets.iter().enumerate() {
        let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: i as u64 };
        // SAFETY: both fds are open; `event` is a valid epoll_event.
        let added = unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, socket.as_raw_fd(), &mut event) };
        assert_eq!(added, 0, "epoll_ctl");
        let on: libc::c_int = 1;
        // SAFETY: setting an int socket option on an open socket.
        let set = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&raw const on).cast(),
                std::mem::size_of_val(&on) as libc::socklen_t,
            )
        };
        assert_eq!(set, 0, "SO_TIMESTAMPNS");
    }
    let mut counters: Vec<FrameCounter> = sockets.iter().map(|_| FrameCounter::default()).collect();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
    let mut buf = vec![0u8; 256 * 1024];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `events` has room for the 512 events asked for.
        let ready = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), 512, 0) };
        for event in &events[..ready.max(0) as usize] {
            let i = event.u64 as usize;
            let (n, arrived) = match recv_stamped(sockets[i].as_raw_fd(), &mut buf) {
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("client read: {e}"),
            };
            assert!(n > 0, "the daemon closed a client connection");
            let done = counters[i].feed(&buf[..n]) as u64;
            if done > 0 {
                let arrived = arrived.expect("a receive timestamp");
                // Before the count: when it reaches a round's end, every frame's arrival is in.
                arrivals.record(arrived);
                let total = frames.fetch_add(done, Ordering::AcqRel) + done;
                if total % n_clients < done {
                    let (first, arrived) = arrivals.end_round();
                    let _ = round_tx.send(RoundEnd { first, arrived, read: Instant::now() });
                }
            }
        }
        if ready < 512 {
            std::thread::sleep(POLL_TICK);
        }
    }
    // SAFETY: closing the epoll fd made above.
    unsafe { libc::close(epoll) };
}

/// The lab under benchmark: its store, and how many hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lab {
    Redb,
    PostgresOneHost,
    /// The booking made on host A, the clients on host B.
    PostgresTwoHosts,
}

/// The lab's one board: its port does not exist (it shows offline), which
/// booking does not mind.
const BOARD: &str = "[[devices]]\nid = \"fan\"\nplugin = \"stk500v1\"\nport = \"/dev/rerod-bench-no-such-port\"\n";

/// A running lab: the daemon taking the booking, and the one the clients
/// are connected to (the same with one host).
struct Running {
    daemons: Vec<Daemon>,
    booking: SocketAddr,
    clients: usize,
    _dir: tempfile::TempDir,
}

impl Running {
    fn clients(&self) -> &Daemon {
        &self.daemons[self.clients]
    }

    /// CPU time of every host of the lab.
    fn cpu(&self) -> Duration {
        self.daemons.iter().map(Daemon::cpu).sum()
    }
}

fn start_lab(lab: Lab) -> Running {
    static N: AtomicU64 = AtomicU64::new(0);
    let db = format!("fanout_{}", N.fetch_add(1, Ordering::Relaxed));
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{}{BOARD}", daemon::CONFIG);
    match lab {
        Lab::Redb => {
            let daemon = Daemon::start_with(4, &config);
            Running { booking: daemon.addr, daemons: vec![daemon], clients: 0, _dir: dir }
        }
        Lab::PostgresOneHost => {
            let url = daemon::pg_database(&db);
            let daemon = Daemon::start_with_env(4, &config, &[("DATABASE_URL", &url)]);
            Running { booking: daemon.addr, daemons: vec![daemon], clients: 0, _dir: dir }
        }
        Lab::PostgresTwoHosts => {
            let (a, b) = daemon::two_hosts(daemon::CONFIG, BOARD, &db, dir.path());
            // A books B's board once B's presence has listed it.
            let deadline = Instant::now() + Duration::from_secs(30);
            while !devices_of(a.addr).contains(&"fan".to_owned()) {
                assert!(Instant::now() < deadline, "host A never listed host B's board");
                std::thread::sleep(Duration::from_millis(100));
            }
            Running { booking: a.addr, daemons: vec![a, b], clients: 1, _dir: dir }
        }
    }
}

/// The ids of the boards `GET /devices` lists.
fn devices_of(addr: SocketAddr) -> Vec<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(b"GET /devices HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let devices: Value = serde_json::from_str(body).unwrap_or_default();
    let ids = devices["devices"].as_array().into_iter().flatten();
    ids.filter_map(|d| d["id"].as_str().map(str::to_owned)).collect()
}

/// What one run measured, in milliseconds where it is a time.
struct Figures {
    last_p50: f64,
    last_p99: f64,
    first_p99: f64,
}

async fn run(n_clients: usize, rounds: usize, reader_threads: usize, leave_secs: u64, lab: Lab) -> Figures {
    let running = start_lab(lab);
    let daemon = running.clients();
    let addr = daemon.addr;
    let creds = json!({"email": "fan@example.com", "password": "plum-orbit-cactus-41"});
    let mut http = Http::connect(running.booking);
    assert_eq!(http.post("/auth/register", None, &creds).0, 200);
    let (status, login) = http.post("/auth/login", None, &creds);
    assert_eq!(status, 200, "{login}");
    let token = serde_json::from_str::<Value>(&login).unwrap()["token"].as_str().unwrap().to_owned();

    let rss_idle = daemon.rss_kib();
    // A few hundred handshakes at a time: all at once would overflow the listen backlog.
    let handshakes = Arc::new(tokio::sync::Semaphore::new(256));
    let connects = (0..n_clients).map(|_| {
        let handshakes = Arc::clone(&handshakes);
        tokio::spawn(async move {
            let _permit = handshakes.acquire().await.unwrap();
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (mut ws, _) =
                tokio_tungstenite::client_async(format!("ws://{addr}/slot-booking"), stream).await.expect("handshake");
            // The greeting slots_update, read normally: it may arrive with the
            // handshake, in bytes only the WebSocket reader has seen.
            ws.next().await;
            ws.into_inner().into_std().unwrap()
        })
    });
    let mut sockets = Vec::with_capacity(n_clients);
    for connect in connects.collect::<Vec<_>>() {
        sockets.push(connect.await.unwrap());
    }
    let readers = Readers::start(sockets, reader_threads);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_connected = daemon.rss_kib();

    // A fresh connection: the daemon closes idle ones while thousands of clients connect.
    let mut http = Http::connect(running.booking);
    let mut latencies = Vec::new();
    let mut read_latencies = Vec::new();
    let mut first_latencies = Vec::new();
    let mut booking_latencies = Vec::new();
    let cpu_before = running.cpu();
    let client_cpu_before = own_cpu();
    let tomorrow =
        jiff::Timestamp::now().to_zoned_datetime(jiff::tz::TimeZone::UTC).date().tomorrow().unwrap().to_string();
    for round in 0..rounds {
        let path = if round % 2 == 0 { "/book-slot" } else { "/cancel-slot" };
        let (started, started_wall) = (Instant::now(), SystemTime::now());
        let (status, body) = http.post(path, Some(&token), &json!({"slot_id": 5, "date": tomorrow, "device": "fan"}));
        assert_eq!(status, 200, "{body}");
        booking_latencies.push(started.elapsed());
        let end = readers.rounds.recv_timeout(Duration::from_secs(30)).expect("every client got the update");
        latencies.push(end.arrived.duration_since(started_wall).unwrap_or_default());
        first_latencies.push(end.first.duration_since(started_wall).unwrap_or_default());
        read_latencies.push(end.read - started);
    }
    let daemon_cpu_per_round = (running.cpu() - cpu_before) / rounds as u32;
    let client_cpu_per_round = (own_cpu() - client_cpu_before) / rounds as u32;
    assert_eq!(readers.frames.load(Ordering::Relaxed), (n_clients * rounds) as u64, "one frame per client per round");
    drop(readers);
    latencies.sort();
    read_latencies.sort();
    first_latencies.sort();
    booking_latencies.sort();
    let per_client = (rss_connected.saturating_sub(rss_idle)) as f64 / n_clients as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let lab_name = match lab {
        Lab::Redb => "redb, one host",
        Lab::PostgresOneHost => "PostgreSQL, one host",
        Lab::PostgresTwoHosts => "PostgreSQL, booked on host A, clients on host B",
    };
    println!(
        "N={n_clients:>6} ({lab_name}): booking -> last client  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  \
         ({rounds} rounds)\n\
         {:10}booking -> first client  p50 {:>7.2} ms  p99 {:>7.2} ms\n\
         {:10}... read by its process    p50 {:>7.2} ms  p99 {:>7.2} ms\n\
         {:10}the booking's own answer   p50 {:>7.2} ms  p99 {:>7.2} ms\n\
         {:10}CPU per round: daemon(s) {:.1} ms, clients {:.1} ms\n\
         {:10}daemon RSS {rss_idle} KiB idle, {rss_connected} KiB connected = {per_client:.1} KiB per client",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap()),
        "",
        ms(percentile(&first_latencies, 0.5)),
        ms(percentile(&first_latencies, 0.99)),
        "",
        ms(percentile(&read_latencies, 0.5)),
        ms(percentile(&read_latencies, 0.99)),
        "",
        ms(percentile(&booking_latencies, 0.5)),
        ms(percentile(&booking_latencies, 0.99)),
        "",
        ms(daemon_cpu_per_round),
        ms(client_cpu_per_round),
        "",
    );
    if leave_secs > 0 {
        // The readers owned the client sockets: they are closed now.
        let left = Instant::now();
        let mut samples = Vec::new();
        for at in [1, 5, 10, 30, 60, 120, 300].into_iter().filter(|&s| s <= leave_secs) {
            tokio::time::sleep(Duration::from_secs(at).saturating_sub(left.elapsed())).await;
            samples.push(format!("{at} s: {} KiB", daemon.rss_kib()));
        }
        println!("{:10}after all {n_clients} clients left: RSS {} (idle was {rss_idle} KiB)", "", samples.join(", "));
    }
    Figures {
        last_p50: ms(percentile(&latencies, 0.5)),
        last_p99: ms(percentile(&latencies, 0.99)),
        first_p99: ms(percentile(&first_latencies, 0.99)),
    }
}

/// One host and two hosts on PostgreSQL in turns, `runs` times each; prints
/// each pair's difference.
async fn cross_host(n_clients: usize, rounds: usize, reader_threads: usize, runs: usize) {
    for run_idx in 1..=runs {
        // Alternate which side goes first, so neither always gets the warmer or quieter turn.
        let order = match run_idx % 2 {
            1 => [Lab::PostgresOneHost, Lab::PostgresTwoHosts],
            _ => [Lab::PostgresTwoHosts, Lab::PostgresOneHost],
        };
        let (mut one, mut two) = (None, None);
        for lab in order {
            println!("run {run_idx}, load average {}", load_average());
            let figures = run(n_clients, rounds, reader_threads, 0, lab).await;
            match lab {
                Lab::PostgresTwoHosts => two = Some(figures),
                _ => one = Some(figures),
            }
        }
        let (one, two) = (one.unwrap(), two.unwrap());
        println!(
            "run {run_idx}: two hosts - one host, booking -> last client: p50 {:+.2} ms, p99 {:+.2} ms \
             (booking -> first client p99 {:+.2} ms)",
            two.last_p50 - one.last_p50,
            two.last_p99 - one.last_p99,
            two.first_p99 - one.first_p99,
        );
    }
}

/// The machine's load average over 1, 5 and 15 minutes, as `uptime` says it.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// A `slots_update` exactly as rerod broadcasts it: the greeting of a fresh
/// daemon, framed as an unmasked WebSocket text frame.
async fn real_frame() -> Vec<u8> {
    let daemon = Daemon::start(4);
    let stream = tokio::net::TcpStream::connect(daemon.addr).await.expect("connect");
    let url = format!("ws://{}/slot-booking", daemon.addr);
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.expect("handshake");
    let greeting = ws.next().await.expect("a greeting").expect("a greeting");
    let text = greeting.into_text().expect("a text frame");
    let len = u16::try_from(text.len()).expect("a frame under 64 KiB");
    let mut frame = vec![0x81, 126];
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(text.as_bytes());
    frame
}

/// The machine's floor: per round, the time from starting a bare send loop
/// to the last client receiving the frame, with rerod's frame, clients,
/// readers and thread count, but no daemon, request or commit.
async fn run_floor(n_clients: usize, rounds: usize, reader_threads: usize) {
    let frame: Arc<[u8]> = real_frame().await.into();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = std::thread::spawn(move || {
        (0..n_clients)
            .map(|_| {
                let (socket, _) = listener.accept().unwrap();
                socket.set_nodelay(true).unwrap();
                socket
            })
            .collect::<Vec<_>>()
    });
    let clients: Vec<_> = (0..n_clients).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    let servers = acceptor.join().unwrap();
    let readers = Readers::start(clients, reader_threads);

    let senders = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let start = Arc::new(std::sync::Barrier::new(senders + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = deal(servers, senders)
        .into_iter()
        .map(|mut share| {
            let (start, stop, frame) = (Arc::clone(&start), Arc::clone(&stop), Arc::clone(&frame));
            std::thread::spawn(move || {
                use std::io::Write;
                loop {
                    start.wait();
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    for socket in &mut share {
                        socket.write_all(&frame).unwrap();
                    }
                }
            })
        })
        .collect();

    // The durable commit every booking makes before its update goes out.
    const TABLE: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("floor");
    let store_dir = tempfile::tempdir().unwrap();
    let store = redb::Database::create(store_dir.path().join("floor.redb")).unwrap();
    let mut commits = Vec::with_capacity(rounds);
    let mut latencies = Vec::with_capacity(rounds);
    let cpu_before = own_cpu();
    for round in 0..rounds {
        let started = SystemTime::now();
        let txn = store.begin_write().unwrap();
        txn.open_table(TABLE).unwrap().insert(round as u64, round as u64).unwrap();
        txn.commit().unwrap();
        commits.push(started.elapsed().unwrap_or_default());
        start.wait();
        let end = readers.rounds.recv_timeout(Duration::from_secs(30)).expect("every client got the frame");
        latencies.push(end.arrived.duration_since(started).unwrap_or_default());
    }
    let cpu_per_round = (own_cpu() - cpu_before) / rounds as u32;
    drop(readers);
    stop.store(true, Ordering::Relaxed);
    start.wait();
    for thread in threads {
        thread.join().unwrap();
    }
    latencies.sort();
    commits.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "N={n_clients:>6}: floor, one commit + bare sends -> last client  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  \
         ({rounds} rounds, {senders} sending threads, {} byte frame)\n\
         {:10}the commit alone  p50 {:>7.2} ms  p99 {:>7.2} ms\n\
         {:10}CPU per round: commit, senders and clients {:.1} ms",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap()),
        frame.len(),
        "",
        ms(percentile(&commits, 0.5)),
        ms(percentile(&commits, 0.99)),
        "",
        ms(cpu_per_round),
    );
}

fn main() {
    let fd_limit = raise_fd_limit();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut clients = vec![1_000, 10_000];
    let mut rounds = 50;
    let mut reader_threads = 2;
    let mut floor = false;
    let mut leave_secs = 0;
    let mut store = "redb".to_owned();
    let mut hosts = 1;
    let mut cross = false;
    let mut runs = 2;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--clients" => clients = vec![it.next().and_then(|s| s.parse().ok()).expect("--clients N")],
            "--rounds" => rounds = it.next().and_then(|s| s.parse().ok()).expect("--rounds R"),
            "--reader-threads" => reader_threads = it.next().and_then(|s| s.parse().ok()).expect("--reader-threads T"),
            "--floor" => floor = true,
            "--leave" => leave_secs = it.next().and_then(|s| s.parse().ok()).expect("--leave SECS"),
            "--store" => store = it.next().expect("--store redb|postgres").clone(),
            "--hosts" => hosts = it.next().and_then(|s| s.parse().ok()).expect("--hosts 1|2"),
            "--cross-host" => cross = true,
            "--runs" => runs = it.next().and_then(|s| s.parse().ok()).expect("--runs N"),
            other => panic!("unknown argument {other}"),
        }
    }
    let lab = match (store.as_str(), hosts) {
        ("redb", 1) => Lab::Redb,
        ("postgres", 1) => Lab::PostgresOneHost,
        ("postgres", 2) => Lab::PostgresTwoHosts,
        _ => panic!("--store redb|postgres, and --hosts 2 only with --store postgres"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    if cross {
        let n = clients[0];
        return runtime.block_on(cross_host(n, rounds, reader_threads, runs));
    }
    for n in clients {
        if floor {
            // Both ends of every connection live in this process.
            let needed = 2 * n as u64 + 64;
            assert!(needed <= fd_limit, "--floor with {n} clients needs {needed} open files; the limit is {fd_limit}");
            runtime.block_on(run_floor(n, rounds, reader_threads));
        } else {
            runtime.block_on(run(n, rounds, reader_threads, leave_secs, lab));
        }
    }
}
