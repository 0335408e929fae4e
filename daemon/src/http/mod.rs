//! The HTTP server: hyper 1.x over tokio, one task per connection, a straight
//! pipeline per request (route → read body → handler → error mapping → CORS
//! and log line).

mod admin;
mod camera;
mod devices;
mod error;
mod forward;
mod handlers;
pub mod openapi;
mod records;
mod request;
mod routes;
mod upgrade;
mod web;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::app::App;
use crate::client::{self, Share, Shares};
use crate::wire::ErrorBody;
use crate::ws::booking::BookingHub;

pub use error::{ApiError, HttpErrorKind, Kind};
pub use routes::{Auth, BodyLimit, ROUTES, Route, RouteSpec, Serves};

/// A response body: whole (most routes), a camera's live stream, or the
/// answer of the host a request was forwarded to, streamed.
pub(crate) type Body = http_body_util::Either<Full<Bytes>, http_body_util::Either<camera::StreamBody, Incoming>>;

/// How long in-flight requests get to finish once shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` until `stop` turns true, then stops accepting, lets
/// in-flight requests finish (within a bound) and returns. WebSockets close
/// on the same signal.
pub async fn serve(app: Arc<App>, booking: BookingHub, listener: TcpListener, stop: watch::Receiver<bool>) {
    let open = Arc::new(AtomicUsize::new(0));
    let per_address: Arc<Shares<std::net::IpAddr>> = Arc::default();
    let stop_rx = stop.clone();
    let server = Arc::new(Server { booking, app, stop, upload_bytes: Arc::new(AtomicUsize::new(0)) });
    let app = &server.app;
    // Every connection task holds a sender; when all are gone, all have finished.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let mut shutdown = stop_rx.clone();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, usually: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { shutdown.wait_for(|stop| *stop).await.map(drop) } => break,
        };
        let config = app.config();
        if open.load(Ordering::Relaxed) >= config.server.max_connections {
            tokio::spawn(refuse_connection(stream, "Too many open connections; try again shortly"));
            continue;
        }
        // A trusted proxy, or another host of the lab, carries many clients;
        // theirs are told apart per request.
        let from_proxy = config.server.trusted_proxies.iter().any(|proxy| proxy.contains(peer.ip()))
            || (config.cluster.is_some() && app.is_peer_address(peer.ip()));
        let address = match from_proxy {
            true => None,
            false => {
                match per_address.try_take(client::address_key(peer.ip()), config.server.max_connections_per_address) {
                    Some(share) => Some(share),
                    None => {
                        tokio::spawn(refuse_connection(stream, "Too many open connections from your address"));
                        continue;
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let held = HeldConnection { _counted: Arc::new((ConnectionGuard::new(&open), address)) };
        let server = Arc::clone(&server);
        let mut stop = stop_rx.clone();
        let alive = alive_tx.clone();
        let header_timeout = config.server.header_read_timeout;
        let max_header_bytes = config.server.max_header_bytes;
        tokio::spawn(async move {
            let _alive = alive;
            let service = service_fn(move |mut req: Request<Incoming>| {
                let server = Arc::clone(&server);
                // An upgraded socket takes it along: it stays counted until the socket closes.
                if req.headers().contains_key(header::UPGRADE) {
                    req.extensions_mut().insert(held.clone());
                }
                async move { Ok::<_, Infallible>(handle(server, req, peer).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                // The request line and headers must fit the read buffer: beyond it, hyper answers 431.
                .max_buf_size(max_header_bytes)
                .keep_alive(true)
                .serve_connection(TokioIo::new(crate::linger::Lingering::new(stream)), service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = async { stop.wait_for(|stop| *stop).await.map(|_| ()) } => {
                    conn.as_mut().graceful_shutdown();
                    conn.as_mut().await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(alive_tx);
    if tokio::time::timeout(DRAIN_TIMEOUT, alive_rx.recv()).await.is_err() {
        tracing::warn!(
            open = open.load(Ordering::Relaxed),
            "connections still open after the drain timeout; closing them"
        );
    }
}

/// What every request handler may need.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) app: Arc<App>,
    pub(crate) booking: BookingHub,
    /// Turns true when the daemon stops.
    stop: watch::Receiver<bool>,
    /// Upload body bytes being received or held, against `server.max_upload_bytes_in_flight`.
    upload_bytes: Arc<AtomicUsize>,
}

/// A share of the upload budget, given back when dropped.
#[derive(Debug)]
pub(crate) struct UploadBytes {
    in_flight: Arc<AtomicUsize>,
    n: usize,
}

impl Drop for UploadBytes {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(self.n, Ordering::AcqRel);
    }
}

impl Server {
    /// Reserves room for one upload body of `declared` bytes (the firmware
    /// limit when it does not say), or refuses with 503 while too many
    /// bytes are already in flight.
    pub(crate) fn reserve_upload_bytes(&self, declared: Option<u64>, limit: usize) -> Result<UploadBytes, ApiError> {
        let n = declared.map_or(limit, |d| usize::try_from(d).unwrap_or(usize::MAX).min(limit));
        let budget = self.app.config().server.max_upload_bytes_in_flight;
        let reserved = self.upload_bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |in_flight| {
            // One upload alone always fits, whatever the budget.
            (in_flight == 0 || in_flight + n <= budget).then_some(in_flight + n)
        });
        match reserved {
            Ok(_) => Ok(UploadBytes { in_flight: Arc::clone(&self.upload_bytes), n }),
            Err(_) => Err(ApiError::from(crate::app::AppError::Overloaded { what: "receiving uploads" })),
        }
    }

    /// Turns true when the daemon stops; sockets close on it.
    pub(crate) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }
}

/// A connection counted against `server.max_connections` and its address's
/// `server.max_connections_per_address`, until the connection, and any
/// WebSocket upgraded from it, is gone.
#[derive(Clone, Debug)]
pub(crate) struct HeldConnection {
    _counted: Arc<(ConnectionGuard, Option<Share<std::net::IpAddr>>)>,
}

/// Counts a connection for `server.max_connections` while it lives.
#[derive(Debug)]
struct ConnectionGuard(Arc<AtomicUsize>);

impl ConnectionGuard {
    fn new(open: &Arc<AtomicUsize>) -> ConnectionGuard {
        open.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(Arc::clone(open))
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers a connection over a cap with a 503 instead of leaving it hanging.
async fn refuse_connection(mut stream: TcpStream, detail: &'static str) {
    let error = ApiError::http(HttpErrorKind::TooManyConnections, detail);
    let body = ErrorBody { detail: error.detail, code: error.kind.code().to_owned(), field: None };
    let body = serde_json::to_string(&body).expect("error bodies serialize");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(response.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// One request through the pipeline. Never fails: errors become responses.
async fn handle(server: Arc<Server>, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let origin = req.headers().get(header::ORIGIN).cloned();
    // From here on, "the client's address" is the one behind trusted proxies,
    // or the one another host of the lab vouches for with the lab's secret.
    let address = match forward::vouched_client(&server.app, &req) {
        Some(address) => {
            req.extensions_mut().insert(forward::FromPeer);
            address
        }
        None => client_address(&server.app, &req, peer),
    };
    let peer = SocketAddr::new(address, peer.port());
    let (route, result) = routes::dispatch(&server, req, peer).await;
    let mut response = result.unwrap_or_else(|error| error.into_response().map(Body::Left));
    add_cors_headers(&server.app, origin.as_ref(), response.headers_mut());
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let route = route.map_or("(unknown)", Route::pattern);
    server.app.metrics.record_request(route, method.as_str(), status, elapsed);
    // Recorded here, formatted and written by the log's own thread.
    crate::logging::access(|| crate::logging::AccessLine {
        at: std::time::SystemTime::now(),
        method,
        route,
        status,
        latency_us,
        peer,
    });
    response
}

/// The address of the client behind `server.trusted_proxies`.
fn client_address(app: &App, req: &Request<Incoming>, peer: SocketAddr) -> std::net::IpAddr {
    let config = app.config();
    if config.server.trusted_proxies.is_empty() {
        return peer.ip();
    }
    let values = |name: &str| req.headers().get_all(name).into_iter().filter_map(|v| v.to_str().ok());
    let (forwarded, x_forwarded_for) = (values("forwarded"), values("x-forwarded-for"));
    client::client_address(peer.ip(), forwarded, x_forwarded_for, &config.server.trusted_proxies)
}

/// Adds CORS headers when the request's origin is allowed.
fn add_cors_headers(app: &App, origin: Option<&HeaderValue>, headers: &mut hyper::HeaderMap) {
    let Some(origin) = origin else { return };
    let config = app.config();
    let allowed = &config.server.cors_origins;
    if allowed.iter().any(|o| o == "*") {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    } else if allowed.iter().any(|o| origin.as_bytes() == o.as_bytes()) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// A JSON response with `status`.
pub(crate) fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).expect("response bodies always serialize");
    json_bytes(status, Bytes::from(bytes))
}

/// A response of already serialized JSON.
pub(crate) fn json_bytes(status: StatusCode, bytes: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
