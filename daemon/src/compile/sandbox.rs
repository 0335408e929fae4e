//! The sandbox a toolchain compiles a user's sketch in: a cleared
//! environment, rlimits, and a Landlock ruleset that lets it read only the
//! system's programs and libraries, its own installation, the admin's
//! `compile.read_paths` and the sketch, and write only its build directory.
//!
//! Sketches are hostile input (`#include "/etc/rerod/jwt.secret"`,
//! `asm(".incbin ...")`, `#include "/dev/zero"`), and GCC quotes what it reads
//! back in its diagnostics, so the compiler must not be able to open anything
//! of the daemon's. The ruleset is built in the daemon before the fork; the
//! child only applies it (and the rlimits) between fork and exec, so the
//! daemon itself is never restricted.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access as _, AccessFs, AccessNet, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr as _, RulesetCreated,
    RulesetCreatedAttr as _, Scope,
};

use crate::config::{CompileConfig, SandboxMode, ToolLimits};

/// The newest Landlock ABI the rules are written for. On an older kernel the
/// crate enforces what that kernel knows (best effort); a kernel with no
/// Landlock at all is detected and compiling refused (see [`status`]).
const ABI_TARGET: ABI = ABI::V7;

/// What every toolchain may read and execute, and why each entry is needed.
/// Entries missing on this system (`/lib64` on some architectures) are skipped.
const SYSTEM_READ: &[&str] = &[
    // The compilers, their helpers (cc1plus, as, ld under /usr/lib/gcc*),
    // shared libraries and, on Debian, the AVR headers (/usr/lib/avr) and the
    // Arduino cores (/usr/share/arduino).
    "/usr",
    // On systems without a merged /usr these hold the shell and the C library;
    // elsewhere they are links into /usr and add nothing.
    "/bin",
    "/lib",
    // The dynamic loader's fixed path on x86-64 (/lib64/ld-linux-x86-64.so.2).
    "/lib64",
    // The dynamic loader's index of shared libraries.
    "/etc/ld.so.cache",
];

/// Files every toolchain may read and write: compilers and build tools send
/// unwanted output to /dev/null.
const SYSTEM_READ_WRITE_FILES: &[&str] = &["/dev/null"];

/// How compiling is confined on this host, as `/health` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxStatus {
    /// Toolchains run under Landlock.
    Landlock,
    /// The admin turned the sandbox off (`compile.sandbox = "off"`).
    Off,
    /// The kernel has no Landlock, so compiling is refused.
    Unavailable,
}

impl SandboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxStatus::Landlock => "landlock",
            SandboxStatus::Off => "off",
            SandboxStatus::Unavailable => "unavailable",
        }
    }
}

/// How compiling with `config` is confined on this kernel.
pub fn status(config: &CompileConfig) -> SandboxStatus {
    match config.sandbox {
        SandboxMode::Off => SandboxStatus::Off,
        SandboxMode::Landlock if landlock_supported() => SandboxStatus::Landlock,
        SandboxMode::Landlock => SandboxStatus::Unavailable,
    }
}

/// Whether the kernel enforces Landlock: a ruleset handling even the first
/// ABI's rights can be created. This asks the kernel; it restricts nothing.
fn landlock_supported() -> bool {
    Ruleset::default()
        .handle_access(AccessFs::from_all(ABI::V1))
        .and_then(Ruleset::create)
        .is_ok_and(|created| Option::<OwnedFd>::from(created).is_some())
}

/// The directories of one compile, all inside its private work directory.
#[derive(Debug)]
pub(super) struct Dirs<'a> {
    /// The user's code: read-only.
    pub sketch: &'a Path,
    /// Where the toolchain leaves its program: read-write.
    pub build: &'a Path,
    /// `HOME` and `TMPDIR` (arduino-builder's caches, GCC's temporary files): read-write.
    pub home: &'a Path,
}

/// Why a ruleset could not be prepared.
#[derive(Debug)]
pub(super) enum PrepareError {
    /// The kernel has no Landlock.
    Unsupported,
    /// Landlock is there but refused a rule, or a path could not be opened.
    Failed(String),
}

/// The Landlock ruleset for one compile, created in the daemon before the
/// fork; `None` when the sandbox is off.
pub(super) fn prepare(
    config: &CompileConfig,
    program: &Path,
    dirs: &Dirs<'_>,
) -> Result<Option<OwnedFd>, PrepareError> {
    if config.sandbox == SandboxMode::Off {
        return Ok(None);
    }
    let failed = |e: &dyn std::fmt::Display| PrepareError::Failed(e.to_string());
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI_TARGET))
        .and_then(|r| r.handle_access(AccessNet::from_all(ABI_TARGET)))
        .and_then(|r| r.scope(Scope::from_all(ABI_TARGET)))
        .and_then(Ruleset::create)
        .map_err(|e| failed(&e))?;
    let read = AccessFs::from_read(ABI_TARGET);
    let write = AccessFs::from_all(ABI_TARGET);
    let system = SYSTEM_READ.iter().map(PathBuf::from).filter(|p| p.exists());
    let toolchain = toolchain_dirs(program);
    for path in system.chain(toolchain).chain(config.read_paths.iter().cloned()) {
        ruleset = allow(ruleset, &path, read).map_err(|e| failed(&e))?;
    }
    ruleset = allow(ruleset, dirs.sketch, read).map_err(|e| failed(&e))?;
    for path in [dirs.build, dirs.home] {
        ruleset = allow(ruleset, path, write).map_err(|e| failed(&e))?;
    }
    for path in SYSTEM_READ_WRITE_FILES.iter().map(Path::new).filter(|p| p.exists()) {
        ruleset = allow(ruleset, path, AccessFs::ReadFile | AccessFs::WriteFile).map_err(|e| failed(&e))?;
    }
    Option::<OwnedFd>::from(ruleset).map(Some).ok_or(PrepareError::Unsupported)
}

/// Adds "`access` beneath `path`" to `ruleset`; a file gets only the rights
/// that apply to files.
fn allow(ruleset: RulesetCreated, path: &Path, access: BitFlags<AccessFs>) -> Result<RulesetCreated, String> {
    let fd = PathFd::new(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let access = if path.is_dir() { access } else { access & AccessFs::from_file(ABI_TARGET) };
    ruleset.add_rule(PathBeneath::new(fd, access)).map_err(|e| format!("{}: {e}", path.display()))
}

/// The directories a toolchain's program needs besides the system's: its
/// installation prefix (the parent of its `bin`, where GCC keeps `libexec`,
/// `lib` and `include`), or its own directory when it is not in a `bin`.
/// Both the path as configured and the file it links to count, since Debian
/// links tools through /usr/bin and /etc/alternatives.
pub(super) fn toolchain_dirs(program: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let canonical = std::fs::canonicalize(program).ok();
    for path in std::iter::once(program).chain(canonical.as_deref()) {
        if let Some(dir) = install_dir(path)
            && !dirs.contains(&dir)
        {
            dirs.push(dir);
        }
    }
    dirs
}

/// The installation directory of the program at `path` (absolute): see
/// [`toolchain_dirs`]. Never `/`, which would grant everything.
pub(super) fn install_dir(path: &Path) -> Option<PathBuf> {
    let dir = path.parent()?;
    let in_bin = dir.file_name().is_some_and(|n| n == OsStr::new("bin") || n == OsStr::new("sbin"));
    let prefix = if in_bin { dir.parent().filter(|p| p.parent().is_some()).unwrap_or(dir) } else { dir };
    (prefix.parent().is_some()).then(|| prefix.to_path_buf())
}

/// The absolute path of `program`: as given when it names a path, else the
/// first executable file of that name in `path_var` (the daemon's `PATH`,
/// which the admin controls; the toolchain itself gets a minimal one).
pub(super) fn resolve_program(program: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let is_executable = |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        let path = std::path::absolute(program).ok()?;
        return is_executable(&path).then_some(path);
    }
    std::env::split_paths(path_var?).map(|dir| dir.join(program)).filter(|p| p.is_absolute()).find(|p| is_executable(p))
}

/// The whole environment a toolchain gets: no variable of the daemon's (its
/// secrets, `JWT_SECRET_KEY` among them) reaches it.
pub(super) fn environment(program: &Path, home: &Path) -> Vec<(&'static str, std::ffi::OsString)> {
    let mut path = std::ffi::OsString::new();
    if let Some(dir) = program.parent() {
        path.push(dir);
        path.push(":");
    }
    path.push("/usr/local/bin:/usr/bin:/bin");
    vec![
        ("PATH", path),
        ("HOME", home.as_os_str().to_owned()),
        ("TMPDIR", home.as_os_str().to_owned()),
        ("LANG", "C".into()),
    ]
}

/// Makes `command`'s child take `limits` and, when given, the Landlock
/// `ruleset` between fork and exec.
pub(super) fn confine(command: &mut tokio::process::Command, limits: &ToolLimits, ruleset: Option<OwnedFd>) {
    const MIB: u64 = 1 << 20;
    // Every value is computed here, before the fork; the child only makes syscalls.
    let rlimits = [
        // The hard limit one second above the soft one: SIGXCPU first, SIGKILL if that is caught.
        (libc::RLIMIT_CPU, limits.cpu_secs, limits.cpu_secs + 1),
        (libc::RLIMIT_AS, limits.memory_mb * MIB, limits.memory_mb * MIB),
        (libc::RLIMIT_FSIZE, limits.file_size_mb * MIB, limits.file_size_mb * MIB),
        (libc::RLIMIT_NPROC, limits.max_processes, limits.max_processes),
        (libc::RLIMIT_NOFILE, limits.max_open_files, limits.max_open_files),
        // A crashing compiler must not write a core file the size of its memory.
        (libc::RLIMIT_CORE, 0, 0),
    ];
    let restrict = move || -> io::Result<()> {
        for (resource, soft, hard) in rlimits {
            let limit = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: hard as libc::rlim_t };
            // SAFETY: setrlimit(2) reads the struct on our stack.
            if unsafe { libc::setrlimit(resource, &limit) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some(fd) = &ruleset {
            // Landlock requires no_new_privs from an unprivileged process; it
            // also keeps a set-uid program from escaping the limits.
            // SAFETY: prctl(2) with integer arguments only.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: landlock_restrict_self(2) on a ruleset fd we own, no flags.
            if unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd.as_raw_fd(), 0) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child, where only async-signal-safe
    // work is allowed. It makes only raw syscalls (setrlimit, prctl,
    // landlock_restrict_self) on values prepared before the fork, and on
    // failure builds an io::Error from errno, which does not allocate; it
    // takes no lock and allocates nothing. Landlock restricts only the calling
    // thread, the child's only one, and the exec'd toolchain inherits it.
    unsafe {
        command.pre_exec(restrict);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_toolchain_is_granted_its_prefix_never_the_root() {
        let cases = [
            ("/usr/bin/avr-gcc", Some("/usr")),
            ("/opt/arduino/hardware/tools/avr/bin/avr-g++", Some("/opt/arduino/hardware/tools/avr")),
            ("/opt/arduino/arduino-builder", Some("/opt/arduino")),
            ("/usr/local/sbin/cc", Some("/usr/local")),
            // A tool in /bin would otherwise grant "/": its own directory it is.
            ("/bin/sh", Some("/bin")),
            ("/cc", None),
        ];
        for (program, dir) in cases {
            assert_eq!(install_dir(Path::new(program)), dir.map(PathBuf::from), "{program}");
        }
    }

    #[test]
    fn programs_resolve_through_the_given_path_only() {
        let path = std::ffi::OsString::from("/nonexistent:/usr/bin:/bin");
        let sh = resolve_program("sh", Some(&path)).expect("sh is in /usr/bin or /bin");
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        assert_eq!(resolve_program("sh", Some(OsStr::new("/nonexistent"))), None);
        assert_eq!(resolve_program("sh", None), None);
        assert_eq!(resolve_program("/bin/sh", None), Some(PathBuf::from("/bin/sh")));
        assert_eq!(resolve_program("/etc/passwd", None), None, "not executable");
    }

    #[test]
    fn the_environment_is_minimal() {
        let env = environment(Path::new("/opt/avr/bin/avr-gcc"), Path::new("/tmp/w/home"));
        let names: Vec<&str> = env.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["PATH", "HOME", "TMPDIR", "LANG"]);
        assert_eq!(env[0].1, "/opt/avr/bin:/usr/local/bin:/usr/bin:/bin");
        assert_eq!(env[1].1, "/tmp/w/home");
    }

    #[test]
    fn the_sandbox_status_follows_the_config_and_the_kernel() {
        let off = CompileConfig { sandbox: SandboxMode::Off, ..CompileConfig::default() };
        assert_eq!(status(&off), SandboxStatus::Off);
        let on = status(&CompileConfig::default());
        assert_eq!(on == SandboxStatus::Landlock, landlock_supported());
        assert_eq!(on.as_str(), if landlock_supported() { "landlock" } else { "unavailable" });
    }
}
