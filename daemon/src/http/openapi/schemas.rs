//! `components` of the OpenAPI document: the security scheme, the shared
//! parameters and error responses, and one schema per request body, response
//! body and WebSocket message of `crate::wire`.

use serde_json::{Value, json};

use super::{error_content, schema_ref};

pub(super) fn components() -> Value {
    let error_response = |description: &str| json!({ "description": description, "content": error_content() });
    let string = json!({ "type": "string" });
    let nullable_string = json!({ "type": "string", "nullable": true });
    let integer = json!({ "type": "integer" });
    let boolean = json!({ "type": "boolean" });
    let file_name = json!({
        "type": "string", "minLength": 1, "maxLength": 100,
        "description": "The sketch's file name on the client's side (blink.ino), not a path: compiler messages name it instead of the lab's build path (default sketch.ino)",
    });
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
    // Over the socket a missing slot_id is answered with a failed reply, not refused.
    let ws_slot_id = json!({
        "type": "integer",
        "description": "Index of the slot in the day; without it the answer is a failed reply",
    });
    // A reply carries code on failure, date and device on success.
    let with_reply_details = |mut properties: Value| {
        if let Some(p) = properties.as_object_mut() {
            p.insert("code".to_owned(), json!({ "type": "string", "description": "Only on failure" }));
            p.insert(
                "date".to_owned(),
                json!({ "type": "string", "format": "date", "description": "Only on success" }),
            );
            p.insert("device".to_owned(), json!({ "type": "string", "description": "Device id; only on success" }));
        }
        properties
    };
    // /health's database block when the store answers, and /stats' database block.
    let database_counts = json!({
        "type": "object",
        "required": ["total_slots", "booked_slots", "available_slots", "database_path"],
        "properties": {
            "total_slots": integer, "booked_slots": integer,
            "available_slots": { "type": "integer", "description": "Bookable now" },
            "database_path": string,
        },
    });
    let health = json!({
        "type": "string", "enum": ["good", "unknown", "failing", "maintenance"],
        "description": "unknown: not checked since start, or no check configured; failing and maintenance take no bookings",
    });
    let total = json!({ "type": "object", "required": ["total"], "properties": { "total": integer } });

    let mut components = json!({
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
            "quality": {
                "name": "quality", "in": "path", "required": true,
                "description": "The JPEG quality the old web client asks for (30 to 95); accepted and ignored",
                "schema": string,
            },
            "recordId": {
                "name": "id", "in": "path", "required": true,
                "description": "A record's id as GET /records lists it: <device>_<YYYY-MM-DD>_<first slot>",
                "schema": { "type": "string", "pattern": "^[A-Za-z0-9_-]+_[0-9]{4}-[0-9]{2}-[0-9]{2}_[0-9]+$" },
            },
            "history": {
                "name": "history", "in": "query", "required": false,
                "description": "Also list past bookings",
                "schema": { "type": "string", "enum": ["true", "false", "1", "0", "yes", "no"] },
            },
        },
        "responses": {
            "Error400": error_response("A booking rule was broken (code says which), the e-mail address is taken (email_taken) or looks the same as an existing account (email_confusable), or the request was malformed"),
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
            "Error422": error_response("A field is missing, has the wrong type or an unacceptable value (an e-mail address with invisible characters, a password too easy to guess: weak_password); field names it"),
            "Error429": {
                "description": "Too many attempts (wrong passwords for this account, or logins from this address: too_many_attempts), new accounts within the hour (from this address or overall: too_many_registrations), or compiling refused for now (a compile already in line, a full line, or a share of compile time used); wait Retry-After seconds",
                "headers": { "Retry-After": { "schema": { "type": "integer" }, "description": "Seconds to wait" } },
                "content": error_content(),
            },
            "Error409": error_response("The device is busy with another upload, or the upload was aborted because the session ended"),
            "Error502": error_response("The board (or its flashing tool) did not answer as expected: no sync, verify mismatch, tool failure"),
            "Error503": error_response("The store is unavailable, too many connections are open, too many password checks are waiting (overloaded), the device is offline, or (board_host_unreachable) the board belongs to another host of the lab that is offline or does not answer"),
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
            "ChangePasswordRequest": {
                "type": "object",
                "required": ["old_password", "new_password"],
                "properties": {
                    "old_password": { "type": "string", "format": "password" },
                    "new_password": {
                        "type": "string", "format": "password",
                        "description": "At least auth.min_password_length characters, at most 72 bytes",
                    },
                },
            },
            "PasswordChangedResponse": {
                "type": "object",
                "required": ["success", "message", "token", "token_type", "expires_in"],
                "properties": {
                    "success": success, "message": string, "token": string,
                    "token_type": { "type": "string", "enum": ["bearer"] },
                    "expires_in": { "type": "integer", "description": "Seconds until the token expires" },
                },
            },
            "LoggedOutResponse": {
                "type": "object",
                "required": ["success", "message"],
                "properties": { "success": success, "message": string },
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
                "required": ["success", "message", "email", "user"],
                "properties": {
                    "success": success, "message": string,
                    "email": { "type": "string", "description": "The same as user.email, where the old client reads it" },
                    "user": {
                        "type": "object",
                        "required": ["id", "email", "created_at"],
                        "properties": {
                            "id": { "type": "integer", "description": "The account's number, for good" },
                            "email": string,
                            "created_at": utc,
                        },
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
                        "required": ["id", "email", "role", "created_at", "last_login"],
                        "properties": {
                            "id": { "type": "integer", "description": "The account's number, the same at every login" },
                            "email": string,
                            "role": { "type": "string", "enum": ["user", "admin"] },
                            "created_at": utc,
                            "last_login": {
                                "type": "string", "format": "date-time", "nullable": true,
                                "description": "The previous successful login, UTC; null on the first",
                            },
                        },
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
                "required": [
                    "status", "timestamp", "active_connections", "console_connections", "uptime_seconds", "version",
                    "config", "store", "devices", "device_health", "cameras", "database", "compile", "lab",
                ],
                "properties": {
                    "status": { "type": "string", "enum": ["healthy", "degraded", "unhealthy"] },
                    "timestamp": utc,
                    "active_connections": integer,
                    "console_connections": integer,
                    "total_slots": { "type": "integer", "description": "Only when healthy" },
                    "booked_slots_count": { "type": "integer", "description": "Only when healthy" },
                    "available_slots_count": { "type": "integer", "description": "Only when healthy" },
                    "database": {
                        "oneOf": [
                            database_counts,
                            {
                                "type": "object",
                                "description": "When unhealthy",
                                "required": ["error", "database_path"],
                                "properties": { "error": string, "database_path": string },
                            },
                        ],
                    },
                    "uptime_seconds": integer,
                    "version": string,
                    "config": {
                        "type": "object",
                        "required": ["generation", "last_reload_error"],
                        "properties": { "generation": integer, "last_reload_error": nullable_string },
                    },
                    "store": {
                        "type": "object",
                        "description": "While last_write_error is set (a full disk, say), writes answer 503 \
                            store_unavailable, reads go on and status is \"degraded\"",
                        "required": ["last_write_error"],
                        "properties": { "last_write_error": nullable_string },
                    },
                    "devices": {
                        "type": "object",
                        "required": ["configured", "calendars", "online", "offline"],
                        "properties": { "configured": integer, "calendars": integer, "online": integer, "offline": integer },
                    },
                    "device_health": { "type": "array", "items": schema_ref("DeviceHealth") },
                    "cameras": { "type": "array", "items": schema_ref("CameraHealth"), "description": "Each board camera's state" },
                    "lab": {
                        "type": "object",
                        "description": "The lab's calendar: its time zone's IANA name (null when the host's zone \
                            has none) and the slot length; whether it is the demo lab; who may register",
                        "required": ["timezone", "slot_minutes", "demo", "registration", "allowed_domains"],
                        "properties": {
                            "timezone": nullable_string, "slot_minutes": integer, "demo": boolean,
                            "registration": { "type": "string", "enum": ["open", "closed", "domains"] },
                            "allowed_domains": { "type": "array", "items": string },
                        },
                    },
                    "compile": {
                        "type": "object",
                        "description": "How sketches are compiled: confined by Landlock, with the sandbox turned off by the admin, or refused (503 compile_sandbox_unavailable) because the kernel has no Landlock",
                        "required": ["sandbox"],
                        "properties": { "sandbox": { "type": "string", "enum": ["landlock", "off", "unavailable"] } },
                    },
                },
            },
            "DeviceHealth": {
                "type": "object",
                "required": ["id", "health", "reason"],
                "properties": { "id": string, "health": health.clone(), "reason": nullable_string },
            },
            "ClusterResponse": {
                "type": "object",
                "required": ["host", "hosts"],
                "properties": {
                    "host": {
                        "type": "string", "nullable": true,
                        "description": "The host that answered; null when it is not part of a cluster",
                    },
                    "hosts": {
                        "type": "array",
                        "description": "Every host of the lab by name (empty on a one-host lab)",
                        "items": {
                            "type": "object",
                            "required": ["name", "advertise", "online", "last_seen", "boards"],
                            "properties": {
                                "name": string,
                                "advertise": { "type": "string", "description": "Where the other hosts reach it" },
                                "online": {
                                    "type": "boolean",
                                    "description": "Renewed its presence within cluster.offline_after_secs",
                                },
                                "last_seen": utc,
                                "boards": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["id", "model"],
                                        "properties": { "id": string, "model": string },
                                    },
                                },
                            },
                        },
                    },
                },
            },
            "StatsResponse": {
                "type": "object",
                "required": ["database", "websocket", "slots", "devices", "users", "bookings"],
                "properties": {
                    "database": database_counts,
                    "websocket": {
                        "type": "object",
                        "required": ["active_connections"],
                        "properties": { "active_connections": integer },
                    },
                    "slots": {
                        "type": "object",
                        "required": ["total", "booked", "available"],
                        "properties": { "total": integer, "booked": integer, "available": integer },
                    },
                    "devices": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["number", "id", "name", "date", "total_slots", "booked_slots", "available_slots"],
                            "properties": {
                                "number": integer, "id": string, "name": string, "date": date,
                                "total_slots": integer, "booked_slots": integer, "available_slots": integer,
                            },
                        },
                    },
                    "users": total,
                    "bookings": total,
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
                "required": ["slots", "available_slots", "booked_slots", "date", "device", "health"],
                "properties": {
                    "slots": { "type": "array", "items": schema_ref("Slot") },
                    "available_slots": { "type": "array", "items": integer, "description": "Bookable now" },
                    "booked_slots": { "type": "array", "items": integer },
                    "date": date,
                    "device": { "type": "string", "description": "Device id" },
                    "health": health.clone(),
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
                    "moved_from": {
                        "type": "string",
                        "description": "The device it was booked on; only when rerod moved it off a broken board",
                    },
                    "board_health": {
                        "type": "string", "enum": ["failing", "maintenance"],
                        "description": "Only when its board takes no bookings and no healthy board was free for it",
                    },
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
                "required": [
                    "number", "id", "name", "model", "plugin", "port", "online", "baud", "in_use", "health",
                    "health_reason", "camera",
                ],
                "properties": {
                    "number": integer, "id": string, "name": string, "model": string, "plugin": string,
                    "port": string, "online": boolean, "baud": integer, "in_use": boolean,
                    "health": health.clone(), "health_reason": nullable_string,
                    "camera": {
                        "nullable": true, "allOf": [schema_ref("Camera")],
                        "description": "The board's camera; null when it has none",
                    },
                    "host": {
                        "type": "string",
                        "description": "The host serving the board, in a lab of several hosts ([cluster]); \
                                        absent on a lab of one host. Another host's board shows what its \
                                        host last said, and offline with health unknown while that host is",
                    },
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
                "properties": {
                    "code": { "type": "string", "description": "Sketch source code" },
                    "file_name": file_name,
                    "model": { "type": "string", "description": "The board model to compile for; default the device's" },
                    "device": device_ref,
                },
            },
            "UploadCodeRequest": {
                "type": "object",
                "required": ["code"],
                "properties": {
                    "code": { "type": "string", "description": "Sketch source code, compiled for the device" },
                    "file_name": file_name,
                },
            },
            "CompileResponse": {
                "type": "object",
                "required": ["success", "message", "compile_output"],
                "properties": {
                    "success": boolean, "message": string, "compile_output": string,
                    "program_bytes": { "type": "integer", "description": "Only on success" },
                    "duration_ms": { "type": "integer", "description": "Only on success" },
                },
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
            "BookingMovedMessage": {
                "type": "object",
                "description": "A booking moved off a broken board to the same slot on a healthy one (slots_update                     for both devices follows); booked_by as in slots_update",
                "required": ["type", "date", "slot_id", "from_device", "to_device", "booked_by", "message", "timestamp"],
                "properties": {
                    "type": ws_type("booking_moved"), "date": date, "slot_id": slot_id,
                    "from_device": string, "to_device": string, "booked_by": nullable_string,
                    "message": string, "timestamp": utc,
                },
            },
            "MaintenanceRequest": {
                "type": "object",
                "required": ["reason"],
                "properties": { "reason": { "type": "string", "description": "Why; 1 to 500 characters" } },
            },
            "MaintenanceResponse": {
                "type": "object",
                "required": ["success", "message", "device", "health", "reason"],
                "properties": {
                    "success": success, "message": string, "device": string, "health": health.clone(),
                    "reason": nullable_string,
                },
            },
            "CheckStep": {
                "type": "object",
                "required": ["step", "ok", "detail", "duration_ms"],
                "properties": {
                    "step": { "type": "string", "enum": ["reset", "flash", "expect", "power_cycle"] },
                    "ok": boolean, "detail": string, "duration_ms": integer,
                },
            },
            "Check": {
                "type": "object",
                "required": [
                    "started", "trigger", "requested_by", "ok", "power_cycled", "duration_ms", "health", "steps",
                ],
                "properties": {
                    "started": utc,
                    "trigger": {
                        "type": "string", "enum": ["start", "online", "session", "admin", "maintenance_cleared"],
                    },
                    "requested_by": nullable_string,
                    "ok": boolean, "power_cycled": boolean, "duration_ms": integer,
                    "health": health.clone(),
                    "steps": { "type": "array", "items": schema_ref("CheckStep") },
                },
            },
            "CheckResponse": {
                "type": "object",
                "required": ["success", "message", "device", "health", "check"],
                "properties": {
                    "success": { "type": "boolean", "description": "Whether the check passed" },
                    "message": string, "device": string, "health": health.clone(), "check": schema_ref("Check"),
                },
            },
            "AuditEntry": {
                "type": "object",
                "required": ["at", "actor", "action", "detail"],
                "properties": {
                    "at": utc, "actor": string,
                    "action": { "type": "string", "enum": ["maintenance_set", "maintenance_cleared", "check_requested"] },
                    "detail": string,
                },
            },
            "BoardHealthResponse": {
                "type": "object",
                "required": ["success", "device", "health", "reason", "checks", "audit"],
                "properties": {
                    "success": success, "device": string, "health": health.clone(), "reason": nullable_string,
                    "checks": { "type": "array", "items": schema_ref("Check") },
                    "audit": { "type": "array", "items": schema_ref("AuditEntry") },
                },
            },
            "BookSlotMessage": {
                "type": "object",
                "required": ["type"],
                "properties": with_credentials(json!({
                    "type": ws_type("book_slot"), "slot_id": ws_slot_id, "date": date, "device": device_ref,
                })),
            },
            "CancelSlotMessage": {
                "type": "object",
                "required": ["type"],
                "properties": with_credentials(json!({
                    "type": ws_type("cancel_slot"), "slot_id": ws_slot_id, "date": date, "device": device_ref,
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
                "properties": with_reply_details(json!({
                    "type": ws_type("booking_response"), "success": boolean, "message": string, "slot_id": integer,
                })),
            },
            "CancellationResponseMessage": {
                "type": "object",
                "required": ["type", "success", "message", "slot_id"],
                "properties": with_reply_details(json!({
                    "type": ws_type("cancellation_response"), "success": boolean, "message": string, "slot_id": integer,
                })),
            },
            "WsErrorMessage": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {
                    "type": ws_type("error"),
                    "message": string,
                    "code": { "type": "string", "description": "Stable, for programs; always sent on a console socket" },
                },
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
                "required": ["type", "device_number", "device", "device_info", "online", "message"],
                "properties": {
                    "type": ws_type("connection_established"),
                    "device_number": integer,
                    "device": { "type": "string", "description": "Device id" },
                    "device_info": {
                        "type": "object",
                        "required": ["model", "port", "description"],
                        "properties": { "model": string, "port": string, "description": string },
                    },
                    "online": boolean,
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
                    "phase": {
                        "type": "string",
                        "enum": ["reset", "sync", "write", "verify", "done", "failed"],
                        "description": "The step in progress; done or failed at the end",
                    },
                    "percent": { "type": "integer", "minimum": 0, "maximum": 100 },
                    "message": { "type": "string", "description": "The result, with the last message" },
                },
            },
            "SessionEndedMessage": {
                "type": "object",
                "required": ["type", "message"],
                "properties": { "type": ws_type("session_ended"), "message": string },
            },
            "DeviceStatusMessage": {
                "type": "object",
                "required": ["type", "online", "message"],
                "properties": { "type": ws_type("device_status"), "online": boolean, "message": string },
            },
        },
    });
    if let Some(schemas) = components["schemas"].as_object_mut() {
        schemas.extend(super::sessions::schemas());
        schemas.extend(super::camera::schemas());
    }
    components
}
