//! The seed's routes and the service's own: read the request into its wire
//! type, call the app, answer with the response's wire type.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::error::ApiError;
use super::request::Req;
use super::{Server, json_response};
use crate::app::{App, AppError, Credentials, DaySlots, DeviceRef, Principal, SocketKind};
use crate::config::Registration;
use crate::wire::{
    self, BookSlotResponse, CancelSlotResponse, ChangePasswordRequest, ClusterBoard, ClusterClock, ClusterHost,
    ClusterResponse, CompileHealth, ConfigStatus, DatabaseCounts, DatabaseFailure, DeviceCounts, DeviceStats,
    EmailPassword, HealthDatabase, HealthResponse, LabInfo, LoggedInUser, LoggedOutResponse, LoginResponse,
    MyBookingsRequest, MyBookingsResponse, PasswordChangedResponse, RegisterResponse, RegisteredUser, RootResponse,
    SlotRequest, SlotStats, StatsResponse, StoreStatus, Total, UserSlotResponse, WebSocketStats,
};

type Reply = Result<Response<Full<Bytes>>, ApiError>;

fn ok(body: &impl serde::Serialize) -> Reply {
    Ok(json_response(StatusCode::OK, body))
}

/// `GET /cluster`: the lab's hosts and their boards, as this host last read them.
pub fn cluster(app: &Arc<App>) -> Reply {
    let lab = app.lab_hosts();
    let hosts = lab
        .hosts
        .into_iter()
        .map(|h| ClusterHost {
            name: h.name,
            advertise: h.advertise,
            online: h.online,
            last_seen: wire::utc(h.last_seen),
            boards: h.boards.into_iter().map(|b| ClusterBoard { id: b.id, model: b.model }).collect(),
        })
        .collect();
    ok(&ClusterResponse { host: lab.this_host, hosts })
}

/// `GET /`: the seed's greeting.
pub fn root(app: &Arc<App>) -> Reply {
    let device = app.device(None)?;
    let day = app.day_slots(device, app.today(), None)?;
    ok(&RootResponse {
        message: "Slot Booking API is running".to_owned(),
        websocket_endpoint: "/slot-booking".to_owned(),
        active_connections: app.ws_connections(),
        booked_slots: day.booked_ids(),
    })
}

/// Today on the default device: the seed's `database` block.
fn today_counts(app: &App, admin: bool) -> Result<DatabaseCounts, AppError> {
    let device = app.device(None)?;
    let day = app.day_slots(device, app.today(), None)?;
    Ok(DatabaseCounts {
        total_slots: day.entries.len(),
        booked_slots: day.booked_ids().len(),
        available_slots: day.available_ids().len(),
        database_path: shown_store_path(app, admin),
    })
}

/// `GET /health`: 200 while the store answers reads ("degraded" while it
/// cannot write), 503 when it cannot be read.
pub fn health(app: &Arc<App>, admin: bool) -> Reply {
    let store_error = app.store.check().err();
    let counts = today_counts(app, admin);
    let boards = app.devices.boards();
    let online = boards.iter().filter(|b| b.is_online()).count();
    let config = app.config();
    let calendar = &config.lab.calendar;
    let mut body = HealthResponse {
        status: "healthy".to_owned(),
        total_slots: None,
        booked_slots_count: None,
        available_slots_count: None,
        database: HealthDatabase::Failure(DatabaseFailure {
            error: String::new(),
            database_path: shown_store_path(app, admin),
        }),
        timestamp: wire::utc(app.now()),
        active_connections: app.ws_connections(),
        console_connections: app.console_connections(),
        uptime_seconds: app.uptime().as_secs(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        config: ConfigStatus {
            generation: app.config_generation(),
            last_reload_error: app.last_reload_error().map(|error| shown(app, admin, &error)),
        },
        store: StoreStatus { last_write_error: app.store.write_failure().map(|e| shown(app, admin, &e)) },
        devices: DeviceCounts {
            configured: app.config().devices.len(),
            calendars: app.devices().len(),
            online,
            offline: boards.len() - online,
        },
        device_health: boards
            .iter()
            .map(|b| {
                let mut health = wire::device_health(&b.id, &b.health());
                health.reason = health.reason.map(|reason| shown(app, admin, &reason));
                health
            })
            .collect(),
        cameras: super::camera::health(app, admin),
        compile: CompileHealth { sandbox: app.compile_sandbox().as_str().to_owned() },
        lab: LabInfo {
            timezone: calendar.time_zone().iana_name().map(str::to_owned),
            slot_minutes: calendar.slot_minutes(),
            demo: app.config().demo,
            registration: match &app.config().auth.registration {
                Registration::Open => "open",
                Registration::Closed => "closed",
                Registration::Domains(_) => "domains",
            }
            .to_owned(),
            allowed_domains: match &app.config().auth.registration {
                Registration::Domains(domains) => domains.clone(),
                _ => Vec::new(),
            },
        },
        cluster_clock: app.lab_clock().map(|clock| ClusterClock {
            ahead_ms: clock.ahead_us / 1000,
            uncertainty_ms: (clock.round_trip_us + 1999) / 2000,
            off: clock.is_off(),
        }),
    };
    match (store_error, counts) {
        (None, Ok(counts)) => {
            body.total_slots = Some(counts.total_slots);
            body.booked_slots_count = Some(counts.booked_slots);
            body.available_slots_count = Some(counts.available_slots);
            body.database = HealthDatabase::Counts(counts);
            if body.store.last_write_error.is_some() || body.cluster_clock.as_ref().is_some_and(|c| c.off) {
                body.status = "degraded".to_owned();
            }
            ok(&body)
        }
        (store_error, counts) => {
            let reason = store_error.map(|e| e.to_string()).or(counts.err().map(|e| e.to_string())).unwrap_or_default();
            tracing::error!(error = %reason, "health check failed");
            body.status = "unhealthy".to_owned();
            if let HealthDatabase::Failure(failure) = &mut body.database {
                failure.error = shown(app, admin, &reason);
            }
            Ok(json_response(StatusCode::SERVICE_UNAVAILABLE, &body))
        }
    }
}

/// Text as `/health` shows it: as it is to admins, without host paths to anyone else.
fn shown(app: &App, admin: bool, text: &str) -> String {
    if admin { text.to_owned() } else { app.without_host_paths(text) }
}

/// The seed's `database_path`: the store's path for admins, its file name for anyone else.
fn shown_store_path(app: &App, admin: bool) -> String {
    let path = app.store.path();
    match admin {
        true => path.display().to_string(),
        false => path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    }
}

/// `GET /stats`: the seed's blocks plus per-device numbers for today.
pub fn stats(app: &Arc<App>) -> Reply {
    let database = today_counts(app, false)?;
    let today = app.today();
    let mut devices = Vec::new();
    for device in app.devices() {
        let day = app.day_slots(device, today, None)?;
        devices.push(DeviceStats {
            number: day.device.number,
            id: day.device.id.clone(),
            name: day.device.name.clone(),
            date: today.to_string(),
            total_slots: day.entries.len(),
            booked_slots: day.booked_ids().len(),
            available_slots: day.available_ids().len(),
        });
    }
    let counts = app.store.counts().map_err(AppError::from)?;
    ok(&StatsResponse {
        websocket: WebSocketStats { active_connections: app.ws_connections() },
        slots: SlotStats {
            total: database.total_slots,
            booked: database.booked_slots,
            available: database.available_slots,
        },
        database,
        devices,
        users: Total { total: counts.users },
        bookings: Total { total: counts.bookings },
    })
}

/// The caller of a public route, if they sent a valid token. An invalid one
/// is ignored here: the route answers anyone, and old clients may send stale tokens.
pub(super) async fn optional_viewer(app: &App, req: &Req) -> Option<Principal> {
    let token = req.bearer().ok().flatten()?;
    app.authenticate(Credentials::Token(token)).await.ok()
}

/// `GET /slots?date=&device=`.
pub async fn slots(app: &Arc<App>, req: &Req) -> Reply {
    let date = match req.query("date")? {
        Some(text) => wire::decode::date_param("date", &text).map_err(AppError::from)?,
        None => app.today(),
    };
    let device = app.device(req.query("device")?.map(|d| DeviceRef::parse(&d)).as_ref())?;
    let render = |day: &DaySlots, viewer: Option<&str>| {
        Bytes::from(serde_json::to_vec(&wire::slots_json(app, day, viewer)).expect("slots serialize"))
    };
    let body = match optional_viewer(app, req).await.map(|who| who.email) {
        Some(viewer) => render(&app.day_slots(device, date, Some(&viewer))?, Some(&viewer)),
        None => app.day_view_cached(device, date, |day| render(day, None))?,
    };
    Ok(super::json_bytes(StatusCode::OK, body))
}

/// `POST /book-slot`.
pub async fn book_slot(app: &Arc<App>, req: &Req) -> Reply {
    let request: SlotRequest = req.parse()?;
    let date = request.date.unwrap_or_else(|| app.today());
    let device = app.device(request.device.as_ref())?;
    let who = req.authenticate(app, &request.credentials).await?;
    let (booking, slot) = app.book(&who, &device, date, request.slot_id).await?;
    let tz = app.config().lab.calendar.time_zone().clone();
    ok(&BookSlotResponse {
        success: true,
        message: format!("Slot {} booked successfully", slot.id),
        slot_id: slot.id,
        date: date.to_string(),
        device: booking.key.device,
        start: wire::lab_time(slot.start, &tz),
        end: wire::lab_time(slot.end, &tz),
    })
}

/// `POST /cancel-slot`.
pub async fn cancel_slot(app: &Arc<App>, req: &Req) -> Reply {
    let request: SlotRequest = req.parse()?;
    let date = request.date.unwrap_or_else(|| app.today());
    let device = app.device(request.device.as_ref())?;
    let who = req.authenticate(app, &request.credentials).await?;
    let booking = app.cancel(&who, &device, date, request.slot_id).await?;
    ok(&CancelSlotResponse {
        success: true,
        message: format!("Slot {} booking cancelled successfully", booking.key.slot),
        slot_id: booking.key.slot,
        date: date.to_string(),
        device: booking.key.device,
    })
}

/// `GET`/`POST /my-bookings[?history=true]`.
pub async fn my_bookings(app: &Arc<App>, req: &Req) -> Reply {
    let request: MyBookingsRequest = req.parse()?;
    let history = match req.query("history")?.as_deref() {
        Some("true" | "1" | "yes") => true,
        Some("false" | "0" | "no") | None => request.history.unwrap_or(false),
        Some(other) => {
            return Err(AppError::invalid("history", format!("history must be true or false, got {other:?}")).into());
        }
    };
    let who = req.authenticate(app, &request.credentials).await?;
    let tz = app.config().lab.calendar.time_zone().clone();
    let bookings: Vec<wire::BookingJson> = app
        .bookings_of(&who.email, history)?
        .iter()
        .map(|(booking, slot)| wire::BookingJson {
            board_health: app.board_health_flag(&booking.key.device).map(|h| h.as_str().to_owned()),
            ..wire::booking_json(booking, slot, &tz)
        })
        .collect();
    ok(&MyBookingsResponse { success: true, total_bookings: bookings.len(), bookings })
}

/// `GET`/`POST /slots/user`: the booking in progress, or else the next one.
pub async fn slots_user(app: &Arc<App>, req: &Req) -> Reply {
    let credentials: wire::BodyCredentials = req.parse()?;
    let who = req.authenticate(app, &credentials).await?;
    let tz = app.config().lab.calendar.time_zone().clone();
    let body = match app.next_booking(&who.email)? {
        Some(next) => UserSlotResponse {
            success: true,
            has_booking: true,
            slot: Some(next.slot.id),
            date: Some(next.slot.date.to_string()),
            device: Some(next.booking.key.device),
            start_time: Some(wire::hh_mm(next.slot.start_time)),
            end_time: Some(wire::hh_mm(next.slot.end_time)),
            start: Some(wire::lab_time(next.slot.start, &tz)),
            end: Some(wire::lab_time(next.slot.end, &tz)),
            is_current: next.is_current,
        },
        None => UserSlotResponse {
            success: true,
            has_booking: false,
            slot: None,
            date: None,
            device: None,
            start_time: None,
            end_time: None,
            start: None,
            end: None,
            is_current: false,
        },
    };
    ok(&body)
}

/// `POST /auth/register`.
pub async fn register(app: &Arc<App>, req: &Req) -> Reply {
    let request: EmailPassword = req.parse()?;
    let user = app.register(&request.email, &request.password, req.peer.ip()).await?;
    let body = RegisterResponse {
        success: true,
        message: "User registered successfully".to_owned(),
        email: user.email.clone(),
        user: RegisteredUser { id: user.id, email: user.email, created_at: wire::utc(user.created_at) },
    };
    // 200, as the old backend's code answers and its scripts check (its README said 201).
    Ok(json_response(StatusCode::OK, &body))
}

/// `POST /auth/login`.
pub async fn login(app: &Arc<App>, req: &Req) -> Reply {
    let request: EmailPassword = req.parse()?;
    let login = app.login(&request.email, &request.password, req.peer.ip()).await?;
    ok(&LoginResponse {
        success: true,
        message: "Login successful".to_owned(),
        token: login.token,
        token_type: "bearer".to_owned(),
        expires_in: login.lifetime.as_secs(),
        user: LoggedInUser {
            id: login.user.id,
            email: login.principal.email,
            role: login.principal.role.as_str().to_owned(),
            created_at: wire::utc(login.user.created_at),
            last_login: login.previous_login.map(wire::utc),
        },
    })
}

/// `POST /auth/password`: `{old_password, new_password}`; every earlier
/// token stops working, and the answer carries a new one.
pub async fn change_password(app: &Arc<App>, req: &Req, who: &Principal) -> Reply {
    let request: ChangePasswordRequest = req.parse()?;
    let login = app.change_password(who, &request.old_password, &request.new_password).await?;
    ok(&PasswordChangedResponse {
        success: true,
        message: "Password changed; sign in again on your other devices".to_owned(),
        token: login.token,
        token_type: "bearer".to_owned(),
        expires_in: login.lifetime.as_secs(),
    })
}

/// `POST /auth/logout-all`: every token issued to the caller stops working.
pub async fn logout_all(app: &Arc<App>, who: &Principal) -> Reply {
    app.logout_everywhere(who).await?;
    ok(&LoggedOutResponse {
        success: true,
        message: "Signed out everywhere: every token of this account is revoked".to_owned(),
    })
}

/// `GET /metrics`: Prometheus text format.
pub fn metrics(app: &Arc<App>) -> Reply {
    app.metrics.set_websocket_connections(app.ws_connections() + app.console_connections());
    let (running, waiting) = app.compiles();
    app.metrics.set_compiles(running, waiting);
    app.metrics.set_device_health(app.devices.boards().iter().map(|b| (b.id.clone(), b.health().as_str())).collect());
    app.metrics.set_cameras(app.cameras.all().iter().map(|camera| camera.stats()).collect());
    let mut response = Response::new(Full::new(Bytes::from(app.metrics.render())));
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
    Ok(response)
}

/// Answers a `/slot-booking` upgrade and serves the socket in its own task.
pub(super) fn upgrade_booking_socket(server: &Arc<Server>, req: &mut Request<Incoming>, client: IpAddr) -> Reply {
    let served = Arc::clone(server);
    let wrap = crate::ws::fanout::OutboxStream::new;
    super::upgrade::upgrade(&server.app, SocketKind::Booking, client, req, wrap, |socket, open| async move {
        served.booking.serve(Arc::clone(&served.app), socket, open).await;
    })
}
