//! What clients send: every request body of the HTTP API and every client
//! message of both WebSocket protocols, typed.
//!
//! Clients serialize these with serde; the server reads them with
//! [`decode`](crate::decode), which names the field at fault and what was
//! expected (`slot_id must be an integer, got the string "9"`) and never
//! coerces `"9"` into 9.

use jiff::civil::Date;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::decode::{self, DecodeError, DeviceRef, field};

/// A request body the server reads with [`request`].
pub trait Request: DeserializeOwned {
    /// Where the seed's in-body credentials go, for the requests that take
    /// them. They are read from the same object on their own, because serde
    /// cannot say which field failed inside a flattened struct.
    fn credentials_mut(&mut self) -> Option<&mut BodyCredentials> {
        None
    }
}

/// Reads a request body; an empty body is an empty object.
pub fn request<T: Request>(bytes: &[u8]) -> Result<T, DecodeError> {
    object_fields(&decode::object(bytes)?)
}

/// Reads a request from an object already parsed (a socket message).
pub fn object_fields<T: Request>(object: &Map<String, Value>) -> Result<T, DecodeError> {
    let mut request: T = decode::fields(object)?;
    if let Some(credentials) = request.credentials_mut() {
        *credentials = decode::fields(object)?;
    }
    Ok(request)
}

/// The seed's in-body credentials: a `token`, or `email` and `password`.
/// Routes that take them also take `Authorization: Bearer`, which wins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BodyCredentials {
    /// A token from `/auth/login`, in the body instead of the header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// With `password`, instead of a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(extend("format" = "password")))]
    pub password: Option<String>,
}

impl Request for BodyCredentials {}

/// `POST /auth/register` and `POST /auth/login`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EmailPassword {
    #[cfg_attr(feature = "schema", schemars(extend("format" = "email")))]
    pub email: String,
    /// At most 72 bytes.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "password")))]
    pub password: String,
}

impl Request for EmailPassword {}

/// `POST /auth/password`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChangePasswordRequest {
    #[cfg_attr(feature = "schema", schemars(extend("format" = "password")))]
    pub old_password: String,
    /// At least `auth.min_password_length` characters, at most 72 bytes.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "password")))]
    pub new_password: String,
}

impl Request for ChangePasswordRequest {}

/// `POST /book-slot` and `POST /cancel-slot`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SlotRequest {
    /// Index of the slot in the day (0..23 for hourly slots).
    pub slot_id: i64,
    /// Default today in the lab's zone.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "field::date")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<crate::schema::IsoDate>"))]
    pub date: Option<Date>,
    /// Default the first device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceRef>,
    #[serde(flatten, skip_deserializing)]
    pub credentials: BodyCredentials,
}

impl Request for SlotRequest {
    fn credentials_mut(&mut self) -> Option<&mut BodyCredentials> {
        Some(&mut self.credentials)
    }
}

/// `GET`/`POST /my-bookings` (`history` may also come as a query parameter).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MyBookingsRequest {
    /// Also list past bookings (`/my-bookings` only; the query parameter wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<bool>,
    #[serde(flatten, skip_deserializing)]
    pub credentials: BodyCredentials,
}

impl Request for MyBookingsRequest {
    fn credentials_mut(&mut self) -> Option<&mut BodyCredentials> {
        Some(&mut self.credentials)
    }
}

/// `POST /admin/users/disable` and `/admin/users/enable`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EmailRequest {
    pub email: String,
}

impl Request for EmailRequest {}

/// `POST /devices/compile`: the sketch, for a model (or the device's model).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CompileRequest {
    /// The sketch's source code.
    pub code: String,
    /// The sketch's file name on the student's side (`blink.ino`): compiler
    /// messages name it instead of the lab's build path. Default `sketch.ino`.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "field::file_name")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 100)))]
    pub file_name: Option<String>,
    /// The board model to compile for; default the device's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceRef>,
}

impl Request for CompileRequest {}

/// `POST /devices/upload/{device}` as JSON: a sketch to compile, then flash.
/// (Firmware itself is sent as the raw body instead.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UploadCodeRequest {
    /// The sketch's source code, compiled for the device.
    pub code: String,
    /// The sketch's file name on the student's side (`blink.ino`), not a path.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "field::file_name")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 100)))]
    pub file_name: Option<String>,
}

impl Request for UploadCodeRequest {}

/// `POST /admin/devices/maintenance/{device}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MaintenanceRequest {
    /// Why: 1 to 500 characters.
    pub reason: String,
}

impl Request for MaintenanceRequest {}

/// A `/slot-booking` message from a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BookingClientMessage {
    BookSlot(SlotMessage),
    CancelSlot(SlotMessage),
    GetSlots(GetSlots),
    /// Says whose socket this is (`token`, or `email`+`password`), so it
    /// gets that account's `session_ending` warnings.
    Identify(BodyCredentials),
}

/// `book_slot` and `cancel_slot` over `/slot-booking`: as [`SlotRequest`],
/// but a missing `slot_id` gets the seed's own answer rather than a 422's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SlotMessage {
    /// Index of the slot in the day; without it the answer is a failed reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "field::date")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<crate::schema::IsoDate>"))]
    pub date: Option<Date>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceRef>,
    #[serde(flatten, skip_deserializing)]
    pub credentials: BodyCredentials,
}

impl Request for SlotMessage {
    fn credentials_mut(&mut self) -> Option<&mut BodyCredentials> {
        Some(&mut self.credentials)
    }
}

/// `get_slots` over `/slot-booking`: a device's day.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct GetSlots {
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "field::date")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<crate::schema::IsoDate>"))]
    pub date: Option<Date>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceRef>,
}

impl Request for GetSlots {}

/// Why a WebSocket message could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum MessageError {
    /// Not a JSON object, or a field of the wrong type.
    Invalid(DecodeError),
    /// No `type`.
    MissingType,
    /// A `type` this protocol does not have.
    UnknownType(String),
}

impl From<DecodeError> for MessageError {
    fn from(error: DecodeError) -> MessageError {
        MessageError::Invalid(error)
    }
}

/// Reads a socket message: its object, and its `type`.
fn message(text: &str) -> Result<(Map<String, Value>, String), MessageError> {
    let object = decode::object(text.as_bytes())?;
    let kind = decode::message_type(&object)?.ok_or(MessageError::MissingType)?.to_owned();
    Ok((object, kind))
}

impl BookingClientMessage {
    pub fn parse(text: &str) -> Result<BookingClientMessage, MessageError> {
        let (object, kind) = message(text)?;
        Ok(match kind.as_str() {
            "book_slot" => BookingClientMessage::BookSlot(object_fields(&object)?),
            "cancel_slot" => BookingClientMessage::CancelSlot(object_fields(&object)?),
            "get_slots" => BookingClientMessage::GetSlots(object_fields(&object)?),
            "identify" => BookingClientMessage::Identify(object_fields(&object)?),
            _ => return Err(MessageError::UnknownType(kind)),
        })
    }
}

/// A `/devices/read/{device}` message from a client, after the first one
/// (which carries only [`BodyCredentials`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConsoleClientMessage {
    /// Text to write to the board (binary frames go byte for byte instead).
    Input(ConsoleInput),
}

/// `input` on the console: text to write to the board.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ConsoleInput {
    pub data: String,
}

impl Request for ConsoleInput {}

impl ConsoleClientMessage {
    pub fn parse(text: &str) -> Result<ConsoleClientMessage, MessageError> {
        let (object, kind) = message(text)?;
        match kind.as_str() {
            "input" => Ok(ConsoleClientMessage::Input(object_fields(&object)?)),
            _ => Err(MessageError::UnknownType(kind)),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::*;
    use crate::decode::strategies::{self, Kind};

    /// The wire format's dates: `YYYY-MM-DD`, so years 0000 to 9999.
    fn date() -> impl Strategy<Value = Date> {
        (0i16..=9999, 1i8..=12, 1i8..=28).prop_map(|(y, m, d)| jiff::civil::date(y, m, d))
    }

    /// A device by number, or by an id that does not read as a number (an id
    /// of digits is the number, by design, see [`DeviceRef::parse`]).
    fn device() -> impl Strategy<Value = DeviceRef> {
        prop_oneof![
            any::<i64>().prop_map(DeviceRef::Number),
            ".{0,12}".prop_filter("reads as a number", |s| s.parse::<i64>().is_err()).prop_map(DeviceRef::Id),
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        ".{0,24}"
    }

    fn credentials() -> impl Strategy<Value = BodyCredentials> {
        (proptest::option::of(text()), proptest::option::of(text()), proptest::option::of(text()))
            .prop_map(|(token, email, password)| BodyCredentials { token, email, password })
    }

    fn slot_request() -> impl Strategy<Value = SlotRequest> {
        (any::<i64>(), proptest::option::of(date()), proptest::option::of(device()), credentials())
            .prop_map(|(slot_id, date, device, credentials)| SlotRequest { slot_id, date, device, credentials })
    }

    fn slot_message() -> impl Strategy<Value = SlotMessage> {
        (
            proptest::option::of(any::<i64>()),
            proptest::option::of(date()),
            proptest::option::of(device()),
            credentials(),
        )
            .prop_map(|(slot_id, date, device, credentials)| SlotMessage {
                slot_id,
                date,
                device,
                credentials,
            })
    }

    fn booking_message() -> impl Strategy<Value = BookingClientMessage> {
        prop_oneof![
            slot_message().prop_map(BookingClientMessage::BookSlot),
            slot_message().prop_map(BookingClientMessage::CancelSlot),
            (proptest::option::of(date()), proptest::option::of(device()))
                .prop_map(|(date, device)| BookingClientMessage::GetSlots(GetSlots { date, device })),
            credentials().prop_map(BookingClientMessage::Identify),
        ]
    }

    /// Serializes `request` as a client would and reads it back.
    fn round_trip<T: Serialize + Request>(value: &T) -> Result<T, DecodeError> {
        request(&serde_json::to_vec(value).expect("serializable"))
    }

    /// A request type as the wrong-type property sees it.
    struct RequestType {
        name: &'static str,
        read: fn(&Map<String, Value>) -> Result<(), DecodeError>,
        /// A body it accepts.
        valid: Value,
        /// The fields it reads, and what each must be.
        fields: Vec<(&'static str, Kind)>,
    }

    /// Each request type with a valid body and the fields it reads.
    fn readers() -> Vec<RequestType> {
        fn read<T: Request>(object: &Map<String, Value>) -> Result<(), DecodeError> {
            object_fields::<T>(object).map(drop)
        }
        let credentials = [("token", Kind::Str), ("email", Kind::Str), ("password", Kind::Str)];
        let t = |name, read, valid, fields| RequestType { name, read, valid, fields };
        vec![
            t("BodyCredentials", read::<BodyCredentials>, serde_json::json!({}), credentials.to_vec()),
            t(
                "EmailPassword",
                read::<EmailPassword>,
                serde_json::json!({"email": "a@b.c", "password": "secret"}),
                vec![("email", Kind::Str), ("password", Kind::Str)],
            ),
            t(
                "ChangePasswordRequest",
                read::<ChangePasswordRequest>,
                serde_json::json!({"old_password": "a", "new_password": "b"}),
                vec![("old_password", Kind::Str), ("new_password", Kind::Str)],
            ),
            t(
                "SlotRequest",
                read::<SlotRequest>,
                serde_json::json!({"slot_id": 3}),
                [("slot_id", Kind::Int), ("date", Kind::Date), ("device", Kind::Device)]
                    .into_iter()
                    .chain(credentials)
                    .collect(),
            ),
            t(
                "MyBookingsRequest",
                read::<MyBookingsRequest>,
                serde_json::json!({}),
                [("history", Kind::Bool)].into_iter().chain(credentials).collect(),
            ),
            t("EmailRequest", read::<EmailRequest>, serde_json::json!({"email": "a@b.c"}), vec![("email", Kind::Str)]),
            t(
                "CompileRequest",
                read::<CompileRequest>,
                serde_json::json!({"code": "void setup() {}"}),
                vec![("code", Kind::Str), ("model", Kind::Str), ("device", Kind::Device)],
            ),
            t(
                "UploadCodeRequest",
                read::<UploadCodeRequest>,
                serde_json::json!({"code": "x"}),
                vec![("code", Kind::Str)],
            ),
            t(
                "MaintenanceRequest",
                read::<MaintenanceRequest>,
                serde_json::json!({"reason": "motor"}),
                vec![("reason", Kind::Str)],
            ),
            t(
                "SlotMessage",
                read::<SlotMessage>,
                serde_json::json!({}),
                [("slot_id", Kind::Int), ("date", Kind::Date), ("device", Kind::Device)]
                    .into_iter()
                    .chain(credentials)
                    .collect(),
            ),
        ]
    }

    fn with(valid: &Value, field: &str, value: Value) -> Map<String, Value> {
        let mut map: Map<String, Value> = valid.as_object().cloned().unwrap_or_default();
        map.insert(field.to_owned(), value);
        map
    }

    #[test]
    fn the_valid_bodies_are_valid() {
        for request in readers() {
            assert!((request.read)(&with(&request.valid, "unrelated", Value::Null)).is_ok(), "{}", request.name);
        }
    }

    #[test]
    fn a_missing_field_is_named() {
        for request in readers() {
            for (field, _) in &request.fields {
                let mut body = request.valid.as_object().cloned().unwrap_or_default();
                if body.remove(*field).is_some() {
                    let error = (request.read)(&body).expect_err(request.name);
                    assert_eq!(error, DecodeError::Missing((*field).to_owned()), "{}", request.name);
                }
            }
        }
    }

    #[test]
    fn socket_messages_say_what_is_wrong() {
        assert_eq!(BookingClientMessage::parse("{}"), Err(MessageError::MissingType));
        assert_eq!(BookingClientMessage::parse(r#"{"type": "x"}"#), Err(MessageError::UnknownType("x".to_owned())));
        let Err(MessageError::Invalid(error)) = BookingClientMessage::parse(r#"{"type": "book_slot", "slot_id": "9"}"#)
        else {
            panic!("a string slot id is refused")
        };
        assert_eq!(error.to_string(), r#"slot_id must be an integer, got the string "9""#);
        let Err(MessageError::Invalid(error)) = BookingClientMessage::parse(r#"{"type": "identify", "email": 5}"#)
        else {
            panic!("a numeric e-mail is refused")
        };
        assert_eq!(error.field(), "email");
        assert_eq!(
            ConsoleClientMessage::parse(r#"{"type": "input"}"#),
            Err(MessageError::Invalid(DecodeError::Missing("data".to_owned())))
        );
        assert!(matches!(ConsoleClientMessage::parse("[1]"), Err(MessageError::Invalid(e)) if e.is_body()));
    }

    proptest! {
        #[test]
        fn arbitrary_objects_never_panic(map in strategies::object()) {
            for request in readers() {
                if let Err(e) = (request.read)(&map) {
                    prop_assert!(map.contains_key(e.field()) || matches!(e, DecodeError::Missing(_)), "{}", e);
                }
            }
        }

        #[test]
        fn a_wrong_type_is_refused_naming_the_field(
            (which, field_idx, value) in (0..readers().len(), any::<prop::sample::Index>())
                .prop_flat_map(|(which, pick)| {
                    let fields = readers().swap_remove(which).fields;
                    let field_idx = pick.index(fields.len());
                    (Just(which), Just(field_idx), strategies::wrong_for(fields[field_idx].1))
                }),
        ) {
            let request = readers().swap_remove(which);
            let field = request.fields[field_idx].0;
            let error = (request.read)(&with(&request.valid, field, value.clone()))
                .err()
                .ok_or_else(|| TestCaseError::fail(format!("{} accepted {field} = {value}", request.name)))?;
            prop_assert_eq!(error.field(), field, "{}: {}", request.name, error);
        }

        #[test]
        fn slot_requests_round_trip(request in slot_request()) {
            prop_assert_eq!(round_trip(&request).expect("readable"), request);
        }

        #[test]
        fn the_other_requests_round_trip(
            (a, b, c) in (text(), text(), text()),
            history in proptest::option::of(any::<bool>()),
            credentials in credentials(),
            device in proptest::option::of(device()),
            model in proptest::option::of(text()),
        ) {
            prop_assert_eq!(round_trip(&credentials).expect("readable"), credentials.clone());
            let request = EmailPassword { email: a.clone(), password: b.clone() };
            prop_assert_eq!(round_trip(&request).expect("readable"), request);
            let request = ChangePasswordRequest { old_password: a.clone(), new_password: b.clone() };
            prop_assert_eq!(round_trip(&request).expect("readable"), request);
            let request = MyBookingsRequest { history, credentials };
            prop_assert_eq!(round_trip(&request).expect("readable"), request);
            let request = EmailRequest { email: c.clone() };
            prop_assert_eq!(round_trip(&request).expect("readable"), request);
            let request = CompileRequest { code: c.clone(), file_name: Some("blink.ino".to_owned()), model, device };
            prop_assert_eq!(round_trip(&request).expect("readable"), request);
            let request = UploadCodeRequest { code: c.clone(), file_name: None };
            prop_assert_eq!(round_trip(&request).expect("readable"), request);
            let request = MaintenanceRequest { reason: c };
            prop_assert_eq!(round_trip(&request).expect("readable"), request);
        }

        #[test]
        fn arbitrary_text_never_panics_either_socket(text in ".{0,64}") {
            let _ = BookingClientMessage::parse(&text);
            let _ = ConsoleClientMessage::parse(&text);
        }

        #[test]
        fn arbitrary_messages_never_panic_either_socket(map in strategies::object()) {
            let text = Value::Object(map).to_string();
            let _ = BookingClientMessage::parse(&text);
            let _ = ConsoleClientMessage::parse(&text);
        }

        #[test]
        fn booking_messages_round_trip(message in booking_message()) {
            let text = serde_json::to_string(&message).expect("serializable");
            match BookingClientMessage::parse(&text) {
                Ok(parsed) => prop_assert_eq!(parsed, message),
                Err(e) => prop_assert!(false, "{text} was refused: {e:?}"),
            }
        }

        #[test]
        fn console_messages_round_trip(data in ".{0,64}") {
            let message = ConsoleClientMessage::Input(ConsoleInput { data });
            let text = serde_json::to_string(&message).expect("serializable");
            match ConsoleClientMessage::parse(&text) {
                Ok(parsed) => prop_assert_eq!(parsed, message),
                Err(e) => prop_assert!(false, "{text} was refused: {e:?}"),
            }
        }
    }
}
