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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceRef>,
}

impl FromJson for CompileRequest {
    fn from_json(body: &JsonObject) -> Result<CompileRequest, AppError> {
        Ok(CompileRequest {
            code: body.required_str("code")?.to_owned(),
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
}

impl FromJson for UploadCodeRequest {
    fn from_json(body: &JsonObject) -> Result<UploadCodeRequest, AppError> {
        Ok(UploadCodeRequest { code: body.required_str("code")?.to_owned() })
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
