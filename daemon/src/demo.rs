//! The demo lab (`rerod --demo`): one simulated Uno built into the daemon, so
//! a newcomer can book, upload and use a console with nothing plugged in.
//!
//! The board lives at the far end of a pseudo-terminal. rerod reaches it
//! exactly as it reaches a real Uno on USB serial: the `stk500v1` plugin
//! flashes it (no reset line on a pty, so `reset = "none"` and the
//! bootloader wakes on `STK_GET_SYNC`), and the console reads and writes the
//! same pty. The simulated board speaks Optiboot's subset of STK500v1 and,
//! once a program is flashed, stands in for it: it cannot run AVR code, so
//! it announces the program (size and checksum), prints the text the
//! program holds (a sketch's `Serial.print("...")` strings) every [`TICK`]
//! (a tick line when it holds none), and answers every line typed into the
//! console. `config/demo/hello.hex` prints "hello from the board".
//!
//! The demo is a mode of its own: `--demo` refuses `--config`, and a lab
//! started from a config file never has the demo board. Its store is
//! `data/demo/rerod.redb` (`DATABASE_PATH` still wins), away from a real
//! lab's store.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::{Config, ConfigError, Env};
use crate::plugins::stk500v1::{
    CRC_EOP, PARAM_SW_MAJOR, STK_ENTER_PROGMODE, STK_GET_PARAMETER, STK_GET_SYNC, STK_INSYNC, STK_LEAVE_PROGMODE,
    STK_LOAD_ADDRESS, STK_OK, STK_PROG_PAGE, STK_READ_PAGE, STK_READ_SIGN,
};

/// The demo board's id, used in URLs and bookings.
pub const DEVICE_ID: &str = "demo-1";

/// How often the stand-in program prints.
const TICK: Duration = Duration::from_secs(2);
/// Optiboot's watchdog: without a byte for this long the bootloader starts
/// the program. Longer than the real 1 s so a busy host does not cut an
/// upload off.
const BOOTLOADER_IDLE: Duration = Duration::from_secs(4);
/// The Uno's flash, bootloader included; programs get 32256 bytes of it.
const FLASH_BYTES: usize = 32 * 1024;
const SIGNATURE: [u8; 3] = [0x1E, 0x95, 0x0F];

/// The demo lab's config: defaults, the environment on top, one board on `port`.
pub fn config(port: &std::path::Path, env: &Env) -> Result<Config, ConfigError> {
    let text = format!(
        "[store]\npath = \"data/demo/rerod.redb\"\n\n\
         [[devices]]\nid = \"{DEVICE_ID}\"\nname = \"Demo board (simulated Uno)\"\nmodel = \"uno\"\n\
         plugin = \"stk500v1\"\nport = {port:?}\nreset = \"none\"\nbaud = 115200\n",
        port = port.display().to_string(),
    );
    let mut config = Config::from_toml(&text, env).map_err(|problems| ConfigError { file: None, problems })?;
    config.demo = true;
    Ok(config)
}

/// A running demo board: the pty's device path, for the config.
#[derive(Debug)]
pub struct DemoBoard {
    pub path: PathBuf,
}

/// Opens a pseudo-terminal and starts the simulated board on its far end
/// (a thread that lives as long as the process).
pub fn start() -> io::Result<DemoBoard> {
    let (master, slave, path) = open_pty()?;
    std::thread::Builder::new().name("rerod-demo-board".into()).spawn(move || {
        // The slave end stays open here, so the board's side never reads
        // EIO while rerod has closed the port (between uploads and reopens).
        let _slave = slave;
        run(&master);
    })?;
    Ok(DemoBoard { path })
}

/// A new pty in raw mode: (master, one slave fd, the slave's path).
fn open_pty() -> io::Result<(OwnedFd, OwnedFd, PathBuf)> {
    // SAFETY: posix_openpt returns a new fd or -1; it is owned from here on.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK) };
    if master < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `master` is a valid fd nobody else owns.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: valid fd; ptsname_r writes at most `name.len()` bytes, NUL included.
    let ok = unsafe {
        libc::grantpt(master.as_raw_fd()) == 0
            && libc::unlockpt(master.as_raw_fd()) == 0
            && libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) == 0
    };
    if !ok {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated path.
    let path = PathBuf::from(unsafe { CStr::from_ptr(name.as_ptr()) }.to_string_lossy().into_owned());
    // SAFETY: `name` is NUL-terminated; open returns a new fd or -1.
    let slave = unsafe { libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
    if slave < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `slave` is a valid fd nobody else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    // Raw from the start: with the default echo, the board would read its
    // own output back as input until rerod opened the port.
    let mut termios = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: valid fd and a valid termios pointer; cfmakeraw and tcsetattr
    // only run once tcgetattr has filled it in.
    unsafe {
        if libc::tcgetattr(slave.as_raw_fd(), termios.as_mut_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut termios = termios.assume_init();
        libc::cfmakeraw(&mut termios);
        if libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &termios) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((master, slave, path))
}

/// The board's thread: bytes from the pty into the board, its output back.
fn run(master: &OwnedFd) {
    let mut board = Board::new();
    let mut buf = [0u8; 4096];
    loop {
        let mut poll = libc::pollfd { fd: master.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, 100) };
        let mut out = Vec::new();
        if ready > 0 && poll.revents & libc::POLLIN != 0 {
            // SAFETY: reads at most buf.len() bytes into buf from a valid fd.
            let n = unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                out.extend(board.receive(&buf[..n as usize], Instant::now()));
            }
        }
        out.extend(board.tick(Instant::now()));
        // A UART with nobody reading drops what does not fit, and so does
        // this one: the master is non-blocking.
        let mut rest = &out[..];
        while !rest.is_empty() {
            // SAFETY: writes at most rest.len() bytes from rest to a valid fd.
            let n = unsafe { libc::write(master.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
            if n <= 0 {
                break;
            }
            rest = &rest[n as usize..];
        }
    }
}

/// What the board is doing.
#[derive(Debug)]
enum Mode {
    /// Running what is in flash (or nothing, while the flash is empty).
    Program(Option<Program>),
    /// In Optiboot, since the last byte at `last_byte`.
    Bootloader { last_byte: Instant },
}

/// The stand-in for a flashed program.
#[derive(Debug)]
struct Program {
    started: Instant,
    next_tick: Instant,
    /// The text found in the program, printed at every tick.
    lines: Vec<String>,
}

/// The simulated Uno: flash, the bootloader's state, the running program.
/// Pure: time comes in as an argument, bytes out as the return value.
#[derive(Debug)]
struct Board {
    flash: Vec<u8>,
    mode: Mode,
    /// Bytes received and not yet handled (a partial command or line).
    input: Vec<u8>,
    /// The bootloader's byte address.
    address: usize,
}

impl Board {
    fn new() -> Board {
        Board { flash: vec![0xFF; FLASH_BYTES], mode: Mode::Program(None), input: Vec::new(), address: 0 }
    }

    /// Handles bytes from the line; returns what the board sends back.
    fn receive(&mut self, bytes: &[u8], now: Instant) -> Vec<u8> {
        self.input.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            match self.mode {
                Mode::Program(_) => {
                    // Optiboot after a reset, as the uploader sees it: the
                    // sync request wakes the bootloader (a pty has no DTR).
                    if let Some(at) = self.input.windows(2).position(|w| w == [STK_GET_SYNC, CRC_EOP]) {
                        self.answer_lines(at, &mut out);
                        self.input.drain(..at);
                        self.mode = Mode::Bootloader { last_byte: now };
                        self.address = 0;
                        continue;
                    }
                    let complete = self.input.iter().rposition(|b| *b == b'\n' || *b == b'\r').map_or(0, |i| i + 1);
                    self.answer_lines(complete, &mut out);
                    self.input.drain(..complete);
                    // A line longer than a sketch's buffer is cut, as Serial's would be.
                    if self.input.len() > 256 {
                        self.input.clear();
                    }
                    return out;
                }
                Mode::Bootloader { .. } => {
                    self.mode = Mode::Bootloader { last_byte: now };
                    if !self.bootloader(&mut out, now) {
                        return out;
                    }
                }
            }
        }
    }

    /// What the program answers to the complete lines in `input[..end]`.
    fn answer_lines(&self, end: usize, out: &mut Vec<u8>) {
        if !matches!(self.mode, Mode::Program(Some(_))) {
            return;
        }
        for line in self.input[..end].split(|b| *b == b'\n' || *b == b'\r') {
            if line.is_empty() {
                continue;
            }
            out.extend_from_slice(b"you sent: ");
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Runs the complete bootloader commands in `input`. Returns true when
    /// the board left the bootloader and the rest of `input` is the
    /// program's.
    fn bootloader(&mut self, out: &mut Vec<u8>, now: Instant) -> bool {
        while let Some(&command) = self.input.first() {
            let len = match command {
                STK_GET_SYNC | STK_ENTER_PROGMODE | STK_LEAVE_PROGMODE | STK_READ_SIGN => 2,
                STK_GET_PARAMETER => 3,
                STK_LOAD_ADDRESS => 4,
                STK_READ_PAGE => 5,
                STK_PROG_PAGE if self.input.len() >= 3 => {
                    5 + usize::from(self.input[1]) * 256 + usize::from(self.input[2])
                }
                STK_PROG_PAGE => return false,
                _ => 2,
            };
            if self.input.len() < len {
                return false;
            }
            let cmd: Vec<u8> = self.input.drain(..len).collect();
            if cmd[len - 1] != CRC_EOP {
                // Optiboot's verifySpace: a broken command resets the board
                // through the watchdog, into the program.
                self.input.clear();
                self.start_program(now, out);
                return true;
            }
            let mut reply = |payload: &[u8]| {
                out.push(STK_INSYNC);
                out.extend_from_slice(payload);
                out.push(STK_OK);
            };
            match command {
                STK_GET_PARAMETER => reply(&[if cmd[1] == PARAM_SW_MAJOR { 8 } else { 0 }]),
                STK_READ_SIGN => reply(&SIGNATURE),
                STK_LOAD_ADDRESS => {
                    self.address = (usize::from(cmd[1]) | usize::from(cmd[2]) << 8) * 2;
                    reply(&[]);
                }
                STK_PROG_PAGE => {
                    let data = &cmd[4..len - 1];
                    let end = (self.address + data.len()).min(FLASH_BYTES);
                    let n = end.saturating_sub(self.address);
                    if n > 0 {
                        self.flash[self.address..end].copy_from_slice(&data[..n]);
                    }
                    reply(&[]);
                }
                STK_READ_PAGE => {
                    let n = usize::from(cmd[1]) * 256 + usize::from(cmd[2]);
                    let mut data = vec![0xFF; n];
                    let end = (self.address + n).min(FLASH_BYTES);
                    if end > self.address {
                        data[..end - self.address].copy_from_slice(&self.flash[self.address..end]);
                    }
                    self.address += n;
                    reply(&data);
                }
                STK_LEAVE_PROGMODE => {
                    reply(&[]);
                    self.start_program(now, out);
                    return true;
                }
                _ => reply(&[]),
            }
        }
        false
    }

    /// Leaves the bootloader for what the flash holds: the stand-in program
    /// announces itself, or an empty flash stays silent.
    fn start_program(&mut self, now: Instant, out: &mut Vec<u8>) {
        let used = self.flash.iter().rposition(|b| *b != 0xFF).map_or(0, |i| i + 1);
        // The blank program rerod flashes between sessions loops silently.
        if used == 0 || self.flash[..used] == rerod_devices::model::AVR_BLANK_PROGRAM {
            self.mode = Mode::Program(None);
            return;
        }
        let digest = fnv1a(&self.flash[..used]);
        out.extend_from_slice(
            format!(
                "\r\nDemo board: your program is running ({used} bytes of flash, checksum {digest:08x}).\r\n\
                 This board is simulated by rerod: it cannot run your code, so every {} s it prints the \
                 text your program holds, and it answers each line you send.\r\n",
                TICK.as_secs()
            )
            .as_bytes(),
        );
        let lines = text_in(&self.flash[..used]);
        self.mode = Mode::Program(Some(Program { started: now, next_tick: now + TICK, lines }));
    }

    /// What the board does on its own by `now`: the program's ticks, the
    /// bootloader's watchdog.
    fn tick(&mut self, now: Instant) -> Vec<u8> {
        let mut out = Vec::new();
        match &mut self.mode {
            Mode::Program(Some(program)) => {
                while program.next_tick <= now {
                    if program.lines.is_empty() {
                        let seconds = program.next_tick.duration_since(program.started).as_secs();
                        out.extend_from_slice(format!("tick: running for {seconds} s\r\n").as_bytes());
                    }
                    for line in &program.lines {
                        out.extend_from_slice(line.as_bytes());
                        out.extend_from_slice(b"\r\n");
                    }
                    program.next_tick += TICK;
                }
            }
            Mode::Program(None) => {}
            Mode::Bootloader { last_byte } => {
                if now.duration_since(*last_byte) >= BOOTLOADER_IDLE {
                    self.input.clear();
                    self.start_program(now, &mut out);
                }
            }
        }
        out
    }
}

/// The printable text a program holds: runs of at least four printable
/// ASCII characters, the first few, as a sketch's string literals are.
fn text_in(image: &[u8]) -> Vec<String> {
    const MAX_LINES: usize = 3;
    image
        .split(|b| !(0x20..0x7F).contains(b))
        .filter(|run| run.len() >= 4)
        .filter_map(|run| std::str::from_utf8(run).ok())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
        .take(MAX_LINES)
        .collect()
}

/// A short checksum of the program, so two uploads can be told apart.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, b| (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(board: &mut Board, now: Instant) -> Vec<u8> {
        board.receive(&[STK_GET_SYNC, CRC_EOP], now)
    }

    fn prog_page(address: usize, data: &[u8]) -> Vec<u8> {
        let word = address / 2;
        let mut cmd = vec![STK_LOAD_ADDRESS, word as u8, (word >> 8) as u8, CRC_EOP];
        cmd.extend_from_slice(&[STK_PROG_PAGE, (data.len() >> 8) as u8, data.len() as u8, b'F']);
        cmd.extend_from_slice(data);
        cmd.push(CRC_EOP);
        cmd
    }

    #[test]
    fn an_empty_board_is_silent_and_ignores_typing() {
        let t0 = Instant::now();
        let mut board = Board::new();
        assert!(board.receive(b"hello\n", t0).is_empty());
        assert!(board.tick(t0 + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn a_flashed_program_announces_itself_ticks_and_answers_lines() {
        let t0 = Instant::now();
        let mut board = Board::new();
        assert_eq!(sync(&mut board, t0), [STK_INSYNC, STK_OK]);
        assert_eq!(board.receive(&[STK_READ_SIGN, CRC_EOP], t0), [STK_INSYNC, 0x1E, 0x95, 0x0F, STK_OK]);
        assert_eq!(board.receive(&prog_page(0, &[1, 2, 3, 4]), t0), [STK_INSYNC, STK_OK, STK_INSYNC, STK_OK]);
        // Read back, split across two writes as a busy line might deliver it.
        let mut read = vec![STK_LOAD_ADDRESS, 0, 0, CRC_EOP, STK_READ_PAGE, 0];
        assert_eq!(board.receive(&read, t0), [STK_INSYNC, STK_OK]);
        read = vec![4, b'F', CRC_EOP];
        assert_eq!(board.receive(&read, t0), [STK_INSYNC, 1, 2, 3, 4, STK_OK]);
        let started = board.receive(&[STK_LEAVE_PROGMODE, CRC_EOP], t0);
        let text = String::from_utf8_lossy(&started[2..]).into_owned();
        assert!(text.contains("your program is running (4 bytes of flash"), "{text}");
        assert!(board.tick(t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(board.tick(t0 + TICK), b"tick: running for 2 s\r\n");
        assert_eq!(board.receive(b"led ", t0 + TICK), b"");
        assert_eq!(board.receive(b"on\r\nagain\n", t0 + TICK), b"you sent: led on\r\nyou sent: again\r\n");
    }

    #[test]
    fn the_program_prints_the_text_it_holds() {
        let t0 = Instant::now();
        let mut board = Board::new();
        sync(&mut board, t0);
        let mut image = vec![0x0C, 0x94, 0x34, 0x00];
        image.extend_from_slice(b"hello from the board\r\n\0ab\0");
        board.receive(&prog_page(0, &image), t0);
        board.receive(&[STK_LEAVE_PROGMODE, CRC_EOP], t0);
        assert_eq!(board.tick(t0 + TICK), b"hello from the board\r\n");
        assert_eq!(text_in(b"\x01\x02ok\0count \xff\xffready!"), ["count", "ready!"]);
    }

    #[test]
    fn the_blank_program_rerod_flashes_between_sessions_is_silent() {
        let t0 = Instant::now();
        let mut board = Board::new();
        sync(&mut board, t0);
        board.receive(&prog_page(0, &rerod_devices::model::AVR_BLANK_PROGRAM), t0);
        assert!(board.receive(&[STK_LEAVE_PROGMODE, CRC_EOP], t0)[2..].is_empty());
        assert!(board.tick(t0 + TICK * 3).is_empty());
        assert!(board.receive(b"anyone there?\n", t0).is_empty());
    }

    #[test]
    fn the_bootloader_gives_way_to_the_program_when_the_line_goes_quiet() {
        let t0 = Instant::now();
        let mut board = Board::new();
        sync(&mut board, t0);
        board.receive(&prog_page(0, &[9; 8]), t0);
        assert!(board.tick(t0 + BOOTLOADER_IDLE / 2).is_empty(), "still in the bootloader");
        let out = board.tick(t0 + BOOTLOADER_IDLE);
        assert!(String::from_utf8_lossy(&out).contains("8 bytes of flash"));
        assert_eq!(board.receive(b"x\n", t0 + BOOTLOADER_IDLE), b"you sent: x\r\n");
    }

    #[test]
    fn a_broken_command_resets_the_board_into_its_program() {
        let t0 = Instant::now();
        let mut board = Board::new();
        sync(&mut board, t0);
        board.receive(&prog_page(0x100, &[7; 2]), t0);
        let out = board.receive(&[STK_READ_SIGN, 0x00], t0);
        assert!(String::from_utf8_lossy(&out).contains("running"), "{out:?}");
        assert_eq!(board.flash[0x100..0x102], [7, 7]);
    }

    #[test]
    fn the_demo_config_has_one_board_on_the_pty_and_its_own_store() {
        let config = config(std::path::Path::new("/dev/pts/9"), &Env::from_pairs([])).expect("valid");
        assert!(config.demo);
        assert_eq!(config.devices.len(), 1);
        assert_eq!(config.devices[0].id, DEVICE_ID);
        assert_eq!(config.devices[0].port.as_deref(), Some(std::path::Path::new("/dev/pts/9")));
        assert_eq!(config.store.path, PathBuf::from("data/demo/rerod.redb"));
        let env = Env::from_pairs([("DATABASE_PATH", "/tmp/x.redb")]);
        assert_eq!(config_with(&env).store.path, PathBuf::from("/tmp/x.redb"));
    }

    fn config_with(env: &Env) -> Config {
        config(std::path::Path::new("/dev/pts/9"), env).expect("valid")
    }
}
