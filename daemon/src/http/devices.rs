//! Device routes: `GET /devices`, `POST /devices/compile`,
//! `POST /devices/upload/{device}`, and the `/devices/read/{device}` upgrade.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use rerod_devices::Firmware;
use serde_json::json;

use super::error::ApiError;
use super::request::{Req, percent_decode};
use super::routes::Route;
use super::{Server, json_response};
use crate::app::{App, AppError, DeviceRef, Role};
use crate::compile::{self, CompileError};
use crate::devices::Owner;
use crate::metrics::UploadResult;

type Reply = Result<Response<Full<Bytes>>, ApiError>;

/// The device a templated route names, decoded.
fn device_param(route: Route, path: &str) -> Result<DeviceRef, ApiError> {
    let raw = route.path_param(path).unwrap_or_default();
    let text = percent_decode(raw).ok_or_else(|| AppError::UnknownDevice(format!("{raw:?}")))?;
    Ok(DeviceRef::parse(&text))
}

/// `GET /devices`: the boards in config order, whether each is online and in use.
pub fn list(app: &Arc<App>) -> Reply {
    let config = app.config();
    let devices: Vec<serde_json::Value> = if config.devices.is_empty() {
        Vec::new()
    } else {
        app.devices()
            .into_iter()
            .filter_map(|d| app.devices.board(&d.id).map(|board| (d, board)))
            .map(|(d, board)| {
                json!({
                    "number": d.number,
                    "id": d.id,
                    "name": d.name,
                    "model": d.model,
                    "plugin": d.plugin,
                    "port": d.port.unwrap_or_else(|| board.port().config().spec.to_string()),
                    "online": board.is_online(),
                    "baud": d.baud,
                    "in_use": app.device_in_use(&board),
                })
            })
            .collect()
    };
    let models: Vec<&str> = rerod_devices::model::MODELS.iter().map(|m| m.name).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "success": true, "count": devices.len(), "devices": devices, "supported_models": models }),
    ))
}

/// Compiles `code` for `model`, one of a few at a time.
async fn compile_for(app: &App, model: &str, code: &str) -> Result<compile::Compiled, CompileError> {
    let toolchain = compile::toolchain_for(&app.config(), model)
        .ok_or_else(|| CompileError::NoCompiler { model: model.to_owned() })?;
    let _permit = app.devices.compiles.acquire().await.map_err(|e| CompileError::Io(e.to_string()))?;
    compile::compile(&toolchain, code).await
}

/// `POST /devices/compile`: `{code, device?}` compiled for the device's model
/// (default: the first device's; `uno` when none is configured).
pub async fn compile(app: &Arc<App>, req: &Req) -> Reply {
    // Bearer only: the device routes do not take the seed's in-body credentials.
    let who = req.bearer_principal(app).await?;
    let body = req.json()?;
    let code = body.required_str("code")?;
    let model = match body.str("model")? {
        Some(model) => model.to_owned(),
        None if app.config().devices.is_empty() => "uno".to_owned(),
        None => app.device(body.device("device")?.as_ref())?.model,
    };
    match compile_for(app, &model, code).await {
        Ok(compiled) => {
            tracing::info!(email = %who.email, %model, bytes = compiled.firmware.len(), "sketch compiled");
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "success": true,
                    "message": "Compilation successful",
                    "compile_output": compiled.output,
                    "program_bytes": compiled.firmware.len(),
                    "duration_ms": compiled.duration.as_millis() as u64,
                }),
            ))
        }
        Err(CompileError::Failed { output }) => Ok(json_response(
            StatusCode::OK,
            &json!({ "success": false, "message": "Compilation failed", "compile_output": output }),
        )),
        Err(e) => Err(AppError::Compile(e).into()),
    }
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
        Some(other) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Cannot upload {other}: send the firmware as application/octet-stream (Intel HEX or raw binary), or JSON {{\"code\": ...}} to compile it first"
            ),
        )),
    }
}

/// `POST /devices/upload/{device}`: firmware (or `{code}`, compiled first) to
/// the board, by the holder of the slot in progress or an admin.
pub async fn upload(app: &Arc<App>, req: &Req) -> Reply {
    let refused = |e: ApiError| {
        app.metrics.record_upload(UploadResult::Refused);
        e
    };
    let who = req.bearer_principal(app).await.map_err(refused)?;
    let reference = device_param(Route::DevicesUpload, req.parts.uri.path()).map_err(refused)?;
    let (device, board) = app.board(&reference).map_err(|e| refused(e.into()))?;
    app.device_access(&who, &device, "upload").map_err(|e| refused(e.into()))?;
    let (firmware, compile_output) = match body_kind(req).map_err(refused)? {
        Body::Code => {
            let limit = app.config().server.max_json_bytes;
            if req.body.len() > limit {
                return Err(refused(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!(
                        "JSON bodies are limited to {limit} bytes; send a compiled program as application/octet-stream"
                    ),
                )));
            }
            let body = req.json().map_err(refused)?;
            let code = body.required_str("code").map_err(|e| refused(e.into()))?;
            let compiled = compile_for(app, &board.config().model, code)
                .await
                .map_err(|e| refused(AppError::Compile(e).into()))?;
            (compiled.firmware, Some(compiled.output))
        }
        Body::Firmware => {
            let firmware = Firmware::detect(&req.body).map_err(|e| refused(AppError::Firmware(e).into()))?;
            (firmware, None)
        }
    };
    // Checked again once the port is held: compiling, or the port being
    // busy, takes a while, and the session may have ended meanwhile.
    let recheck = || match who.role {
        Role::Admin => Ok(()),
        Role::User => app.device_access(&who, &device, "upload").map(drop),
    };
    let result = board.upload(Arc::new(firmware), Owner::User(who.clone()), recheck).await;
    app.metrics.record_upload(match &result {
        Ok(_) => UploadResult::Ok,
        Err(AppError::UploadAborted { .. }) => UploadResult::Aborted,
        Err(AppError::Upload { .. }) => UploadResult::Failed,
        Err(_) => UploadResult::Refused,
    });
    let report = result?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "success": true,
            "message": format!("Firmware uploaded to {}", device.id),
            "device": device.id,
            "compile_output": compile_output,
            "upload_output": report.log,
            "bytes_written": report.bytes_written,
            "duration_ms": report.duration.as_millis() as u64,
        }),
    ))
}

/// Answers a `/devices/read/{device}` upgrade (404 first for an unknown
/// device) and serves the console in its own task; authentication is the
/// socket's first message.
pub(super) fn upgrade_console(server: &Arc<Server>, req: &mut Request<Incoming>) -> Reply {
    let reference = device_param(Route::DevicesConsole, req.uri().path())?;
    let (device, board) = server.app.board(&reference)?;
    let app = Arc::clone(&server.app);
    let stop = server.booking.stop_signal();
    let wrap = |upgraded| Some(hyper_util::rt::TokioIo::new(upgraded));
    let mut response = crate::ws::upgrade(&server.app, req, wrap, |socket| {
        crate::ws::console::serve(app, socket, device, board, stop)
    })?;
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
