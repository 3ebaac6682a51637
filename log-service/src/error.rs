//! Errors of the log path, and how they cross gRPC.
//!
//! The writer must tell apart "you are fenced" (stop for good), "this segment has not seen your
//! epoch's truncation" (send it, then retry) and transient faults (retry elsewhere or later).
//! gRPC status codes alone cannot carry that, so the kind travels in a metadata key.

use thiserror::Error;
use tonic::{Code, Status};

use crate::record::RecordError;
use crate::types::{Epoch, Lsn, PageId, PgId};

const KIND_KEY: &str = "x-sixfold-error";

#[derive(Debug, Error)]
pub enum SegmentError {
    #[error("fenced: epoch {request} is older than the segment's epoch {current}")]
    Fenced { request: Epoch, current: Epoch },
    #[error(
        "epoch {request} has not been established on this segment (segment epoch {current}); truncate first"
    )]
    EpochNotEstablished { request: Epoch, current: Epoch },
    #[error("bad record: {0}")]
    BadRecord(#[from] RecordError),
    #[error("record {lsn:?} is for {page:?}, which is not in {pg:?}")]
    WrongPg { lsn: Lsn, page: PageId, pg: PgId },
    #[error("no segment of {0:?} on this node")]
    UnknownPg(PgId),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("segment is full: {0}")]
    Full(String),
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("segment failed and stopped acknowledging: {0}")]
    Failed(String),
    #[error("corrupt segment state: {0}")]
    Corrupt(String),
}

/// What a caller of a storage node should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A newer writer exists; this one must stop.
    Fenced,
    /// Send the truncation declaration, then retry.
    EpochNotEstablished,
    /// The request is wrong; retrying will not help.
    Rejected,
    /// Try again later or elsewhere.
    Transient,
}

impl SegmentError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SegmentError::Fenced { .. } => ErrorKind::Fenced,
            SegmentError::EpochNotEstablished { .. } => ErrorKind::EpochNotEstablished,
            SegmentError::BadRecord(_)
            | SegmentError::WrongPg { .. }
            | SegmentError::UnknownPg(_)
            | SegmentError::InvalidRequest(_) => ErrorKind::Rejected,
            SegmentError::Full(_)
            | SegmentError::Io(_)
            | SegmentError::Failed(_)
            | SegmentError::Corrupt(_) => ErrorKind::Transient,
        }
    }
}

impl From<SegmentError> for Status {
    fn from(e: SegmentError) -> Status {
        let (code, kind) = match e.kind() {
            ErrorKind::Fenced => (Code::FailedPrecondition, "fenced"),
            ErrorKind::EpochNotEstablished => (Code::FailedPrecondition, "epoch-not-established"),
            ErrorKind::Rejected => (Code::InvalidArgument, "rejected"),
            ErrorKind::Transient if matches!(e, SegmentError::Full(_)) => {
                (Code::ResourceExhausted, "transient")
            }
            ErrorKind::Transient => (Code::Unavailable, "transient"),
        };
        let mut status = Status::new(code, e.to_string());
        status
            .metadata_mut()
            .insert(KIND_KEY, kind.parse().expect("ascii metadata value"));
        status
    }
}

/// Classifies a status returned by a storage node (or by the transport on the way there).
pub fn classify(status: &Status) -> ErrorKind {
    match status
        .metadata()
        .get(KIND_KEY)
        .and_then(|v| v.to_str().ok())
    {
        Some("fenced") => ErrorKind::Fenced,
        Some("epoch-not-established") => ErrorKind::EpochNotEstablished,
        Some("rejected") => ErrorKind::Rejected,
        _ => match status.code() {
            Code::InvalidArgument | Code::NotFound | Code::Unimplemented => ErrorKind::Rejected,
            _ => ErrorKind::Transient,
        },
    }
}
