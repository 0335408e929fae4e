//! Compiling sketches: a user's `{code}` → an Intel HEX program, with the
//! toolchain configured for the board's model (`[compilers.<model>]`), or
//! Debian's `arduino-builder` for the models it knows when it is installed.
//!
//! The code only ever reaches a file (`Sketch/Sketch.ino` in a private temp
//! directory); the argv comes from config or the built-in default. No shell;
//! the tool runs in its own process group, killed at the deadline or when the
//! request is dropped, confined by `sandbox.rs` (cleared environment,
//! rlimits, Landlock), and its output is read only up to [`MAX_OUTPUT`].
//! The CPU time of its whole process tree is measured as it exits and handed
//! to the caller's `charge`, so the lab can share compile time fairly.

mod sandbox;

use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rerod_devices::{Firmware, FirmwareError};
use tokio::io::{AsyncRead, AsyncReadExt as _};

use crate::config::{CompileConfig, Config};
pub use sandbox::{SandboxStatus, status as sandbox_status};

/// Compiler output kept for the client, at most (the head is kept: GCC's
/// first errors are the ones that matter). Reading stops there, so a tool
/// that writes more gets a broken pipe rather than the daemon's memory.
const MAX_OUTPUT: usize = 64 << 10;
/// The built-in toolchain's time limit.
const BUILTIN_TIMEOUT: Duration = Duration::from_secs(180);
/// Where the built-in toolchain is looked for (besides `PATH`).
const ARDUINO_BUILDER: &str = "arduino-builder";

/// How one model's sketches are compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toolchain {
    /// The argv template: `{sketch}`, `{sketch_dir}`, `{build}`.
    pub argv: Vec<String>,
    pub timeout: Duration,
    /// The sandbox and limits it runs under (`[compile]`).
    pub confinement: CompileConfig,
}

/// A compiled program and what the compiler said.
#[derive(Debug)]
pub struct Compiled {
    pub firmware: Firmware,
    pub output: String,
    pub duration: Duration,
}

/// Why code could not be compiled. Messages are shown to users as they are.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(
        "no compiler is configured for board model {model:?}: upload a compiled .hex instead (Content-Type: application/octet-stream), or ask a lab admin to add [compilers.{model}]"
    )]
    NoCompiler { model: String },
    #[error("code is empty: send the sketch's source code")]
    EmptyCode,
    #[error("compilation failed:\n{output}")]
    Failed { output: String },
    #[error("compilation took longer than {} s and was stopped", after.as_secs())]
    Timeout { after: Duration },
    #[error("cannot run the compiler `{program}`: {message}; the lab's toolchain is not installed or misconfigured")]
    Spawn { program: String, message: String },
    #[error(
        "the compiler succeeded but left no .hex file in its build directory; the lab's toolchain is misconfigured"
    )]
    NoOutput,
    #[error("the compiler's .hex output does not load: {0}")]
    BadOutput(FirmwareError),
    #[error(
        "compiling is disabled: {reason}; a lab admin can enable Landlock in the kernel (Linux 5.13 or later, with landlock in the lsm= boot parameter) or, accepting that sketches can read what the daemon can, set compile.sandbox = \"off\""
    )]
    SandboxUnavailable { reason: String },
    #[error("compiling: {0}")]
    Io(String),
}

/// The toolchain for `model`: the config's, else the built-in one when the
/// model has an Arduino board id and `arduino-builder` is installed.
pub fn toolchain_for(config: &Config, model: &str) -> Option<Toolchain> {
    let model = model.to_ascii_lowercase();
    if let Some(c) = config.compilers.get(&model) {
        return Some(Toolchain { argv: c.argv.clone(), timeout: c.timeout, confinement: config.compile.clone() });
    }
    let fqbn = builtin_fqbn(&model)?;
    find_in_path(ARDUINO_BUILDER)?;
    let argv = [
        ARDUINO_BUILDER,
        "-compile",
        "-hardware",
        "/usr/share/arduino/hardware",
        "-hardware",
        "/usr/share/arduino-builder",
        "-tools",
        "/usr/share/arduino-builder",
        "-fqbn",
        fqbn,
        "-build-path",
        "{build}",
        // Debian's avr-libc lacks DECIMAL_DIG, which the core's Print.cpp needs.
        "-prefs=compiler.cpp.extra_flags=-DDECIMAL_DIG=__DECIMAL_DIG__",
        "{sketch}",
    ];
    Some(Toolchain {
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        timeout: BUILTIN_TIMEOUT,
        confinement: config.compile.clone(),
    })
}

/// The Arduino board id (`-fqbn`) of the models the built-in toolchain knows.
fn builtin_fqbn(model: &str) -> Option<&'static str> {
    match model {
        "uno" => Some("arduino:avr:uno"),
        "nano" => Some("arduino:avr:nano:cpu=atmega328"),
        "nano-old" => Some("arduino:avr:nano:cpu=atmega328old"),
        "mega2560" => Some("arduino:avr:mega:cpu=atmega2560"),
        _ => None,
    }
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}

/// Compiles `code` with `toolchain`. Once the tool has run, `charge` gets
/// the user and system CPU time it and its descendants used, even when this
/// future is dropped before then (the tool is stopped, and still counted);
/// when it never ran, `charge` is dropped uncalled.
///
/// The compiler's messages name the sketch `shown_as` (the student's own
/// file name, else [`SKETCH_NAME`]) instead of its path in the lab's build
/// directory, and other paths in that directory relative to it.
pub async fn compile(
    toolchain: &Toolchain,
    code: &str,
    shown_as: Option<&str>,
    charge: impl FnOnce(Duration) + Send + 'static,
) -> Result<Compiled, CompileError> {
    if code.trim().is_empty() {
        return Err(CompileError::EmptyCode);
    }
    let started = Instant::now();
    let dir = WorkDir::create().map_err(|e| CompileError::Io(format!("creating a build directory: {e}")))?;
    let sketch_dir = dir.path.join("Sketch");
    let sketch = sketch_dir.join("Sketch.ino");
    let build = dir.path.join("build");
    let home = dir.path.join("home");
    for d in [&sketch_dir, &build, &home] {
        std::fs::DirBuilder::new().mode(0o700).create(d).map_err(|e| CompileError::Io(e.to_string()))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&sketch)
        .and_then(|mut f| std::io::Write::write_all(&mut f, code.as_bytes()))
        .map_err(|e| CompileError::Io(format!("writing the sketch: {e}")))?;
    let expand = |arg: &str| {
        arg.replace("{sketch_dir}", &sketch_dir.to_string_lossy())
            .replace("{sketch}", &sketch.to_string_lossy())
            .replace("{build}", &build.to_string_lossy())
    };
    let argv: Vec<String> = toolchain.argv.iter().map(|a| expand(a)).collect();
    let dirs = sandbox::Dirs { sketch: &sketch_dir, build: &build, home: &home };
    let (success, output) = run(&argv, &dirs, &dir.path, toolchain, charge).await?;
    let output = as_the_student_sees_it(&output, &sketch, &dir.path, shown_as.unwrap_or(SKETCH_NAME));
    if !success {
        return Err(CompileError::Failed { output });
    }
    let hex = find_hex(&build).ok_or(CompileError::NoOutput)?;
    let bytes = std::fs::read(&hex).map_err(|e| CompileError::Io(format!("reading {}: {e}", hex.display())))?;
    let firmware = Firmware::parse_ihex(&bytes).map_err(CompileError::BadOutput)?;
    Ok(Compiled { firmware, output, duration: started.elapsed() })
}

/// What compiler messages call a sketch sent without a file name.
pub const SKETCH_NAME: &str = "sketch.ino";

/// Compiler output with the sketch's path in the build directory replaced by
/// `name`, and the build directory's other paths made relative to it: the
/// student reads `blink.ino:3:5: error: ...`, not a temporary path of the host.
fn as_the_student_sees_it(output: &str, sketch: &Path, dir: &Path, name: &str) -> String {
    let dir = format!("{}/", dir.to_string_lossy());
    output.replace(sketch.to_string_lossy().as_ref(), name).replace(&dir, "")
}

/// Runs the tool in `cwd`, confined; returns whether it succeeded and its
/// output (stdout then stderr, capped at [`MAX_OUTPUT`]).
async fn run(
    argv: &[String],
    dirs: &sandbox::Dirs<'_>,
    cwd: &Path,
    toolchain: &Toolchain,
    charge: impl FnOnce(Duration) + Send + 'static,
) -> Result<(bool, String), CompileError> {
    let name = &argv[0];
    let spawn_error = |message: String| CompileError::Spawn { program: name.clone(), message };
    // Resolved with the daemon's PATH, so the admin's toolchain is found; the
    // tool itself gets a minimal one.
    let program = sandbox::resolve_program(name, std::env::var_os("PATH").as_deref())
        .ok_or_else(|| spawn_error("not found, or not an executable file".to_owned()))?;
    let ruleset = sandbox::prepare(&toolchain.confinement, &program, dirs).map_err(|e| match e {
        sandbox::PrepareError::Unsupported => {
            CompileError::SandboxUnavailable { reason: "this kernel does not support Landlock".to_owned() }
        }
        sandbox::PrepareError::Failed(reason) => {
            CompileError::SandboxUnavailable { reason: format!("the Landlock sandbox cannot be set up: {reason}") }
        }
    })?;
    let mut command = rerod_devices::tool::command(&program.to_string_lossy(), &argv[1..]);
    command.current_dir(cwd).env_clear().envs(sandbox::environment(&program, dirs.home));
    sandbox::confine(&mut command, &toolchain.confinement.limits, ruleset);
    let mut child = command.spawn().map_err(|e| spawn_error(e.to_string()))?;
    let group = rerod_devices::tool::ProcessGroup::of(&child);
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    // The tool is waited for in a task of its own, so its CPU time is
    // charged even when this request goes away first (the group is then
    // killed below, and the task sees it exit).
    let unmeasured = Duration::from_secs(toolchain.confinement.limits.cpu_secs);
    let exited = tokio::spawn(reap(child, charge, unmeasured));
    let collect = async {
        let (out, err) = tokio::join!(read_capped(stdout, MAX_OUTPUT), read_capped(stderr, MAX_OUTPUT));
        let status = exited.await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        (status, out, err)
    };
    let outcome = tokio::time::timeout(toolchain.timeout, collect).await;
    // Nothing the compiler started may outlive it (and at the deadline, the whole group is stopped).
    drop(group);
    let (status, out, err) = outcome.map_err(|_| CompileError::Timeout { after: toolchain.timeout })?;
    let status = status.map_err(|e| CompileError::Io(format!("waiting for `{name}`: {e}")))?;
    let mut text = String::from_utf8_lossy(&out.0).into_owned();
    text.push_str(&String::from_utf8_lossy(&err.0));
    Ok((status.success(), head(text, out.1 || err.1)))
}

/// Waits for the tool to exit, charges the CPU time of its process tree (or
/// `unmeasured`, the most one process may use, should the kernel not say),
/// then reaps it for its exit status.
async fn reap(
    mut child: tokio::process::Child,
    charge: impl FnOnce(Duration),
    unmeasured: Duration,
) -> std::io::Result<std::process::ExitStatus> {
    let measured = match child.id() {
        Some(pid) => tokio::task::spawn_blocking(move || cpu_at_exit(pid)).await.ok().and_then(Result::ok),
        None => None,
    };
    let status = child.wait().await;
    charge(measured.unwrap_or(unmeasured));
    status
}

/// Blocks until our child `pid` has exited, and returns the user and system
/// CPU time of it and of every descendant it waited for (GCC's driver waits
/// for cc1plus, as and ld; a shell or arduino-builder waits for the driver).
/// The child is left unreaped (`WNOWAIT`) for tokio to collect its status.
fn cpu_at_exit(pid: u32) -> std::io::Result<Duration> {
    loop {
        // SAFETY: both are plain C structs for which all-zero bytes are valid.
        let (mut info, mut usage): (libc::siginfo_t, libc::rusage) = unsafe { std::mem::zeroed() };
        // SAFETY: the raw waitid(2) system call, whose fifth argument (the
        // rusage of the exited child and its waited-for descendants) glibc's
        // wrapper does not expose; it writes only into the two structs above.
        let done = unsafe {
            libc::syscall(
                libc::SYS_waitid,
                libc::P_PID,
                pid as libc::id_t,
                &mut info as *mut libc::siginfo_t,
                libc::WEXITED | libc::WNOWAIT,
                &mut usage as *mut libc::rusage,
            )
        };
        if done == 0 {
            return Ok(cpu_time(&usage));
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// User plus system time of `usage`.
fn cpu_time(usage: &libc::rusage) -> Duration {
    let time = |t: libc::timeval| Duration::new(t.tv_sec.max(0) as u64, t.tv_usec.clamp(0, 999_999) as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Reads `pipe` until its end or until `cap` bytes, whichever comes first;
/// says whether there was more. The pipe is closed on return, so a tool
/// still writing gets a broken pipe instead of filling memory.
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>, cap: usize) -> (Vec<u8>, bool) {
    let Some(mut pipe) = pipe else { return (Vec::new(), false) };
    let mut kept = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return (kept, false),
            Ok(n) => {
                let room = cap - kept.len();
                if n > room {
                    kept.extend_from_slice(&chunk[..room]);
                    return (kept, true);
                }
                kept.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// At most [`MAX_OUTPUT`] bytes of `text`, from its start, marked when cut.
fn head(mut text: String, cut_already: bool) -> String {
    let cut = text.len() > MAX_OUTPUT;
    if cut {
        let mut end = MAX_OUTPUT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    if cut || cut_already {
        text.push_str("\n[output cut at 64 KiB]\n");
    }
    text
}

/// The program the tool left: a `.hex` that is not the bootloader-included variant.
fn find_hex(build: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(build)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            name.ends_with(".hex") && !name.contains("with_bootloader")
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

/// A private (0700) temp directory, removed on drop.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create() -> std::io::Result<WorkDir> {
        static N: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = N.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("rerod-compile-{}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(WorkDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // A leftover of an earlier process with our pid: take it over.
                    let _ = std::fs::remove_dir_all(&path);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SandboxMode, ToolLimits};

    /// The sandbox as a lab runs it: Landlock where the kernel has it.
    fn confinement() -> CompileConfig {
        let config = CompileConfig::default();
        if sandbox_status(&config) == SandboxStatus::Landlock {
            config
        } else {
            CompileConfig { sandbox: SandboxMode::Off, ..config }
        }
    }

    fn sh(script: &str) -> Toolchain {
        Toolchain {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            timeout: Duration::from_secs(10),
            confinement: confinement(),
        }
    }

    /// What a failing tool printed.
    async fn output_of(tool: &Toolchain) -> String {
        match compile(tool, "x", None, |_| ()).await {
            Err(CompileError::Failed { output }) => output,
            other => panic!("expected a failure with output, got {other:?}"),
        }
    }

    /// Regression: compiler errors cited the lab's temporary path
    /// (/tmp/rerod-compile-.../Sketch/Sketch.ino:3:5) instead of the
    /// student's file.
    #[tokio::test]
    async fn compiler_messages_name_the_students_file_not_the_build_path() {
        let tool = Toolchain {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "echo \"$0:3:5: error: expected ';'\" >&2; echo \"In file included from $1/core/Arduino.h:1\" >&2; exit 1".into(),
                "{sketch}".into(),
                "{build}".into(),
            ],
            ..sh("")
        };
        let named = |name| {
            let tool = tool.clone();
            async move {
                match compile(&tool, "x", name, |_| ()).await {
                    Err(CompileError::Failed { output }) => output,
                    other => panic!("expected a failure with output, got {other:?}"),
                }
            }
        };
        let output = named(Some("blink.ino")).await;
        assert!(output.starts_with("blink.ino:3:5: error: expected ';'\n"), "{output}");
        assert!(output.contains("In file included from build/core/Arduino.h:1"), "{output}");
        assert!(!output.contains("/tmp") && !output.contains("Sketch/"), "{output}");
        assert!(named(None).await.starts_with("sketch.ino:3:5: error"));
    }

    #[tokio::test]
    async fn the_code_reaches_a_file_and_the_hex_comes_back() {
        // A "compiler" that checks the sketch holds the code and writes a hex.
        let tool = Toolchain {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "grep -q 'void setup' \"$0\" && echo compiled && printf ':0100000011EE\\n:00000001FF\\n' > \"$1/Sketch.ino.hex\" && touch \"$1/Sketch.ino.with_bootloader.hex\"".into(),
                "{sketch}".into(),
                "{build}".into(),
            ],
            ..sh("")
        };
        let compiled = compile(&tool, "void setup() {}\nvoid loop() {}\n", None, |_| ()).await.expect("compiles");
        assert_eq!(compiled.firmware.len(), 1);
        assert!(compiled.output.contains("compiled"));
    }

    #[tokio::test]
    async fn failures_say_what_went_wrong() {
        let err = compile(&sh("echo 'error: expected ;' >&2; exit 1"), "x", None, |_| ()).await.expect_err("fails");
        assert!(matches!(&err, CompileError::Failed { output } if output.contains("expected ;")), "{err}");
        let err = compile(&sh("true"), "x", None, |_| ()).await.expect_err("no output");
        assert!(matches!(err, CompileError::NoOutput), "{err}");
        let err = compile(&sh("true"), "  \n", None, |_| ()).await.expect_err("empty");
        assert!(matches!(err, CompileError::EmptyCode), "{err}");
        let missing = Toolchain { argv: vec!["/nonexistent/cc".into()], ..sh("") };
        let err = compile(&missing, "x", None, |_| ()).await.expect_err("missing");
        assert!(matches!(err, CompileError::Spawn { .. }), "{err}");
        let slow = Toolchain { timeout: Duration::from_millis(200), ..sh("sleep 30") };
        let started = Instant::now();
        let err = compile(&slow, "x", None, |_| ()).await.expect_err("times out");
        assert!(matches!(err, CompileError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn the_cpu_time_of_the_whole_tool_is_charged_even_when_it_is_stopped() {
        /// Compiles with `tool`; the CPU time charged for it, if any.
        async fn charged(tool: &Toolchain) -> (Result<Compiled, CompileError>, Option<Duration>) {
            let (sent, mut charged) = tokio::sync::mpsc::unbounded_channel();
            let result = compile(tool, "x", None, move |cpu| sent.send(cpu).unwrap()).await;
            // A stopped tool is charged by its own task, a moment after the compile returns.
            let cpu = tokio::time::timeout(Duration::from_secs(5), charged.recv()).await.expect("charged or dropped");
            (result, cpu)
        }
        let plausible = |cpu: Option<Duration>| {
            cpu.is_some_and(|cpu| cpu >= Duration::from_millis(50) && cpu < Duration::from_secs(5))
        };
        // A shell whose grandchild burns the CPU: its time reaches the shell
        // through the waits in between.
        let (result, cpu) = charged(&sh("timeout 0.4 sh -c 'while :; do :; done'; exit 1")).await;
        assert!(matches!(result, Err(CompileError::Failed { .. })) && plausible(cpu), "{result:?} {cpu:?}");
        // Stopped at its deadline, the tool is charged for what it burned.
        let endless = Toolchain { timeout: Duration::from_millis(400), ..sh("while :; do :; done") };
        let (result, cpu) = charged(&endless).await;
        assert!(matches!(result, Err(CompileError::Timeout { .. })) && plausible(cpu), "{result:?} {cpu:?}");
        // A tool that never ran costs nothing: its charge is dropped uncalled.
        let (result, cpu) = charged(&Toolchain { argv: vec!["/nonexistent/cc".into()], ..sh("") }).await;
        assert!(matches!(result, Err(CompileError::Spawn { .. })) && cpu.is_none(), "{result:?} {cpu:?}");
    }

    #[tokio::test]
    async fn the_tool_gets_none_of_the_daemons_environment() {
        // cargo runs tests with CARGO_* variables set: none may reach the tool.
        let output = output_of(&sh("env; exit 1")).await;
        assert!(!output.contains("CARGO"), "{output}");
        assert!(output.contains("LANG=C") && output.contains("HOME=") && output.contains("PATH="), "{output}");
    }

    #[tokio::test]
    async fn the_tool_runs_under_the_configured_limits() {
        let limits = ToolLimits { cpu_secs: 7, memory_mb: 300, file_size_mb: 3, max_processes: 40, max_open_files: 50 };
        let mut tool = sh("ulimit -t; ulimit -v; ulimit -f; ulimit -p; ulimit -n; exit 1");
        tool.confinement.limits = limits;
        let output = output_of(&tool).await;
        // CPU seconds, then address space and file size in KiB (ulimit -f counts 1 KiB blocks in dash).
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(lines[..3], ["7", "307200", &(3 * 1024 * 1024 / 512).to_string()][..], "{output}");
        assert!(lines[3] == "40" && lines[4] == "50", "{output}");
    }

    #[tokio::test]
    async fn landlock_keeps_the_tool_out_of_the_hosts_files() {
        if sandbox_status(&CompileConfig::default()) != SandboxStatus::Landlock {
            return; // Covered by the_sandbox_status_follows_the_config_and_the_kernel.
        }
        let output = output_of(&sh("cat /etc/passwd; cat /proc/self/environ; ls /tmp; exit 1")).await;
        assert!(!output.contains("root:"), "{output}");
        assert_eq!(output.matches("Permission denied").count(), 3, "{output}");
        // The same script without the sandbox reads /etc/passwd: the denial is Landlock's.
        let mut open = sh("cat /etc/passwd; exit 1");
        open.confinement.sandbox = SandboxMode::Off;
        assert!(output_of(&open).await.contains("root:"));
    }

    #[tokio::test]
    async fn output_is_read_only_up_to_the_cap() {
        let output = output_of(&sh("yes 0123456789abcdef | head -c 10000000; exit 1")).await;
        assert!(output.len() <= MAX_OUTPUT + 64, "{}", output.len());
        assert!(output.starts_with("0123456789abcdef\n") && output.ends_with("[output cut at 64 KiB]\n"));
    }

    #[tokio::test]
    async fn the_capped_reader_stops_at_the_cap() {
        let data = vec![b'a'; 100_000];
        assert_eq!(read_capped(Some(&data[..]), 65_536).await, (vec![b'a'; 65_536], true));
        assert_eq!(read_capped(Some(&data[..]), 100_000).await, (data.clone(), false));
        assert_eq!(read_capped(Some(&data[..10]), 100).await, (vec![b'a'; 10], false));
        assert_eq!(read_capped(None::<&[u8]>, 100).await, (Vec::new(), false));
    }

    #[test]
    fn the_head_is_cut_on_a_character_boundary() {
        assert_eq!(head("short".into(), false), "short");
        assert_eq!(head("short".into(), true), "short\n[output cut at 64 KiB]\n");
        let long = format!("{}é tail", "x".repeat(MAX_OUTPUT - 1));
        let cut = head(long, false);
        assert_eq!(cut, format!("{}\n[output cut at 64 KiB]\n", "x".repeat(MAX_OUTPUT - 1)));
    }

    #[test]
    fn models_without_a_toolchain_have_none() {
        let config = Config::from_toml("", &crate::config::Env::default()).unwrap();
        assert_eq!(toolchain_for(&config, "esp32"), None);
        let config =
            Config::from_toml("[compilers.esp32]\nargv = [\"cc\", \"{sketch}\"]\n", &crate::config::Env::default())
                .unwrap();
        assert_eq!(toolchain_for(&config, "ESP32").map(|t| t.argv.len()), Some(2));
    }
}
