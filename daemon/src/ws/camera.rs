//! `/websocket/{quality}`: the old web client's camera feed, binary JPEG
//! frames, one per message.
//!
//! The old client sends no credentials (it hid the panel on its own side
//! only), so this serves `lab.legacy_camera_device`'s camera only while that
//! camera is `public`; otherwise the socket closes at once with 1008 and the
//! reason. A camera that stops being public (a reload) closes it the same
//! way. `quality` is ignored: frames are relayed as the camera sends them.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{Close, Conn, PING_INTERVAL};
use crate::app::{App, OpenSocket};
use crate::camera::{CameraState, ViewerEvent};

/// Serves one old client until it leaves, the camera stops being public,
/// or the server stops.
pub async fn serve_legacy<S: AsyncRead + AsyncWrite + Unpin>(
    app: Arc<App>,
    socket: WebSocketStream<S>,
    open: OpenSocket,
    mut stop: watch::Receiver<bool>,
) {
    let mut conn = Conn::new(&app, open, socket);
    let close = run(&app, &mut conn, &mut stop).await.err().unwrap_or(Close::Quietly);
    conn.close(close).await;
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    app: &App,
    conn: &mut Conn<S>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Close> {
    let (_, camera) = app.legacy_camera().map_err(|refused| refusal(&refused.to_string()))?;
    let mut viewer = camera.watch();
    let mut generation = app.config_generation();
    let mut ticks = tokio::time::interval(PING_INTERVAL);
    ticks.tick().await;
    loop {
        tokio::select! {
            event = viewer.next() => match event {
                ViewerEvent::Frame(jpeg) => {
                    if app.config_generation() != generation {
                        generation = app.config_generation();
                        app.legacy_camera().map_err(|refused| refusal(&refused.to_string()))?;
                    }
                    conn.send(Message::Binary(jpeg)).await?;
                }
                ViewerEvent::State(CameraState::Removed) => return Err(refusal("the camera was removed")),
                ViewerEvent::State(_) => {}
            },
            incoming = conn.socket.next() => {
                // Whatever the old client says is ignored; only leaving matters.
                conn.heard(incoming)?;
            }
            _ = ticks.tick() => conn.keep_alive().await?,
            _ = async { stop.wait_for(|stop| *stop).await.map(drop) } => return Err(Close::with(CloseCode::Away, "server stopping")),
        }
    }
}

/// Close 1008 with `reason`, cut to what a close frame carries (123 bytes).
fn refusal(reason: &str) -> Close {
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Close::with(CloseCode::Policy, reason[..end].to_owned())
}
