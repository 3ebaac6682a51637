//! The error types of this crate: [`PageError`] for the page format and redo apply, and
//! [`StorageError`] for the storage node's page path built on them.
//!
//! [`PageError`]'s variants fall in three groups, so a caller can act on them without parsing text:
//! - **corrupt input** (`WrongSize`, `ChecksumMismatch`, `CorruptPage`, `MalformedRedo`,
//!   `UnknownRedoKind`): bytes from the disk or the network are broken. Never apply or serve
//!   them; repair from a peer segment.
//! - **refused change** (`SlotOutOfRange`, `CellTooLarge`, `PageFull`): the redo does not fit
//!   this page. For a writer building redo this is the signal to split the page; for a
//!   storage node replaying the log it means the log and the page disagree.
//! - **broken ordering** (`LsnNotAfter`, `NotInitialized`, `PageIdMismatch`): redo reached the
//!   wrong page or arrived out of order, which is a bug in whoever routed it.

use sixfold_log_service::error::{ErrorKind, SegmentError};
use sixfold_log_service::{Lsn, PageId, PgId};
use thiserror::Error;
use tonic::{Code, Status};

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

/// The errors of the storage node's page path: materialization, layer files, object storage
/// and GetPage. Grouped the same way as [`PageError`]:
/// - **the caller's mistake**: `NotHosted`, `VersionDropped`, `InvalidRequest`, `Config`;
/// - **no such page**: `PageNotWritten` (an answer, not a fault);
/// - **transient, retry here later or on another segment**: `NotComplete`, `Behind`,
///   `Rebuilding`, `CorruptLayer` (the layer is being rebuilt), `Io`, `ObjectStore`, `Segment`;
/// - **a broken invariant**: `Internal`, and `Page` when stored redo no longer applies.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("{page:?} was never written at or below {lsn:?}")]
    PageNotWritten { page: PageId, lsn: Lsn },

    #[error("{0:?} is not in a PG hosted by this node")]
    NotHosted(PageId),

    #[error("segment is complete only up to {complete:?}, not {lsn:?}; retry on another segment")]
    NotComplete { lsn: Lsn, complete: Lsn },

    #[error("materialization is behind: {0}; retry")]
    Behind(String),

    #[error("the segment of {0:?} is being rebuilt from object storage; retry on another segment")]
    Rebuilding(PgId),

    #[error("{lsn:?} is below the oldest version kept ({retained_from:?}): dropped below PGMRPL")]
    VersionDropped { lsn: Lsn, retained_from: Lsn },

    #[error("corrupt layer file {name}: {reason}; it is being rebuilt")]
    CorruptLayer { name: String, reason: String },

    #[error("stored redo does not apply: {0}")]
    Page(#[from] PageError),

    #[error("segment: {0}")]
    Segment(#[from] SegmentError),

    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),

    #[error("object storage: {0}")]
    ObjectStore(String),

    #[error("invalid request: {0}")]
    InvalidRequest(String),

    #[error("bad configuration: {0}")]
    Config(String),

    #[error("internal error (a bug): {0}")]
    Internal(String),
}

impl StorageError {
    pub fn corrupt(name: &str, reason: impl Into<String>) -> StorageError {
        StorageError::CorruptLayer {
            name: name.to_string(),
            reason: reason.into(),
        }
    }

    /// True when trying again (here later, or on another segment) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StorageError::Segment(s) => s.kind() == ErrorKind::Transient,
            _ => matches!(
                self,
                StorageError::NotComplete { .. }
                    | StorageError::Behind(_)
                    | StorageError::Rebuilding(_)
                    | StorageError::CorruptLayer { .. }
                    | StorageError::Io(_)
                    | StorageError::ObjectStore(_)
            ),
        }
    }
}

/// The metadata key log-service uses for its error kinds; reused so one `classify` reads both.
const KIND_KEY: &str = "x-sixfold-error";

impl From<StorageError> for Status {
    fn from(e: StorageError) -> Status {
        let (code, kind) = match &e {
            StorageError::PageNotWritten { .. } => (Code::NotFound, "rejected"),
            StorageError::NotHosted(_) => (Code::FailedPrecondition, "rejected"),
            StorageError::VersionDropped { .. } => (Code::OutOfRange, "rejected"),
            StorageError::InvalidRequest(_) | StorageError::Config(_) => {
                (Code::InvalidArgument, "rejected")
            }
            StorageError::Segment(_) if !e.is_retryable() => (Code::Internal, "rejected"),
            StorageError::Page(_) | StorageError::Internal(_) => (Code::Internal, "rejected"),
            _ => (Code::Unavailable, "transient"),
        };
        let mut status = Status::new(code, e.to_string());
        status
            .metadata_mut()
            .insert(KIND_KEY, kind.parse().expect("ascii metadata value"));
        status
    }
}

/// Runs blocking page-path work (file I/O, fsync, applying redo) off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Internal(format!("blocking task failed: {e}")))?
}
