//! The schemas of sessions beyond the seed's: the warnings before a session
//! ends, identifying a `/slot-booking` socket, and (with their examples for
//! the contract test) the session records and the admins' audit log.

use serde_json::{Map, Value, json};

use super::{ok, param_ref, responses, schema_ref};

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Paths merged into `paths`.
pub(super) fn paths() -> Map<String, Value> {
    let bearer = json!([{ "bearerAuth": [] }]);
    let id = param_ref("recordId");
    let query = |name: &str, description: &str| json!({ "name": name, "in": "query", "required": false, "description": description, "schema": { "type": "string" } });
    object(json!({
        "/records": { "get": {
            "tags": ["records"],
            "operationId": "listRecords",
            "summary": "Session records: yours; an admin's, everyone's",
            "description": "Bearer only. Newest first. `user` other than yourself is for admins only (403 admin_only).",
            "security": bearer,
            "parameters": [query("device", "Only this device's (its id)"), query("user", "Only this holder's (admins)")],
            "responses": responses(ok("The records", "RecordsResponse"), &[401, 403, 422, 503]),
        }},
        "/records/{id}": { "get": {
            "tags": ["records"],
            "operationId": "getRecord",
            "summary": "A session record and its upload log",
            "description": "Bearer only; its holder and admins (403 not_your_record for anyone else; 404 record_not_found).",
            "security": bearer,
            "parameters": [id],
            "responses": responses(ok("The record", "RecordResponse"), &[401, 403, 404, 503]),
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
            "parameters": [id, {
                "name": "name", "in": "query", "required": true,
                "description": "The picture's name as GET /records/{id} lists it",
                "schema": { "type": "string", "pattern": "^[A-Za-z0-9-]{1,64}$" },
            }],
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
            "parameters": [{
                "name": "limit", "in": "query", "required": false,
                "description": "At most this many entries (1 to 1000, default 100)",
                "schema": { "type": "integer", "minimum": 1, "maximum": 1000 },
            }],
            "responses": responses(ok("The audit log", "AuditLogResponse"), &[401, 403, 422, 503]),
        }},
    }))
}

/// Schemas merged into `components.schemas`.
pub(super) fn schemas() -> Map<String, Value> {
    let string = json!({ "type": "string" });
    let ws_type = |name: &str| json!({ "type": "string", "enum": [name] });
    let minutes_left = json!({ "type": "integer", "minimum": 0, "description": "Minutes until the session ends" });
    let end = json!({
        "type": "string", "format": "date-time",
        "description": "When the session ends: RFC 3339 in the lab's time zone",
    });
    let credentials = json!({
        "email": { "type": "string" },
        "password": { "type": "string", "format": "password" },
        "token": { "type": "string", "description": "A token from /auth/login" },
    });
    let integer = json!({ "type": "integer" });
    let nullable_string = json!({ "type": "string", "nullable": true });
    let utc = json!({ "type": "string", "format": "date-time", "description": "UTC with microseconds" });
    let mut identify = credentials.as_object().cloned().unwrap_or_default();
    identify.insert("type".to_owned(), ws_type("identify"));
    let value = json!({
        "SessionEndingMessage": {
            "type": "object",
            "description": "To the holder's console: the session ends soon (lab.session_warnings_minutes)",
            "required": ["type", "minutes_left", "end", "message"],
            "properties": { "type": ws_type("session_ending"), "minutes_left": minutes_left, "end": end, "message": string },
        },
        "WatchersMessage": {
            "type": "object",
            "description": "To the holder's console: who watches it (admins, read-only), when one joins or leaves",
            "required": ["type", "watchers", "message"],
            "properties": {
                "type": ws_type("watchers"),
                "watchers": { "type": "array", "items": { "type": "string" }, "description": "E-mail addresses, one per console" },
                "message": string,
            },
        },
        "BookingSessionEndingMessage": {
            "type": "object",
            "description": "To a /slot-booking socket identified as the holder: their session on device ends soon",
            "required": ["type", "device", "minutes_left", "end", "message"],
            "properties": {
                "type": ws_type("session_ending"), "device": string, "minutes_left": minutes_left, "end": end,
                "message": string,
            },
        },
        "IdentifyMessage": {
            "type": "object",
            "description": "Says whose /slot-booking socket this is, so it gets that account's session_ending",
            "required": ["type"],
            "properties": identify,
        },
        "IdentifiedMessage": {
            "type": "object",
            "required": ["type", "email", "message"],
            "properties": { "type": ws_type("identified"), "email": string, "message": string },
        },
        "SignedOutMessage": {
            "type": "object",
            "description": "To a /slot-booking socket identified as an account whose tokens just stopped working; \
                the socket is anonymous from then on",
            "required": ["type", "email", "code", "message"],
            "properties": {
                "type": ws_type("signed_out"), "email": string,
                "code": { "type": "string", "enum": ["account_disabled", "signed_out", "password_changed"] },
                "message": string,
            },
        },
        "RecordJson": {
            "type": "object",
            "required": ["id", "device", "date", "first_slot", "holder", "started_at", "transcript_bytes", "uploads"],
            "properties": {
                "id": {
                    "type": "string",
                    "description": "<device>_<date>_<first slot>_<random tag>: one booking's session; \
                        a slot booked again after a cancel is a new record with a new tag",
                },
                "device": string, "date": { "type": "string", "format": "date" },
                "first_slot": integer, "holder": string, "started_at": utc,
                "transcript_bytes": integer, "uploads": { "type": "integer", "description": "Uploads logged" },
            },
        },
        "RecordsResponse": {
            "type": "object",
            "required": ["success", "count", "records"],
            "properties": {
                "success": { "type": "boolean" }, "count": integer,
                "records": { "type": "array", "items": schema_ref("RecordJson") },
            },
        },
        "UploadLogJson": {
            "type": "object",
            "required": ["at", "by", "sha256", "bytes", "method", "result", "detail", "duration_ms"],
            "properties": {
                "at": utc, "by": string,
                "sha256": { "type": "string", "description": "Of the file as sent; of the compiled Intel HEX for a sketch" },
                "bytes": integer,
                "method": { "type": "string", "enum": ["firmware", "sketch"] },
                "result": { "type": "string", "enum": ["ok", "failed", "aborted", "refused"] },
                "detail": string, "duration_ms": integer,
            },
        },
        "RecordResponse": {
            "type": "object",
            "required": ["success", "record", "uploads", "snapshots"],
            "properties": {
                "success": { "type": "boolean" }, "record": schema_ref("RecordJson"),
                "uploads": { "type": "array", "items": schema_ref("UploadLogJson") },
                "snapshots": { "type": "array", "items": schema_ref("SnapshotJson") },
            },
        },
        "SnapshotJson": {
            "type": "object",
            "description": "A board camera's picture kept with the record: at each upload (upload-<UTC time>) and \
                at the session's end (session-end)",
            "required": ["name", "bytes", "url"],
            "properties": { "name": string, "bytes": integer, "url": string },
        },
        "AuditLogJson": {
            "type": "object",
            "required": ["at", "actor", "action", "device", "user", "detail", "address"],
            "properties": {
                "at": utc, "actor": string,
                "action": {
                    "type": "string",
                    "description": "maintenance_set, maintenance_cleared, check_requested, booking_cancelled, account_disabled, account_enabled",
                },
                "device": nullable_string, "user": nullable_string, "detail": string,
                "address": {
                    "type": "string", "nullable": true,
                    "description": "The client address the admin acted from, behind server.trusted_proxies; null where rerod did not know it",
                },
            },
        },
        "AuditLogResponse": {
            "type": "object",
            "required": ["success", "count", "audit"],
            "properties": {
                "success": { "type": "boolean" }, "count": integer,
                "audit": { "type": "array", "items": schema_ref("AuditLogJson") },
            },
        },
    });
    object(value)
}

#[cfg(test)]
pub(super) fn check_examples(contract: &mut super::tests::Contract) {
    use super::tests::to_value;
    use crate::wire::*;

    let s = |text: &str| text.to_owned();
    let end = || s("2026-11-24T12:00:00+01:00");
    contract.check(
        "SessionEndingMessage",
        &[to_value(ConsoleServerMessage::SessionEnding { minutes_left: 5, end: end(), message: s("soon") })],
    );
    contract.check(
        "WatchersMessage",
        &[to_value(ConsoleServerMessage::Watchers { watchers: vec![s("admin@example.com")], message: s("watching") })],
    );
    contract.check(
        "BookingSessionEndingMessage",
        &[to_value(BookingServerMessage::SessionEnding {
            device: s("arm-1"),
            minutes_left: 1,
            end: end(),
            message: s("soon"),
        })],
    );
    let token = BodyCredentials { token: Some(s("t")), email: Some(s("a@example.com")), password: Some(s("p")) };
    contract.check(
        "IdentifyMessage",
        &[
            to_value(BookingClientMessage::Identify(token)),
            to_value(BookingClientMessage::Identify(BodyCredentials::default())),
        ],
    );
    let record = RecordJson {
        id: s("arm-1_2026-11-24_9_5c1f0e2a9b7d4c3e8f6a1b2c3d4e5f60"),
        device: s("arm-1"),
        date: s("2026-11-24"),
        first_slot: 9,
        holder: s("a@example.com"),
        started_at: s("2026-11-24T09:00:00.000000Z"),
        transcript_bytes: 10,
        uploads: 1,
    };
    contract.check(
        "RecordsResponse",
        &[to_value(RecordsResponse {
            success: true,
            count: 1,
            records: vec![record.clone()],
            unreachable_hosts: Vec::new(),
        })],
    );
    let upload = UploadLogJson {
        at: s("2026-11-24T09:10:00.000000Z"),
        by: s("a@example.com"),
        sha256: s("ab"),
        bytes: 10,
        method: UploadMethod::Firmware,
        result: UploadResult::Ok,
        detail: s("10 bytes written"),
        duration_ms: 900,
    };
    let snapshot = SnapshotJson {
        name: s("session-end"),
        bytes: 5000,
        url: s("/records/arm-1_2026-11-24_9_5c1f/snapshot?name=session-end"),
    };
    contract.check(
        "RecordResponse",
        &[to_value(RecordResponse { success: true, record, uploads: vec![upload], snapshots: vec![snapshot] })],
    );
    let entry = |full: bool| AuditLogJson {
        at: s("2026-11-24T09:10:00.000000Z"),
        actor: s("admin@example.com"),
        action: s("booking_cancelled"),
        device: full.then(|| s("arm-1")),
        user: full.then(|| s("a@example.com")),
        detail: s("slot 9 on 2026-11-24"),
        address: full.then(|| s("192.0.2.7")),
    };
    contract.check(
        "AuditLogResponse",
        &[to_value(AuditLogResponse { success: true, count: 2, audit: vec![entry(true), entry(false)] })],
    );
    contract.check(
        "IdentifiedMessage",
        &[to_value(BookingServerMessage::Identified { email: s("a@example.com"), message: s("ok") })],
    );
    contract.check(
        "SignedOutMessage",
        &[to_value(BookingServerMessage::SignedOut {
            email: s("a@example.com"),
            code: s("account_disabled"),
            message: s("You are signed out: a lab admin disabled this account"),
        })],
    );
}
