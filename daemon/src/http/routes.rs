//! The route table: one row per route with its path pattern, methods, body
//! limit, authentication and handler. It drives resolution, 405 with
//! `Allow`, CORS preflights, who is authenticated before the body is read,
//! the metrics' route labels and the check that the OpenAPI document
//! describes exactly these routes; `dispatch` calls the row's handler, so a
//! new route is one row, its handler and its wire types.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::Server;
use super::error::{ApiError, HttpErrorKind};
use super::request::Req;
use super::{Body, admin, camera, devices, handlers, records, web};
use crate::app::{App, AppError, Credentials, Principal, Role};

type Reply = Result<Response<Full<Bytes>>, ApiError>;

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
    RecordSnapshot,
    Camera,
    CameraTicket,
    CameraStream,
    CameraSnapshot,
    /// The old web client's camera feed.
    LegacyCameraSocket,
    Cluster,
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

/// What a route's handler is handed, by shape. Each shape is one way of
/// being called; `dispatch` does what the shape needs first (the bearer
/// check, reading the body) and calls the row's function.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Handler {
    /// Answers at once from the read request.
    Now(fn(&Call<'_>) -> Reply),
    /// Answers at once, differently to a caller with an admin's token
    /// (host details such as paths); any other token is no error.
    ForViewer(fn(&Arc<App>, bool) -> Reply),
    /// Waits on the app (the store, bcrypt, a compile). Each handler's future
    /// is its own type, so the row holds it boxed: one allocation per
    /// request, the price of not matching on the route a second time.
    Wait(for<'a> fn(&'a Call<'a>) -> Pending<'a>),
    /// Answers at once, for the caller the bearer token names (checked, with
    /// the route's [`Auth`], before the body is read).
    NowAs(fn(&Call<'_>, &Principal) -> Reply),
    /// Waits on the app, for the caller the bearer token names.
    WaitAs(for<'a> fn(&'a Call<'a>, &'a Principal) -> Pending<'a>),
    /// Gets the request with its body unread, once the bearer's caller is
    /// known: an upload checks the caller's right to the board first.
    Unread(
        for<'a> fn(&'a Arc<Server>, &'static RouteSpec, Request<Incoming>, &'a Principal, SocketAddr) -> Pending<'a>,
    ),
    /// A WebSocket handshake: no body is read; the socket authenticates itself.
    Upgrade(fn(&Arc<Server>, &RouteSpec, &mut Request<Incoming>, IpAddr) -> Reply),
    /// Answers with a body that goes on (a camera's live stream).
    Stream(for<'a> fn(&'a Arc<Server>, &'a Call<'a>) -> PendingStream<'a>),
}

/// A request whose body has been read, as a handler sees it.
pub(crate) struct Call<'a> {
    pub(crate) app: &'a Arc<App>,
    pub(crate) spec: &'static RouteSpec,
    pub(crate) req: &'a Req,
}

/// A waiting handler's answer.
pub(crate) type Pending<'a> = Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// A streaming handler's answer.
pub(crate) type PendingStream<'a> = Pin<Box<dyn Future<Output = Result<Response<Body>, ApiError>> + Send + 'a>>;

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
    pub(crate) handler: Handler,
}

const GET: &[Method] = &[Method::GET];
const POST: &[Method] = &[Method::POST];
const GET_POST: &[Method] = &[Method::GET, Method::POST];
const POST_DELETE: &[Method] = &[Method::POST, Method::DELETE];

const fn row(
    route: Route,
    pattern: &'static str,
    methods: &'static [Method],
    auth: Auth,
    handler: Handler,
) -> RouteSpec {
    RouteSpec { route, pattern, methods, body: BodyLimit::Json, auth, serves: Serves::Api, handler }
}

use Handler::{ForViewer, Now, NowAs, Stream, Unread, Upgrade, Wait, WaitAs};

/// The route table.
pub const ROUTES: &[RouteSpec] = &[
    row(
        Route::Root,
        "/",
        GET,
        Auth::Public,
        // A browser gets the web app; anything else the seed's JSON greeting.
        Now(|c| match web::wants_html(c.req.headers()) {
            true => Ok(web::index(c.req.headers())),
            false => handlers::root(c.app),
        }),
    ),
    row(Route::Health, "/health", GET, Auth::Public, ForViewer(handlers::health)),
    row(Route::Stats, "/stats", GET, Auth::Public, Now(|c| handlers::stats(c.app))),
    row(Route::Cluster, "/cluster", GET, Auth::Public, Now(|c| handlers::cluster(c.app))),
    row(Route::Slots, "/slots", GET, Auth::Public, Wait(|c| Box::pin(handlers::slots(c.app, c.req)))),
    row(Route::BookSlot, "/book-slot", POST, Auth::BearerOrBody, Wait(|c| Box::pin(handlers::book_slot(c.app, c.req)))),
    row(
        Route::CancelSlot,
        "/cancel-slot",
        POST,
        Auth::BearerOrBody,
        Wait(|c| Box::pin(handlers::cancel_slot(c.app, c.req))),
    ),
    row(
        Route::MyBookings,
        "/my-bookings",
        GET_POST,
        Auth::BearerOrBody,
        Wait(|c| Box::pin(handlers::my_bookings(c.app, c.req))),
    ),
    row(
        Route::SlotsUser,
        "/slots/user",
        GET_POST,
        Auth::BearerOrBody,
        Wait(|c| Box::pin(handlers::slots_user(c.app, c.req))),
    ),
    row(Route::Register, "/auth/register", POST, Auth::Public, Wait(|c| Box::pin(handlers::register(c.app, c.req)))),
    row(Route::Login, "/auth/login", POST, Auth::Public, Wait(|c| Box::pin(handlers::login(c.app, c.req)))),
    row(
        Route::ChangePassword,
        "/auth/password",
        POST,
        Auth::Bearer,
        WaitAs(|c, who| Box::pin(handlers::change_password(c.app, c.req, who))),
    ),
    row(
        Route::LogoutAll,
        "/auth/logout-all",
        POST,
        Auth::Bearer,
        WaitAs(|c, who| Box::pin(handlers::logout_all(c.app, who))),
    ),
    RouteSpec {
        body: BodyLimit::Upgrade,
        ..row(
            Route::SlotBookingSocket,
            "/slot-booking",
            GET,
            Auth::InSocket,
            Upgrade(|server, _, req, client| handlers::upgrade_booking_socket(server, req, client)),
        )
    },
    row(Route::Metrics, "/metrics", GET, Auth::Public, Now(|c| handlers::metrics(c.app))),
    row(
        Route::OpenApi,
        "/openapi.json",
        GET,
        Auth::Public,
        Now(|_| Ok(super::json_response(StatusCode::OK, &super::openapi::document()))),
    ),
    row(Route::Devices, "/devices", GET, Auth::Public, ForViewer(devices::list)),
    row(
        Route::DevicesCompile,
        "/devices/compile",
        POST,
        Auth::Public,
        Wait(|c| Box::pin(devices::compile(c.app, c.req))),
    ),
    RouteSpec {
        body: BodyLimit::Firmware,
        ..row(
            Route::DevicesUpload,
            "/devices/upload/{device}",
            POST,
            Auth::Bearer,
            Unread(|server, spec, req, who, peer| Box::pin(devices::upload(server, spec, req, who, peer))),
        )
    },
    RouteSpec {
        body: BodyLimit::Upgrade,
        ..row(Route::DevicesConsole, "/devices/read/{device}", GET, Auth::InSocket, Upgrade(devices::upgrade_console))
    },
    row(Route::AdminUsers, "/admin/users", GET, Auth::Admin, NowAs(|c, who| admin::users(c.app, who))),
    row(
        Route::AdminDisableUser,
        "/admin/users/disable",
        POST,
        Auth::Admin,
        WaitAs(|c, who| Box::pin(admin::set_disabled(c.app, c.req, who, true))),
    ),
    row(
        Route::AdminEnableUser,
        "/admin/users/enable",
        POST,
        Auth::Admin,
        WaitAs(|c, who| Box::pin(admin::set_disabled(c.app, c.req, who, false))),
    ),
    row(
        Route::AdminMaintenance,
        "/admin/devices/maintenance/{device}",
        POST_DELETE,
        Auth::Admin,
        WaitAs(|c, who| Box::pin(admin::maintenance(c.app, c.spec, c.req, who))),
    ),
    row(
        Route::AdminCheck,
        "/admin/devices/check/{device}",
        POST,
        Auth::Admin,
        WaitAs(|c, who| Box::pin(admin::check(c.app, c.spec, c.req, who))),
    ),
    row(
        Route::AdminChecks,
        "/admin/devices/checks/{device}",
        GET,
        Auth::Admin,
        NowAs(|c, who| admin::checks(c.app, c.spec, c.req, who)),
    ),
    // Not in the OpenAPI document: static files, not API (see `Serves::AppFiles`).
    RouteSpec {
        serves: Serves::AppFiles,
        ..row(Route::AppAsset, "/app/{path}", GET, Auth::Public, Now(|c| web::asset(c.spec, c.req)))
    },
    row(Route::AdminAudit, "/admin/audit", GET, Auth::Admin, NowAs(|c, who| records::audit(c.app, c.req, who))),
    row(Route::Records, "/records", GET, Auth::Bearer, WaitAs(|c, who| Box::pin(records::list(c.app, c.req, who)))),
    row(Route::Record, "/records/{id}", GET, Auth::Bearer, NowAs(|c, who| records::get(c.app, c.spec, c.req, who))),
    row(
        Route::RecordTranscript,
        "/records/{id}/transcript",
        GET,
        Auth::Bearer,
        NowAs(|c, who| records::transcript(c.app, c.spec, c.req, who)),
    ),
    row(
        Route::RecordSnapshot,
        "/records/{id}/snapshot",
        GET,
        Auth::Bearer,
        NowAs(|c, who| records::snapshot(c.app, c.spec, c.req, who)),
    ),
    row(Route::Camera, "/devices/camera/{device}", GET, Auth::Public, Wait(|c| Box::pin(camera::status(c)))),
    row(Route::CameraTicket, "/devices/camera/{device}/ticket", POST, Auth::Bearer, NowAs(camera::ticket)),
    row(
        Route::CameraStream,
        "/devices/camera/{device}/stream",
        GET,
        Auth::Public,
        Stream(|server, c| Box::pin(camera::stream(server, c))),
    ),
    row(
        Route::CameraSnapshot,
        "/devices/camera/{device}/snapshot",
        GET,
        Auth::Public,
        Wait(|c| Box::pin(camera::snapshot(c))),
    ),
    RouteSpec {
        body: BodyLimit::Upgrade,
        ..row(Route::LegacyCameraSocket, "/websocket/{quality}", GET, Auth::InSocket, Upgrade(camera::upgrade_legacy))
    },
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

/// Routes and serves one request; also returns the route, for the log line.
pub(crate) async fn dispatch(
    server: &Arc<Server>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> (Option<Route>, Result<Response<Body>, ApiError>) {
    let Some(spec) = Route::resolve(req.uri().path()) else {
        let detail = format!("No route {} {}", req.method(), req.uri().path());
        return (None, Err(ApiError::http(HttpErrorKind::RouteNotFound, detail)));
    };
    let route = spec.route;
    if req.method() == Method::OPTIONS {
        return (Some(route), Ok(preflight(spec).map(Body::Left)));
    }
    if !spec.methods.contains(req.method()) {
        let detail = format!("Method {} is not allowed on {}", req.method(), spec.pattern);
        let error =
            ApiError::http(HttpErrorKind::MethodNotAllowed, detail).with_header(header::ALLOW, spec.allow_header());
        return (Some(route), Err(error));
    }
    // Another host's board: its host answers (a lab of several hosts).
    if let Some(owner) = super::forward::owner(&server.app, spec, &req) {
        // Boxed: a local request's future does not carry a forwarded one's size.
        return (Some(route), Box::pin(super::forward::forward(server, owner, req, peer)).await);
    }
    (Some(route), serve(server, spec, req, peer).await)
}

/// Does what the row's handler shape needs first (the bearer check before a
/// byte of the body is read, then the body), and calls the row's handler.
async fn serve(
    server: &Arc<Server>,
    spec: &'static RouteSpec,
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let app = &server.app;
    let limit = match spec.body {
        BodyLimit::Json | BodyLimit::Upgrade => app.config().server.max_json_bytes,
        BodyLimit::Firmware => app.config().server.max_firmware_bytes,
    };
    let read = |req| Req::read(req, limit, peer);
    let reply = match spec.handler {
        Stream(handler) => {
            let req = read(req).await?;
            return handler(server, &Call { app, spec, req: &req }).await;
        }
        Upgrade(handler) => handler(server, spec, &mut req, peer.ip()),
        Unread(handler) => {
            let who = bearer_principal(server, &req, peer, spec.auth).await?;
            handler(server, spec, req, &who, peer).await
        }
        Now(handler) => {
            let req = read(req).await?;
            handler(&Call { app, spec, req: &req })
        }
        ForViewer(handler) => {
            let req = read(req).await?;
            handler(app, is_admin(server, &req).await)
        }
        Wait(handler) => {
            let req = read(req).await?;
            handler(&Call { app, spec, req: &req }).await
        }
        NowAs(handler) => {
            let who = bearer_principal(server, &req, peer, spec.auth).await?;
            let req = read(req).await?;
            handler(&Call { app, spec, req: &req }, &who)
        }
        WaitAs(handler) => {
            let who = bearer_principal(server, &req, peer, spec.auth).await?;
            let req = read(req).await?;
            handler(&Call { app, spec, req: &req }, &who).await
        }
    };
    reply.map(|response| response.map(Body::Left))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `dispatch` asks for a bearer token by the handler's shape and the
    /// OpenAPI document by the row's `auth`: the two must say the same.
    #[test]
    fn each_rows_handler_shape_agrees_with_its_auth_and_body() {
        for spec in ROUTES {
            let takes_caller = matches!(spec.handler, NowAs(_) | WaitAs(_) | Unread(_));
            let by_bearer = matches!(spec.auth, Auth::Bearer | Auth::Admin);
            assert_eq!(takes_caller, by_bearer, "{}", spec.pattern);
            let upgrade = matches!(spec.handler, Upgrade(_));
            assert_eq!(upgrade, spec.body == BodyLimit::Upgrade, "{}", spec.pattern);
            assert_eq!(upgrade, spec.auth == Auth::InSocket, "{}", spec.pattern);
        }
    }

    #[test]
    fn every_route_has_one_row() {
        for spec in ROUTES {
            assert_eq!(ROUTES.iter().filter(|other| other.route == spec.route).count(), 1, "{:?}", spec.route);
            assert_eq!(ROUTES.iter().filter(|other| other.pattern == spec.pattern).count(), 1, "{}", spec.pattern);
        }
    }
}
