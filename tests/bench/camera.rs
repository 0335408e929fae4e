//! Camera relay benchmark: the latency rerod adds between a camera's MJPEG
//! source and its viewers, and the daemon's CPU and memory per viewer.
//!
//!     cargo bench -p rerod --bench camera -- [--viewers 1,20,100] [--secs 10] [--fps 30] [--kb 50]
//!
//! The source is this process: an MJPEG server (as ustreamer) sending frames
//! of about `--kb` KB at `--fps`, each carrying its number in a JPEG comment
//! segment. For each viewer count K, a fresh daemon relays the public camera
//! to K `multipart/x-mixed-replace` streams read by this process; a frame's
//! latency is from the moment the source starts writing it to the moment a
//! viewer has it whole, for every frame on every viewer. CPU is the daemon's
//! user+system time over the measured seconds; memory its resident size with
//! K viewers against with none. Results are in tests/bench/RESULTS.md.

#![allow(clippy::unwrap_used)] // a benchmark: failures are panics with context

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "daemon.rs"]
mod daemon;
use daemon::Daemon;

#[path = "../common/frames.rs"]
mod frames;
use frames::{frame_number, jpeg};

/// When the source began writing each frame, by number.
type Sent = Arc<Mutex<Vec<Option<Instant>>>>;

/// Serves one MJPEG stream per connection, `fps` frames a second.
async fn source(fps: u32, kb: usize, sent: Sent) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket.set_nodelay(true).unwrap();
            let sent = Arc::clone(&sent);
            tokio::spawn(async move {
                let mut head = [0u8; 2048];
                let _ = socket.read(&mut head).await;
                let answer = "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=frame\r\n\r\n";
                if socket.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                let mut ticks = tokio::time::interval(Duration::from_secs(1) / fps);
                let mut n = 0u64;
                loop {
                    ticks.tick().await;
                    n += 1;
                    let frame = jpeg(n, kb << 10);
                    let mut part =
                        format!("--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", frame.len())
                            .into_bytes();
                    part.extend_from_slice(&frame);
                    part.extend_from_slice(b"\r\n");
                    {
                        let mut sent = sent.lock().unwrap();
                        if sent.len() <= n as usize {
                            sent.resize(n as usize + 1, None);
                        }
                        sent[n as usize] = Some(Instant::now());
                    }
                    if socket.write_all(&part).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Reads one viewer's stream, recording the latency of each whole frame it
/// has between `from` and `until`.
async fn viewer(addr: SocketAddr, sent: Sent, from: Instant, until: Instant, latencies: Arc<Mutex<Vec<Duration>>>) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/devices/camera/cam/stream").header("host", "bench");
    let response = sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut buf = BytesMut::new();
    let mut mine = Vec::new();
    // The current part's body start and length, once its head is in.
    let mut part: Option<(usize, usize)> = None;
    while Instant::now() < until {
        let Some(Ok(frame)) = body.frame().await else { break };
        let Ok(data) = frame.into_data() else { continue };
        buf.extend_from_slice(&data);
        loop {
            if part.is_none() {
                // A part's head is at the start of what is left, and short.
                let window = &buf[..buf.len().min(512)];
                let Some(head_end) = window.windows(4).position(|w| w == b"\r\n\r\n") else { break };
                let head = std::str::from_utf8(&buf[..head_end]).unwrap();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap();
                part = Some((head_end + 4, len));
            }
            let Some((start, len)) = part else { break };
            if buf.len() < start + len + 2 {
                break;
            }
            let now = Instant::now();
            let n = frame_number(&buf[start..]) as usize;
            if now >= from
                && let Some(Some(at)) = sent.lock().unwrap().get(n)
            {
                mine.push(now - *at);
            }
            buf.advance(start + len + 2);
            part = None;
        }
    }
    latencies.lock().unwrap().extend(mine);
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1);
    sorted.get(i).copied().unwrap_or_default()
}

async fn run(viewers: usize, secs: u64, fps: u32, kb: usize) {
    let sent: Sent = Arc::default();
    let port = source(fps, kb, Arc::clone(&sent)).await;
    let config = format!(
        "[lab]\ntimezone = \"UTC\"\n[[devices]]\nid = \"cam\"\nplugin = \"stk500v1\"\nport = \"/nonexistent/cam\"\n\
         camera = {{ mjpeg = \"http://127.0.0.1:{port}/stream\", visibility = \"public\" }}\n"
    );
    let daemon = Daemon::start_with(4, &config);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = daemon.rss_kib();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    // A second of warm-up (connections, the first frames), then the measured seconds.
    let warm = Instant::now() + Duration::from_secs(1);
    let until = warm + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..viewers {
        tasks.push(tokio::spawn(viewer(daemon.addr, Arc::clone(&sent), warm, until, Arc::clone(&latencies))));
    }
    tokio::time::sleep_until(warm.into()).await;
    let cpu_before = daemon.cpu();
    let measured_from = Instant::now();
    tokio::time::sleep_until(until.into()).await;
    let cpu = daemon.cpu() - cpu_before;
    let elapsed = measured_from.elapsed();
    let rss = daemon.rss_kib();
    for task in tasks {
        let _ = task.await;
    }
    let mut all = std::mem::take(&mut *latencies.lock().unwrap());
    all.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let frames_expected = (fps as u64 * secs) as usize * viewers;
    println!(
        "{viewers:>3} viewer(s), {fps} fps x {kb} KB, {secs} s: frames {} of {frames_expected}  p50 {:.2} ms  p99 {:.2} ms  \
         max {:.2} ms  daemon CPU {:.1}%  RSS {} KiB (idle {} KiB, +{:.0} KiB/viewer)",
        all.len(),
        ms(percentile(&all, 0.50)),
        ms(percentile(&all, 0.99)),
        ms(all.last().copied().unwrap_or_default()),
        cpu.as_secs_f64() / elapsed.as_secs_f64() * 100.0,
        rss,
        rss_idle,
        rss.saturating_sub(rss_idle) as f64 / viewers as f64,
    );
}

fn main() {
    let viewers: Vec<usize> =
        arg("--viewers").unwrap_or_else(|| "1,20,100".into()).split(',').map(|v| v.parse().unwrap()).collect();
    let secs: u64 = arg("--secs").map_or(10, |v| v.parse().unwrap());
    let fps: u32 = arg("--fps").map_or(30, |v| v.parse().unwrap());
    let kb: usize = arg("--kb").map_or(50, |v| v.parse().unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for k in viewers {
        runtime.block_on(run(k, secs, fps, kb));
    }
}
