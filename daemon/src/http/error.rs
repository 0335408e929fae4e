//! The one place an error becomes an HTTP response: FastAPI's
//! `{"detail": "..."}` shape, which the seed's clients read, plus a stable
//! machine-readable `code`. The status follows from the error's kind alone.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use crate::app::{AppError, ErrorKind};
use crate::devices::BoardError;
use crate::wire::ErrorBody;

/// What went wrong in the HTTP layer itself, before any lab operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpErrorKind {
    RouteNotFound,
    MethodNotAllowed,
    BodyTooLarge,
    BodyTimeout,
    BadBody,
    UnsupportedMediaType,
    TooManyConnections,
    TooManyWebSockets,
    /// The client's address holds `server.max_websockets_per_address`.
    AddressSocketLimit,
    WebSocketRequired,
    WebSocketVersion,
    WebSocketKey,
    /// The board belongs to another host of the lab, which cannot be reached.
    BoardHostUnreachable,
}

impl HttpErrorKind {
    fn code(self) -> &'static str {
        match self {
            HttpErrorKind::RouteNotFound => "not_found",
            HttpErrorKind::MethodNotAllowed => "method_not_allowed",
            HttpErrorKind::BodyTooLarge => "body_too_large",
            HttpErrorKind::BodyTimeout => "body_timeout",
            HttpErrorKind::BadBody => "bad_body",
            HttpErrorKind::UnsupportedMediaType => "unsupported_media_type",
            HttpErrorKind::TooManyConnections => "too_many_connections",
            HttpErrorKind::TooManyWebSockets => "too_many_websockets",
            HttpErrorKind::AddressSocketLimit => "too_many_address_sockets",
            HttpErrorKind::WebSocketRequired => "websocket_required",
            HttpErrorKind::WebSocketVersion => "websocket_version",
            HttpErrorKind::WebSocketKey => "websocket_key",
            HttpErrorKind::BoardHostUnreachable => "board_host_unreachable",
        }
    }
}

/// Either kind of failure a response can report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    App(ErrorKind),
    Http(HttpErrorKind),
}

impl Kind {
    pub fn code(self) -> &'static str {
        match self {
            Kind::App(kind) => kind.code(),
            Kind::Http(kind) => kind.code(),
        }
    }

    /// The status code of each kind: the only place one is chosen for an error.
    pub fn status(self) -> StatusCode {
        use ErrorKind as K;
        use HttpErrorKind as H;
        match self {
            Kind::App(kind) => match kind {
                K::InvalidCredentials | K::NotAuthenticated | K::TokenExpired | K::InvalidToken | K::InvalidTicket => {
                    StatusCode::UNAUTHORIZED
                }
                K::TooManyAttempts
                | K::TooManySockets
                | K::TooManyRegistrations
                | K::CompileAlreadyQueued
                | K::CompileQueueFull
                | K::CompileShareUsed => StatusCode::TOO_MANY_REQUESTS,
                K::AccountDisabled
                | K::AdminOnly
                | K::RegistrationRefused
                | K::NotYourSlot
                | K::NotYourRecord
                | K::ConsoleReadOnly
                | K::CameraNotVisible => StatusCode::FORBIDDEN,
                K::UserNotFound | K::DeviceNotFound | K::RecordNotFound | K::NoCamera => StatusCode::NOT_FOUND,
                K::AccountIsAdmin
                | K::EmailTaken
                | K::EmailConfusable
                | K::SlotNotFound
                | K::SlotSkipped
                | K::SlotInPast
                | K::DateTooFarAhead
                | K::SlotBlocked
                | K::SlotUnavailable
                | K::ActiveBookingLimit
                | K::DailyBookingLimit
                | K::NotBookedByYou
                | K::DeviceUnavailable
                | K::FirmwareTooLarge
                | K::NoCompiler
                | K::CompileFailed
                | K::CompileTimeout => StatusCode::BAD_REQUEST,
                K::InvalidField | K::MissingField | K::WeakPassword | K::InvalidFirmware => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                // The board is not in the state the request needs.
                K::DeviceBusy | K::UploadAborted | K::NotInMaintenance | K::NoHealthCheck => StatusCode::CONFLICT,
                // The board or its tool answered wrongly: a bad gateway, not our bug.
                K::UploadFailed => StatusCode::BAD_GATEWAY,
                // The lab's setup (tool, options, toolchain) or the store is at fault.
                K::Overloaded
                | K::DeviceOffline
                | K::CameraOffline
                | K::DeviceMisconfigured
                | K::CompilerUnavailable
                | K::CompileSandboxUnavailable
                | K::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
                K::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Kind::Http(kind) => match kind {
                H::RouteNotFound => StatusCode::NOT_FOUND,
                H::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
                H::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                H::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
                H::BadBody | H::WebSocketVersion | H::WebSocketKey => StatusCode::BAD_REQUEST,
                H::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                H::TooManyConnections | H::TooManyWebSockets | H::BoardHostUnreachable => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                H::AddressSocketLimit => StatusCode::TOO_MANY_REQUESTS,
                H::WebSocketRequired => StatusCode::UPGRADE_REQUIRED,
            },
        }
    }
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub kind: Kind,
    pub detail: String,
    /// The request field at fault, for 422s.
    pub field: Option<String>,
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn http(kind: HttpErrorKind, detail: impl Into<String>) -> ApiError {
        ApiError { kind: Kind::Http(kind), detail: detail.into(), field: None, headers: Vec::new() }
    }

    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> ApiError {
        self.headers.push((name, value));
        self
    }

    pub fn with_retry_after(self, after: Duration) -> ApiError {
        let seconds = after.as_secs().max(1).to_string();
        self.with_header(header::RETRY_AFTER, HeaderValue::from_str(&seconds).expect("digits are valid header text"))
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status();
        let field = self.field.filter(|_| status == StatusCode::UNPROCESSABLE_ENTITY);
        let body = ErrorBody { detail: self.detail, code: self.kind.code().to_owned(), field };
        let mut response = super::json_response(status, &body);
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> ApiError {
        let kind = e.kind();
        let detail = match kind {
            // The log gets the details; the client a message that leaks nothing.
            ErrorKind::StoreUnavailable => {
                tracing::error!(error = %e, "store failure while serving a request");
                "The booking store is unavailable; try again shortly".to_owned()
            }
            ErrorKind::Internal if matches!(e, AppError::Internal(_) | AppError::Board(BoardError::Internal(_))) => {
                tracing::error!(error = %e, "internal error while serving a request");
                "Internal error; the lab admin can find details in the log".to_owned()
            }
            ErrorKind::Internal
            | ErrorKind::DeviceMisconfigured
            | ErrorKind::CompilerUnavailable
            | ErrorKind::CompileSandboxUnavailable => {
                tracing::error!(error = %e, code = kind.code(), "device or toolchain misconfigured");
                e.to_string()
            }
            _ => e.to_string(),
        };
        let error =
            ApiError { kind: Kind::App(kind), detail, field: e.field().map(str::to_owned), headers: Vec::new() };
        match e.retry_after() {
            Some(after) => error.with_retry_after(after),
            None => error,
        }
    }
}
