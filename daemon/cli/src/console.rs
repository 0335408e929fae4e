//! `rero console`: the board's serial console. On a terminal it is
//! interactive (raw mode, `~.` at the start of a line quits, as in ssh and
//! cu); otherwise it pipes stdin to the board and the board to stdout.
//! Board output is written byte for byte, status lines go to stderr.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use rerod_wire::{BodyCredentials, ConsoleServerMessage};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::api::{Client, Error, base64_decode, query_value};

/// After stdin closes, output is still shown until the board has been quiet
/// this long (an echo, the answer to a last command) ...
const DRAIN_QUIET: Duration = Duration::from_millis(500);
/// ... but no longer than this, for a board that never stops talking.
const DRAIN_MAX: Duration = Duration::from_secs(3);

pub async fn console(client: &Client, board: Option<String>, raw: bool) -> Result<(), Error> {
    let token = client.token()?.to_owned();
    let board = crate::calendar::default_board(client, board).await?;
    let mut socket = client.websocket(&format!("/devices/read/{}", query_value(&board))).await?;
    let hello = serde_json::to_string(&BodyCredentials { token: Some(token), email: None, password: None })
        .map_err(|e| Error::message(e.to_string()))?;
    socket.send(Message::Text(hello.into())).await.map_err(broken)?;
    // The first message says whether we are in.
    let greeting = loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => break parse(&text)?,
            Some(Ok(Message::Close(_))) | None => return Err(Error::message("the server closed the console")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(broken(e)),
        }
    };
    let interactive = std::io::stdin().is_terminal();
    let status = Status { raw, interactive };
    match greeting {
        ConsoleServerMessage::ConnectionEstablished { device, device_info, .. } => {
            let quit = if interactive { "; type ~. at the start of a line to quit" } else { "" };
            status.line(&format!("Connected to {device} ({}, {}){quit}", device_info.model, device_info.port));
        }
        ConsoleServerMessage::Error { message, .. } => return Err(Error::message(message)),
        _ => return Err(Error::message("unexpected first console message")),
    }

    let _terminal = if interactive { Some(RawTerminal::enter()?) } else { None };
    let (tx, mut stdin) = mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || read_stdin(tx));
    let (mut sink, mut stream) = socket.split();
    let mut escape = Escape::default();
    let mut drain: Option<(tokio::time::Instant, tokio::time::Instant)> = None;
    loop {
        let quiet_until = drain.map(|(quiet, max)| quiet.min(max));
        tokio::select! {
            input = stdin.recv(), if drain.is_none() => match input {
                Some(bytes) => {
                    let (send, quit) = if interactive { escape.feed(&bytes) } else { (bytes, false) };
                    if !send.is_empty() {
                        sink.send(Message::Binary(send.into())).await.map_err(broken)?;
                    }
                    if quit {
                        let _ = sink.send(Message::Close(None)).await;
                        status.line("Disconnected.");
                        return Ok(());
                    }
                }
                None => {
                    let now = tokio::time::Instant::now();
                    drain = Some((now + DRAIN_QUIET, now + DRAIN_MAX));
                }
            },
            () = sleep_until(quiet_until) => {
                let _ = sink.send(Message::Close(None)).await;
                return Ok(());
            }
            message = stream.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None => return Err(Error::message("the server closed the console")),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(broken(e)),
                };
                match parse(&text)? {
                    ConsoleServerMessage::SerialOutput { output, output_base64, .. } => {
                        let bytes = match output_base64 {
                            Some(b64) => base64_decode(&b64)?,
                            None => output.into_bytes(),
                        };
                        let mut out = std::io::stdout().lock();
                        match out.write_all(&bytes).and_then(|()| out.flush()) {
                            // The reader has what it wanted (`rero console --raw | head`).
                            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                                let _ = sink.send(Message::Close(None)).await;
                                return Ok(());
                            }
                            written => written.map_err(|e| Error::message(format!("writing to stdout: {e}")))?,
                        }
                        if let Some((quiet, _)) = &mut drain {
                            *quiet = tokio::time::Instant::now() + DRAIN_QUIET;
                        }
                    }
                    ConsoleServerMessage::UploadProgress { phase, percent, .. } => {
                        status.line(&format!("[upload: {phase} {percent}%]"));
                    }
                    ConsoleServerMessage::SessionEnding { message, .. } | ConsoleServerMessage::Watchers { message, .. } => {
                        status.line(&format!("[{message}]"))
                    }
                    ConsoleServerMessage::SessionEnded { message } => {
                        status.always(&format!("Session ended: {message}"));
                        return Ok(());
                    }
                    ConsoleServerMessage::DeviceStatus { message, .. } => status.line(&format!("[{message}]")),
                    ConsoleServerMessage::Error { message, .. } => status.line(&format!("[warning: {message}]")),
                    ConsoleServerMessage::ConnectionEstablished { .. } => {}
                }
            }
        }
    }
}

fn broken(e: tokio_tungstenite::tungstenite::Error) -> Error {
    Error::message(format!("the console connection broke: {e}"))
}

fn parse(text: &str) -> Result<ConsoleServerMessage, Error> {
    serde_json::from_str(text).map_err(|e| Error::message(format!("unexpected console message: {e}")))
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Reads stdin on a thread of its own (a blocking read), chunk by chunk,
/// until it closes.
fn read_stdin(tx: mpsc::Sender<Vec<u8>>) {
    let mut stdin = std::io::stdin().lock();
    let mut buffer = [0u8; 4096];
    loop {
        match stdin.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.blocking_send(buffer[..n].to_vec()).is_err() {
                    return;
                }
            }
        }
    }
}

/// Where status lines go: stderr, with `\r\n` in raw mode (the terminal
/// does not add the carriage return then); nothing but the session's end
/// with `--raw`.
#[derive(Clone, Copy, Debug)]
struct Status {
    raw: bool,
    interactive: bool,
}

impl Status {
    fn line(&self, text: &str) {
        if !self.raw {
            self.always(text);
        }
    }

    fn always(&self, text: &str) {
        let end = if self.interactive { "\r\n" } else { "\n" };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "{end}rero: {text}{end}");
        let _ = err.flush();
    }
}

/// The terminal in raw mode for as long as this lives. Dropping it, and a
/// panic, restore the terminal.
#[derive(Debug)]
struct RawTerminal;

impl RawTerminal {
    fn enter() -> Result<RawTerminal, Error> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = crossterm::terminal::disable_raw_mode();
            previous(info);
        }));
        crossterm::terminal::enable_raw_mode()
            .map_err(|e| Error::message(format!("cannot set the terminal up: {e}")))?;
        Ok(RawTerminal)
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// The `~` escape of ssh and cu: at the start of a line, `~.` quits and
/// `~~` sends one `~`; a `~` before anything else is sent as typed.
#[derive(Debug)]
struct Escape {
    at_line_start: bool,
    tilde: bool,
}

impl Default for Escape {
    fn default() -> Escape {
        Escape { at_line_start: true, tilde: false }
    }
}

impl Escape {
    /// The bytes to send for `input`, and whether the user asked to quit.
    fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &byte in input {
            if self.tilde {
                self.tilde = false;
                match byte {
                    b'.' => return (out, true),
                    b'~' => {}
                    _ => out.push(b'~'),
                }
            } else if self.at_line_start && byte == b'~' {
                self.tilde = true;
                self.at_line_start = false;
                continue;
            }
            out.push(byte);
            self.at_line_start = matches!(byte, b'\r' | b'\n');
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilde_dot_at_the_start_of_a_line_quits() {
        assert_eq!(Escape::default().feed(b"~."), (Vec::new(), true));
        assert_eq!(Escape::default().feed(b"ab\r~."), (b"ab\r".to_vec(), true));
        let mut escape = Escape::default();
        assert_eq!(escape.feed(b"x~."), (b"x~.".to_vec(), false));
        assert_eq!(escape.feed(b"\n~"), (b"\n".to_vec(), false));
        assert_eq!(escape.feed(b"."), (Vec::new(), true));
    }

    #[test]
    fn other_tildes_are_sent() {
        assert_eq!(Escape::default().feed(b"~~x"), (b"~x".to_vec(), false));
        assert_eq!(Escape::default().feed(b"~a"), (b"~a".to_vec(), false));
    }
}
