//! The browser app, compiled into the binary (`daemon/web/`, embedded by
//! `daemon/build.rs`): its page at `GET /` for browsers, its files under
//! `/app/{bundle}/`, with caching, compression and a strict
//! Content-Security-Policy.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

use super::error::{ApiError, HttpErrorKind};
use super::request::Req;
use super::routes::RouteSpec;

/// One file of the app.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Asset {
    pub(crate) name: &'static str,
    pub(crate) content_type: &'static str,
    pub(crate) body: &'static [u8],
    /// The same bytes gzipped at build time; `None` where the build host had
    /// no `gzip` or compressing did not help.
    pub(crate) gzip: Option<&'static [u8]>,
    /// A hash of `body`: the file's strong ETag.
    pub(crate) hash: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// Files under a bundle's path never change, so browsers keep them a year
/// without asking again.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The page names the current bundle, so browsers check it on every load
/// (a 304 when nothing changed).
const REVALIDATE: &str = "no-cache";

/// Whether a `GET /` comes from a browser: its `Accept` names `text/html`.
/// API clients (curl's `*/*`, the old clients' `application/json`) keep the
/// JSON answer.
pub(crate) fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| media_range_accepted(item, "text/html"))
}

/// The app's page.
pub(crate) fn index(headers: &HeaderMap) -> Response<Full<Bytes>> {
    let mut response = respond(&INDEX, headers, REVALIDATE);
    let policy = content_security_policy(headers);
    response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, policy);
    response
}

/// `GET /app/{bundle}/{file}`: a file of the current bundle, or 404 (an
/// old bundle's files are gone; its page is reloaded by then).
pub(crate) fn asset(spec: &RouteSpec, req: &Req) -> Result<Response<Full<Bytes>>, ApiError> {
    let path = spec.path_param(req.parts.uri.path()).unwrap_or_default();
    let found = path
        .split_once('/')
        .filter(|(bundle, _)| *bundle == BUNDLE)
        .and_then(|(_, name)| ASSETS.iter().find(|asset| asset.name == name));
    match found {
        Some(asset) => Ok(respond(asset, req.headers(), IMMUTABLE)),
        None => Err(ApiError::http(HttpErrorKind::RouteNotFound, format!("No file {path} in this build of the app"))),
    }
}

/// `asset` as the request asks for it: gzipped when accepted, 304 when the
/// browser already has it.
fn respond(asset: &Asset, headers: &HeaderMap, cache_control: &'static str) -> Response<Full<Bytes>> {
    let gzip = asset.gzip.filter(|_| accepts_gzip(headers));
    // Each representation has its own strong tag; a client holding either is current.
    let etag = match gzip {
        Some(_) => format!("\"{}.gz\"", asset.hash),
        None => format!("\"{}\"", asset.hash),
    };
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").trim_matches('"').trim_end_matches(".gz") == asset.hash);
    let mut response = if fresh {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let mut response = Response::new(Full::new(Bytes::from_static(gzip.unwrap_or(asset.body))));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        if gzip.is_some() {
            response.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        response
    };
    let out = response.headers_mut();
    out.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex hashes are valid header text"));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
    if asset.gzip.is_some() {
        out.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    out.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    out.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    out.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// Everything from this origin, nothing from anywhere else: no inline
/// script or style, no frames, no plugins. The sockets are named with the
/// request's own host because `'self'` covers `ws:` only in newer browsers.
/// Images may also be `blob:` URLs: the page shows a camera's frames from
/// the bytes it fetched itself (with the token in a header, never in a URL).
fn content_security_policy(headers: &HeaderMap) -> HeaderValue {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        // A host with other characters would let a request add directives.
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)));
    let sockets = host.map(|h| format!(" ws://{h} wss://{h}")).unwrap_or_default();
    let policy = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'{sockets}; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy).expect("the policy is checked header text")
}

/// Whether the client takes gzip (`Accept-Encoding: gzip`, not `;q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| media_range_accepted(item, "gzip"))
}

/// Whether one item of an `Accept`-style list (`text/html;q=0.9`) names
/// `wanted` with a non-zero quality.
fn media_range_accepted(item: &str, wanted: &str) -> bool {
    let mut parts = item.split(';').map(str::trim);
    let name = parts.next().unwrap_or_default();
    if !name.eq_ignore_ascii_case(wanted) {
        return false;
    }
    parts.filter_map(|p| p.strip_prefix("q=")).all(|q| q.parse::<f32>().map_or(true, |q| q > 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(name, value)| (name.clone(), HeaderValue::from_static(value))).collect()
    }

    #[test]
    fn browsers_get_the_page_and_api_clients_do_not() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(wants_html(&headers(&[(header::ACCEPT, browser)])));
        assert!(!wants_html(&headers(&[(header::ACCEPT, "*/*")])));
        assert!(!wants_html(&headers(&[(header::ACCEPT, "application/json")])));
        assert!(!wants_html(&headers(&[(header::ACCEPT, "text/html;q=0")])));
        assert!(!wants_html(&HeaderMap::new()));
    }

    #[test]
    fn the_page_names_the_bundle_and_every_file_it_loads_is_served() {
        let page = std::str::from_utf8(INDEX.body).unwrap();
        assert!(!page.contains("%BUNDLE%"));
        let prefix = format!("/app/{BUNDLE}/");
        let mut n_links = 0;
        for piece in page.split(&prefix).skip(1) {
            let name = &piece[..piece.find('"').unwrap()];
            assert!(ASSETS.iter().any(|a| a.name == name), "{name} is linked but not embedded");
            n_links += 1;
        }
        assert!(n_links >= 3, "the page loads its script, style and icon");
    }

    #[test]
    fn revalidation_answers_304_for_either_representation() {
        let asset = ASSETS[0];
        let tag: &'static str = Box::leak(format!("\"{}\"", asset.hash).into_boxed_str());
        let response = respond(&asset, &headers(&[(header::IF_NONE_MATCH, tag)]), IMMUTABLE);
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        let response = respond(&asset, &headers(&[(header::IF_NONE_MATCH, "\"0000\"")]), IMMUTABLE);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CACHE_CONTROL], IMMUTABLE);
    }

    #[test]
    fn the_policy_allows_only_this_origin() {
        let policy = content_security_policy(&headers(&[(header::HOST, "lab.example:8000")]));
        let policy = policy.to_str().unwrap();
        assert!(policy.starts_with("default-src 'self';"));
        assert!(policy.contains("connect-src 'self' ws://lab.example:8000 wss://lab.example:8000;"));
        assert!(!policy.contains("http"), "no other origin: {policy}");
        let sneaky = content_security_policy(&headers(&[(header::HOST, "x; script-src *")]));
        assert!(!sneaky.to_str().unwrap().contains("script-src *"));
    }
}
