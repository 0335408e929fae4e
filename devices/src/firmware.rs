//! Firmware images: Intel HEX and raw binary input, flattening, and the flash size check.
//!
//! A [`Firmware`] is a set of non-overlapping [`Segment`]s (address + bytes),
//! kept sorted and with touching segments merged. Intel HEX files become one
//! segment per contiguous run of data; a raw binary is one segment at its base
//! address. Uploaders either walk the segments (to write only the pages the
//! program covers) or ask for a flat image with the gaps filled with 0xFF,
//! the value of erased flash.

use std::fmt::Write as _;

/// One contiguous run of bytes at a flash address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub address: u32,
    pub data: Vec<u8>,
}

impl Segment {
    /// One past the last address of the segment.
    pub fn end(&self) -> u64 {
        u64::from(self.address) + self.data.len() as u64
    }
}

/// The format a firmware image arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirmwareFormat {
    IntelHex,
    Binary,
}

/// The largest flash any supported board has, and so the largest image rerod
/// ever lays out: an image reaching past it is refused before it is
/// flattened (a HEX record at 0xFFFF0000 would otherwise ask for 4 GiB).
pub const MAX_FLASH: u64 = 64 << 20;

/// A flash image ready to be written to a board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    segments: Vec<Segment>,
    format: FirmwareFormat,
}

/// A firmware image flattened into one buffer starting at `base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatImage {
    pub base: u32,
    pub bytes: Vec<u8>,
}

/// Why a firmware image was refused. Line numbers count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirmwareError {
    #[error("the firmware is empty: upload an Intel HEX file or a raw binary image")]
    Empty,
    #[error("Intel HEX line {line}: a record must start with ':'; is this really a .hex file?")]
    MissingColon { line: usize },
    #[error(
        "Intel HEX line {line}, column {column}: {found:?} is not a hex digit; the file is corrupt, export it again"
    )]
    BadHexDigit { line: usize, column: usize, found: char },
    #[error("Intel HEX line {line}: odd number of hex digits; the line is truncated, export the file again")]
    OddDigits { line: usize },
    #[error(
        "Intel HEX line {line}: a record needs at least 5 bytes (count, address, type, checksum); the line is truncated"
    )]
    TooShort { line: usize },
    #[error(
        "Intel HEX line {line}: the byte count says {declared} data bytes but the record has {actual}; the line is truncated or edited"
    )]
    ByteCount { line: usize, declared: usize, actual: usize },
    #[error(
        "Intel HEX line {line}: bad checksum (the record says {found:#04x}, its bytes sum to {expected:#04x}); the file is corrupt, export it again"
    )]
    BadChecksum { line: usize, expected: u8, found: u8 },
    #[error("Intel HEX line {line}: unknown record type {kind:#04x} (known: 00 to 05)")]
    UnknownRecordType { line: usize, kind: u8 },
    #[error("Intel HEX line {line}: a type {kind:02x} record carries {expected} data bytes, this one has {actual}")]
    BadRecordLength { line: usize, kind: u8, expected: usize, actual: usize },
    #[error(
        "Intel HEX line {line}: data at address {address:#07x} overlaps data from line {other_line}; the file merges two programs"
    )]
    Overlap { line: usize, other_line: usize, address: u32 },
    #[error("Intel HEX line {line}: data after the end-of-file record; the file holds two concatenated images")]
    AfterEof { line: usize },
    #[error("Intel HEX: no end-of-file record (:00000001FF); the file is truncated, upload it again")]
    MissingEof,
    #[error("Intel HEX line {line}: the data runs past the 4 GiB address space")]
    AddressOverflow { line: usize },
    #[error("the firmware needs {size} bytes of flash but this board has {limit}; make the program smaller")]
    TooLarge { size: u64, limit: u64 },
}

impl Firmware {
    /// A raw binary image loaded at `base`.
    pub fn from_binary(bytes: Vec<u8>, base: u32) -> Result<Firmware, FirmwareError> {
        if bytes.is_empty() {
            return Err(FirmwareError::Empty);
        }
        if u64::from(base) + bytes.len() as u64 > 1 << 32 {
            return Err(FirmwareError::TooLarge { size: u64::from(base) + bytes.len() as u64, limit: 1 << 32 });
        }
        Ok(Firmware { segments: vec![Segment { address: base, data: bytes }], format: FirmwareFormat::Binary })
    }

    /// Intel HEX if the bytes look like it (text whose first record starts
    /// with ':'), a raw binary at address 0 otherwise.
    ///
    /// A file that looks like HEX is parsed as HEX even when it is broken, so
    /// a corrupt .hex file is reported rather than flashed as binary garbage.
    pub fn detect(bytes: &[u8]) -> Result<Firmware, FirmwareError> {
        if looks_like_ihex(bytes) { Firmware::parse_ihex(bytes) } else { Firmware::from_binary(bytes.to_vec(), 0) }
    }

    /// Parses Intel HEX (record types 00 to 05; 03 and 05, start addresses,
    /// are accepted and ignored since a bootloader starts the program at 0).
    pub fn parse_ihex(text: &[u8]) -> Result<Firmware, FirmwareError> {
        let mut records: Vec<(u32, Vec<u8>, usize)> = Vec::new();
        let mut base: u32 = 0;
        let mut eof_line: Option<usize> = None;

        // Lines may end in \n, \r\n or \r.
        for (idx, raw_line) in text.split(|&b| b == b'\n' || b == b'\r').enumerate() {
            let line = idx + 1;
            let trimmed = raw_line.trim_ascii();
            if trimmed.is_empty() {
                continue;
            }
            if eof_line.is_some() {
                return Err(FirmwareError::AfterEof { line });
            }
            let bytes = decode_record(trimmed, line)?;
            let count = usize::from(bytes[0]);
            let payload = &bytes[4..bytes.len() - 1];
            if payload.len() != count {
                return Err(FirmwareError::ByteCount { line, declared: count, actual: payload.len() });
            }
            let sum = bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b));
            if sum != 0 {
                let found = bytes[bytes.len() - 1];
                let expected = found.wrapping_sub(sum);
                return Err(FirmwareError::BadChecksum { line, expected, found });
            }
            let offset = u32::from(u16::from_be_bytes([bytes[1], bytes[2]]));
            let kind = bytes[3];
            let fixed_len = |expected: usize| {
                if payload.len() == expected {
                    Ok(())
                } else {
                    Err(FirmwareError::BadRecordLength { line, kind, expected, actual: payload.len() })
                }
            };
            match kind {
                0x00 => {
                    if payload.is_empty() {
                        continue;
                    }
                    let address = base.checked_add(offset).ok_or(FirmwareError::AddressOverflow { line })?;
                    if u64::from(address) + payload.len() as u64 > 1 << 32 {
                        return Err(FirmwareError::AddressOverflow { line });
                    }
                    records.push((address, payload.to_vec(), line));
                }
                0x01 => {
                    fixed_len(0)?;
                    eof_line = Some(line);
                }
                0x02 => {
                    fixed_len(2)?;
                    base = u32::from(u16::from_be_bytes([payload[0], payload[1]])) << 4;
                }
                0x04 => {
                    fixed_len(2)?;
                    base = u32::from(u16::from_be_bytes([payload[0], payload[1]])) << 16;
                }
                0x03 | 0x05 => fixed_len(4)?,
                _ => return Err(FirmwareError::UnknownRecordType { line, kind }),
            }
        }
        if eof_line.is_none() {
            return Err(FirmwareError::MissingEof);
        }

        // Sort by address (stable, so file order breaks ties) and merge runs.
        records.sort_by_key(|(address, _, _)| *address);
        let mut segments: Vec<Segment> = Vec::new();
        let mut last_line = 0;
        for (address, data, line) in records {
            match segments.last_mut() {
                Some(seg) if u64::from(address) < seg.end() => {
                    return Err(FirmwareError::Overlap { line, other_line: last_line, address });
                }
                Some(seg) if u64::from(address) == seg.end() => seg.data.extend_from_slice(&data),
                _ => segments.push(Segment { address, data }),
            }
            last_line = line;
        }
        Ok(Firmware { segments, format: FirmwareFormat::IntelHex })
    }

    pub fn format(&self) -> FirmwareFormat {
        self.format
    }

    /// The segments, sorted by address, non-overlapping, touching ones merged.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The lowest address holding data (0 for an empty image).
    pub fn start(&self) -> u32 {
        self.segments.first().map_or(0, |s| s.address)
    }

    /// One past the highest address holding data: the flash the program needs.
    pub fn end(&self) -> u64 {
        self.segments.last().map_or(0, Segment::end)
    }

    /// Number of data bytes (gaps not counted).
    pub fn len(&self) -> usize {
        self.segments.iter().map(|s| s.data.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Refuses an image that reaches past `limit` bytes of flash, or holds no data.
    pub fn check_fits(&self, limit: u64) -> Result<(), FirmwareError> {
        if self.is_empty() {
            return Err(FirmwareError::Empty);
        }
        if self.end() > limit {
            return Err(FirmwareError::TooLarge { size: self.end(), limit });
        }
        Ok(())
    }

    /// One buffer from [`Firmware::start`] to [`Firmware::end`], gaps filled with 0xFF.
    pub fn flatten(&self) -> FlatImage {
        let base = self.start();
        let len = usize::try_from(self.end() - u64::from(base)).unwrap_or(usize::MAX);
        let mut bytes = vec![0xFF; len];
        for seg in &self.segments {
            let at = (seg.address - base) as usize;
            bytes[at..at + seg.data.len()].copy_from_slice(&seg.data);
        }
        FlatImage { base, bytes }
    }

    /// The image as Intel HEX text (16-byte data records, type 04 records
    /// above 64 KiB), for tools that want a .hex file.
    pub fn to_ihex(&self) -> String {
        let mut out = String::new();
        let mut upper: u32 = 0;
        for seg in &self.segments {
            let mut address = seg.address;
            let mut rest = seg.data.as_slice();
            while !rest.is_empty() {
                if address >> 16 != upper {
                    upper = address >> 16;
                    push_record(&mut out, 0, 0x04, &(upper as u16).to_be_bytes());
                }
                // A record may not cross a 64 KiB boundary.
                let to_boundary = 0x1_0000 - (address & 0xFFFF) as usize;
                let n = rest.len().min(16).min(to_boundary);
                push_record(&mut out, (address & 0xFFFF) as u16, 0x00, &rest[..n]);
                rest = &rest[n..];
                address = address.wrapping_add(n as u32);
            }
        }
        out.push_str(":00000001FF\n");
        out
    }
}

fn push_record(out: &mut String, offset: u16, kind: u8, data: &[u8]) {
    let mut sum = data.len() as u8;
    sum = sum.wrapping_add((offset >> 8) as u8).wrapping_add(offset as u8).wrapping_add(kind);
    let _ = write!(out, ":{:02X}{:04X}{:02X}", data.len(), offset, kind);
    for b in data {
        sum = sum.wrapping_add(*b);
        let _ = write!(out, "{b:02X}");
    }
    let _ = writeln!(out, "{:02X}", sum.wrapping_neg());
}

/// Text whose first non-blank byte is ':' and that holds only the characters
/// an Intel HEX file can contain. Raw AVR or ARM images practically never
/// start with ':' followed by nothing but text.
fn looks_like_ihex(bytes: &[u8]) -> bool {
    let trimmed = bytes.trim_ascii_start();
    trimmed.first() == Some(&b':') && trimmed.iter().all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
}

/// Decodes one trimmed record line into bytes (count, address hi/lo, type, data, checksum).
fn decode_record(record: &[u8], line: usize) -> Result<Vec<u8>, FirmwareError> {
    if record[0] != b':' {
        return Err(FirmwareError::MissingColon { line });
    }
    let digits = &record[1..];
    // Report a bad digit before an odd length: a stray character is the more
    // likely (and more useful) explanation.
    for (i, &d) in digits.iter().enumerate() {
        if !d.is_ascii_hexdigit() {
            return Err(FirmwareError::BadHexDigit { line, column: i + 2, found: char::from(d) });
        }
    }
    if !digits.len().is_multiple_of(2) {
        return Err(FirmwareError::OddDigits { line });
    }
    let bytes: Vec<u8> = digits.chunks_exact(2).map(|pair| (hex_value(pair[0]) << 4) | hex_value(pair[1])).collect();
    if bytes.len() < 5 {
        return Err(FirmwareError::TooShort { line });
    }
    Ok(bytes)
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(lines: &[&str]) -> Vec<u8> {
        let mut s = lines.join("\n");
        s.push('\n');
        s.into_bytes()
    }

    fn parse_err(lines: &[&str]) -> FirmwareError {
        Firmware::parse_ihex(&hex(lines)).expect_err("the file must be refused")
    }

    const EOF: &str = ":00000001FF";

    #[test]
    fn parses_data_records_and_merges_contiguous_runs() {
        let fw = Firmware::parse_ihex(&hex(&[":0400000001020304F2", ":02000400AABB95", EOF])).expect("valid");
        assert_eq!(fw.segments(), &[Segment { address: 0, data: vec![1, 2, 3, 4, 0xAA, 0xBB] }]);
        assert_eq!(fw.format(), FirmwareFormat::IntelHex);
        assert_eq!(fw.len(), 6);
        assert_eq!(fw.end(), 6);
    }

    #[test]
    fn accepts_crlf_lowercase_and_blank_lines() {
        let text = b"\r\n:0400000001020304f2\r\n\r\n:00000001ff\r\n";
        let fw = Firmware::parse_ihex(text).expect("valid");
        assert_eq!(fw.flatten(), FlatImage { base: 0, bytes: vec![1, 2, 3, 4] });
    }

    #[test]
    fn gaps_are_filled_with_erased_flash() {
        let fw = Firmware::parse_ihex(&hex(&[":0100000011EE", ":0100040022D9", EOF])).expect("valid");
        assert_eq!(fw.segments().len(), 2);
        assert_eq!(fw.flatten(), FlatImage { base: 0, bytes: vec![0x11, 0xFF, 0xFF, 0xFF, 0x22] });
        assert_eq!(fw.len(), 2);
    }

    #[test]
    fn extended_linear_and_segment_addresses() {
        // 04: upper 16 bits 0x0001 → 0x1_0000; 02: segment 0x2000 → 0x2_0000.
        let fw =
            Firmware::parse_ihex(&hex(&[":020000040001F9", ":01001000559A", ":020000022000DC", ":010000006699", EOF]))
                .expect("valid");
        assert_eq!(
            fw.segments(),
            &[Segment { address: 0x1_0010, data: vec![0x55] }, Segment { address: 0x2_0000, data: vec![0x66] }]
        );
    }

    #[test]
    fn start_address_records_are_ignored() {
        let fw = Firmware::parse_ihex(&hex(&[":0400000300007C007D", ":0400000500007C007B", ":0100000011EE", EOF]))
            .expect("valid");
        assert_eq!(fw.len(), 1);
    }

    #[test]
    fn each_malformed_record_names_its_line() {
        assert_eq!(
            parse_err(&[":0100000011EF", EOF]),
            FirmwareError::BadChecksum { line: 1, expected: 0xEE, found: 0xEF }
        );
        assert_eq!(
            parse_err(&[":0100000011EE", ":01000100G1EE", EOF]),
            FirmwareError::BadHexDigit { line: 2, column: 10, found: 'G' }
        );
        assert_eq!(parse_err(&["0100000011EE", EOF]), FirmwareError::MissingColon { line: 1 });
        assert_eq!(parse_err(&[":0100000011E", EOF]), FirmwareError::OddDigits { line: 1 });
        assert_eq!(parse_err(&[":0000", EOF]), FirmwareError::TooShort { line: 1 });
        assert_eq!(parse_err(&[":0200000011ED", EOF]), FirmwareError::ByteCount { line: 1, declared: 2, actual: 1 });
        assert_eq!(parse_err(&[":0100000611E8", EOF]), FirmwareError::UnknownRecordType { line: 1, kind: 6 });
        assert_eq!(
            parse_err(&[":0100000401FA", EOF]),
            FirmwareError::BadRecordLength { line: 1, kind: 4, expected: 2, actual: 1 }
        );
        assert_eq!(parse_err(&[":0100000011EE"]), FirmwareError::MissingEof);
        assert_eq!(parse_err(&[EOF, ":0100000011EE"]), FirmwareError::AfterEof { line: 2 });
        assert_eq!(
            parse_err(&[":020000000102FB", ":0100010022DC", EOF]),
            FirmwareError::Overlap { line: 2, other_line: 1, address: 1 }
        );
        assert_eq!(parse_err(&[":02000004FFFFFC", ":02FFFF000102FD", EOF]), FirmwareError::AddressOverflow { line: 2 });
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let msg = FirmwareError::BadChecksum { line: 7, expected: 1, found: 2 }.to_string();
        assert!(msg.contains("line 7") && msg.contains("export it again"), "{msg}");
        let msg = FirmwareError::TooLarge { size: 40000, limit: 32256 }.to_string();
        assert!(msg.contains("40000") && msg.contains("32256"), "{msg}");
    }

    #[test]
    fn detect_picks_hex_for_hex_text_and_binary_otherwise() {
        let fw = Firmware::detect(b"  :0100000011EE\n:00000001FF\n").expect("hex");
        assert_eq!(fw.format(), FirmwareFormat::IntelHex);
        let fw = Firmware::detect(&[0x0C, 0x94, 0x34, 0x00]).expect("binary");
        assert_eq!(fw.format(), FirmwareFormat::Binary);
        assert_eq!(fw.segments(), &[Segment { address: 0, data: vec![0x0C, 0x94, 0x34, 0x00] }]);
        // ':' followed by binary bytes is not text: binary.
        let fw = Firmware::detect(&[b':', 0x00, 0xFF]).expect("binary");
        assert_eq!(fw.format(), FirmwareFormat::Binary);
        // Broken HEX is reported, not flashed as binary.
        assert_eq!(
            Firmware::detect(b":0100000011EF\n:00000001FF\n"),
            Err(FirmwareError::BadChecksum { line: 1, expected: 0xEE, found: 0xEF })
        );
        assert_eq!(Firmware::detect(b""), Err(FirmwareError::Empty));
    }

    #[test]
    fn size_check_uses_the_highest_address() {
        let fw = Firmware::from_binary(vec![0; 100], 0).expect("binary");
        assert_eq!(fw.check_fits(100), Ok(()));
        assert_eq!(fw.check_fits(99), Err(FirmwareError::TooLarge { size: 100, limit: 99 }));
        let fw = Firmware::from_binary(vec![0; 10], 0x7C00).expect("binary");
        assert_eq!(fw.check_fits(0x7C00), Err(FirmwareError::TooLarge { size: 0x7C0A, limit: 0x7C00 }));
        let empty = Firmware::parse_ihex(EOF.as_bytes()).expect("valid");
        assert_eq!(empty.check_fits(100), Err(FirmwareError::Empty));
    }

    #[test]
    fn to_ihex_round_trips() {
        let mut data: Vec<u8> = (0..=255).collect();
        data.extend(0..40);
        let fw =
            Firmware::parse_ihex(Firmware::from_binary(data.clone(), 0xFFF0).expect("binary").to_ihex().as_bytes())
                .expect("our own output parses");
        assert_eq!(fw.flatten(), FlatImage { base: 0xFFF0, bytes: data });
    }
}
