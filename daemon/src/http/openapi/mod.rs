//! The OpenAPI 3.0.3 description of rerod's HTTP API, served at
//! `GET /openapi.json`, and a helper that lists its (path, method) pairs so a
//! test can hold the document and the router's route table to each other.
//!
//! The paths are written here (and in `sessions`, `camera`): operation ids,
//! summaries, status lists and security, which no type can say. The shapes
//! of the bodies and messages (`components.schemas`) are generated from the
//! wire types of `crate::wire` themselves (rerod-wire's `schema` feature),
//! as a client serializes them, so a field added to a wire type is in the
//! document with no second edit; `tests` holds real serialized values to
//! the generated schemas, to catch a serde attribute the generator misreads.
//! The parameters, shared error responses and security scheme, which are no
//! wire type, are written in `components`.
//! WebSocket endpoints cannot be described by OpenAPI 3.0, so they appear as
//! `GET` operations answering 101, with each direction's message type under
//! `components.schemas` and named in an `x-websocket-messages` extension on
//! the operation.

mod camera;
mod components;
mod sessions;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::BTreeSet;

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::transform::transform_subschemas;
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

use crate::wire::*;

/// The HTTP methods an OpenAPI path item may hold operations for.
const OPERATION_KEYS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// The whole document. Built on each call: it is requested rarely and the
/// version comes from the build, so there is nothing worth caching.
pub fn document() -> Value {
    let schemas = Schemas::new();
    let paths = paths(&schemas);
    let components = components::components(schemas);
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "rerod",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Remote-lab booking daemon: book an hour on a robot board, then upload firmware to it \
                and use its serial console. Errors are `{detail, code}` (plus `field` on 422); `code` is stable. \
                Routes that take credentials accept `Authorization: Bearer <token>` or, for the old clients, \
                `email`+`password` or `token` in the JSON body; the header wins when both are present. \
                In a lab of several hosts any host answers any request: a board's own routes (upload, console, \
                camera, its admin routes, the records of its sessions) are forwarded, streamed, to the host serving the \
                board, which checks the caller's token itself; 503 board_host_unreachable when that host is \
                offline or does not answer.",
        },
        "servers": [{ "url": "/" }],
        "tags": [
            { "name": "auth", "description": "Accounts and login tokens" },
            { "name": "slots", "description": "The booking calendar of each device" },
            { "name": "devices", "description": "Boards: firmware upload and serial console" },
            { "name": "admin", "description": "Lab admins (auth.admins in the config) manage accounts" },
            { "name": "records", "description": "Session records: console transcripts and upload logs" },
            { "name": "service", "description": "Health, statistics, metrics and this document" },
        ],
        "paths": paths,
        "components": components,
    })
}

/// The schemas of the wire types the document names, generated as the
/// paths and components ask for them: OpenAPI 3.0 dialect (`nullable`,
/// references under `#/components/schemas`), and the shapes as serialized,
/// so the in-body credentials a request flattens (and the server reads on
/// their own) are in its schema.
pub(super) struct Schemas(RefCell<SchemaGenerator>);

impl Schemas {
    fn new() -> Schemas {
        let settings = SchemaSettings::openapi3().for_serialize().with_transform(nullable_reference as fn(&mut Schema));
        Schemas(RefCell::new(settings.into_generator()))
    }

    /// A reference to `T`'s schema, which joins `components.schemas`.
    pub(super) fn of<T: JsonSchema>(&self) -> Value {
        self.0.borrow_mut().subschema_for::<T>().to_value()
    }

    /// Every schema referred to so far, and those they refer to.
    fn definitions(self) -> Map<String, Value> {
        self.0.into_inner().take_definitions(true)
    }
}

/// OpenAPI 3.0 has no null type: it writes a nullable reference (an
/// `Option` of a wire type) as `nullable` beside a one-part `allOf`, where
/// the generator leaves `anyOf: [reference, {nullable, enum: [null]}]`.
fn nullable_reference(schema: &mut Schema) {
    transform_subschemas(&mut nullable_reference, schema);
    let null = json!({ "nullable": true, "enum": [null] });
    let Some(Value::Array(branches)) = schema.get("anyOf") else { return };
    if let [reference, other] = branches.as_slice()
        && *other == null
        && reference.get("$ref").is_some()
    {
        let reference = reference.clone();
        schema.remove("anyOf");
        schema.insert("allOf".to_owned(), json!([reference]));
        schema.insert("nullable".to_owned(), Value::Bool(true));
    }
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

fn paths(s: &Schemas) -> Value {
    let credentials_security = json!([{ "bearerAuth": [] }, {}]);
    let my_bookings = |method: &str| {
        json!({
            "tags": ["slots"],
            "operationId": format!("myBookings{method}"),
            "summary": "Your upcoming and current bookings (all devices); past ones too with history=true",
            "security": credentials_security,
            "parameters": [param_ref("history")],
            "requestBody": optional_body(s.of::<MyBookingsRequest>(), "Seed-style credentials, and `history` as a body field"),
            "responses": responses(
                ok("Your bookings, soonest first", s.of::<MyBookingsResponse>()),
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
            "requestBody": optional_body(s.of::<BodyCredentials>(), "Seed-style credentials"),
            "responses": responses(
                ok("The current-or-next booking; has_booking false when there is none", s.of::<UserSlotResponse>()),
                &[401, 403, 408, 413, 415, 422, 503],
            ),
        })
    };
    let mut paths = json!({
        "/auth/register": { "post": {
            "tags": ["auth"],
            "operationId": "register",
            "summary": "Create an account",
            "requestBody": body(s.of::<EmailPassword>()),
            "responses": responses(
                json!({ "200": json_response("Account created", s.of::<RegisterResponse>()) }),
                &[400, 403, 408, 413, 415, 422, 429, 503],
            ),
        }},
        "/auth/login": { "post": {
            "tags": ["auth"],
            "operationId": "login",
            "summary": "Exchange e-mail and password for a bearer token",
            "requestBody": body(s.of::<EmailPassword>()),
            "responses": responses(
                ok("A token to send as Authorization: Bearer", s.of::<LoginResponse>()),
                &[401, 403, 408, 413, 415, 422, 429, 503],
            ),
        }},
        "/auth/password": { "post": {
            "tags": ["auth"],
            "operationId": "changePassword",
            "summary": "Change your password; every earlier token stops working, and the answer carries a new one",
            "security": [{ "bearerAuth": [] }],
            "requestBody": body(s.of::<ChangePasswordRequest>()),
            "responses": responses(
                ok("Changed: a token under the new password", s.of::<PasswordChangedResponse>()),
                &[401, 403, 408, 413, 415, 422, 429, 503],
            ),
        }},
        "/auth/logout-all": { "post": {
            "tags": ["auth"],
            "operationId": "logoutAll",
            "summary": "Revoke every token of your account, on every device (this one too)",
            "security": [{ "bearerAuth": [] }],
            "responses": responses(ok("Signed out everywhere", s.of::<LoggedOutResponse>()), &[401, 403, 503]),
        }},
        "/": { "get": {
            "tags": ["service"],
            "operationId": "root",
            "summary": "Greeting, with today's booked slot ids on the default device; browsers get the web app",
            "description": "A request whose `Accept` names `text/html` (a browser) gets the lab's web app \
                instead; its files are served under `/app/{bundle}/`, whose name changes with every build, \
                so they are not listed here.",
            "responses": responses(
                json!({ "200": {
                    "description": "The service is up (JSON), or the web app (HTML) for a browser",
                    "content": {
                        "application/json": { "schema": s.of::<RootResponse>() },
                        "text/html": { "schema": { "type": "string" } },
                    },
                }}),
                &[503],
            ),
        }},
        "/health": { "get": {
            "tags": ["service"],
            "operationId": "health",
            "summary": "Liveness and store health",
            "responses": {
                "200": json_response(
                    "The store answers; status is \"degraded\" while it cannot write",
                    s.of::<HealthResponse>(),
                ),
                "503": json_response("The store cannot be read; status is \"unhealthy\"", s.of::<HealthResponse>()),
            },
        }},
        "/stats": { "get": {
            "tags": ["service"],
            "operationId": "stats",
            "summary": "Today's numbers per device, and totals",
            "responses": responses(ok("Statistics", s.of::<StatsResponse>()), &[503]),
        }},
        "/cluster": { "get": {
            "tags": ["service"],
            "operationId": "cluster",
            "summary": "Every host of a lab of several hosts, its boards, and whether it is online",
            "responses": responses(ok("The lab's hosts", s.of::<ClusterResponse>()), &[]),
        }},
        "/slots": { "get": {
            "tags": ["slots"],
            "operationId": "listSlots",
            "summary": "One device's slots on one date",
            "description": "Public. A valid bearer token marks your bookings `mine`; an invalid one is ignored.",
            "security": [{ "bearerAuth": [] }, {}],
            "parameters": [param_ref("date"), param_ref("device")],
            "responses": responses(ok("The day's slots", s.of::<SlotsJson>()), &[404, 422, 503]),
        }},
        "/book-slot": { "post": {
            "tags": ["slots"],
            "operationId": "bookSlot",
            "summary": "Book a slot",
            "security": credentials_security,
            "requestBody": body(s.of::<SlotRequest>()),
            "responses": responses(ok("Booked", s.of::<BookSlotResponse>()), &[400, 401, 403, 404, 408, 413, 415, 422, 503]),
        }},
        "/cancel-slot": { "post": {
            "tags": ["slots"],
            "operationId": "cancelSlot",
            "summary": "Cancel your booking (admins: anyone's)",
            "security": credentials_security,
            "requestBody": body(s.of::<SlotRequest>()),
            "responses": responses(ok("Cancelled", s.of::<CancelSlotResponse>()), &[400, 401, 403, 404, 408, 413, 415, 422, 503]),
        }},
        "/my-bookings": { "get": my_bookings("Get"), "post": my_bookings("Post") },
        "/slots/user": { "get": slots_user("Get"), "post": slots_user("Post") },
        "/devices": { "get": {
            "tags": ["devices"],
            "operationId": "listDevices",
            "summary": "The lab's boards and whether each is online and in use",
            "responses": responses(ok("The devices, in config order", s.of::<DevicesResponse>()), &[503]),
        }},
        "/devices/compile": { "post": {
            "tags": ["devices"],
            "operationId": "compile",
            "summary": "Compile a sketch without uploading it: open to anyone, one compile at a time per account \
                (per client address without a token); the holder of the session in progress goes first, and \
                compile time is shared by account and by client address (429 compile_share_used beyond a share)",
            "security": [{ "bearerAuth": [] }, {}],
            "requestBody": body(s.of::<CompileRequest>()),
            "responses": responses(
                ok("Compiled (or not: success false with the compiler's output)", s.of::<CompileResponse>()),
                &[400, 404, 408, 413, 415, 422, 429, 503],
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
                    "application/json": { "schema": s.of::<UploadCodeRequest>() },
                    "application/octet-stream": { "schema": { "type": "string", "format": "binary" } },
                },
            },
            "responses": responses(
                ok("Uploaded", s.of::<UploadResponse>()),
                &[400, 401, 403, 404, 408, 409, 413, 415, 422, 502, 503],
            ),
        }},
        "/devices/read/{device}": { "get": websocket_operation(
            s,
            "serialConsole",
            "devices",
            "A board's serial console (WebSocket)",
            "The first client message authenticates (`{token}` or `{email, password}`); only the session holder \
             and admins get in. Then `connection_established`, then `serial_output` messages carrying only new \
             output (the first carries the scrollback). Send `{\"type\":\"input\",\"data\":...}` to write to the \
             board. Admins may open a console during someone else's session to watch it: their input is refused \
             (`error`, code `console_read_only`), and the holder's console gets `watchers` when one joins or \
             leaves. Before the session ends, `session_ending` (lab.session_warnings_minutes); when it ends: \
             `session_ended` and close 1000.",
            &[param_ref("devicePath")],
            json!({
                "client": [s.of::<BodyCredentials>(), s.of::<ConsoleClientMessage>()],
                "server": [s.of::<ConsoleServerMessage>()],
            }),
        )},
        "/slot-booking": { "get": websocket_operation(
            s,
            "slotBookingSocket",
            "slots",
            "Live slot updates and booking (WebSocket)",
            "On connect the server sends `slots_update`; `book_slot`, `cancel_slot` and `get_slots` are answered \
             with `booking_response`, `cancellation_response` and `slots_update`. Every committed change is \
             broadcast to every client as `slots_update`. A client that sends `identify` (a token, or e-mail and \
             password) is answered `identified` and then gets its account's `session_ending` warnings, and \
             `signed_out` the moment its tokens stop working (or an `error` \
             with code `too_many_account_sockets` when the account holds server.max_websockets_per_account \
             sockets already). 503 beyond server.max_websocket_connections feeds; 429 beyond \
             server.max_websockets_per_address sockets from one client.",
            &[],
            json!({ "client": [s.of::<BookingClientMessage>()], "server": [s.of::<BookingServerMessage>()] }),
        )},
        "/admin/users": { "get": {
            "tags": ["admin"],
            "operationId": "listUsers",
            "summary": "Every account, with its role and whether it is disabled",
            "description": "Bearer only, admins only.",
            "security": [{ "bearerAuth": [] }],
            "responses": responses(ok("The accounts, by e-mail", s.of::<AccountsResponse>()), &[401, 403]),
        }},
        "/admin/users/disable": { "post": admin_account_operation(
            s,
            "disableUser",
            "Disable an account",
            "Bearer only, admins only. The account can no longer log in and its tokens are refused, also after \
             it is enabled again. Its bookings that have not ended are cancelled (and broadcast); a session in \
             progress ends at once. Ended bookings stay as history. Admins listed in the config cannot be disabled.",
        )},
        "/admin/users/enable": { "post": admin_account_operation(
            s,
            "enableUser",
            "Enable a disabled account",
            "Bearer only, admins only. The account logs in afresh; tokens issued before it was disabled stay refused.",
        )},
        "/admin/devices/maintenance/{device}": {
            "post": {
                "tags": ["admin"],
                "operationId": "setMaintenance",
                "summary": "Put a board in maintenance",
                "description": "Bearer only, admins only. The board takes no bookings until an admin clears it; its                     bookings that have not ended move to a healthy board of the same model that is free in the same                     slot, and stay (flagged in /my-bookings) where none is. Kept across restarts, and in the audit log.",
                "security": [{ "bearerAuth": [] }],
                "parameters": [param_ref("devicePath")],
                "requestBody": body(s.of::<MaintenanceRequest>()),
                "responses": responses(ok("The board's health", s.of::<MaintenanceResponse>()), &[401, 403, 404, 422]),
            },
            "delete": {
                "tags": ["admin"],
                "operationId": "clearMaintenance",
                "summary": "Take a board out of maintenance",
                "description": "Bearer only, admins only. The board is `unknown` (it takes bookings again) and its                     health check, if it has one, runs at once. 409 not_in_maintenance when it is not in maintenance.",
                "security": [{ "bearerAuth": [] }],
                "parameters": [param_ref("devicePath")],
                "responses": responses(ok("The board's health", s.of::<MaintenanceResponse>()), &[401, 403, 404, 409]),
            },
        },
        "/admin/devices/check/{device}": { "post": {
            "tags": ["admin"],
            "operationId": "checkDevice",
            "summary": "Run a board's health check now",
            "description": "Bearer only, admins only. Resets the board, flashes its idle firmware and waits for its                 pattern; on failure cycles its power, flashes and waits again. Answers when the check is done                 (seconds); `success` says whether it passed. 409 no_health_check without [devices.health].",
            "security": [{ "bearerAuth": [] }],
            "parameters": [param_ref("devicePath")],
            "responses": responses(ok("The check", s.of::<CheckResponse>()), &[401, 403, 404, 409]),
        }},
        "/admin/devices/checks/{device}": { "get": {
            "tags": ["admin"],
            "operationId": "deviceChecks",
            "summary": "A board's health, its checks since start and the admin actions on it",
            "security": [{ "bearerAuth": [] }],
            "parameters": [param_ref("devicePath")],
            "responses": responses(ok("Newest first", s.of::<BoardHealthResponse>()), &[401, 403, 404]),
        }},
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
    });
    if let Some(map) = paths.as_object_mut() {
        map.extend(sessions::paths(s));
        map.extend(camera::paths(s));
    }
    paths
}

/// `POST /admin/users/{disable,enable}`: `{email}` in, the account out.
fn admin_account_operation(s: &Schemas, operation_id: &str, summary: &str, description: &str) -> Value {
    json!({
        "tags": ["admin"],
        "operationId": operation_id,
        "summary": summary,
        "description": description,
        "security": [{ "bearerAuth": [] }],
        "requestBody": body(s.of::<EmailRequest>()),
        "responses": responses(ok("The account as it is now", s.of::<AccountChangeResponse>()), &[400, 401, 403, 404, 413, 415, 422]),
    })
}

/// A WebSocket endpoint as a `GET` that answers 101; `messages` names the
/// message types of each direction (`client`, `server`).
fn websocket_operation(
    s: &Schemas,
    operation_id: &str,
    tag: &str,
    summary: &str,
    description: &str,
    parameters: &[Value],
    messages: Value,
) -> Value {
    let mut parameters = parameters.to_vec();
    parameters.push(json!({
        "name": "Upgrade", "in": "header", "required": true,
        "schema": { "type": "string", "enum": ["websocket"] },
    }));
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
            "426": { "description": "Not a WebSocket upgrade request", "content": error_content(s) },
            "429": error_ref(429),
            "503": error_ref(503),
        },
        "x-websocket-messages": messages,
    })
}

/// A parameter of a path (`location` "path", always required) or of its
/// query (`location` "query").
fn parameter(location: &str, name: &str, required: bool, description: &str, schema: Value) -> Value {
    let required = required || location == "path";
    json!({ "name": name, "in": location, "required": required, "description": description, "schema": schema })
}

fn param_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/parameters/{name}") })
}

fn error_ref(status: u16) -> Value {
    json!({ "$ref": format!("#/components/responses/Error{status}") })
}

pub(super) fn error_content(s: &Schemas) -> Value {
    json!({ "application/json": { "schema": s.of::<ErrorBody>() } })
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn ok(description: &str, schema: Value) -> Value {
    json!({ "200": json_response(description, schema) })
}

fn body(schema: Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema } } })
}

fn optional_body(schema: Value, description: &str) -> Value {
    json!({
        "required": false,
        "description": description,
        "content": { "application/json": { "schema": schema } },
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
