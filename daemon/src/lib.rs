//! rerod: the remote-lab booking daemon, as a library the `rerod` binary runs.
//! See the README's Architecture section for the code map.
#![recursion_limit = "256"]
// Unit tests fail loudly: an unwrap that panics is the report.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod app;
pub mod auth;
pub mod booking;
pub mod camera;
pub mod cli;
pub mod client;
pub mod clock;
pub mod compile;
pub mod config;
pub mod control;
pub mod demo;
pub mod devices;
pub mod http;
pub mod linger;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod plugins;
pub mod priority;
pub mod records;
pub mod reload;
pub mod roster;
pub mod runtime;
pub mod session;
pub mod store;
pub mod terminal;
pub mod throttle;
pub mod webhook;
pub mod wire;
pub mod ws;
