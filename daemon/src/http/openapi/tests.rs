//! The document checked against itself, against the router's route table,
//! and real serialized wire values held to the schemas generated for them.

use std::collections::BTreeMap;

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

/// Every schema object in `value`, recursively (and some values that are
/// not schemas, which hold none of the keys looked for).
fn objects<'a>(value: &'a Value, out: &mut Vec<&'a Map<String, Value>>) {
    match value {
        Value::Object(map) => {
            out.push(map);
            map.values().for_each(|v| objects(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| objects(v, out)),
        _ => {}
    }
}

/// The generated schemas speak OpenAPI 3.0, not the JSON Schema 2020-12
/// the generator speaks by default: no null type (`nullable` instead), no
/// `const`, no lists of types, no `examples`, no `$defs`.
#[test]
fn the_schemas_are_openapi_3_0() {
    let doc = document();
    let mut all = Vec::new();
    objects(&doc["components"]["schemas"], &mut all);
    assert!(all.len() > 100);
    for schema in all {
        for key in ["const", "examples", "$defs", "$schema", "prefixItems", "unevaluatedProperties"] {
            assert!(!schema.contains_key(key), "{key} in {schema:?}");
        }
        if let Some(kind) = schema.get("type").filter(|kind| kind.is_string() || kind.is_array()) {
            assert!(kind.is_string() && kind != "null", "type {kind} in {schema:?}");
        }
        if let Some(Value::Array(allowed)) = schema.get("enum") {
            assert!(!allowed.contains(&Value::Null), "null in an enum: {schema:?}");
        }
        if let Some(Value::String(target)) = schema.get("$ref") {
            assert!(target.starts_with("#/components/schemas/"), "{target}");
            assert_eq!(schema.len(), 1, "siblings beside a $ref are ignored in 3.0: {schema:?}");
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
        ("/auth/logout-all", "POST"),
        ("/auth/password", "POST"),
        ("/auth/register", "POST"),
        ("/book-slot", "POST"),
        ("/cancel-slot", "POST"),
        ("/devices", "GET"),
        ("/admin/users", "GET"),
        ("/admin/users/disable", "POST"),
        ("/admin/users/enable", "POST"),
        ("/admin/devices/maintenance/{device}", "POST"),
        ("/admin/devices/maintenance/{device}", "DELETE"),
        ("/admin/devices/check/{device}", "POST"),
        ("/admin/devices/checks/{device}", "GET"),
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
        ("/cluster", "GET"),
        ("/admin/audit", "GET"),
        ("/records", "GET"),
        ("/records/{id}", "GET"),
        ("/records/{id}/transcript", "GET"),
        ("/records/{id}/snapshot", "GET"),
        ("/devices/camera/{device}", "GET"),
        ("/devices/camera/{device}/ticket", "POST"),
        ("/devices/camera/{device}/stream", "GET"),
        ("/devices/camera/{device}/snapshot", "GET"),
        ("/websocket/{quality}", "GET"),
    ];
    let expected: BTreeSet<(String, String)> = expected.iter().map(|(p, m)| (p.to_string(), m.to_string())).collect();
    assert_eq!(pairs, expected);
    assert!(paths_and_methods(&json!({})).is_empty());
}

#[test]
fn the_document_lists_exactly_the_routes_the_router_serves() {
    use crate::http::{Auth, ROUTES, Route, Serves};
    let doc = document();
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .filter(|spec| spec.serves == Serves::Api)
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
    // The app's files are the only routes left out, and only by their row's flag.
    let left_out: Vec<Route> = ROUTES.iter().filter(|s| s.serves != Serves::Api).map(|s| s.route).collect();
    assert_eq!(left_out, [Route::AppAsset]);
    assert_eq!(resolve("/app/0123/main.js"), Some(Route::AppAsset));
    assert_eq!(resolve("/records"), Some(Route::Records));
    assert_eq!(resolve("/records/arm-1_2026-11-24_9"), Some(Route::Record));
    assert_eq!(resolve("/records/arm-1_2026-11-24_9/transcript"), Some(Route::RecordTranscript));
    assert_eq!(resolve("/records/../transcript"), Some(Route::RecordTranscript), "the app refuses the id");
    assert_eq!(resolve("/records/a/b/transcript"), None);
    assert_eq!(resolve("/records//transcript"), None);
    assert_eq!(resolve("/devices/camera/arm-1"), Some(Route::Camera));
    assert_eq!(resolve("/devices/camera/arm-1/stream"), Some(Route::CameraStream));
    assert_eq!(resolve("/devices/camera/arm-1/snapshot"), Some(Route::CameraSnapshot));
    assert_eq!(resolve("/websocket/95"), Some(Route::LegacyCameraSocket));
}

#[test]
fn every_error_response_is_the_error_body() {
    let doc = document();
    let responses = doc["components"]["responses"].as_object().unwrap();
    assert!(responses.len() >= 10);
    for (name, response) in responses {
        let schema = &response["content"]["application/json"]["schema"];
        assert_eq!(schema, &json!({ "$ref": "#/components/schemas/ErrorBody" }), "{name}");
    }
    assert_eq!(
        doc["components"]["responses"]["Error401"]["headers"]["WWW-Authenticate"]["schema"]["enum"],
        json!(["Bearer"])
    );
}

/// What validating one value saw: the schemas it went through, and the keys
/// each object schema met. Kept apart per `oneOf` branch, so that a branch
/// that did not match leaves nothing behind.
#[derive(Default)]
struct Seen {
    visited: BTreeSet<String>,
    keys: BTreeMap<String, BTreeSet<String>>,
}

impl Seen {
    fn absorb(&mut self, other: Seen) {
        self.visited.extend(other.visited);
        for (pointer, keys) in other.keys {
            self.keys.entry(pointer).or_default().extend(keys);
        }
    }
}

/// Holds serialized wire values to the generated schemas as a client's
/// validator would (types, `nullable`, `required`, `enum`, formats, bounds,
/// `allOf`/`oneOf`/`anyOf`), and stricter: an object may hold only the keys
/// its schema declares, so a key serde writes that the schema misses (a
/// rename, a flatten the generator misread) fails. At the end, every schema
/// of the document and every property of each must have been met, so a
/// property serde never writes fails too.
struct Validator {
    doc: Value,
    seen: Seen,
}

impl Validator {
    fn new() -> Validator {
        Validator { doc: document(), seen: Seen::default() }
    }

    /// `examples` serialized, each against the schema generated for `T`.
    fn check<T: serde::Serialize + JsonSchema>(&mut self, examples: &[T]) {
        let pointer = format!("/components/schemas/{}", T::schema_name());
        assert!(self.doc.pointer(&pointer).is_some(), "no schema at {pointer}");
        for example in examples {
            let value = serde_json::to_value(example).unwrap();
            let mut seen = Seen::default();
            let errors = self.validate(&value, &pointer, true, &mut seen);
            assert!(errors.is_empty(), "{value}\nagainst {pointer}:\n{}", errors.join("\n"));
            self.seen.absorb(seen);
        }
    }

    /// `value` against the schema `name`, which must take it.
    fn check_value(&self, name: &str, value: &Value) {
        let errors = self.validate(value, &format!("/components/schemas/{name}"), true, &mut Seen::default());
        assert!(errors.is_empty(), "{value}\nagainst {name}:\n{}", errors.join("\n"));
    }

    /// The reasons `value` does not match the schema at `pointer`. `closed`:
    /// whether keys beyond the declared ones are refused here (not inside an
    /// `allOf`, whose parent checks the keys of all its parts together).
    fn validate(&self, value: &Value, pointer: &str, closed: bool, seen: &mut Seen) -> Vec<String> {
        let Some(schema) = self.doc.pointer(pointer) else { return vec![format!("{pointer}: no schema")] };
        seen.visited.insert(pointer.to_owned());
        if let Some(target) = schema["$ref"].as_str() {
            return self.validate(value, target.trim_start_matches('#'), closed, seen);
        }
        let nullable = schema["nullable"] == json!(true);
        if value.is_null() && nullable {
            return Vec::new();
        }
        let mut errors = Vec::new();
        if let Some(parts) = schema["allOf"].as_array() {
            for i in 0..parts.len() {
                errors.extend(self.validate(value, &format!("{pointer}/allOf/{i}"), false, seen));
            }
        }
        for (keyword, exactly_one) in [("oneOf", true), ("anyOf", false)] {
            let Some(branches) = schema[keyword].as_array() else { continue };
            let mut matched = Vec::new();
            for i in 0..branches.len() {
                let mut branch_seen = Seen::default();
                let branch = format!("{pointer}/{keyword}/{i}");
                if self.validate(value, &branch, closed, &mut branch_seen).is_empty() {
                    matched.push(branch_seen);
                }
            }
            match matched.len() {
                0 => errors.push(format!("{pointer}: {value} matches no branch of {keyword}")),
                n if n > 1 && exactly_one => errors.push(format!("{pointer}: {value} matches {n} branches of oneOf")),
                _ => matched.into_iter().take(1).for_each(|branch| seen.absorb(branch)),
            }
        }
        if value.is_null() {
            if schema["allOf"].is_null() && schema["oneOf"].is_null() && schema["anyOf"].is_null() {
                errors.push(format!("{pointer}: null, and the schema is not nullable"));
            }
            return errors;
        }
        if let Some(kind) = schema["type"].as_str() {
            let matches = match kind {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                _ => false,
            };
            if !matches {
                errors.push(format!("{pointer}: {value} is not of type {kind}"));
            }
        }
        if let Some(allowed) = schema["enum"].as_array().filter(|allowed| !allowed.contains(value)) {
            errors.push(format!("{pointer}: {value} is not one of {allowed:?}"));
        }
        // Integers carry formats too (`uint16`): the bounds beside them say it.
        if let (Some(format), Some(text), "string") =
            (schema["format"].as_str(), value.as_str(), schema["type"].as_str().unwrap_or(""))
            && !valid_format(format, text)
        {
            errors.push(format!("{pointer}: {text:?} is not a {format}"));
        }
        if let (Some(pattern), Some(text)) = (schema["pattern"].as_str(), value.as_str()) {
            assert_eq!(pattern, rerod_wire::schema::HH_MM, "{pointer}: a pattern this test cannot read");
            let hh_mm = text.len() == 5 && text.as_bytes()[2] == b':' && text.parse::<jiff::civil::Time>().is_ok();
            if !hh_mm {
                errors.push(format!("{pointer}: {text:?} is not HH:MM"));
            }
        }
        if let Some(n) = value.as_f64() {
            let below = schema["minimum"].as_f64().is_some_and(|min| n < min);
            let above = schema["maximum"].as_f64().is_some_and(|max| n > max);
            if below || above {
                errors.push(format!("{pointer}: {n} is out of bounds"));
            }
        }
        if let Some(text) = value.as_str() {
            let n = text.chars().count() as u64;
            let short = schema["minLength"].as_u64().is_some_and(|min| n < min);
            let long = schema["maxLength"].as_u64().is_some_and(|max| n > max);
            if short || long {
                errors.push(format!("{pointer}: {text:?} has a length out of bounds"));
            }
        }
        if let Some(fields) = value.as_object() {
            for key in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if !fields.contains_key(key) {
                    errors.push(format!("{pointer}: required {key} is missing"));
                }
            }
            let declared = self.declared(schema);
            let own = schema["properties"].as_object();
            for (key, field) in fields {
                if own.is_some_and(|own| own.contains_key(key)) {
                    errors.extend(self.validate(field, &format!("{pointer}/properties/{key}"), true, seen));
                } else if closed && !declared.contains(key) && schema["oneOf"].is_null() && schema["anyOf"].is_null() {
                    errors.push(format!("{pointer}: {key} is not in the schema"));
                }
            }
            if let Some(own) = own {
                let met = fields.keys().filter(|key| own.contains_key(*key)).cloned();
                seen.keys.entry(pointer.to_owned()).or_default().extend(met);
            }
        }
        if let Some(items) = value.as_array() {
            for item in items {
                errors.extend(self.validate(item, &format!("{pointer}/items"), true, seen));
            }
        }
        errors
    }

    /// The keys an object schema declares, its `allOf` parts' included.
    fn declared(&self, schema: &Value) -> BTreeSet<String> {
        let schema = match schema["$ref"].as_str() {
            Some(target) => self.doc.pointer(target.trim_start_matches('#')).unwrap(),
            None => schema,
        };
        let mut keys: BTreeSet<String> =
            schema["properties"].as_object().into_iter().flatten().map(|(k, _)| k.clone()).collect();
        for part in schema["allOf"].as_array().into_iter().flatten() {
            keys.extend(self.declared(part));
        }
        keys
    }

    /// Every schema of the document was met, and every property of each.
    fn finish(self) {
        let schemas = self.doc["components"]["schemas"].as_object().unwrap();
        for name in schemas.keys() {
            let pointer = format!("/components/schemas/{name}");
            assert!(self.seen.visited.contains(&pointer), "{name}: no example reaches it");
        }
        for pointer in &self.seen.visited {
            let schema = self.doc.pointer(pointer).unwrap();
            let Some(properties) = schema["properties"].as_object() else { continue };
            let met = self.seen.keys.get(pointer).cloned().unwrap_or_default();
            let unmet: Vec<&String> = properties.keys().filter(|key| !met.contains(*key)).collect();
            assert!(unmet.is_empty(), "{pointer}: no example has {unmet:?}: does serde ever write them?");
        }
    }
}

/// The validator is only worth its passes if it refuses: each of these
/// bodies breaks one rule of its schema, as a serde attribute the generator
/// misread would.
#[test]
fn the_validator_refuses_what_a_schema_does_not_allow() {
    let v = Validator::new();
    let refused = |name: &str, value: Value| {
        let errors = v.validate(&value, &format!("/components/schemas/{name}"), true, &mut Seen::default());
        assert!(!errors.is_empty(), "{name} took {value}");
    };
    let error = json!({ "detail": "no", "code": "slot_unavailable" });
    v.check_value("ErrorBody", &error);
    let with = |key: &str, field: Value| {
        let mut value = error.clone();
        value[key] = field;
        value
    };
    refused("ErrorBody", with("extra", json!(1)));
    refused("ErrorBody", json!({ "detail": "no" }));
    refused("ErrorBody", with("code", json!(7)));
    refused("ErrorBody", with("code", Value::Null));
    let slot = json!({ "slot_id": 3, "date": "2026-12-01", "device": 1, "token": "t" });
    v.check_value("SlotRequest", &slot);
    v.check_value("SlotRequest", &json!({ "slot_id": 3, "device": "arm-1", "date": null }));
    refused("SlotRequest", json!({ "slot_id": 3, "date": "1 December" }));
    refused("SlotRequest", json!({ "slot_id": 3, "device": -1 }));
    refused("SlotRequest", json!({ "slot_id": 3, "device": true }));
    refused("SlotRequest", json!({ "slot_id": "3" }));
    let device = |camera: Value| {
        json!({
            "number": 0, "id": "arm-1", "name": "Arm", "model": "uno", "plugin": "stk500v1", "port": "/dev/ttyACM0",
            "online": true, "baud": 115200, "in_use": false, "health": "good", "health_reason": null,
            "camera": camera,
        })
    };
    v.check_value("DeviceJson", &device(Value::Null));
    v.check_value("DeviceJson", &device(json!({ "state": "live", "visibility": "public", "viewers": 1 })));
    refused("DeviceJson", device(json!({ "state": "live", "visibility": "public", "viewers": 1, "x": 1 })));
    refused("DeviceJson", device(json!({ "state": "on fire", "visibility": "public", "viewers": 1 })));
    refused("DeviceJson", device(json!("idle")));
    v.check_value("BookingClientMessage", &json!({ "type": "get_slots", "device": 0 }));
    refused("BookingClientMessage", json!({ "type": "get_slots", "slot_id": 0 }));
    refused("BookingClientMessage", json!({ "type": "book", "slot_id": 0 }));
    refused("ConsoleServerMessage", json!({ "type": "upload_progress", "phase": "write", "percent": 101 }));
    refused(
        "SlotJson",
        json!({
            "id": 0, "start_time": "9:00", "end_time": "10:00", "is_booked": false, "booked_by": null,
            "booked_at": null, "start": "2026-12-01T09:00:00+01:00", "end": "2026-12-01T10:00:00+01:00",
            "status": "available",
        }),
    );
}

/// Whether `text` is what an OpenAPI `format` says, for the formats the
/// wire types use.
fn valid_format(format: &str, text: &str) -> bool {
    match format {
        "date-time" => text.parse::<jiff::Timestamp>().is_ok(),
        "date" => rerod_wire::decode::parse_date(text).is_some(),
        "email" => text.contains('@'),
        "byte" => !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)),
        "password" => true,
        other => panic!("a format this test cannot read: {other}"),
    }
}

/// The examples build every wire type twice where it has optional parts:
/// once with every `Option` set, so that every field appears, and once with
/// every `Option` empty, so that the fields serde skips or writes as null show.
#[test]
fn serialized_wire_values_match_their_generated_schemas() {
    use crate::app::DeviceRef;
    use crate::wire::*;
    use jiff::civil::date;

    let s = |text: &str| text.to_owned();
    let utc = || s("2026-11-24T10:30:00.123456Z");
    let slot = |booked: bool| SlotJson {
        id: 9,
        start_time: s("09:00"),
        end_time: s("10:00"),
        is_booked: booked,
        booked_by: booked.then(|| s("a@example.com")),
        booked_at: booked.then(utc),
        start: s("2026-11-24T09:00:00+01:00"),
        end: s("2026-11-24T10:00:00+01:00"),
        status: if booked { SlotStatus::Booked } else { SlotStatus::Available },
    };
    let slots = SlotsJson {
        slots: vec![slot(true), slot(false)],
        available_slots: vec![10],
        booked_slots: vec![9],
        date: s("2026-11-24"),
        device: s("arm-1"),
        health: s("good"),
    };
    let booking = BookingJson {
        id: 9,
        date: s("2026-11-24"),
        device: s("arm-1"),
        start_time: s("09:00"),
        end_time: s("10:00"),
        start: s("2026-11-24T09:00:00+01:00"),
        end: s("2026-11-24T10:00:00+01:00"),
        booked_at: utc(),
        moved_from: None,
        board_health: None,
    };
    let moved_booking =
        BookingJson { moved_from: Some(s("arm-2")), board_health: Some(s("failing")), ..booking.clone() };
    let counts =
        DatabaseCounts { total_slots: 24, booked_slots: 1, available_slots: 20, database_path: s("/var/lib/rerod") };
    let credentials = BodyCredentials { token: Some(s("t")), email: Some(s("a@example.com")), password: Some(s("p")) };
    let mut v = Validator::new();

    v.check(&[
        ErrorBody { detail: s("no"), code: s("invalid_field"), field: Some(s("slot_id")) },
        ErrorBody { detail: s("no"), code: s("slot_unavailable"), field: None },
    ]);
    v.check(&[RootResponse {
        message: s("hi"),
        websocket_endpoint: s("/slot-booking"),
        active_connections: 1,
        booked_slots: vec![9],
    }]);
    let health = |healthy: bool| HealthResponse {
        status: s(if healthy { "healthy" } else { "unhealthy" }),
        total_slots: healthy.then_some(24),
        booked_slots_count: healthy.then_some(1),
        available_slots_count: healthy.then_some(20),
        database: if healthy {
            HealthDatabase::Counts(counts.clone())
        } else {
            HealthDatabase::Failure(DatabaseFailure { error: s("closed"), database_path: s("/var/lib/rerod") })
        },
        timestamp: utc(),
        active_connections: 1,
        console_connections: 0,
        uptime_seconds: 5,
        version: s("0.1.0"),
        config: ConfigStatus { generation: 2, last_reload_error: (!healthy).then(|| s("bad toml")) },
        store: StoreStatus { last_write_error: (!healthy).then(|| s("No space left on device")) },
        devices: DeviceCounts { configured: 2, calendars: 2, online: 1, offline: 1 },
        device_health: vec![
            DeviceHealthJson { id: s("arm-1"), health: s("good"), reason: None },
            DeviceHealthJson { id: s("arm-2"), health: s("failing"), reason: Some(s("no READY")) },
        ],
        cameras: vec![
            CameraHealthJson {
                device: s("arm-1"),
                camera: CameraJson {
                    state: s("offline"),
                    visibility: s("holder"),
                    viewers: 1,
                    reason: Some(s("no answer")),
                },
            },
            CameraHealthJson {
                device: s("arm-2"),
                camera: CameraJson { state: s("idle"), visibility: s("public"), viewers: 0, reason: None },
            },
        ],
        compile: CompileHealth { sandbox: s(if healthy { "landlock" } else { "unavailable" }) },
        lab: LabInfo {
            timezone: healthy.then(|| s("Europe/Berlin")),
            slot_minutes: 60,
            demo: false,
            registration: s("domains"),
            allowed_domains: vec![s("uni.example")],
        },
        cluster_clock: healthy.then_some(ClusterClock { ahead_ms: -3_600_000, uncertainty_ms: 2, off: true }),
    };
    v.check(&[health(true), health(false)]);
    v.check(&[StatsResponse {
        database: counts.clone(),
        websocket: WebSocketStats { active_connections: 1 },
        slots: SlotStats { total: 24, booked: 1, available: 20 },
        devices: vec![DeviceStats {
            number: 0,
            id: s("arm-1"),
            name: s("Arm"),
            date: s("2026-11-24"),
            total_slots: 24,
            booked_slots: 1,
            available_slots: 20,
        }],
        users: Total { total: 3 },
        bookings: Total { total: 4 },
    }]);
    v.check(&[
        ClusterResponse { host: None, hosts: Vec::new() },
        ClusterResponse {
            host: Some(s("bench-1")),
            hosts: vec![ClusterHost {
                name: s("bench-2"),
                advertise: s("http://bench-2.lab.example:8000"),
                online: false,
                last_seen: s("2026-11-24T10:30:00.123456Z"),
                boards: vec![ClusterBoard { id: s("mega-1"), model: s("mega2560") }],
            }],
        },
    ]);
    v.check(std::slice::from_ref(&slots));
    v.check(&[BookSlotResponse {
        success: true,
        message: s("booked"),
        slot_id: 9,
        date: s("2026-11-24"),
        device: s("arm-1"),
        start: s("2026-11-24T09:00:00+01:00"),
        end: s("2026-11-24T10:00:00+01:00"),
    }]);
    v.check(&[CancelSlotResponse {
        success: true,
        message: s("cancelled"),
        slot_id: 9,
        date: s("2026-11-24"),
        device: s("arm-1"),
    }]);
    v.check(&[MyBookingsResponse { success: true, total_bookings: 1, bookings: vec![booking.clone()] }]);
    let user_slot = |has: bool| UserSlotResponse {
        success: true,
        has_booking: has,
        slot: has.then_some(9),
        date: has.then(|| s("2026-11-24")),
        device: has.then(|| s("arm-1")),
        start_time: has.then(|| s("09:00")),
        end_time: has.then(|| s("10:00")),
        start: has.then(|| s("2026-11-24T09:00:00+01:00")),
        end: has.then(|| s("2026-11-24T10:00:00+01:00")),
        is_current: has,
    };
    v.check(&[user_slot(true), user_slot(false)]);
    v.check(&[RegisterResponse {
        success: true,
        message: s("registered"),
        email: s("a@example.com"),
        user: RegisteredUser { id: 7, email: s("a@example.com"), created_at: utc() },
    }]);
    let login = |last_login: Option<String>| LoginResponse {
        success: true,
        message: s("logged in"),
        token: s("t"),
        token_type: s("bearer"),
        expires_in: 3600,
        user: LoggedInUser { id: 7, email: s("a@example.com"), role: s("user"), created_at: utc(), last_login },
    };
    v.check(&[login(Some(utc())), login(None)]);
    v.check(&[DevicesResponse {
        success: true,
        count: 1,
        devices: vec![
            DeviceJson {
                number: 0,
                id: s("arm-1"),
                name: s("Arm"),
                model: s("mega2560"),
                plugin: s("stk500v2"),
                port: s("/dev/ttyACM0"),
                online: true,
                baud: 115200,
                in_use: false,
                health: s("good"),
                health_reason: None,
                camera: Some(CameraJson { state: s("idle"), visibility: s("holder"), viewers: 0, reason: None }),
                host: None,
            },
            DeviceJson {
                number: 1,
                id: s("arm-2"),
                name: s("Arm 2"),
                model: s("mega2560"),
                plugin: s("stk500v2"),
                port: s("/dev/ttyACM1"),
                online: false,
                baud: 115200,
                in_use: false,
                health: s("maintenance"),
                health_reason: Some(s("motor")),
                camera: None,
                host: Some(s("bench-2")),
            },
        ],
        supported_models: vec![s("mega2560")],
    }]);
    let compiled = |ok: bool| CompileResponse {
        success: ok,
        message: s("compiled"),
        compile_output: s("..."),
        program_bytes: ok.then_some(1024),
        duration_ms: ok.then_some(800),
    };
    v.check(&[compiled(true), compiled(false)]);
    let uploaded = |compile_output: Option<String>| UploadResponse {
        success: true,
        message: s("uploaded"),
        device: s("arm-1"),
        compile_output,
        upload_output: s("..."),
        bytes_written: 1024,
        duration_ms: 3000,
    };
    v.check(&[uploaded(Some(s("..."))), uploaded(None)]);
    v.check(&[AccountsResponse {
        success: true,
        count: 1,
        users: vec![AccountJson { email: s("a@example.com"), role: s("admin"), created_at: utc(), disabled: false }],
    }]);
    v.check(&[AccountChangeResponse {
        success: true,
        message: s("disabled"),
        user: ChangedAccount { email: s("a@example.com"), created_at: utc(), disabled: true },
        cancelled_bookings: vec![booking, moved_booking],
    }]);
    v.check(&[
        BookingServerMessage::BookingMoved {
            date: s("2026-11-24"),
            slot_id: 9,
            from_device: s("arm-1"),
            to_device: s("arm-2"),
            booked_by: Some(s("a@example.com")),
            message: s("moved"),
            timestamp: utc(),
        },
        BookingServerMessage::BookingMoved {
            date: s("2026-11-24"),
            slot_id: 9,
            from_device: s("arm-1"),
            to_device: s("arm-2"),
            booked_by: None,
            message: s("moved"),
            timestamp: utc(),
        },
    ]);
    v.check(&[MaintenanceRequest { reason: s("motor") }]);
    let maintenance = |reason: Option<String>| MaintenanceResponse {
        success: true,
        message: s("done"),
        device: s("arm-1"),
        health: s(if reason.is_some() { "maintenance" } else { "unknown" }),
        reason,
    };
    v.check(&[maintenance(Some(s("motor"))), maintenance(None)]);
    let check = |requested_by: Option<String>| CheckJson {
        started: utc(),
        trigger: s(if requested_by.is_some() { "admin" } else { "session" }),
        requested_by,
        ok: true,
        power_cycled: false,
        duration_ms: 1500,
        health: s("good"),
        steps: vec![CheckStepJson { step: s("flash"), ok: true, detail: s("468 bytes"), duration_ms: 1200 }],
    };
    v.check(&[CheckResponse {
        success: true,
        message: s("passed"),
        device: s("arm-1"),
        health: s("good"),
        check: check(Some(s("admin@example.com"))),
    }]);
    let report = |reason: Option<String>| BoardHealthResponse {
        success: true,
        device: s("arm-1"),
        health: s(if reason.is_some() { "failing" } else { "good" }),
        reason,
        checks: vec![check(None), check(Some(s("admin@example.com")))],
        audit: vec![AuditJson {
            at: utc(),
            actor: s("admin@example.com"),
            action: s("check_requested"),
            detail: s(""),
        }],
    };
    v.check(&[report(Some(s("no READY"))), report(None)]);

    // The slot-booking socket, server side.
    v.check(&[BookingServerMessage::SlotsUpdate { data: slots, timestamp: utc() }]);
    let reply = |full: bool| BookingReply {
        success: full,
        message: s("done"),
        slot_id: 9,
        code: full.then(|| s("slot_unavailable")),
        date: full.then(|| s("2026-11-24")),
        device: full.then(|| s("arm-1")),
    };
    v.check(&[BookingServerMessage::BookingResponse(reply(true)), BookingServerMessage::BookingResponse(reply(false))]);
    v.check(&[
        BookingServerMessage::CancellationResponse(reply(true)),
        BookingServerMessage::CancellationResponse(reply(false)),
    ]);
    v.check(&[
        BookingServerMessage::Error { message: s("bad"), code: Some(s("invalid_message")) },
        BookingServerMessage::Error { message: s("bad"), code: None },
    ]);
    v.check(&[ConsoleServerMessage::Error { code: s("device_offline"), message: s("offline") }]);

    // The console socket, server side.
    v.check(&[ConsoleServerMessage::ConnectionEstablished {
        device_number: 0,
        device: s("arm-1"),
        device_info: DeviceDescription { model: s("mega2560"), port: s("/dev/ttyACM0"), description: s("Arm") },
        online: true,
        message: s("connected"),
    }]);
    let output = |base64: Option<String>| ConsoleServerMessage::SerialOutput {
        device_number: 0,
        output: s("hello"),
        timestamp: utc(),
        output_base64: base64,
    };
    v.check(&[output(Some(s("aGVsbG8="))), output(None)]);
    let progress = |message: Option<String>| ConsoleServerMessage::UploadProgress {
        phase: UploadPhase::Write,
        percent: 50,
        message,
    };
    v.check(&[progress(Some(s("done"))), progress(None)]);
    v.check(&[ConsoleServerMessage::SessionEnded { message: s("over") }]);
    v.check(&[ConsoleServerMessage::DeviceStatus { online: true, message: s("back") }]);

    // What clients send.
    v.check(&[EmailPassword { email: s("a@example.com"), password: s("p") }]);
    v.check(&[ChangePasswordRequest { old_password: s("old"), new_password: s("new") }]);
    v.check(&[PasswordChangedResponse {
        success: true,
        message: s("changed"),
        token: s("t"),
        token_type: s("bearer"),
        expires_in: 3600,
    }]);
    v.check(&[LoggedOutResponse { success: true, message: s("bye") }]);
    v.check(&[
        SlotRequest {
            slot_id: 9,
            date: Some(date(2026, 12, 1)),
            device: Some(DeviceRef::Id(s("arm-1"))),
            credentials: credentials.clone(),
        },
        SlotRequest { slot_id: 9, date: None, device: None, credentials: BodyCredentials::default() },
    ]);
    v.check(&[
        MyBookingsRequest { history: Some(true), credentials: credentials.clone() },
        MyBookingsRequest::default(),
    ]);
    v.check(&[EmailRequest { email: s("a@example.com") }]);
    v.check(&[
        CompileRequest {
            code: s("void setup(){}"),
            file_name: Some(s("blink.ino")),
            model: Some(s("mega2560")),
            device: Some(DeviceRef::Number(0)),
        },
        CompileRequest { code: s("void setup(){}"), file_name: None, model: None, device: None },
    ]);
    v.check(&[
        UploadCodeRequest { code: s("void setup(){}"), file_name: None },
        UploadCodeRequest { code: s("void setup(){}"), file_name: Some(s("blink.ino")) },
    ]);
    v.check(&[credentials.clone(), BodyCredentials::default()]);
    v.check(&[ConsoleClientMessage::Input(crate::wire::ConsoleInput { data: s("x") })]);
    let slot_message = |full: bool| SlotMessage {
        slot_id: full.then_some(9),
        date: full.then(|| date(2026, 12, 1)),
        device: full.then_some(DeviceRef::Number(0)),
        credentials: if full { credentials.clone() } else { BodyCredentials::default() },
    };
    v.check(&[BookingClientMessage::BookSlot(slot_message(true)), BookingClientMessage::BookSlot(slot_message(false))]);
    v.check(&[
        BookingClientMessage::CancelSlot(slot_message(true)),
        BookingClientMessage::CancelSlot(slot_message(false)),
    ]);
    v.check(&[
        BookingClientMessage::GetSlots(crate::wire::GetSlots {
            date: Some(date(2026, 12, 1)),
            device: Some(DeviceRef::Number(0)),
        }),
        BookingClientMessage::GetSlots(crate::wire::GetSlots { date: None, device: None }),
    ]);
    session_examples(&mut v);
    camera_examples(&mut v);
    v.finish();
}

fn session_examples(v: &mut Validator) {
    use crate::wire::*;

    let s = |text: &str| text.to_owned();
    let end = || s("2026-11-24T12:00:00+01:00");
    v.check(&[ConsoleServerMessage::SessionEnding { minutes_left: 5, end: end(), message: s("soon") }]);
    v.check(&[ConsoleServerMessage::Watchers { watchers: vec![s("admin@example.com")], message: s("watching") }]);
    v.check(&[BookingServerMessage::SessionEnding {
        device: s("arm-1"),
        minutes_left: 1,
        end: end(),
        message: s("soon"),
    }]);
    let token = BodyCredentials { token: Some(s("t")), email: Some(s("a@example.com")), password: Some(s("p")) };
    v.check(&[BookingClientMessage::Identify(token), BookingClientMessage::Identify(BodyCredentials::default())]);
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
    v.check(&[
        RecordsResponse { success: true, count: 1, records: vec![record.clone()], unreachable_hosts: Vec::new() },
        RecordsResponse { success: true, count: 0, records: Vec::new(), unreachable_hosts: vec![s("bench-2")] },
    ]);
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
    v.check(&[RecordResponse { success: true, record, uploads: vec![upload], snapshots: vec![snapshot] }]);
    let entry = |full: bool| AuditLogJson {
        at: s("2026-11-24T09:10:00.000000Z"),
        actor: s("admin@example.com"),
        action: s("booking_cancelled"),
        device: full.then(|| s("arm-1")),
        user: full.then(|| s("a@example.com")),
        detail: s("slot 9 on 2026-11-24"),
        address: full.then(|| s("192.0.2.7")),
    };
    v.check(&[AuditLogResponse { success: true, count: 2, audit: vec![entry(true), entry(false)] }]);
    v.check(&[BookingServerMessage::Identified { email: s("a@example.com"), message: s("ok") }]);
    v.check(&[BookingServerMessage::SignedOut {
        email: s("a@example.com"),
        code: s("account_disabled"),
        message: s("You are signed out: a lab admin disabled this account"),
    }]);
}

fn camera_examples(v: &mut Validator) {
    use crate::wire::*;

    let s = |text: &str| text.to_owned();
    let camera = |reason: Option<String>| CameraJson {
        state: s(if reason.is_some() { "offline" } else { "live" }),
        visibility: s("public"),
        viewers: 2,
        reason,
    };
    v.check(&[
        CameraStatusResponse {
            success: true,
            device: s("arm-1"),
            camera: camera(Some(s("no answer"))),
            access: s("holder"),
        },
        CameraStatusResponse { success: true, device: s("arm-1"), camera: camera(None), access: s("admin") },
    ]);
    v.check(&[CameraTicketResponse {
        success: true,
        ticket: s("ab12"),
        expires_in: 30,
        stream_url: s("/devices/camera/arm-1/stream?ticket=ab12"),
    }]);
    v.check(&[
        CameraHealthJson { device: s("arm-1"), camera: camera(Some(s("no answer"))) },
        CameraHealthJson { device: s("arm-2"), camera: camera(None) },
    ]);
}
