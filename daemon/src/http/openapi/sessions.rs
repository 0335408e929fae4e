//! The paths of sessions beyond the seed's: the session records (their
//! upload logs, transcripts and camera pictures) and the admins' audit log.

use serde_json::{Map, Value, json};

use crate::wire::{AuditLogResponse, RecordResponse, RecordsResponse};

use super::{Schemas, ok, param_ref, parameter, responses};

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Paths merged into `paths`.
pub(super) fn paths(s: &Schemas) -> Map<String, Value> {
    let bearer = json!([{ "bearerAuth": [] }]);
    let id = param_ref("recordId");
    let query =
        |name: &str, description: &str| parameter("query", name, false, description, json!({ "type": "string" }));
    object(json!({
        "/records": { "get": {
            "tags": ["records"],
            "operationId": "listRecords",
            "summary": "Session records: yours; an admin's, everyone's",
            "description": "Bearer only. Newest first. `user` other than yourself is for admins only (403 admin_only).",
            "security": bearer,
            "parameters": [query("device", "Only this device's (its id)"), query("user", "Only this holder's (admins)")],
            "responses": responses(ok("The records", s.of::<RecordsResponse>()), &[401, 403, 422, 503]),
        }},
        "/records/{id}": { "get": {
            "tags": ["records"],
            "operationId": "getRecord",
            "summary": "A session record and its upload log",
            "description": "Bearer only; its holder and admins (403 not_your_record for anyone else; 404 record_not_found).",
            "security": bearer,
            "parameters": [id],
            "responses": responses(ok("The record", s.of::<RecordResponse>()), &[401, 403, 404, 503]),
        }},
        "/records/{id}/transcript": { "get": {
            "tags": ["records"],
            "operationId": "getTranscript",
            "summary": "A session's console transcript: one JSON object a line",
            "description": "Bearer only; its holder and admins. Each line is `{at, dir, text}` (`dir` \"out\" from the \
                board, \"in\" to it), plus `base64` with the exact bytes when they were not UTF-8, and `truncated` \
                on the last line of a transcript cut at records.max_transcript_kb.",
            "security": bearer,
            "parameters": [id],
            "responses": responses(
                json!({ "200": {
                    "description": "JSON lines",
                    "content": { "application/x-ndjson": { "schema": { "type": "string" } } },
                }}),
                &[401, 403, 404, 503],
            ),
        }},
        "/records/{id}/snapshot": { "get": {
            "tags": ["records"],
            "operationId": "getRecordSnapshot",
            "summary": "A camera picture kept with a session record (at an upload, at the session's end)",
            "description": "Bearer only; its holder and admins (403 not_your_record for anyone else; 404 \
                record_not_found for a record or picture that is not there). GET /records/{id} lists the pictures.",
            "security": bearer,
            "parameters": [id, parameter(
                "query",
                "name",
                true,
                "The picture's name as GET /records/{id} lists it",
                json!({ "type": "string", "pattern": "^[A-Za-z0-9-]{1,64}$" }),
            )],
            "responses": responses(
                json!({ "200": {
                    "description": "The JPEG, as the camera sent it",
                    "content": { "image/jpeg": { "schema": { "type": "string", "format": "binary" } } },
                }}),
                &[401, 403, 404, 422, 503],
            ),
        }},
        "/admin/audit": { "get": {
            "tags": ["admin"],
            "operationId": "auditLog",
            "summary": "Admins' actions (maintenance, checks, cancelling others' bookings, disabling accounts), newest first",
            "description": "Bearer only, admins only.",
            "security": bearer,
            "parameters": [parameter(
                "query",
                "limit",
                false,
                "At most this many entries (1 to 1000, default 100)",
                json!({ "type": "integer", "minimum": 1, "maximum": 1000 }),
            )],
            "responses": responses(ok("The audit log", s.of::<AuditLogResponse>()), &[401, 403, 422, 503]),
        }},
    }))
}
