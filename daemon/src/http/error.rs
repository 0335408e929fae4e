//! The one place an error becomes an HTTP response: FastAPI's
//! `{"detail": "..."}` shape, which the seed's clients read, plus a stable
//! machine-readable `code`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::app::AppError;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// The request field at fault, for 422s.
    pub field: Option<&'static str>,
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status, code, detail: detail.into(), field: None, headers: Vec::new() }
    }

    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> ApiError {
        self.headers.push((name, value));
        self
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut body = json!({ "detail": self.detail, "code": self.code });
        if let Some(field) = self.field {
            body["field"] = field.into();
        }
        let mut response = super::json_response(self.status, &body);
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> ApiError {
        let code = e.code();
        let detail = e.to_string();
        let status = match &e {
            AppError::Throttled { retry_after } => {
                let seconds = retry_after.as_secs().max(1).to_string();
                return ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, detail).with_header(
                    header::RETRY_AFTER,
                    HeaderValue::from_str(&seconds).expect("digits are valid header text"),
                );
            }
            AppError::InvalidCredentials | AppError::NotAuthenticated | AppError::InvalidToken(_) => {
                return ApiError::new(StatusCode::UNAUTHORIZED, code, detail)
                    .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            AppError::AccountDisabled | AppError::RegistrationRefused(_) | AppError::AdminOnly => StatusCode::FORBIDDEN,
            AppError::EmailTaken | AppError::Booking(_) | AppError::AccountIsAdmin(_) => StatusCode::BAD_REQUEST,
            AppError::InvalidField { field, .. } | AppError::MissingField(field) => {
                return ApiError {
                    field: Some(field),
                    ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
                };
            }
            AppError::UnknownDevice(_) | AppError::UnknownUser(_) => StatusCode::NOT_FOUND,
            AppError::Store(_) => {
                tracing::error!(error = %detail, "store failure while serving a request");
                let detail = "The booking store is unavailable; try again shortly";
                return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, detail);
            }
            AppError::Internal(_) => {
                tracing::error!(error = %detail, "internal error while serving a request");
                let detail = "Internal error; the lab admin can find details in the log";
                return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code, detail);
            }
            AppError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AppError::DeviceBusy(_) | AppError::UploadAborted { .. } => StatusCode::CONFLICT,
            AppError::DeviceOffline { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Firmware(_) | AppError::Upload { .. } | AppError::Compile(_) => match code {
                "firmware_too_large" | "no_compiler" | "compile_failed" | "compile_timeout" => StatusCode::BAD_REQUEST,
                "invalid_firmware" | "invalid_field" => {
                    let field = if code == "invalid_field" { "code" } else { "body" };
                    return ApiError {
                        field: Some(field),
                        ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
                    };
                }
                "device_offline" => StatusCode::SERVICE_UNAVAILABLE,
                // The board or its tool answered wrongly: a bad gateway, not our bug.
                "upload_failed" => StatusCode::BAD_GATEWAY,
                "upload_aborted" => StatusCode::CONFLICT,
                _ => {
                    // The lab's setup (tool, options, toolchain) is at fault: say so, log it.
                    tracing::error!(error = %detail, code, "device or toolchain misconfigured");
                    if code == "internal" {
                        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code, detail);
                    }
                    StatusCode::SERVICE_UNAVAILABLE
                }
            },
        };
        ApiError::new(status, code, detail)
    }
}
