//! Console latency benchmark: the time from a board printing a line to a
//! `/devices/read/{device}` client receiving it in a `serial_output` message.
//!
//!     cargo bench -p rerod --bench console -- [--samples N] [--viewers K] [--interval-ms M] [--through-peer]
//!
//! The "board" is a pseudo-terminal this process holds the master side of:
//! rerod's console opens the slave as the device's port, so the measurement
//! is rerod's whole path (port thread read → broadcast → WebSocket task →
//! socket → client) and not the simulated UART's byte time. Each sample
//! writes one line with a sequence number and waits for it on the last of K
//! connected viewers (all K receive every line). With `--through-peer` the
//! board is on host B of a lab of two hosts on one PostgreSQL database and
//! the viewers connect to host A, which relays the console to B: the
//! difference is what forwarding adds. Results are in
//! tests/bench/RESULTS.md.

#![allow(clippy::unwrap_used)] // a benchmark: failures are panics with context

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[path = "daemon.rs"]
mod daemon;
use daemon::Daemon;

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::post(path).header("host", "bench").header("content-type", "application/json");
    let response =
        sender.send_request(req.body(Full::new(bytes::Bytes::from(body.to_string()))).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn get(addr: SocketAddr, path: &str) -> Value {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get(path).header("host", "bench").body(Full::new(bytes::Bytes::new())).unwrap();
    let body = sender.send_request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

/// A pty pair: the master (the "board" side, ours) and the slave's path (the port).
fn pty() -> (std::fs::File, String) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors into the given locals; the
    // name, termios and winsize arguments may be null.
    let rc =
        unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(rc, 0, "openpty failed");
    // SAFETY: both descriptors were just opened and are owned by nobody else.
    let (master, slave) = unsafe { (std::fs::File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let link = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&slave))).unwrap();
    // Keep the slave open too, so the pty never sees a hang-up between clients.
    std::mem::forget(slave);
    (master, link.display().to_string())
}

async fn console(addr: SocketAddr, token: &str) -> Ws {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/devices/read/pty"), stream).await.unwrap();
    ws.send(Message::Text(json!({"token": token}).to_string().into())).await.unwrap();
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "connection_established", "{hello}");
    ws
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a message within 10 s") {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("console closed: {other:?}"),
        }
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1);
    sorted.get(i).copied().unwrap_or_default()
}

/// Two hosts of one lab ([`daemon::two_hosts`]); returns once A lists B's board online.
async fn two_hosts(config: &str, devices: &str, dir: &std::path::Path) -> (Daemon, Daemon) {
    let (a, b) = daemon::two_hosts(config, devices, "bench_console", dir);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "host A never listed B's board");
        let devices = get(a.addr, "/devices").await;
        if devices["devices"].as_array().is_some_and(|d| d.iter().any(|d| d["id"] == "pty" && d["online"] == true)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (a, b)
}

async fn run(samples: usize, viewers: usize, interval: Duration, through_peer: bool) {
    let (mut board, port) = pty();
    // One slot a day: the benchmark's booking holds the board all day.
    let config = "[lab]\ntimezone = \"UTC\"\nslot_minutes = 1440\n";
    let devices = format!("[[devices]]\nid = \"pty\"\nplugin = \"stk500v1\"\nport = \"{port}\"\nreset = \"none\"\n");
    let dir = tempfile::tempdir().unwrap();
    let (daemon, owner) = match through_peer {
        false => (Daemon::start_with(4, &format!("{config}{devices}")), None),
        true => {
            let (a, b) = two_hosts(config, &devices, dir.path()).await;
            (a, Some(b))
        }
    };
    let creds = json!({"email": "bench@example.com", "password": "plum-orbit-cactus-41"});
    assert_eq!(post(daemon.addr, "/auth/register", &creds).await.0, 200);
    let (_, login) = post(daemon.addr, "/auth/login", &creds).await;
    let token = login["token"].as_str().unwrap().to_owned();
    let booking = json!({"slot_id": 0, "device": "pty", "email": creds["email"], "password": creds["password"]});
    let (status, body) = post(daemon.addr, "/book-slot", &booking).await;
    assert_eq!(status, 200, "{body}");
    if let Some(owner) = &owner {
        // The board's host admits the holder once the booking has reached it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while get(owner.addr, "/slots?device=pty").await["booked_slots"] != json!([0]) {
            assert!(Instant::now() < deadline, "the booking never reached the board's host");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let mut sockets = Vec::new();
    for _ in 0..viewers {
        sockets.push(console(daemon.addr, &token).await);
    }
    // Every other viewer just drains its socket.
    let mut measured = sockets.pop().unwrap();
    for mut ws in sockets {
        tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
    }
    // Warm-up: the console must have the port open before timing starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    'warm: loop {
        assert!(Instant::now() < deadline, "the console never showed the board's output");
        board.write_all(b"warm\n").unwrap();
        let until = tokio::time::sleep(Duration::from_millis(200));
        tokio::pin!(until);
        loop {
            tokio::select! {
                message = next_json(&mut measured) => {
                    if message["output"].as_str().is_some_and(|o| o.contains("warm")) { break 'warm; }
                }
                () = &mut until => break,
            }
        }
    }

    let mut latencies = Vec::with_capacity(samples);
    for seq in 0..samples {
        let marker = format!("S{seq:06}E");
        let line = format!("{marker}\r\n");
        let sent = Instant::now();
        board.write_all(line.as_bytes()).unwrap();
        let mut seen = String::new();
        while !seen.contains(&marker) {
            let message = next_json(&mut measured).await;
            if let Some(output) = message["output"].as_str() {
                seen.push_str(output);
            }
        }
        latencies.push(sent.elapsed());
        tokio::time::sleep(interval).await;
    }
    latencies.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let path = if through_peer { ", through a peer host" } else { "" };
    println!(
        "console latency{path}, {viewers} viewer(s), {samples} lines: p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 0.999)),
        ms(*latencies.last().unwrap()),
    );
}

fn main() {
    let samples = arg("--samples", 2000);
    let viewers = arg("--viewers", 1).max(1);
    let interval = Duration::from_millis(arg("--interval-ms", 5) as u64);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let through_peer = std::env::args().any(|a| a == "--through-peer");
    runtime.block_on(run(samples, viewers, interval, through_peer));
}
