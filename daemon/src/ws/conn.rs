//! What both WebSocket protocols share about a connection: it is counted
//! while it lives, every send has a deadline, a silent client is pinged and
//! then dropped, a frame over the size limit closes it with 1009, and it
//! ends either quietly or with a close frame and a reason.

use std::borrow::Cow;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::{IDLE_TIMEOUT, PING_INTERVAL, SEND_TIMEOUT};
use crate::app::{App, AppError, OpenSocket, Principal, Role, SocketKind};
use crate::metrics::SlowClient;

/// How a connection ends.
#[derive(Debug)]
pub enum Close {
    /// The client left, broke the protocol, or stalled: nothing more to say.
    Quietly,
    /// A close frame with this code and reason.
    With(CloseCode, Cow<'static, str>),
}

impl Close {
    pub fn with(code: CloseCode, reason: impl Into<Cow<'static, str>>) -> Close {
        Close::With(code, reason.into())
    }
}

/// One live WebSocket connection of either protocol.
#[derive(Debug)]
pub struct Conn<S> {
    pub socket: WebSocketStream<S>,
    kind: SocketKind,
    last_heard: Instant,
    app: Arc<App>,
    /// Counts the connection as open until it is dropped.
    open: OpenSocket,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// A connection counted as `open` (taken when the upgrade was accepted).
    pub fn new(app: &Arc<App>, open: OpenSocket, socket: WebSocketStream<S>) -> Conn<S> {
        Conn { socket, kind: open.kind(), last_heard: Instant::now(), app: Arc::clone(app), open }
    }

    /// Counts the socket as `who`'s (see [`OpenSocket::claim_account`]).
    /// Admins are not held to the per-account cap: one may watch every
    /// board of the lab at once.
    pub fn claim_account(&mut self, who: &Principal) -> Result<(), AppError> {
        match who.role {
            Role::Admin => Ok(()),
            Role::User => self.open.claim_account(&who.email),
        }
    }

    /// Sends one message, or gives up on a client that has not taken it
    /// within the send timeout.
    pub async fn send(&mut self, message: Message) -> Result<(), Close> {
        let sent = tokio::time::timeout(SEND_TIMEOUT, self.socket.send(message)).await;
        self.delivered(sent)
    }

    /// Writes one frame already encoded (header and payload) straight to
    /// the stream under tungstenite, within the send timeout. Large frames
    /// go this way: what tungstenite sends grows its write buffer, which
    /// keeps that size for the life of the connection. Only between whole
    /// messages: every [`Conn::send`] has flushed when it returns.
    pub async fn send_frame(&mut self, frame: &[u8]) -> Result<(), Close> {
        use tokio::io::AsyncWriteExt;
        let stream = self.socket.get_mut();
        let write = async {
            stream.write_all(frame).await?;
            stream.flush().await
        };
        let sent = tokio::time::timeout(SEND_TIMEOUT, write).await;
        self.delivered(sent)
    }

    /// Sends one JSON text message.
    pub async fn send_json(&mut self, message: &impl serde::Serialize) -> Result<(), Close> {
        let text = serde_json::to_string(message).expect("wire messages serialize");
        self.send(Message::Text(text.into())).await
    }

    /// Writes out what the socket has buffered, within the send timeout.
    pub async fn flush(&mut self) -> Result<(), Close> {
        let flushed = tokio::time::timeout(SEND_TIMEOUT, self.socket.flush()).await;
        self.delivered(flushed)
    }

    /// How a write under the send timeout ended: done, the connection
    /// broken (quietly), or the client not reading (dropped as stalled).
    fn delivered<E>(&self, sent: Result<Result<(), E>, tokio::time::error::Elapsed>) -> Result<(), Close> {
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Close::Quietly),
            Err(_) => Err(self.stalled()),
        }
    }

    /// Drops a client that stopped reading.
    fn stalled(&self) -> Close {
        match self.kind {
            SocketKind::Booking => {
                tracing::info!("dropping a WebSocket client that stopped reading");
                self.app.metrics.record_slow_client(SlowClient::Dropped);
            }
            SocketKind::Console => tracing::info!("dropping a console client that stopped reading"),
            SocketKind::Camera => tracing::info!("dropping a camera client that stopped reading"),
        }
        Close::Quietly
    }

    /// Called on every keep-alive tick: pings a client silent for a ping
    /// interval, and drops one silent for the idle timeout.
    pub async fn keep_alive(&mut self) -> Result<(), Close> {
        let silent = self.last_heard.elapsed();
        if silent >= IDLE_TIMEOUT {
            return Err(Close::with(CloseCode::Away, "no answer to pings"));
        }
        if silent >= PING_INTERVAL {
            return self.send(Message::Ping(Default::default())).await;
        }
        Ok(())
    }

    /// What the client sent, as the socket's reader gave it: a message, or
    /// how the connection ends (1009 for a frame over the size limit).
    pub fn heard(&mut self, incoming: Option<Result<Message, WsError>>) -> Result<Message, Close> {
        let message = match incoming {
            None => return Err(Close::Quietly),
            Some(Ok(message)) => message,
            Some(Err(WsError::Capacity(_))) => return Err(Close::with(CloseCode::Size, "message too big")),
            Some(Err(_)) => return Err(Close::Quietly),
        };
        self.last_heard = Instant::now();
        match message {
            Message::Close(_) => Err(Close::Quietly),
            message => Ok(message),
        }
    }

    /// The next message from the client.
    pub async fn next(&mut self) -> Result<Message, Close> {
        let incoming = self.socket.next().await;
        self.heard(incoming)
    }

    /// Ends the connection as `close` says.
    pub async fn close(mut self, close: Close) {
        self.close_with(close).await;
    }

    /// Sends the close frame `close` asks for, if any.
    pub async fn close_with(&mut self, close: Close) {
        if let Close::With(code, reason) = close {
            let frame = CloseFrame { code, reason: reason.into_owned().into() };
            let _ = tokio::time::timeout(SEND_TIMEOUT, self.socket.close(Some(frame))).await;
        }
    }
}
