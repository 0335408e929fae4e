//! Reading client JSON field by field, so every error names the field and says
//! what was expected. Shared by HTTP bodies and WebSocket messages.

use jiff::civil::Date;
use serde_json::{Map, Value};

use crate::app::{AppError, DeviceRef};

/// A JSON object sent by a client.
#[derive(Clone, Debug, Default)]
pub struct JsonObject(Map<String, Value>);

impl JsonObject {
    /// Parses `bytes` as a JSON object; an empty body is an empty object.
    pub fn parse(bytes: &[u8]) -> Result<JsonObject, AppError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonObject::default());
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(JsonObject(map)),
            Ok(_) => Err(AppError::invalid("body", "body must be a JSON object")),
            Err(e) => Err(AppError::invalid("body", format!("body is not valid JSON: {e}"))),
        }
    }

    /// A field's value; `null` counts as absent.
    fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field).filter(|v| !v.is_null())
    }

    pub fn str(&self, field: &'static str) -> Result<Option<&str>, AppError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(field, "a string", other)),
        }
    }

    /// A file's name as the client knows it (`blink.ino`): a name, not a
    /// path, printable, at most 100 characters.
    pub fn file_name(&self, field: &'static str) -> Result<Option<String>, AppError> {
        let Some(name) = self.str(field)? else { return Ok(None) };
        let bad = |message: &str| AppError::InvalidField { field, message: message.to_owned() };
        if name.is_empty() || name.chars().count() > 100 {
            return Err(bad("must be 1 to 100 characters"));
        }
        if name.contains('/') || name.contains('\\') || name == "." || name == ".." {
            return Err(bad("must be a file's name, not a path"));
        }
        if name.chars().any(char::is_control) {
            return Err(bad("must not hold control characters"));
        }
        Ok(Some(name.to_owned()))
    }

    pub fn required_str(&self, field: &'static str) -> Result<&str, AppError> {
        self.str(field)?.ok_or_else(|| missing(field))
    }

    /// An integer; `"9"` and `9.5` are refused rather than guessed at.
    pub fn int(&self, field: &'static str) -> Result<Option<i64>, AppError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Ok(Some(i)),
                None => Err(wrong_type(field, "an integer", &Value::Number(n.clone()))),
            },
            Some(other) => Err(wrong_type(field, "an integer", other)),
        }
    }

    pub fn required_int(&self, field: &'static str) -> Result<i64, AppError> {
        self.int(field)?.ok_or_else(|| missing(field))
    }

    pub fn bool(&self, field: &'static str) -> Result<Option<bool>, AppError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(field, "true or false", other)),
        }
    }

    /// A calendar date, `YYYY-MM-DD`.
    pub fn date(&self, field: &'static str) -> Result<Option<Date>, AppError> {
        self.str(field)?.map(|text| parse_date(field, text)).transpose()
    }

    /// A device, by number or id.
    pub fn device(&self, field: &'static str) -> Result<Option<DeviceRef>, AppError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(DeviceRef::parse(s))),
            Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64().map(DeviceRef::Number)),
            Some(other) => Err(wrong_type(field, "a device number or id", other)),
        }
    }
}

pub fn parse_date(field: &'static str, text: &str) -> Result<Date, AppError> {
    let valid_shape = text.len() == 10 && text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-';
    match text.parse::<Date>() {
        Ok(date) if valid_shape => Ok(date),
        _ => Err(AppError::invalid(field, format!("{field} must be a date as YYYY-MM-DD, got {text:?}"))),
    }
}

fn missing(field: &'static str) -> AppError {
    AppError::MissingField(field)
}

fn wrong_type(field: &'static str, expected: &str, got: &Value) -> AppError {
    let got = match got {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("the string {:?}", truncate(s)),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    };
    AppError::invalid(field, format!("{field} must be {expected}, got {got}"))
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_owned(),
    }
}

/// Generators of client JSON for the property tests here and in `wire`.
#[cfg(test)]
pub(crate) mod strategies {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    /// The field names the request types read, so generated objects hit them.
    pub const FIELDS: [&str; 16] = [
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
        "body",
        "",
        "\u{0}",
    ];

    /// Any JSON scalar, including numbers no field reader accepts (floats, huge integers).
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

    /// What a field reader expects, to generate values it must refuse.
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

    fn obj(text: &str) -> JsonObject {
        JsonObject::parse(text.as_bytes()).unwrap()
    }

    fn field_of(e: AppError) -> &'static str {
        match e {
            AppError::InvalidField { field, .. } | AppError::MissingField(field) => field,
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn integers_must_be_integers() {
        assert_eq!(obj(r#"{"slot_id": 9}"#).required_int("slot_id").unwrap(), 9);
        assert_eq!(obj(r#"{"slot_id": -1}"#).required_int("slot_id").unwrap(), -1);
        for bad in [r#"{"slot_id": "9"}"#, r#"{"slot_id": 9.5}"#, r#"{"slot_id": true}"#, r#"{"slot_id": 1e40}"#] {
            assert_eq!(field_of(obj(bad).required_int("slot_id").unwrap_err()), "slot_id", "{bad}");
        }
        assert!(matches!(obj("{}").required_int("slot_id"), Err(AppError::MissingField("slot_id"))));
        assert!(matches!(obj(r#"{"slot_id": null}"#).required_int("slot_id"), Err(AppError::MissingField("slot_id"))));
    }

    #[test]
    fn bodies_must_be_objects_of_valid_json() {
        for bad in ["[1]", "\"x\"", "{", "{\"a\":1}}"] {
            assert_eq!(field_of(JsonObject::parse(bad.as_bytes()).unwrap_err()), "body", "{bad}");
        }
        assert_eq!(field_of(JsonObject::parse(b"{\"email\": \"\xff\"}").unwrap_err()), "body");
        assert!(JsonObject::parse(b"").is_ok());
    }

    #[test]
    fn dates_are_strict() {
        assert_eq!(obj(r#"{"date": "2026-11-24"}"#).date("date").unwrap(), Some(jiff::civil::date(2026, 11, 24)));
        for bad in ["2026-13-01", "2026-02-30", "24.11.2026", "2026-1-1", "tomorrow", "20261124"] {
            let text = format!(r#"{{"date": "{bad}"}}"#);
            assert_eq!(field_of(obj(&text).date("date").unwrap_err()), "date", "{bad}");
        }
    }

    #[test]
    fn devices_are_numbers_or_ids() {
        assert_eq!(obj(r#"{"device": 1}"#).device("device").unwrap(), Some(DeviceRef::Number(1)));
        assert_eq!(obj(r#"{"device": "1"}"#).device("device").unwrap(), Some(DeviceRef::Number(1)));
        assert_eq!(obj(r#"{"device": "arm-1"}"#).device("device").unwrap(), Some(DeviceRef::Id("arm-1".into())));
        assert!(obj(r#"{"device": 1.5}"#).device("device").is_err());
    }

    mod properties {
        use proptest::prelude::*;
        use serde_json::Value;

        use super::super::strategies::{self, Kind};
        use super::*;

        /// Every reader on `field`: none may panic, and any error names `field`.
        fn read_all(object: &JsonObject, field: &'static str) -> Result<(), TestCaseError> {
            let results = [
                object.str(field).err(),
                object.required_str(field).err(),
                object.int(field).err(),
                object.required_int(field).err(),
                object.bool(field).err(),
                object.date(field).err(),
                object.device(field).err(),
            ];
            for error in results.into_iter().flatten() {
                prop_assert_eq!(error.field(), Some(field), "{}", error);
            }
            Ok(())
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
                if let Err(e) = JsonObject::parse(&bytes) {
                    prop_assert_eq!(e.field(), Some("body"));
                }
            }

            #[test]
            fn arbitrary_values_never_panic(value in strategies::value()) {
                let text = value.to_string();
                match JsonObject::parse(text.as_bytes()) {
                    Ok(object) => {
                        prop_assert!(value.is_object());
                        for field in strategies::FIELDS {
                            read_all(&object, field)?;
                        }
                    }
                    Err(e) => {
                        prop_assert!(!value.is_object(), "an object was refused: {}", e);
                        prop_assert_eq!(e.field(), Some("body"));
                    }
                }
            }

            #[test]
            fn arbitrary_objects_only_fail_on_their_own_fields(map in strategies::object()) {
                let object = JsonObject::parse(Value::Object(map).to_string().as_bytes()).expect("an object");
                for field in strategies::FIELDS {
                    read_all(&object, field)?;
                }
            }

            #[test]
            fn a_wrong_type_is_refused_naming_the_field(
                (kind, value) in prop_oneof![
                    Just(Kind::Str), Just(Kind::Int), Just(Kind::Bool), Just(Kind::Date), Just(Kind::Device)
                ].prop_flat_map(|kind| (Just(kind), strategies::wrong_for(kind))),
            ) {
                let object = obj(&serde_json::json!({ "field": value, "other": 1 }).to_string());
                let error = match kind {
                    Kind::Str => object.str("field").err(),
                    Kind::Int => object.int("field").err(),
                    Kind::Bool => object.bool("field").err(),
                    Kind::Date => object.date("field").err(),
                    Kind::Device => object.device("field").err(),
                };
                let error = error.ok_or_else(|| TestCaseError::fail(format!("{kind:?} accepted {value}")))?;
                prop_assert_eq!(error.field(), Some("field"));
                prop_assert!(error.to_string().contains("field must be"), "{}", error);
            }

            #[test]
            fn dates_in_the_wire_format_read_back(year in 0i16..=9999, month in 1i8..=12, day in 1i8..=31) {
                if let Ok(date) = jiff::civil::Date::new(year, month, day) {
                    let object = obj(&serde_json::json!({ "date": date }).to_string());
                    prop_assert_eq!(object.date("date").expect("a valid date"), Some(date));
                }
            }
        }
    }
}
