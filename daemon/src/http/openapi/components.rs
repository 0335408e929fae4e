//! `components` of the OpenAPI document: the security scheme, the shared
//! parameters and error responses, written here because they are no wire
//! type, and `schemas`, generated from the wire types the document names.

use serde_json::{Value, json};

use super::{Schemas, error_content, parameter};

pub(super) fn components(s: Schemas) -> Value {
    let error_response = |description: &str| json!({ "description": description, "content": error_content(&s) });
    let string = json!({ "type": "string" });
    let date = json!({ "type": "string", "format": "date", "example": "2026-12-01" });
    let mut components = json!({
        "securitySchemes": {
            "bearerAuth": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
        },
        "parameters": {
            "date": parameter("query", "date", false, "YYYY-MM-DD; default today in the lab's time zone", date),
            "device": parameter("query", "device", false, "Device number or id; default the first device", string.clone()),
            "devicePath": parameter("path", "device", true, "Device number or id", string.clone()),
            "quality": parameter(
                "path",
                "quality",
                true,
                "The JPEG quality the old web client asks for (30 to 95); accepted and ignored",
                string,
            ),
            "recordId": parameter(
                "path",
                "id",
                true,
                "A record's id as GET /records lists it: <device>_<YYYY-MM-DD>_<first slot>_<32 hex digits> \
                    (records from before the tag end at the first slot)",
                json!({
                    "type": "string",
                    "pattern": "^[A-Za-z0-9_-]+_[0-9]{4}-[0-9]{2}-[0-9]{2}_[0-9]+(_[0-9a-f]{32})?$",
                }),
            ),
            "history": parameter(
                "query",
                "history",
                false,
                "Also list past bookings",
                json!({ "type": "string", "enum": ["true", "false", "1", "0", "yes", "no"] }),
            ),
        },
        "responses": {
            "Error400": error_response("A booking rule was broken (code says which), the e-mail address is taken (email_taken) or looks the same as an existing account (email_confusable), or the request was malformed"),
            "Error401": {
                "description": "No or invalid credentials",
                "headers": { "WWW-Authenticate": { "schema": { "type": "string", "enum": ["Bearer"] } } },
                "content": error_content(&s),
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
                "content": error_content(&s),
            },
            "Error409": error_response("The device is busy with another upload, or the upload was aborted because the session ended"),
            "Error502": error_response("The board (or its flashing tool) did not answer as expected: no sync, verify mismatch, tool failure"),
            "Error503": error_response("The store is unavailable, too many connections are open, too many password checks are waiting (overloaded), the device is offline, or (board_host_unreachable) the board belongs to another host of the lab that is offline or does not answer"),
        },
    });
    components["schemas"] = Value::Object(s.definitions());
    components
}
