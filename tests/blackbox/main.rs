//! Black-box tests: the real `rerod` binary on a loopback port, spoken to
//! over real sockets like a client would.

// Tests and benchmarks fail loudly: an unwrap that panics is the report.
#![allow(clippy::unwrap_used)]

mod accounts;
mod bad_input;
mod boards;
mod camera;
mod cluster;
mod compile;
mod compile_queue;
mod concurrency;
mod demo;
mod devices;
mod durability;
mod fair_share;
#[path = "../common/frames.rs"]
mod frames;
mod health;
mod http_api;
mod operations;
#[path = "../common/pg.rs"]
mod pg;
mod records;
mod rero;
mod util;
mod web;
mod ws_booking;
