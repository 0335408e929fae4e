//! The schemas of sessions beyond the seed's: the warnings before a session
//! ends, identifying a `/slot-booking` socket, and (with their examples for
//! the contract test) the session records and the admins' audit log.

use serde_json::{Map, Value, json};

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
    let mut identify = credentials.as_object().cloned().unwrap_or_default();
    identify.insert("type".to_owned(), ws_type("identify"));
    let value = json!({
        "SessionEndingMessage": {
            "type": "object",
            "description": "To the holder's console: the session ends soon (lab.session_warnings_minutes)",
            "required": ["type", "minutes_left", "end", "message"],
            "properties": { "type": ws_type("session_ending"), "minutes_left": minutes_left, "end": end, "message": string },
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
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
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
    contract.check(
        "IdentifiedMessage",
        &[to_value(BookingServerMessage::Identified { email: s("a@example.com"), message: s("ok") })],
    );
}
