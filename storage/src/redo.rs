//! Page redo: the page-local deltas that compute emits and storage replays.
//!
//! A redo record in the segment log (owned by `sixfold-log-service`) carries a header with
//! the LSN, the page id, a `kind` byte and the payload length, and it never interprets the
//! payload. This module defines those kind codes and payload bytes. The only full page image
//! is `InitPage`, the image at creation; every other kind is a delta against one page.
//!
//! # Payload bytes (all integers little-endian)
//!
//! ```text
//!  kind  name         payload
//!  ----  -----------  -------------------------------------------------------------
//!     0  (reserved)   never valid, so a zeroed record header cannot decode
//!     1  InitPage     page_id u64 | page kind u8 (non-zero)                9 bytes
//!     2  InsertCell   slot u16 | len u16 | cell bytes[len]                4 + len bytes
//!     3  ReplaceCell  slot u16 | len u16 | cell bytes[len]                4 + len bytes
//!     4  DeleteCell   slot u16                                             2 bytes
//!     5  SetLink      link u64 (a page id; 0 = no link)                    8 bytes
//! ```
//!
//! # Invariants (checked by [`PageRedo::decode`])
//!
//! - The payload length is exactly the one in the table: no truncation, no trailing bytes.
//! - `len` agrees with the bytes that follow it and is at most [`CELL_BYTES_MAX`], so no
//!   length field can make the decoder allocate more than the payload it was handed.
//! - `InitPage` names a non-zero page kind.
//!
//! Slot ranges and free space are not checked here: they depend on the page, so
//! [`apply`](crate::apply()) checks them.
//!
//! `InitPage` carries its page id, although the record header has one too, because the page
//! image stores its own id and `apply` has no other source for it; the storage node checks
//! the two agree when it routes a record.

use sixfold_log_service::PageId;

use crate::error::PageError;
use crate::page::{CELL_BYTES_MAX, PageKind};

/// Bytes before the cell in an `InsertCell` or `ReplaceCell` payload (slot u16, len u16).
const CELL_PAYLOAD_HEADER_BYTES: usize = 4;
/// Largest payload of any page redo kind. The log can bound a record's size with it.
pub const REDO_PAYLOAD_BYTES_MAX: usize = CELL_PAYLOAD_HEADER_BYTES + CELL_BYTES_MAX;

const _: () = assert!(CELL_BYTES_MAX <= u16::MAX as usize);

/// One change to one page.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum PageRedo {
    /// Creates an empty page (or empties a reused one): the image at creation.
    InitPage { page_id: PageId, kind: PageKind },
    /// Inserts a cell at `slot` (`slot == slot_count` appends); later slots move up by one.
    InsertCell { slot: u16, bytes: Vec<u8> },
    /// Replaces the bytes of the cell at `slot`.
    ReplaceCell { slot: u16, bytes: Vec<u8> },
    /// Removes the cell at `slot`; later slots move down by one.
    DeleteCell { slot: u16 },
    /// Sets the page's link field ([`NO_LINK`](crate::page::NO_LINK) clears it).
    SetLink { link: PageId },
}

impl PageRedo {
    pub const KIND_INIT_PAGE: u8 = 1;
    pub const KIND_INSERT_CELL: u8 = 2;
    pub const KIND_REPLACE_CELL: u8 = 3;
    pub const KIND_DELETE_CELL: u8 = 4;
    pub const KIND_SET_LINK: u8 = 5;

    /// The kind code stored in the redo record header.
    pub fn kind(&self) -> u8 {
        match self {
            PageRedo::InitPage { .. } => Self::KIND_INIT_PAGE,
            PageRedo::InsertCell { .. } => Self::KIND_INSERT_CELL,
            PageRedo::ReplaceCell { .. } => Self::KIND_REPLACE_CELL,
            PageRedo::DeleteCell { .. } => Self::KIND_DELETE_CELL,
            PageRedo::SetLink { .. } => Self::KIND_SET_LINK,
        }
    }

    /// The kind code and payload bytes, as laid out in the module docs.
    ///
    /// # Panics
    ///
    /// If a cell is longer than [`CELL_BYTES_MAX`]. Such redo cannot have come from a
    /// successful [`apply`](crate::apply()), which is how a writer builds its redo, so it is a
    /// bug in the caller and must not reach the log.
    pub fn encode(&self) -> (u8, Vec<u8>) {
        let payload = match self {
            PageRedo::InitPage { page_id, kind } => {
                let mut payload = Vec::with_capacity(9);
                payload.extend_from_slice(&page_id.get().to_le_bytes());
                payload.push(kind.get());
                payload
            }
            PageRedo::InsertCell { slot, bytes } | PageRedo::ReplaceCell { slot, bytes } => {
                assert!(
                    bytes.len() <= CELL_BYTES_MAX,
                    "cell of {} bytes exceeds CELL_BYTES_MAX",
                    bytes.len()
                );
                let len = u16::try_from(bytes.len()).expect("CELL_BYTES_MAX fits in u16");
                let mut payload = Vec::with_capacity(CELL_PAYLOAD_HEADER_BYTES + bytes.len());
                payload.extend_from_slice(&slot.to_le_bytes());
                payload.extend_from_slice(&len.to_le_bytes());
                payload.extend_from_slice(bytes);
                payload
            }
            PageRedo::DeleteCell { slot } => slot.to_le_bytes().to_vec(),
            PageRedo::SetLink { link } => link.get().to_le_bytes().to_vec(),
        };
        (self.kind(), payload)
    }

    /// Parses a payload of kind `kind`. Rejects every malformed input with an error; never
    /// panics and never allocates more than `payload.len()` bytes.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<PageRedo, PageError> {
        let malformed = |reason| PageError::MalformedRedo { kind, reason };
        match kind {
            Self::KIND_INIT_PAGE => {
                let [i0, i1, i2, i3, i4, i5, i6, i7, code] =
                    exact::<9>(payload).ok_or(malformed("InitPage payload is not 9 bytes"))?;
                let kind = PageKind::new(code).ok_or(malformed("InitPage with page kind 0"))?;
                let page_id = PageId(u64::from_le_bytes([i0, i1, i2, i3, i4, i5, i6, i7]));
                Ok(PageRedo::InitPage { page_id, kind })
            }
            Self::KIND_INSERT_CELL | Self::KIND_REPLACE_CELL => {
                let (slot, bytes) = decode_cell(payload).map_err(malformed)?;
                if kind == Self::KIND_INSERT_CELL {
                    Ok(PageRedo::InsertCell { slot, bytes })
                } else {
                    Ok(PageRedo::ReplaceCell { slot, bytes })
                }
            }
            Self::KIND_DELETE_CELL => {
                let slot =
                    exact::<2>(payload).ok_or(malformed("DeleteCell payload is not 2 bytes"))?;
                Ok(PageRedo::DeleteCell {
                    slot: u16::from_le_bytes(slot),
                })
            }
            Self::KIND_SET_LINK => {
                let link =
                    exact::<8>(payload).ok_or(malformed("SetLink payload is not 8 bytes"))?;
                Ok(PageRedo::SetLink {
                    link: PageId(u64::from_le_bytes(link)),
                })
            }
            unknown => Err(PageError::UnknownRedoKind(unknown)),
        }
    }
}

/// The payload as an array, if it has exactly `N` bytes.
fn exact<const N: usize>(payload: &[u8]) -> Option<[u8; N]> {
    <[u8; N]>::try_from(payload).ok()
}

/// Parses `slot u16 | len u16 | bytes[len]`. The length is checked against the limit and the
/// payload before anything is allocated.
fn decode_cell(payload: &[u8]) -> Result<(u16, Vec<u8>), &'static str> {
    let Some(([s0, s1, l0, l1], bytes)) = payload.split_first_chunk::<CELL_PAYLOAD_HEADER_BYTES>()
    else {
        return Err("cell payload shorter than its 4-byte header");
    };
    let len = usize::from(u16::from_le_bytes([*l0, *l1]));
    if len > CELL_BYTES_MAX {
        return Err("cell length exceeds CELL_BYTES_MAX");
    }
    if bytes.len() != len {
        return Err("cell length disagrees with the payload length");
    }
    Ok((u16::from_le_bytes([*s0, *s1]), bytes.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<PageRedo> {
        vec![
            PageRedo::InitPage {
                page_id: PageId(u64::MAX),
                kind: PageKind::new(255).expect("non-zero"),
            },
            PageRedo::InsertCell {
                slot: 3,
                bytes: b"hello".to_vec(),
            },
            PageRedo::InsertCell {
                slot: 0,
                bytes: Vec::new(),
            },
            PageRedo::ReplaceCell {
                slot: u16::MAX,
                bytes: vec![0xab; CELL_BYTES_MAX],
            },
            PageRedo::DeleteCell { slot: 513 },
            PageRedo::SetLink {
                link: PageId(0x0102_0304_0506_0708),
            },
        ]
    }

    // Proves encode and decode are inverses for every kind, including the extremes.
    #[test]
    fn every_kind_round_trips() {
        for redo in samples() {
            let (kind, payload) = redo.encode();
            assert_eq!(kind, redo.kind());
            assert!(payload.len() <= REDO_PAYLOAD_BYTES_MAX);
            assert_eq!(PageRedo::decode(kind, &payload), Ok(redo));
        }
    }

    // Proves the payload bytes are exactly the ones documented in the module table.
    #[test]
    fn payload_bytes_match_the_spec() {
        let init = PageRedo::InitPage {
            page_id: PageId(0x0102),
            kind: PageKind::new(7).expect("non-zero"),
        };
        assert_eq!(init.encode(), (1, vec![2, 1, 0, 0, 0, 0, 0, 0, 7]));
        let insert = PageRedo::InsertCell {
            slot: 0x0201,
            bytes: b"ab".to_vec(),
        };
        assert_eq!(insert.encode(), (2, vec![1, 2, 2, 0, b'a', b'b']));
        let replace = PageRedo::ReplaceCell {
            slot: 1,
            bytes: b"z".to_vec(),
        };
        assert_eq!(replace.encode(), (3, vec![1, 0, 1, 0, b'z']));
        assert_eq!(PageRedo::DeleteCell { slot: 5 }.encode(), (4, vec![5, 0]));
        let link = PageRedo::SetLink { link: PageId(9) };
        assert_eq!(link.encode(), (5, vec![9, 0, 0, 0, 0, 0, 0, 0]));
    }

    // Proves every strict prefix and every one-byte extension of every payload is rejected
    // with an error, never decoded as something else and never a panic.
    #[test]
    fn truncated_and_extended_payloads_are_rejected() {
        for redo in samples() {
            let (kind, payload) = redo.encode();
            for len in 0..payload.len() {
                assert!(
                    matches!(
                        PageRedo::decode(kind, &payload[..len]),
                        Err(PageError::MalformedRedo { .. })
                    ),
                    "{redo:?} truncated to {len}"
                );
            }
            let mut longer = payload.clone();
            longer.push(0);
            assert!(
                matches!(
                    PageRedo::decode(kind, &longer),
                    Err(PageError::MalformedRedo { .. })
                ),
                "{redo:?} with a trailing byte"
            );
        }
    }

    // Proves the length field cannot lie: too long, disagreeing, or over the limit.
    #[test]
    fn bad_cell_lengths_are_rejected() {
        let over_limit = u16::try_from(CELL_BYTES_MAX + 1).expect("fits");
        for (len, body_bytes) in [(over_limit, CELL_BYTES_MAX + 1), (u16::MAX, 3), (5, 4)] {
            let mut payload = vec![0, 0];
            payload.extend_from_slice(&len.to_le_bytes());
            payload.resize(4 + body_bytes, 0x5a);
            for kind in [PageRedo::KIND_INSERT_CELL, PageRedo::KIND_REPLACE_CELL] {
                assert!(matches!(
                    PageRedo::decode(kind, &payload),
                    Err(PageError::MalformedRedo { .. })
                ));
            }
        }
    }

    // Proves unknown kinds (including the reserved 0) and page kind 0 are rejected.
    #[test]
    fn unknown_kinds_are_rejected() {
        for kind in [0, 6, 200, 255] {
            assert_eq!(
                PageRedo::decode(kind, &[0; 9]),
                Err(PageError::UnknownRedoKind(kind))
            );
        }
        assert!(matches!(
            PageRedo::decode(PageRedo::KIND_INIT_PAGE, &[1, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(PageError::MalformedRedo { .. })
        ));
    }
}
