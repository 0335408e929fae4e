//! Forwarding to the host that serves a board, in a lab of several hosts
//! (`[cluster]`). A request for another host's board (its upload, the
//! console, its camera, its admin routes, the records of its sessions) is passed on,
//! streamed both ways, to that host's `cluster.advertise` address; the owner
//! checks the caller's token itself, as for any request.
//!
//! The forwarded request carries the client's address in [`PEER_HEADER`],
//! signed with the lab's secret: `<unix seconds>;<address>;<HMAC-SHA256 in
//! hex>` over the method, the path with its query, the address and the
//! time. The owner believes the address (for its per-address limits) only
//! with a good signature made within [`crate::auth::PEER_MAX_SKEW_SECS`]; any other value is
//! ignored and the request counts against the address it came from. A
//! request that arrived signed is answered where it lands and never
//! forwarded again, so no loop can form between hosts.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use super::error::{ApiError, HttpErrorKind};
use super::request::{Req, percent_decode};
use super::routes::{Route, RouteSpec};
use super::{Body, HeldConnection, Server};
use crate::app::{App, DeviceRef};

/// The header a host puts on a request it forwards: the client's address, signed.
pub(crate) const PEER_HEADER: &str = "x-rerod-peer";

/// How long reaching the owner host may take before the client is told so.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a host waits for each other host's part of a listing.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);

/// The most of another host's listing read.
const GATHER_MAX_BYTES: usize = 16 << 20;

/// Marks a request another host of the lab forwarded, signed: it is
/// answered here and never forwarded again.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FromPeer;

/// Where a request goes instead of being answered here.
#[derive(Debug)]
pub(crate) struct Owner {
    host: String,
    advertise: String,
    online: bool,
    /// The path (and query) to ask the owner for: the board named by its id.
    path_and_query: String,
}

/// The client's address a request's [`PEER_HEADER`] vouches for, on a host
/// of a lab of several hosts.
pub(crate) fn vouched_client(app: &App, req: &Request<Incoming>) -> Option<IpAddr> {
    let secret = app.cluster_secret()?;
    let value = req.headers().get(PEER_HEADER)?.to_str().ok()?;
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    // Wall time, not the lab's clock: it is what the hosts' clocks share.
    crate::auth::verify_peer(secret, req.method().as_str(), path, value, jiff::Timestamp::now().as_second())
}

/// The host a request must go to instead of being answered here: another
/// host's board named by a board's route. `None` on a lab of one host, for
/// a request a peer already forwarded, and for anything this host answers.
pub(crate) fn owner(app: &App, spec: &RouteSpec, req: &Request<Incoming>) -> Option<Owner> {
    app.config().cluster.as_ref()?;
    if req.extensions().get::<FromPeer>().is_some() {
        return None;
    }
    let path = req.uri().path();
    let query = req.uri().query();
    let (device, rewrite) = match spec.route {
        Route::DevicesUpload
        | Route::DevicesConsole
        | Route::AdminMaintenance
        | Route::AdminCheck
        | Route::AdminChecks
        | Route::Camera
        | Route::CameraTicket
        | Route::CameraStream
        | Route::CameraSnapshot => {
            let text = percent_decode(spec.path_param(path)?)?;
            (DeviceRef::parse(&text), true)
        }
        // A session's record lives with the board: its id names the board.
        Route::Record | Route::RecordTranscript | Route::RecordSnapshot => {
            let id = crate::records::SessionId::parse(&percent_decode(spec.path_param(path)?)?)?;
            (DeviceRef::Id(id.device), false)
        }
        // The records of one board; without `device`, this host's own.
        Route::Records => {
            let device = query?.split('&').find_map(|pair| pair.strip_prefix("device="))?;
            (DeviceRef::parse(&percent_decode(device)?), false)
        }
        _ => return None,
    };
    let info = app.device(Some(&device)).ok()?;
    let remote = info.remote?;
    let path = match rewrite {
        // Ids are letters, digits, '-' and '_': safe in a path as they are.
        // A number becomes the id, so the owner needs no list of its own.
        true => {
            let (prefix, rest) = spec.pattern.split_once('{')?;
            let (_, suffix) = rest.split_once('}')?;
            format!("{prefix}{}{suffix}", info.id)
        }
        false => path.to_owned(),
    };
    let path_and_query = match query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    Some(Owner {
        host: info.host.unwrap_or_default(),
        advertise: remote.advertise,
        online: remote.host_online,
        path_and_query,
    })
}

/// Passes `req` to the owner host and its answer back, both bodies
/// streamed; a WebSocket upgrade is relayed byte for byte both ways once
/// the owner accepts it, so frames, pings and close codes pass unchanged.
pub(crate) async fn forward(
    server: &Arc<Server>,
    owner: Owner,
    mut req: Request<Incoming>,
    client: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let unreachable = |why: String| {
        tracing::warn!(host = %owner.host, advertise = %owner.advertise, %why, "cannot forward to the board's host");
        ApiError::http(
            HttpErrorKind::BoardHostUnreachable,
            format!("The board is on host {}, which cannot be reached now ({why}); try again shortly", owner.host),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("5"))
    };
    if !owner.online {
        return Err(unreachable("it is offline".to_owned()));
    }
    let Some(secret) = server.app.cluster_secret() else {
        return Err(unreachable("this host has no cluster secret".to_owned()));
    };
    let (authority, mut sender) = connect(&owner.advertise).await.map_err(unreachable)?;

    let upgrade = req.headers().contains_key(header::UPGRADE);
    let from_client = upgrade.then(|| hyper::upgrade::on(&mut req));
    let held = req.extensions().get::<HeldConnection>().cloned();
    let (parts, body) = req.into_parts();
    let mut out = Request::builder()
        .method(parts.method.clone())
        .uri(owner.path_and_query.parse::<Uri>().map_err(|e| unreachable(format!("path: {e}")))?);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name, upgrade) && name != header::HOST && name.as_str() != PEER_HEADER {
            out = out.header(name, value);
        }
    }
    let signed = crate::auth::sign_peer(
        secret,
        parts.method.as_str(),
        &owner.path_and_query,
        client.ip(),
        jiff::Timestamp::now().as_second(),
    );
    out = out.header(header::HOST, &authority).header(PEER_HEADER, signed);
    let out = out.body(body).map_err(|e| unreachable(format!("request: {e}")))?;
    let mut response = sender.send_request(out).await.map_err(|e| unreachable(format!("request: {e}")))?;

    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(from_client) = from_client
    {
        let from_owner = hyper::upgrade::on(&mut response);
        let mut stop = server.stop_signal();
        tokio::spawn(async move {
            // Counted against the client's connection caps until it closes.
            let _held = held;
            let (Ok(client_io), Ok(owner_io)) = (from_client.await, from_owner.await) else { return };
            let (mut client_io, mut owner_io) = (TokioIo::new(client_io), TokioIo::new(owner_io));
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client_io, &mut owner_io) => {}
                _ = stop.wait_for(|stop| *stop) => {}
            }
        });
    }
    let (mut parts, body) = response.into_parts();
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    let names: Vec<HeaderName> = parts.headers.keys().filter(|n| hop_by_hop(n, switching)).cloned().collect();
    for name in names {
        parts.headers.remove(name);
    }
    Ok(Response::from_parts(parts, Body::Right(http_body_util::Either::Right(body))))
}

/// Opens a connection to the host advertised at `advertise`: its
/// `host:port`, and the sender to ask it with.
async fn connect<B>(advertise: &str) -> Result<(String, SendRequest<B>), String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let authority = authority(advertise)?;
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&authority)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(format!("cannot connect: {e}")),
        Err(_) => return Err("it did not answer in time".to_owned()),
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        if let Err(error) = conn.with_upgrades().await {
            tracing::debug!(%error, "connection to a peer host ended with an error");
        }
    });
    Ok((authority, sender))
}

/// Asks every other host of the lab for `path_and_query` (a `GET`) on the
/// caller's behalf: their `Authorization` passed on, their address signed.
/// Each host answers for what it holds itself. Returns the answers read as
/// `T`, and the hosts that are offline, did not answer within
/// [`GATHER_TIMEOUT`] or did not answer 200.
pub(crate) async fn gather<T: DeserializeOwned>(app: &App, req: &Req, path_and_query: &str) -> (Vec<T>, Vec<String>) {
    let lab = app.lab_hosts();
    let (Some(this_host), Some(secret)) = (lab.this_host, app.cluster_secret()) else {
        return (Vec::new(), Vec::new());
    };
    let ask = |advertise: String| async move {
        let (authority, mut sender) = connect::<Empty<Bytes>>(&advertise).await?;
        let signed =
            crate::auth::sign_peer(secret, "GET", path_and_query, req.peer.ip(), jiff::Timestamp::now().as_second());
        let mut out = Request::get(path_and_query).header(header::HOST, &authority).header(PEER_HEADER, signed);
        if let Some(authorization) = req.headers().get(header::AUTHORIZATION) {
            out = out.header(header::AUTHORIZATION, authorization);
        }
        let out = out.body(Empty::<Bytes>::new()).map_err(|e| format!("request: {e}"))?;
        let response = sender.send_request(out).await.map_err(|e| format!("request: {e}"))?;
        if response.status() != StatusCode::OK {
            return Err(format!("answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), GATHER_MAX_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        serde_json::from_slice::<T>(&body).map_err(|e| format!("unexpected answer: {e}"))
    };
    let asks = lab.hosts.into_iter().filter(|h| h.name != this_host).map(|host| async move {
        let answer = match host.online {
            false => Err("it is offline".to_owned()),
            true => match tokio::time::timeout(GATHER_TIMEOUT, ask(host.advertise.clone())).await {
                Ok(answer) => answer,
                Err(_) => Err("it did not answer in time".to_owned()),
            },
        };
        (host.name, answer)
    });
    let mut answers = Vec::new();
    let mut missing = Vec::new();
    for (host, answer) in futures_util::future::join_all(asks).await {
        match answer {
            Ok(answer) => answers.push(answer),
            Err(why) => {
                tracing::warn!(%host, %why, "cannot ask a host of the lab for its part of a listing");
                missing.push(host);
            }
        }
    }
    (answers, missing)
}

/// Headers that belong to one connection, not to the request (RFC 9110
/// 7.6.1); an upgrade keeps `Connection` and `Upgrade`, which ask for it.
fn hop_by_hop(name: &HeaderName, upgrade: bool) -> bool {
    match name.as_str() {
        "connection" | "upgrade" => !upgrade,
        "keep-alive"
        | "proxy-connection"
        | "te"
        | "trailer"
        | "transfer-encoding"
        | "proxy-authorization"
        | "proxy-authenticate" => true,
        _ => false,
    }
}

/// `host:port` of an advertised `http://` address.
fn authority(advertise: &str) -> Result<String, &'static str> {
    let uri: Uri = advertise.parse().map_err(|_| "its cluster.advertise is not a URL")?;
    if uri.scheme_str() != Some("http") {
        return Err("hosts reach each other over plain http://; its cluster.advertise is not");
    }
    let host = uri.host().ok_or("its cluster.advertise names no host")?;
    Ok(format!("{host}:{}", uri.port_u16().unwrap_or(80)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_addresses_are_reached() {
        assert_eq!(authority("http://bench-2.lab.example:8000").as_deref(), Ok("bench-2.lab.example:8000"));
        assert_eq!(authority("http://10.0.0.2/").as_deref(), Ok("10.0.0.2:80"));
        assert!(authority("https://bench-2.lab.example").is_err());
    }
}
