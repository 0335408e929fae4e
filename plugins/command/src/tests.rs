//! Unit tests of the command uploader with small stand-in tools.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rerod_devices::testkit::{assert_progress_well_formed, check_offline_contract, recording_context};
use rerod_devices::{CancelToken, Firmware, Phase, Progress, ResetMethod, UploadContext, UploadEvent, UploadJob};

use super::*;

fn options(argv: &[&str], extra: &str) -> toml::Table {
    let argv: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
    toml::from_str(&format!("argv = [{}]\n{extra}", argv.join(", "))).expect("toml")
}

/// A job whose "port" is a plain file that exists (the tools here do not open it).
fn job(dir: &Path, options: toml::Table) -> UploadJob {
    let port = dir.join("port");
    std::fs::write(&port, b"").expect("port file");
    UploadJob {
        firmware: Arc::new(Firmware::from_binary(vec![0x0C, 0x94, 0x5C, 0x00], 0).expect("fw")),
        port,
        baud: 115_200,
        reset: ResetMethod::Dtr,
        model: "uno".into(),
        flash_limit: None,
        options,
    }
}

fn logs(events: &[UploadEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            UploadEvent::Log(l) => Some(l.clone()),
            UploadEvent::Progress(_) => None,
        })
        .collect()
}

#[tokio::test]
async fn passes_the_offline_contract() {
    check_offline_contract(&CommandUploader, options(&["true"], "")).await;
}

#[tokio::test]
async fn runs_the_tool_with_the_firmware_file_and_streams_its_output() {
    let dir = tempfile::tempdir().expect("tmp");
    let script =
        "echo \"port=$1 baud=$2 mcu=$3\"; cat \"$4\"; echo 'Writing 50%'; echo 'on stderr' >&2; echo \"$4\" > \"$5\"";
    let seen = dir.path().join("seen");
    let opts = options(
        &["sh", "-c", script, "tool", "{port}", "{baud}", "{mcu}", "{firmware}", seen.to_str().expect("utf-8")],
        "",
    );
    let (ctx, events) = recording_context(CancelToken::new());
    let report = CommandUploader.upload(job(dir.path(), opts), ctx).await.expect("upload");
    let events = events.lock().expect("events").clone();
    let lines = logs(&events);
    let port = dir.path().join("port");
    assert!(lines.contains(&format!("port={} baud=115200 mcu=m328p", port.display())), "{lines:?}");
    assert!(lines.contains(&":040000000C945C0000".to_owned()), "the firmware file is Intel HEX: {lines:?}");
    assert!(lines.contains(&"on stderr".to_owned()), "{lines:?}");
    assert!(report.log.contains("on stderr") && report.log.contains(":00000001FF"), "{}", report.log);
    assert_eq!(report.bytes_written, 4);
    assert!(events.contains(&UploadEvent::Progress(Progress { phase: Phase::Write, percent: 50 })));
    assert_progress_well_formed(&events);
    // The private firmware file is gone after the upload.
    let firmware = std::fs::read_to_string(&seen).expect("the tool saw a file");
    assert!(!Path::new(firmware.trim()).exists(), "{firmware} was removed");
}

#[tokio::test]
async fn bin_format_writes_the_flat_image() {
    let dir = tempfile::tempdir().expect("tmp");
    let opts = options(&["od", "-An", "-tx1", "{firmware}"], "format = \"bin\"");
    let (ctx, _) = recording_context(CancelToken::new());
    let report = CommandUploader.upload(job(dir.path(), opts), ctx).await.expect("upload");
    assert_eq!(report.log.trim(), "0c 94 5c 00");
}

#[tokio::test]
async fn a_failing_tool_reports_its_status_and_output() {
    let dir = tempfile::tempdir().expect("tmp");
    let opts = options(&["sh", "-c", "echo 'avrdude: stk500_recv(): programmer is not responding' >&2; exit 1"], "");
    let (ctx, _) = recording_context(CancelToken::new());
    let err = CommandUploader.upload(job(dir.path(), opts), ctx).await.expect_err("fails");
    assert!(matches!(err, UploadError::ToolFailed { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("exit status: 1") && msg.contains("not responding"), "{msg}");
}

#[tokio::test]
async fn a_missing_tool_says_to_install_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let (ctx, _) = recording_context(CancelToken::new());
    let err = CommandUploader
        .upload(job(dir.path(), options(&["/nonexistent/avrdude"], "")), ctx)
        .await
        .expect_err("missing");
    assert!(matches!(err, UploadError::ToolNotFound { .. }), "{err}");
    assert!(err.to_string().contains("install it"), "{err}");
}

#[tokio::test]
async fn a_hanging_tool_is_killed_at_the_timeout() {
    let dir = tempfile::tempdir().expect("tmp");
    let (ctx, _) = recording_context(CancelToken::new());
    let start = std::time::Instant::now();
    let err = CommandUploader
        .upload(job(dir.path(), options(&["sleep", "30"], "timeout_secs = 1")), ctx)
        .await
        .expect_err("times out");
    assert!(matches!(err, UploadError::Timeout { .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

/// The tool started a helper in the background; cancelling must kill both.
#[tokio::test]
async fn cancel_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().expect("tmp");
    let pidfile = dir.path().join("helper.pid");
    let script = "sleep 30 & echo $! > \"$1\"; echo started; wait";
    let opts = options(&["sh", "-c", script, "tool", pidfile.to_str().expect("utf-8")], "");
    let cancel = CancelToken::new();
    let trigger = cancel.clone();
    let ctx = UploadContext::new(cancel, move |e| {
        if e == UploadEvent::Log("started".into()) {
            trigger.cancel();
        }
    });
    let err = CommandUploader.upload(job(dir.path(), opts), ctx).await.expect_err("cancelled");
    assert!(matches!(err, UploadError::Cancelled), "{err}");
    let pid: u32 = std::fs::read_to_string(&pidfile).expect("pid").trim().parse().expect("a pid");
    wait_gone(pid).await;
}

/// Waits until `pid` has exited (gone, or a zombie waiting for init).
async fn wait_gone(pid: u32) {
    let stat = PathBuf::from(format!("/proc/{pid}/stat"));
    let gone = async {
        loop {
            match std::fs::read_to_string(&stat) {
                Err(_) => return,
                Ok(s) if s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')) => return,
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), gone).await.expect("the helper process was killed");
}

#[tokio::test]
async fn a_reset_command_runs_before_the_tool() {
    let dir = tempfile::tempdir().expect("tmp");
    let marker = dir.path().join("reset-done");
    let mut job = job(dir.path(), options(&["test", "-e", marker.to_str().expect("utf-8")], ""));
    job.reset = ResetMethod::Command(vec!["touch".into(), marker.to_string_lossy().into_owned()]);
    let (ctx, _) = recording_context(CancelToken::new());
    CommandUploader.upload(job, ctx).await.expect("the tool saw the reset's marker");
}

#[tokio::test]
async fn mcu_must_be_known_when_the_template_uses_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut job = job(dir.path(), options(&["echo", "{mcu}"], ""));
    job.model = "esp32-devkit".into();
    let (ctx, _) = recording_context(CancelToken::new());
    let err = CommandUploader.upload(job.clone(), ctx).await.expect_err("no mcu");
    assert!(err.to_string().contains("mcu"), "{err}");
    job.options = options(&["echo", "{mcu}"], "mcu = \"esp32\"");
    let (ctx, _) = recording_context(CancelToken::new());
    let report = CommandUploader.upload(job, ctx).await.expect("mcu option");
    assert_eq!(report.log.trim(), "esp32");
}

#[test]
fn options_errors_name_their_keys() {
    let table: toml::Table = toml::from_str("format = \"elf\"\ntimeout_secs = 0").expect("toml");
    let errors = CommandUploader.check_options(&table).expect_err("invalid");
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["format", "timeout_secs", "argv"]);
    let errors = CommandUploader.check_options(&options(&["{firmware}"], "")).expect_err("program from a placeholder");
    assert_eq!(errors[0].key, "argv[0]");
}
