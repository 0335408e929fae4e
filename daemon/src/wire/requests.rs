//! What clients send: every request body of the HTTP API and every client
//! message of both WebSocket protocols, typed.
//!
//! Clients serialize these with serde. The server reads them with
//! [`FromJson`], field by field, so that a malformed request is refused with
//! the field at fault and what was expected (`slot_id must be an integer, got
//! the string "9"`), and so that `"9"` is never coerced into 9.

use jiff::civil::Date;
use serde::Serialize;

use crate::app::{AppError, Credentials, DeviceRef};
use crate::json::JsonObject;

/// A request type the server reads from a client's JSON object.
pub trait FromJson: Sized {
    fn from_json(body: &JsonObject) -> Result<Self, AppError>;

    /// Parses `bytes` (an empty body is an empty object).
    fn parse(bytes: &[u8]) -> Result<Self, AppError> {
        Self::from_json(&JsonObject::parse(bytes)?)
    }
}

/// The seed's in-body credentials: a `token`, or `email` and `password`.
/// Routes that take them also take `Authorization: Bearer`, which wins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BodyCredentials {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl BodyCredentials {
    /// The credentials these make up: the token, or else both e-mail and password.
    pub fn credentials(&self) -> Option<Credentials> {
        if let Some(token) = &self.token {
            return Some(Credentials::Token(token.clone()));
        }
        match (&self.email, &self.password) {
            (Some(email), Some(password)) => {
                Some(Credentials::Password { email: email.clone(), password: password.clone() })
            }
            _ => None,
        }
    }
}

impl FromJson for BodyCredentials {
    fn from_json(body: &JsonObject) -> Result<BodyCredentials, AppError> {
        let owned = |s: Option<&str>| s.map(str::to_owned);
        Ok(BodyCredentials {
            token: owned(body.str("token")?),
            email: owned(body.str("email")?),
            password: owned(body.str("password")?),
        })
    }
}

/// `POST /auth/register` and `POST /auth/login`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EmailPassword {
    pub email: String,
    pub password: String,
}

impl FromJson for EmailPassword {
    fn from_json(body: &JsonObject) -> Result<EmailPassword, AppError> {
        Ok(EmailPassword {
            email: body.required_str("email")?.to_owned(),
            password: body.required_str("password")?.to_owned(),
        })
    }
}

/// `POST /auth/password`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChangePasswordRequest {
    pub old_password: String,
    pub new_password: String,
}

impl FromJson for ChangePasswordRequest {
    fn from_json(body: &JsonObject) -> Result<ChangePasswordRequest, AppError> {
        Ok(ChangePasswordRequest {
            old_password: body.required_str("old_password")?.to_owned(),
            new_password: body.required_str("new_password")?.to_owned(),
        })
    }
}

/// `POST /book-slot` and `POST /cancel-slot`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlotRequest {
    pub slot_id: i64,
    /// Default today in the lab's zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<Date>,
    /// Default the first device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceRef>,
    #[serde(flatten)]
    pub credentials: BodyCredentials,
}

impl FromJson for SlotRequest {
    fn from_json(body: &JsonObject) -> Result<SlotRequest, AppError> {
        Ok(SlotRequest {
            slot_id: body.required_int("slot_id")?,
            date: body.date("date")?,
            device: body.device("device")?,
            credentials: BodyCredentials::from_json(body)?,
        })
    }
}

/// `GET`/`POST /my-bookings` (`history` may also come as a query parameter).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MyBookingsRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<bool>,
    #[serde(flatten)]
    pub credentials: BodyCredentials,
}

impl FromJson for MyBookingsRequest {
    fn from_json(body: &JsonObject) -> Result<MyBookingsRequest, AppError> {
        Ok(MyBookingsRequest { history: body.bool("history")?, credentials: BodyCredentials::from_json(body)? })
    }
}

/// `POST /admin/users/disable` and `/admin/users/enable`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EmailRequest {
    pub email: String,
}

impl FromJson for EmailRequest {
    fn from_json(body: &JsonObject) -> Result<EmailRequest, AppError> {
        Ok(EmailRequest { email: body.required_str("email")?.to_owned() })
    }
}

/// `POST /devices/compile`: the sketch, for a model (or the device's model).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CompileRequest {
    pub code: String,
    /// The sketch's file name on the student's side (`blink.ino`): compiler
    /// messages name it instead of the lab's build path. Default `sketch.ino`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceRef>,
}

impl FromJson for CompileRequest {
    fn from_json(body: &JsonObject) -> Result<CompileRequest, AppError> {
        Ok(CompileRequest {
            code: body.required_str("code")?.to_owned(),
            file_name: body.file_name("file_name")?,
            model: body.str("model")?.map(str::to_owned),
            device: body.device("device")?,
        })
    }
}

/// `POST /devices/upload/{device}` as JSON: a sketch to compile, then flash.
/// (Firmware itself is sent as the raw body instead.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UploadCodeRequest {
    pub code: String,
    /// As [`CompileRequest::file_name`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
}

impl FromJson for UploadCodeRequest {
    fn from_json(body: &JsonObject) -> Result<UploadCodeRequest, AppError> {
        Ok(UploadCodeRequest { code: body.required_str("code")?.to_owned(), file_name: body.file_name("file_name")? })
    }
}

/// A `/slot-booking` message from a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BookingClientMessage {
    BookSlot(SlotMessage),
    CancelSlot(SlotMessage),
    GetSlots {
        #[serde(skip_serializing_if = "Option::is_none")]
        date: Option<Date>,
        #[serde(skip_serializing_if = "Option::is_none")]
        device: Option<DeviceRef>,
    },
    /// Says whose socket this is (`token`, or `email`+`password`), so it
    /// gets that account's `session_ending` warnings.
    Identify(BodyCredentials),
}

/// `book_slot` and `cancel_slot` over `/slot-booking`: as [`SlotRequest`],
/// but a missing `slot_id` gets the seed's own answer rather than a 422's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlotMessage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<Date>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceRef>,
    #[serde(flatten)]
    pub credentials: BodyCredentials,
}

/// Why a WebSocket message could not be read.
#[derive(Debug)]
pub enum MessageError {
    /// Not a JSON object, or a field of the wrong type.
    Invalid(AppError),
    /// No `type`.
    MissingType,
    /// A `type` this protocol does not have.
    UnknownType(String),
}

impl BookingClientMessage {
    pub fn parse(text: &str) -> Result<BookingClientMessage, MessageError> {
        let message = JsonObject::parse(text.as_bytes()).map_err(MessageError::Invalid)?;
        let slot = |message: &JsonObject| -> Result<SlotMessage, AppError> {
            Ok(SlotMessage {
                slot_id: message.int("slot_id")?,
                date: message.date("date")?,
                device: message.device("device")?,
                credentials: BodyCredentials::from_json(message)?,
            })
        };
        match message.str("type").map_err(MessageError::Invalid)? {
            None => Err(MessageError::MissingType),
            Some("book_slot") => slot(&message).map(BookingClientMessage::BookSlot).map_err(MessageError::Invalid),
            Some("cancel_slot") => slot(&message).map(BookingClientMessage::CancelSlot).map_err(MessageError::Invalid),
            Some("get_slots") => {
                let get = || -> Result<_, AppError> {
                    Ok(BookingClientMessage::GetSlots {
                        date: message.date("date")?,
                        device: message.device("device")?,
                    })
                };
                get().map_err(MessageError::Invalid)
            }
            Some("identify") => {
                BodyCredentials::from_json(&message).map(BookingClientMessage::Identify).map_err(MessageError::Invalid)
            }
            Some(other) => Err(MessageError::UnknownType(other.to_owned())),
        }
    }
}

/// A `/devices/read/{device}` message from a client, after the first one
/// (which carries only [`BodyCredentials`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConsoleClientMessage {
    /// Text to write to the board (binary frames go byte for byte instead).
    Input { data: String },
}

impl ConsoleClientMessage {
    pub fn parse(text: &str) -> Result<ConsoleClientMessage, MessageError> {
        let message = JsonObject::parse(text.as_bytes()).map_err(MessageError::Invalid)?;
        match message.str("type").map_err(MessageError::Invalid)? {
            None => Err(MessageError::MissingType),
            Some("input") => match message.str("data").map_err(MessageError::Invalid)? {
                Some(data) => Ok(ConsoleClientMessage::Input { data: data.to_owned() }),
                None => Err(MessageError::Invalid(AppError::MissingField("data"))),
            },
            Some(other) => Err(MessageError::UnknownType(other.to_owned())),
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::*;
    use crate::json::strategies::{self, Kind};

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
                .prop_map(|(date, device)| BookingClientMessage::GetSlots { date, device }),
        ]
    }

    /// Serializes `request` as a client would and reads it back.
    fn round_trip<T: Serialize + FromJson>(request: &T) -> Result<T, AppError> {
        T::parse(&serde_json::to_vec(request).expect("serializable"))
    }

    /// Every request type read from `object`; none may panic.
    fn read_every_type(object: &JsonObject) {
        let _ = BodyCredentials::from_json(object);
        let _ = EmailPassword::from_json(object);
        let _ = ChangePasswordRequest::from_json(object);
        let _ = SlotRequest::from_json(object);
        let _ = MyBookingsRequest::from_json(object);
        let _ = EmailRequest::from_json(object);
        let _ = CompileRequest::from_json(object);
        let _ = UploadCodeRequest::from_json(object);
    }

    /// A request type as the wrong-type property sees it.
    struct RequestType {
        name: &'static str,
        read: fn(&JsonObject) -> Result<(), AppError>,
        /// A body it accepts.
        valid: Value,
        /// The fields it reads, and what each must be.
        fields: Vec<(&'static str, Kind)>,
    }

    /// Each request type with a valid body and the fields it reads.
    fn readers() -> Vec<RequestType> {
        fn read<T: FromJson>(object: &JsonObject) -> Result<(), AppError> {
            T::from_json(object).map(drop)
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
        ]
    }

    fn with(valid: &Value, field: &str, value: Value) -> JsonObject {
        let mut map: Map<String, Value> = valid.as_object().cloned().unwrap_or_default();
        map.insert(field.to_owned(), value);
        JsonObject::parse(Value::Object(map).to_string().as_bytes()).expect("an object")
    }

    #[test]
    fn the_valid_bodies_are_valid() {
        for request in readers() {
            assert!((request.read)(&with(&request.valid, "unrelated", Value::Null)).is_ok(), "{}", request.name);
        }
    }

    proptest! {
        #[test]
        fn arbitrary_objects_never_panic(map in strategies::object()) {
            read_every_type(&JsonObject::parse(Value::Object(map).to_string().as_bytes()).expect("an object"));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
            if let Ok(object) = JsonObject::parse(&bytes) {
                read_every_type(&object);
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
            prop_assert_eq!(error.field(), Some(field), "{}: {}", request.name, error);
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
            let request = UploadCodeRequest { code: c, file_name: None };
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
            let message = ConsoleClientMessage::Input { data };
            let text = serde_json::to_string(&message).expect("serializable");
            match ConsoleClientMessage::parse(&text) {
                Ok(parsed) => prop_assert_eq!(parsed, message),
                Err(e) => prop_assert!(false, "{text} was refused: {e:?}"),
            }
        }
    }
}
