//! The camera routes: a board camera's state, the one-use ticket for its
//! stream, the live stream, a snapshot, and the old client's
//! `/websocket/{quality}`.

use serde_json::{Map, Value, json};

use crate::wire::{CameraStatusResponse, CameraTicketResponse};

use super::{Schemas, ok, param_ref, parameter, responses, websocket_operation};

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Paths merged into `paths`.
pub(super) fn paths(s: &Schemas) -> Map<String, Value> {
    let optional_bearer = json!([{ "bearerAuth": [] }, {}]);
    let device = param_ref("devicePath");
    let who = "The holder of the session in progress and admins always; others as the camera's visibility \
        admits them (`signed_in`: anyone signed in; `public`: anyone, no token needed). 403 camera_not_visible \
        otherwise, 401 without a token, 404 no_camera for a board without one.";
    object(json!({
        "/devices/camera/{device}": { "get": {
            "tags": ["devices"],
            "operationId": "cameraStatus",
            "summary": "A board camera's state",
            "description": who,
            "security": optional_bearer,
            "parameters": [device],
            "responses": responses(ok("The camera's state", s.of::<CameraStatusResponse>()), &[401, 403, 404, 503]),
        }},
        "/devices/camera/{device}/ticket": { "post": {
            "tags": ["devices"],
            "operationId": "cameraTicket",
            "summary": "A one-use ticket to open the camera's stream where no header can be sent (an <img src>)",
            "description": "Bearer only, for someone who may watch now. The ticket opens one stream within \
                `expires_in` seconds, for this account and board; the bearer token never goes in a URL.",
            "security": [{ "bearerAuth": [] }],
            "parameters": [device],
            "responses": responses(ok("The ticket", s.of::<CameraTicketResponse>()), &[401, 403, 404, 429, 503]),
        }},
        "/devices/camera/{device}/stream": { "get": {
            "tags": ["devices"],
            "operationId": "cameraStream",
            "summary": "The camera's live stream (multipart/x-mixed-replace of JPEG frames)",
            "description": format!("{who} Authenticate with Authorization: Bearer, or with `ticket`. Each part \
                has Content-Length. A viewer that reads slowly skips frames, never delays others. When the stream \
                ends for a reason (the holder's session ended and the visibility does not admit them: \
                `session_ended`; the camera left the config: `camera_removed`; the server stops: \
                `server_stopping`), its last part is application/json `{{detail, code}}`."),
            "security": optional_bearer,
            "parameters": [
                device,
                parameter(
                    "query",
                    "ticket",
                    false,
                    "From POST /devices/camera/{device}/ticket; used once",
                    json!({ "type": "string" }),
                ),
                parameter(
                    "query",
                    "fps",
                    false,
                    "At most this many frames a second (default: as the camera sends them)",
                    json!({ "type": "integer", "minimum": 1, "maximum": 60 }),
                ),
            ],
            "responses": responses(
                json!({ "200": {
                    "description": "The stream, until the client leaves or the caller may no longer watch",
                    "content": { "multipart/x-mixed-replace": { "schema": { "type": "string", "format": "binary" } } },
                }}),
                &[401, 403, 404, 422, 503],
            ),
        }},
        "/devices/camera/{device}/snapshot": { "get": {
            "tags": ["devices"],
            "operationId": "cameraSnapshot",
            "summary": "The camera's newest frame, one JPEG",
            "description": format!("{who} An idle camera is woken for it (up to 5 s); 503 camera_offline when \
                its source does not answer."),
            "security": optional_bearer,
            "parameters": [device],
            "responses": responses(
                json!({ "200": {
                    "description": "A JPEG",
                    "content": { "image/jpeg": { "schema": { "type": "string", "format": "binary" } } },
                }}),
                &[401, 403, 404, 503],
            ),
        }},
        "/websocket/{quality}": { "get": websocket_operation(
            s,
            "legacyCamera",
            "devices",
            "The old web client's camera feed (WebSocket of binary JPEG frames)",
            "Serves the camera of lab.legacy_camera_device, only while its visibility is `public`: the old client \
             sends no credentials. Otherwise the socket closes at once with 1008 and the reason. `quality` (30-95) \
             is accepted and ignored; frames come as the camera sends them.",
            &[param_ref("quality")],
            json!({ "client": [], "server": [] }),
        )},
    }))
}
