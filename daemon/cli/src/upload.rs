//! `rero upload`: firmware or a sketch to the board, with the progress the
//! board's console reports (`upload_progress`) shown as it goes.

use std::io::IsTerminal as _;
use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use hyper::Method;
use indicatif::{ProgressBar, ProgressStyle};
use rerod_wire::{BodyCredentials, ConsoleServerMessage, UploadCodeRequest, UploadPhase, UploadResponse};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::api::{Body, Client, Error, decode, print_json, query_value};

/// How long to wait for the console to admit us before uploading without progress.
const CONSOLE_WAIT: Duration = Duration::from_secs(5);
/// How long the last progress message may trail the upload's answer.
const PROGRESS_TAIL: Duration = Duration::from_millis(500);

/// One `upload_progress` message.
#[derive(Debug)]
struct Progress {
    phase: UploadPhase,
    percent: u8,
}

pub async fn upload(client: &Client, file: &Path, board: Option<String>, json: bool) -> Result<(), Error> {
    client.token()?;
    let bytes = std::fs::read(file).map_err(|e| Error::message(format!("reading {}: {e}", file.display())))?;
    let body = match file.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("hex") => {
            // Checked here, so a text file named .hex is never flashed as raw bytes.
            rerod_devices::Firmware::parse_ihex(&bytes)
                .map_err(|e| Error::message(format!("{}: {e}; nothing was uploaded", file.display())))?;
            Body::Firmware(bytes)
        }
        Some("bin") => Body::Firmware(bytes),
        Some("ino") => {
            let code = String::from_utf8(bytes)
                .map_err(|_| Error::message(format!("{} is not UTF-8 text", file.display())))?;
            // Compiler messages then name the student's own file.
            let file_name = file.file_name().map(|name| name.to_string_lossy().into_owned());
            let json = serde_json::to_vec(&UploadCodeRequest { code, file_name })
                .map_err(|e| Error::message(e.to_string()))?;
            Body::Json(json)
        }
        _ => {
            return Err(Error::message(format!(
                "{}: rero uploads Intel HEX (.hex), raw binary (.bin) or a sketch (.ino)",
                file.display()
            )));
        }
    };
    let board = crate::calendar::default_board(client, board).await?;

    // The console is opened first, so the upload's first progress message
    // is not missed; without it (another client holds the console's
    // attention, say) the upload goes on, only unseen.
    let (tx, rx) = mpsc::unbounded_channel();
    let watcher = match follow_progress(client, &board, tx).await {
        Ok(task) => Some(task),
        Err(e) => {
            if !json {
                eprintln!("rero: no progress to show ({e})");
            }
            None
        }
    };
    let shown = tokio::spawn(show_progress(rx, json));
    let path = format!("/devices/upload/{}", query_value(&board));
    let result = client.send(Method::POST, &path, body, true).await;
    if let Some(watcher) = watcher {
        // The last progress message may arrive just after the answer.
        let _ = tokio::time::timeout(PROGRESS_TAIL, async {
            while !watcher.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        watcher.abort();
    }
    let _ = shown.await;
    let answer: UploadResponse = decode(&result?)?;
    if json {
        return print_json(&answer);
    }
    if let Some(output) = answer.compile_output.as_deref().filter(|o| !o.trim().is_empty()) {
        eprintln!("{}", output.trim_end());
    }
    println!("{}: {} bytes in {:.1} s", answer.message, answer.bytes_written, answer.duration_ms as f64 / 1000.0);
    Ok(())
}

/// Opens the board's console and forwards its `upload_progress` messages
/// until the upload is done or has failed.
async fn follow_progress(
    client: &Client,
    board: &str,
    tx: mpsc::UnboundedSender<Progress>,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let mut socket = client.websocket(&format!("/devices/read/{}", query_value(board))).await?;
    let hello = BodyCredentials { token: Some(client.token()?.to_owned()), email: None, password: None };
    let text = serde_json::to_string(&hello).map_err(|e| Error::message(e.to_string()))?;
    socket.send(Message::Text(text.into())).await.map_err(|e| Error::message(e.to_string()))?;
    let admitted = tokio::time::timeout(CONSOLE_WAIT, async {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Text(text) = message {
                return match serde_json::from_str::<ConsoleServerMessage>(&text) {
                    Ok(ConsoleServerMessage::ConnectionEstablished { .. }) => Ok(()),
                    Ok(ConsoleServerMessage::Error { message, .. }) => Err(Error::message(message)),
                    _ => Err(Error::message("unexpected first console message")),
                };
            }
        }
        Err(Error::message("the console closed"))
    })
    .await
    .map_err(|_| Error::message("the console did not answer"))?;
    admitted?;
    Ok(tokio::spawn(async move {
        while let Some(Ok(message)) = socket.next().await {
            let Message::Text(text) = message else { continue };
            if let Ok(ConsoleServerMessage::UploadProgress { phase, percent, .. }) = serde_json::from_str(&text) {
                let last = phase.is_last();
                let _ = tx.send(Progress { phase, percent });
                if last {
                    break;
                }
            }
        }
    }))
}

/// A progress bar on a terminal; one line per phase otherwise, so a log
/// or a script sees the phases too.
async fn show_progress(mut rx: mpsc::UnboundedReceiver<Progress>, json: bool) {
    if json {
        while rx.recv().await.is_some() {}
        return;
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(100);
        if let Ok(style) = ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos:>3}%") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });
    let mut phase = None;
    while let Some(progress) = rx.recv().await {
        match &bar {
            Some(bar) => {
                bar.set_message(progress.phase.to_string());
                bar.set_position(u64::from(progress.percent));
            }
            None if phase != Some(progress.phase) => eprintln!("upload: {} {}%", progress.phase, progress.percent),
            None => {}
        }
        phase = Some(progress.phase);
    }
    if let Some(bar) = bar {
        // A failed upload's bar stays where it stopped, marked failed.
        if phase == Some(UploadPhase::Failed) {
            bar.abandon_with_message("failed");
        } else {
            bar.finish();
        }
    }
}
