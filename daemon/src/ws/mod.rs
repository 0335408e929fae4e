//! WebSocket endpoints, served by the same hyper server: the HTTP upgrade is
//! answered here and the upgraded connection handed to tokio-tungstenite.

pub mod booking;
pub mod console;
pub mod fanout;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::http::ApiError;

pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// How often an idle connection is pinged, and how long a silent one lives.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(75);

/// How long one frame may take to reach a client before it is dropped as stalled.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers a WebSocket upgrade: 503 beyond the connection cap, a clear 4xx
/// for a request that is not a WebSocket handshake, else 101; then, once
/// hyper has switched protocols, runs `serve` on the socket (over the stream
/// `wrap` makes of the connection) in a task of its own.
pub fn upgrade<S, F>(
    app: &crate::app::App,
    req: &mut Request<Incoming>,
    wrap: impl FnOnce(Upgraded) -> Option<S> + Send + 'static,
    serve: impl FnOnce(WebSocketStream<S>) -> F + Send + 'static,
) -> Result<Response<Full<Bytes>>, ApiError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    check_capacity(app)?;
    let (response, on_upgrade) = accept(req)?;
    let max_message_bytes = app.config().server.max_websocket_message_bytes;
    tokio::spawn(async move {
        if let Some(socket) = open(on_upgrade, max_message_bytes, wrap).await {
            serve(socket).await;
        }
    });
    Ok(response)
}

/// Refuses a new WebSocket (booking or console) beyond
/// `server.max_websocket_connections` with 503 and `Retry-After`.
fn check_capacity(app: &crate::app::App) -> Result<(), ApiError> {
    let open = app.ws_connections() + app.console_connections();
    if open >= app.config().server.max_websocket_connections {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_websockets",
            "Too many WebSocket connections; try again shortly",
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("5")));
    }
    Ok(())
}

/// Checks an upgrade request and answers it with 101. The connection is
/// handed over once hyper has switched protocols: pass the [`OnUpgrade`] to
/// [`open`].
fn accept(req: &mut Request<Incoming>) -> Result<(Response<Full<Bytes>>, OnUpgrade), ApiError> {
    let headers = req.headers();
    let upgrade_ws =
        headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !upgrade_ws || !connection_upgrade {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_required",
            format!(
                "{} is a WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket)",
                req.uri().path()
            ),
        )
        .with_header(header::UPGRADE, HeaderValue::from_static("websocket")));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "websocket_version",
            "Only WebSocket version 13 is supported",
        )
        .with_header(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13")));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "websocket_key", "Sec-WebSocket-Key header is missing"));
    };
    let accept_key = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(req);
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&accept_key).expect("base64 is valid header text"));
    Ok((response, on_upgrade))
}

/// The WebSocket over the upgraded connection, carried by the stream `wrap`
/// makes of it; `None` if the client left before the switch.
async fn open<S>(
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
