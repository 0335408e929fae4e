//! Route handlers: read the request, call the app, shape the seed's JSON.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde_json::json;

use super::error::ApiError;
use super::json_response;
use super::request::Req;
use crate::app::{App, AppError, Credentials, DeviceRef};
use crate::json::{self, JsonObject};
use crate::wire::{self, BookingJson, SlotsJson};

type Reply = Result<Response<Full<Bytes>>, ApiError>;

fn ok(body: &serde_json::Value) -> Reply {
    Ok(json_response(StatusCode::OK, body))
}

/// `GET /`: the seed's greeting.
pub fn root(app: &Arc<App>) -> Reply {
    let device = app.device(None)?;
    let day = app.day_slots(device, app.today(), None)?;
    ok(&json!({
        "message": "Slot Booking API is running",
        "websocket_endpoint": "/slot-booking",
        "active_connections": app.ws_connections(),
        "booked_slots": day.booked_ids(),
    }))
}

/// Today's numbers on the default device, the seed's `database` block.
fn today_counts(app: &App) -> Result<(serde_json::Value, usize, usize, usize), AppError> {
    let device = app.device(None)?;
    let day = app.day_slots(device, app.today(), None)?;
    let total = day.entries.len();
    let booked = day.booked_ids().len();
    let available = total - booked;
    let database = json!({
        "total_slots": total,
        "booked_slots": booked,
        "available_slots": available,
        "database_path": app.store.path().display().to_string(),
    });
    Ok((database, total, booked, available))
}

/// `GET /health`: 200 while the store answers, 503 when it does not.
pub fn health(app: &Arc<App>) -> Reply {
    let timestamp = wire::utc(app.now());
    let store_error = app.store.check().err();
    let counts = today_counts(app);
    let config = app.config();
    let n_devices = app.devices().len();
    let common = json!({
        "timestamp": timestamp,
        "active_connections": app.ws_connections(),
        "console_connections": app.console_connections(),
        "uptime_seconds": app.uptime().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
        "config": {
            "generation": app.config_generation(),
            "last_reload_error": app.last_reload_error(),
        },
        "devices": {
            "configured": config.devices.len(),
            "calendars": n_devices,
            "online": app.devices.boards().iter().filter(|b| b.is_online()).count(),
            "offline": app.devices.boards().iter().filter(|b| !b.is_online()).count(),
        },
    });
    match (store_error, counts) {
        (None, Ok((database, total, booked, available))) => {
            let mut body = json!({
                "status": "healthy",
                "total_slots": total,
                "booked_slots_count": booked,
                "available_slots_count": available,
                "database": database,
            });
            merge(&mut body, common);
            ok(&body)
        }
        (store_error, counts) => {
            let reason = store_error.map(|e| e.to_string()).or(counts.err().map(|e| e.to_string())).unwrap_or_default();
            tracing::error!(error = %reason, "health check failed");
            let mut body = json!({
                "status": "unhealthy",
                "database": { "error": reason, "database_path": app.store.path().display().to_string() },
            });
            merge(&mut body, common);
            Ok(json_response(StatusCode::SERVICE_UNAVAILABLE, &body))
        }
    }
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    if let (Some(into), serde_json::Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// `GET /stats`: the seed's blocks plus per-device numbers for today.
pub fn stats(app: &Arc<App>) -> Reply {
    let (database, total, booked, available) = today_counts(app)?;
    let today = app.today();
    let mut devices = Vec::new();
    for device in app.devices() {
        let day = app.day_slots(device, today, None)?;
        devices.push(json!({
            "number": day.device.number,
            "id": day.device.id,
            "name": day.device.name,
            "date": today.to_string(),
            "total_slots": day.entries.len(),
            "booked_slots": day.booked_ids().len(),
            "available_slots": day.available_ids().len(),
        }));
    }
    let counts = app.store.counts().map_err(AppError::from)?;
    ok(&json!({
        "database": database,
        "websocket": { "active_connections": app.ws_connections() },
        "slots": { "total": total, "booked": booked, "available": available },
        "devices": devices,
        "users": { "total": counts.users },
        "bookings": { "total": counts.bookings },
    }))
}

/// The caller of a public route, if they sent a valid token. An invalid one
/// is ignored here: the route answers anyone, and old clients may send stale tokens.
async fn optional_viewer(app: &App, req: &Req) -> Option<String> {
    let token = req.bearer().ok().flatten()?;
    app.authenticate(Credentials::Token(token)).await.ok().map(|p| p.email)
}

/// `GET /slots?date=&device=`.
pub async fn slots(app: &Arc<App>, req: &Req) -> Reply {
    let date = match req.query("date")? {
        Some(text) => json::parse_date("date", &text)?,
        None => app.today(),
    };
    let device = app.device(req.query("device")?.map(|d| DeviceRef::parse(&d)).as_ref())?;
    let body = match optional_viewer(app, req).await {
        Some(viewer) => {
            let day = app.day_slots(device, date, Some(&viewer))?;
            Bytes::from(serde_json::to_vec(&SlotsJson::new(app, &day, Some(&viewer))).expect("slots serialize"))
        }
        None => app.day_view_cached(device, date, |day| {
            Bytes::from(serde_json::to_vec(&SlotsJson::new(app, day, None)).expect("slots serialize"))
        })?,
    };
    Ok(super::json_bytes(StatusCode::OK, body))
}

/// The slot a booking request names: `slot_id`, optional `date` and `device`.
fn slot_request(app: &App, body: &JsonObject) -> Result<(i64, jiff::civil::Date, crate::app::DeviceInfo), AppError> {
    let slot_id = body.required_int("slot_id")?;
    let date = body.date("date")?.unwrap_or_else(|| app.today());
    let device = app.device(body.device("device")?.as_ref())?;
    Ok((slot_id, date, device))
}

/// `POST /book-slot`.
pub async fn book_slot(app: &Arc<App>, req: &Req) -> Reply {
    let body = req.json()?;
    let (slot_id, date, device) = slot_request(app, &body)?;
    let who = app.authenticate(req.credentials_with_body(&body)?).await?;
    let (booking, slot) = app.book(&who, &device, date, slot_id).await?;
    let tz = app.config().lab.calendar.time_zone().clone();
    ok(&json!({
        "success": true,
        "message": format!("Slot {} booked successfully", slot.id),
        "slot_id": slot.id,
        "date": date.to_string(),
        "device": booking.key.device,
        "start": wire::lab_time(slot.start, &tz),
        "end": wire::lab_time(slot.end, &tz),
    }))
}

/// `POST /cancel-slot`.
pub async fn cancel_slot(app: &Arc<App>, req: &Req) -> Reply {
    let body = req.json()?;
    let (slot_id, date, device) = slot_request(app, &body)?;
    let who = app.authenticate(req.credentials_with_body(&body)?).await?;
    let booking = app.cancel(&who, &device, date, slot_id).await?;
    ok(&json!({
        "success": true,
        "message": format!("Slot {} booking cancelled successfully", booking.key.slot),
        "slot_id": booking.key.slot,
        "date": date.to_string(),
        "device": booking.key.device,
    }))
}

/// `GET`/`POST /my-bookings[?history=true]`.
pub async fn my_bookings(app: &Arc<App>, req: &Req) -> Reply {
    let body = req.json()?;
    let history = match req.query("history")?.as_deref() {
        Some("true" | "1" | "yes") => true,
        Some("false" | "0" | "no") | None => body.bool("history")?.unwrap_or(false),
        Some(other) => {
            return Err(AppError::field("history", format!("history must be true or false, got {other:?}")).into());
        }
    };
    let who = app.authenticate(req.credentials_with_body(&body)?).await?;
    let tz = app.config().lab.calendar.time_zone().clone();
    let bookings: Vec<BookingJson> = app
        .bookings_of(&who.email, history)?
        .iter()
        .map(|(booking, slot)| BookingJson::new(booking, slot, &tz))
        .collect();
    ok(&json!({ "success": true, "total_bookings": bookings.len(), "bookings": bookings }))
}

/// `GET`/`POST /slots/user`: the booking in progress, or else the next one.
pub async fn slots_user(app: &Arc<App>, req: &Req) -> Reply {
    let body = req.json()?;
    let who = app.authenticate(req.credentials_with_body(&body)?).await?;
    let tz = app.config().lab.calendar.time_zone().clone();
    match app.next_booking(&who.email)? {
        Some(next) => ok(&json!({
            "success": true,
            "has_booking": true,
            "slot": next.slot.id,
            "date": next.slot.date.to_string(),
            "device": next.booking.key.device,
            "start_time": wire::hh_mm(next.slot.start_time),
            "end_time": wire::hh_mm(next.slot.end_time),
            "start": wire::lab_time(next.slot.start, &tz),
            "end": wire::lab_time(next.slot.end, &tz),
            "is_current": next.is_current,
        })),
        None => ok(&json!({
            "success": true,
            "has_booking": false,
            "slot": null,
            "date": null,
            "device": null,
            "start": null,
            "end": null,
            "is_current": false,
        })),
    }
}

/// `POST /auth/register`.
pub async fn register(app: &Arc<App>, req: &Req) -> Reply {
    let body = req.json()?;
    let email = body.required_str("email")?;
    let password = body.required_str("password")?;
    let user = app.register(email, password).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({
            "success": true,
            "message": "User registered successfully",
            "user": { "email": user.email, "created_at": wire::utc(user.created_at) },
        }),
    ))
}

/// `POST /auth/login`.
pub async fn login(app: &Arc<App>, req: &Req) -> Reply {
    let body = req.json()?;
    let email = body.required_str("email")?;
    let password = body.required_str("password")?;
    let (token, expires_in, who) = app.login(email, password).await?;
    ok(&json!({
        "success": true,
        "message": "Login successful",
        "token": token,
        "token_type": "bearer",
        "expires_in": expires_in,
        "user": { "email": who.email, "role": who.role.as_str() },
    }))
}

/// `GET /metrics`: Prometheus text format.
pub fn metrics(app: &Arc<App>) -> Reply {
    app.metrics.set_websocket_connections(app.ws_connections() + app.console_connections());
    let mut response = Response::new(Full::new(Bytes::from(app.metrics.render())));
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
    Ok(response)
}
