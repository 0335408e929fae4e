//! Property tests of the Intel HEX reader: it never panics on what a student uploads, reads
//! back exactly what a valid file holds, and refuses a broken record with an error.
//!
//! The valid files are written here by a small encoder of their own (not
//! [`Firmware::to_ihex`]), so that a mistake shared by the reader and the
//! writer cannot hide itself: records of random lengths, in random order,
//! addressed through type 02 and type 04 records alike.

use std::fmt::Write as _;

use proptest::prelude::*;
use rerod_devices::{Firmware, FirmwareError, FirmwareFormat, Segment};

/// One data block of a generated image: its address and its bytes.
#[derive(Clone, Debug)]
struct Block {
    address: u32,
    data: Vec<u8>,
}

/// How a generated file says where a data record goes.
#[derive(Clone, Copy, Debug)]
enum Addressing {
    /// Type 04: the upper 16 bits of the address.
    Linear,
    /// Type 02: a segment, shifted left by 4.
    Segment,
}

/// Non-overlapping blocks in address order, separated by gaps from none to
/// well past 64 KiB, so that extended address records are needed.
fn blocks() -> impl Strategy<Value = Vec<Block>> {
    let gap = prop_oneof![3 => 0u32..64, 1 => 0u32..0x3_0000];
    let start = prop_oneof![0u32..0x100, 0xFFF0u32..0x1_0010, 0x00FF_0000u32..0x0100_0000];
    (start, prop::collection::vec((gap, prop::collection::vec(any::<u8>(), 1..80)), 0..12)).prop_map(
        |(mut address, parts)| {
            let mut blocks = Vec::new();
            for (gap, data) in parts {
                address = address.saturating_add(gap);
                let len = data.len() as u32;
                blocks.push(Block { address, data });
                address += len;
            }
            blocks
        },
    )
}

/// One record: `:`, count, offset, type, data, checksum.
fn record(offset: u16, kind: u8, data: &[u8]) -> String {
    let mut line = format!(":{:02X}{:04X}{:02X}", data.len(), offset, kind);
    let mut sum = (data.len() as u8).wrapping_add((offset >> 8) as u8).wrapping_add(offset as u8).wrapping_add(kind);
    for b in data {
        sum = sum.wrapping_add(*b);
        let _ = write!(line, "{b:02X}");
    }
    let _ = write!(line, "{:02X}", sum.wrapping_neg());
    line
}

/// Splits the blocks into data records no longer than `max_len` that never
/// cross a 64 KiB boundary (an offset cannot carry past one), each with the
/// extended address record that places it.
fn records(blocks: &[Block], max_len: usize, addressing: Addressing) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for block in blocks {
        let mut address = block.address;
        let mut rest = block.data.as_slice();
        while !rest.is_empty() {
            let to_boundary = 0x1_0000 - (address & 0xFFFF) as usize;
            let n = rest.len().min(max_len).min(to_boundary);
            let (base_record, offset) = match addressing {
                // A segment reaches only the first 1 MiB + 64 KiB; above, linear it is.
                Addressing::Segment if address < 0x10_0000 => {
                    let segment = (address >> 4) as u16;
                    let offset = (address - (u32::from(segment) << 4)) as u16;
                    if usize::from(offset) + n <= 0x1_0000 {
                        (record(0, 0x02, &segment.to_be_bytes()), offset)
                    } else {
                        (record(0, 0x04, &((address >> 16) as u16).to_be_bytes()), address as u16)
                    }
                }
                _ => (record(0, 0x04, &((address >> 16) as u16).to_be_bytes()), address as u16),
            };
            out.push(vec![base_record, record(offset, 0x00, &rest[..n])]);
            rest = &rest[n..];
            address += n as u32;
        }
    }
    out
}

/// The segments the blocks make once touching ones are merged.
fn merged(blocks: &[Block]) -> Vec<Segment> {
    let mut segments: Vec<Segment> = Vec::new();
    for block in blocks {
        match segments.last_mut() {
            Some(last) if last.end() == u64::from(block.address) => last.data.extend_from_slice(&block.data),
            _ => segments.push(Segment { address: block.address, data: block.data.clone() }),
        }
    }
    segments
}

/// A whole file: the record groups in the given order, then end-of-file.
fn file(groups: &[Vec<String>], line_end: &str) -> String {
    let mut text = String::new();
    for line in groups.iter().flatten() {
        text.push_str(line);
        text.push_str(line_end);
    }
    text.push_str(":00000001FF");
    text.push_str(line_end);
    text
}

/// A valid image: its blocks, and the file's record groups in a random order.
fn valid_image() -> impl Strategy<Value = (Vec<Block>, Vec<Vec<String>>, &'static str)> {
    let addressing = prop_oneof![Just(Addressing::Linear), Just(Addressing::Segment)];
    (blocks(), 1usize..=255, addressing)
        .prop_flat_map(|(blocks, max_len, addressing)| {
            let groups = records(&blocks, max_len, addressing);
            (Just(blocks), Just(groups).prop_shuffle())
        })
        .prop_flat_map(|(blocks, groups)| (Just(blocks), Just(groups), prop_oneof![Just("\n"), Just("\r\n")]))
}

/// Text made of what HEX files are made of, so generated input gets past the
/// first checks more often than arbitrary bytes do.
fn hexish_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(":".to_owned()),
        Just("\n".to_owned()),
        Just("\r\n".to_owned()),
        Just(":00000001FF".to_owned()),
        Just(":02000004".to_owned()),
        Just(":02000002".to_owned()),
        "[0-9A-Fa-f]{1,12}",
        "[ -~]{0,4}",
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Firmware::detect(&bytes);
        let _ = Firmware::parse_ihex(&bytes);
    }

    #[test]
    fn hex_like_text_never_panics(text in hexish_text()) {
        if let Ok(firmware) = Firmware::parse_ihex(text.as_bytes()) {
            // Whatever parses must also survive everything an uploader does with it.
            let _ = firmware.check_fits(32 * 1024);
            if firmware.end() - u64::from(firmware.start()) <= 1 << 20 {
                let _ = firmware.flatten();
            }
        }
    }

    #[test]
    fn valid_files_read_back_exactly((blocks, groups, line_end) in valid_image()) {
        let text = file(&groups, line_end);
        let firmware = Firmware::detect(text.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(firmware.format(), FirmwareFormat::IntelHex);
        let expected = merged(&blocks);
        prop_assert_eq!(firmware.segments(), expected.as_slice());
    }

    #[test]
    fn the_image_stays_within_the_addresses_written((blocks, groups, _) in valid_image()) {
        let firmware = Firmware::parse_ihex(file(&groups, "\n").as_bytes()).expect("a valid file");
        prop_assert_eq!(firmware.len(), blocks.iter().map(|b| b.data.len()).sum::<usize>());
        prop_assert_eq!(u64::from(firmware.start()), blocks.first().map_or(0, |b| u64::from(b.address)));
        prop_assert_eq!(firmware.end(), blocks.last().map_or(0, |b| u64::from(b.address) + b.data.len() as u64));
        let written = merged(&blocks);
        for segment in firmware.segments() {
            let inside = written.iter().any(|w| w.address <= segment.address && segment.end() <= w.end());
            prop_assert!(inside, "segment at {:#x} is not one the file wrote", segment.address);
        }
    }

    #[test]
    fn a_wrong_checksum_is_refused_on_its_line(
        (_, groups, _) in valid_image(),
        pick in any::<prop::sample::Index>(),
        delta in 1u8..=255,
    ) {
        let mut lines: Vec<String> = groups.into_iter().flatten().collect();
        lines.push(":00000001FF".to_owned());
        let at = pick.index(lines.len());
        let line = &mut lines[at];
        let checksum = u8::from_str_radix(&line[line.len() - 2..], 16).expect("hex");
        let wrong = checksum.wrapping_add(delta);
        line.replace_range(line.len() - 2.., &format!("{wrong:02X}"));
        let text = lines.join("\n");
        match Firmware::parse_ihex(text.as_bytes()) {
            Err(FirmwareError::BadChecksum { line, found, expected }) => {
                prop_assert_eq!(line, at + 1);
                prop_assert_eq!(found, wrong);
                prop_assert_eq!(expected, checksum);
            }
            other => prop_assert!(false, "expected a checksum error on line {}, got {:?}", at + 1, other),
        }
    }

    #[test]
    fn a_wrong_byte_count_is_refused_on_its_line(
        (_, groups, _) in valid_image(),
        pick in any::<prop::sample::Index>(),
        delta in 1u8..=255,
    ) {
        let mut lines: Vec<String> = groups.into_iter().flatten().collect();
        lines.push(":00000001FF".to_owned());
        let at = pick.index(lines.len());
        let line = &mut lines[at];
        let count = u8::from_str_radix(&line[1..3], 16).expect("hex");
        line.replace_range(1..3, &format!("{:02X}", count.wrapping_add(delta)));
        let text = lines.join("\n");
        match Firmware::parse_ihex(text.as_bytes()) {
            Err(FirmwareError::ByteCount { line, actual, .. }) => {
                prop_assert_eq!(line, at + 1);
                prop_assert_eq!(actual, usize::from(count));
            }
            other => prop_assert!(false, "expected a byte count error on line {}, got {:?}", at + 1, other),
        }
    }

    #[test]
    fn a_truncated_record_is_refused(
        (_, groups, _) in valid_image(),
        pick in any::<prop::sample::Index>(),
        cut in 1usize..12,
    ) {
        let mut lines: Vec<String> = groups.into_iter().flatten().collect();
        lines.push(":00000001FF".to_owned());
        let at = pick.index(lines.len());
        let keep = lines[at].len().saturating_sub(cut).max(1);
        lines[at].truncate(keep);
        prop_assert!(Firmware::parse_ihex(lines.join("\n").as_bytes()).is_err());
    }
}
