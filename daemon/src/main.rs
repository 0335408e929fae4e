//! The `rerod` binary: parse the command line, run, and turn a failure into a
//! message and an exit code (the only place that does).

use std::process::ExitCode;

use clap::Parser as _;

/// jemalloc, not glibc's malloc: memory that thousands of sockets took is
/// given back to the kernel once they close (glibc kept it in its arenas).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts: a background thread purges
/// freed pages after a second unused (`dirty_decay_ms`), straight back to the
/// kernel (`muzzy_decay_ms:0`: `MADV_DONTNEED`, so RSS shows it), instead of
/// waiting for the next allocation on the same arena.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf = MallocConf(c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

/// A C string pointer as jemalloc reads it (`const char *malloc_conf`).
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: it points at a constant C string that nothing writes.
unsafe impl Sync for MallocConf {}

fn main() -> ExitCode {
    let cli = match rerod::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version go to stdout with 0; a usage error to stderr
            // with 2. A reader that went away before the help was printed
            // changes neither.
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    match rerod::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rerod: {error}");
            ExitCode::FAILURE
        }
    }
}
