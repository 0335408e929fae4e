//! Forwarded upload benchmark: the time of an upload to a simulated Uno
//! (tests/rig: real Optiboot in simavr) sent to the board's own host B,
//! against the same upload sent to host A of the same lab, which forwards
//! it, streamed, to B.
//!
//!     cargo bench -p rerod --bench forward -- [--rounds N] [--firmware NAME]
//!
//! Two hosts on one PostgreSQL database (tests/pg/server.sh), one board.
//! Each round uploads once to B and once through A, alternating which goes
//! first so neither always meets a board just flashed. The time is the
//! client's: from sending the request to reading the whole answer. Results
//! are in tests/bench/RESULTS.md.

#![allow(clippy::unwrap_used)] // a benchmark: failures are panics with context

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rerod_devices::testkit;
use serde_json::{Value, json};

#[path = "daemon.rs"]
mod daemon;

async fn send(addr: SocketAddr, req: Request<Full<bytes::Bytes>>) -> (u16, Value) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(req).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let req = Request::post(path).header("host", "bench").header("content-type", "application/json");
    send(addr, req.body(Full::new(bytes::Bytes::from(body.to_string()))).unwrap()).await
}

async fn get(addr: SocketAddr, path: &str) -> Value {
    send(addr, Request::get(path).header("host", "bench").body(Full::new(bytes::Bytes::new())).unwrap()).await.1
}

async fn upload(addr: SocketAddr, token: &str, firmware: &bytes::Bytes) -> Duration {
    let req = Request::post("/devices/upload/uno")
        .header("host", "bench")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/octet-stream")
        .body(Full::new(firmware.clone()))
        .unwrap();
    let started = Instant::now();
    let (status, body) = send(addr, req).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    took
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

async fn run(rounds: usize, firmware_name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("uno");
    let rig = testkit::rig_dir();
    let mut board = Command::new(rig.join("rig"))
        .arg("--bootloader")
        .arg(rig.join("optiboot_atmega328.hex"))
        .arg("--link")
        .arg(&link)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(board.stdout.take().unwrap()), &mut ready).unwrap();
    assert!(ready.starts_with("ready "), "the rig did not start: {ready:?}");
    let config = "[lab]\ntimezone = \"UTC\"\nslot_minutes = 1440\n";
    let devices = format!(
        "[[devices]]\nid = \"uno\"\nplugin = \"stk500v1\"\nport = \"{}\"\nreset = [\"kill\", \"-USR1\", \"{}\"]\n\
         flash_limit = 31744\n",
        link.display(),
        board.id()
    );
    let (a, b) = daemon::two_hosts(config, &devices, "bench_forward", dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !get(a.addr, "/devices").await["devices"][0]["online"].as_bool().unwrap_or(false) {
        assert!(Instant::now() < deadline, "host A never listed B's board online");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let creds = json!({"email": "bench@example.com", "password": "plum-orbit-cactus-41"});
    assert_eq!(post(a.addr, "/auth/register", &creds).await.0, 200);
    let token = post(a.addr, "/auth/login", &creds).await.1["token"].as_str().unwrap().to_owned();
    let booking = json!({"slot_id": 0, "device": "uno", "email": creds["email"], "password": creds["password"]});
    let (status, body) = post(a.addr, "/book-slot", &booking).await;
    assert_eq!(status, 200, "{body}");
    while get(b.addr, "/slots?device=uno").await["booked_slots"] != json!([0]) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let firmware = bytes::Bytes::from(std::fs::read(testkit::rig_file(firmware_name)).unwrap());

    let (mut local, mut forwarded) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            local.push(upload(b.addr, &token, &firmware).await);
            forwarded.push(upload(a.addr, &token, &firmware).await);
        } else {
            forwarded.push(upload(a.addr, &token, &firmware).await);
            local.push(upload(b.addr, &token, &firmware).await);
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let each = |times: &[Duration]| times.iter().map(|t| format!("{:.0}", ms(*t))).collect::<Vec<_>>().join(" ");
    println!("each upload (ms), to the board's host: {}; through a peer: {}", each(&local), each(&forwarded));
    let (local, forwarded) = (median(local), median(forwarded));
    println!(
        "upload of {firmware_name} ({} bytes), median of {rounds}: to the board's host {:.0} ms, through a peer \
         {:.0} ms ({:.4}x)",
        firmware.len(),
        ms(local),
        ms(forwarded),
        forwarded.as_secs_f64() / local.as_secs_f64(),
    );
    let _ = board.kill();
    let _ = board.wait();
}

fn main() {
    let rounds = arg("--rounds").and_then(|r| r.parse().ok()).unwrap_or(5);
    let firmware = arg("--firmware").unwrap_or_else(|| "big.hex".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run(rounds, &firmware));
}
