//! The baseline: the same commits, encoded to the same bytes, group-committed to ONE local file
//! with `sync_data` before each ack. One copy, no network, no quorum: the physical limit of this
//! disk for this workload, against which the replicated log path is judged.
//!
//! Committers send their encoded mini-transaction over a bounded channel to one flusher thread,
//! which takes everything queued (the boxcar, capped at the writer's [`BATCH_BYTES_MAX`]), writes
//! it with one `write`, calls `sync_data()`, and then acks every commit in the batch. That is the
//! shape of a segment's append + group fsync, minus the network and the other five copies.
//!
//! The flusher is an OS thread rather than a tokio task because `write` and `sync_data` block;
//! a storage node's flusher is a thread for the same reason.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use anyhow::{Context, anyhow};
use sixfold_log_service::limits::BATCH_BYTES_MAX;
use sixfold_log_service::record::{self, FLAG_CPL};
use sixfold_log_service::{Lsn, PageId};
use tokio::sync::{mpsc, oneshot};

use crate::log_bench::{Mtr, Target};

/// Commits queued for the flusher; committers wait for room beyond this (back-pressure).
const LOCAL_QUEUE_COMMITS_MAX: usize = 4096;

/// One commit waiting for the flusher: its encoded records and where to send the outcome.
struct Pending {
    bytes: Vec<u8>,
    ack: oneshot::Sender<Result<(), String>>,
}

pub struct LocalLog {
    tx: Option<mpsc::Sender<Pending>>,
    /// The next LSN to allocate; one PG, so each record's backlink is the LSN before it.
    next_lsn: AtomicU64,
    flusher: Option<thread::JoinHandle<()>>,
}

impl LocalLog {
    /// Creates (or truncates) `path` and starts its flusher.
    pub fn create(path: &Path) -> anyhow::Result<LocalLog> {
        let file =
            File::create(path).with_context(|| format!("while creating {}", path.display()))?;
        let (tx, rx) = mpsc::channel(LOCAL_QUEUE_COMMITS_MAX);
        let flusher = thread::Builder::new()
            .name("local-log-flusher".into())
            .spawn(move || flush_loop(file, rx))?;
        Ok(LocalLog {
            tx: Some(tx),
            next_lsn: AtomicU64::new(1),
            flusher: Some(flusher),
        })
    }
}

impl Drop for LocalLog {
    fn drop(&mut self) {
        // Closing the channel stops the flusher once it has drained what is queued.
        self.tx.take();
        if let Some(t) = self.flusher.take() {
            let _ = t.join();
        }
    }
}

impl Target for LocalLog {
    async fn commit(&self, mtr: &Mtr) -> anyhow::Result<()> {
        let n = mtr.page_ids.len() as u64;
        let first = self.next_lsn.fetch_add(n, Ordering::Relaxed);
        let mut bytes = Vec::with_capacity(
            mtr.page_ids.len() * (record::RECORD_HEADER_BYTES + mtr.payload.len()),
        );
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
        let (ack, done) = oneshot::channel();
        let tx = self.tx.as_ref().expect("open until dropped");
        tx.send(Pending { bytes, ack })
            .await
            .map_err(|_| anyhow!("local-log flusher stopped"))?;
        done.await
            .map_err(|_| anyhow!("local-log flusher stopped"))?
            .map_err(|e| anyhow!("local-log write failed: {e}"))
    }
}

fn flush_loop(mut file: File, mut rx: mpsc::Receiver<Pending>) {
    let mut buf = Vec::with_capacity(BATCH_BYTES_MAX);
    let mut acks = Vec::new();
    // A commit that did not fit in the previous batch opens the next one.
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.blocking_recv() {
                Some(p) => p,
                None => return,
            },
        };
        buf.clear();
        buf.extend_from_slice(&first.bytes);
        acks.push(first.ack);
        while let Ok(p) = rx.try_recv() {
            if buf.len() + p.bytes.len() > BATCH_BYTES_MAX {
                carry = Some(p);
                break;
            }
            buf.extend_from_slice(&p.bytes);
            acks.push(p.ack);
        }
        let result = file.write_all(&buf).and_then(|()| file.sync_data());
        match result {
            Ok(()) => {
                for ack in acks.drain(..) {
                    let _ = ack.send(Ok(()));
                }
            }
            Err(e) => {
                // As on a storage node: after a failed fsync nothing more may be acknowledged.
                let why = e.to_string();
                for ack in acks.drain(..) {
                    let _ = ack.send(Err(why.clone()));
                }
                return;
            }
        }
    }
}
