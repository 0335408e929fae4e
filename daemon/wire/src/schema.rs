//! What the types' JSON Schemas (feature `schema`) cannot read from the
//! types themselves: the closed vocabularies that travel as strings, and the
//! schemas of the two types whose serde form is written by hand here (a
//! device named by number or id, a civil date). The wire types name these in
//! their `#[schemars(...)]` attributes; doc comments become descriptions.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::DeviceRef;

/// A board's health (`DeviceJson.health`, `SlotsJson.health`, the admin routes).
pub const HEALTH: [&str; 4] = ["good", "unknown", "failing", "maintenance"];

/// An account's role.
pub const ROLE: [&str; 2] = ["user", "admin"];

/// A camera's state.
pub const CAMERA_STATE: [&str; 5] = ["idle", "connecting", "live", "offline", "removed"];

/// Who may watch a camera besides the holder and admins.
pub const CAMERA_VISIBILITY: [&str; 3] = ["holder", "signed_in", "public"];

/// A time of day as slot bounds show it: `09:00`.
pub const HH_MM: &str = "^[0-9]{2}:[0-9]{2}$";

impl JsonSchema for DeviceRef {
    fn schema_name() -> Cow<'static, str> {
        "DeviceRef".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A board by number (0..n in config order) or by id; a string of digits is the number",
            "oneOf": [{ "type": "integer", "minimum": 0 }, { "type": "string" }],
        })
    }
}

/// A civil date as the wire writes it, for the fields that hold a
/// `jiff::civil::Date` (`#[schemars(with = "Option<IsoDate>")]`).
#[derive(Debug)]
pub struct IsoDate;

impl JsonSchema for IsoDate {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "IsoDate".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "date", "example": "2026-12-01" })
    }
}
