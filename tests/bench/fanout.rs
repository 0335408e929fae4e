//! Broadcast benchmark: N idle `/slot-booking` clients; for repeated
//! bookings, the time from sending the booking to the LAST client receiving
//! its `slots_update`, and the daemon's memory per connected client.
//!
//!     cargo bench -p rerod --bench fanout -- [--clients N] [--rounds R]
//!
//! Results are in tests/bench/RESULTS.md.

// Tests and benchmarks fail loudly: an unwrap that panics is the report.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

#[path = "daemon.rs"]
mod daemon;
use daemon::Daemon;

async fn post(addr: SocketAddr, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut req = Request::post(path).header("host", "bench").header("content-type", "application/json");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let response =
        sender.send_request(req.body(Full::new(bytes::Bytes::from(body.to_string()))).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
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

fn raise_fd_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1);
    sorted[i.min(sorted.len() - 1)]
}

async fn run(n_clients: usize, rounds: usize) {
    let daemon = Daemon::start(4);
    let addr = daemon.addr;
    let creds = json!({"email": "fan@example.com", "password": "password1"});
    assert_eq!(post(addr, "/auth/register", None, &creds).await.0, 201);
    let token = post(addr, "/auth/login", None, &creds).await.1["token"].as_str().unwrap().to_owned();

    let rss_idle = daemon.rss_kib();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Instant>();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<()>();
    for _ in 0..n_clients {
        let seen = seen_tx.clone();
        let ready = ready_tx.clone();
        tokio::spawn(async move {
            // A lean client, so the benchmark measures the daemon: after the
            // handshake it reads raw bytes and only walks frame headers.
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (mut ws, _) =
                tokio_tungstenite::client_async(format!("ws://{addr}/slot-booking"), stream).await.expect("handshake");
            // The greeting slots_update, read normally: it may arrive with the
            // handshake, in bytes only the WebSocket reader has seen.
            ws.next().await;
            let _ = ready.send(());
            let mut stream = ws.into_inner();
            let mut frames = FrameCounter::default();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                for _ in 0..frames.feed(&buf[..n]) {
                    let _ = seen.send(Instant::now());
                }
            }
        });
    }
    for _ in 0..n_clients {
        ready_rx.recv().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_connected = daemon.rss_kib();

    let mut latencies = Vec::new();
    let cpu_before = daemon.cpu();
    let tomorrow =
        jiff::Timestamp::now().to_zoned_datetime(jiff::tz::TimeZone::UTC).date().tomorrow().unwrap().to_string();
    for round in 0..rounds {
        let path = if round % 2 == 0 { "/book-slot" } else { "/cancel-slot" };
        let started = Instant::now();
        let (status, body) = post(addr, path, Some(&token), &json!({"slot_id": 5, "date": tomorrow})).await;
        assert_eq!(status, 200, "{body}");
        let mut last = started;
        for _ in 0..n_clients {
            last = last.max(seen_rx.recv().await.unwrap());
        }
        latencies.push(last - started);
    }
    let daemon_cpu_per_round = (daemon.cpu() - cpu_before) / rounds as u32;
    latencies.sort();
    let per_client = (rss_connected.saturating_sub(rss_idle)) as f64 / n_clients as f64;
    println!(
        "N={n_clients:>6}: booking -> last client  p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  ({rounds} rounds);  \
         daemon CPU {:.1} ms per round;  daemon RSS {rss_idle} KiB idle, {rss_connected} KiB connected = {per_client:.1} KiB per client",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
        daemon_cpu_per_round.as_secs_f64() * 1e3,
    );
}

fn main() {
    raise_fd_limit();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut clients = vec![1_000, 10_000];
    let mut rounds = 50;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--clients" => clients = vec![it.next().and_then(|s| s.parse().ok()).expect("--clients N")],
            "--rounds" => rounds = it.next().and_then(|s| s.parse().ok()).expect("--rounds R"),
            other => panic!("unknown argument {other}"),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    for n in clients {
        runtime.block_on(run(n, rounds));
    }
}
