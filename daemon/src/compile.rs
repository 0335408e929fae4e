//! Compiling sketches: a user's `{code}` → an Intel HEX program, with the
//! toolchain configured for the board's model (`[compilers.<model>]`), or
//! Debian's `arduino-builder` for the models it knows when it is installed.
//!
//! The code only ever reaches a file (`Sketch/Sketch.ino` in a private temp
//! directory); the argv comes from config or the built-in default. No shell;
//! the tool runs in its own process group, killed on timeout or when the
//! request is dropped.

use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rerod_devices::{Firmware, FirmwareError};
use tokio::io::AsyncReadExt as _;

use crate::config::Config;

/// Compiler output kept for the client, at most (the tail is kept).
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
    #[error("compiling: {0}")]
    Io(String),
}

/// The toolchain for `model`: the config's, else the built-in one when the
/// model has an Arduino board id and `arduino-builder` is installed.
pub fn toolchain_for(config: &Config, model: &str) -> Option<Toolchain> {
    let model = model.to_ascii_lowercase();
    if let Some(c) = config.compilers.get(&model) {
        return Some(Toolchain { argv: c.argv.clone(), timeout: c.timeout });
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
    Some(Toolchain { argv: argv.iter().map(|s| (*s).to_owned()).collect(), timeout: BUILTIN_TIMEOUT })
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

/// Compiles `code` with `toolchain`.
pub async fn compile(toolchain: &Toolchain, code: &str) -> Result<Compiled, CompileError> {
    if code.trim().is_empty() {
        return Err(CompileError::EmptyCode);
    }
    let started = Instant::now();
    let dir = WorkDir::create().map_err(|e| CompileError::Io(format!("creating a build directory: {e}")))?;
    let sketch_dir = dir.path.join("Sketch");
    let sketch = sketch_dir.join("Sketch.ino");
    let build = dir.path.join("build");
    for d in [&sketch_dir, &build] {
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
    let (success, output) = run(&argv, &dir.path, toolchain.timeout).await?;
    if !success {
        return Err(CompileError::Failed { output });
    }
    let hex = find_hex(&build).ok_or(CompileError::NoOutput)?;
    let bytes = std::fs::read(&hex).map_err(|e| CompileError::Io(format!("reading {}: {e}", hex.display())))?;
    let firmware = Firmware::parse_ihex(&bytes).map_err(CompileError::BadOutput)?;
    Ok(Compiled { firmware, output, duration: started.elapsed() })
}

/// Runs the tool in `cwd`; returns whether it succeeded and its output (stdout then stderr, tail-capped).
async fn run(argv: &[String], cwd: &Path, timeout: Duration) -> Result<(bool, String), CompileError> {
    let program = &argv[0];
    let mut child = rerod_devices::tool::command(program, &argv[1..])
        .current_dir(cwd)
        .spawn()
        .map_err(|e| CompileError::Spawn { program: program.clone(), message: e.to_string() })?;
    let group = rerod_devices::tool::ProcessGroup::of(&child);
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let collect = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let read_out = async {
            if let Some(p) = stdout.as_mut() {
                let _ = p.read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(p) = stderr.as_mut() {
                let _ = p.read_to_end(&mut err).await;
            }
        };
        tokio::join!(read_out, read_err);
        let status = child.wait().await;
        (status, out, err)
    };
    let outcome = tokio::time::timeout(timeout, collect).await;
    // Nothing the compiler started may outlive it (and on timeout, it is stopped).
    drop(group);
    let (status, out, err) = outcome.map_err(|_| CompileError::Timeout { after: timeout })?;
    let status = status.map_err(|e| CompileError::Io(format!("waiting for `{program}`: {e}")))?;
    let mut text = String::from_utf8_lossy(&out).into_owned();
    text.push_str(&String::from_utf8_lossy(&err));
    Ok((status.success(), tail(text)))
}

fn tail(mut text: String) -> String {
    if text.len() > MAX_OUTPUT {
        let mut cut = text.len() - MAX_OUTPUT;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text.replace_range(..cut, "[...]\n");
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

    fn sh(script: &str) -> Toolchain {
        Toolchain { argv: vec!["sh".into(), "-c".into(), script.into()], timeout: Duration::from_secs(10) }
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
            timeout: Duration::from_secs(10),
        };
        let compiled = compile(&tool, "void setup() {}\nvoid loop() {}\n").await.expect("compiles");
        assert_eq!(compiled.firmware.len(), 1);
        assert!(compiled.output.contains("compiled"));
    }

    #[tokio::test]
    async fn failures_say_what_went_wrong() {
        let err = compile(&sh("echo 'error: expected ;' >&2; exit 1"), "x").await.expect_err("fails");
        assert!(matches!(&err, CompileError::Failed { output } if output.contains("expected ;")), "{err}");
        let err = compile(&sh("true"), "x").await.expect_err("no output");
        assert!(matches!(err, CompileError::NoOutput), "{err}");
        let err = compile(&sh("true"), "  \n").await.expect_err("empty");
        assert!(matches!(err, CompileError::EmptyCode), "{err}");
        let missing = Toolchain { argv: vec!["/nonexistent/cc".into()], timeout: Duration::from_secs(1) };
        let err = compile(&missing, "x").await.expect_err("missing");
        assert!(matches!(err, CompileError::Spawn { .. }), "{err}");
        let slow = Toolchain { timeout: Duration::from_millis(200), ..sh("sleep 30") };
        let started = Instant::now();
        let err = compile(&slow, "x").await.expect_err("times out");
        assert!(matches!(err, CompileError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
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
