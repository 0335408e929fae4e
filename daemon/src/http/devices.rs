//! Device routes: `GET /devices`, `POST /devices/compile`,
//! `POST /devices/upload/{device}`, and the `/devices/read/{device}` upgrade.
//! The lab operations behind them (access, compile queue, upload) are the
//! app's (`app/boards.rs`); these only parse, call and map.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::error::{ApiError, HttpErrorKind};
use super::request::{Req, percent_decode};
use super::routes::RouteSpec;
use super::{Server, json_response};
use crate::app::{App, AppError, Caller, DeviceRef, Principal, SocketKind, UploadSource};
use crate::compile::CompileError;
use crate::wire::{CompileRequest, CompileResponse, DeviceJson, DevicesResponse, UploadCodeRequest, UploadResponse};

type Reply = Result<Response<Full<Bytes>>, ApiError>;

/// The device a templated route names, decoded; `None` if it is not valid
/// percent-encoded UTF-8.
pub(super) fn device_param(spec: &RouteSpec, path: &str) -> (String, Option<DeviceRef>) {
    let raw = spec.path_param(path).unwrap_or_default();
    match percent_decode(raw) {
        Some(text) => {
            let reference = DeviceRef::parse(&text);
            (text, Some(reference))
        }
        None => (raw.to_owned(), None),
    }
}

/// `GET /devices`: the boards in config order, whether each is online and in use.
pub fn list(app: &Arc<App>, admin: bool) -> Reply {
    let config = app.config();
    // A lab without boards lists none (its default calendar is no board);
    // a host of a lab of several lists every host's.
    let devices: Vec<DeviceJson> = if config.devices.is_empty() && config.cluster.is_none() {
        Vec::new()
    } else {
        app.devices().into_iter().filter_map(|d| device_json(app, d, admin)).collect()
    };
    let supported_models = rerod_devices::model::MODELS.iter().map(|m| m.name.to_owned()).collect();
    Ok(json_response(
        StatusCode::OK,
        &DevicesResponse { success: true, count: devices.len(), devices, supported_models },
    ))
}

/// One board of `GET /devices`: this host's as its port and health say,
/// another host's as that host's presence last said.
fn device_json(app: &Arc<App>, d: crate::app::DeviceInfo, admin: bool) -> Option<DeviceJson> {
    if let Some(remote) = d.remote {
        return Some(DeviceJson {
            number: d.number,
            port: d.id.clone(),
            online: remote.online,
            in_use: remote.in_use,
            health: remote.health,
            health_reason: remote.health_reason,
            camera: remote.camera.map(|c| crate::wire::CameraJson {
                state: c.state,
                visibility: c.visibility,
                viewers: c.viewers,
                reason: None,
            }),
            host: d.host,
            id: d.id,
            name: d.name,
            model: d.model,
            plugin: d.plugin,
            baud: d.baud,
        });
    }
    let board = app.devices.board(&d.id)?;
    Some(DeviceJson {
        health: board.health().as_str().to_owned(),
        health_reason: board.health().reason().map(str::to_owned),
        number: d.number,
        // The host's device path is the admins' business.
        port: match admin {
            true => d.port.unwrap_or_else(|| board.port().config().spec.to_string()),
            false => d.id.clone(),
        },
        online: board.is_online(),
        in_use: app.device_in_use(&board),
        camera: super::camera::device_camera(app, &board.id, admin),
        host: d.host,
        id: d.id,
        name: d.name,
        model: d.model,
        plugin: d.plugin,
        baud: d.baud,
    })
}

/// `POST /devices/compile`: `{code, model?, device?}` compiled for the model
/// (default: the device's; the first device's; `uno` when none is configured).
/// Code that does not compile is a 200 with `success: false` and the output.
pub async fn compile(app: &Arc<App>, req: &Req) -> Reply {
    let request: CompileRequest = req.parse()?;
    // Public, as the old backend's route was; a valid token makes the caller
    // an account (and a session holder goes first), an invalid one is ignored.
    let caller = Caller { account: super::handlers::optional_viewer(app, req).await, address: req.peer.ip() };
    let compiled = app
        .compile_sketch(
            &caller,
            request.model.as_deref(),
            request.device.as_ref(),
            &request.code,
            request.file_name.as_deref(),
        )
        .await;
    let body = match compiled {
        Ok(compiled) => {
            tracing::info!(caller = %caller.key(), bytes = compiled.firmware.len(), "sketch compiled");
            CompileResponse {
                success: true,
                message: "Compilation successful".to_owned(),
                compile_output: compiled.output,
                program_bytes: Some(compiled.firmware.len()),
                duration_ms: Some(compiled.duration.as_millis() as u64),
            }
        }
        Err(AppError::Compile(CompileError::Failed { output })) => CompileResponse {
            success: false,
            message: "Compilation failed".to_owned(),
            compile_output: output,
            program_bytes: None,
            duration_ms: None,
        },
        Err(e) => return Err(e.into()),
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// How an upload body is sent.
enum Body {
    Code,
    Firmware,
}

fn body_kind(req: &Req) -> Result<Body, ApiError> {
    let mime = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    match mime.as_deref() {
        Some("application/json") => Ok(Body::Code),
        // A .hex file is text; curl --data-binary sends it as form data by default.
        None
        | Some(
            "application/octet-stream"
            | "application/x-ihex"
            | "text/x-hex"
            | "text/plain"
            | "application/x-www-form-urlencoded",
        ) => Ok(Body::Firmware),
        Some(other) => Err(ApiError::http(
            HttpErrorKind::UnsupportedMediaType,
            format!(
                "Cannot upload {other}: send the firmware as application/octet-stream (Intel HEX or raw binary), or JSON {{\"code\": ...}} to compile it first"
            ),
        )),
    }
}

/// Reads an upload's body: firmware as it is, or `{code}` held to the JSON limit.
fn upload_source(app: &App, req: &Req) -> Result<UploadSource, ApiError> {
    match body_kind(req)? {
        Body::Code => {
            let limit = app.config().server.max_json_bytes;
            if req.body.len() > limit {
                return Err(ApiError::http(
                    HttpErrorKind::BodyTooLarge,
                    format!(
                        "JSON bodies are limited to {limit} bytes; send a compiled program as application/octet-stream"
                    ),
                ));
            }
            let request: UploadCodeRequest = req.parse()?;
            Ok(UploadSource::Code { code: request.code, file_name: request.file_name })
        }
        Body::Firmware => Ok(UploadSource::Firmware(req.body.clone())),
    }
}

/// `POST /devices/upload/{device}`: firmware (or `{code}`, compiled first) to
/// the board, by the holder of the slot in progress or an admin. The body is
/// read only once the caller's right to the board is known, and only within
/// the server's budget of upload bytes in flight.
pub async fn upload(
    server: &Arc<Server>,
    spec: &RouteSpec,
    req: Request<Incoming>,
    who: &Principal,
    peer: std::net::SocketAddr,
) -> Reply {
    let app = &server.app;
    let (text, reference) = device_param(spec, req.uri().path());
    let reference = reference.unwrap_or(DeviceRef::Id(text));
    let (parts, body) = req.into_parts();
    let limit = app.config().server.max_firmware_bytes;
    // Held until the upload is done: the body's bytes live that long.
    let mut budget = None;
    let source = async {
        budget = Some(server.reserve_upload_bytes(Req::declared_length(&parts.headers), limit)?);
        let req = Req::read_parts(parts, body, limit, peer).await?;
        upload_source(app, &req)
    };
    let uploaded = app.upload(who, &reference, source).await;
    drop(budget);
    let uploaded = uploaded?;
    let body = UploadResponse {
        success: true,
        message: format!("Firmware uploaded to {}", uploaded.device.id),
        device: uploaded.device.id,
        compile_output: uploaded.compile_output,
        upload_output: uploaded.report.log,
        bytes_written: uploaded.report.bytes_written as u64,
        duration_ms: uploaded.report.duration.as_millis() as u64,
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// Answers a `/devices/read/{device}` upgrade and serves the console in its
/// own task. Authentication is the socket's first message; an unknown device
/// is told over the socket, as the old backend did.
pub(super) fn upgrade_console(
    server: &Arc<Server>,
    spec: &RouteSpec,
    req: &mut Request<Incoming>,
    client: std::net::IpAddr,
) -> Reply {
    let (text, reference) = device_param(spec, req.uri().path());
    // A plain HTTP request learns of an unknown device by status; a socket, by message.
    if !super::upgrade::asks_for_websocket(req) && reference.as_ref().is_none_or(|r| server.app.board(r).is_err()) {
        return Err(AppError::UnknownDevice(format!("{text:?}")).into());
    }
    let app = Arc::clone(&server.app);
    let stop = server.stop_signal();
    let wrap = |upgraded| Some(hyper_util::rt::TokioIo::new(upgraded));
    let mut response =
        super::upgrade::upgrade(&server.app, SocketKind::Console, client, req, wrap, move |socket, open| {
            crate::ws::console::serve(app, socket, open, text, reference, stop)
        })?;
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
