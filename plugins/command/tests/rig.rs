//! The command uploader running Debian's avrdude against the simulated Uno (tests/rig).

use std::time::Duration;

use rerod_command::CommandUploader;
use rerod_devices::testkit::{self, Rig, RigOptions, check_rig_contract, recording_context, rig_job};
use rerod_devices::{CancelToken, Phase, Progress, ResetMethod, UploadContext, UploadError, UploadEvent, Uploader};

/// avrdude as a lab would configure it for an Uno.
fn avrdude() -> toml::Table {
    toml::from_str(
        r#"argv = ["avrdude", "-p", "{mcu}", "-c", "arduino", "-P", "{port}", "-b", "{baud}", "-D", "-U", "flash:w:{firmware}:i"]
           timeout_secs = 60"#,
    )
    .expect("toml")
}

#[tokio::test]
async fn avrdude_flashes_and_verifies_the_board() {
    // avrdude pulses DTR itself (harmlessly failing on the pty); the rig resets on open.
    let report = check_rig_contract(
        &CommandUploader,
        avrdude(),
        RigOptions { reset_on_open: true, app: None, ..RigOptions::default() },
        |_| ResetMethod::Dtr,
    )
    .await;
    assert!(report.log.contains("468 bytes of flash verified"), "{}", report.log);
}

#[tokio::test]
async fn cancelling_avrdude_frees_the_port_for_the_next_upload() {
    let rig = Rig::start(RigOptions { reset_on_open: true, app: None, ..RigOptions::default() });
    let cancel = CancelToken::new();
    let trigger = cancel.clone();
    let ctx = UploadContext::new(cancel, move |e| {
        if let UploadEvent::Progress(Progress { phase: Phase::Write, percent }) = e
            && percent >= 10
        {
            trigger.cancel();
        }
    });
    let job = rig_job(testkit::load_firmware("big.hex"), rig.path(), ResetMethod::Dtr, avrdude());
    let started = std::time::Instant::now();
    let result = CommandUploader.upload(job, ctx).await;
    assert!(matches!(result, Err(UploadError::Cancelled)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(6), "cancelled well before a full upload");

    // avrdude is gone and the port is free: a second upload works. Optiboot
    // may still be waiting for the rest of the killed upload's page, so the
    // board is reset first (by signal: the rig's reset-on-open can miss a
    // close followed at once by an open).
    let (ctx, _) = recording_context(CancelToken::new());
    let job = rig_job(testkit::load_firmware("counter.hex"), rig.path(), rig.reset_command(), avrdude());
    let report = CommandUploader.upload(job, ctx).await.unwrap_or_else(|e| panic!("second upload: {e}\n{}", rig.log()));
    assert!(report.log.contains("bytes of flash verified"), "{}", report.log);
}
