//! Known board models: the defaults (MCU, signature, flash, bootloader baud) a device's `model` implies.
//!
//! Config may override each value per device; a model not listed here works
//! too, it just has no defaults (the plugin's options must say everything).

use std::fmt;

/// Three signature bytes of an AVR part (atmega328p: 1E 95 0F).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 3]);

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x} {:02x} {:02x}", self.0[0], self.0[1], self.0[2])
    }
}

/// What a board model implies for uploading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoardModel {
    /// The name used in config (`model = "uno"`).
    pub name: &'static str,
    /// avrdude's part id (`-p`), the `{mcu}` of command templates.
    pub mcu: &'static str,
    /// The AVR signature bytes the bootloader reports.
    pub signature: [u8; 3],
    /// Flash available to programs: total flash less the bootloader section.
    pub flash_limit: u64,
    /// Flash page size in bytes.
    pub page_size: u16,
    /// The bootloader's baud rate.
    pub upload_baud: u32,
    /// The upload plugin that speaks its bootloader.
    pub plugin: &'static str,
}

const M328P: [u8; 3] = [0x1E, 0x95, 0x0F];

/// The models rerod knows. Optiboot boards (Uno, current Nano) run at
/// 115200; the old ATmegaBOOT (Duemilanove, old Nano, Pro Mini) at 57600.
pub const MODELS: &[BoardModel] = &[
    BoardModel {
        name: "uno",
        mcu: "m328p",
        signature: M328P,
        flash_limit: 32_256,
        page_size: 128,
        upload_baud: 115_200,
        plugin: "stk500v1",
    },
    BoardModel {
        name: "nano",
        mcu: "m328p",
        signature: M328P,
        flash_limit: 32_256,
        page_size: 128,
        upload_baud: 115_200,
        plugin: "stk500v1",
    },
    BoardModel {
        name: "nano-old",
        mcu: "m328p",
        signature: M328P,
        flash_limit: 30_720,
        page_size: 128,
        upload_baud: 57_600,
        plugin: "stk500v1",
    },
    BoardModel {
        name: "pro-mini",
        mcu: "m328p",
        signature: M328P,
        flash_limit: 30_720,
        page_size: 128,
        upload_baud: 57_600,
        plugin: "stk500v1",
    },
    BoardModel {
        name: "duemilanove",
        mcu: "m328p",
        signature: M328P,
        flash_limit: 30_720,
        page_size: 128,
        upload_baud: 57_600,
        plugin: "stk500v1",
    },
    BoardModel {
        name: "mega2560",
        mcu: "m2560",
        signature: [0x1E, 0x98, 0x01],
        flash_limit: 253_952,
        page_size: 256,
        upload_baud: 115_200,
        plugin: "stk500v2",
    },
];

/// The model called `name` (case-insensitive).
/// The smallest AVR program: one instruction, `rjmp .-2`, looping on itself
/// forever. Flashed between sessions on a board without an idle firmware,
/// so the next user's console is silent rather than the last program's.
pub const AVR_BLANK_PROGRAM: [u8; 2] = [0xFF, 0xCF];

pub fn lookup(name: &str) -> Option<&'static BoardModel> {
    MODELS.iter().find(|m| m.name.eq_ignore_ascii_case(name))
}

/// Parses a signature written as hex (`"1e950f"`, `"1e 95 0f"`, `"0x1E950F"`).
pub fn parse_signature(text: &str) -> Option<[u8; 3]> {
    let digits: String = text.trim().trim_start_matches("0x").chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() != 6 {
        return None;
    }
    let mut out = [0u8; 3];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(digits.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_ignores_case() {
        assert_eq!(lookup("UNO").map(|m| m.signature), Some([0x1E, 0x95, 0x0F]));
        assert_eq!(lookup("esp32"), None);
    }

    #[test]
    fn signatures_parse_in_the_usual_spellings() {
        for text in ["1e950f", "1E 95 0F", "0x1e950f"] {
            assert_eq!(parse_signature(text), Some([0x1E, 0x95, 0x0F]), "{text}");
        }
        assert_eq!(parse_signature("1e95"), None);
        assert_eq!(parse_signature("1e95zz"), None);
    }
}
