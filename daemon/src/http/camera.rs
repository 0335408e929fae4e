//! Camera routes: the camera's state, a ticket for its stream, the live
//! stream (`multipart/x-mixed-replace`, which a browser shows in an `<img>`
//! and `fetch` can read part by part), and a single snapshot. Who may watch
//! is the app's call (`app/camera.rs`); the frames come from the camera hub
//! (`camera/`).
//!
//! The stream is authenticated by `Authorization: Bearer`, or, where a
//! browser cannot send a header (an `<img src>`), by a one-use ticket from
//! `POST /devices/camera/{device}/ticket` in its query: never the token
//! itself, which would end up in logs and browser history. A public camera
//! needs neither.
//!
//! Every part carries `Content-Length`. When the stream ends for a reason
//! (the holder's session ended and the visibility does not admit them, the
//! camera left the config, the server stops), a last part of
//! `application/json` says why (`{detail, code}`), then the closing boundary.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::sync::{broadcast, mpsc, watch};

use super::error::ApiError;
use super::request::Req;
use super::routes::{Call, RouteSpec};
use super::{Body, Server, json_response};
use crate::app::{App, AppError, CameraAccess, Credentials, DeviceInfo, DeviceRef, Principal};
use crate::camera::{Camera, CameraState, Viewer, ViewerEvent};
use crate::devices::ConsoleEvent;
use crate::wire::{CameraJson, CameraStatusResponse, CameraTicketResponse, ErrorBody};

type Reply = Result<Response<Full<Bytes>>, ApiError>;

/// The boundary between the stream's parts.
const BOUNDARY: &str = "rerodframe";
/// How long a snapshot waits for a camera that was idle to send its first frame.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);
/// A viewer that takes nothing for this long is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The highest frame rate a viewer may ask for (`?fps=`).
const MAX_FPS: u32 = 60;

/// The camera a templated route names.
fn camera(app: &App, spec: &RouteSpec, req: &Req) -> Result<(DeviceInfo, Arc<Camera>), ApiError> {
    let (text, reference) = super::devices::device_param(spec, req.parts.uri.path());
    let reference = reference.unwrap_or(DeviceRef::Id(text));
    Ok(app.camera_of(&reference)?)
}

/// Who sent the request, by bearer token; none without one. A bad token
/// is an error, not an anonymous caller, so a client learns its token expired.
async fn bearer(app: &App, req: &Req) -> Result<Option<Principal>, ApiError> {
    match req.bearer()? {
        None => Ok(None),
        Some(token) => {
            let mut who = app.authenticate(Credentials::Token(token)).await?;
            who.address = Some(req.peer.ip());
            Ok(Some(who))
        }
    }
}

/// Why a camera is offline, as `admin` or anyone else may see it.
fn offline_reason(reason: String, admin: bool) -> String {
    match admin {
        true => reason,
        false => "the camera's source does not answer".to_owned(),
    }
}

fn camera_json(camera: &Camera, admin: bool) -> CameraJson {
    let state = camera.state();
    CameraJson {
        state: state.as_str().to_owned(),
        visibility: camera.config().map_or("holder", |c| c.visibility.as_str()).to_owned(),
        viewers: camera.viewers(),
        reason: match state {
            CameraState::Offline { reason } => Some(offline_reason(reason, admin)),
            _ => None,
        },
    }
}

/// The camera of a board for `GET /devices`, if it has one.
pub(super) fn device_camera(app: &App, id: &str, admin: bool) -> Option<CameraJson> {
    app.cameras.get(id).map(|camera| camera_json(&camera, admin))
}

/// Every camera, for `/health`.
pub(super) fn health(app: &App, admin: bool) -> Vec<crate::wire::CameraHealthJson> {
    let cameras = app.cameras.all();
    cameras
        .iter()
        .map(|camera| crate::wire::CameraHealthJson { device: camera.id.clone(), camera: camera_json(camera, admin) })
        .collect()
}

fn access_name(access: CameraAccess) -> &'static str {
    match access {
        CameraAccess::Holder => "holder",
        CameraAccess::Admin => "admin",
        CameraAccess::Visible(_) => "visibility",
    }
}

/// `GET /devices/camera/{device}`: the camera's state, to someone who may watch it.
pub async fn status(call: &Call<'_>) -> Reply {
    let (app, req) = (call.app, call.req);
    let (device, camera) = camera(app, call.spec, req)?;
    let who = bearer(app, req).await?;
    let access = app.camera_access(who.as_ref(), &device)?;
    let body = CameraStatusResponse {
        success: true,
        device: device.id,
        camera: camera_json(&camera, access == CameraAccess::Admin),
        access: access_name(access).to_owned(),
    };
    let mut response = json_response(StatusCode::OK, &body);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `POST /devices/camera/{device}/ticket`: a one-use ticket for the stream.
pub fn ticket(call: &Call<'_>, who: &Principal) -> Reply {
    let (device, _) = camera(call.app, call.spec, call.req)?;
    let ticket = call.app.mint_camera_ticket(who, &device)?;
    let body = CameraTicketResponse {
        success: true,
        stream_url: format!("/devices/camera/{}/stream?ticket={}", device.id, ticket.ticket),
        ticket: ticket.ticket,
        expires_in: ticket.expires_in.as_secs(),
    };
    let mut response = json_response(StatusCode::OK, &body);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /devices/camera/{device}/snapshot`: the newest frame, as one JPEG.
pub async fn snapshot(call: &Call<'_>) -> Reply {
    let (app, req) = (call.app, call.req);
    let (device, camera) = camera(app, call.spec, req)?;
    let who = bearer(app, req).await?;
    let access = app.camera_access(who.as_ref(), &device)?;
    let mut viewer = camera.watch();
    let jpeg = viewer.first_frame(SNAPSHOT_WAIT).await.map_err(|state| {
        let reason = match state {
            CameraState::Offline { reason } => reason,
            other => other.as_str().to_owned(),
        };
        AppError::CameraOffline {
            device: device.id.clone(),
            reason: offline_reason(reason, access == CameraAccess::Admin),
        }
    })?;
    let mut response = Response::new(Full::new(jpeg));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /devices/camera/{device}/stream[?ticket=...][&fps=N]`: the live
/// stream, as long as the caller may watch.
pub async fn stream(server: &Arc<Server>, call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let (app, req) = (call.app, call.req);
    let (device, camera) = camera(app, call.spec, req)?;
    // Checked before a ticket is used up.
    let fps = match req.query("fps")? {
        None => None,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=MAX_FPS).contains(&n) => Some(n),
            _ => {
                let message = format!("must be a whole number of frames a second from 1 to {MAX_FPS}, got {text:?}");
                return Err(AppError::invalid("fps", message).into());
            }
        },
    };
    let who = match req.query("ticket")? {
        Some(ticket) => Some(app.redeem_camera_ticket(&ticket, &device)?),
        None => bearer(app, req).await?,
    };
    app.camera_access(who.as_ref(), &device)?;
    let viewer = camera.watch().with_max_fps(fps);
    // Two parts' chunks in flight at most: a client that reads slowly makes
    // the pump wait, and the camera's watch skips the frames it missed.
    let (tx, rx) = mpsc::channel(4);
    let pump = Pump { app: Arc::clone(app), device, who, tx };
    tokio::spawn(pump.run(viewer, server.stop_signal()));
    let mut response = Response::new(Body::Right(http_body_util::Either::Left(StreamBody { rx })));
    let headers = response.headers_mut();
    let content_type = format!("multipart/x-mixed-replace; boundary={BOUNDARY}");
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(&content_type).expect("a valid header"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies such as nginx must pass frames on as they come.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The body of a live stream: the chunks its pump sends, until it stops.
#[derive(Debug)]
pub struct StreamBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for StreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// Feeds one stream's body from its viewer, and ends it when the caller
/// may no longer watch.
struct Pump {
    app: Arc<App>,
    device: DeviceInfo,
    who: Option<Principal>,
    tx: mpsc::Sender<Bytes>,
}

/// Why a stream ended, for its last part.
struct Ended {
    code: &'static str,
    detail: String,
}

impl Pump {
    async fn run(self, mut viewer: Viewer, mut stop: watch::Receiver<bool>) {
        let ended = self.frames(&mut viewer, &mut stop).await;
        drop(viewer);
        if let Some(ended) = ended {
            tracing::debug!(device = %self.device.id, code = ended.code, "camera stream ended");
            let body = ErrorBody { detail: ended.detail, code: ended.code.to_owned(), field: None };
            let json = serde_json::to_vec(&body).expect("error bodies serialize");
            let head = part_head("application/json", json.len());
            for chunk in [head, Bytes::from(json), Bytes::from(format!("\r\n--{BOUNDARY}--\r\n"))] {
                if self.send(chunk).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Sends frames until the client leaves (`None`) or the stream must end.
    async fn frames(&self, viewer: &mut Viewer, stop: &mut watch::Receiver<bool>) -> Option<Ended> {
        let mut generation = self.app.config_generation();
        let mut events = self.board_events();
        loop {
            tokio::select! {
                event = viewer.next() => match event {
                    ViewerEvent::Frame(jpeg) => {
                        if self.app.config_generation() != generation {
                            generation = self.app.config_generation();
                            if let Some(ended) = self.refused(None) {
                                return Some(ended);
                            }
                        }
                        let head = part_head("image/jpeg", jpeg.len());
                        for chunk in [head, jpeg, Bytes::from_static(b"\r\n")] {
                            self.send(chunk).await.ok()?;
                        }
                    }
                    ViewerEvent::State(CameraState::Removed) => {
                        let detail = format!("Device {} no longer has a camera", self.device.id);
                        return Some(Ended { code: "camera_removed", detail });
                    }
                    ViewerEvent::State(_) => {}
                },
                event = recv(&mut events) => {
                    let ended = match event {
                        BoardEvent::SessionEnded { email, message } => {
                            match self.who.as_ref().is_some_and(|who| who.email == email) {
                                true => self.refused(Some(&message)),
                                false => None,
                            }
                        }
                        // A stream that fell behind may have missed the end of a session: look again.
                        BoardEvent::Missed => self.refused(None),
                        BoardEvent::Other => None,
                        // The board was replaced (a reload changed its port): follow the new one.
                        BoardEvent::Gone => {
                            events = self.board_events();
                            None
                        }
                    };
                    if ended.is_some() {
                        return ended;
                    }
                }
                () = self.tx.closed() => return None,
                _ = async { stop.wait_for(|stop| *stop).await.map(drop) } => {
                    return Some(Ended { code: "server_stopping", detail: "The server is stopping".to_owned() });
                }
            }
        }
    }

    fn board_events(&self) -> Option<broadcast::Receiver<ConsoleEvent>> {
        self.app.devices.board(&self.device.id).map(|board| board.subscribe())
    }

    /// Asks again whether the caller may watch: the reason to end the
    /// stream if not. `session` is how the caller's session ended.
    fn refused(&self, session: Option<&str>) -> Option<Ended> {
        let error = self.app.camera_access(self.who.as_ref(), &self.device).err()?;
        Some(match session {
            Some(how) => Ended {
                code: "session_ended",
                detail: format!("Your session on {} ended: {how}. {error}", self.device.id),
            },
            None => Ended { code: error.code(), detail: error.to_string() },
        })
    }

    async fn send(&self, chunk: Bytes) -> Result<(), ()> {
        match tokio::time::timeout(SEND_TIMEOUT, self.tx.send(chunk)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }
}

/// What a stream cares about on its board.
enum BoardEvent {
    SessionEnded { email: String, message: String },
    Missed,
    Other,
    Gone,
}

/// The next event of a board; never, when there is no board (any more).
async fn recv(events: &mut Option<broadcast::Receiver<ConsoleEvent>>) -> BoardEvent {
    let Some(rx) = events else { return std::future::pending().await };
    match rx.recv().await {
        Ok(ConsoleEvent::SessionEnded { email, message }) => BoardEvent::SessionEnded { email, message },
        Ok(_) => BoardEvent::Other,
        Err(broadcast::error::RecvError::Lagged(_)) => BoardEvent::Missed,
        Err(broadcast::error::RecvError::Closed) => BoardEvent::Gone,
    }
}

/// A part's delimiter and headers.
fn part_head(content_type: &str, len: usize) -> Bytes {
    Bytes::from(format!("--{BOUNDARY}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\r\n"))
}

/// Answers a `/websocket/{quality}` upgrade: the old web client's camera
/// feed, served in its own task (`ws/camera.rs`). `quality` is accepted and
/// ignored: rerod relays the camera's frames as they come.
pub(super) fn upgrade_legacy(
    server: &Arc<Server>,
    _spec: &RouteSpec,
    req: &mut hyper::Request<hyper::body::Incoming>,
    client: std::net::IpAddr,
) -> Reply {
    let app = Arc::clone(&server.app);
    let stop = server.stop_signal();
    let wrap = |upgraded| Some(hyper_util::rt::TokioIo::new(upgraded));
    super::upgrade::upgrade(&server.app, crate::app::SocketKind::Camera, client, req, wrap, move |socket, open| {
        crate::ws::camera::serve_legacy(app, socket, open, stop)
    })
}
