//! Talking to rerod: HTTP requests and WebSocket connections over plain
//! TCP, with every body a type of `rerod::wire`.
//!
//! rero speaks plain `http://` only: a lab that wants TLS puts rerod behind
//! its own reverse proxy, and rero reaches it from the lab's network or
//! through an SSH tunnel. That keeps a TLS stack and its certificate store
//! out of the daemon's package.

use std::fmt;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rerod_wire::ErrorBody;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

/// Why a command failed. `main` prints it as one line.
#[derive(Debug)]
pub enum Error {
    /// The server refused, with its FastAPI-shaped error; `relogin` when
    /// it refused the token rero sent.
    Api { body: ErrorBody, relogin: bool },
    /// Anything else, already worded for the user.
    Message(String),
}

impl Error {
    pub fn message(text: impl Into<String>) -> Error {
        Error::Message(text.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // A refused token is fixed by logging in again; say so.
            Error::Api { body, relogin: true } => write!(f, "{} (log in again: rero login EMAIL)", body.detail),
            Error::Api { body, relogin: false } => f.write_str(&body.detail),
            Error::Message(text) => f.write_str(text),
        }
    }
}

/// Where rerod is: `http://host[:port][/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// `host:port`, to connect to and to send as `Host`.
    authority: String,
    /// A path prefix without its trailing slash (a reverse proxy's mount point), or empty.
    prefix: String,
}

impl Server {
    pub fn parse(url: &str) -> Result<Server, Error> {
        if !url.contains("://") {
            return Err(Error::message(format!("{url:?} has no scheme: write it as http://{url}")));
        }
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            Error::message(format!(
                "{url:?} is not an http:// address: rero speaks plain HTTP (for a lab behind TLS, \
                 use an SSH tunnel: ssh -L 8000:localhost:8000 LABHOST, then --server http://localhost:8000)"
            ))
        })?;
        let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        if authority.is_empty() {
            return Err(Error::message(format!("{url:?} names no host")));
        }
        let authority = if authority.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok())
            && !authority.ends_with(']')
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let prefix = prefix.trim_end_matches('/');
        let prefix = if prefix.is_empty() { String::new() } else { format!("/{prefix}") };
        Ok(Server { authority, prefix })
    }
}

/// What a request carries.
pub enum Body {
    Empty,
    Json(Vec<u8>),
    /// Firmware bytes, sent as `application/octet-stream`.
    Firmware(Vec<u8>),
}

/// A rerod to talk to, and the token to show it (if logged in).
#[derive(Clone)]
pub struct Client {
    pub server: Server,
    pub url: String,
    token: Option<String>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token stays out of every debug print.
        f.debug_struct("Client").field("url", &self.url).field("token", &self.token.as_ref().map(|_| "…")).finish()
    }
}

impl Client {
    /// A client of the rerod at `url`, showing `token` if there is one.
    pub fn new(url: &str, token: Option<String>) -> Result<Client, Error> {
        Ok(Client { server: Server::parse(url)?, url: url.to_owned(), token })
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The token, or the error that says how to get one.
    pub fn token(&self) -> Result<&str, Error> {
        self.token.as_deref().ok_or_else(|| Error::message("not logged in: run `rero login EMAIL` first"))
    }

    async fn connect(&self) -> Result<TcpStream, Error> {
        TcpStream::connect(&self.server.authority)
            .await
            .map_err(|e| Error::message(format!("cannot reach rerod at {}: {e}", self.url)))
    }

    /// Sends one request (with the token when `auth`) and reads the answer:
    /// the body of a success, or the server's error.
    pub async fn send(&self, method: Method, path: &str, body: Body, auth: bool) -> Result<Bytes, Error> {
        // Not being logged in is said before anything is sent.
        let bearer = if auth { Some(format!("Bearer {}", self.token()?)) } else { None };
        let stream = self.connect().await?;
        let broken = |e: hyper::Error| Error::message(format!("talking to rerod at {}: {e}", self.url));
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(broken)?;
        tokio::spawn(conn);
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.server.prefix))
            .header(hyper::header::HOST, &self.server.authority)
            .header(hyper::header::ACCEPT, "application/json");
        if let Some(bearer) = bearer {
            request = request.header(hyper::header::AUTHORIZATION, bearer);
        }
        let bytes = match body {
            Body::Empty => Bytes::new(),
            Body::Json(json) => {
                request = request.header(hyper::header::CONTENT_TYPE, "application/json");
                json.into()
            }
            Body::Firmware(firmware) => {
                request = request.header(hyper::header::CONTENT_TYPE, "application/octet-stream");
                firmware.into()
            }
        };
        let request = request.body(Full::new(bytes)).map_err(|e| Error::message(format!("bad request: {e}")))?;
        let response = sender.send_request(request).await.map_err(broken)?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(broken)?.to_bytes();
        if status.is_success() {
            return Ok(body);
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(body) => Err(Error::Api { body, relogin: auth && status == StatusCode::UNAUTHORIZED }),
            Err(_) => Err(Error::message(format!("rerod at {} answered {status}", self.url))),
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str, auth: bool) -> Result<T, Error> {
        decode(&self.send(Method::GET, path, Body::Empty, auth).await?)
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B, auth: bool) -> Result<T, Error> {
        let json = serde_json::to_vec(body).map_err(|e| Error::message(format!("encoding the request: {e}")))?;
        decode(&self.send(Method::POST, path, Body::Json(json), auth).await?)
    }

    /// Opens a WebSocket at `path`.
    pub async fn websocket(&self, path: &str) -> Result<WebSocketStream<TcpStream>, Error> {
        let stream = self.connect().await?;
        let url = format!("ws://{}{}{path}", self.server.authority, self.server.prefix);
        let (socket, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .map_err(|e| Error::message(format!("opening {path} on {}: {e}", self.url)))?;
        Ok(socket)
    }
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::message(format!("unexpected answer from rerod: {e}")))
}

/// Prints a typed answer as JSON (for `--json`).
pub fn print_json<T: Serialize>(value: &T) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::message(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// A query-string value, percent-encoded.
pub fn query_value(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decodes standard base64 (the console's `output_base64`).
pub fn base64_decode(text: &str) -> Result<Vec<u8>, Error> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Ok(c - b'A'),
        b'a'..=b'z' => Ok(c - b'a' + 26),
        b'0'..=b'9' => Ok(c - b'0' + 52),
        b'+' => Ok(62),
        b'/' => Ok(63),
        _ => Err(Error::message("the server sent output that is not base64")),
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for chunk in text.trim_end_matches('=').as_bytes().chunks(4) {
        let digits = chunk.iter().map(|&c| value(c)).collect::<Result<Vec<u8>, Error>>()?;
        let n = digits.iter().enumerate().fold(0u32, |acc, (i, d)| acc | u32::from(*d) << (18 - 6 * i));
        for i in 0..digits.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        let s = Server::parse("http://lab.example:8000/").unwrap();
        assert_eq!((s.authority.as_str(), s.prefix.as_str()), ("lab.example:8000", ""));
        let s = Server::parse("http://lab.example/rero/").unwrap();
        assert_eq!((s.authority.as_str(), s.prefix.as_str()), ("lab.example:80", "/rero"));
        assert!(Server::parse("https://lab.example").is_err());
        let Err(error) = Server::parse("lab.example:8000") else { panic!("an address without a scheme is refused") };
        assert_eq!(error.to_string(), "\"lab.example:8000\" has no scheme: write it as http://lab.example:8000");
        assert!(Server::parse("http://").is_err());
    }

    #[test]
    fn base64_round_trips_what_the_server_sends() {
        assert_eq!(base64_decode("/3jDqQAh").unwrap(), vec![0xFF, b'x', 0xC3, 0xA9, 0x00, b'!']);
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert!(base64_decode("a$==").is_err());
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(query_value("uno-1"), "uno-1");
        assert_eq!(query_value("a b&c"), "a%20b%26c");
    }
}
