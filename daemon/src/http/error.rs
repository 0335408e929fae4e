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
            AppError::InvalidCredentials | AppError::NotAuthenticated | AppError::InvalidToken(_) => {
                return ApiError::new(StatusCode::UNAUTHORIZED, code, detail)
                    .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            AppError::AccountDisabled | AppError::RegistrationRefused(_) => StatusCode::FORBIDDEN,
            AppError::EmailTaken | AppError::Booking(_) => StatusCode::BAD_REQUEST,
            AppError::InvalidField { field, .. } | AppError::MissingField(field) => {
                return ApiError { field: Some(field), ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail) };
            }
            AppError::UnknownDevice(_) => StatusCode::NOT_FOUND,
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
        };
        ApiError::new(status, code, detail)
    }
}
