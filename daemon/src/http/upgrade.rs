//! Answering a WebSocket upgrade: the capacity check, the handshake's
//! headers, 101, and then the socket handed to its protocol in `ws`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper::{Request, Response, StatusCode};
use tokio_tungstenite::WebSocketStream;

use super::HeldConnection;
use super::error::{ApiError, HttpErrorKind};
use crate::app::{App, OpenSocket, SocketKind, SocketRefused};

/// Answers a WebSocket upgrade: 503 or 429 beyond a socket cap, a clear 4xx
/// for a request that is not a WebSocket handshake, else 101; then, once
/// hyper has switched protocols, runs `serve` on the socket (over the stream
/// `wrap` makes of the connection) in a task of its own.
pub(super) fn upgrade<S, F>(
    app: &Arc<App>,
    kind: SocketKind,
    client: IpAddr,
    req: &mut Request<Incoming>,
    wrap: impl FnOnce(Upgraded) -> Option<S> + Send + 'static,
    serve: impl FnOnce(WebSocketStream<S>, OpenSocket) -> F + Send + 'static,
) -> Result<Response<Full<Bytes>>, ApiError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let open = reserve(app, kind, client)?;
    let (response, on_upgrade) = accept(req)?;
    let max_message_bytes = app.config().server.max_websocket_message_bytes;
    // The connection stays counted against the connection caps while its socket lives.
    let held = req.extensions_mut().remove::<HeldConnection>();
    tokio::spawn(async move {
        let _held = held;
        if let Some(socket) = crate::ws::open(on_upgrade, max_message_bytes, wrap).await {
            serve(socket, open).await;
        }
    });
    Ok(response)
}

/// Counts the new WebSocket as open, or refuses it: 503 beyond
/// `server.max_websocket_connections` feeds, 429 beyond the client address's
/// `server.max_websockets_per_address`, each with `Retry-After`.
fn reserve(app: &Arc<App>, kind: SocketKind, client: IpAddr) -> Result<OpenSocket, ApiError> {
    app.try_open_socket(kind, client).map_err(|refused| {
        let error = match refused {
            SocketRefused::Full => {
                ApiError::http(HttpErrorKind::TooManyWebSockets, "Too many WebSocket connections; try again shortly")
            }
            SocketRefused::Address => ApiError::http(
                HttpErrorKind::AddressSocketLimit,
                "Too many WebSockets from your address; close some and try again",
            ),
        };
        error.with_retry_after(Duration::from_secs(5))
    })
}

/// Checks an upgrade request and answers it with 101. The connection is
/// handed over once hyper has switched protocols: pass the [`OnUpgrade`] to
/// [`open`].
fn accept(req: &mut Request<Incoming>) -> Result<(Response<Full<Bytes>>, OnUpgrade), ApiError> {
    let headers = req.headers();
    if !asks_for_websocket(req) {
        return Err(ApiError::http(
            HttpErrorKind::WebSocketRequired,
            format!(
                "{} is a WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket)",
                req.uri().path()
            ),
        )
        .with_header(header::UPGRADE, HeaderValue::from_static("websocket")));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
        return Err(ApiError::http(HttpErrorKind::WebSocketVersion, "Only WebSocket version 13 is supported")
            .with_header(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13")));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(ApiError::http(HttpErrorKind::WebSocketKey, "Sec-WebSocket-Key header is missing"));
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

/// Whether a request asks to switch to WebSocket (`Upgrade: websocket`, `Connection: upgrade`).
pub(super) fn asks_for_websocket(req: &Request<Incoming>) -> bool {
    let headers = req.headers();
    let upgrade_ws =
        headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    upgrade_ws && connection_upgrade
}
