//! The JPEG-shaped frames the camera tests' and benchmark's MJPEG sources
//! send: SOI, a COM segment saying `frame N`, padding, EOI. Included with
//! `#[path]` by tests/blackbox/camera.rs and tests/bench/camera.rs.

/// Frame `n`, with `padding` bytes to make it as large as a run needs.
pub fn jpeg(n: u64, padding: usize) -> Vec<u8> {
    let comment = format!("frame {n}");
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xFE];
    out.extend_from_slice(&((comment.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(comment.as_bytes());
    out.extend(std::iter::repeat_n(0x55, padding));
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// The number in a frame's COM segment.
pub fn frame_number(jpeg: &[u8]) -> u64 {
    assert_eq!(&jpeg[..4], [0xFF, 0xD8, 0xFF, 0xFE], "not one of the source's frames");
    let len = u16::from_be_bytes([jpeg[4], jpeg[5]]) as usize;
    let comment = std::str::from_utf8(&jpeg[6..4 + len]).unwrap();
    comment.strip_prefix("frame ").unwrap().parse().unwrap()
}
