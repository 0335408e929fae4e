//! HTTP request bodies: every request type read from arbitrary bytes, and from generated
//! objects of the fields they read, either parses or names the field at fault (or the body).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rerod::wire::{
    BodyCredentials, ChangePasswordRequest, CompileRequest, EmailPassword, EmailRequest, MaintenanceRequest,
    MyBookingsRequest, Request, SlotRequest, UploadCodeRequest,
};
use serde_json::{Map, Value};

/// The field names the request types read; raw bytes rarely spell them.
const FIELDS: [&str; 16] = [
    "slot_id",
    "date",
    "device",
    "token",
    "email",
    "password",
    "history",
    "code",
    "model",
    "old_password",
    "new_password",
    "type",
    "data",
    "file_name",
    "reason",
    "x",
];

/// A JSON value shaped by the fuzzer's bytes.
#[derive(Arbitrary, Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Text(String),
    Date(u16, u8, u8),
    List(Vec<Json>),
    Object(Vec<(u8, Json)>),
}

impl Json {
    fn value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Int(i) => Value::from(*i),
            Json::Uint(u) => Value::from(*u),
            Json::Float(f) => Value::from(*f),
            Json::Text(s) => Value::String(s.clone()),
            Json::Date(y, m, d) => Value::String(format!("{y:04}-{m:02}-{d:02}")),
            Json::List(items) => Value::Array(items.iter().map(Json::value).collect()),
            Json::Object(pairs) => Value::Object(
                pairs
                    .iter()
                    .map(|(key, value)| (FIELDS[usize::from(*key) % FIELDS.len()].to_owned(), value.value()))
                    .collect::<Map<_, _>>(),
            ),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    Bytes(&'a [u8]),
    Structured(Json),
}

/// Reads `bytes` as `T`; a refusal must name the body or a field `T` reads.
fn check<T: Request>(bytes: &[u8]) {
    if let Err(error) = rerod::wire::request::<T>(bytes) {
        let field = error.field();
        assert!(field == "body" || FIELDS.contains(&field), "a malformed request refused naming {field:?}: {error}");
    }
}

fuzz_target!(|input: Input<'_>| {
    let bytes = match input {
        Input::Bytes(bytes) => bytes.to_vec(),
        Input::Structured(json) => json.value().to_string().into_bytes(),
    };
    check::<BodyCredentials>(&bytes);
    check::<EmailPassword>(&bytes);
    check::<ChangePasswordRequest>(&bytes);
    check::<SlotRequest>(&bytes);
    check::<MyBookingsRequest>(&bytes);
    check::<EmailRequest>(&bytes);
    check::<CompileRequest>(&bytes);
    check::<UploadCodeRequest>(&bytes);
    check::<MaintenanceRequest>(&bytes);
});
