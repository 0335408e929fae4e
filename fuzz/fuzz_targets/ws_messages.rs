//! WebSocket text frames: both protocols' client messages, from arbitrary text, parse or
//! are refused, and what parses serializes back to a message that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rerod::wire::{BookingClientMessage, ConsoleClientMessage};

fuzz_target!(|text: &str| {
    if let Ok(message) = BookingClientMessage::parse(text) {
        let again = serde_json::to_string(&message).expect("a message serializes");
        let reparsed = BookingClientMessage::parse(&again).expect("a serialized message parses");
        assert_eq!(reparsed, message, "{again}");
    }
    if let Ok(message) = ConsoleClientMessage::parse(text) {
        let again = serde_json::to_string(&message).expect("a message serializes");
        let reparsed = ConsoleClientMessage::parse(&again).expect("a serialized message parses");
        assert_eq!(reparsed, message, "{again}");
    }
});
