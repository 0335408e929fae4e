//! Session records and the admins' audit log: `GET /records` (yours; an
//! admin's: all, by device and user), `GET /records/{id}` (a record and its
//! upload log), `GET /records/{id}/transcript` (the JSON-lines file) and
//! `GET /admin/audit`. Bearer only; who may read what is the app's to say.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::error::ApiError;
use super::forward::{self, FromPeer};
use super::json_response;
use super::request::{Req, percent_decode};
use super::routes::RouteSpec;
use crate::app::{App, AppError, Principal, Role};
use crate::wire::{self, AuditLogJson, AuditLogResponse, RecordJson, RecordResponse, RecordsResponse, SnapshotJson};

type Reply = Result<Response<Full<Bytes>>, ApiError>;

/// Audit entries answered when no `limit` is given, and at most.
const DEFAULT_AUDIT_LIMIT: usize = 100;
const MAX_AUDIT_LIMIT: usize = 1000;

/// The `{id}` segment, percent-decoded (the app refuses what is not an id).
fn record_id(spec: &RouteSpec, req: &Req) -> String {
    let raw = spec.path_param(req.parts.uri.path()).unwrap_or_default();
    percent_decode(raw).unwrap_or_else(|| raw.to_owned())
}

/// `GET /records[?device=&user=]`. Each host keeps the records of its own
/// boards' sessions: in a lab of several hosts, a listing of every board is
/// this host's records and the other hosts' answers to the same request,
/// merged newest first. (One board's listing is forwarded to its host.)
pub async fn list(app: &Arc<App>, req: &Req, who: &Principal) -> Reply {
    let device = req.query("device")?;
    let user = req.query("user")?;
    if who.role != Role::Admin && user.as_deref().is_some_and(|u| !u.eq_ignore_ascii_case(&who.email)) {
        return Err(AppError::AdminOnly.into());
    }
    let mut records: Vec<RecordJson> =
        app.records(who, device.as_deref(), user.as_deref())?.iter().map(wire::record_json).collect();
    let mut unreachable_hosts = Vec::new();
    if device.is_none() && req.parts.extensions.get::<FromPeer>().is_none() {
        let asked = req.parts.uri.path_and_query().map_or("/records", |p| p.as_str());
        let (answers, missing) = forward::gather::<RecordsResponse>(app, req, asked).await;
        if !answers.is_empty() {
            records.extend(answers.into_iter().flat_map(|answer| answer.records));
            // UTC with a fixed width: the text sorts as the time does.
            records.sort_by(|a, b| b.started_at.cmp(&a.started_at));
        }
        unreachable_hosts = missing;
    }
    let body = RecordsResponse { success: true, count: records.len(), records, unreachable_hosts };
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /records/{id}`.
pub fn get(app: &Arc<App>, spec: &RouteSpec, req: &Req, who: &Principal) -> Reply {
    let (_, detail) = app.record(who, &record_id(spec, req))?;
    let body = RecordResponse {
        success: true,
        record: wire::record_json(&detail.summary),
        uploads: detail.uploads,
        snapshots: detail
            .snapshots
            .iter()
            .map(|(name, bytes)| SnapshotJson {
                url: format!("/records/{}/snapshot?name={name}", detail.summary.id),
                name: name.clone(),
                bytes: *bytes,
            })
            .collect(),
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /records/{id}/transcript`: the file as kept, one JSON object a line.
pub fn transcript(app: &Arc<App>, spec: &RouteSpec, req: &Req, who: &Principal) -> Reply {
    let (id, bytes) = app.record_transcript(who, &record_id(spec, req))?;
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    // The id is letters, digits, `-` and `_` only: safe in a header as it is.
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{id}.jsonl\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// `GET /records/{id}/snapshot?name=`: one camera picture of the record.
pub fn snapshot(app: &Arc<App>, spec: &RouteSpec, req: &Req, who: &Principal) -> Reply {
    let name = req.query("name")?.ok_or(AppError::MissingField("name"))?;
    let (id, jpeg) = app.record_snapshot(who, &record_id(spec, req), &name)?;
    let mut response = Response::new(Full::new(Bytes::from(jpeg)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    // The id and a valid name are letters, digits, `-` and `_` only.
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{id}_{name}.jpg\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// `GET /admin/audit[?limit=]`: admins' actions, newest first.
pub fn audit(app: &Arc<App>, req: &Req, who: &Principal) -> Reply {
    let limit = match req.query("limit")? {
        None => DEFAULT_AUDIT_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_AUDIT_LIMIT).contains(&n) => n,
            _ => {
                let message = format!("limit must be a whole number from 1 to {MAX_AUDIT_LIMIT}, got {text:?}");
                return Err(AppError::invalid("limit", message).into());
            }
        },
    };
    let audit: Vec<AuditLogJson> = app.audit_log(who, limit)?.iter().map(wire::audit_log_json).collect();
    Ok(json_response(StatusCode::OK, &AuditLogResponse { success: true, count: audit.len(), audit }))
}
