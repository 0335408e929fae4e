//! Finding a board's serial port: an explicit path, or a USB vid/pid/serial match found in sysfs.
//!
//! USB matching reads sysfs directly (`/sys/class/tty/*/device`, then up the
//! device tree to the USB device's `idVendor`/`idProduct`/`serial` files)
//! instead of using serialport's enumeration, which needs libudev at build
//! time. The scan is a plain function of two roots so tests run it on a fake
//! tree.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serialport::TTYPort;

/// How to find a device's port, from its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    /// A device node or a stable link to one (`/dev/serial/by-id/...`).
    Path(PathBuf),
    Usb(UsbMatch),
}

/// A USB serial adapter by vendor id, product id and optionally its serial number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbMatch {
    pub vid: u16,
    pub pid: u16,
    pub serial_number: Option<String>,
}

impl fmt::Display for UsbMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "USB {:04x}:{:04x}", self.vid, self.pid)?;
        if let Some(serial) = &self.serial_number {
            write!(f, " serial {serial:?}")?;
        }
        Ok(())
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::Path(p) => write!(f, "{}", p.display()),
            PortSpec::Usb(m) => m.fmt(f),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("serial port {} does not exist: is the board plugged in?", path.display())]
    NotFound { path: PathBuf },
    #[error("no serial port matches {wanted}: is the board plugged in? (`lsusb` shows vendor:product ids)")]
    NoUsbMatch { wanted: UsbMatch },
    #[error("{} serial ports match {wanted} ({}): add `serial_number` to the device's `usb` table", candidates.len(), list(candidates))]
    AmbiguousUsb { wanted: UsbMatch, candidates: Vec<PathBuf> },
    #[error("cannot open serial port {}: {message}", path.display())]
    Open { path: PathBuf, message: String },
    #[error("serial port {port} is offline: {reason}")]
    Offline { port: String, reason: String },
    #[error("the port is in use by an upload; the console resumes when it finishes")]
    Leased,
    #[error("another upload is already running on this device; wait for it to finish")]
    Busy,
    #[error("writing to the board failed: {message}")]
    Write { message: String },
    #[error("the device's port handler has stopped")]
    Closed,
}

fn list(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

impl PortSpec {
    /// The path to open now. A USB match is looked up afresh each time, since
    /// a re-plugged adapter may come back under another name.
    pub fn resolve(&self) -> Result<PathBuf, PortError> {
        match self {
            PortSpec::Path(path) => {
                if path.exists() {
                    Ok(path.clone())
                } else {
                    Err(PortError::NotFound { path: path.clone() })
                }
            }
            PortSpec::Usb(wanted) => resolve_usb(Path::new("/sys/class/tty"), Path::new("/dev"), wanted),
        }
    }

    /// Resolves and opens the port once (then closes it): the device is online.
    ///
    /// Opening a classic Arduino resets it (DTR), and a port held by a
    /// device's `DevicePort` is locked; for a device with a running console,
    /// use its `PortState` instead.
    pub fn probe(&self, baud: u32) -> Result<PathBuf, PortError> {
        let path = self.resolve()?;
        open_port(&path, baud)?;
        Ok(path)
    }

    pub fn is_online(&self, baud: u32) -> bool {
        self.probe(baud).is_ok()
    }
}

/// Opens `path` as a raw 8N1 port at `baud`, exclusively (TIOCEXCL + flock),
/// without touching DTR (a pty has none).
pub fn open_port(path: &Path, baud: u32) -> Result<TTYPort, PortError> {
    serialport::new(path.to_string_lossy(), baud).timeout(Duration::from_millis(50)).open_native().map_err(|e| {
        if !path.exists() {
            PortError::NotFound { path: path.to_owned() }
        } else {
            PortError::Open { path: path.to_owned(), message: e.description }
        }
    })
}

/// Finds the tty whose USB device matches `wanted`. `class_tty` is
/// `/sys/class/tty`, `dev` is `/dev`; tests pass a fake tree.
pub fn resolve_usb(class_tty: &Path, dev: &Path, wanted: &UsbMatch) -> Result<PathBuf, PortError> {
    let mut candidates = Vec::new();
    let entries = fs::read_dir(class_tty).map_err(|_| PortError::NoUsbMatch { wanted: wanted.clone() })?;
    for entry in entries.flatten() {
        let Ok(device) = fs::canonicalize(entry.path().join("device")) else {
            continue; // virtual terminals have no device
        };
        let Some(usb) = usb_device_dir(&device) else { continue };
        let id = |file: &str| fs::read_to_string(usb.join(file)).ok().map(|s| s.trim().to_owned());
        let hex_id = |file: &str| id(file).and_then(|s| u16::from_str_radix(&s, 16).ok());
        if hex_id("idVendor") != Some(wanted.vid) || hex_id("idProduct") != Some(wanted.pid) {
            continue;
        }
        if let Some(serial) = &wanted.serial_number
            && id("serial").as_deref() != Some(serial.as_str())
        {
            continue;
        }
        candidates.push(dev.join(entry.file_name()));
    }
    candidates.sort();
    match candidates.len() {
        0 => Err(PortError::NoUsbMatch { wanted: wanted.clone() }),
        1 => Ok(candidates.remove(0)),
        _ => Err(PortError::AmbiguousUsb { wanted: wanted.clone(), candidates }),
    }
}

/// The nearest ancestor of a tty's device directory that is a USB device
/// (has `idVendor`); an interface (ttyACM) or a usb-serial port (ttyUSB)
/// sits one or two levels below it.
fn usb_device_dir(device: &Path) -> Option<PathBuf> {
    device.ancestors().take(6).find(|dir| dir.join("idVendor").is_file()).map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serialport::SerialPort as _;
    use std::os::unix::fs::symlink;

    /// A fake sysfs: devices/usb1/1-1 (vid:pid, serial) with an interface
    /// holding the tty, and class/tty/<name>/device linking to it.
    struct FakeSys {
        root: tempfile::TempDir,
    }

    impl FakeSys {
        fn new() -> FakeSys {
            let root = tempfile::tempdir().expect("temp dir");
            fs::create_dir_all(root.path().join("class/tty")).expect("mkdir");
            // A virtual terminal: no device link.
            fs::create_dir_all(root.path().join("class/tty/tty0")).expect("mkdir");
            FakeSys { root }
        }

        /// `nested`: ttyUSB layout (tty dir inside the interface), else ttyACM (the interface).
        fn add(&self, name: &str, usb: &str, vid: &str, pid: &str, serial: Option<&str>, nested: bool) {
            let dev = self.root.path().join("devices").join(usb);
            fs::create_dir_all(&dev).expect("mkdir");
            fs::write(dev.join("idVendor"), format!("{vid}\n")).expect("write");
            fs::write(dev.join("idProduct"), format!("{pid}\n")).expect("write");
            if let Some(serial) = serial {
                fs::write(dev.join("serial"), format!("{serial}\n")).expect("write");
            }
            let mut target = dev.join(format!("{usb}:1.0"));
            if nested {
                target = target.join(name);
            }
            fs::create_dir_all(&target).expect("mkdir");
            let class = self.root.path().join("class/tty").join(name);
            fs::create_dir_all(&class).expect("mkdir");
            symlink(&target, class.join("device")).expect("symlink");
        }

        fn resolve(&self, vid: u16, pid: u16, serial: Option<&str>) -> Result<PathBuf, PortError> {
            let wanted = UsbMatch { vid, pid, serial_number: serial.map(str::to_owned) };
            resolve_usb(&self.root.path().join("class/tty"), Path::new("/dev"), &wanted)
        }
    }

    #[test]
    fn finds_acm_and_usb_serial_ports_by_ids() {
        let sys = FakeSys::new();
        sys.add("ttyACM0", "1-1", "2341", "0043", Some("7573530333935"), false);
        sys.add("ttyUSB0", "1-2", "1a86", "7523", None, true);
        assert_eq!(sys.resolve(0x2341, 0x0043, None), Ok(PathBuf::from("/dev/ttyACM0")));
        assert_eq!(sys.resolve(0x2341, 0x0043, Some("7573530333935")), Ok(PathBuf::from("/dev/ttyACM0")));
        assert_eq!(sys.resolve(0x1a86, 0x7523, None), Ok(PathBuf::from("/dev/ttyUSB0")));
        assert!(matches!(sys.resolve(0x2341, 0x0043, Some("other")), Err(PortError::NoUsbMatch { .. })));
        assert!(matches!(sys.resolve(0x0403, 0x6001, None), Err(PortError::NoUsbMatch { .. })));
    }

    #[test]
    fn two_identical_boards_need_a_serial_number() {
        let sys = FakeSys::new();
        sys.add("ttyACM0", "1-1", "2341", "0043", Some("A"), false);
        sys.add("ttyACM1", "1-3", "2341", "0043", Some("B"), false);
        let err = sys.resolve(0x2341, 0x0043, None).expect_err("ambiguous");
        assert!(err.to_string().contains("serial_number"), "{err}");
        assert_eq!(sys.resolve(0x2341, 0x0043, Some("B")), Ok(PathBuf::from("/dev/ttyACM1")));
    }

    #[test]
    fn a_missing_path_is_not_found_and_offline() {
        let spec = PortSpec::Path(PathBuf::from("/nonexistent/rerod-test-port"));
        let err = spec.resolve().expect_err("missing");
        assert!(err.to_string().contains("plugged in"), "{err}");
        assert!(!spec.is_online(115_200));
    }

    #[test]
    fn a_pty_opens_and_is_online() {
        // A pty pair stands in for a board: the slave is the "port".
        let (_master, slave) = TTYPort::pair().expect("pty pair");
        let path = PathBuf::from(slave.name().expect("slave has a name"));
        drop(slave);
        assert!(PortSpec::Path(path).is_online(115_200));
    }
}
