//! WebSocket endpoints, served by the same hyper server: the HTTP layer
//! answers the upgrade (`http/upgrade.rs`) and hands the upgraded connection
//! here, where tokio-tungstenite speaks the protocol.

pub mod booking;
pub mod camera;
mod conn;
pub mod console;
pub mod fanout;

pub use conn::{Close, Conn};

use std::time::Duration;

use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// How often an idle connection is pinged, and how long a silent one lives.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(75);

/// How long one frame may take to reach a client before it is dropped as stalled.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The WebSocket over the upgraded connection, carried by the stream `wrap`
/// makes of it; `None` if the client left before the switch.
pub async fn open<S>(
    on_upgrade: OnUpgrade,
    max_message_bytes: usize,
    wrap: impl FnOnce(Upgraded) -> Option<S>,
) -> Option<WebSocketStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let config = WebSocketConfig::default()
        // Small buffers: thousands of idle clients must stay cheap.
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes));
    match on_upgrade.await {
        Ok(upgraded) => Some(WebSocketStream::from_raw_socket(wrap(upgraded)?, Role::Server, Some(config)).await),
        Err(error) => {
            tracing::debug!(%error, "WebSocket upgrade failed");
            None
        }
    }
}
