//! The meta crate's error enum and its mapping onto openraft's `StorageError`.
//!
//! Refusals of a command (a lease held by someone else, too few nodes to place a volume) are not
//! errors of the store: they are results carried in the Raft response, see
//! [`crate::CommandError`].

use std::io;
use std::path::PathBuf;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};

use crate::types::MetaNodeId;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The disk or the OS failed: possibly transient (disk full, permissions).
    #[error("I/O error while {context} ({}): {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Bytes on disk fail their checks. Never repaired silently: only a torn tail of the log is
    /// cut at open, anything else stops the node so an operator (or a snapshot from the leader)
    /// can rebuild it.
    #[error("corrupt {} at byte offset {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// Another process (or another store in this process) holds the directory.
    #[error("directory {} is already in use by another store", path.display())]
    Locked { path: PathBuf },

    /// Something exceeds one of the limits in [`crate::limits`].
    #[error("{what} is {len} bytes, more than the limit of {max}")]
    TooLarge {
        what: &'static str,
        len: u64,
        max: u64,
    },

    /// Encoding failed: a bug, the types are plain data.
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// A broken internal invariant: a bug, or openraft calling us out of contract.
    #[error("broken invariant: {0}")]
    Invariant(String),
}

impl MetaError {
    pub(crate) fn io(context: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        MetaError::Io {
            context,
            path: path.into(),
            source,
        }
    }

    /// Wraps this error for openraft, naming what was being done to what.
    pub(crate) fn into_storage(
        self,
        subject: ErrorSubject<MetaNodeId>,
        verb: ErrorVerb,
    ) -> StorageError<MetaNodeId> {
        StorageError::IO {
            source: StorageIOError::new(subject, verb, AnyError::new(&self)),
        }
    }
}

/// A background (blocking) storage task died: it panicked, which is a bug.
pub(crate) fn task_failed(err: tokio::task::JoinError) -> MetaError {
    MetaError::Invariant(format!("storage task failed: {err}"))
}

/// A lock was poisoned by a panic while it was held.
pub(crate) fn poisoned(what: &'static str) -> MetaError {
    MetaError::Invariant(format!("{what} lock poisoned by an earlier panic"))
}
