//! The route table: one row per route with its path pattern, methods, body
//! limit and authentication. It drives resolution, 405 with `Allow`, CORS
//! preflights, who is authenticated before the body is read, and the check
//! that the OpenAPI document describes exactly these routes; `dispatch` then
//! calls the route's handler.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::Server;
use super::error::{ApiError, HttpErrorKind};
use super::request::Req;
use super::{admin, devices, handlers, records, web};
use crate::app::{AppError, Credentials, Principal, Role};

/// Every route the server answers, named; [`ROUTES`] says what each one is.
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
    ChangePassword,
    LogoutAll,
    SlotBookingSocket,
    Metrics,
    OpenApi,
    Devices,
    DevicesCompile,
    DevicesUpload,
    DevicesConsole,
    AdminUsers,
    AdminDisableUser,
    AdminEnableUser,
    AdminMaintenance,
    AdminCheck,
    AdminChecks,
    /// The browser app's files under `/app/{bundle}/`.
    AppAsset,
    AdminAudit,
    Records,
    Record,
    RecordTranscript,
}

/// How much of a body a route reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLimit {
    /// `server.max_json_bytes`.
    Json,
    /// `server.max_firmware_bytes` (a JSON body is still held to the JSON limit).
    Firmware,
    /// A WebSocket upgrade: no body; the socket speaks for itself.
    Upgrade,
}

/// What a route serves, which decides whether the OpenAPI document lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serves {
    /// The JSON (or WebSocket) API: documented in `/openapi.json`, and the
    /// OpenAPI tests hold the document to this row.
    Api,
    /// The browser app's static files. They are no API (their names change
    /// with every build), so the document leaves them out; their `{path}`
    /// takes the rest of the URL (`{bundle}/{file}`).
    AppFiles,
}

/// Who may call a route, and how they say who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Anyone; a valid bearer token may personalise the answer.
    Public,
    /// `Authorization: Bearer`, or the seed's `email`+`password`/`token` in the body.
    BearerOrBody,
    /// `Authorization: Bearer` only, checked before the body is read.
    Bearer,
    /// A lab admin's `Authorization: Bearer`, checked before the body is read.
    Admin,
    /// A WebSocket whose first message authenticates (or none at all).
    InSocket,
}

/// One row of the route table.
#[derive(Clone, Copy, Debug)]
pub struct RouteSpec {
    pub route: Route,
    /// The path, with `{device}` for the one templated segment; logs and metrics show it.
    pub pattern: &'static str,
    pub methods: &'static [Method],
    pub body: BodyLimit,
    pub auth: Auth,
    pub serves: Serves,
}

const GET: &[Method] = &[Method::GET];
const POST: &[Method] = &[Method::POST];
const GET_POST: &[Method] = &[Method::GET, Method::POST];
const POST_DELETE: &[Method] = &[Method::POST, Method::DELETE];

const fn row(route: Route, pattern: &'static str, methods: &'static [Method], auth: Auth) -> RouteSpec {
    RouteSpec { route, pattern, methods, body: BodyLimit::Json, auth, serves: Serves::Api }
}

/// The route table.
pub const ROUTES: &[RouteSpec] = &[
    row(Route::Root, "/", GET, Auth::Public),
    row(Route::Health, "/health", GET, Auth::Public),
    row(Route::Stats, "/stats", GET, Auth::Public),
    row(Route::Slots, "/slots", GET, Auth::Public),
    row(Route::BookSlot, "/book-slot", POST, Auth::BearerOrBody),
    row(Route::CancelSlot, "/cancel-slot", POST, Auth::BearerOrBody),
    row(Route::MyBookings, "/my-bookings", GET_POST, Auth::BearerOrBody),
    row(Route::SlotsUser, "/slots/user", GET_POST, Auth::BearerOrBody),
    row(Route::Register, "/auth/register", POST, Auth::Public),
    row(Route::Login, "/auth/login", POST, Auth::Public),
    row(Route::ChangePassword, "/auth/password", POST, Auth::Bearer),
    row(Route::LogoutAll, "/auth/logout-all", POST, Auth::Bearer),
    RouteSpec { body: BodyLimit::Upgrade, ..row(Route::SlotBookingSocket, "/slot-booking", GET, Auth::InSocket) },
    row(Route::Metrics, "/metrics", GET, Auth::Public),
    row(Route::OpenApi, "/openapi.json", GET, Auth::Public),
    row(Route::Devices, "/devices", GET, Auth::Public),
    row(Route::DevicesCompile, "/devices/compile", POST, Auth::Public),
    RouteSpec {
        body: BodyLimit::Firmware,
        ..row(Route::DevicesUpload, "/devices/upload/{device}", POST, Auth::Bearer)
    },
    RouteSpec { body: BodyLimit::Upgrade, ..row(Route::DevicesConsole, "/devices/read/{device}", GET, Auth::InSocket) },
    row(Route::AdminUsers, "/admin/users", GET, Auth::Admin),
    row(Route::AdminDisableUser, "/admin/users/disable", POST, Auth::Admin),
    row(Route::AdminEnableUser, "/admin/users/enable", POST, Auth::Admin),
    row(Route::AdminMaintenance, "/admin/devices/maintenance/{device}", POST_DELETE, Auth::Admin),
    row(Route::AdminCheck, "/admin/devices/check/{device}", POST, Auth::Admin),
    row(Route::AdminChecks, "/admin/devices/checks/{device}", GET, Auth::Admin),
    // Not in the OpenAPI document: static files, not API (see `Serves::AppFiles`).
    RouteSpec { serves: Serves::AppFiles, ..row(Route::AppAsset, "/app/{path}", GET, Auth::Public) },
    row(Route::AdminAudit, "/admin/audit", GET, Auth::Admin),
    row(Route::Records, "/records", GET, Auth::Bearer),
    row(Route::Record, "/records/{id}", GET, Auth::Bearer),
    row(Route::RecordTranscript, "/records/{id}/transcript", GET, Auth::Bearer),
];

impl Route {
    pub fn spec(self) -> &'static RouteSpec {
        ROUTES.iter().find(|spec| spec.route == self).expect("every route has a row in ROUTES")
    }

    pub fn pattern(self) -> &'static str {
        self.spec().pattern
    }

    /// The route a request path names.
    pub fn resolve(path: &str) -> Option<&'static RouteSpec> {
        ROUTES.iter().find(|spec| spec.pattern == path).or_else(|| {
            // Templated routes: one non-empty segment after the prefix.
            ROUTES.iter().find(|spec| spec.path_param(path).is_some())
        })
    }
}

impl RouteSpec {
    /// The templated part of a route's path, still percent-encoded: one
    /// non-empty segment between the pattern's prefix and suffix (`{device}`,
    /// `{id}`), or for the app's files the rest of the path.
    pub fn path_param<'p>(&self, path: &'p str) -> Option<&'p str> {
        let (prefix, rest) = self.pattern.split_once('{')?;
        let (_, suffix) = rest.split_once('}')?;
        let segment = path.strip_prefix(prefix)?.strip_suffix(suffix).filter(|s| !s.is_empty())?;
        match self.serves {
            Serves::Api => (!segment.contains('/')).then_some(segment),
            Serves::AppFiles => Some(segment),
        }
    }

    fn allow_header(&self) -> HeaderValue {
        let mut methods: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
        methods.push("OPTIONS");
        HeaderValue::from_str(&methods.join(", ")).expect("method names are valid header text")
    }
}

type Reply = Result<Response<Full<Bytes>>, ApiError>;

/// Routes and serves one request; also returns the route, for the log line.
pub(crate) async fn dispatch(
    server: &Arc<Server>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> (Option<Route>, Reply) {
    let app = &server.app;
    let Some(spec) = Route::resolve(req.uri().path()) else {
        let detail = format!("No route {} {}", req.method(), req.uri().path());
        return (None, Err(ApiError::http(HttpErrorKind::RouteNotFound, detail)));
    };
    let route = spec.route;
    if req.method() == Method::OPTIONS {
        return (Some(route), Ok(preflight(spec)));
    }
    if !spec.methods.contains(req.method()) {
        let detail = format!("Method {} is not allowed on {}", req.method(), spec.pattern);
        let error =
            ApiError::http(HttpErrorKind::MethodNotAllowed, detail).with_header(header::ALLOW, spec.allow_header());
        return (Some(route), Err(error));
    }
    let limit = match spec.body {
        BodyLimit::Upgrade => {
            let reply = match route {
                Route::DevicesConsole => devices::upgrade_console(server, spec, &mut req, peer.ip()),
                _ => handlers::upgrade_booking_socket(server, &mut req, peer.ip()),
            };
            return (Some(route), reply);
        }
        BodyLimit::Json => app.config().server.max_json_bytes,
        BodyLimit::Firmware => app.config().server.max_firmware_bytes,
    };
    // Bearer-only routes know who is calling before a byte of the body is read.
    let who = match spec.auth {
        Auth::Bearer | Auth::Admin => match bearer_principal(server, &req, peer, spec.auth).await {
            Ok(who) => Some(who),
            Err(error) => return (Some(route), Err(error)),
        },
        Auth::Public | Auth::BearerOrBody | Auth::InSocket => None,
    };
    if let (Route::DevicesUpload, Some(who)) = (route, &who) {
        // The caller's right to the board is checked before the body is read.
        return (Some(route), devices::upload(server, spec, req, who, peer).await);
    }
    let req = match Req::read(req, limit, peer).await {
        Ok(req) => req,
        Err(e) => return (Some(route), Err(e)),
    };
    let reply = match (route, who) {
        (Route::Root, _) if web::wants_html(req.headers()) => Ok(web::index(req.headers())),
        (Route::Root, _) => handlers::root(app),
        (Route::AppAsset, _) => web::asset(spec, &req),
        (Route::Health, _) => handlers::health(app, is_admin(server, &req).await),
        (Route::Stats, _) => handlers::stats(app),
        (Route::Slots, _) => handlers::slots(app, &req).await,
        (Route::BookSlot, _) => handlers::book_slot(app, &req).await,
        (Route::CancelSlot, _) => handlers::cancel_slot(app, &req).await,
        (Route::MyBookings, _) => handlers::my_bookings(app, &req).await,
        (Route::SlotsUser, _) => handlers::slots_user(app, &req).await,
        (Route::Register, _) => handlers::register(app, &req).await,
        (Route::Login, _) => handlers::login(app, &req).await,
        (Route::ChangePassword, Some(who)) => handlers::change_password(app, &req, &who).await,
        (Route::LogoutAll, Some(who)) => handlers::logout_all(app, &who).await,
        (Route::Metrics, _) => handlers::metrics(app),
        (Route::OpenApi, _) => Ok(super::json_response(StatusCode::OK, &super::openapi::document())),
        (Route::Devices, _) => devices::list(app, is_admin(server, &req).await),
        (Route::DevicesCompile, _) => devices::compile(app, &req).await,
        (Route::AdminUsers, Some(who)) => admin::users(app, &who),
        (Route::AdminDisableUser, Some(who)) => admin::set_disabled(app, &req, &who, true).await,
        (Route::AdminEnableUser, Some(who)) => admin::set_disabled(app, &req, &who, false).await,
        (Route::AdminMaintenance, Some(who)) => admin::maintenance(app, spec, &req, &who).await,
        (Route::AdminCheck, Some(who)) => admin::check(app, spec, &req, &who).await,
        (Route::AdminChecks, Some(who)) => admin::checks(app, spec, &req, &who),
        (Route::AdminAudit, Some(who)) => records::audit(app, &req, &who),
        (Route::Records, Some(who)) => records::list(app, &req, &who),
        (Route::Record, Some(who)) => records::get(app, spec, &req, &who),
        (Route::RecordTranscript, Some(who)) => records::transcript(app, spec, &req, &who),
        (Route::SlotBookingSocket | Route::DevicesConsole, _)
        | (Route::DevicesUpload, _)
        | (Route::AdminUsers, None)
        | (Route::ChangePassword | Route::LogoutAll, None)
        | (Route::AdminDisableUser | Route::AdminEnableUser, None)
        | (Route::AdminMaintenance | Route::AdminCheck | Route::AdminChecks | Route::AdminAudit, None)
        | (Route::Records | Route::Record | Route::RecordTranscript, None) => {
            unreachable!("upgrades are answered before the body is read, and bearer routes have a caller")
        }
    };
    (Some(route), reply)
}

/// Who is calling, by `Authorization: Bearer` alone (routes beyond the
/// seed's do not take in-body credentials).
async fn bearer_principal(
    server: &Server,
    req: &Request<Incoming>,
    peer: SocketAddr,
    auth: Auth,
) -> Result<Principal, ApiError> {
    let token = super::request::bearer(req.headers())?.ok_or(AppError::NotAuthenticated)?;
    let mut who = server.app.authenticate(Credentials::Token(token)).await?;
    who.address = Some(peer.ip());
    if auth == Auth::Admin {
        server.app.require_admin(&who)?;
    }
    Ok(who)
}

/// Whether a public route's caller sent an admin's token: they see host
/// details (paths) that everyone else does not. A bad token is no error
/// here; the route answers as to anyone.
async fn is_admin(server: &Server, req: &Req) -> bool {
    let Ok(Some(token)) = super::request::bearer(req.headers()) else { return false };
    server.app.authenticate(Credentials::Token(token)).await.is_ok_and(|who| who.role == Role::Admin)
}

/// Answers a CORS preflight.
fn preflight(spec: &RouteSpec) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(header::ALLOW, spec.allow_header());
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, spec.allow_header());
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type"));
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    response
}
