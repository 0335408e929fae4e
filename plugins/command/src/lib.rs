//! rerod uploader that runs an external flashing tool (avrdude, esptool, bossac, picotool, dfu-util, arduino-cli) from an argv template.
//!
//! The argv comes from the device's config only, never from a user: the
//! user's firmware is written to a private temp file and only that file's
//! path reaches the command line, through `{firmware}`. There is no shell:
//! each template element becomes exactly one argument, whatever it expands
//! to. The tool runs in its own process group with a timeout; its stdout and
//! stderr are streamed line by line as upload log events (progress is read
//! from avrdude-style bars and "NN%" figures), and the whole group is killed
//! when the upload is cancelled, times out, or the future is dropped.
//!
//! Options: `argv` (required, e.g. `["avrdude", "-p", "{mcu}", "-c",
//! "arduino", "-P", "{port}", "-b", "{baud}", "-D", "-U",
//! "flash:w:{firmware}:i"]`), `format` (`"hex"` or `"bin"`, how the firmware
//! file is written; default `"hex"`), `timeout_secs` (default 120), `mcu`
//! (default: the model's avrdude part id).

mod output;
mod template;

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rerod_devices::tool::ProcessGroup;
use rerod_devices::{
    Firmware, OptionError, Options, Phase, ResetError, ResetMethod, UploadContext, UploadError, UploadFuture,
    UploadJob, UploadReport, Uploader, model,
};
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;

pub use output::ToolOutput;
pub use template::{Template, Values, Var};

pub const NAME: &str = "command";

/// Runs the configured tool; registered as `plugin = "command"`.
#[derive(Debug, Default, Clone, Copy)]
pub struct CommandUploader;

const KNOWN_OPTIONS: &[&str] = &["argv", "format", "timeout_secs", "mcu"];
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// How the firmware file handed to the tool is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Hex,
    Bin,
}

/// The options, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub template: Template,
    pub format: FileFormat,
    pub timeout: Duration,
    pub mcu: Option<String>,
}

impl Settings {
    pub fn read(options: &toml::Table) -> Result<Settings, Vec<OptionError>> {
        let mut o = Options::new(options, KNOWN_OPTIONS);
        let argv = o.string_list("argv");
        let format = match o.string("format") {
            None | Some("hex") => FileFormat::Hex,
            Some("bin") => FileFormat::Bin,
            Some(_) => {
                o.error("format", "must be \"hex\" or \"bin\"");
                FileFormat::Hex
            }
        };
        let timeout = o.int("timeout_secs", 1..=3600).map_or(DEFAULT_TIMEOUT, |s| Duration::from_secs(s as u64));
        let mcu = o.string("mcu").map(str::to_owned);
        let template = match argv {
            Some(argv) => match Template::parse(&argv) {
                Ok(t) => Some(t),
                Err(errors) => {
                    for e in errors {
                        o.error(&e.key, &e.message);
                    }
                    None
                }
            },
            None => {
                if !options.contains_key("argv") {
                    o.error(
                        "argv",
                        "required: the tool and its arguments, e.g. [\"avrdude\", \"-P\", \"{port}\", ...]",
                    );
                }
                None
            }
        };
        o.finish()?;
        let template = template.ok_or_else(|| vec![OptionError::new("argv", "invalid")])?;
        Ok(Settings { template, format, timeout, mcu })
    }
}

impl Uploader for CommandUploader {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check_options(&self, options: &toml::Table) -> Result<(), Vec<OptionError>> {
        Settings::read(options).map(|_| ())
    }

    fn upload(&self, job: UploadJob, ctx: UploadContext) -> UploadFuture {
        Box::pin(upload(job, ctx))
    }
}

async fn upload(job: UploadJob, ctx: UploadContext) -> Result<UploadReport, UploadError> {
    let start = Instant::now();
    let settings = Settings::read(&job.options).map_err(UploadError::BadOptions)?;
    let model = model::lookup(&job.model);
    match job.flash_limit.or(model.map(|m| m.flash_limit)) {
        Some(limit) => job.firmware.check_fits(limit)?,
        None if job.firmware.is_empty() => return Err(rerod_devices::FirmwareError::Empty.into()),
        None => {}
    }
    let mcu = settings.mcu.clone().or(model.map(|m| m.mcu.to_owned()));
    if mcu.is_none() && settings.template.uses(Var::Mcu) {
        return Err(UploadError::BadOptions(vec![OptionError::new(
            "mcu",
            format!("argv uses {{mcu}} but model {:?} has no default: set the `mcu` option", job.model),
        )]));
    }
    ctx.check_cancelled()?;
    if !job.port.exists() {
        return Err(UploadError::PortNotFound { path: job.port.clone() });
    }

    let mut log = String::new();
    ctx.progress(Phase::Reset, 0);
    match &job.reset {
        // The tool resets the board itself (avrdude's arduino programmer
        // pulses DTR); a configured command runs first for hosts without DTR.
        ResetMethod::Command(_) => {
            let reset = job.reset.clone();
            let cancel = ctx.cancel_token().clone();
            match tokio::task::spawn_blocking(move || reset.run(None, &cancel)).await {
                Ok(Ok(_)) => {}
                Ok(Err(ResetError::Cancelled)) => return Err(UploadError::Cancelled),
                Ok(Err(e)) => return Err(e.into()),
                Err(e) => return Err(UploadError::Internal(format!("the reset thread failed: {e}"))),
            }
        }
        ResetMethod::Dtr | ResetMethod::None => {}
    }

    let workdir = WorkDir::create()
        .map_err(|e| UploadError::Io { context: "creating a temp dir for the firmware".into(), source: e })?;
    let firmware_path = workdir
        .write_firmware(&job.firmware, settings.format)
        .map_err(|e| UploadError::Io { context: "writing the firmware file".into(), source: e })?;
    let values = Values {
        port: job.port.to_string_lossy().into_owned(),
        firmware: firmware_path.to_string_lossy().into_owned(),
        baud: job.baud.to_string(),
        mcu: mcu.unwrap_or_default(),
        model: job.model.clone(),
        address: format!("{:#x}", job.firmware.start()),
    };
    let argv = settings.template.expand(&values);
    let program = argv[0].clone();
    ctx.log(format!("running {}", argv.join(" ")));

    let mut output = ToolOutput::new(Phase::Write);
    ctx.progress(Phase::Write, 0);
    let status = run_tool(&argv, settings.timeout, &ctx, &mut output).await;
    drop(workdir);
    let _ = std::fmt::Write::write_str(&mut log, &output.text());
    let status = status?;
    if !status.success() {
        return Err(UploadError::ToolFailed { program, status: status.to_string(), output: output.tail(40) });
    }
    ctx.progress(Phase::Done, 100);
    let duration = start.elapsed();
    tracing::info!(port = %job.port.display(), %program, ms = duration.as_millis() as u64, "command upload done");
    Ok(UploadReport { bytes_written: job.firmware.len(), duration, log })
}

/// Runs the tool to completion, streaming its output; kills its process
/// group on cancel, on timeout, and if this future is dropped.
async fn run_tool(
    argv: &[String],
    timeout: Duration,
    ctx: &UploadContext,
    output: &mut ToolOutput,
) -> Result<std::process::ExitStatus, UploadError> {
    let program = &argv[0];
    let mut child = rerod_devices::tool::command(program, &argv[1..])
        .spawn()
        .map_err(|e| UploadError::ToolNotFound { program: program.clone(), message: e.to_string() })?;
    let group = ProcessGroup::of(&child);

    // Both pipes feed one channel, so lines keep the order they were printed in
    // as far as the two pipes allow.
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let pipes: [Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>; 2] =
        [child.stdout.take().map(|p| Box::new(p) as _), child.stderr.take().map(|p| Box::new(p) as _)];
    for mut pipe in pipes.into_iter().flatten() {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf).await {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);

    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let outcome = loop {
        tokio::select! {
            Some(chunk) = rx.recv() => output.feed(&chunk, ctx),
            status = child.wait() => break status.map_err(|e| UploadError::Io { context: format!("waiting for `{program}`"), source: e }),
            () = ctx.cancel_token().cancelled() => break Err(UploadError::Cancelled),
            () = &mut deadline => break Err(UploadError::Timeout { waiting_for: format!("`{program}` to finish"), after: timeout }),
        }
    };
    // Whatever happened, nothing of the tool may outlive the upload: a
    // helper it left running would keep the port (and the pipes) open.
    drop(group);
    if outcome.is_err() {
        let _ = child.wait().await;
    }
    // The pipes close once the group is gone; take what is left, briefly.
    let drain = async {
        while let Some(chunk) = rx.recv().await {
            output.feed(&chunk, ctx);
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    output.finish(ctx);
    outcome
}

/// A private directory (0700) holding the firmware file; removed on drop.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create() -> std::io::Result<WorkDir> {
        static N: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        loop {
            let n = N.fetch_add(1, Ordering::Relaxed);
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
            let path = base.join(format!("rerod-upload-{}-{n}-{nanos:x}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(WorkDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn write_firmware(&self, firmware: &Firmware, format: FileFormat) -> std::io::Result<PathBuf> {
        let (name, bytes) = match format {
            FileFormat::Hex => ("firmware.hex", firmware.to_ihex().into_bytes()),
            FileFormat::Bin => ("firmware.bin", firmware.flatten().bytes),
        };
        let path = self.path.join(name);
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        Ok(path)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests;
