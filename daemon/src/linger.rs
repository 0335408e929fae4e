//! Closing a connection the way clients expect after an early answer.
//!
//! When rerod answers before it has read a request's body (413 for a body
//! over the limit, 403 for an upload that is not the caller's to make), the
//! client is usually still sending it. Closing the socket then, with unread
//! bytes in its receive buffer, makes the kernel send a reset instead of an
//! orderly end, and a reset may arrive before the client has read the
//! answer: it sees "connection reset" or "broken pipe" instead of the 413.
//! So a connection's socket, once hyper is done with it, first says it
//! will send no more, then reads and discards what the client still sends,
//! for a bounded time and number of bytes, and only then closes (the
//! "lingering close" of long-lived HTTP servers).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// How long a closing connection keeps reading what its client still sends.
const LINGER_FOR: Duration = Duration::from_secs(2);
/// How much of it, at most.
const LINGER_BYTES: usize = 8 << 20;

/// A connection's socket, closed with a linger when dropped.
#[derive(Debug)]
pub struct Lingering(Option<TcpStream>);

impl Lingering {
    pub fn new(stream: TcpStream) -> Lingering {
        Lingering(Some(stream))
    }

    /// The socket, to be closed by whoever takes it (an upgraded WebSocket,
    /// which ends with its own closing handshake).
    pub fn into_inner(mut self) -> TcpStream {
        self.0.take().expect("a socket is taken only once")
    }

    fn stream(self: Pin<&mut Self>) -> Pin<&mut TcpStream> {
        Pin::new(self.get_mut().0.as_mut().expect("a socket is taken only when it is dropped"))
    }
}

impl AsyncRead for Lingering {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.as_ref().is_some_and(AsyncWrite::is_write_vectored)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(stream) = self.0.take() else { return };
        // Outside a runtime (never, in the server) the socket just closes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(linger(stream));
        }
    }
}

/// Ends the sending side, then discards what the client still sends until
/// it closes its side, the time is up, or enough was read.
async fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 8192];
        let mut n_read = 0;
        while n_read < LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n_read += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_FOR, drain).await;
}
