//! The one registry of upload plugins: a config's `plugin = "..."` name → the uploader.
//!
//! Explicit on purpose: adding an upload method is one crate in `plugins/`,
//! one dependency in `daemon/Cargo.toml` and one line here. Nothing registers
//! itself (no linker tricks, no dynamic loading).

use std::sync::Arc;

use rerod_devices::Uploader;
/// STK500v1's bytes, for the demo board that answers the uploader
/// (`crate::demo`).
pub use rerod_stk500v1::protocol as stk500v1;

/// Every plugin name rerod knows, in the order error messages list them.
pub const NAMES: &[&str] = &[rerod_stk500v1::NAME, rerod_stk500v2::NAME, rerod_command::NAME];

/// The uploader registered as `name`.
pub fn lookup(name: &str) -> Option<Arc<dyn Uploader>> {
    match name {
        rerod_stk500v1::NAME => Some(Arc::new(rerod_stk500v1::Stk500v1)),
        rerod_stk500v2::NAME => Some(Arc::new(rerod_stk500v2::Stk500v2)),
        rerod_command::NAME => Some(Arc::new(rerod_command::CommandUploader)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_name_resolves_to_a_plugin_of_that_name() {
        for name in NAMES {
            assert_eq!(lookup(name).map(|p| p.name()), Some(*name));
        }
        assert!(lookup("stk500v3").is_none());
    }
}
