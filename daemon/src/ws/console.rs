//! `/devices/read/{device}`: a board's serial console over WebSocket.
//!
//! The first client message authenticates (`{token}` or `{email, password}`);
//! only the holder of the slot in progress and admins get in. Then
//! `connection_established`, then `serial_output` messages carrying only the
//! bytes new since the previous one (the first carries the scrollback).
//! `{"type":"input","data":"..."}` (or a binary frame, byte for byte) goes to
//! the board. Upload progress arrives as `upload_progress`; when the holder's
//! session ends, `session_ended` and close 1000.
//!
//! Binary safety: output is UTF-8 text in `output`. A multi-byte character
//! split across two reads is held back until it is whole; bytes that are not
//! UTF-8 show as U+FFFD in `output`, and then the message also carries the
//! exact bytes in `output_base64`, so nothing is lost.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rerod_devices::{PortError, PortState};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{IDLE_TIMEOUT, PING_INTERVAL, SEND_TIMEOUT, Socket};
use crate::app::{App, AppError, DeviceInfo, Principal};
use crate::devices::{Access, Board, ConsoleEvent};
use crate::json::JsonObject;

/// How long a client has to send its credentials.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Output batched into one message at most (more follows in the next).
const MAX_BATCH: usize = 64 << 10;
/// How long an incomplete UTF-8 sequence waits for its last bytes.
const UTF8_HOLD: Duration = Duration::from_millis(50);

/// Serves one console client until it leaves, its session ends, or the server stops.
pub async fn serve(app: Arc<App>, socket: Socket, device: DeviceInfo, board: Arc<Board>, stop: watch::Receiver<bool>) {
    app.console_connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _open = OpenConsole(Arc::clone(&app));
    let mut conn = Conn { socket, last_heard: Instant::now() };
    let Some((who, access)) = conn.admit(&app, &device).await else { return };
    let result = run(&app, &mut conn, &device, &board, &who, &access, stop).await;
    if let Err(Close::With(code, reason)) = result {
        let frame = CloseFrame { code, reason: reason.into() };
        let _ = tokio::time::timeout(SEND_TIMEOUT, conn.socket.close(Some(frame))).await;
    }
    tracing::debug!(device = %device.id, email = %who.email, "console closed");
}

/// Counts a console socket while it lives.
struct OpenConsole(Arc<App>);

impl Drop for OpenConsole {
    fn drop(&mut self) {
        self.0.console_connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How a connection ends.
enum Close {
    Quietly,
    With(CloseCode, String),
}

struct Conn {
    socket: Socket,
    last_heard: Instant,
}

impl Conn {
    async fn send(&mut self, value: &Value) -> Result<(), Close> {
        match tokio::time::timeout(SEND_TIMEOUT, self.socket.send(Message::Text(value.to_string().into()))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Close::Quietly),
            Err(_) => {
                tracing::info!("dropping a console client that stopped reading");
                Err(Close::Quietly)
            }
        }
    }

    async fn error(&mut self, code: &str, message: impl Into<String>) -> Result<(), Close> {
        self.send(&json!({"type": "error", "code": code, "message": message.into()})).await
    }

    async fn refuse(&mut self, error: &AppError) {
        let _ = self.error(error.code(), error.to_string()).await;
        let frame = CloseFrame { code: CloseCode::Policy, reason: error.code().into() };
        let _ = tokio::time::timeout(SEND_TIMEOUT, self.socket.close(Some(frame))).await;
    }

    /// Reads the credentials message and checks the caller may use the device now.
    async fn admit(&mut self, app: &App, device: &DeviceInfo) -> Option<(Principal, Access)> {
        let first = match tokio::time::timeout(AUTH_TIMEOUT, self.socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(_))) => {
                self.refuse(&AppError::NotAuthenticated).await;
                return None;
            }
            Ok(_) => return None,
            Err(_) => {
                self.refuse(&AppError::NotAuthenticated).await;
                return None;
            }
        };
        let credentials = JsonObject::parse(first.as_bytes()).and_then(|m| m.credentials());
        let who = match credentials {
            Ok(Some(credentials)) => app.authenticate(credentials).await,
            Ok(None) => Err(AppError::NotAuthenticated),
            Err(e) => Err(e),
        };
        let admitted = who.and_then(|who| app.device_access(&who, device, "console").map(|access| (who, access)));
        match admitted {
            Ok(admitted) => Some(admitted),
            Err(error) => {
                self.refuse(&error).await;
                None
            }
        }
    }

    async fn keep_alive(&mut self) -> Result<(), Close> {
        let silent = self.last_heard.elapsed();
        if silent >= IDLE_TIMEOUT {
            return Err(Close::With(CloseCode::Away, "no answer to pings".into()));
        }
        if silent >= PING_INTERVAL {
            return match tokio::time::timeout(SEND_TIMEOUT, self.socket.send(Message::Ping(Bytes::new()))).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(Close::Quietly),
            };
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    app: &App,
    conn: &mut Conn,
    device: &DeviceInfo,
    board: &Board,
    who: &Principal,
    access: &Access,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Close> {
    // Taken before anything is sent, so no byte falls between scrollback and stream.
    let (scrollback, mut output) = board.port().subscribe();
    let mut events = board.subscribe();
    let mut state = board.port().state();
    let config = board.config();
    conn.send(&json!({
        "type": "connection_established",
        "device_number": device.number,
        "device": device.id,
        "device_info": {
            "model": config.model,
            "port": board.port().config().spec.to_string(),
            "description": config.name,
        },
        "online": board.is_online(),
        "message": format!("Connected to {} ({})", config.name, device.id),
    }))
    .await?;
    let mut decoder = Utf8Stream::default();
    let start = scrollback.iter().position(|b| b & 0xC0 != 0x80).unwrap_or(scrollback.len());
    let first = decoder.push(&scrollback[start..]);
    conn.send(&serial_output(app, device, first)).await?;
    let initial = state.borrow_and_update().clone();
    let mut was_offline = matches!(initial, PortState::Offline { .. });
    if let PortState::Offline { reason } = initial {
        conn.error(
            "device_offline",
            format!("Device {} is offline: {reason}; the console resumes when it is back", device.id),
        )
        .await?;
    }
    let mut ticks = tokio::time::interval(PING_INTERVAL);
    ticks.tick().await;
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
                        conn.send(&serial_output(app, device, text)).await?;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let text = format!("{n} chunks of output were dropped: this connection fell behind the board");
                    conn.error("output_dropped", text).await?;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(Close::With(CloseCode::Away, "the device's port was closed".into()));
                }
            },
            () = sleep_until(hold) => {
                let text = decoder.flush();
                conn.send(&serial_output(app, device, text)).await?;
            }
            event = events.recv() => match event {
                Ok(ConsoleEvent::Progress(p)) => {
                    conn.send(&json!({"type": "upload_progress", "phase": p.phase.as_str(), "percent": p.percent})).await?;
                }
                Ok(ConsoleEvent::UploadDone { ok, message }) => {
                    let phase = if ok { "done" } else { "failed" };
                    conn.send(&json!({"type": "upload_progress", "phase": phase, "percent": 100, "message": message})).await?;
                }
                Ok(ConsoleEvent::SessionEnded { email, message }) => {
                    if email == who.email && matches!(access, Access::Session { .. }) {
                        let text = format!("Your session on {} ended: {message}", device.id);
                        conn.send(&json!({"type": "session_ended", "message": text})).await?;
                        return Err(Close::With(CloseCode::Normal, "session ended".into()));
                    }
                }
                Ok(ConsoleEvent::Removed) => {
                    let text = format!("Device {} was removed from the lab's configuration", device.id);
                    conn.send(&json!({"type": "session_ended", "message": text})).await?;
                    return Err(Close::With(CloseCode::Normal, "device removed".into()));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Err(Close::With(CloseCode::Away, "device closed".into())),
            },
            changed = state.changed() => {
                if changed.is_err() {
                    return Err(Close::With(CloseCode::Away, "the device's port was closed".into()));
                }
                let now = state.borrow_and_update().clone();
                match now {
                    PortState::Offline { reason } if !was_offline => {
                        was_offline = true;
                        conn.error("device_offline", format!(
                            "Device {} went offline: {reason}; the console resumes when it is back", device.id
                        )).await?;
                    }
                    PortState::Online { .. } if was_offline => {
                        was_offline = false;
                        conn.send(&json!({"type": "device_status", "online": true, "message": format!("Device {} is back online", device.id)})).await?;
                    }
                    _ => {}
                }
            }
            incoming = conn.socket.next() => {
                let message = match incoming {
                    None => return Err(Close::Quietly),
                    Some(Ok(message)) => message,
                    Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                        return Err(Close::With(CloseCode::Size, "message too big".into()));
                    }
                    Some(Err(_)) => return Err(Close::Quietly),
                };
                conn.last_heard = Instant::now();
                match message {
                    Message::Text(text) => on_text(app, conn, board, &text).await?,
                    Message::Binary(data) => write_input(app, conn, board, data).await?,
                    Message::Close(_) => return Err(Close::Quietly),
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                }
            }
            _ = ticks.tick() => conn.keep_alive().await?,
            () = stopped(&mut stop) => {
                return Err(Close::With(CloseCode::Away, "server shutting down".into()));
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

async fn on_text(app: &App, conn: &mut Conn, board: &Board, text: &str) -> Result<(), Close> {
    let message = match JsonObject::parse(text.as_bytes()) {
        Ok(message) => message,
        Err(error) => return conn.error("invalid_message", format!("Invalid message: {error}")).await,
    };
    match message.str("type") {
        Ok(Some("input")) => match message.str("data") {
            Ok(Some(data)) => write_input(app, conn, board, Bytes::copy_from_slice(data.as_bytes())).await,
            Ok(None) => conn.error("missing_field", "input needs data: the text to send to the board").await,
            Err(error) => conn.error("invalid_field", error.to_string()).await,
        },
        // A repeated credentials message (some clients resend it) is harmless.
        Ok(None) if message.credentials().ok().flatten().is_some() => Ok(()),
        Ok(Some(other)) => conn.error("unknown_type", format!("Unknown message type: {other}")).await,
        Ok(None) => conn.error("invalid_message", "Missing message type").await,
        Err(error) => conn.error("invalid_field", error.to_string()).await,
    }
}

async fn write_input(app: &App, conn: &mut Conn, board: &Board, data: Bytes) -> Result<(), Close> {
    let n = data.len() as u64;
    match board.port().write(data).await {
        Ok(()) => {
            app.metrics.record_serial_bytes(crate::metrics::Direction::Out, n);
            Ok(())
        }
        Err(PortError::Leased) => conn.error("device_busy", "An upload is running; input was not sent").await,
        Err(error) => conn.error("device_offline", format!("Input was not sent: {error}")).await,
    }
}

fn serial_output(app: &App, device: &DeviceInfo, text: Decoded) -> Value {
    let mut message = json!({
        "type": "serial_output",
        "device_number": device.number,
        "output": text.text,
        "timestamp": crate::wire::utc(app.now()),
    });
    if let Some(raw) = text.raw {
        message["output_base64"] = base64(&raw).into();
    }
    message
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

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn base64_matches_the_rfc_examples() {
        for (input, expected) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
        assert_eq!(base64(&[0xFF, 0xFE]), "//4=");
    }
}
