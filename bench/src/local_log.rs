//! The baseline: the same commits, encoded to the same bytes, group-committed to ONE local file
//! with `fdatasync` before each ack. One copy, no network, no quorum: the physical limit of this
//! disk for this workload, against which the replicated log path is judged.
//!
//! The file is written by a segment's own [`Flusher`]: committers queue their encoded
//! mini-transaction, and its thread writes everything queued with one `pwrite`, calls
//! `fdatasync`, and acks every commit the fsync covered, writing zeros ahead of the records
//! between batches. That is exactly a segment's append and group fsync, minus the network and
//! the other five copies.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, anyhow};
use sixfold_log_service::flusher::{Flusher, QueueError};
use sixfold_log_service::record::{self, FLAG_CPL};
use sixfold_log_service::{Lsn, PageId};

use crate::log_bench::{Mtr, Target};

/// How long a committer waits when the flusher's queue is full.
pub const QUEUE_FULL_BACKOFF: std::time::Duration = std::time::Duration::from_millis(1);

pub struct LocalLog {
    flusher: Flusher,
    /// The next LSN to allocate; one PG, so each record's backlink is the LSN before it.
    next_lsn: AtomicU64,
}

impl LocalLog {
    /// Creates (or truncates) `path` and starts its flusher.
    pub fn create(path: &Path) -> anyhow::Result<LocalLog> {
        let file =
            File::create(path).with_context(|| format!("while creating {}", path.display()))?;
        let flusher = Flusher::start("local-log-flusher".into(), file, 0)?;
        Ok(LocalLog {
            flusher,
            next_lsn: AtomicU64::new(1),
        })
    }
}

/// Encodes `mtr` as one PG's records would be, at LSNs taken from `next_lsn` (each record's
/// backlink is the LSN before it): the same bytes a segment writes.
pub fn encode_mtr(mtr: &Mtr, next_lsn: &AtomicU64) -> Vec<u8> {
    let n = mtr.page_ids.len() as u64;
    let first = next_lsn.fetch_add(n, Ordering::Relaxed);
    let mut bytes =
        Vec::with_capacity(mtr.page_ids.len() * (record::RECORD_HEADER_BYTES + mtr.payload.len()));
    for (i, page) in mtr.page_ids.iter().enumerate() {
        let lsn = first + i as u64;
        let flags = if i + 1 == mtr.page_ids.len() {
            FLAG_CPL
        } else {
            0
        };
        record::encode(
            &mut bytes,
            Lsn(lsn),
            Lsn(lsn - 1),
            PageId(*page),
            flags,
            mtr.kind,
            &mtr.payload,
        );
    }
    bytes
}

impl Target for LocalLog {
    async fn commit(&self, mtr: &Mtr) -> anyhow::Result<()> {
        let bytes = encode_mtr(mtr, &self.next_lsn);
        let at = loop {
            match self.flusher.enqueue(&[&bytes]) {
                Ok(at) => break at,
                // The disk is behind by the whole queue: wait as a segment's writer would.
                Err(QueueError::Full) => tokio::time::sleep(QUEUE_FULL_BACKOFF).await,
                Err(QueueError::Failed) => return Err(anyhow!("local-log write failed")),
            }
        };
        if self.flusher.wait_synced(at + bytes.len() as u64).await {
            Ok(())
        } else {
            Err(anyhow!("local-log write or fsync failed"))
        }
    }
}
