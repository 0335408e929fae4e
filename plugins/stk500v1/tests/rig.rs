//! The stk500v1 uploader against the simulated Uno (real Optiboot in simavr, tests/rig).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rerod_devices::testkit::{self, Rig, RigOptions, check_rig_contract, recording_context, rig_job};
use rerod_devices::{
    CancelToken, ConsoleConfig, DevicePort, Phase, PortSpec, PortState, Progress, ResetMethod, UploadContext,
    UploadError, UploadEvent, Uploader,
};
use rerod_stk500v1::Stk500v1;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn flashes_a_blank_board_reset_by_command() {
    check_rig_contract(&Stk500v1, toml::Table::new(), RigOptions::default(), Rig::reset_command).await;
}

#[tokio::test]
async fn reset_on_open_board_with_dtr_reset_is_noted_and_flashed() {
    // As on a pty, DTR cannot be pulsed; the open itself reset the board.
    check_rig_contract(
        &Stk500v1,
        toml::Table::new(),
        RigOptions { reset_on_open: true, app: None, ..RigOptions::default() },
        |_| ResetMethod::Dtr,
    )
    .await;
}

#[tokio::test]
async fn a_running_program_without_reset_is_no_sync() {
    let rig = Rig::start(RigOptions { reset_on_open: false, app: Some("counter.hex".into()), ..RigOptions::default() });
    let options = toml::from_str("sync_window_ms = 300\nreset_attempts = 2").expect("toml");
    let (ctx, _) = recording_context(CancelToken::new());
    let job = rig_job(testkit::load_firmware("counter.hex"), rig.path(), ResetMethod::None, options);
    let result = Stk500v1.upload(job, ctx).await;
    assert!(matches!(result, Err(UploadError::NoSync { attempts: 2, .. })), "{result:?}");
}

#[tokio::test]
async fn killing_the_board_mid_upload_is_port_vanished() {
    let rig = Rig::start(RigOptions { reset_on_open: true, app: None, ..RigOptions::default() });
    let pid = rig.pid();
    let killed = Arc::new(AtomicBool::new(false));
    let flag = killed.clone();
    let ctx = UploadContext::new(CancelToken::new(), move |event| {
        if let UploadEvent::Progress(Progress { phase: Phase::Write, percent }) = event
            && percent >= 10
            && !flag.swap(true, Ordering::SeqCst)
        {
            testkit::signal(pid, libc::SIGKILL);
        }
    });
    let job = rig_job(testkit::load_firmware("big.hex"), rig.path(), ResetMethod::None, toml::Table::new());
    let result = Stk500v1.upload(job, ctx).await;
    assert!(killed.load(Ordering::SeqCst));
    let err = result.expect_err("the board went away");
    assert!(matches!(err, UploadError::PortVanished { .. }), "{err}");
}

/// A host too busy to run the board for 3 s mid-upload (longer than a
/// reply's 2 s of slack): the page whose
/// reply missed its deadline is sent again after a re-sync, and the upload
/// verifies.
#[tokio::test]
async fn a_board_stalled_mid_upload_is_retried_and_verifies() {
    let rig = Rig::start(RigOptions { reset_on_open: true, app: None, ..RigOptions::default() });
    let (ctx, events) = testkit::stalling_context(rig.pid(), Phase::Write, 30, Duration::from_secs(3));
    let job = rig_job(testkit::load_firmware("counter.hex"), rig.path(), ResetMethod::None, toml::Table::new());
    let report =
        Stk500v1.upload(job, ctx).await.unwrap_or_else(|e| panic!("upload failed: {e}\nrig log:\n{}", rig.log()));
    assert!(report.log.contains("attempt 1 of 3 failed"), "{}", report.log);
    assert!(report.log.contains("verified"), "{}", report.log);
    testkit::assert_progress_well_formed(&events.lock().expect("events"));
}

/// Optiboot leaves for the program mid-write, as its 1 s watchdog makes it
/// do when the host stalls that long between two commands. The rig's power
/// cycle (SIGUSR2) gets there without depending on how fast a loaded host
/// runs simavr: Optiboot stays only after an external reset, so it starts
/// the half-written program. The re-sync goes unanswered, the board is
/// reset into Optiboot again, and the upload goes on from its page and
/// verifies.
#[tokio::test]
async fn a_bootloader_that_left_for_the_program_mid_write_is_reset_and_the_upload_goes_on() {
    let rig = Rig::start(RigOptions::default());
    let (pid, rig_log) = (rig.pid(), rig.log_path().to_owned());
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let left = AtomicBool::new(false);
    let ctx = UploadContext::new(CancelToken::new(), move |e| {
        if let UploadEvent::Progress(Progress { phase: Phase::Write, percent }) = e
            && percent >= 30
            && !left.swap(true, Ordering::SeqCst)
        {
            testkit::signal(pid, libc::SIGUSR2);
            // The next command must find the program, not Optiboot.
            let until = std::time::Instant::now() + Duration::from_secs(10);
            while !std::fs::read_to_string(&rig_log).unwrap_or_default().contains("SIGUSR2: power cycled")
                && std::time::Instant::now() < until
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        sink.lock().expect("events").push(e);
    });
    let job = rig_job(testkit::load_firmware("counter.hex"), rig.path(), rig.reset_command(), toml::Table::new());
    let report =
        Stk500v1.upload(job, ctx).await.unwrap_or_else(|e| panic!("upload failed: {e}\nrig log:\n{}", rig.log()));
    assert!(report.log.contains("resetting the board into its bootloader again"), "{}", report.log);
    assert!(report.log.contains("verified"), "{}", report.log);
    testkit::assert_progress_well_formed(&events.lock().expect("events"));
}

/// The daemon's flow: the console reads the board, an upload leases the
/// port, the console comes back and talks to the new program.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pauses_for_an_upload_and_resumes_with_the_new_program() {
    let rig = Rig::start(RigOptions { reset_on_open: true, app: Some("counter.hex".into()), ..RigOptions::default() });
    let mut config = ConsoleConfig::new(PortSpec::Path(rig.path().to_owned()), 115_200);
    config.reopen_interval = Duration::from_millis(100);
    let device = DevicePort::spawn(config);
    let (_, mut output) = device.subscribe();
    recv_until(&mut output, b"count ").await;

    let lease = device.lease().await.expect("lease");
    assert_eq!(device.current_state(), PortState::Leased);
    let (ctx, events) = recording_context(CancelToken::new());
    // The reset is the rig's signal: reset-on-open cannot be relied on right
    // after the console's close (the rig may miss a close directly followed
    // by an open).
    let job = rig_job(testkit::load_firmware("echo.hex"), lease.path(), rig.reset_command(), toml::Table::new());
    let report = Stk500v1.upload(job, ctx).await.unwrap_or_else(|e| panic!("upload: {e}\n{}", rig.log()));
    testkit::assert_progress_well_formed(&events.lock().expect("events"));
    assert!(report.log.contains("bytes written"), "{}", report.log);
    drop(lease);

    // The console reopens the port and talks to the new program. Whether this
    // open reset the board again (Optiboot's second of silence) or not, the
    // echo program answers within a few tries.
    let mut state = device.state();
    state.wait_for(|s| matches!(s, PortState::Online { .. })).await.expect("console back online");
    let mut got = Vec::new();
    for _ in 0..20 {
        device.write(bytes::Bytes::from_static(b"ping")).await.expect("write");
        let wait = async {
            while !contains(&got, b"ping") {
                got.extend_from_slice(&output.recv().await.expect("console open"));
            }
        };
        if tokio::time::timeout(Duration::from_millis(500), wait).await.is_ok() {
            break;
        }
    }
    assert!(contains(&got, b"ping"), "the echo program never answered: {:?}", String::from_utf8_lossy(&got));
    device.shutdown().await;
}

async fn recv_until(rx: &mut tokio::sync::broadcast::Receiver<bytes::Bytes>, wanted: &[u8]) {
    let mut got = Vec::new();
    let wait = async {
        while !contains(&got, wanted) {
            got.extend_from_slice(&rx.recv().await.expect("console open"));
        }
    };
    if tokio::time::timeout(Duration::from_secs(15), wait).await.is_err() {
        panic!("no {:?} on the console; got {:?}", String::from_utf8_lossy(wanted), String::from_utf8_lossy(&got));
    }
}
