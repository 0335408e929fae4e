//! rerod's device layer: firmware images, serial ports and their exclusive ownership, board reset, and the uploader plugin trait.
//!
//! Code map:
//!
//! - `firmware` — [`Firmware`]: Intel HEX / raw binary in, segments or a
//!   flat image out, the flash size check.
//! - `port` — [`PortSpec`]: an explicit path or a USB vid/pid/serial match
//!   (sysfs scan, no libudev), resolved afresh on every open.
//! - `console` — [`DevicePort`]: the one owner of a device's port. A thread
//!   runs the serial console (scrollback + broadcast, input) and hands the
//!   port to an upload through a [`PortLease`]; it notices unplugging and
//!   reopens the port when the board is back.
//! - `reset` — [`ResetMethod`]: DTR pulse, a command, or nothing.
//! - `tool` — external tools (compilers, flashing programs) started in a
//!   process group of their own, so nothing they start outlives them.
//! - `cancel` — [`CancelToken`], one flag that blocking and async code wait on.
//! - `upload` — the [`Uploader`] trait every plugin implements, with
//!   [`UploadJob`], [`UploadContext`] (progress sink + [`CancelToken`]),
//!   [`UploadReport`], and [`Options`] for reading plugin options.
//! - `error` — [`UploadError`], [`ResetError`] and [`OptionError`], below
//!   the modules that return them.
//! - `link` — [`SerialLink`], the byte pipe protocol plugins talk through
//!   ([`TtyLink`] in production, fakes in tests), and deadline reads.
//! - `model` — known boards and their defaults (signature, MCU, flash), and
//!   the [`Signature`] type.
//! - `bootloader` — what the serial-bootloader plugins share: options, the
//!   flash limit a job may reach, the pages an image fills.
//! - `link_session` — the framing-independent half of a serial-bootloader
//!   upload: [`LinkSession`](link_session::LinkSession) (send, receive with a
//!   reply deadline, the log), the reset-and-connect and page loops, and the
//!   entry glue from [`Uploader::upload`] to a blocking run.
//! - `testkit` (feature `testkit`) — the simulated-board rig, the compliance
//!   checks each plugin runs, and the fake-board scaffolding of the protocol
//!   plugins' unit tests.
//!
//! Modules depend downwards: testkit → link_session → bootloader → upload → console → tool → reset → link → port → error → model → firmware → cancel.
//!
//! *Architecture invariant:* a module names (`crate::<module>`, in a `use`
//! or inline) only modules after it in that list, so the modules form no
//! cycle. The errors live in `error`, low in the list, because `link`,
//! `reset` and `upload` all return them.
//!
//! *Architecture invariant:* this crate knows nothing of HTTP, sessions,
//! bookings or config files. The daemon turns its config into a
//! [`ConsoleConfig`] and [`UploadJob`]s; plugins depend on this crate and on
//! nothing of each other; the daemon holds the one registry of plugins.
//!
//! *Architecture invariant:* nothing here runs a shell or puts user input in
//! an argv. Commands come from config; the user supplies only firmware bytes.

pub mod bootloader;
mod cancel;
mod console;
mod error;
pub mod firmware;
pub mod link;
pub mod link_session;
pub mod model;
mod port;
pub mod reset;
pub mod tool;
mod upload;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use cancel::CancelToken;
pub use console::{ConsoleConfig, DevicePort, PortLease, PortState};
pub use error::{OptionError, ResetError, UploadError};
pub use firmware::{Firmware, FirmwareError, FirmwareFormat, FlatImage, Segment};
pub use link::{SerialLink, TtyLink};
pub use model::Signature;
pub use port::{PortError, PortSpec, UsbMatch, open_port, resolve_usb};
pub use reset::ResetMethod;
pub use upload::{
    Options, Phase, Progress, UploadContext, UploadEvent, UploadFuture, UploadJob, UploadReport, Uploader,
    spawn_blocking_upload,
};
