//! The connection to a camera's source: an HTTP/1.1 GET (hyper's client
//! connection over a tokio TcpStream), read as an MJPEG stream, or a single
//! picture fetched for the snapshot source.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::mjpeg::{self, ParseError, Part};
use crate::config::WebhookUrl;

/// How long connecting and the response head may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A stream silent this long is taken for dead and reconnected.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a source gave no (more) frames.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot connect to {url}: {error}")]
    Connect { url: String, error: std::io::Error },
    #[error("{url} did not answer within {} s", CONNECT_TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error("{url} sent nothing for {} s", STALL_TIMEOUT.as_secs())]
    Stalled { url: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url} is not an MJPEG stream (Content-Type {content_type:?}, expected multipart/x-mixed-replace)")]
    NotMjpeg { url: String, content_type: String },
    #[error("{url}: {error}")]
    Http { url: String, error: hyper::Error },
    #[error("{url}: {error}")]
    Parse { url: String, error: ParseError },
    #[error("{url} ended the stream")]
    Ended { url: String },
}

/// Closes the connection's task when the stream is dropped.
struct Connection(tokio::task::JoinHandle<()>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends `GET url` and answers the response head.
async fn get(url: &WebhookUrl) -> Result<(Response<Incoming>, Connection), SourceError> {
    let name = url.to_string();
    let host = url.host.trim_start_matches('[').trim_end_matches(']');
    let head = async {
        let tcp = TcpStream::connect((host, url.port))
            .await
            .map_err(|error| SourceError::Connect { url: name.clone(), error })?;
        let _ = tcp.set_nodelay(true);
        let http = |error| SourceError::Http { url: name.clone(), error };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(http)?;
        let connection = Connection(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let request = Request::get(url.path.as_str())
            .header(header::HOST, format!("{}:{}", url.host, url.port))
            .header(header::USER_AGENT, concat!("rerod/", env!("CARGO_PKG_VERSION")))
            .body(Empty::<Bytes>::new())
            .expect("a checked URL's path makes a valid request");
        let response = sender.send_request(request).await.map_err(http)?;
        if !response.status().is_success() {
            return Err(SourceError::Status { url: name.clone(), status: response.status().as_u16() });
        }
        Ok((response, connection))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, head).await.map_err(|_| SourceError::Timeout { url: url.to_string() })?
}

/// Reads the MJPEG stream at `url`, handing each part to `on_part`, until
/// the source fails or ends it.
pub async fn stream(url: &WebhookUrl, max_frame: usize, mut on_part: impl FnMut(Part)) -> Result<(), SourceError> {
    let name = url.to_string();
    let (response, _connection) = get(url).await?;
    let content_type =
        response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let Some(boundary) = mjpeg::boundary(&content_type) else {
        return Err(SourceError::NotMjpeg { url: name, content_type });
    };
    let mut parser = mjpeg::Parser::new(&boundary, max_frame);
    let mut body = response.into_body();
    let mut parts = Vec::new();
    loop {
        let frame = match tokio::time::timeout(STALL_TIMEOUT, body.frame()).await {
            Err(_) => return Err(SourceError::Stalled { url: name }),
            Ok(None) => return Err(SourceError::Ended { url: name }),
            Ok(Some(Err(error))) => return Err(SourceError::Http { url: name, error }),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        let parsed = parser.push(&data, &mut parts);
        for part in parts.drain(..) {
            on_part(part);
        }
        parsed.map_err(|error| SourceError::Parse { url: name.clone(), error })?;
    }
}

/// Fetches one picture from `url`: its bytes, or [`Part::Oversized`] when
/// it is larger than `max_frame` (read no further).
pub async fn snapshot(url: &WebhookUrl, max_frame: usize) -> Result<Part, SourceError> {
    let name = url.to_string();
    let (response, _connection) = get(url).await?;
    let mut body = response.into_body();
    let mut picture = Vec::new();
    loop {
        let frame = match tokio::time::timeout(STALL_TIMEOUT, body.frame()).await {
            Err(_) => return Err(SourceError::Stalled { url: name }),
            Ok(None) => return Ok(Part::Frame(Bytes::from(picture))),
            Ok(Some(Err(error))) => return Err(SourceError::Http { url: name, error }),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        if picture.len() + data.len() > max_frame {
            return Ok(Part::Oversized);
        }
        picture.extend_from_slice(&data);
    }
}
