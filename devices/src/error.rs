//! The errors that cross module lines: why an upload failed ([`UploadError`]), why a reset failed ([`ResetError`]), and a bad plugin option ([`OptionError`]).
//!
//! They sit below `link`, `reset` and `upload` so each of those can return
//! them without importing the others: a link reports port trouble as an
//! `UploadError`, which wraps a `ResetError`, and a reset pulses DTR through a
//! link. The crate root re-exports all three.

use std::path::PathBuf;
use std::time::Duration;

use crate::firmware::FirmwareError;
use crate::model::Signature;

/// Why an upload failed. Messages are shown to lab users as they are, so
/// each one says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(
        "the bootloader did not answer after {attempts} reset attempt(s) at {baud} baud: check that the board is connected, its bootloader and baud rate match the device's config, and that reset works (a port without DTR needs a reset command)"
    )]
    NoSync { attempts: u32, baud: u32 },
    #[error(
        "the board answered with signature {got}, but this device is configured for {expected}: check the device's model (or the plugin's `signature` option)"
    )]
    WrongSignature { expected: Signature, got: Signature },
    #[error("the firmware needs {size} bytes of flash but this board has {limit}; make the program smaller")]
    TooLarge { size: u64, limit: u64 },
    #[error(transparent)]
    Firmware(FirmwareError),
    #[error(
        "verify failed at address {address:#06x}: wrote {expected:#04x}, read back {got:#04x}; the flash may be worn or the bootloader protected that area: upload again"
    )]
    VerifyMismatch { address: u32, expected: u8, got: u8 },
    #[error("serial port {} does not exist: is the board plugged in?", path.display())]
    PortNotFound { path: PathBuf },
    #[error("serial port {} went away during the upload (board unplugged or port closed): plug it back in and upload again", path.display())]
    PortVanished { path: PathBuf },
    #[error("cannot open serial port {}: {message}", path.display())]
    PortOpen { path: PathBuf, message: String },
    #[error("timed out after {} ms waiting for {waiting_for}: the board (or tool) stopped answering; upload again", after.as_millis())]
    Timeout { waiting_for: String, after: Duration },
    #[error(
        "the bootloader answered {got:02x?} to {command}: it lost sync (board reset, or another program uses the port); upload again"
    )]
    Protocol { command: &'static str, got: Vec<u8> },
    #[error("the upload was cancelled")]
    Cancelled,
    #[error("cannot run `{program}`: {message}; install it or fix the device's `argv` option")]
    ToolNotFound { program: String, message: String },
    #[error("`{program}` failed ({status}):\n{output}")]
    ToolFailed { program: String, status: String, output: String },
    #[error("reset failed: {0}")]
    Reset(#[from] ResetError),
    #[error("invalid plugin options: {}", join_errors(.0))]
    BadOptions(Vec<OptionError>),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("internal error in the uploader: {0}; this is a bug, please report it")]
    Internal(String),
}

fn join_errors(errors: &[OptionError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl From<FirmwareError> for UploadError {
    fn from(e: FirmwareError) -> UploadError {
        match e {
            FirmwareError::TooLarge { size, limit } => UploadError::TooLarge { size, limit },
            other => UploadError::Firmware(other),
        }
    }
}

/// A problem with one plugin option; `key` is relative to the options table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct OptionError {
    pub key: String,
    pub message: String,
}

impl OptionError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> OptionError {
        OptionError { key: key.into(), message: message.into() }
    }
}

/// Why a board could not be reset into its bootloader.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("the reset command is empty: give at least the program to run")]
    EmptyCommand,
    #[error("cannot run reset command `{program}`: {source}; install it or fix the device's `reset` setting")]
    Spawn { program: String, source: std::io::Error },
    #[error("reset command `{program}` failed ({status}): {output}")]
    Failed { program: String, status: String, output: String },
    #[error("reset command `{program}` did not finish within {} s and was killed", timeout.as_secs())]
    Timeout { program: String, timeout: Duration },
    #[error("DTR reset failed: {0}")]
    Dtr(std::io::Error),
    #[error("cancelled during reset")]
    Cancelled,
    #[error("the device's port handler has stopped; reset skipped")]
    PortClosed,
}
