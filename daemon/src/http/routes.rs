//! The router: a path resolves to a [`Route`], each route lists its methods,
//! and `dispatch` reads the body and calls the route's handler.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::Server;
use super::error::ApiError;
use super::handlers;
use super::request::Req;

/// Every route the server answers. `pattern` is what logs and metrics show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Root,
    Health,
    Stats,
    Slots,
    BookSlot,
    CancelSlot,
    MyBookings,
    SlotsUser,
    Register,
    Login,
    SlotBookingSocket,
    Metrics,
    OpenApi,
    Devices,
    DevicesCompile,
    /// `/devices/upload/{device}`: the device is the last path segment.
    DevicesUpload,
    /// `/devices/read/{device}`: the serial console (WebSocket).
    DevicesConsole,
    AdminUsers,
    AdminDisableUser,
    AdminEnableUser,
}

impl Route {
    pub const ALL: &[Route] = &[
        Route::Root,
        Route::Health,
        Route::Stats,
        Route::Slots,
        Route::BookSlot,
        Route::CancelSlot,
        Route::MyBookings,
        Route::SlotsUser,
        Route::Register,
        Route::Login,
        Route::SlotBookingSocket,
        Route::Metrics,
        Route::OpenApi,
        Route::Devices,
        Route::DevicesCompile,
        Route::DevicesUpload,
        Route::DevicesConsole,
        Route::AdminUsers,
        Route::AdminDisableUser,
        Route::AdminEnableUser,
    ];

    pub fn resolve(path: &str) -> Option<Route> {
        if let Some(route) = Route::ALL.iter().copied().find(|r| r.pattern() == path) {
            return Some(route);
        }
        // Templated routes: one non-empty segment after the prefix.
        [Route::DevicesUpload, Route::DevicesConsole].into_iter().find(|r| r.path_param(path).is_some())
    }

    /// The `{device}` segment of a templated route's path, still percent-encoded.
    pub fn path_param(self, path: &str) -> Option<&str> {
        let prefix = self.pattern().strip_suffix("{device}")?;
        path.strip_prefix(prefix).filter(|rest| !rest.is_empty() && !rest.contains('/'))
    }

    pub fn pattern(self) -> &'static str {
        match self {
            Route::Root => "/",
            Route::Health => "/health",
            Route::Stats => "/stats",
            Route::Slots => "/slots",
            Route::BookSlot => "/book-slot",
            Route::CancelSlot => "/cancel-slot",
            Route::MyBookings => "/my-bookings",
            Route::SlotsUser => "/slots/user",
            Route::Register => "/auth/register",
            Route::Login => "/auth/login",
            Route::SlotBookingSocket => "/slot-booking",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/openapi.json",
            Route::Devices => "/devices",
            Route::DevicesCompile => "/devices/compile",
            Route::DevicesUpload => "/devices/upload/{device}",
            Route::DevicesConsole => "/devices/read/{device}",
            Route::AdminUsers => "/admin/users",
            Route::AdminDisableUser => "/admin/users/disable",
            Route::AdminEnableUser => "/admin/users/enable",
        }
    }

    pub fn methods(self) -> &'static [Method] {
        match self {
            Route::Root
            | Route::Health
            | Route::Stats
            | Route::Slots
            | Route::SlotBookingSocket
            | Route::Metrics
            | Route::OpenApi
            | Route::Devices
            | Route::DevicesConsole
            | Route::AdminUsers => &[Method::GET],
            Route::BookSlot
            | Route::CancelSlot
            | Route::Register
            | Route::Login
            | Route::DevicesCompile
            | Route::DevicesUpload
            | Route::AdminDisableUser
            | Route::AdminEnableUser => &[Method::POST],
            Route::MyBookings | Route::SlotsUser => &[Method::GET, Method::POST],
        }
    }

    fn allow_header(self) -> HeaderValue {
        let mut methods: Vec<&str> = self.methods().iter().map(Method::as_str).collect();
        methods.push("OPTIONS");
        HeaderValue::from_str(&methods.join(", ")).expect("method names are valid header text")
    }
}

type Reply = Result<Response<Full<Bytes>>, ApiError>;

/// Routes and serves one request; also returns the route, for the log line.
pub(crate) async fn dispatch(server: &Arc<Server>, mut req: Request<Incoming>) -> (Option<Route>, Reply) {
    let app = &server.app;
    let Some(route) = Route::resolve(req.uri().path()) else {
        let detail = format!("No route {} {}", req.method(), req.uri().path());
        return (None, Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", detail)));
    };
    if req.method() == Method::OPTIONS {
        return (Some(route), Ok(preflight(route)));
    }
    if !route.methods().contains(req.method()) {
        let detail = format!("Method {} is not allowed on {}", req.method(), route.pattern());
        let error = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", detail)
            .with_header(header::ALLOW, route.allow_header());
        return (Some(route), Err(error));
    }
    if route == Route::SlotBookingSocket {
        return (Some(route), upgrade_booking_socket(server, &mut req));
    }
    if route == Route::DevicesConsole {
        return (Some(route), super::devices::upgrade_console(server, &mut req));
    }
    let limit = match route {
        // Firmware may be larger than JSON; the handler holds JSON bodies to the JSON limit.
        Route::DevicesUpload => app.config().server.max_firmware_bytes,
        _ => app.config().server.max_json_bytes,
    };
    let req = match Req::read(req, limit).await {
        Ok(req) => req,
        Err(e) => return (Some(route), Err(e)),
    };
    let reply = match route {
        Route::Root => handlers::root(app),
        Route::Health => handlers::health(app),
        Route::Stats => handlers::stats(app),
        Route::Slots => handlers::slots(app, &req).await,
        Route::BookSlot => handlers::book_slot(app, &req).await,
        Route::CancelSlot => handlers::cancel_slot(app, &req).await,
        Route::MyBookings => handlers::my_bookings(app, &req).await,
        Route::SlotsUser => handlers::slots_user(app, &req).await,
        Route::Register => handlers::register(app, &req).await,
        Route::Login => handlers::login(app, &req).await,
        Route::SlotBookingSocket => unreachable!("WebSocket routes are answered before the body is read"),
        Route::Metrics => handlers::metrics(app),
        Route::OpenApi => Ok(super::json_response(StatusCode::OK, &crate::openapi::document())),
        Route::Devices => super::devices::list(app),
        Route::DevicesCompile => super::devices::compile(app, &req).await,
        Route::DevicesUpload => super::devices::upload(app, &req).await,
        Route::DevicesConsole => unreachable!("WebSocket routes are answered before the body is read"),
        Route::AdminUsers => super::admin::users(app, &req).await,
        Route::AdminDisableUser => super::admin::set_disabled(app, &req, true).await,
        Route::AdminEnableUser => super::admin::set_disabled(app, &req, false).await,
    };
    (Some(route), reply)
}

/// Answers a `/slot-booking` upgrade and serves the socket in its own task.
fn upgrade_booking_socket(server: &Arc<Server>, req: &mut Request<Incoming>) -> Reply {
    let served = Arc::clone(server);
    crate::ws::upgrade(&server.app, req, crate::ws::fanout::OutboxStream::new, |socket| async move {
        served.booking.serve(Arc::clone(&served.app), socket).await;
    })
}

/// Answers a CORS preflight.
fn preflight(route: Route) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(header::ALLOW, route.allow_header());
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, route.allow_header());
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type"));
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    response
}
