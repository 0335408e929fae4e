//! The OpenAPI 3.0.3 description of rerod's HTTP API, served at
//! `GET /openapi.json`, and a helper that lists its (path, method) pairs so a
//! test can hold the document and the router's route table to each other.
//!
//! Field names here are the wire contract of `http/handlers.rs` and `wire.rs`
//! (the seed backend's names plus rerod's additions); when a handler's JSON
//! changes, this document changes with it. WebSocket endpoints cannot be
//! described by OpenAPI 3.0, so they appear as `GET` operations answering 101,
//! with their message shapes under `components.schemas` and listed in an
//! `x-websocket-messages` extension on the operation.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// The HTTP methods an OpenAPI path item may hold operations for.
const OPERATION_KEYS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// The whole document. Built on each call: it is requested rarely and the
/// version comes from the build, so there is nothing worth caching.
pub fn document() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "rerod",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Remote-lab booking daemon: book an hour on a robot board, then upload firmware to it \
                and use its serial console. Errors are `{detail, code}` (plus `field` on 422); `code` is stable. \
                Routes that take credentials accept `Authorization: Bearer <token>` or, for the old clients, \
                `email`+`password` or `token` in the JSON body; the header wins when both are present.",
        },
        "servers": [{ "url": "/" }],
        "tags": [
            { "name": "auth", "description": "Accounts and login tokens" },
            { "name": "slots", "description": "The booking calendar of each device" },
            { "name": "devices", "description": "Boards: firmware upload and serial console" },
            { "name": "admin", "description": "Lab admins (auth.admins in the config) manage accounts" },
            { "name": "service", "description": "Health, statistics, metrics and this document" },
        ],
        "paths": paths(),
        "components": components(),
    })
}

/// Every (path, METHOD) the document describes, methods upper-cased as the
/// router spells them, e.g. `("/slots/user", "POST")`.
pub fn paths_and_methods(doc: &Value) -> BTreeSet<(String, String)> {
    let mut pairs = BTreeSet::new();
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else { return pairs };
    for (path, item) in paths {
        for method in OPERATION_KEYS {
            if item.get(method).is_some() {
                pairs.insert((path.clone(), method.to_ascii_uppercase()));
            }
        }
    }
    pairs
}

fn paths() -> Value {
    let credentials_security = json!([{ "bearerAuth": [] }, {}]);
    let my_bookings = |method: &str| {
        json!({
            "tags": ["slots"],
            "operationId": format!("myBookings{method}"),
            "summary": "Your upcoming and current bookings (all devices); past ones too with history=true",
            "security": credentials_security,
            "parameters": [param_ref("history")],
            "requestBody": optional_body("CredentialsInBody", "Seed-style credentials, and `history` as a body field"),
            "responses": responses(
                ok("Your bookings, soonest first", "MyBookingsResponse"),
                &[401, 403, 408, 413, 415, 422, 503],
            ),
        })
    };
    let slots_user = |method: &str| {
        json!({
            "tags": ["slots"],
            "operationId": format!("currentOrNextBooking{method}"),
            "summary": "The booking in progress, or else your next one",
            "security": credentials_security,
            "requestBody": optional_body("CredentialsInBody", "Seed-style credentials"),
            "responses": responses(
                ok("The current-or-next booking; has_booking false when there is none", "UserSlotResponse"),
                &[401, 403, 408, 413, 415, 422, 503],
            ),
        })
    };
    json!({
        "/auth/register": { "post": {
            "tags": ["auth"],
            "operationId": "register",
            "summary": "Create an account",
            "requestBody": body("EmailPassword"),
            "responses": responses(
                json!({ "201": json_response("Account created", "RegisterResponse") }),
                &[400, 403, 408, 413, 415, 422, 503],
            ),
        }},
        "/auth/login": { "post": {
            "tags": ["auth"],
            "operationId": "login",
            "summary": "Exchange e-mail and password for a bearer token",
            "requestBody": body("EmailPassword"),
            "responses": responses(
                ok("A token to send as Authorization: Bearer", "LoginResponse"),
                &[401, 403, 408, 413, 415, 422, 503],
            ),
        }},
        "/": { "get": {
            "tags": ["service"],
            "operationId": "root",
            "summary": "Greeting, with today's booked slot ids on the default device",
            "responses": responses(ok("The service is up", "RootResponse"), &[503]),
        }},
        "/health": { "get": {
            "tags": ["service"],
            "operationId": "health",
            "summary": "Liveness and store health",
            "responses": {
                "200": json_response("Healthy", "HealthResponse"),
                "503": json_response("The store cannot be read; status is \"unhealthy\"", "HealthResponse"),
            },
        }},
        "/stats": { "get": {
            "tags": ["service"],
            "operationId": "stats",
            "summary": "Today's numbers per device, and totals",
            "responses": responses(ok("Statistics", "StatsResponse"), &[503]),
        }},
        "/slots": { "get": {
            "tags": ["slots"],
            "operationId": "listSlots",
            "summary": "One device's slots on one date",
            "description": "Public. A valid bearer token marks your bookings `mine`; an invalid one is ignored.",
            "security": [{ "bearerAuth": [] }, {}],
            "parameters": [param_ref("date"), param_ref("device")],
            "responses": responses(ok("The day's slots", "SlotsResponse"), &[404, 422, 503]),
        }},
        "/book-slot": { "post": {
            "tags": ["slots"],
            "operationId": "bookSlot",
            "summary": "Book a slot",
            "security": credentials_security,
            "requestBody": body("SlotRequest"),
            "responses": responses(ok("Booked", "BookResponse"), &[400, 401, 403, 404, 408, 413, 415, 422, 503]),
        }},
        "/cancel-slot": { "post": {
            "tags": ["slots"],
            "operationId": "cancelSlot",
            "summary": "Cancel your booking (admins: anyone's)",
            "security": credentials_security,
            "requestBody": body("SlotRequest"),
            "responses": responses(ok("Cancelled", "CancelResponse"), &[400, 401, 403, 404, 408, 413, 415, 422, 503]),
        }},
        "/my-bookings": { "get": my_bookings("Get"), "post": my_bookings("Post") },
        "/slots/user": { "get": slots_user("Get"), "post": slots_user("Post") },
        "/devices": { "get": {
            "tags": ["devices"],
            "operationId": "listDevices",
            "summary": "The lab's boards and whether each is online and in use",
            "responses": responses(ok("The devices, in config order", "DevicesResponse"), &[503]),
        }},
        "/devices/compile": { "post": {
            "tags": ["devices"],
            "operationId": "compile",
            "summary": "Compile a sketch without uploading it",
            "security": [{ "bearerAuth": [] }],
            "requestBody": body("CompileRequest"),
            "responses": responses(
                ok("Compiled (or not: success false with the compiler's output)", "CompileResponse"),
                &[400, 401, 408, 413, 415, 422, 503],
            ),
        }},
        "/devices/upload/{device}": { "post": {
            "tags": ["devices"],
            "operationId": "upload",
            "summary": "Upload firmware to a board during your slot",
            "description": "Bearer only. Send JSON `{code}` to compile then upload, or the firmware itself as \
                `application/octet-stream` (Intel HEX or raw binary). Only the holder of the slot in progress \
                on that device (or an admin) may upload. Progress is also pushed to the device's console sockets.",
            "security": [{ "bearerAuth": [] }],
            "parameters": [param_ref("devicePath")],
            "requestBody": {
                "required": true,
                "content": {
                    "application/json": { "schema": schema_ref("CompileRequest") },
                    "application/octet-stream": { "schema": { "type": "string", "format": "binary" } },
                },
            },
            "responses": responses(
                ok("Uploaded", "UploadResponse"),
                &[400, 401, 403, 404, 408, 409, 413, 415, 422, 502, 503],
            ),
        }},
        "/devices/read/{device}": { "get": websocket_operation(
            "serialConsole",
            "devices",
            "A board's serial console (WebSocket)",
            "The first client message authenticates (`{token}` or `{email, password}`); only the session holder \
             and admins get in. Then `connection_established`, then `serial_output` messages carrying only new \
             output (the first carries the scrollback). Send `{\"type\":\"input\",\"data\":...}` to write to the \
             board. When the slot ends: `session_ended` and close 1000.",
            &[param_ref("devicePath")],
            &["ConsoleAuthMessage", "ConsoleInputMessage"],
            &["ConnectionEstablishedMessage", "SerialOutputMessage", "UploadProgressMessage", "SessionEndedMessage", "WsErrorMessage"],
        )},
        "/slot-booking": { "get": websocket_operation(
            "slotBookingSocket",
            "slots",
            "Live slot updates and booking (WebSocket)",
            "On connect the server sends `slots_update`; `book_slot`, `cancel_slot` and `get_slots` are answered \
             with `booking_response`, `cancellation_response` and `slots_update`. Every committed change is \
             broadcast to every client as `slots_update`.",
            &[],
            &["BookSlotMessage", "CancelSlotMessage", "GetSlotsMessage"],
            &["SlotsUpdateMessage", "BookingResponseMessage", "CancellationResponseMessage", "WsErrorMessage"],
        )},
        "/admin/users": { "get": {
            "tags": ["admin"],
            "operationId": "listUsers",
            "summary": "Every account, with its role and whether it is disabled",
            "description": "Bearer only, admins only.",
            "security": [{ "bearerAuth": [] }],
            "responses": responses(ok("The accounts, by e-mail", "UsersResponse"), &[401, 403]),
        }},
        "/admin/users/disable": { "post": admin_account_operation(
            "disableUser",
            "Disable an account",
            "Bearer only, admins only. The account can no longer log in and its tokens are refused, also after \
             it is enabled again. Its bookings that have not ended are cancelled (and broadcast); a session in \
             progress ends at once. Ended bookings stay as history. Admins listed in the config cannot be disabled.",
        )},
        "/admin/users/enable": { "post": admin_account_operation(
            "enableUser",
            "Enable a disabled account",
            "Bearer only, admins only. The account logs in afresh; tokens issued before it was disabled stay refused.",
        )},
        "/metrics": { "get": {
            "tags": ["service"],
            "operationId": "metrics",
            "summary": "Prometheus metrics",
            "responses": {
                "200": {
                    "description": "Text exposition format 0.0.4",
                    "content": { "text/plain": { "schema": { "type": "string" } } },
                },
            },
        }},
        "/openapi.json": { "get": {
            "tags": ["service"],
            "operationId": "openapi",
            "summary": "This document",
            "responses": {
                "200": {
                    "description": "OpenAPI 3.0.3",
                    "content": { "application/json": { "schema": { "type": "object" } } },
                },
            },
        }},
    })
}

/// `POST /admin/users/{disable,enable}`: `{email}` in, the account out.
fn admin_account_operation(operation_id: &str, summary: &str, description: &str) -> Value {
    json!({
        "tags": ["admin"],
        "operationId": operation_id,
        "summary": summary,
        "description": description,
        "security": [{ "bearerAuth": [] }],
        "requestBody": body("AccountRequest"),
        "responses": responses(ok("The account as it is now", "AccountChangeResponse"), &[400, 401, 403, 404, 413, 415, 422]),
    })
}

/// A WebSocket endpoint as a `GET` that answers 101.
fn websocket_operation(
    operation_id: &str,
    tag: &str,
    summary: &str,
    description: &str,
    parameters: &[Value],
    client_messages: &[&str],
    server_messages: &[&str],
) -> Value {
    let mut parameters = parameters.to_vec();
    parameters.push(json!({
        "name": "Upgrade", "in": "header", "required": true,
        "schema": { "type": "string", "enum": ["websocket"] },
    }));
    let refs = |names: &[&str]| names.iter().map(|n| schema_ref(n)).collect::<Vec<_>>();
    json!({
        "tags": [tag],
        "operationId": operation_id,
        "summary": summary,
        "description": description,
        "parameters": parameters,
        "responses": {
            "101": { "description": "Switching Protocols: the connection is now a WebSocket carrying JSON text frames" },
            "400": error_ref(400),
            "404": error_ref(404),
            "426": { "description": "Not a WebSocket upgrade request", "content": error_content() },
            "503": error_ref(503),
        },
        "x-websocket-messages": { "client": refs(client_messages), "server": refs(server_messages) },
    })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn param_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/parameters/{name}") })
}

fn error_ref(status: u16) -> Value {
    json!({ "$ref": format!("#/components/responses/Error{status}") })
}

fn error_content() -> Value {
    json!({ "application/json": { "schema": schema_ref("Error") } })
}

fn json_response(description: &str, schema: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema_ref(schema) } } })
}

fn ok(description: &str, schema: &str) -> Value {
    json!({ "200": json_response(description, schema) })
}

fn body(schema: &str) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema_ref(schema) } } })
}

fn optional_body(schema: &str, description: &str) -> Value {
    json!({
        "required": false,
        "description": description,
        "content": { "application/json": { "schema": schema_ref(schema) } },
    })
}

/// `success` responses plus references to the shared error responses.
fn responses(success: Value, errors: &[u16]) -> Value {
    let mut all = match success {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    for status in errors {
        all.insert(status.to_string(), error_ref(*status));
    }
    Value::Object(all)
}

fn components() -> Value {
    let error_response = |description: &str| json!({ "description": description, "content": error_content() });
    let string = json!({ "type": "string" });
    let nullable_string = json!({ "type": "string", "nullable": true });
    let integer = json!({ "type": "integer" });
    let boolean = json!({ "type": "boolean" });
    let utc = json!({
        "type": "string", "format": "date-time",
        "description": "UTC with microseconds, e.g. 2026-11-24T10:30:00.123456Z",
    });
    let lab_time = json!({
        "type": "string", "format": "date-time",
        "description": "RFC 3339 in the lab's time zone, e.g. 2026-11-24T09:00:00+01:00",
    });
    let hh_mm = json!({ "type": "string", "pattern": "^[0-9]{2}:[0-9]{2}$", "example": "09:00" });
    let date = json!({ "type": "string", "format": "date", "example": "2026-12-01" });
    let device_ref = json!({
        "oneOf": [{ "type": "integer", "minimum": 0 }, { "type": "string" }],
        "description": "Device number (0..n in config order) or id; default the first device",
    });
    let slot_id = json!({ "type": "integer", "description": "Index of the slot in the day (0..23 for hourly slots)" });
    let success = json!({ "type": "boolean", "enum": [true] });
    let legacy_credentials = json!({
        "email": { "type": "string", "description": "Seed compatibility: with password, instead of a bearer token" },
        "password": { "type": "string", "format": "password" },
        "token": { "type": "string", "description": "Seed compatibility: a token in the body instead of the header" },
    });
    let with_credentials = |mut properties: Value| {
        if let (Some(p), Some(c)) = (properties.as_object_mut(), legacy_credentials.as_object()) {
            p.extend(c.clone());
        }
        properties
    };
    let ws_type = |name: &str| json!({ "type": "string", "enum": [name] });

    json!({
        "securitySchemes": {
            "bearerAuth": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
        },
        "parameters": {
            "date": {
                "name": "date", "in": "query", "required": false,
                "description": "YYYY-MM-DD; default today in the lab's time zone",
                "schema": date,
            },
            "device": {
                "name": "device", "in": "query", "required": false,
                "description": "Device number or id; default the first device",
                "schema": string,
            },
            "devicePath": {
                "name": "device", "in": "path", "required": true,
                "description": "Device number or id",
                "schema": string,
            },
            "history": {
                "name": "history", "in": "query", "required": false,
                "description": "Also list past bookings",
                "schema": { "type": "string", "enum": ["true", "false", "1", "0", "yes", "no"] },
            },
        },
        "responses": {
            "Error400": error_response("A booking rule was broken (code says which), or the request was malformed"),
            "Error401": {
                "description": "No or invalid credentials",
                "headers": { "WWW-Authenticate": { "schema": { "type": "string", "enum": ["Bearer"] } } },
                "content": error_content(),
            },
            "Error403": error_response("Authenticated but not allowed (registration refused, account disabled, not your slot)"),
            "Error404": error_response("Unknown device or route"),
            "Error408": error_response("The request body did not arrive in time"),
            "Error413": error_response("The request body is larger than the limit"),
            "Error415": error_response("The body is not JSON (Content-Type: application/json)"),
            "Error422": error_response("A field is missing or has the wrong type; field names it"),
            "Error409": error_response("The device is busy with another upload, or the upload was aborted because the session ended"),
            "Error502": error_response("The board (or its flashing tool) did not answer as expected: no sync, verify mismatch, tool failure"),
            "Error503": error_response("The store is unavailable, too many connections are open, or the device is offline"),
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["detail", "code"],
                "properties": {
                    "detail": { "type": "string", "description": "What went wrong, for people" },
                    "code": { "type": "string", "description": "Stable, for programs, e.g. slot_unavailable" },
                    "field": { "type": "string", "description": "The request field at fault (422 only)" },
                },
            },
            "EmailPassword": {
                "type": "object",
                "required": ["email", "password"],
                "properties": {
                    "email": { "type": "string", "format": "email" },
                    "password": { "type": "string", "format": "password", "description": "At most 72 bytes" },
                },
            },
            "CredentialsInBody": {
                "type": "object",
                "properties": with_credentials(json!({
                    "history": { "type": "boolean", "description": "/my-bookings only; the query parameter wins" },
                })),
            },
            "RegisterResponse": {
                "type": "object",
                "required": ["success", "message", "user"],
                "properties": {
                    "success": success, "message": string,
                    "user": {
                        "type": "object",
                        "required": ["email", "created_at"],
                        "properties": { "email": string, "created_at": utc },
                    },
                },
            },
            "LoginResponse": {
                "type": "object",
                "required": ["success", "message", "token", "token_type", "expires_in", "user"],
                "properties": {
                    "success": success, "message": string, "token": string,
                    "token_type": { "type": "string", "enum": ["bearer"] },
                    "expires_in": { "type": "integer", "description": "Seconds until the token expires" },
                    "user": {
                        "type": "object",
                        "required": ["email", "role"],
                        "properties": { "email": string, "role": { "type": "string", "enum": ["user", "admin"] } },
                    },
                },
            },
            "RootResponse": {
                "type": "object",
                "required": ["message", "websocket_endpoint", "active_connections", "booked_slots"],
                "properties": {
                    "message": string,
                    "websocket_endpoint": { "type": "string", "enum": ["/slot-booking"] },
                    "active_connections": integer,
                    "booked_slots": { "type": "array", "items": integer },
                },
            },
            "HealthResponse": {
                "type": "object",
                "required": ["status", "timestamp", "active_connections", "uptime_seconds", "version", "config", "devices", "database"],
                "properties": {
                    "status": { "type": "string", "enum": ["healthy", "unhealthy"] },
                    "timestamp": utc,
                    "active_connections": integer,
                    "total_slots": integer,
                    "booked_slots_count": integer,
                    "available_slots_count": integer,
                    "database": {
                        "type": "object",
                        "properties": {
                            "total_slots": integer, "booked_slots": integer, "available_slots": integer,
                            "database_path": string,
                            "error": { "type": "string", "description": "Only when unhealthy" },
                        },
                    },
                    "uptime_seconds": integer,
                    "version": string,
                    "config": {
                        "type": "object",
                        "properties": { "generation": integer, "last_reload_error": nullable_string },
                    },
                    "devices": {
                        "type": "object",
                        "properties": { "configured": integer, "calendars": integer, "online": integer, "offline": integer },
                    },
                },
            },
            "StatsResponse": {
                "type": "object",
                "required": ["database", "websocket", "slots", "devices", "users", "bookings"],
                "properties": {
                    "database": {
                        "type": "object",
                        "properties": {
                            "total_slots": integer, "booked_slots": integer, "available_slots": integer,
                            "database_path": string,
                        },
                    },
                    "websocket": { "type": "object", "properties": { "active_connections": integer } },
                    "slots": {
                        "type": "object",
                        "properties": { "total": integer, "booked": integer, "available": integer },
                    },
                    "devices": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "number": integer, "id": string, "name": string, "date": date,
                                "total_slots": integer, "booked_slots": integer, "available_slots": integer,
                            },
                        },
                    },
                    "users": { "type": "object", "properties": { "total": integer } },
                    "bookings": { "type": "object", "properties": { "total": integer } },
                },
            },
            "Slot": {
                "type": "object",
                "required": ["id", "start_time", "end_time", "is_booked", "booked_by", "booked_at", "start", "end", "status"],
                "properties": {
                    "id": slot_id,
                    "start_time": hh_mm, "end_time": hh_mm,
                    "is_booked": boolean,
                    "booked_by": {
                        "type": "string", "nullable": true,
                        "description": "The booker's e-mail; null when free or hidden by lab.privacy",
                    },
                    "booked_at": { "type": "string", "format": "date-time", "nullable": true },
                    "start": lab_time, "end": lab_time,
                    "status": { "type": "string", "enum": ["available", "booked", "mine", "past", "blocked"] },
                },
            },
            "SlotsResponse": {
                "type": "object",
                "required": ["slots", "available_slots", "booked_slots", "date", "device"],
                "properties": {
                    "slots": { "type": "array", "items": schema_ref("Slot") },
                    "available_slots": { "type": "array", "items": integer, "description": "Bookable now" },
                    "booked_slots": { "type": "array", "items": integer },
                    "date": date,
                    "device": { "type": "string", "description": "Device id" },
                },
            },
            "SlotRequest": {
                "type": "object",
                "required": ["slot_id"],
                "properties": with_credentials(json!({ "slot_id": slot_id, "date": date, "device": device_ref })),
            },
            "BookResponse": {
                "type": "object",
                "required": ["success", "message", "slot_id", "date", "device", "start", "end"],
                "properties": {
                    "success": success, "message": string, "slot_id": integer, "date": date,
                    "device": string, "start": lab_time, "end": lab_time,
                },
            },
            "CancelResponse": {
                "type": "object",
                "required": ["success", "message", "slot_id", "date", "device"],
                "properties": { "success": success, "message": string, "slot_id": integer, "date": date, "device": string },
            },
            "Booking": {
                "type": "object",
                "required": ["id", "date", "device", "start_time", "end_time", "start", "end", "booked_at"],
                "properties": {
                    "id": slot_id, "date": date, "device": string,
                    "start_time": hh_mm, "end_time": hh_mm,
                    "start": lab_time, "end": lab_time, "booked_at": utc,
                },
            },
            "MyBookingsResponse": {
                "type": "object",
                "required": ["success", "bookings", "total_bookings"],
                "properties": {
                    "success": success,
                    "bookings": { "type": "array", "items": schema_ref("Booking") },
                    "total_bookings": integer,
                },
            },
            "UserSlotResponse": {
                "type": "object",
                "required": ["success", "has_booking", "slot", "date", "device", "start", "end", "is_current"],
                "properties": {
                    "success": success,
                    "has_booking": boolean,
                    "slot": { "type": "integer", "nullable": true, "description": "Slot id" },
                    "date": { "type": "string", "format": "date", "nullable": true },
                    "device": nullable_string,
                    "start_time": { "type": "string", "description": "HH:MM; only when has_booking" },
                    "end_time": { "type": "string", "description": "HH:MM; only when has_booking" },
                    "start": { "type": "string", "format": "date-time", "nullable": true },
                    "end": { "type": "string", "format": "date-time", "nullable": true },
                    "is_current": boolean,
                },
            },
            "Device": {
                "type": "object",
                "required": ["number", "id", "name", "model", "plugin", "port", "online", "baud", "in_use"],
                "properties": {
                    "number": integer, "id": string, "name": string, "model": string, "plugin": string,
                    "port": nullable_string, "online": boolean, "baud": integer, "in_use": boolean,
                },
            },
            "DevicesResponse": {
                "type": "object",
                "required": ["success", "devices", "count", "supported_models"],
                "properties": {
                    "success": success,
                    "devices": { "type": "array", "items": schema_ref("Device") },
                    "count": integer,
                    "supported_models": { "type": "array", "items": string },
                },
            },
            "Account": {
                "type": "object",
                "required": ["email", "role", "created_at", "disabled"],
                "properties": {
                    "email": string,
                    "role": { "type": "string", "enum": ["user", "admin"] },
                    "created_at": utc,
                    "disabled": boolean,
                },
            },
            "UsersResponse": {
                "type": "object",
                "required": ["success", "count", "users"],
                "properties": {
                    "success": success,
                    "count": integer,
                    "users": { "type": "array", "items": schema_ref("Account") },
                },
            },
            "AccountRequest": {
                "type": "object",
                "required": ["email"],
                "properties": { "email": string },
            },
            "AccountChangeResponse": {
                "type": "object",
                "required": ["success", "message", "user", "cancelled_bookings"],
                "properties": {
                    "success": success,
                    "message": string,
                    "user": {
                        "type": "object",
                        "required": ["email", "created_at", "disabled"],
                        "properties": { "email": string, "created_at": utc, "disabled": boolean },
                    },
                    "cancelled_bookings": { "type": "array", "items": schema_ref("Booking") },
                },
            },
            "CompileRequest": {
                "type": "object",
                "required": ["code"],
                "properties": { "code": { "type": "string", "description": "Sketch source code" } },
            },
            "CompileResponse": {
                "type": "object",
                "required": ["success", "message", "compile_output"],
                "properties": { "success": boolean, "message": string, "compile_output": string },
            },
            "UploadResponse": {
                "type": "object",
                "required": ["success", "message", "device", "compile_output", "upload_output", "bytes_written", "duration_ms"],
                "properties": {
                    "success": boolean, "message": string, "device": string,
                    "compile_output": nullable_string, "upload_output": string,
                    "bytes_written": integer, "duration_ms": integer,
                },
            },
            "SlotsUpdateMessage": {
                "type": "object",
                "required": ["type", "data", "timestamp"],
                "properties": { "type": ws_type("slots_update"), "data": schema_ref("SlotsResponse"), "timestamp": utc },
            },
            "BookSlotMessage": {
                "type": "object",
                "required": ["type", "slot_id"],
                "properties": with_credentials(json!({
                    "type": ws_type("book_slot"), "slot_id": slot_id, "date": date, "device": device_ref,
                })),
            },
            "CancelSlotMessage": {
                "type": "object",
                "required": ["type", "slot_id"],
                "properties": with_credentials(json!({
                    "type": ws_type("cancel_slot"), "slot_id": slot_id, "date": date, "device": device_ref,
                })),
            },
            "GetSlotsMessage": {
                "type": "object",
                "required": ["type"],
                "properties": { "type": ws_type("get_slots"), "date": date, "device": device_ref },
            },
            "BookingResponseMessage": {
                "type": "object",
                "required": ["type", "success", "message", "slot_id"],
                "properties": { "type": ws_type("booking_response"), "success": boolean, "message": string, "slot_id": integer },
            },
            "CancellationResponseMessage": {
                "type": "object",
                "required": ["type", "success", "message", "slot_id"],
                "properties": {
                    "type": ws_type("cancellation_response"), "success": boolean, "message": string, "slot_id": integer,
                },
            },
            "WsErrorMessage": {
                "type": "object",
                "required": ["type", "message"],
                "properties": { "type": ws_type("error"), "message": string },
            },
            "ConsoleAuthMessage": {
                "type": "object",
                "description": "The first message on a console socket: a token, or e-mail and password",
                "properties": legacy_credentials,
            },
            "ConsoleInputMessage": {
                "type": "object",
                "required": ["type", "data"],
                "properties": { "type": ws_type("input"), "data": string },
            },
            "ConnectionEstablishedMessage": {
                "type": "object",
                "required": ["type", "device_number", "device_info", "message"],
                "properties": {
                    "type": ws_type("connection_established"),
                    "device_number": integer,
                    "device_info": {
                        "type": "object",
                        "properties": { "model": string, "port": nullable_string, "description": string },
                    },
                    "message": string,
                },
            },
            "SerialOutputMessage": {
                "type": "object",
                "required": ["type", "device_number", "output", "timestamp"],
                "properties": {
                    "type": ws_type("serial_output"),
                    "device_number": integer,
                    "output": { "type": "string", "description": "Only the bytes new since the previous message" },
                    "output_base64": {
                        "type": "string", "format": "byte",
                        "description": "Present only when the bytes were not all valid UTF-8 (output then shows U+FFFD): the exact bytes",
                    },
                    "timestamp": utc,
                },
            },
            "UploadProgressMessage": {
                "type": "object",
                "required": ["type", "phase", "percent"],
                "properties": {
                    "type": ws_type("upload_progress"),
                    "phase": string,
                    "percent": { "type": "integer", "minimum": 0, "maximum": 100 },
                },
            },
            "SessionEndedMessage": {
                "type": "object",
                "required": ["type", "message"],
                "properties": { "type": ws_type("session_ended"), "message": string },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in `value`, recursively.
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("$ref", Value::String(target)) => out.push(target),
                        _ => refs(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_document_is_well_formed() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.0.3");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        let paths = doc["paths"].as_object().unwrap();
        for (path, item) in paths {
            assert!(path.starts_with('/'), "{path}");
            let operations: Vec<&Value> = OPERATION_KEYS.iter().filter_map(|m| item.get(*m)).collect();
            assert!(!operations.is_empty(), "{path} has no operation");
            for operation in operations {
                let responses = operation["responses"].as_object().unwrap();
                assert!(!responses.is_empty(), "{path} has an operation without responses");
                assert!(operation["operationId"].is_string(), "{path}");
            }
            // A templated path declares each of its parameters.
            for segment in path.split('/').filter(|s| s.starts_with('{')) {
                let name = segment.trim_matches(|c| c == '{' || c == '}');
                let declared = OPERATION_KEYS.iter().filter_map(|m| item.get(*m)).all(|op| {
                    op["parameters"].as_array().is_some_and(|params| {
                        params.iter().any(|p| {
                            p["$ref"]
                                .as_str()
                                .and_then(|r| r.rsplit('/').next())
                                .and_then(|n| doc["components"]["parameters"][n]["name"].as_str())
                                == Some(name)
                        })
                    })
                });
                assert!(declared, "{path} does not declare {name}");
            }
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let mut targets = Vec::new();
        refs(&doc, &mut targets);
        assert!(targets.len() > 50);
        for target in targets {
            let pointer = target.strip_prefix('#').unwrap();
            assert!(doc.pointer(pointer).is_some(), "dangling $ref {target}");
        }
    }

    #[test]
    fn it_lists_the_served_routes() {
        let pairs = paths_and_methods(&document());
        let expected = [
            ("/", "GET"),
            ("/auth/login", "POST"),
            ("/auth/register", "POST"),
            ("/book-slot", "POST"),
            ("/cancel-slot", "POST"),
            ("/devices", "GET"),
            ("/admin/users", "GET"),
            ("/admin/users/disable", "POST"),
            ("/admin/users/enable", "POST"),
            ("/devices/compile", "POST"),
            ("/devices/read/{device}", "GET"),
            ("/devices/upload/{device}", "POST"),
            ("/health", "GET"),
            ("/metrics", "GET"),
            ("/my-bookings", "GET"),
            ("/my-bookings", "POST"),
            ("/openapi.json", "GET"),
            ("/slot-booking", "GET"),
            ("/slots", "GET"),
            ("/slots/user", "GET"),
            ("/slots/user", "POST"),
            ("/stats", "GET"),
        ];
        let expected: BTreeSet<(String, String)> =
            expected.iter().map(|(p, m)| (p.to_string(), m.to_string())).collect();
        assert_eq!(pairs, expected);
        assert!(paths_and_methods(&json!({})).is_empty());
    }

    #[test]
    fn the_document_lists_exactly_the_routes_the_router_serves() {
        use crate::http::{Auth, ROUTES, Route};
        let doc = document();
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .flat_map(|spec| spec.methods.iter().map(|m| (spec.pattern.to_owned(), m.as_str().to_owned())))
            .collect();
        assert_eq!(paths_and_methods(&doc), served);
        // Each operation asks for the credentials its route's row says.
        for spec in ROUTES {
            for method in spec.methods {
                let security = &doc["paths"][spec.pattern][method.as_str().to_ascii_lowercase()]["security"];
                let expected = match spec.auth {
                    Auth::Bearer | Auth::Admin => json!([{ "bearerAuth": [] }]),
                    Auth::BearerOrBody => json!([{ "bearerAuth": [] }, {}]),
                    Auth::Public | Auth::InSocket => continue,
                };
                assert_eq!(security, &expected, "{method} {}", spec.pattern);
            }
        }
        // Templated paths resolve to their routes, and only with a device segment.
        let resolve = |path| Route::resolve(path).map(|spec| spec.route);
        assert_eq!(resolve("/devices/upload/arm-1"), Some(Route::DevicesUpload));
        assert_eq!(resolve("/devices/read/0"), Some(Route::DevicesConsole));
        assert_eq!(resolve("/devices/read/"), None);
        assert_eq!(resolve("/devices/read/a/b"), None);
        assert_eq!(resolve("/devices/compile"), Some(Route::DevicesCompile));
    }

    #[test]
    fn errors_have_the_shape_handlers_send() {
        let doc = document();
        let error = &doc["components"]["schemas"]["Error"];
        assert_eq!(error["required"], json!(["detail", "code"]));
        let fields: BTreeSet<&str> = error["properties"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(fields, BTreeSet::from(["code", "detail", "field"]));
        assert_eq!(
            doc["components"]["responses"]["Error401"]["headers"]["WWW-Authenticate"]["schema"]["enum"],
            json!(["Bearer"])
        );
    }
}
