//! The terminal, for the two command lines: `rerod user passwd` and
//! `rero login` ask for a password with it.

use std::io::BufRead as _;

/// One line from the terminal with echo off (`rero login` asks with it too).
pub fn read_hidden(prompt: &str) -> std::io::Result<String> {
    let fd = libc::STDIN_FILENO;
    let mut saved = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: tcgetattr writes a termios for the valid fd 0 into `saved`.
    if unsafe { libc::tcgetattr(fd, saved.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: tcgetattr succeeded, so `saved` is initialised.
    let saved = unsafe { saved.assume_init() };
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    eprint!("{prompt}");
    // SAFETY: both calls pass a valid fd and a valid termios.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    // SAFETY: restores the settings read above, on the same valid fd.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}
