//! The redo record: the only thing compute ever ships to storage.
//!
//! # Bytes
//!
//! Every record is a fixed 40-byte header followed by its payload. All integers are
//! little-endian. The same bytes travel in `Append`, sit in the segment log file, go to peers in
//! gossip and come back to a recovering writer; nothing re-encodes them.
//!
//! ```text
//!  offset  size  field
//!  ------  ----  -----------------------------------------------------------------
//!       0     4  magic        0x5344_5846 ("FXDS" on disk): finds record starts when
//!                             re-synchronising after a corrupt record
//!       4     4  crc32        CRC-32C-compatible crc32fast over bytes [8, 40 + len)
//!       8     8  lsn          this record's LSN (> 0)
//!      16     8  prev_lsn     LSN of the previous record of the same PG (0: first)
//!      24     8  page_id      the page this record changes
//!      32     1  flags        bit 0: CPL (last record of a mini-transaction);
//!                             other bits must be zero
//!      33     1  kind         what the payload means; log-service never interprets it
//!      34     2  reserved     must be zero
//!      36     4  len          payload length, at most RECORD_PAYLOAD_BYTES_MAX
//!      40   len  payload      a page-local delta (or a page image at page creation)
//! ```
//!
//! # Invariants
//! - `prev_lsn < lsn`; the records of one PG form a chain through `prev_lsn` (the backlink).
//! - A record whose CRC does not match is never applied, acknowledged or served.
//! - The CRC covers everything after itself, so a flipped bit anywhere past the magic is caught;
//!   a flipped bit in the magic makes the record unreadable, which is handled the same way.

use bytes::{BufMut, Bytes};
use thiserror::Error;

use crate::types::{Lsn, PageId};

pub const RECORD_MAGIC: u32 = 0x5344_5846;
pub const RECORD_HEADER_BYTES: usize = 40;
/// A page-local delta is small; a page image at creation is one 8 KiB page plus a little.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 16 * 1024;
pub const RECORD_BYTES_MAX: usize = RECORD_HEADER_BYTES + RECORD_PAYLOAD_BYTES_MAX;

/// Record flag: this record is a consistency point (the last record of an MTR).
pub const FLAG_CPL: u8 = 0b0000_0001;
const FLAGS_KNOWN: u8 = FLAG_CPL;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("bad record magic {found:#010x}")]
    BadMagic { found: u32 },
    #[error("record crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("record payload of {len} bytes exceeds the limit of {RECORD_PAYLOAD_BYTES_MAX}")]
    TooLarge { len: usize },
    #[error("malformed record header: {0}")]
    Malformed(&'static str),
}

impl RecordError {
    /// True when more bytes could complete the record (a torn tail), false when the bytes that
    /// are there are wrong.
    pub fn is_truncation(&self) -> bool {
        matches!(self, RecordError::Truncated { .. })
    }
}

/// The decoded header of a redo record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub lsn: Lsn,
    pub prev_lsn: Lsn,
    pub page_id: PageId,
    pub flags: u8,
    pub kind: u8,
    pub payload_len: u32,
}

impl RecordHeader {
    pub fn is_cpl(&self) -> bool {
        self.flags & FLAG_CPL != 0
    }

    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_BYTES + self.payload_len as usize
    }
}

/// A verified record borrowed from a buffer: its header, payload and whole encoded bytes.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub header: RecordHeader,
    pub payload: &'a [u8],
    pub bytes: &'a [u8],
}

/// Encodes one record onto `buf`. Panics only on a caller's broken precondition (oversized
/// payload or a backlink that does not point backwards), never on outside input.
pub fn encode(
    buf: &mut Vec<u8>,
    lsn: Lsn,
    prev_lsn: Lsn,
    page_id: PageId,
    flags: u8,
    kind: u8,
    payload: &[u8],
) {
    assert!(
        payload.len() <= RECORD_PAYLOAD_BYTES_MAX,
        "redo payload too large"
    );
    assert!(prev_lsn < lsn, "backlink {prev_lsn:?} must precede {lsn:?}");
    assert_eq!(flags & !FLAGS_KNOWN, 0, "unknown record flags");
    let start = buf.len();
    buf.reserve(RECORD_HEADER_BYTES + payload.len());
    buf.put_u32_le(RECORD_MAGIC);
    buf.put_u32_le(0); // crc, filled below
    buf.put_u64_le(lsn.get());
    buf.put_u64_le(prev_lsn.get());
    buf.put_u64_le(page_id.get());
    buf.put_u8(flags);
    buf.put_u8(kind);
    buf.put_u16_le(0);
    buf.put_u32_le(payload.len() as u32);
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(&buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Encodes one record into its own buffer.
pub fn encode_to_bytes(
    lsn: Lsn,
    prev_lsn: Lsn,
    page_id: PageId,
    flags: u8,
    kind: u8,
    payload: &[u8],
) -> Bytes {
    let mut buf = Vec::with_capacity(RECORD_HEADER_BYTES + payload.len());
    encode(&mut buf, lsn, prev_lsn, page_id, flags, kind, payload);
    Bytes::from(buf)
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes and verifies the record at the start of `buf`. Returns the record and its length.
pub fn decode(buf: &[u8]) -> Result<RecordView<'_>, RecordError> {
    if buf.len() < RECORD_HEADER_BYTES {
        return Err(RecordError::Truncated {
            needed: RECORD_HEADER_BYTES,
            available: buf.len(),
        });
    }
    let magic = u32_at(buf, 0);
    if magic != RECORD_MAGIC {
        return Err(RecordError::BadMagic { found: magic });
    }
    let len = u32_at(buf, 36) as usize;
    if len > RECORD_PAYLOAD_BYTES_MAX {
        return Err(RecordError::TooLarge { len });
    }
    let total = RECORD_HEADER_BYTES + len;
    if buf.len() < total {
        return Err(RecordError::Truncated {
            needed: total,
            available: buf.len(),
        });
    }
    let stored = u32_at(buf, 4);
    let computed = crc32fast::hash(&buf[8..total]);
    if stored != computed {
        return Err(RecordError::BadCrc { stored, computed });
    }
    // Past the CRC the bytes are what the writer wrote; these checks catch a writer bug.
    let header = RecordHeader {
        lsn: Lsn(u64_at(buf, 8)),
        prev_lsn: Lsn(u64_at(buf, 16)),
        page_id: PageId(u64_at(buf, 24)),
        flags: buf[32],
        kind: buf[33],
        payload_len: len as u32,
    };
    if header.lsn == Lsn::ZERO || header.prev_lsn >= header.lsn {
        return Err(RecordError::Malformed("backlink does not point backwards"));
    }
    if header.flags & !FLAGS_KNOWN != 0 || buf[34] != 0 || buf[35] != 0 {
        return Err(RecordError::Malformed(
            "unknown flags or nonzero reserved bytes",
        ));
    }
    Ok(RecordView {
        header,
        payload: &buf[RECORD_HEADER_BYTES..total],
        bytes: &buf[..total],
    })
}

/// Splits a buffer of concatenated records (an `Append` or `ReadRecords` body), verifying each.
/// Fails on the first bad record: a network message is all good or refused whole.
pub fn decode_all(buf: &[u8]) -> Result<Vec<RecordView<'_>>, RecordError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let view = decode(&buf[at..])?;
        at += view.bytes.len();
        out.push(view);
    }
    Ok(out)
}

/// Finds the next offset after `from` where a valid record starts, for re-synchronising a scan
/// after a corrupt record. Returns None when no valid record follows.
pub fn resync(buf: &[u8], from: usize) -> Option<usize> {
    let magic = RECORD_MAGIC.to_le_bytes();
    let mut at = from + 1;
    while at + RECORD_HEADER_BYTES <= buf.len() {
        let offset = buf[at..].windows(4).position(|w| w == magic)?;
        at += offset;
        if decode(&buf[at..]).is_ok() {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// Where the records of a segment log end: after the last valid record in `buf`, skipping
/// corrupt ones as opening a segment does. What follows is the log's preallocated zeros or a
/// torn tail.
pub fn log_end(buf: &[u8]) -> usize {
    let (mut at, mut end) = (0, 0);
    while at < buf.len() {
        match decode(&buf[at..]) {
            Ok(rec) => {
                at += rec.bytes.len();
                end = at;
            }
            Err(_) => match resync(buf, at) {
                Some(next) => at = next,
                None => break,
            },
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut buf = Vec::new();
        encode(&mut buf, Lsn(7), Lsn(3), PageId(42), FLAG_CPL, 9, b"delta");
        buf
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let buf = sample();
        let rec = decode(&buf).unwrap();
        assert_eq!(rec.header.lsn, Lsn(7));
        assert_eq!(rec.header.prev_lsn, Lsn(3));
        assert_eq!(rec.header.page_id, PageId(42));
        assert!(rec.header.is_cpl());
        assert_eq!(rec.header.kind, 9);
        assert_eq!(rec.payload, b"delta");
        assert_eq!(rec.bytes.len(), buf.len());
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let good = sample();
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&bad).is_err(), "flipped bit {bit} went unnoticed");
        }
    }

    #[test]
    fn every_truncation_is_reported_as_truncation() {
        let good = sample();
        for len in 0..good.len() {
            let err = decode(&good[..len]).unwrap_err();
            assert!(err.is_truncation(), "{len}: {err}");
        }
    }

    #[test]
    fn oversized_length_is_refused_before_reading() {
        let mut bad = sample();
        bad[36..40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&bad), Err(RecordError::TooLarge { .. })));
    }

    #[test]
    fn resync_skips_a_corrupt_record() {
        let mut buf = sample();
        let second = buf.len();
        encode(&mut buf, Lsn(9), Lsn(7), PageId(1), 0, 1, b"x");
        buf[20] ^= 0xff;
        assert!(decode(&buf).is_err());
        assert_eq!(resync(&buf, 0), Some(second));
        assert_eq!(resync(&buf, second), None);
    }
}
