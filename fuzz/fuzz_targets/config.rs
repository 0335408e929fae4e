//! The config file a lab admin edits: arbitrary text never panics the loader, and every
//! problem it reports says where (a key path, or a line and column).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rerod::config::{Config, Env};

fuzz_target!(|text: &str| {
    if let Err(problems) = Config::from_toml(text, &Env::default()) {
        assert!(!problems.is_empty(), "a config refused without a reason");
        for problem in &problems {
            assert!(!problem.key.is_empty() || problem.location.is_some(), "{problem} says neither key nor location");
        }
    }
});
