//! The one error type of the page format and redo apply.
//!
//! The variants fall in three groups, so a caller can act on them without parsing text:
//! - **corrupt input** (`WrongSize`, `ChecksumMismatch`, `CorruptPage`, `MalformedRedo`,
//!   `UnknownRedoKind`): bytes from the disk or the network are broken. Never apply or serve
//!   them; repair from a peer segment.
//! - **refused change** (`SlotOutOfRange`, `CellTooLarge`, `PageFull`): the redo does not fit
//!   this page. For a writer building redo this is the signal to split the page; for a
//!   storage node replaying the log it means the log and the page disagree.
//! - **broken ordering** (`LsnNotAfter`, `NotInitialized`, `PageIdMismatch`): redo reached the
//!   wrong page or arrived out of order, which is a bug in whoever routed it.

use sixfold_log_service::{Lsn, PageId};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PageError {
    #[error("page image is {len} bytes, expected {expected}")]
    WrongSize { len: usize, expected: usize },

    #[error("page checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch { stored: u32, computed: u32 },

    #[error("corrupt page: {reason}")]
    CorruptPage { reason: &'static str },

    #[error("malformed redo payload (kind {kind}): {reason}")]
    MalformedRedo { kind: u8, reason: &'static str },

    #[error("unknown page redo kind {0}")]
    UnknownRedoKind(u8),

    #[error("slot {slot} out of range: page has {slot_count} slots")]
    SlotOutOfRange { slot: u16, slot_count: u16 },

    #[error("cell of {len} bytes exceeds the limit of {max}")]
    CellTooLarge { len: usize, max: usize },

    #[error("page full: change needs {needed} bytes, {free} free")]
    PageFull { needed: usize, free: usize },

    #[error("redo at {redo_lsn:?} is not after the page LSN {page_lsn:?}")]
    LsnNotAfter { page_lsn: Lsn, redo_lsn: Lsn },

    #[error("page is not initialized: only InitPage may be applied to a zeroed page")]
    NotInitialized,

    #[error("InitPage for {redo:?} applied to {page:?}")]
    PageIdMismatch { page: PageId, redo: PageId },
}
