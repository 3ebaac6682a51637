//! CRC-checked frames: the one on-disk record format of the meta crate (log entries, the vote,
//! the log state, snapshots).
//!
//! ```text
//! offset  size  field
//! 0       4     magic        0x53 0x58 0x46 0x31 ("SXF1")
//! 4       4     payload_len  u32 little-endian, <= FRAME_PAYLOAD_BYTES_MAX
//! 8       4     payload_crc  crc32 (IEEE) of the payload
//! 12      4     header_crc   crc32 of bytes 0..12
//! 16      len   payload      JSON
//! ```
//!
//! The header has its own CRC so a flipped bit in `payload_len` is detected before the length is
//! trusted. Assumed of the disk: fsync makes written bytes durable; a crash may leave any prefix
//! of an unsynced write, with garbage or zeros after it (a torn tail); sectors are not assumed
//! atomic.

use crate::limits::FRAME_PAYLOAD_BYTES_MAX;

pub const FRAME_MAGIC: [u8; 4] = *b"SXF1";
pub const FRAME_HEADER_BYTES: usize = 16;

/// Appends one frame holding `payload` to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    assert!(
        payload.len() <= FRAME_PAYLOAD_BYTES_MAX,
        "frame payload of {} bytes over the limit; callers check sizes first",
        payload.len()
    );
    let start = out.len();
    out.extend_from_slice(&FRAME_MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let header_crc = crc32fast::hash(&out[start..start + 12]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(payload);
    // Paired check: what we wrote decodes to what we were given.
    debug_assert!(matches!(
        decode_frame(&out[start..]),
        Decoded::Frame { payload: p, .. } if p == payload
    ));
}

/// What the bytes at the start of a buffer hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, valid frame of `frame_bytes` bytes.
    Frame {
        payload: &'a [u8],
        frame_bytes: usize,
    },
    /// A valid header whose payload runs past the end, or too few bytes for a header.
    Incomplete,
    /// The bytes are not a valid frame.
    Invalid(&'static str),
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(word)
}

/// Decodes the frame at the start of `buf`. Never panics, whatever the bytes.
pub fn decode_frame(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < FRAME_HEADER_BYTES {
        return Decoded::Incomplete;
    }
    if buf[0..4] != FRAME_MAGIC {
        return Decoded::Invalid("bad magic");
    }
    if crc32fast::hash(&buf[0..12]) != u32_at(buf, 12) {
        return Decoded::Invalid("header checksum mismatch");
    }
    let payload_len = u32_at(buf, 4) as usize;
    if payload_len > FRAME_PAYLOAD_BYTES_MAX {
        return Decoded::Invalid("payload length over the limit");
    }
    let frame_bytes = FRAME_HEADER_BYTES + payload_len;
    if buf.len() < frame_bytes {
        return Decoded::Incomplete;
    }
    let payload = &buf[FRAME_HEADER_BYTES..frame_bytes];
    if crc32fast::hash(payload) != u32_at(buf, 8) {
        return Decoded::Invalid("payload checksum mismatch");
    }
    Decoded::Frame {
        payload,
        frame_bytes,
    }
}

/// The frames of an append-only file.
#[derive(Debug)]
pub struct Scan<'a> {
    /// Each valid frame's byte offset and payload, in file order.
    pub frames: Vec<(u64, &'a [u8])>,
    /// Where the valid frames end. Less than the buffer's length when the tail is torn.
    pub valid_bytes: u64,
}

/// Bytes in the middle of a file that are not a valid frame, while valid frames follow.
#[derive(Debug, PartialEq, Eq)]
pub struct MidFileCorruption {
    pub offset: u64,
    pub reason: &'static str,
    /// Where the next valid frame starts: the proof that this is not a torn tail.
    pub next_valid_offset: u64,
}

/// Reads every frame of an append-only file.
///
/// A bad frame with no valid frame anywhere after it is a torn tail (the last write before a
/// crash) and ends the scan. A bad frame followed by a valid one cannot come from a torn write:
/// it is corruption, reported with its offset, and nothing is cut.
pub fn scan_frames(buf: &[u8]) -> Result<Scan<'_>, MidFileCorruption> {
    let mut frames = Vec::new();
    let mut at = 0usize;
    while at < buf.len() {
        let reason = match decode_frame(&buf[at..]) {
            Decoded::Frame {
                payload,
                frame_bytes,
            } => {
                frames.push((at as u64, payload));
                at += frame_bytes;
                continue;
            }
            Decoded::Incomplete => "incomplete frame",
            Decoded::Invalid(reason) => reason,
        };
        if let Some(next) = find_valid_frame(buf, at + 1) {
            return Err(MidFileCorruption {
                offset: at as u64,
                reason,
                next_valid_offset: next as u64,
            });
        }
        break;
    }
    Ok(Scan {
        frames,
        valid_bytes: at as u64,
    })
}

/// The offset of the first valid frame starting at or after `from`, if any.
fn find_valid_frame(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len().saturating_sub(FRAME_HEADER_BYTES - 1))
        .filter(|&at| buf[at..at + 4] == FRAME_MAGIC)
        .find(|&at| matches!(decode_frame(&buf[at..]), Decoded::Frame { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        let mut buf = Vec::new();
        for p in payloads {
            encode_frame(p, &mut buf);
        }
        buf
    }

    // Proves a frame round-trips and every strict prefix of it reads as incomplete, never as a
    // frame or a panic.
    #[test]
    fn round_trip_and_prefixes() {
        let buf = frames(&[b"hello"]);
        assert_eq!(
            decode_frame(&buf),
            Decoded::Frame {
                payload: b"hello",
                frame_bytes: buf.len()
            }
        );
        for cut in 0..buf.len() {
            assert_eq!(
                decode_frame(&buf[..cut]),
                Decoded::Incomplete,
                "cut at {cut}"
            );
        }
    }

    // Proves a torn last frame is cut and the frames before it kept, for every tear point.
    #[test]
    fn torn_tail_is_cut() {
        let buf = frames(&[b"one", b"two", b"three"]);
        let third = buf.len() - (FRAME_HEADER_BYTES + 5);
        for cut in third..buf.len() {
            let scan = scan_frames(&buf[..cut]).expect("a torn tail is not corruption");
            assert_eq!(scan.frames.len(), 2);
            assert_eq!(scan.valid_bytes, third as u64);
        }
        // Zeros after the last frame (a preallocated or unwritten extent) are a torn tail too.
        let mut zeros = buf.clone();
        zeros.extend_from_slice(&[0u8; 100]);
        let scan = scan_frames(&zeros).unwrap();
        assert_eq!(scan.frames.len(), 3);
        assert_eq!(scan.valid_bytes, buf.len() as u64);
    }

    // Proves a flipped bit anywhere in a frame that has valid frames after it is reported as
    // corruption at that frame's offset, never cut silently.
    #[test]
    fn flipped_bit_mid_file_is_corruption() {
        let buf = frames(&[b"one", b"two", b"three"]);
        let second = FRAME_HEADER_BYTES + 3;
        let third = second + FRAME_HEADER_BYTES + 3;
        for byte in second..third {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                let err = scan_frames(&bad).expect_err("corruption must be reported");
                assert_eq!(err.offset, second as u64, "byte {byte} bit {bit}");
            }
        }
    }

    // Proves arbitrary garbage never panics the scanner.
    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..300 {
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                buf.push(seed as u8);
            }
            let _ = scan_frames(&buf);
            let _ = decode_frame(&buf);
        }
    }
}
