//! What the serial-bootloader plugins (STK500v1, STK500v2) share: their
//! options, the flash limit a job may reach, and the pages an image fills.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::OptionError;
use crate::firmware::Firmware;
use crate::model;
use crate::upload::{Options, UploadJob};

/// The options every bootloader plugin takes.
pub const OPTIONS: &[&str] = &["signature", "page_size", "reset_attempts", "sync_window_ms", "verify"];

/// A bootloader plugin's options, read and checked, with the model's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The chip signature to expect; `None` accepts any (unknown model, no option).
    pub signature: Option<[u8; 3]>,
    pub page_size: u16,
    pub reset_attempts: u32,
    pub sync_window: Duration,
    pub verify: bool,
}

/// What a plugin's typical board looks like, for defaults and error messages.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    /// Page size when neither the option nor the model gives one.
    pub page_size: u16,
    /// The typical chip, named in messages, e.g. "ATmega328P".
    pub chip: &'static str,
    /// Its signature as the option spells it, e.g. "1e950f".
    pub signature_example: &'static str,
    /// The largest page the bootloader's receive buffer holds.
    pub max_page_size: u16,
}

/// Reads `options` for a device of `model_name`; every bad key is reported.
pub fn read_settings(
    options: &toml::Table,
    model_name: &str,
    defaults: Defaults,
) -> Result<Settings, Vec<OptionError>> {
    let model = model::lookup(model_name);
    let mut o = Options::new(options, OPTIONS);
    let signature = match o.string("signature") {
        Some(text) => {
            let parsed = model::parse_signature(text);
            if parsed.is_none() {
                o.error("signature", &format!("must be three hex bytes, e.g. \"{}\"", defaults.signature_example));
            }
            parsed
        }
        None => model.map(|m| m.signature),
    };
    let page_size = match o.int("page_size", 2..=i64::from(defaults.max_page_size)) {
        Some(n) if (n as u64).is_power_of_two() => n as u16,
        Some(_) => {
            o.error("page_size", &format!("must be a power of two ({} for the {})", defaults.page_size, defaults.chip));
            defaults.page_size
        }
        None => model.map_or(defaults.page_size, |m| m.page_size),
    };
    let reset_attempts = o.int("reset_attempts", 1..=20).unwrap_or(3) as u32;
    let sync_window = Duration::from_millis(o.int("sync_window_ms", 50..=10_000).unwrap_or(1500) as u64);
    let verify = o.bool("verify").unwrap_or(true);
    o.finish()?;
    Ok(Settings { signature, page_size, reset_attempts, sync_window, verify })
}

/// The most flash `job` may fill: its configured limit, else its model's,
/// else all of `address_space`, and never more than a protocol can address.
pub fn flash_limit(job: &UploadJob, address_space: u64) -> u64 {
    job.flash_limit
        .or_else(|| model::lookup(&job.model).map(|m| m.flash_limit))
        .unwrap_or(address_space)
        .min(address_space)
}

/// Every page the firmware touches, padded with 0xFF: a bootloader always
/// programs a whole page from its buffer, so a partial page would carry
/// stale bytes. Pages wholly inside a gap are not written.
pub fn pages(firmware: &Firmware, page_size: usize) -> Vec<(u32, Vec<u8>)> {
    let mut pages: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    for seg in firmware.segments() {
        for (i, byte) in seg.data.iter().enumerate() {
            let address = seg.address as usize + i;
            let page = (address - address % page_size) as u32;
            pages.entry(page).or_insert_with(|| vec![0xFF; page_size])[address % page_size] = *byte;
        }
    }
    pages.into_iter().collect()
}
