//! The lab admin's routes: the accounts, and disabling one; boards'
//! maintenance, health checks and their history. Bearer only, and only for
//! admins (the route table checks both before the body is read).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

use super::error::ApiError;
use super::json_response;
use super::request::Req;
use super::routes::RouteSpec;
use crate::app::{App, AppError, DeviceRef, Principal};
use crate::wire::{
    self, AccountChangeResponse, AccountJson, AccountsResponse, BoardHealthResponse, BookingJson, ChangedAccount,
    CheckResponse, EmailRequest, MaintenanceRequest, MaintenanceResponse,
};

type Reply = Result<Response<Full<Bytes>>, ApiError>;

/// `GET /admin/users`: every account, by e-mail.
pub fn users(app: &Arc<App>, who: &Principal) -> Reply {
    let users: Vec<AccountJson> = app
        .accounts(who)?
        .into_iter()
        .map(|(user, role)| AccountJson {
            email: user.email,
            role: role.as_str().to_owned(),
            created_at: wire::utc(user.created_at),
            disabled: user.disabled,
        })
        .collect();
    Ok(json_response(StatusCode::OK, &AccountsResponse { success: true, count: users.len(), users }))
}

/// `POST /admin/users/disable` and `/admin/users/enable`: `{email}`.
pub async fn set_disabled(app: &Arc<App>, req: &Req, who: &Principal, disabled: bool) -> Reply {
    let request: EmailRequest = req.parse()?;
    let change = app.set_account_disabled(who, &request.email, disabled).await?;
    let tz = app.config().lab.calendar.time_zone().clone();
    let cancelled: Vec<BookingJson> =
        change.cancelled.iter().map(|(booking, slot)| wire::booking_json(booking, slot, &tz)).collect();
    let user = change.user;
    let message = match (disabled, cancelled.len()) {
        (false, _) => format!("Account {} enabled", user.email),
        (true, 0) => format!("Account {} disabled", user.email),
        (true, n) => format!("Account {} disabled; {n} of its bookings cancelled", user.email),
    };
    let body = AccountChangeResponse {
        success: true,
        message,
        user: ChangedAccount { email: user.email, created_at: wire::utc(user.created_at), disabled: user.disabled },
        cancelled_bookings: cancelled,
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// The board a templated admin route names.
fn device(spec: &RouteSpec, req: &Req) -> Result<DeviceRef, ApiError> {
    match super::devices::device_param(spec, req.parts.uri.path()) {
        (_, Some(reference)) => Ok(reference),
        (raw, None) => Err(AppError::UnknownDevice(format!("{raw:?}")).into()),
    }
}

/// `POST /admin/devices/maintenance/{device}` (`{reason}`) puts a board in
/// maintenance; `DELETE` takes it out, and it is checked again.
pub async fn maintenance(app: &Arc<App>, spec: &RouteSpec, req: &Req, who: &Principal) -> Reply {
    let device = device(spec, req)?;
    let request = match req.parts.method {
        hyper::Method::DELETE => None,
        _ => Some(req.parse::<MaintenanceRequest>()?),
    };
    let (info, health) = app.set_maintenance(who, &device, request.as_ref().map(|r| r.reason.as_str())).await?;
    let message = match &request {
        Some(_) => format!("Device {} is in maintenance: it takes no bookings until an admin clears it", info.id),
        None => format!("Device {} is out of maintenance; its health check runs now if it has one", info.id),
    };
    let body = MaintenanceResponse {
        success: true,
        message,
        device: info.id,
        health: health.as_str().to_owned(),
        reason: health.reason().map(str::to_owned),
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// `POST /admin/devices/check/{device}`: runs the board's health check now
/// and answers when it is done; `success` says whether it passed.
pub async fn check(app: &Arc<App>, spec: &RouteSpec, req: &Req, who: &Principal) -> Reply {
    let device = device(spec, req)?;
    let record = app.check_board(who, &device).await?;
    let info = app.device(Some(&device))?;
    let message = match (record.ok, record.power_cycled) {
        (true, false) => format!("Device {} passed its health check", info.id),
        (true, true) => format!("Device {} passed its health check after a power cycle", info.id),
        (false, _) => format!("Device {} failed its health check: it is {}", info.id, record.health.as_str()),
    };
    let body = CheckResponse {
        success: record.ok,
        message,
        device: info.id,
        health: record.health.as_str().to_owned(),
        check: wire::check_json(&record),
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /admin/devices/checks/{device}`: the board's health, its checks
/// since start (newest first) and the admin actions on it.
pub fn checks(app: &Arc<App>, spec: &RouteSpec, req: &Req, who: &Principal) -> Reply {
    let device = device(spec, req)?;
    let report = app.board_health(who, &device)?;
    let body = BoardHealthResponse {
        success: true,
        device: report.device.id,
        health: report.health.as_str().to_owned(),
        reason: report.health.reason().map(str::to_owned),
        checks: report.checks.iter().map(wire::check_json).collect(),
        audit: report.audit.iter().map(wire::audit_json).collect(),
    };
    Ok(json_response(StatusCode::OK, &body))
}
