//! The one place an error becomes an HTTP response: FastAPI's
//! `{"detail": "..."}` shape, which the seed's clients read, plus a stable
//! machine-readable `code`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::app::AppError;
use crate::auth::TokenError;
use crate::booking::BookingError;

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

fn unauthorized(code: &'static str, detail: String) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, detail)
        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> ApiError {
        let detail = e.to_string();
        match e {
            AppError::InvalidCredentials => unauthorized("invalid_credentials", detail),
            AppError::NotAuthenticated => unauthorized("not_authenticated", detail),
            AppError::InvalidToken(TokenError::Expired) => unauthorized("token_expired", detail),
            AppError::InvalidToken(TokenError::Invalid) => unauthorized("invalid_token", detail),
            AppError::AccountDisabled => ApiError::new(StatusCode::FORBIDDEN, "account_disabled", detail),
            AppError::EmailTaken => ApiError::new(StatusCode::BAD_REQUEST, "email_taken", detail),
            AppError::RegistrationRefused(_) => ApiError::new(StatusCode::FORBIDDEN, "registration_refused", detail),
            AppError::InvalidField { field, .. } => ApiError {
                field: Some(field),
                ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", detail)
            },
            AppError::MissingField(field) => ApiError {
                field: Some(field),
                ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "missing_field", detail)
            },
            AppError::Booking(rule) => booking_error(&rule),
            AppError::UnknownDevice(_) => ApiError::new(StatusCode::NOT_FOUND, "device_not_found", detail),
            AppError::Store(_) => {
                tracing::error!(error = %detail, "store failure while serving a request");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "The booking store is unavailable; try again shortly")
            }
            AppError::Internal(_) => {
                tracing::error!(error = %detail, "internal error while serving a request");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error; the lab admin can find details in the log")
            }
        }
    }
}

fn booking_error(rule: &BookingError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, rule.code(), rule.to_string())
}
