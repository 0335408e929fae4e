//! The boards as lab operations: who may use a board now (the holder of the
//! slot in progress, or an admin), compiling sketches (a few at a time), and
//! uploads from the first check to the result, with the re-check once the
//! port is held and the uploads metric. Front ends only parse, call and map.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rerod_devices::{Firmware, UploadReport};

use super::compile_queue::{Ask, Refused, Share};
use super::records::UploadNote;
use super::{App, AppError, DeviceInfo, DeviceRef, Principal, Role};
use crate::booking::Slot;
use crate::compile::{self, CompileError, Compiled};
use crate::devices::{Board, BoardError, Owner, UploadRefused};
use crate::metrics::UploadResult;
use crate::records::{UploadMethod, sha256_hex};
use crate::store::Booking;

/// Sketch compilations at once; more wait their turn (they are CPU-heavy).
pub(super) const MAX_COMPILES: usize = 2;

/// Who asks for a compile: an account when a token came with it, and the
/// client address it came from. Compile time counts against both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub account: Option<Principal>,
    pub address: std::net::IpAddr,
}

impl Caller {
    /// Whose turn a compile is (one at a time each), and who it was in the
    /// log: the account, else the address.
    pub fn key(&self) -> String {
        match &self.account {
            Some(who) => who.email.clone(),
            None => self.address.to_string(),
        }
    }
}

/// What an upload flashes: a program, or a sketch to compile first.
#[derive(Debug)]
pub enum UploadSource {
    /// Intel HEX or a raw binary, as sent.
    Firmware(bytes::Bytes),
    /// A sketch's source code, compiled for the board's model; compiler
    /// messages name it `file_name` (the student's own), else `sketch.ino`.
    Code { code: String, file_name: Option<String> },
}

/// A finished upload.
#[derive(Debug)]
pub struct Uploaded {
    pub device: DeviceInfo,
    /// What the compiler said, when the upload was a sketch.
    pub compile_output: Option<String>,
    pub report: UploadReport,
}

/// How someone may use a board right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// The holder of the slot in progress.
    Session { slot: Slot },
    /// An admin outside (or inside) anyone's session.
    Admin,
}

impl App {
    /// A configured board by number or id, with its public description.
    pub fn board(&self, reference: &DeviceRef) -> Result<(DeviceInfo, Arc<Board>), AppError> {
        let info = self.device(Some(reference))?;
        match self.devices.board(&info.id) {
            Some(board) => Ok((info, board)),
            None => Err(AppError::UnknownDevice(format!("{:?} (a booking calendar without a board)", info.id))),
        }
    }

    /// The booking of `slot` on device `id`.
    pub fn booking_of(&self, id: &str, slot: &Slot) -> Result<Option<Booking>, AppError> {
        let bookings = self.store.bookings_on(id, slot.date)?;
        Ok(bookings.into_iter().find(|b| b.key.slot == slot.id))
    }

    /// Who holds the booking of `slot` on device `id`.
    pub fn holder(&self, id: &str, slot: &Slot) -> Result<Option<String>, AppError> {
        Ok(self.booking_of(id, slot)?.map(|b| b.email))
    }

    /// Whether `who` may upload to or open the console of `device` now: the
    /// holder of the slot in progress may, and admins always (logged).
    pub fn device_access(&self, who: &Principal, device: &DeviceInfo, action: &str) -> Result<Access, AppError> {
        let config = self.config();
        let now = self.now();
        let slot = config.lab.calendar.slot_at(now);
        let holder = match &slot {
            Some(slot) => self.holder(&device.id, slot)?,
            None => None,
        };
        if let (Some(slot), Some(holder)) = (&slot, &holder)
            && *holder == who.email
        {
            return Ok(Access::Session { slot: slot.clone() });
        }
        if who.role == Role::Admin {
            tracing::info!(admin = %who.email, device = %device.id, action, holder = holder.as_deref().unwrap_or("(none)"), "admin using a device");
            return Ok(Access::Admin);
        }
        let reason = match &slot {
            None => format!("Device {} can only be used during a slot you booked", device.id),
            Some(slot) => {
                let when = format!(
                    "slot {} ({}–{} on {})",
                    slot.id,
                    slot.start_time.strftime("%H:%M"),
                    // A slot that ends at midnight ends at 24:00 of its day, not 00:00.
                    if slot.end_time == jiff::civil::Time::midnight() {
                        "24:00".to_owned()
                    } else {
                        slot.end_time.strftime("%H:%M").to_string()
                    },
                    slot.date
                );
                match holder {
                    Some(_) => format!(
                        "Device {} is in someone else's session: you need the booking of {when}, the slot in progress; use it during a slot you booked",
                        device.id
                    ),
                    None => format!(
                        "You need the booking of {when} on device {}, the slot in progress, to use it; it is free: book it first",
                        device.id
                    ),
                }
            }
        };
        Err(AppError::Forbidden { device: device.id.clone(), needed_slot: slot.map(|s| s.id), reason })
    }

    /// Whether `who` may type into `device`'s console now: anyone admitted
    /// may, except an admin while someone else's session is in progress
    /// (they watch it read-only).
    pub fn console_writable(&self, who: &Principal, device: &str) -> bool {
        match self.session_at(device, self.now()) {
            Some((session, _)) => session.holder == who.email,
            None => true,
        }
    }

    /// Whether someone holds the slot in progress on `id`, or an upload runs.
    pub fn device_in_use(&self, board: &Board) -> bool {
        let slot = self.config().lab.calendar.slot_at(self.now());
        let booked = slot.is_some_and(|slot| self.holder(&board.id, &slot).ok().flatten().is_some());
        booked || board.is_uploading()
    }

    /// Compiles `code` for `caller` and a model: the one named, else the
    /// device's (the first device's by default; `uno` when the lab has no
    /// boards). Anyone may compile, as with the old backend; fairly: one
    /// compile at a time per caller, a bounded line, session holders first,
    /// and compile time shared by account and by address (`compile_queue`).
    pub async fn compile_sketch(
        &self,
        caller: &Caller,
        model: Option<&str>,
        device: Option<&DeviceRef>,
        code: &str,
        file_name: Option<&str>,
    ) -> Result<Compiled, AppError> {
        let model = match model {
            Some(model) => model.to_owned(),
            None if self.config().devices.is_empty() => "uno".to_owned(),
            None => self.device(device)?.model,
        };
        let urgent = match &caller.account {
            Some(who) => self.next_booking(&who.email)?.is_some_and(|next| next.is_current),
            None => false,
        };
        let account = caller.account.as_ref().map(|who| who.email.as_str());
        self.compile_for(Ask { account, address: Some(caller.address), urgent }, &model, code, file_name).await
    }

    /// Compiles running, and waiting for a turn.
    pub fn compiles(&self) -> (usize, usize) {
        self.compiles.counts()
    }

    /// How compiling is confined under the running config and this kernel.
    pub fn compile_sandbox(&self) -> compile::SandboxStatus {
        compile::sandbox_status(&self.config().compile)
    }

    /// Compiles `code` for `model` when the queue gives `ask` a turn, and
    /// charges the CPU time the compile used to its account and address.
    async fn compile_for(
        &self,
        ask: Ask<'_>,
        model: &str,
        code: &str,
        file_name: Option<&str>,
    ) -> Result<Compiled, AppError> {
        let config = self.config();
        let toolchain = compile::toolchain_for(&config, model)
            .ok_or_else(|| AppError::Compile(CompileError::NoCompiler { model: model.to_owned() }))?;
        let c = &config.compile;
        let share = Share {
            max_waiting: c.max_queued,
            window: c.cpu_window,
            per_account: c.cpu_per_account,
            per_address: c.cpu_per_address,
            reserve: Duration::from_secs(c.limits.cpu_secs),
        };
        let who = ask.name();
        let (_turn, meter) =
            self.compiles.turn(ask, &share, Instant::now()).await.map_err(|refused| match refused {
                Refused::AlreadyQueued => AppError::CompileAlreadyQueued,
                Refused::Full => AppError::CompileQueueFull,
                Refused::OverShare { of, retry_after } => {
                    tracing::info!(caller = %who, over = ?of, retry_after_s = retry_after.as_secs(), "compile refused: over its share of compile time");
                    AppError::CompileShareUsed { of, retry_after }
                }
            })?;
        let charge = move |cpu: Duration| {
            tracing::info!(caller = %who, cpu_ms = cpu.as_millis() as u64, "compile CPU time charged");
            meter.charge(cpu, Instant::now());
        };
        compile::compile(&toolchain, code, file_name, charge).await.map_err(AppError::Compile)
    }

    /// Flashes a board for `who`: the board must be theirs now (the slot in
    /// progress, or an admin), checked before `source` is awaited (so a
    /// request's body is read only for someone who may upload) and again once
    /// the port is held. Every outcome is counted in the uploads metric;
    /// `source` fails with the front end's own error type.
    pub async fn upload<E: From<AppError>>(
        &self,
        who: &Principal,
        reference: &DeviceRef,
        source: impl Future<Output = Result<UploadSource, E>>,
    ) -> Result<Uploaded, E> {
        let target = self.board(reference).and_then(|(device, board)| {
            self.device_access(who, &device, "upload")?;
            Ok((device, board))
        });
        let source = match target {
            Ok(target) => source.await.map(|source| (target, source)),
            Err(error) => Err(error.into()),
        };
        let ((device, board), source) = match source {
            Ok(ready) => ready,
            Err(refused) => {
                self.metrics.record_upload(UploadResult::Refused);
                return Err(refused);
            }
        };
        let started = std::time::Instant::now();
        let device_id = device.id.clone();
        let method = match &source {
            UploadSource::Code { .. } => UploadMethod::Sketch,
            UploadSource::Firmware(_) => UploadMethod::Firmware,
        };
        let mut note = UploadNote { sha256: String::new(), bytes: 0, method };
        let result = self.flash(who, device, &board, source, &mut note).await;
        let outcome = match &result {
            Ok(_) => UploadResult::Ok,
            Err(AppError::Board(BoardError::Aborted { .. })) => UploadResult::Aborted,
            Err(AppError::Board(BoardError::Failed { .. })) => UploadResult::Failed,
            Err(_) => UploadResult::Refused,
        };
        self.metrics.record_upload(outcome);
        let detail = match &result {
            Ok(uploaded) => format!("{} bytes written", uploaded.report.bytes_written),
            // The record keeps what an admin needs to find the fault.
            Err(AppError::Board(error)) => error.detail(),
            Err(error) => error.to_string(),
        };
        let took = match &result {
            Ok(uploaded) => uploaded.report.duration,
            Err(_) => started.elapsed(),
        };
        self.log_upload(&device_id, who, &note, outcome, detail, took);
        result.map_err(E::from)
    }

    /// Compiles the sketch if one was sent, then flashes the board, checking
    /// `who`'s right to it again once the port is held.
    async fn flash(
        &self,
        who: &Principal,
        device: DeviceInfo,
        board: &Arc<Board>,
        source: UploadSource,
        note: &mut UploadNote,
    ) -> Result<Uploaded, AppError> {
        let (firmware, compile_output) = match source {
            UploadSource::Code { code, file_name } => {
                // Uploading: the caller holds the session (or is an admin), so
                // it goes first; the time counts against its account and address.
                let ask = Ask { account: Some(&who.email), address: who.address, urgent: true };
                let compiled = self.compile_for(ask, &board.config().model, &code, file_name.as_deref()).await?;
                // The program as flashed, in the form a student can rebuild and compare.
                note.sha256 = sha256_hex(compiled.firmware.to_ihex().as_bytes());
                note.bytes = compiled.firmware.len() as u64;
                (compiled.firmware, Some(compiled.output))
            }
            UploadSource::Firmware(bytes) => {
                // The file as sent: `sha256sum blink.hex` gives the same.
                note.sha256 = sha256_hex(&bytes);
                note.bytes = bytes.len() as u64;
                (Firmware::detect(&bytes).map_err(|e| AppError::Board(BoardError::Firmware(e)))?, None)
            }
        };
        // Checked again once the port is held: compiling, or the port being
        // busy, takes a while, and the session may have ended meanwhile.
        let recheck = || match who.role {
            Role::Admin => Ok(()),
            Role::User => self.device_access(who, &device, "upload").map(drop),
        };
        let owner = Owner::User { email: who.email.clone(), admin: who.role == Role::Admin };
        match board.upload(Arc::new(firmware), owner, recheck).await {
            Ok(report) => Ok(Uploaded { device, compile_output, report }),
            Err(UploadRefused::Unauthorized(error)) => Err(error),
            Err(UploadRefused::Board(error)) => Err(AppError::Board(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::testing::{LOCALHOST, ONE_BOARD, lab_at};
    use rerod_devices::PortState;

    fn user(email: &str) -> Principal {
        Principal { email: email.into(), role: Role::User, address: None }
    }

    #[tokio::test]
    async fn only_the_holder_of_the_slot_in_progress_and_admins_get_in() {
        let (_dir, _clock, app) = lab_at("2026-11-24T10:30:00Z", ONE_BOARD);
        let (device, _board) = app.board(&DeviceRef::Id("arm-1".into())).unwrap();
        let date = jiff::civil::date(2026, 11, 24);
        for email in ["a@x.org", "b@x.org"] {
            app.register(email, "plum-orbit-cactus-41", LOCALHOST).await.unwrap();
        }
        let err = app.device_access(&user("a@x.org"), &device, "upload").unwrap_err();
        assert!(matches!(&err, AppError::Forbidden { needed_slot: Some(10), .. }), "{err}");
        assert!(err.to_string().contains("book it first"), "{err}");
        assert!(err.to_string().contains("slot 10 (10:00–11:00 on 2026-11-24)"), "{err}");

        app.book(&user("a@x.org"), &device, date, 10).await.unwrap();
        app.book(&user("b@x.org"), &device, date, 11).await.unwrap();
        assert!(matches!(app.device_access(&user("a@x.org"), &device, "upload"), Ok(Access::Session { .. })));
        let err = app.device_access(&user("b@x.org"), &device, "console").unwrap_err();
        assert!(err.to_string().contains("someone else's session") && err.to_string().contains("slot 10"), "{err}");
        let admin = Principal { email: "root@x.org".into(), role: Role::Admin, address: None };
        assert_eq!(app.device_access(&admin, &device, "upload").unwrap(), Access::Admin);
    }

    #[tokio::test]
    async fn a_slot_that_ends_at_midnight_is_named_as_ending_at_24_00() {
        let (_dir, _clock, app) = lab_at("2026-11-24T10:30:00Z", &format!("slot_minutes = 1440\n{ONE_BOARD}"));
        let (device, _board) = app.board(&DeviceRef::Id("arm-1".into())).unwrap();
        let err = app.device_access(&user("a@x.org"), &device, "upload").unwrap_err();
        assert!(err.to_string().contains("slot 0 (00:00–24:00 on 2026-11-24)"), "{err}");
    }

    #[tokio::test]
    async fn a_calendar_without_a_board_is_not_a_device() {
        let (_dir, _clock, app) = lab_at("2026-11-24T10:30:00Z", "");
        let err = app.board(&DeviceRef::Number(0)).unwrap_err();
        assert!(matches!(err, AppError::UnknownDevice(_)), "{err}");
    }

    #[tokio::test]
    async fn firmware_is_size_checked_before_the_port_is_touched() {
        let (_dir, _clock, app) = lab_at("2026-11-24T10:30:00Z", ONE_BOARD);
        let (_, board) = app.board(&DeviceRef::Number(0)).unwrap();
        let big = Arc::new(Firmware::from_binary(vec![0; 40_000], 0).unwrap());
        let err = board.upload(big, Owner::Lab, || Ok::<(), AppError>(())).await.unwrap_err();
        assert!(
            matches!(err, UploadRefused::Board(BoardError::Firmware(rerod_devices::FirmwareError::TooLarge { .. }))),
            "{err:?}"
        );
        // A fitting image reaches the port check: this board is not plugged in.
        let small = Arc::new(Firmware::from_binary(vec![0; 100], 0).unwrap());
        let mut state = board.port().state();
        let _ = state.wait_for(|s| matches!(s, PortState::Offline { .. })).await;
        let err = board.upload(small, Owner::Lab, || Ok::<(), AppError>(())).await.unwrap_err();
        assert!(matches!(err, UploadRefused::Board(BoardError::Offline { .. })), "{err:?}");
    }

    /// A plugged-in board for tests: the daemon's side of a pseudo-terminal
    /// (the returned fd is the board's side; keep it open).
    fn pty() -> (std::os::fd::OwnedFd, String) {
        use std::os::fd::FromRawFd;
        let (mut board_side, mut port_side) = (0, 0);
        // SAFETY: openpty writes two fds; the name, termios and winsize are optional.
        let opened = unsafe {
            libc::openpty(&mut board_side, &mut port_side, std::ptr::null_mut(), std::ptr::null(), std::ptr::null())
        };
        assert_eq!(opened, 0, "openpty");
        let path = std::fs::read_link(format!("/proc/self/fd/{port_side}")).unwrap().display().to_string();
        // SAFETY: both fds were just opened and are owned here; the port side is reopened by path.
        unsafe {
            drop(std::os::fd::OwnedFd::from_raw_fd(port_side));
            (std::os::fd::OwnedFd::from_raw_fd(board_side), path)
        }
    }

    #[tokio::test]
    async fn an_upload_never_starts_after_its_session_ended() {
        let (_board_side, port) = pty();
        let devices = format!(
            "[[devices]]\nid = \"arm-1\"\nmodel = \"custom\"\nflash_limit = 32768\nplugin = \"command\"\nport = \"{port}\"\n\
             reset = \"none\"\noptions = {{ argv = [\"true\", \"{{firmware}}\"] }}\n"
        );
        let (_dir, clock, app) = lab_at("2026-11-24T10:30:00Z", &devices);
        let (device, board) = app.board(&DeviceRef::Id("arm-1".into())).unwrap();
        let mut state = board.port().state();
        let _ = state.wait_for(|s| matches!(s, PortState::Online { .. })).await;
        app.register("a@x.org", "plum-orbit-cactus-41", LOCALHOST).await.unwrap();
        app.book(&user("a@x.org"), &device, jiff::civil::date(2026, 11, 24), 10).await.unwrap();
        let firmware = Arc::new(Firmware::from_binary(vec![0; 100], 0).unwrap());
        let ada = user("a@x.org");
        let recheck = || app.device_access(&ada, &device, "upload").map(drop);

        // Within the session the upload runs.
        board
            .upload(Arc::clone(&firmware), Owner::User { email: ada.email.clone(), admin: false }, recheck)
            .await
            .unwrap();

        // The request was checked (as the handler does first), then the slot
        // ended before the upload took the port: it must not start.
        app.device_access(&ada, &device, "upload").unwrap();
        clock.set("2026-11-24T11:00:00Z".parse().unwrap());
        board.end_session("a@x.org", "slot over".into());
        let err = board
            .upload(Arc::clone(&firmware), Owner::User { email: ada.email.clone(), admin: false }, recheck)
            .await
            .unwrap_err();
        assert!(matches!(err, UploadRefused::Unauthorized(AppError::Forbidden { .. })), "{err:?}");
        // The refusal let go of the port.
        drop(board.port().try_lease().await.expect("the port is free again"));
    }
}
