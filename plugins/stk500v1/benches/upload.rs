//! Upload benchmark: big.hex (~30 KB) to the simulated Uno, write + verify, with this plugin and with avrdude; prints the medians.
//!
//! `CARGO_TARGET_DIR=... cargo bench -p rerod-stk500v1 --bench upload`
//! (`RUNS=n` to change the number of uploads per tool, default 5). Results
//! are recorded in plugins/stk500v1/BENCH.md.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use rerod_devices::testkit::{self, Rig, RigOptions, read_serial_until, recording_context, rig_job};
use rerod_devices::{CancelToken, Uploader};
use rerod_stk500v1::Stk500v1;

fn main() {
    let runs: usize = std::env::var("RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let firmware = testkit::load_firmware("big.hex");
    let hex = testkit::rig_file("big.hex");
    let pages = firmware.len().div_ceil(128);
    println!("big.hex: {} bytes, {pages} pages of 128", firmware.len());

    // Both tools get the board reset by SIGUSR1 (the rig's RESET pin), timed
    // with the upload: ours runs it as its reset command, avrdude gets it just
    // before it starts (as tests/rig/README.md measured). --reset-on-open is
    // not used: the rig can miss a close followed at once by an open (it
    // recounts openers from /proc before it reads the new open's event), and
    // back-to-back uploads would then find no bootloader.
    let rig = Rig::start(RigOptions::default());
    let mut ours = Vec::new();
    for run in 1..=runs {
        let (ctx, _) = recording_context(CancelToken::new());
        let job = rig_job(firmware.clone(), rig.path(), rig.reset_command(), toml::Table::new());
        let start = Instant::now();
        let report = runtime
            .block_on(Stk500v1.upload(job, ctx))
            .unwrap_or_else(|e| panic!("stk500v1 run {run}: {e}\n{}", rig.log()));
        let took = start.elapsed();
        assert_eq!(report.bytes_written, firmware.len());
        println!("stk500v1 run {run}: {:.3} s", took.as_secs_f64());
        ours.push(took);
    }
    // The board runs what was flashed (the program checks its own table).
    let seen = read_serial_until(rig.path(), "big sum=3786152 size=29696", Duration::from_secs(10));
    assert!(seen.contains("big sum=3786152"));
    drop(rig);

    let rig = Rig::start(RigOptions::default());
    let mut theirs = Vec::new();
    for run in 1..=runs {
        let start = Instant::now();
        testkit::signal(rig.pid(), libc::SIGUSR1);
        let out = Command::new("avrdude")
            .args(["-p", "m328p", "-c", "arduino", "-P"])
            .arg(rig.path())
            .args(["-b", "115200", "-D", "-U"])
            .arg(format!("flash:w:{}:i", hex.display()))
            .output()
            .expect("run avrdude");
        let took = start.elapsed();
        assert!(out.status.success(), "avrdude run {run}: {}", String::from_utf8_lossy(&out.stderr));
        println!("avrdude  run {run}: {:.3} s", took.as_secs_f64());
        theirs.push(took);
    }
    drop(rig);

    // Optiboot's UART runs at 16 MHz / (8 * (16 + 1)) = 117,647 baud: 85 µs a byte.
    // Per page: write 137 bytes out + 4 in; verify 9 out + 132 in; one at a time.
    let byte_time = 10.0 / 117_647.0;
    let line_limit = pages as f64 * (141.0 + 141.0) * byte_time;
    println!();
    println!("| tool | median (s) | runs (s) |");
    println!("| --- | --- | --- |");
    for (name, times) in [("rerod stk500v1", &mut ours), ("avrdude 7.1 -c arduino", &mut theirs)] {
        times.sort();
        let all: Vec<String> = times.iter().map(|t| format!("{:.2}", t.as_secs_f64())).collect();
        println!("| {name} | {:.2} | {} |", times[times.len() / 2].as_secs_f64(), all.join(", "));
    }
    println!("\nline limit for this protocol (replies awaited): {line_limit:.2} s");
}
