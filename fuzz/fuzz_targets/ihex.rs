//! Firmware as a student uploads it: whatever the bytes, detection and the Intel HEX reader
//! return an image or an error, and an image keeps its invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rerod_devices::{Firmware, FirmwareFormat};

fuzz_target!(|data: &[u8]| {
    let Ok(firmware) = Firmware::detect(data) else { return };
    // Segments are sorted, apart (touching ones are merged) and never empty.
    for pair in firmware.segments().windows(2) {
        assert!(pair[0].end() < u64::from(pair[1].address), "segments overlap or touch: {pair:?}");
    }
    assert!(firmware.segments().iter().all(|s| !s.data.is_empty()));
    let _ = firmware.check_fits(256 * 1024);
    // Flattening allocates the whole span; only do it for spans a board could hold.
    if firmware.end() - u64::from(firmware.start()) <= 1 << 20 {
        let flat = firmware.flatten();
        assert_eq!(flat.bytes.len() as u64, firmware.end() - u64::from(firmware.start()));
    }
    // What we write for external tools must read back as the same image.
    if firmware.format() == FirmwareFormat::IntelHex {
        let again = Firmware::parse_ihex(firmware.to_ihex().as_bytes()).expect("our own HEX output parses");
        assert_eq!(again.segments(), firmware.segments());
    }
});
