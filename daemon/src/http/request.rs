//! A request once its body is read: limited in size and time, checked for
//! content type, with helpers for the query string and credentials.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::Request;
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderMap};
use hyper::http::request::Parts;

use super::error::{ApiError, HttpErrorKind};
use crate::app::{App, AppError, Credentials, Principal};
use crate::wire::{self, BodyCredentials};

/// How long a client has to send its body once the headers are in.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// A request with its body read.
#[derive(Debug)]
pub struct Req {
    pub parts: Parts,
    pub body: Bytes,
    /// The client's address, as the connection shows it.
    pub peer: SocketAddr,
}

impl Req {
    /// Reads the body, refusing more than `limit` bytes with 413.
    pub async fn read(req: Request<Incoming>, limit: usize, peer: SocketAddr) -> Result<Req, ApiError> {
        let (parts, body) = req.into_parts();
        Req::read_parts(parts, body, limit, peer).await
    }

    /// [`Req::read`] for a request already taken apart (its headers looked at first).
    pub async fn read_parts(parts: Parts, body: Incoming, limit: usize, peer: SocketAddr) -> Result<Req, ApiError> {
        if Req::declared_length(&parts.headers).is_some_and(|n| n > limit as u64) {
            return Err(too_large(limit));
        }
        // Most requests (every GET) have no body: no timer, no buffer, and
        // no room in their future for reading one (it is boxed below).
        if body.is_end_stream() {
            return Ok(Req { parts, body: Bytes::new(), peer });
        }
        Box::pin(Req::collect(parts, body, limit, peer)).await
    }

    /// Reads a body of at most `limit` bytes within [`BODY_TIMEOUT`].
    async fn collect(parts: Parts, body: Incoming, limit: usize, peer: SocketAddr) -> Result<Req, ApiError> {
        let collected = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect())
            .await
            .map_err(|_| ApiError::http(HttpErrorKind::BodyTimeout, "The request body took too long to arrive"))?;
        match collected {
            Ok(collected) => Ok(Req { parts, body: collected.to_bytes(), peer }),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(limit)),
            Err(e) => Err(ApiError::http(HttpErrorKind::BadBody, format!("Could not read the request body: {e}"))),
        }
    }

    /// The body's declared length, if the client said.
    pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.parts.headers
    }

    /// The body as a request of type `T`. A non-empty body must say it is JSON.
    pub fn parse<T: wire::Request>(&self) -> Result<T, ApiError> {
        if !self.body.is_empty() && !is_json(self.headers()) {
            return Err(ApiError::http(
                HttpErrorKind::UnsupportedMediaType,
                "Send the body as JSON with Content-Type: application/json",
            ));
        }
        Ok(wire::request(&self.body).map_err(AppError::from)?)
    }

    /// A query parameter, percent-decoded. The first occurrence wins.
    pub fn query(&self, name: &str) -> Result<Option<String>, ApiError> {
        let Some(query) = self.parts.uri.query() else { return Ok(None) };
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if percent_decode(key).as_deref() == Some(name) {
                return percent_decode(value).map(Some).ok_or_else(|| {
                    ApiError::from(AppError::InvalidField {
                        field: "query",
                        message: format!("query parameter {name} is not valid percent-encoded UTF-8"),
                    })
                });
            }
        }
        Ok(None)
    }

    /// The token from `Authorization: Bearer`, if the header is present.
    pub fn bearer(&self) -> Result<Option<String>, ApiError> {
        bearer(self.headers())
    }

    /// Who is calling, by [`Req::credentials`], with the client's address
    /// (for the audit log).
    pub async fn authenticate(&self, app: &App, body: &BodyCredentials) -> Result<Principal, ApiError> {
        let mut who = app.authenticate(self.credentials(body)?).await?;
        who.address = Some(self.peer.ip());
        Ok(who)
    }

    /// Credentials for a route that also takes the seed's in-body ones.
    /// Bearer wins when both are present.
    pub fn credentials(&self, body: &BodyCredentials) -> Result<Credentials, ApiError> {
        if let Some(token) = self.bearer()? {
            return Ok(Credentials::Token(token));
        }
        wire::body_credentials(body).ok_or_else(|| AppError::NotAuthenticated.into())
    }
}

pub fn bearer(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let text = value.to_str().unwrap_or_default();
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(Some(token.trim().to_owned()))
        }
        _ => Err(ApiError::from(AppError::NotAuthenticated)),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).and_then(|v| v.split(';').next()).is_some_and(
        |mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json")
                || (mime.len() > 5
                    && mime[..mime.len() - 5].contains('/')
                    && mime.to_ascii_lowercase().ends_with("+json"))
        },
    )
}

pub(super) fn too_large(limit: usize) -> ApiError {
    ApiError::http(HttpErrorKind::BodyTooLarge, format!("The request body is larger than the limit of {limit} bytes"))
}

/// Decodes `%XX` escapes and `+` (as a space); `None` if the result is not UTF-8.
pub(super) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("arm-1").as_deref(), Some("arm-1"));
        assert_eq!(percent_decode("a%2Db+c").as_deref(), Some("a-b c"));
        assert_eq!(percent_decode("100%").as_deref(), Some("100%"));
        assert_eq!(percent_decode("%zz").as_deref(), Some("%zz"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn json_content_types() {
        let mut headers = HeaderMap::new();
        for (value, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/vnd.api+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
        ] {
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            assert_eq!(is_json(&headers), ok, "{value}");
        }
    }

    #[test]
    fn bearer_header_forms() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers).unwrap(), None);
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers).unwrap().as_deref(), Some("abc"));
        headers.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&headers).unwrap().as_deref(), Some("abc"));
        for bad in ["Basic YWJj", "Bearer", "Bearer  ", "abc"] {
            headers.insert(header::AUTHORIZATION, bad.parse().unwrap());
            assert!(bearer(&headers).is_err(), "{bad}");
        }
    }
}
