//! `/devices/read/{device}`: a board's serial console over WebSocket.
//!
//! The first client message authenticates (`{token}` or `{email, password}`);
//! only the holder of the slot in progress and admins get in. Then
//! `connection_established`, then `serial_output` messages carrying only the
//! bytes new since the previous one (the first carries the scrollback).
//! `{"type":"input","data":"..."}` (or a binary frame, byte for byte) goes to
//! the board. Upload progress arrives as `upload_progress`; before the
//! holder's session ends, `session_ending`; when it ends, `session_ended`
//! and close 1000.
//!
//! Observers: an admin's console during someone else's session is
//! read-only (input is answered with `console_read_only`), and the holder's
//! console gets `watchers`, the admins watching, when one joins or leaves.
//!
//! Binary safety: output is UTF-8 text in `output`. A multi-byte character
//! split across two reads is held back until it is whole; bytes that are not
//! UTF-8 show as U+FFFD in `output`, and then the message also carries the
//! exact bytes in `output_base64`, so nothing is lost.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use rerod_devices::{PortError, PortState};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{Close, Conn, PING_INTERVAL};
use crate::app::{Access, App, AppError, DeviceInfo, DeviceRef, ErrorKind, OpenSocket, Principal, Role};
use crate::devices::{Board, ConsoleEvent};
use crate::wire::{
    self, BodyCredentials, ConsoleClientMessage, ConsoleServerMessage, DecodeError, DeviceDescription, MessageError,
    UploadPhase,
};

/// How long a client has to send its credentials.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Output batched into one message at most (more follows in the next).
const MAX_BATCH: usize = 64 << 10;
/// How long an incomplete UTF-8 sequence waits for its last bytes.
const UTF8_HOLD: Duration = Duration::from_millis(50);

/// Serves one console client until it leaves, its session ends, or the
/// server stops. `named` is the device as the path named it; `reference`
/// is `None` when that was not valid percent-encoded UTF-8. Generic over
/// the connection, so tests drive a console over an in-memory one.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    app: Arc<App>,
    socket: WebSocketStream<S>,
    open: OpenSocket,
    named: String,
    reference: Option<DeviceRef>,
    stop: watch::Receiver<bool>,
) {
    let mut conn = Conn::new(&app, open, socket);
    let Some((device, board)) = reference.and_then(|r| app.board(&r).ok()) else {
        // As the old backend did: the socket opens, says why, and closes.
        let error = error(ErrorKind::DeviceNotFound, format!("Device {named} not found or invalid"));
        let close = match conn.send_json(&error).await {
            Ok(()) => Close::with(CloseCode::Policy, ErrorKind::DeviceNotFound.code()),
            Err(close) => close,
        };
        return conn.close(close).await;
    };
    let Some((who, access)) = admit(&app, &mut conn, &device).await else { return };
    let close = run(&app, &mut conn, &device, &board, &who, &access, stop).await.err().unwrap_or(Close::Quietly);
    conn.close(close).await;
    tracing::debug!(device = %device.id, email = %who.email, "console closed");
}

fn error(kind: ErrorKind, message: impl Into<String>) -> ConsoleServerMessage {
    ConsoleServerMessage::Error { code: kind.code().to_owned(), message: message.into() }
}

/// Refuses the connection: an `error` message, then close 1008. The old
/// clients' scripts match on the start of the message, so it keeps their
/// wording before rerod's own detail.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut Conn<S>, refusal: &AppError) {
    let message = match refusal.kind() {
        ErrorKind::NotYourSlot => format!("You must have booked the current time slot to use this device: {refusal}"),
        _ => format!("Authentication failed: {refusal}"),
    };
    let _ = conn.send_json(&error(refusal.kind(), message)).await;
    conn.close_with(Close::with(CloseCode::Policy, refusal.code())).await;
}

/// Reads the credentials message and checks the caller may use the device now.
async fn admit<S: AsyncRead + AsyncWrite + Unpin>(
    app: &App,
    conn: &mut Conn<S>,
    device: &DeviceInfo,
) -> Option<(Principal, Access)> {
    let first = match tokio::time::timeout(AUTH_TIMEOUT, conn.next()).await {
        Ok(Ok(Message::Text(text))) => text,
        Ok(Ok(_)) | Err(_) => {
            refuse(conn, &AppError::NotAuthenticated).await;
            return None;
        }
        Ok(Err(_)) => return None,
    };
    let credentials = wire::request::<BodyCredentials>(first.as_bytes()).map(|c| wire::body_credentials(&c));
    let who = match credentials {
        Ok(Some(credentials)) => app.authenticate(credentials).await,
        Ok(None) => Err(AppError::NotAuthenticated),
        Err(e) => Err(AppError::from(e)),
    };
    let admitted = who.and_then(|who| app.device_access(&who, device, "console").map(|access| (who, access)));
    let admitted = admitted.and_then(|(who, access)| conn.claim_account(&who).map(|()| (who, access)));
    match admitted {
        Ok(admitted) => Some(admitted),
        Err(error) => {
            refuse(conn, &error).await;
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    app: &App,
    conn: &mut Conn<S>,
    device: &DeviceInfo,
    board: &Arc<Board>,
    who: &Principal,
    access: &Access,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Close> {
    // Admins' consoles are listed to the holder while they are open.
    let _watching = matches!(access, Access::Admin).then(|| board.watch(&who.email));
    let writer = Writer { app, board, device, who, access };
    // Taken before anything is sent, so no byte falls between scrollback and stream.
    let (scrollback, mut output) = board.port().subscribe();
    let mut events = board.subscribe();
    let mut state = board.port().state();
    let config = board.config();
    // Host paths are the admins' business: a student's console names the board instead.
    let admin = who.role == Role::Admin;
    let shown = |text: String| if admin { text } else { app.without_host_paths(&text) };
    conn.send_json(&ConsoleServerMessage::ConnectionEstablished {
        device_number: device.number,
        device: device.id.clone(),
        device_info: DeviceDescription {
            model: config.model.clone(),
            port: if admin { board.port().config().spec.to_string() } else { device.id.clone() },
            description: config.name.clone(),
        },
        online: board.is_online(),
        message: format!("Connected to {} ({})", config.name, device.id),
    })
    .await?;
    let mut decoder = Utf8Stream::default();
    let start = scrollback.iter().position(|b| b & 0xC0 != 0x80).unwrap_or(scrollback.len());
    let first = decoder.push(&scrollback[start..]);
    conn.send_json(&serial_output(app, device, first)).await?;
    let initial = state.borrow_and_update().clone();
    let mut was_offline = matches!(initial, PortState::Offline { .. });
    if let PortState::Offline { reason } = initial {
        let text = format!("Device {} is offline: {reason}; the console resumes when it is back", device.id);
        conn.send_json(&error(ErrorKind::DeviceOffline, shown(text))).await?;
    }
    if matches!(access, Access::Session { .. }) {
        let watchers = board.watchers();
        if !watchers.is_empty() {
            conn.send_json(&watchers_message(watchers)).await?;
        }
    }
    let mut ticks = tokio::time::interval(PING_INTERVAL);
    ticks.tick().await;
    let mut sign_outs = app.subscribe_sign_outs();
    // How far the running upload got: a failure says where it stopped, not 100%.
    let mut last_percent = 0;
    loop {
        let hold = decoder.held_since().map(|t| t + UTF8_HOLD);
        tokio::select! {
            biased;
            chunk = output.recv() => match chunk {
                Ok(chunk) => {
                    let mut bytes = chunk.to_vec();
                    while bytes.len() < MAX_BATCH {
                        match output.try_recv() {
                            Ok(more) => bytes.extend_from_slice(&more),
                            Err(_) => break,
                        }
                    }
                    let text = decoder.push(&bytes);
                    if !text.is_empty() {
                        conn.send_json(&serial_output(app, device, text)).await?;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    still_theirs(app, conn, device, who, access).await?;
                    let text = format!("{n} chunks of output were dropped: this connection fell behind the board");
                    conn.send_json(&ConsoleServerMessage::Error { code: "output_dropped".to_owned(), message: text }).await?;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(Close::with(CloseCode::Away, "the device's port was closed"));
                }
            },
            () = sleep_until(hold) => {
                let text = decoder.flush();
                conn.send_json(&serial_output(app, device, text)).await?;
            }
            event = events.recv() => match event {
                Ok(ConsoleEvent::Progress(p)) => {
                    let phase = wire::upload_phase(p.phase);
                    last_percent = p.percent;
                    conn.send_json(&ConsoleServerMessage::UploadProgress { phase, percent: p.percent, message: None }).await?;
                }
                Ok(ConsoleEvent::UploadDone { ok, message }) => {
                    let (phase, percent) = if ok { (UploadPhase::Done, 100) } else { (UploadPhase::Failed, last_percent) };
                    last_percent = 0;
                    let progress = ConsoleServerMessage::UploadProgress { phase, percent, message: Some(message) };
                    conn.send_json(&progress).await?;
                }
                Ok(ConsoleEvent::SessionEnding { email, minutes_left, end }) => {
                    if email == who.email && matches!(access, Access::Session { .. }) {
                        let tz = app.config().lab.calendar.time_zone().clone();
                        let end = crate::wire::lab_time(end, &tz);
                        let plural = if minutes_left == 1 { "" } else { "s" };
                        let message = format!("Your session on {} ends in {minutes_left} minute{plural} (at {end})", device.id);
                        conn.send_json(&ConsoleServerMessage::SessionEnding { minutes_left, end, message }).await?;
                    }
                }
                Ok(ConsoleEvent::SessionEnded { email, message }) => {
                    if email == who.email && matches!(access, Access::Session { .. }) {
                        let message = format!("Your session on {} ended: {message}", device.id);
                        conn.send_json(&ConsoleServerMessage::SessionEnded { message }).await?;
                        return Err(Close::with(CloseCode::Normal, "session ended"));
                    }
                }
                Ok(ConsoleEvent::Watchers(watchers)) => {
                    if matches!(access, Access::Session { .. }) {
                        conn.send_json(&watchers_message(watchers)).await?;
                    }
                }
                Ok(ConsoleEvent::Removed) => {
                    let message = format!("Device {} was removed from the lab's configuration", device.id);
                    conn.send_json(&ConsoleServerMessage::SessionEnded { message }).await?;
                    return Err(Close::with(CloseCode::Normal, "device removed"));
                }
                // A console that fell behind may have missed the end of its session.
                Err(broadcast::error::RecvError::Lagged(_)) => still_theirs(app, conn, device, who, access).await?,
                Err(broadcast::error::RecvError::Closed) => return Err(Close::with(CloseCode::Away, "device closed")),
            },
            changed = state.changed() => {
                if changed.is_err() {
                    return Err(Close::with(CloseCode::Away, "the device's port was closed"));
                }
                let now = state.borrow_and_update().clone();
                match now {
                    PortState::Offline { reason } if !was_offline => {
                        was_offline = true;
                        let text = format!("Device {} went offline: {reason}; the console resumes when it is back", device.id);
                        conn.send_json(&error(ErrorKind::DeviceOffline, shown(text))).await?;
                    }
                    PortState::Online { .. } if was_offline => {
                        was_offline = false;
                        let message = format!("Device {} is back online", device.id);
                        conn.send_json(&ConsoleServerMessage::DeviceStatus { online: true, message }).await?;
                    }
                    _ => {}
                }
            }
            // A signed-out account's console closes at once, not at its next check.
            sign_out = sign_outs.recv() => match sign_out {
                Ok(sign_out) if sign_out.email == who.email => {
                    let message = format!("You are signed out: {}", sign_out.reason.message());
                    conn.send_json(&ConsoleServerMessage::SessionEnded { message }).await?;
                    return Err(Close::with(CloseCode::Normal, "signed out"));
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Err(Close::with(CloseCode::Away, "server shutting down")),
            },
            incoming = conn.socket.next() => match conn.heard(incoming)? {
                Message::Text(text) => on_text(&writer, conn, &text).await?,
                Message::Binary(data) => writer.write(conn, data).await?,
                _ => {}
            },
            _ = ticks.tick() => {
                conn.keep_alive().await?;
                still_theirs(app, conn, device, who, access).await?;
            }
            () = stopped(&mut stop) => {
                return Err(Close::with(CloseCode::Away, "server shutting down"));
            }
        }
    }
}

/// Resolves once the server stops (or the stop signal is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Ends a session holder's console once the board is no longer theirs: the
/// end of a session is announced as an event, but a console that fell behind
/// (or missed it for any reason) must not stay open into the next one.
async fn still_theirs<S: AsyncRead + AsyncWrite + Unpin>(
    app: &App,
    conn: &mut Conn<S>,
    device: &DeviceInfo,
    who: &Principal,
    access: &Access,
) -> Result<(), Close> {
    if !matches!(access, Access::Session { .. }) || app.device_access(who, device, "console").is_ok() {
        return Ok(());
    }
    let message = format!("Your session on {} ended: the slot you booked is over", device.id);
    conn.send_json(&ConsoleServerMessage::SessionEnded { message }).await?;
    Err(Close::with(CloseCode::Normal, "session ended"))
}

async fn on_text<S: AsyncRead + AsyncWrite + Unpin>(
    writer: &Writer<'_>,
    conn: &mut Conn<S>,
    text: &str,
) -> Result<(), Close> {
    let refusal = match ConsoleClientMessage::parse(text) {
        Ok(ConsoleClientMessage::Input(wire::ConsoleInput { data })) => {
            return writer.write(conn, Bytes::from(data)).await;
        }
        // A repeated credentials message (some clients resend it) is harmless.
        Err(MessageError::MissingType)
            if wire::request::<BodyCredentials>(text.as_bytes())
                .is_ok_and(|c| wire::body_credentials(&c).is_some()) =>
        {
            return Ok(());
        }
        Err(MessageError::MissingType) => error_message("invalid_message", "Missing message type".to_owned()),
        Err(MessageError::UnknownType(other)) => {
            error_message("unknown_type", format!("Unknown message type: {other}"))
        }
        Err(MessageError::Invalid(DecodeError::Missing(field))) if field == "data" => {
            error_message("missing_field", "input needs data: the text to send to the board".to_owned())
        }
        Err(MessageError::Invalid(error)) if error.is_body() => {
            error_message("invalid_message", format!("Invalid message: {error}"))
        }
        Err(MessageError::Invalid(error)) => error_message("invalid_field", error.to_string()),
    };
    conn.send_json(&refusal).await
}

fn error_message(code: &str, message: String) -> ConsoleServerMessage {
    ConsoleServerMessage::Error { code: code.to_owned(), message }
}

/// A `watchers` message for the holder.
fn watchers_message(watchers: Vec<String>) -> ConsoleServerMessage {
    let message = match watchers.as_slice() {
        [] => "No one else is watching this console".to_owned(),
        list => format!("Watching this console (read-only): {}", list.join(", ")),
    };
    ConsoleServerMessage::Watchers { watchers, message }
}

/// What a console's input goes through: who typed it, on which board.
struct Writer<'a> {
    app: &'a App,
    board: &'a Arc<Board>,
    device: &'a DeviceInfo,
    who: &'a Principal,
    access: &'a Access,
}

impl Writer<'_> {
    /// Writes input to the board, unless the console is an admin's watching
    /// someone else's session, which is read-only: the holder's session is
    /// theirs to drive. Checked on every input, since a session may begin
    /// or end while the console is open.
    async fn write<S: AsyncRead + AsyncWrite + Unpin>(&self, conn: &mut Conn<S>, data: Bytes) -> Result<(), Close> {
        if matches!(self.access, Access::Admin) && !self.app.console_writable(self.who, &self.device.id) {
            let text = format!(
                "Input was not sent: {} is in someone else's session; admins watch it read-only",
                self.device.id
            );
            return conn.send_json(&error(ErrorKind::ConsoleReadOnly, text)).await;
        }
        let n = data.len() as u64;
        match self.board.write_input(data).await {
            Ok(()) => {
                self.app.metrics.record_serial_bytes(crate::metrics::Direction::Out, n);
                Ok(())
            }
            Err(PortError::Leased) => {
                conn.send_json(&error(ErrorKind::DeviceBusy, "An upload is running; input was not sent")).await
            }
            Err(e) => conn.send_json(&error(ErrorKind::DeviceOffline, format!("Input was not sent: {e}"))).await,
        }
    }
}

fn serial_output(app: &App, device: &DeviceInfo, text: Decoded) -> ConsoleServerMessage {
    ConsoleServerMessage::SerialOutput {
        device_number: device.number,
        output: text.text,
        timestamp: crate::wire::utc(app.now()),
        output_base64: text.raw.map(|raw| crate::records::base64(&raw)),
    }
}

/// Decoded output: the text, and the exact bytes when some were not UTF-8.
#[derive(Debug, Default, PartialEq, Eq)]
struct Decoded {
    text: String,
    raw: Option<Vec<u8>>,
    n_bytes: usize,
}

impl Decoded {
    fn is_empty(&self) -> bool {
        self.n_bytes == 0
    }
}

/// Turns a byte stream into text without splitting characters.
#[derive(Debug, Default)]
struct Utf8Stream {
    pending: Vec<u8>,
    held_since: Option<Instant>,
}

impl Utf8Stream {
    /// Decodes `data` after what was held back, holding back an incomplete last character.
    fn push(&mut self, data: &[u8]) -> Decoded {
        let mut bytes = std::mem::take(&mut self.pending);
        bytes.extend_from_slice(data);
        let keep = incomplete_tail(&bytes);
        self.pending = bytes.split_off(bytes.len() - keep);
        self.held_since = if self.pending.is_empty() { None } else { self.held_since.or(Some(Instant::now())) };
        decode(bytes)
    }

    /// Gives up waiting for the rest of a held-back character.
    fn flush(&mut self) -> Decoded {
        self.held_since = None;
        decode(std::mem::take(&mut self.pending))
    }

    fn held_since(&self) -> Option<Instant> {
        self.held_since
    }
}

fn decode(bytes: Vec<u8>) -> Decoded {
    let n_bytes = bytes.len();
    match String::from_utf8(bytes) {
        Ok(text) => Decoded { text, raw: None, n_bytes },
        Err(e) => {
            let bytes = e.into_bytes();
            Decoded { text: String::from_utf8_lossy(&bytes).into_owned(), raw: Some(bytes), n_bytes }
        }
    }
}

/// The length of an unfinished UTF-8 sequence at the end of `bytes` (0 if none).
fn incomplete_tail(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let b = bytes[bytes.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back
        }
        let needed = match b {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return 0, // ASCII or never valid: nothing to wait for
        };
        return if back < needed { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::SocketKind;
    use crate::app::testing::{LOCALHOST, ONE_BOARD, lab_at};
    use futures_util::SinkExt as _;
    use serde_json::{Value, json};
    use tokio::io::DuplexStream;
    use tokio_tungstenite::tungstenite::protocol::Role as WsRole;

    const NOW: &str = "2026-11-24T10:30:00Z";
    /// The slot in progress at [`NOW`].
    const SLOT: u16 = 10;

    fn slot_key() -> crate::store::SlotKey {
        crate::store::SlotKey { device: "arm-1".into(), date: jiff::civil::date(2026, 11, 24), slot: SLOT }
    }

    /// Cancels the booking of the slot in progress in the store alone, with
    /// tokio's paused clock standing still: awaited on the test's runtime,
    /// the wait for the writer thread's commit would let the clock jump
    /// through the console's timers (keep-alive, idle timeout) meanwhile.
    fn cancel_quietly(app: &App) {
        let store = app.store.clone();
        let cancel = move || {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(store.cancel(slot_key(), None)).unwrap();
        };
        std::thread::spawn(cancel).join().unwrap();
    }

    /// Registers `email`, books the slot in progress for it, and answers its token.
    async fn holder(app: &App, email: &str) -> String {
        let (device, _) = app.board(&DeviceRef::Id("arm-1".into())).unwrap();
        app.register(email, "plum-orbit-cactus-41", LOCALHOST).await.unwrap();
        let who = Principal { email: email.into(), role: Role::User, address: None };
        app.book(&who, &device, jiff::civil::date(2026, 11, 24), SLOT.into()).await.unwrap();
        app.login(email, "plum-orbit-cactus-41", LOCALHOST).await.unwrap().token
    }

    /// A console for `token` served over an in-memory connection, admitted;
    /// answers the client's end and the server's stop signal (kept, for
    /// the console closes when it is dropped).
    async fn open_console(app: &Arc<App>, token: &str) -> (WebSocketStream<DuplexStream>, watch::Sender<bool>) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let open = app.try_open_socket(SocketKind::Console, LOCALHOST).unwrap();
        let server = WebSocketStream::from_raw_socket(server, WsRole::Server, None).await;
        let (stop_tx, stop) = watch::channel(false);
        let reference = Some(DeviceRef::Id("arm-1".into()));
        tokio::spawn(serve(Arc::clone(app), server, open, "arm-1".into(), reference, stop));
        let mut client = WebSocketStream::from_raw_socket(client, WsRole::Client, None).await;
        client.send(Message::Text(json!({ "token": token }).to_string().into())).await.unwrap();
        assert_eq!(next(&mut client).await["type"], "connection_established");
        assert_eq!(next(&mut client).await["type"], "serial_output", "the scrollback");
        (client, stop_tx)
    }

    /// The next message the console sends, leaving out pings and the news
    /// that the test's board (a port that does not exist) is offline; on a
    /// close, `{"close": code}`.
    async fn next(client: &mut WebSocketStream<DuplexStream>) -> Value {
        loop {
            match client.next().await.expect("the console is open").expect("a frame") {
                Message::Text(text) => {
                    let message: Value = serde_json::from_str(&text).unwrap();
                    if message["code"] != "device_offline" {
                        return message;
                    }
                }
                Message::Close(frame) => return json!({ "close": frame.map(|f| u16::from(f.code)) }),
                _ => {}
            }
        }
    }

    /// Publishes more chunks of output than a console's receiver holds,
    /// all before the console task runs again: it falls behind.
    fn flood(board: &Board, what: &str) {
        for n in 0..300 {
            board.port().inject_output(format!("{what} {n}\n").as_bytes());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_console_whose_booking_went_without_word_closes_at_the_next_tick() {
        let (_dir, _clock, app) = lab_at(NOW, ONE_BOARD);
        let token = holder(&app, "a@x.org").await;
        let (mut client, _stop) = open_console(&app, &token).await;
        // A second later the client is heard from, so the tick finds it
        // alive and pings nobody: what ends the console is the re-check.
        tokio::time::advance(Duration::from_secs(1)).await;
        client.send(Message::Pong(Bytes::new())).await.unwrap();
        // The booking goes without the session-end event a cancel sends,
        // as for a console that missed it: only the re-check can see it.
        cancel_quietly(&app);
        let cancelled = Instant::now();
        let ended = tokio::time::timeout(3 * PING_INTERVAL, next(&mut client)).await.expect("the console closes");
        assert_eq!(ended["type"], "session_ended", "{ended}");
        assert!(ended["message"].as_str().unwrap().contains("slot you booked is over"), "{ended}");
        assert!(cancelled.elapsed() <= PING_INTERVAL, "closed after {:?}, not at the next tick", cancelled.elapsed());
        assert_eq!(next(&mut client).await, json!({ "close": 1000 }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_console_that_fell_behind_checks_the_board_is_still_theirs_before_sending_more() {
        let (_dir, clock, app) = lab_at(NOW, ONE_BOARD);
        let (_, board) = app.board(&DeviceRef::Id("arm-1".into())).unwrap();
        let token = holder(&app, "a@x.org").await;
        let (mut client, _stop) = open_console(&app, &token).await;
        let opened = Instant::now();

        // Still the holder's: falling behind costs output, the console says
        // so and goes on with what the board printed since.
        flood(&board, "before");
        let dropped = next(&mut client).await;
        assert_eq!(dropped["code"], "output_dropped", "{dropped}");
        let mut output = String::new();
        while !output.contains("before 299\n") {
            let message = next(&mut client).await;
            assert_eq!(message["type"], "serial_output", "{message}");
            output.push_str(message["output"].as_str().unwrap());
        }

        // No longer theirs (the slot is over, and the event saying so was
        // missed): the next time it falls behind, it checks first and sends
        // nothing more. The lab's clock moves, not tokio's, so the
        // keep-alive tick cannot be what notices.
        clock.set("2026-11-24T11:00:00.010Z".parse().unwrap());
        flood(&board, "after");
        let ended = next(&mut client).await;
        assert_eq!(ended["type"], "session_ended", "{ended}");
        assert_eq!(next(&mut client).await, json!({ "close": 1000 }));
        assert!(opened.elapsed() < PING_INTERVAL, "closed by the lag, not by the keep-alive tick");
    }

    #[test]
    fn characters_split_across_reads_are_joined() {
        let mut s = Utf8Stream::default();
        let euro = "€".as_bytes(); // 3 bytes
        let a = s.push(&[b'a', euro[0]]);
        assert_eq!((a.text.as_str(), a.raw), ("a", None));
        assert!(s.held_since().is_some());
        let b = s.push(&euro[1..]);
        assert_eq!((b.text.as_str(), b.raw), ("€", None));
        assert!(s.held_since().is_none());
    }

    #[test]
    fn invalid_bytes_are_kept_exactly() {
        let mut s = Utf8Stream::default();
        let d = s.push(&[b'o', b'k', 0xFF, 0x00, b'\n']);
        assert_eq!(d.text, "ok\u{FFFD}\u{0}\n");
        assert_eq!(d.raw.as_deref(), Some(&[b'o', b'k', 0xFF, 0x00, b'\n'][..]));
        // A lone lead byte at the end waits, then is flushed as it is.
        let held = s.push(&[0xC3]);
        assert!(held.is_empty());
        let flushed = s.flush();
        assert_eq!((flushed.text.as_str(), flushed.raw.as_deref()), ("\u{FFFD}", Some(&[0xC3][..])));
    }

    #[test]
    fn unfinished_tails() {
        assert_eq!(incomplete_tail(b"abc"), 0);
        assert_eq!(incomplete_tail(&[0xE2, 0x82]), 2);
        assert_eq!(incomplete_tail("€".as_bytes()), 0);
        assert_eq!(incomplete_tail(&[0xF0, 0x9F, 0x98]), 3);
        assert_eq!(incomplete_tail(&[0x80, 0x80, 0x80]), 0);
        assert_eq!(incomplete_tail(&[]), 0);
    }
}
