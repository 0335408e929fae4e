//! How the server reads what clients send: a JSON object decoded with serde
//! into one of this crate's request types. A wrong type is refused, never
//! coerced (`"9"` is not 9, `9.5` is not 9), and every refusal names the
//! field at fault and says what was expected:
//! `slot_id must be an integer, got the string "9"`.
//!
//! Unknown fields are ignored, as the seed backend ignored them, and `null`
//! counts as absent.

use std::fmt;

use jiff::civil::Date;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Why a client's JSON was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A field the request needs is absent or `null`.
    #[error("{0} is required")]
    Missing(String),
    /// A field holds the wrong type or value. `field` is `body` when the body
    /// as a whole is at fault (not JSON, or not an object).
    #[error("{message}")]
    Invalid { field: String, message: String },
}

impl DecodeError {
    /// The request field at fault.
    pub fn field(&self) -> &str {
        match self {
            DecodeError::Missing(field) | DecodeError::Invalid { field, .. } => field,
        }
    }

    /// Whether the body itself, rather than one of its fields, was refused.
    pub fn is_body(&self) -> bool {
        matches!(self, DecodeError::Invalid { field, .. } if field == "body")
    }

    fn body(message: String) -> DecodeError {
        DecodeError::Invalid { field: "body".to_owned(), message }
    }
}

/// Parses `bytes` as a JSON object; an empty body is an empty object.
pub fn object(bytes: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(DecodeError::body("body must be a JSON object".to_owned())),
        Err(e) => Err(DecodeError::body(format!("body is not valid JSON: {e}"))),
    }
}

/// A socket message's `type`: `None` when it has none.
pub fn message_type(object: &Map<String, Value>) -> Result<Option<&str>, DecodeError> {
    match object.get("type") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(kind)) => Ok(Some(kind)),
        Some(other) => Err(invalid("type", "a string", &describe(other))),
    }
}

/// Decodes `T` from `object`, turning serde's error into one that names the field.
pub(crate) fn fields<T: DeserializeOwned>(object: &Map<String, Value>) -> Result<T, DecodeError> {
    // serde_json's `&Map` deserializer has no `&Value` to borrow from, so go
    // through a `MapDeserializer` over the entries.
    let deserializer = de::value::MapDeserializer::new(object.iter().map(|(k, v)| (k.as_str(), v)));
    serde_path_to_error::deserialize::<_, T>(deserializer).map_err(|error| {
        let path = error.path().to_string();
        explain(&path, &error.into_inner().to_string())
    })
}

/// Rewrites serde's wording (`invalid type: string "9", expected i64`) as
/// the field's own sentence (`slot_id must be an integer, got the string "9"`).
fn explain(path: &str, serde_message: &str) -> DecodeError {
    if let Some(rest) = serde_message.strip_prefix("missing field `") {
        return DecodeError::Missing(rest.trim_end_matches('`').to_owned());
    }
    let field = if path == "." || path.is_empty() { "body" } else { path };
    let parts = serde_message
        .strip_prefix("invalid type: ")
        .or_else(|| serde_message.strip_prefix("invalid value: "))
        .and_then(|rest| rest.rsplit_once(", expected "));
    match parts {
        Some(("null", _)) => DecodeError::Missing(field.to_owned()),
        Some((got, expected)) => invalid(field, expected_words(expected), &got_words(got)),
        // A message of this crate's own readers: "must be ...".
        None => DecodeError::Invalid { field: field.to_owned(), message: format!("{field} {serde_message}") },
    }
}

fn invalid(field: &str, expected: &str, got: &str) -> DecodeError {
    DecodeError::Invalid { field: field.to_owned(), message: format!("{field} must be {expected}, got {got}") }
}

/// serde's names for what a field takes, as a sentence says them.
fn expected_words(expected: &str) -> &str {
    match expected {
        "i64" | "i32" | "u64" | "u32" | "u16" | "u8" | "usize" => "an integer",
        "a boolean" => "true or false",
        other => other,
    }
}

/// serde's description of a wrong value (`string "9"`, `floating point
/// `9.5``), as a sentence says it, and short: a hostile client's 60 KiB
/// string is not echoed back.
fn got_words(got: &str) -> String {
    if let Some(text) = got.strip_prefix("string ") {
        return format!("the string {}", truncate(text));
    }
    for prefix in ["integer ", "floating point ", "boolean "] {
        if let Some(value) = got.strip_prefix(prefix) {
            return value.trim_matches('`').to_owned();
        }
    }
    match got {
        "sequence" => "a list".to_owned(),
        "map" => "an object".to_owned(),
        other => truncate(other),
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("the string {}", truncate(&format!("{s:?}"))),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_owned(),
    }
}

/// How a request names a board, by number or by id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DeviceRef {
    Number(i64),
    Id(String),
}

impl DeviceRef {
    /// Reads a query or path value: digits are a number, anything else an id.
    pub fn parse(text: &str) -> DeviceRef {
        match text.parse::<i64>() {
            Ok(n) => DeviceRef::Number(n),
            Err(_) => DeviceRef::Id(text.to_owned()),
        }
    }
}

impl Serialize for DeviceRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            DeviceRef::Number(n) => serializer.serialize_i64(*n),
            DeviceRef::Id(id) => serializer.serialize_str(id),
        }
    }
}

impl<'de> Deserialize<'de> for DeviceRef {
    /// A number, or a string read as [`DeviceRef::parse`] reads it (`"1"` is
    /// device 1, as in a path).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<DeviceRef, D::Error> {
        struct DeviceVisitor;

        impl Visitor<'_> for DeviceVisitor {
            type Value = DeviceRef;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a device number or id")
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<DeviceRef, E> {
                Ok(DeviceRef::Number(n))
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<DeviceRef, E> {
                i64::try_from(n)
                    .map(DeviceRef::Number)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(n), &self))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<DeviceRef, E> {
                Ok(DeviceRef::parse(text))
            }
        }

        deserializer.deserialize_any(DeviceVisitor)
    }
}

/// Readers for the fields whose rules serde's own types do not have, for
/// `#[serde(deserialize_with = ...)]`. Each error is a phrase the field's
/// name starts (`date must be a date as YYYY-MM-DD, got "tomorrow"`).
pub(crate) mod field {
    use super::*;

    /// An optional calendar date, exactly `YYYY-MM-DD`.
    pub fn date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Date>, D::Error> {
        struct Strict(Date);

        impl<'de> Deserialize<'de> for Strict {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Strict, D::Error> {
                let text =
                    String::deserialize(deserializer).map_err(|_| de::Error::custom("must be a date as YYYY-MM-DD"))?;
                parse_date(&text).map(Strict).ok_or_else(|| de::Error::custom(not_a_date(&text)))
            }
        }

        Ok(Option::<Strict>::deserialize(deserializer)?.map(|strict| strict.0))
    }

    /// A file's name as the client knows it (`blink.ino`): a name, not a
    /// path, printable, at most 100 characters.
    pub fn file_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
        let Some(name) = Option::<String>::deserialize(deserializer)? else { return Ok(None) };
        if name.is_empty() || name.chars().count() > 100 {
            return Err(de::Error::custom("must be 1 to 100 characters"));
        }
        if name.contains('/') || name.contains('\\') || name == "." || name == ".." {
            return Err(de::Error::custom("must be a file's name, not a path"));
        }
        if name.chars().any(char::is_control) {
            return Err(de::Error::custom("must not hold control characters"));
        }
        Ok(Some(name))
    }
}

/// A calendar date as the wire writes it, `YYYY-MM-DD`, and nothing looser.
pub fn parse_date(text: &str) -> Option<Date> {
    let valid_shape = text.len() == 10 && text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-';
    text.parse::<Date>().ok().filter(|_| valid_shape)
}

/// A date given as a query parameter `field`, read as [`parse_date`] reads it.
pub fn date_param(field: &str, text: &str) -> Result<Date, DecodeError> {
    parse_date(text).ok_or_else(|| DecodeError::Invalid {
        field: field.to_owned(),
        message: format!("{field} {}", not_a_date(text)),
    })
}

fn not_a_date(text: &str) -> String {
    format!("must be a date as YYYY-MM-DD, got {}", truncate(&format!("{text:?}")))
}

/// Generators of client JSON for the property tests here and in `requests`.
#[cfg(test)]
pub(crate) mod strategies {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    /// The field names the request types read, so generated objects hit them.
    pub const FIELDS: [&str; 17] = [
        "type",
        "slot_id",
        "date",
        "device",
        "token",
        "email",
        "password",
        "history",
        "code",
        "model",
        "data",
        "old_password",
        "new_password",
        "file_name",
        "reason",
        "",
        "\u{0}",
    ];

    /// Any JSON scalar, including numbers no field accepts (floats, huge integers).
    pub fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
            "[0-9]{4}-[0-9]{2}-[0-9]{2}".prop_map(Value::String),
            prop_oneof![Just("book_slot"), Just("cancel_slot"), Just("get_slots"), Just("input")]
                .prop_map(|t| Value::String(t.to_owned())),
        ]
    }

    /// Any JSON value, nested a few levels.
    pub fn value() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..6)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    /// A known field name most of the time, any string otherwise.
    pub fn key() -> impl Strategy<Value = String> {
        prop_oneof![3 => prop::sample::select(&FIELDS[..]).prop_map(str::to_owned), 1 => ".{0,8}"]
    }

    /// A JSON object whose keys are mostly the ones requests read.
    pub fn object() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::vec((key(), value()), 0..8).prop_map(|pairs| pairs.into_iter().collect())
    }

    /// What a field takes, to generate values it must refuse.
    #[derive(Clone, Copy, Debug)]
    pub enum Kind {
        Str,
        Int,
        Bool,
        Date,
        Device,
    }

    /// A non-null value of the wrong type for `kind` (null means absent).
    pub fn wrong_for(kind: Kind) -> impl Strategy<Value = Value> {
        value().prop_filter("a value of the right type", move |v| match (kind, v) {
            (_, Value::Null) => false,
            (Kind::Str | Kind::Date, Value::String(_)) => false,
            (Kind::Int, Value::Number(n)) => !n.is_i64(),
            (Kind::Bool, Value::Bool(_)) => false,
            (Kind::Device, Value::String(_)) => false,
            (Kind::Device, Value::Number(n)) => !n.is_i64(),
            _ => true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Probe {
        #[serde(default)]
        n: Option<i64>,
        #[serde(default)]
        flag: Option<bool>,
        #[serde(default, deserialize_with = "field::date")]
        date: Option<Date>,
        #[serde(default)]
        device: Option<DeviceRef>,
        #[serde(default)]
        text: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    struct Needs {
        #[allow(dead_code)]
        slot_id: i64,
    }

    /// Reads a body as the server does (`requests::request`, less the credentials).
    fn request<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
        fields(&object(bytes)?)
    }

    fn probe(text: &str) -> Result<Probe, DecodeError> {
        request(text.as_bytes())
    }

    fn message(e: DecodeError) -> String {
        e.to_string()
    }

    #[test]
    fn integers_must_be_integers() {
        assert_eq!(probe(r#"{"n": -1}"#).unwrap().n, Some(-1));
        assert_eq!(message(probe(r#"{"n": "9"}"#).unwrap_err()), r#"n must be an integer, got the string "9""#);
        assert_eq!(message(probe(r#"{"n": 9.5}"#).unwrap_err()), "n must be an integer, got 9.5");
        assert_eq!(message(probe(r#"{"n": true}"#).unwrap_err()), "n must be an integer, got true");
        assert_eq!(probe(r#"{"n": 1e40}"#).unwrap_err().field(), "n");
        assert_eq!(probe(r#"{"n": 18446744073709551615}"#).unwrap_err().field(), "n");
        assert_eq!(message(probe(r#"{"flag": 1}"#).unwrap_err()), "flag must be true or false, got 1");
        assert_eq!(message(probe(r#"{"text": [1]}"#).unwrap_err()), "text must be a string, got a list");
    }

    #[test]
    fn a_missing_or_null_field_is_named() {
        assert_eq!(request::<Needs>(b"{}").unwrap_err(), DecodeError::Missing("slot_id".to_owned()));
        assert_eq!(request::<Needs>(br#"{"slot_id": null}"#).unwrap_err(), DecodeError::Missing("slot_id".to_owned()));
        assert_eq!(probe(r#"{"n": null, "unknown": [1, 2]}"#).unwrap().n, None);
    }

    #[test]
    fn bodies_must_be_objects_of_valid_json() {
        for bad in ["[1]", "\"x\"", "{", "{\"a\":1}}"] {
            assert!(probe(bad).unwrap_err().is_body(), "{bad}");
        }
        assert!(request::<Probe>(b"{\"text\": \"\xff\"}").unwrap_err().is_body());
        assert_eq!(probe("  ").unwrap().n, None);
    }

    #[test]
    fn dates_are_strict() {
        assert_eq!(probe(r#"{"date": "2026-11-24"}"#).unwrap().date, Some(jiff::civil::date(2026, 11, 24)));
        for bad in ["2026-13-01", "2026-02-30", "24.11.2026", "2026-1-1", "tomorrow", "20261124", "2026-11-24T10:00"] {
            let error = probe(&format!(r#"{{"date": "{bad}"}}"#)).unwrap_err();
            assert_eq!(error.field(), "date", "{bad}");
            assert!(error.to_string().starts_with("date must be a date as YYYY-MM-DD"), "{error}");
        }
        assert_eq!(probe(r#"{"date": 5}"#).unwrap_err().field(), "date");
    }

    #[test]
    fn devices_are_numbers_or_ids() {
        assert_eq!(probe(r#"{"device": 1}"#).unwrap().device, Some(DeviceRef::Number(1)));
        assert_eq!(probe(r#"{"device": "1"}"#).unwrap().device, Some(DeviceRef::Number(1)));
        assert_eq!(probe(r#"{"device": "arm-1"}"#).unwrap().device, Some(DeviceRef::Id("arm-1".into())));
        let error = probe(r#"{"device": 1.5}"#).unwrap_err();
        assert_eq!(error.to_string(), "device must be a device number or id, got 1.5");
    }

    #[test]
    fn long_strings_are_not_echoed_back() {
        let long = "x".repeat(10_000);
        let error = probe(&format!(r#"{{"n": "{long}"}}"#)).unwrap_err();
        assert!(error.to_string().len() < 100, "{error}");
    }

    #[test]
    fn socket_message_types() {
        let object = object(br#"{"type": "book_slot"}"#).unwrap();
        assert_eq!(message_type(&object).unwrap(), Some("book_slot"));
        assert_eq!(message_type(&Map::new()).unwrap(), None);
        let object = super::object(br#"{"type": 4}"#).unwrap();
        assert_eq!(message_type(&object).unwrap_err().to_string(), "type must be a string, got 4");
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::strategies::{self, Kind};
        use super::*;

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
                if let Err(e) = request::<Probe>(&bytes) {
                    prop_assert!(["body", "n", "flag", "date", "device", "text"].contains(&e.field()), "{e}");
                }
            }

            #[test]
            fn a_wrong_type_is_refused_naming_the_field(
                (kind, value) in prop_oneof![
                    Just(Kind::Str), Just(Kind::Int), Just(Kind::Bool), Just(Kind::Date), Just(Kind::Device)
                ].prop_flat_map(|kind| (Just(kind), strategies::wrong_for(kind))),
            ) {
                let field = match kind {
                    Kind::Str => "text",
                    Kind::Int => "n",
                    Kind::Bool => "flag",
                    Kind::Date => "date",
                    Kind::Device => "device",
                };
                let body = serde_json::json!({ field: value, "other": 1 }).to_string();
                let error = probe(&body).err().ok_or_else(|| TestCaseError::fail(format!("{kind:?} accepted {value}")))?;
                prop_assert_eq!(error.field(), field);
                prop_assert!(error.to_string().starts_with(&format!("{field} must be")), "{}", error);
            }

            #[test]
            fn dates_in_the_wire_format_read_back(year in 0i16..=9999, month in 1i8..=12, day in 1i8..=31) {
                if let Ok(date) = jiff::civil::Date::new(year, month, day) {
                    let body = serde_json::json!({ "date": date }).to_string();
                    prop_assert_eq!(probe(&body).expect("a valid date").date, Some(date));
                }
            }
        }
    }
}
