//! The document checked against itself, against the router's route table
//! and against the serialized wire types it describes.

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

/// What the examples of one schema showed, gathered over every object that
/// schema described: the keys seen at all, the keys seen every time, and the
/// keys seen as null.
#[derive(Default)]
struct Seen {
    keys: BTreeSet<String>,
    always: Option<BTreeSet<String>>,
    nulls: BTreeSet<String>,
}

/// Walks serialized wire values through the schemas that document them.
/// Keys are gathered per schema (by JSON pointer) rather than per value, so
/// that a schema shared by several types, or reached from several places, is
/// held to all of them at once.
pub(super) struct Contract {
    doc: Value,
    seen: std::collections::BTreeMap<String, Seen>,
}

impl Contract {
    fn new() -> Contract {
        Contract { doc: document(), seen: Default::default() }
    }

    /// `examples` are serialized values of the wire type documented as `schema`.
    pub(super) fn check(&mut self, schema: &str, examples: &[Value]) {
        assert!(self.doc["components"]["schemas"].get(schema).is_some(), "no schema {schema}");
        for example in examples {
            assert!(example.is_object(), "{schema}: {example}");
            self.walk(example, &format!("/components/schemas/{schema}"));
        }
    }

    fn walk(&mut self, value: &Value, pointer: &str) {
        let schema = self.doc.pointer(pointer).unwrap_or_else(|| panic!("no schema at {pointer}")).clone();
        if let Some(target) = schema["$ref"].as_str() {
            return self.walk(value, target.strip_prefix('#').unwrap());
        }
        if value.is_null() {
            // Whether the field may be null is checked against its parent's `nulls`.
            return;
        }
        // A nullable reference (OpenAPI 3.0 puts `nullable` beside a one-item `allOf`).
        if schema["allOf"].as_array().is_some_and(|all| all.len() == 1) {
            return self.walk(value, &format!("{pointer}/allOf/0"));
        }
        if let Some(branches) = schema["oneOf"].as_array() {
            let Some(fields) = value.as_object() else { return };
            // An untagged enum: the branch is the one whose properties are these keys.
            let keys: BTreeSet<&String> = fields.keys().collect();
            let branch = branches.iter().position(|b| {
                let b = self.resolve(b);
                b["properties"].as_object().is_some_and(|p| p.keys().collect::<BTreeSet<_>>() == keys)
            });
            let branch = branch.unwrap_or_else(|| panic!("{pointer}: no oneOf branch has the keys of {value}"));
            return self.walk(value, &format!("{pointer}/oneOf/{branch}"));
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
            assert!(matches, "{pointer}: {value} is not of type {kind}");
        }
        if let Some(allowed) = schema["enum"].as_array() {
            assert!(allowed.contains(value), "{pointer}: {value} is not one of {allowed:?}");
        }
        if let Some(fields) = value.as_object() {
            let keys: BTreeSet<String> = fields.keys().cloned().collect();
            let seen = self.seen.entry(pointer.to_owned()).or_default();
            seen.keys.extend(keys.iter().cloned());
            seen.always = Some(match seen.always.take() {
                Some(always) => always.intersection(&keys).cloned().collect(),
                None => keys,
            });
            seen.nulls.extend(fields.iter().filter(|(_, v)| v.is_null()).map(|(k, _)| k.clone()));
            for (key, field) in fields {
                if schema["properties"].get(key).is_some() {
                    self.walk(field, &format!("{pointer}/properties/{key}"));
                }
            }
        }
        if let Some(items) = value.as_array() {
            for item in items {
                self.walk(item, &format!("{pointer}/items"));
            }
        }
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema["$ref"].as_str() {
            Some(target) => self.doc.pointer(target.strip_prefix('#').unwrap()).unwrap(),
            None => schema,
        }
    }

    /// Every object schema the examples reached lists exactly the keys they
    /// had, requires exactly the keys they always had, and is nullable exactly
    /// where they had nulls; and every schema in the document was reached.
    fn finish(self) {
        let names = |value: &Value| -> BTreeSet<String> {
            match value {
                Value::Object(map) => map.keys().cloned().collect(),
                Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
                _ => BTreeSet::new(),
            }
        };
        for (pointer, seen) in &self.seen {
            let schema = self.doc.pointer(pointer).unwrap();
            assert_eq!(names(&schema["properties"]), seen.keys, "{pointer}: properties against serialized keys");
            let always = seen.always.clone().unwrap_or_default();
            assert_eq!(names(&schema["required"]), always, "{pointer}: required against keys always serialized");
            let nullable: BTreeSet<String> = schema["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, p)| p["nullable"] == json!(true))
                .map(|(k, _)| k.clone())
                .collect();
            assert_eq!(nullable, seen.nulls, "{pointer}: nullable properties against keys serialized as null");
        }
        for name in names(&self.doc["components"]["schemas"]) {
            let pointer = format!("/components/schemas/{name}");
            assert!(self.seen.contains_key(&pointer), "{name} is not checked against a wire type");
        }
    }
}

pub(super) fn to_value<T: serde::Serialize>(value: T) -> Value {
    serde_json::to_value(value).unwrap()
}

/// The examples build every wire type twice where it has optional parts:
/// once with every `Option` set, so that every field appears, and once with
/// every `Option` empty, so that the fields serde skips or writes as null show.
#[test]
fn every_schema_matches_the_wire_type_it_documents() {
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
    let mut contract = Contract::new();

    contract.check(
        "Error",
        &[
            to_value(ErrorBody { detail: s("no"), code: s("invalid_field"), field: Some(s("slot_id")) }),
            to_value(ErrorBody { detail: s("no"), code: s("slot_unavailable"), field: None }),
        ],
    );
    contract.check(
        "RootResponse",
        &[to_value(RootResponse {
            message: s("hi"),
            websocket_endpoint: s("/slot-booking"),
            active_connections: 1,
            booked_slots: vec![9],
        })],
    );
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
        cameras: vec![],
        compile: CompileHealth { sandbox: s(if healthy { "landlock" } else { "unavailable" }) },
        lab: LabInfo {
            timezone: healthy.then(|| s("Europe/Berlin")),
            slot_minutes: 60,
            demo: false,
            registration: s("domains"),
            allowed_domains: vec![s("uni.example")],
        },
    };
    contract.check("HealthResponse", &[to_value(health(true)), to_value(health(false))]);
    contract.check(
        "StatsResponse",
        &[to_value(StatsResponse {
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
        })],
    );
    contract.check(
        "ClusterResponse",
        &[
            to_value(ClusterResponse { host: None, hosts: Vec::new() }),
            to_value(ClusterResponse {
                host: Some(s("bench-1")),
                hosts: vec![ClusterHost {
                    name: s("bench-2"),
                    advertise: s("http://bench-2.lab.example:8000"),
                    online: false,
                    last_seen: s("2026-11-24T10:30:00.123456Z"),
                    boards: vec![ClusterBoard { id: s("mega-1"), model: s("mega2560") }],
                }],
            }),
        ],
    );
    contract.check("SlotsResponse", &[to_value(&slots)]);
    contract.check(
        "BookResponse",
        &[to_value(BookSlotResponse {
            success: true,
            message: s("booked"),
            slot_id: 9,
            date: s("2026-11-24"),
            device: s("arm-1"),
            start: s("2026-11-24T09:00:00+01:00"),
            end: s("2026-11-24T10:00:00+01:00"),
        })],
    );
    contract.check(
        "CancelResponse",
        &[to_value(CancelSlotResponse {
            success: true,
            message: s("cancelled"),
            slot_id: 9,
            date: s("2026-11-24"),
            device: s("arm-1"),
        })],
    );
    contract.check(
        "MyBookingsResponse",
        &[to_value(MyBookingsResponse { success: true, total_bookings: 1, bookings: vec![booking.clone()] })],
    );
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
    contract.check("UserSlotResponse", &[to_value(user_slot(true)), to_value(user_slot(false))]);
    contract.check(
        "RegisterResponse",
        &[to_value(RegisterResponse {
            success: true,
            message: s("registered"),
            email: s("a@example.com"),
            user: RegisteredUser { id: 7, email: s("a@example.com"), created_at: utc() },
        })],
    );
    let login = |last_login: Option<String>| LoginResponse {
        success: true,
        message: s("logged in"),
        token: s("t"),
        token_type: s("bearer"),
        expires_in: 3600,
        user: LoggedInUser { id: 7, email: s("a@example.com"), role: s("user"), created_at: utc(), last_login },
    };
    contract.check("LoginResponse", &[to_value(login(Some(utc()))), to_value(login(None))]);
    contract.check(
        "DevicesResponse",
        &[to_value(DevicesResponse {
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
        })],
    );
    let compiled = |ok: bool| CompileResponse {
        success: ok,
        message: s("compiled"),
        compile_output: s("..."),
        program_bytes: ok.then_some(1024),
        duration_ms: ok.then_some(800),
    };
    contract.check("CompileResponse", &[to_value(compiled(true)), to_value(compiled(false))]);
    let uploaded = |compile_output: Option<String>| UploadResponse {
        success: true,
        message: s("uploaded"),
        device: s("arm-1"),
        compile_output,
        upload_output: s("..."),
        bytes_written: 1024,
        duration_ms: 3000,
    };
    contract.check("UploadResponse", &[to_value(uploaded(Some(s("...")))), to_value(uploaded(None))]);
    contract.check(
        "UsersResponse",
        &[to_value(AccountsResponse {
            success: true,
            count: 1,
            users: vec![AccountJson {
                email: s("a@example.com"),
                role: s("admin"),
                created_at: utc(),
                disabled: false,
            }],
        })],
    );
    contract.check(
        "AccountChangeResponse",
        &[to_value(AccountChangeResponse {
            success: true,
            message: s("disabled"),
            user: ChangedAccount { email: s("a@example.com"), created_at: utc(), disabled: true },
            cancelled_bookings: vec![booking, moved_booking],
        })],
    );
    contract.check(
        "BookingMovedMessage",
        &[
            to_value(BookingServerMessage::BookingMoved {
                date: s("2026-11-24"),
                slot_id: 9,
                from_device: s("arm-1"),
                to_device: s("arm-2"),
                booked_by: Some(s("a@example.com")),
                message: s("moved"),
                timestamp: utc(),
            }),
            to_value(BookingServerMessage::BookingMoved {
                date: s("2026-11-24"),
                slot_id: 9,
                from_device: s("arm-1"),
                to_device: s("arm-2"),
                booked_by: None,
                message: s("moved"),
                timestamp: utc(),
            }),
        ],
    );
    contract.check("MaintenanceRequest", &[to_value(MaintenanceRequest { reason: s("motor") })]);
    let maintenance = |reason: Option<String>| MaintenanceResponse {
        success: true,
        message: s("done"),
        device: s("arm-1"),
        health: s(if reason.is_some() { "maintenance" } else { "unknown" }),
        reason,
    };
    contract.check("MaintenanceResponse", &[to_value(maintenance(Some(s("motor")))), to_value(maintenance(None))]);
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
    contract.check(
        "CheckResponse",
        &[to_value(CheckResponse {
            success: true,
            message: s("passed"),
            device: s("arm-1"),
            health: s("good"),
            check: check(Some(s("admin@example.com"))),
        })],
    );
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
    contract.check("BoardHealthResponse", &[to_value(report(Some(s("no READY")))), to_value(report(None))]);

    // The slot-booking socket, server side.
    contract
        .check("SlotsUpdateMessage", &[to_value(BookingServerMessage::SlotsUpdate { data: slots, timestamp: utc() })]);
    let reply = |full: bool| BookingReply {
        success: full,
        message: s("done"),
        slot_id: 9,
        code: full.then(|| s("slot_unavailable")),
        date: full.then(|| s("2026-11-24")),
        device: full.then(|| s("arm-1")),
    };
    contract.check(
        "BookingResponseMessage",
        &[
            to_value(BookingServerMessage::BookingResponse(reply(true))),
            to_value(BookingServerMessage::BookingResponse(reply(false))),
        ],
    );
    contract.check(
        "CancellationResponseMessage",
        &[
            to_value(BookingServerMessage::CancellationResponse(reply(true))),
            to_value(BookingServerMessage::CancellationResponse(reply(false))),
        ],
    );
    // Both sockets' errors share one schema; only the console always sends a code.
    contract.check(
        "WsErrorMessage",
        &[
            to_value(BookingServerMessage::Error { message: s("bad"), code: Some(s("invalid_message")) }),
            to_value(BookingServerMessage::Error { message: s("bad"), code: None }),
            to_value(ConsoleServerMessage::Error { code: s("device_offline"), message: s("offline") }),
        ],
    );

    // The console socket, server side.
    contract.check(
        "ConnectionEstablishedMessage",
        &[to_value(ConsoleServerMessage::ConnectionEstablished {
            device_number: 0,
            device: s("arm-1"),
            device_info: DeviceDescription { model: s("mega2560"), port: s("/dev/ttyACM0"), description: s("Arm") },
            online: true,
            message: s("connected"),
        })],
    );
    let output = |base64: Option<String>| ConsoleServerMessage::SerialOutput {
        device_number: 0,
        output: s("hello"),
        timestamp: utc(),
        output_base64: base64,
    };
    contract.check("SerialOutputMessage", &[to_value(output(Some(s("aGVsbG8=")))), to_value(output(None))]);
    let progress = |message: Option<String>| ConsoleServerMessage::UploadProgress {
        phase: UploadPhase::Write,
        percent: 50,
        message,
    };
    contract.check("UploadProgressMessage", &[to_value(progress(Some(s("done")))), to_value(progress(None))]);
    contract.check("SessionEndedMessage", &[to_value(ConsoleServerMessage::SessionEnded { message: s("over") })]);
    contract.check(
        "DeviceStatusMessage",
        &[to_value(ConsoleServerMessage::DeviceStatus { online: true, message: s("back") })],
    );

    // What clients send.
    contract.check("EmailPassword", &[to_value(EmailPassword { email: s("a@example.com"), password: s("p") })]);
    contract.check(
        "ChangePasswordRequest",
        &[to_value(ChangePasswordRequest { old_password: s("old"), new_password: s("new") })],
    );
    contract.check(
        "PasswordChangedResponse",
        &[to_value(PasswordChangedResponse {
            success: true,
            message: s("changed"),
            token: s("t"),
            token_type: s("bearer"),
            expires_in: 3600,
        })],
    );
    contract.check("LoggedOutResponse", &[to_value(LoggedOutResponse { success: true, message: s("bye") })]);
    contract.check(
        "SlotRequest",
        &[
            to_value(SlotRequest {
                slot_id: 9,
                date: Some(date(2026, 12, 1)),
                device: Some(DeviceRef::Id(s("arm-1"))),
                credentials: credentials.clone(),
            }),
            to_value(SlotRequest { slot_id: 9, date: None, device: None, credentials: BodyCredentials::default() }),
        ],
    );
    contract.check(
        "CredentialsInBody",
        &[
            to_value(MyBookingsRequest { history: Some(true), credentials: credentials.clone() }),
            to_value(MyBookingsRequest::default()),
        ],
    );
    contract.check("AccountRequest", &[to_value(EmailRequest { email: s("a@example.com") })]);
    contract.check(
        "CompileRequest",
        &[
            to_value(CompileRequest {
                code: s("void setup(){}"),
                file_name: Some(s("blink.ino")),
                model: Some(s("mega2560")),
                device: Some(DeviceRef::Number(0)),
            }),
            to_value(CompileRequest { code: s("void setup(){}"), file_name: None, model: None, device: None }),
        ],
    );
    contract.check(
        "UploadCodeRequest",
        &[
            to_value(UploadCodeRequest { code: s("void setup(){}"), file_name: None }),
            to_value(UploadCodeRequest { code: s("void setup(){}"), file_name: Some(s("blink.ino")) }),
        ],
    );
    contract.check("ConsoleAuthMessage", &[to_value(&credentials), to_value(BodyCredentials::default())]);
    contract.check(
        "ConsoleInputMessage",
        &[to_value(ConsoleClientMessage::Input(crate::wire::ConsoleInput { data: s("x") }))],
    );
    let slot_message = |full: bool| SlotMessage {
        slot_id: full.then_some(9),
        date: full.then(|| date(2026, 12, 1)),
        device: full.then_some(DeviceRef::Number(0)),
        credentials: if full { credentials.clone() } else { BodyCredentials::default() },
    };
    contract.check(
        "BookSlotMessage",
        &[
            to_value(BookingClientMessage::BookSlot(slot_message(true))),
            to_value(BookingClientMessage::BookSlot(slot_message(false))),
        ],
    );
    contract.check(
        "CancelSlotMessage",
        &[
            to_value(BookingClientMessage::CancelSlot(slot_message(true))),
            to_value(BookingClientMessage::CancelSlot(slot_message(false))),
        ],
    );
    contract.check(
        "GetSlotsMessage",
        &[
            to_value(BookingClientMessage::GetSlots(crate::wire::GetSlots {
                date: Some(date(2026, 12, 1)),
                device: Some(DeviceRef::Number(0)),
            })),
            to_value(BookingClientMessage::GetSlots(crate::wire::GetSlots { date: None, device: None })),
        ],
    );
    super::sessions::check_examples(&mut contract);
    super::camera::check_examples(&mut contract);
    contract.finish();
}

/// The document's `enum` lists of closed sets name exactly the Rust enum's
/// variants, as serde spells them: a variant added in Rust shows up here.
#[test]
fn enum_lists_are_the_rust_enums() {
    use crate::wire::{SlotStatus, UploadMethod, UploadPhase, UploadResult};

    fn words<T: serde::Serialize>(all: &[T]) -> Vec<Value> {
        all.iter().map(|v| serde_json::to_value(v).unwrap()).collect()
    }
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    let listed = |schema: &str, property: &str| {
        let mut list = schemas[schema]["properties"][property]["enum"].as_array().cloned().unwrap_or_default();
        list.sort_by_key(Value::to_string);
        list
    };
    for (schema, property, mut want) in [
        ("Slot", "status", words(&SlotStatus::ALL)),
        ("UploadProgressMessage", "phase", words(&UploadPhase::ALL)),
        ("UploadLogJson", "method", words(&UploadMethod::ALL)),
        ("UploadLogJson", "result", words(&UploadResult::ALL)),
    ] {
        want.sort_by_key(Value::to_string);
        assert_eq!(listed(schema, property), want, "{schema}.{property}");
    }
}
