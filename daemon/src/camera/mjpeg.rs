//! The MJPEG wire format: a `multipart/x-mixed-replace` body cut into its
//! parts (JPEG frames) as bytes arrive, within a size bound.
//!
//! Pure: no I/O. The parser holds at most one frame (up to the bound) plus a
//! boundary's worth of bytes; a part over the bound is skipped as it
//! arrives, never buffered. A part with `Content-Length` (ustreamer,
//! mjpg-streamer) is cut by length; one without, at the next boundary.

use bytes::{Buf, Bytes, BytesMut};

/// One part of the stream, as far as the relay cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// A whole frame's bytes (a JPEG, never decoded).
    Frame(Bytes),
    /// A part larger than the bound, skipped.
    Oversized,
}

/// Why a stream cannot be read as MJPEG.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("a part's headers are longer than {MAX_HEADERS} bytes")]
    HeadersTooLong,
    #[error("a part has a Content-Length that is not a number")]
    BadLength,
    #[error("the source ended the stream (closing boundary)")]
    Closed,
}

/// The longest header block of one part; ustreamer sends about 150 bytes.
const MAX_HEADERS: usize = 8 << 10;

/// The boundary a `Content-Type: multipart/x-mixed-replace; boundary=...`
/// header names, if it names one.
pub fn boundary(content_type: &str) -> Option<String> {
    let (mime, params) = content_type.split_once(';').unwrap_or((content_type, ""));
    if !mime.trim().eq_ignore_ascii_case("multipart/x-mixed-replace") {
        return None;
    }
    params.split(';').find_map(|param| {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim().trim_matches('"');
        (!value.is_empty()).then(|| value.to_owned())
    })
}

#[derive(Debug)]
enum State {
    /// Looking for the next delimiter line.
    Delimiter,
    /// Reading a part's headers, up to the empty line.
    Headers,
    /// Reading a part's body: `len` bytes, or up to the next delimiter.
    Body { len: Option<usize> },
    /// Dropping an oversized part: `remaining` bytes, or up to the next delimiter.
    Skip { remaining: Option<usize> },
    /// After the closing delimiter.
    Done,
}

/// Cuts a multipart body into [`Part`]s as its bytes arrive.
#[derive(Debug)]
pub struct Parser {
    /// `--` and the boundary.
    delimiter: Vec<u8>,
    buf: BytesMut,
    state: State,
    max_frame: usize,
    /// Where to resume looking for the delimiter in `buf` (bytes before it were searched).
    searched: usize,
}

impl Parser {
    /// A parser for parts separated by `boundary`, dropping those over `max_frame` bytes.
    pub fn new(boundary: &str, max_frame: usize) -> Parser {
        // Some cameras put the dashes in the parameter too; one pair is enough to find it.
        let delimiter = match boundary.starts_with("--") {
            true => boundary.as_bytes().to_vec(),
            false => [b"--", boundary.as_bytes()].concat(),
        };
        Parser { delimiter, buf: BytesMut::new(), state: State::Delimiter, max_frame, searched: 0 }
    }

    /// Takes the next bytes of the body; whole parts go to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Part>) -> Result<(), ParseError> {
        // Bytes of a skipped part never enter the buffer.
        if let State::Skip { remaining: Some(remaining) } = &mut self.state {
            let n = (*remaining).min(data.len());
            *remaining -= n;
            data = &data[n..];
            if *remaining == 0 {
                self.state = State::Delimiter;
            }
        }
        self.buf.extend_from_slice(data);
        loop {
            let progressed = match self.state {
                State::Delimiter => self.delimiter_line()?,
                State::Headers => self.headers(out)?,
                State::Body { len: Some(len) } => self.body_of_length(len, out),
                State::Body { len: None } => self.body_to_delimiter(out),
                State::Skip { remaining: Some(remaining) } => {
                    let n = remaining.min(self.buf.len());
                    self.buf.advance(n);
                    self.state = match remaining - n {
                        0 => State::Delimiter,
                        left => State::Skip { remaining: Some(left) },
                    };
                    n > 0
                }
                State::Skip { remaining: None } => self.skip_to_delimiter(),
                State::Done => return Err(ParseError::Closed),
            };
            if !progressed {
                return Ok(());
            }
        }
    }

    /// Finds the delimiter at or after `searched`.
    fn find_delimiter(&mut self) -> Option<usize> {
        let from = self.searched.min(self.buf.len());
        let found = find(&self.buf[from..], &self.delimiter).map(|i| from + i);
        // Next time, look again only where a delimiter may straddle the end.
        self.searched = match found {
            Some(_) => 0,
            None => self.buf.len().saturating_sub(self.delimiter.len() - 1),
        };
        found
    }

    fn delimiter_line(&mut self) -> Result<bool, ParseError> {
        let Some(at) = self.find_delimiter() else {
            // Not there yet: keep only what may be its beginning.
            let keep = self.delimiter.len() - 1;
            if self.buf.len() > keep {
                let drop = self.buf.len() - keep;
                self.buf.advance(drop);
                self.searched = self.searched.saturating_sub(drop);
            }
            return Ok(false);
        };
        let after = at + self.delimiter.len();
        if self.buf.len() >= after + 2 && &self.buf[after..after + 2] == b"--" {
            self.state = State::Done;
            return Err(ParseError::Closed);
        }
        let Some(newline) = self.buf[after..].iter().position(|&b| b == b'\n') else {
            if self.buf.len() - after > MAX_HEADERS {
                return Err(ParseError::HeadersTooLong);
            }
            // The rest of the delimiter line is still coming: look here again.
            self.buf.advance(at);
            self.searched = 0;
            return Ok(false);
        };
        self.buf.advance(after + newline + 1);
        self.searched = 0;
        self.state = State::Headers;
        Ok(true)
    }

    fn headers(&mut self, out: &mut Vec<Part>) -> Result<bool, ParseError> {
        // The header block ends at the first empty line (CRLF or bare LF).
        let mut start = 0;
        let end = loop {
            let Some(newline) = self.buf[start..].iter().position(|&b| b == b'\n') else {
                if self.buf.len() > MAX_HEADERS {
                    return Err(ParseError::HeadersTooLong);
                }
                return Ok(false);
            };
            let line = &self.buf[start..start + newline];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                break start + newline + 1;
            }
            start += newline + 1;
        };
        let mut len = None;
        for line in self.buf[..end].split(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(line);
            if let Some((name, value)) = line.split_once(':')
                && name.trim().eq_ignore_ascii_case("content-length")
            {
                len = Some(value.trim().parse::<usize>().map_err(|_| ParseError::BadLength)?);
            }
        }
        self.buf.advance(end);
        self.state = match len {
            Some(len) if len > self.max_frame => {
                out.push(Part::Oversized);
                State::Skip { remaining: Some(len) }
            }
            len => State::Body { len },
        };
        Ok(true)
    }

    fn body_of_length(&mut self, len: usize, out: &mut Vec<Part>) -> bool {
        if self.buf.len() < len {
            self.buf.reserve(len - self.buf.len());
            return false;
        }
        out.push(Part::Frame(self.buf.split_to(len).freeze()));
        self.state = State::Delimiter;
        true
    }

    fn body_to_delimiter(&mut self, out: &mut Vec<Part>) -> bool {
        match self.find_delimiter() {
            Some(at) => {
                let mut frame = self.buf.split_to(at).freeze();
                // The line break before the delimiter belongs to it, not to the frame.
                for suffix in [&b"\r\n"[..], b"\n"] {
                    if frame.ends_with(suffix) {
                        frame.truncate(frame.len() - suffix.len());
                        break;
                    }
                }
                // Found at once in a large read: still over the bound.
                out.push(if frame.len() > self.max_frame { Part::Oversized } else { Part::Frame(frame) });
                self.state = State::Delimiter;
                true
            }
            None if self.buf.len() > self.max_frame + self.delimiter.len() + 2 => {
                out.push(Part::Oversized);
                self.state = State::Skip { remaining: None };
                true
            }
            None => false,
        }
    }

    fn skip_to_delimiter(&mut self) -> bool {
        match self.find_delimiter() {
            Some(at) => {
                self.buf.advance(at);
                self.state = State::Delimiter;
                true
            }
            None => {
                let keep = self.delimiter.len() - 1;
                let drop = self.buf.len().saturating_sub(keep);
                self.buf.advance(drop);
                self.searched = self.searched.saturating_sub(drop);
                false
            }
        }
    }

    /// Bytes held right now (for the memory bound's tests).
    #[cfg(test)]
    fn buffered(&self) -> usize {
        self.buf.len()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= haystack.len() {
        match haystack[i..=haystack.len() - needle.len()].iter().position(|&b| b == first) {
            None => return None,
            Some(p) => i += p,
        }
        if &haystack[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream of `frames`, each part with or without its Content-Length.
    fn stream(frames: &[&[u8]], with_length: bool) -> Vec<u8> {
        let mut out = b"preamble to ignore\r\n".to_vec();
        for frame in frames {
            out.extend_from_slice(b"--frame\r\nContent-Type: image/jpeg\r\n");
            if with_length {
                out.extend_from_slice(format!("Content-Length: {}\r\n", frame.len()).as_bytes());
            }
            out.extend_from_slice(b"X-Timestamp: 1.5\r\n\r\n");
            out.extend_from_slice(frame);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    fn parse_in_chunks(bytes: &[u8], chunk: usize, max_frame: usize) -> Vec<Part> {
        let mut parser = Parser::new("frame", max_frame);
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk) {
            parser.push(piece, &mut out).unwrap();
        }
        out
    }

    fn frames(parts: &[Part]) -> Vec<Vec<u8>> {
        parts.iter().filter_map(|p| if let Part::Frame(f) = p { Some(f.to_vec()) } else { None }).collect()
    }

    #[test]
    fn the_boundary_comes_from_the_content_type() {
        let ustreamer = "multipart/x-mixed-replace;boundary=boundarydonotcross";
        assert_eq!(boundary(ustreamer).as_deref(), Some("boundarydonotcross"));
        assert_eq!(boundary("Multipart/X-Mixed-Replace; charset=x; Boundary=\"a b\"").as_deref(), Some("a b"));
        assert_eq!(boundary("image/jpeg"), None);
        assert_eq!(boundary("multipart/x-mixed-replace"), None);
    }

    #[test]
    fn frames_come_out_whole_however_the_bytes_are_split() {
        // A frame that holds the boundary's first bytes must not be cut there.
        let frames_in: [&[u8]; 3] = [b"\xff\xd8one\xff\xd9", b"\xff\xd8--fram two\r\n-\xff\xd9", b"\xff\xd8\xff\xd9"];
        for with_length in [true, false] {
            let bytes = stream(&frames_in, with_length);
            for chunk in [1, 2, 3, 7, 64, bytes.len()] {
                let parts = parse_in_chunks(&bytes, chunk, 1024);
                // Without a length, the last frame ends only when the next delimiter comes.
                let expected = if with_length { 3 } else { 2 };
                assert_eq!(frames(&parts), frames_in[..expected].to_vec(), "chunks of {chunk}, length {with_length}");
            }
        }
    }

    #[test]
    fn oversized_parts_are_skipped_without_being_held() {
        let big = vec![0xAB; 10_000];
        let frames_in: [&[u8]; 3] = [b"small-1", &big, b"small-2"];
        for with_length in [true, false] {
            let mut bytes = stream(&frames_in, with_length);
            bytes.extend_from_slice(b"--frame\r\n\r\nnext\r\n--frame\r\n");
            let mut parser = Parser::new("frame", 1000);
            let mut out = Vec::new();
            let mut most = 0;
            for piece in bytes.chunks(100) {
                parser.push(piece, &mut out).unwrap();
                most = most.max(parser.buffered());
            }
            assert_eq!(
                out,
                [
                    Part::Frame(Bytes::from_static(b"small-1")),
                    Part::Oversized,
                    Part::Frame(Bytes::from_static(b"small-2")),
                    Part::Frame(Bytes::from_static(b"next")),
                ]
            );
            assert!(most <= 1000 + 200, "held {most} bytes for a 1000-byte bound (length {with_length})");
        }
    }

    #[test]
    fn a_part_without_length_over_the_bound_is_dropped_even_when_it_arrives_at_once() {
        let just_over = vec![0xAB; 1001];
        let bytes = stream(&[&just_over, b"next"], false);
        let mut parser = Parser::new("frame", 1000);
        let mut out = Vec::new();
        parser.push(&bytes, &mut out).unwrap();
        assert_eq!(out, [Part::Oversized]);
    }

    #[test]
    fn the_closing_boundary_and_broken_headers_end_the_stream() {
        let mut parser = Parser::new("--frame", 100);
        let mut out = Vec::new();
        assert_eq!(
            parser.push(b"--frame\r\nContent-Length: 2\r\n\r\nab\r\n--frame--\r\n", &mut out),
            Err(ParseError::Closed)
        );
        assert_eq!(out, [Part::Frame(Bytes::from_static(b"ab"))]);
        let mut parser = Parser::new("frame", 100);
        assert_eq!(parser.push(b"--frame\r\nContent-Length: lots\r\n\r\n", &mut out), Err(ParseError::BadLength));
        let mut parser = Parser::new("frame", 100);
        let endless = [b"--frame\r\nX: ".as_slice(), &[b'y'; MAX_HEADERS + 1]].concat();
        assert_eq!(parser.push(&endless, &mut out), Err(ParseError::HeadersTooLong));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Pieces a stream is made of, right and wrong, so that every state is reached.
        fn piece() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                Just(b"--frame".to_vec()),
                Just(b"--frame--".to_vec()),
                Just(b"\r\n".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"Content-Length: 5\r\n".to_vec()),
                Just(b"Content-Length: 100000\r\n".to_vec()),
                Just(b"Content-Length: x\r\n".to_vec()),
                prop::collection::vec(any::<u8>(), 0..300),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever a source sends, cut however the network cuts it, the
            /// parser neither panics nor holds much more than one frame.
            #[test]
            fn any_stream_in_any_chunks_stays_within_the_bound(
                pieces in prop::collection::vec(piece(), 0..40),
                chunk in prop_oneof![1usize..97, 900usize..3000],
            ) {
                let bytes = pieces.concat();
                let mut parser = Parser::new("frame", 1000);
                let mut out = Vec::new();
                for piece in bytes.chunks(chunk) {
                    if parser.push(piece, &mut out).is_err() {
                        break;
                    }
                    prop_assert!(parser.buffered() <= 1000 + MAX_HEADERS + 2 * chunk, "held {}", parser.buffered());
                }
                for part in &out {
                    if let Part::Frame(frame) = part {
                        prop_assert!(frame.len() <= 1000, "a frame of {} bytes passed a 1000-byte bound", frame.len());
                    }
                }
            }
        }
    }
}
