//! The one thread that writes a segment's log file: appenders queue their bytes, and the flusher
//! writes everything queued with one `pwrite`, makes it durable with one `fdatasync`, and tells
//! every appender it covered (group commit). Concurrent appends (the writer's batches, gossip
//! from peers) share both system calls.
//!
//! # Preallocation
//! Between batches the flusher keeps [`PREALLOCATE_AHEAD_BYTES`] of zeros written past the end
//! of the records, a piece at a time, as PostgreSQL does for its WAL segments. Overwriting blocks
//! that already exist makes `fdatasync` a data write and a cache flush; appending to the end of
//! a file also has to allocate blocks and write the inode, which on this VM's disk costs as much
//! again and serialises six concurrent segments behind one another. `fallocate` does not help:
//! its unwritten extents must be converted on the first write, which is metadata again.
//!
//! So a log file is: records, then zeros (or nothing). [`crate::segment`] stops its scan at the
//! first byte that does not start a record and treats an all-zero rest as the clean end. A full
//! disk shows up while preallocating, ahead of the records that would have needed the space: the
//! flusher logs it and keeps appending into what it has.
//!
//! # Page cache
//! Records more than [`LOG_CACHED_BYTES`] behind the end are dropped from the page cache once
//! durable: their readers work near the end, and recycling pages is cheaper than touching new
//! ones (on this VM, measurably: the local-file benchmark's p99 fell from 2.6 ms to 1.1 ms).
//!
//! # Failure
//! A failed write or fsync stops the segment from acknowledging anything, for good: after a
//! failed fsync the kernel may have dropped the dirty pages, and retrying could report success
//! for data that is gone (the PostgreSQL "fsyncgate" lesson). A restart re-reads and verifies
//! the file and gossip refills what is missing, as PostgreSQL's PANIC-and-replay does.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use tokio::sync::watch;

use crate::limits::{
    BATCH_BYTES_MAX, FLUSH_QUEUE_BYTES_MAX, LOG_CACHED_BYTES, LOG_UNCACHE_STEP_BYTES,
    PREALLOCATE_AHEAD_BYTES, PREALLOCATE_PIECE_BYTES,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlushProgress {
    /// Every byte below this offset is on stable storage.
    synced: u64,
    /// A write or an fsync failed: nothing queued after the last good fsync may be
    /// acknowledged, ever.
    failed: bool,
}

/// Why bytes could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// More than [`FLUSH_QUEUE_BYTES_MAX`] bytes wait for the disk already.
    Full,
    /// A write or fsync failed earlier; the segment no longer takes writes.
    Failed,
}

struct State {
    /// Bytes waiting to be written at `queue_at`.
    queue: Vec<u8>,
    queue_at: u64,
    failed: bool,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("flusher lock poisoned")
    }
}

pub struct Flusher {
    shared: Arc<Shared>,
    progress: watch::Receiver<FlushProgress>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Flusher {
    /// Starts the flusher thread for `file`, whose records end at `end`, all of them durable.
    /// Everything from `end` on must be zeros or absent.
    pub fn start(name: String, file: File, end: u64) -> std::io::Result<Flusher> {
        let log = LogFile::new(file, end)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: Vec::new(),
                queue_at: end,
                failed: false,
                stop: false,
            }),
            wake: Condvar::new(),
        });
        let (tx, progress) = watch::channel(FlushProgress {
            synced: end,
            failed: false,
        });
        let thread_shared = shared.clone();
        let thread = thread::Builder::new()
            .name(name)
            .spawn(move || run(&thread_shared, log, &tx))?;
        Ok(Flusher {
            shared,
            progress,
            thread: Some(thread),
        })
    }

    /// Queues `parts`, back to back, for the end of the log and returns the offset the first
    /// will be written at. Callers serialise their calls (the segment lock), so offsets follow
    /// their order.
    pub fn enqueue(&self, parts: &[&[u8]]) -> Result<u64, QueueError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut state = self.shared.lock();
        if state.failed {
            return Err(QueueError::Failed);
        }
        if !state.queue.is_empty() && state.queue.len() + len > FLUSH_QUEUE_BYTES_MAX {
            return Err(QueueError::Full);
        }
        let at = state.queue_at + state.queue.len() as u64;
        state.queue.reserve(len);
        for part in parts {
            state.queue.extend_from_slice(part);
        }
        self.shared.wake.notify_one();
        Ok(at)
    }

    /// Waits until bytes up to `offset` are durable. Returns false if a write or fsync failed.
    pub async fn wait_synced(&self, offset: u64) -> bool {
        let mut rx = self.progress.clone();
        match rx.wait_for(|p| p.failed || p.synced >= offset).await {
            Ok(p) => !p.failed,
            Err(_) => false,
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.stop = true;
            self.shared.wake.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A log file written the way a segment writes it: records appended with one `pwrite` and made
/// durable with one `fdatasync`, zeros kept written ahead of them, old pages dropped from the
/// page cache. The flusher thread owns one; a caller that groups its own writes (the
/// benchmark's six-copy floor) can drive one directly, with the same disk behaviour.
pub struct LogFile {
    file: File,
    /// Where the records end: the next batch is written here.
    end: u64,
    /// Where the zeros written ahead end (the file's length).
    allocated: u64,
    /// False once preallocation failed (a full disk): appends then grow the file.
    preallocating: bool,
    /// Below this offset the file's pages were dropped from the page cache.
    uncached: u64,
    /// One piece of zeros, written ahead of the records.
    zeros: Vec<u8>,
    /// An append failed: the file takes no more (see *Failure* above).
    failed: bool,
}

impl LogFile {
    /// Takes over `file`, whose records end at `end`, all of them durable. Everything from
    /// `end` on must be zeros or absent.
    pub fn new(file: File, end: u64) -> std::io::Result<LogFile> {
        let allocated = file.metadata()?.len().max(end);
        Ok(LogFile {
            file,
            end,
            allocated,
            preallocating: true,
            uncached: 0,
            zeros: vec![0u8; PREALLOCATE_PIECE_BYTES],
            failed: false,
        })
    }

    /// Where the records end; every byte below it is durable.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Appends `bytes` after the records and makes them durable. After an error the file
    /// refuses every later append: what the failed one left behind is unknown (see *Failure*).
    pub fn append_durable(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.failed {
            return Err(std::io::Error::other(
                "an earlier write or fsync of this log failed",
            ));
        }
        let written = self
            .file
            .write_all_at(bytes, self.end)
            .and_then(|()| self.file.sync_data());
        if written.is_err() {
            self.failed = true;
            return written;
        }
        self.end += bytes.len() as u64;
        self.allocated = self.allocated.max(self.end);
        Ok(())
    }

    /// The work between appends: drops old pages from the page cache and writes one piece of
    /// zeros ahead if fewer than [`PREALLOCATE_AHEAD_BYTES`] are. Returns whether more zeros
    /// are wanted.
    pub fn between_appends(&mut self) -> bool {
        self.drop_cached_behind();
        if self.wants_zeros() {
            self.preallocate_piece();
        }
        self.wants_zeros()
    }

    /// Frees the cached pages of records more than [`LOG_CACHED_BYTES`] behind the end: all
    /// durable, and their readers (materializer, uploader, gossip) work near the end. A page
    /// written once and never read again would otherwise sit in the page cache until memory
    /// pressure evicts it, and every new page the log writes would be a fresh one.
    fn drop_cached_behind(&mut self) {
        if self.end >= self.uncached + LOG_CACHED_BYTES + LOG_UNCACHE_STEP_BYTES {
            let to = self.end - LOG_CACHED_BYTES;
            drop_cached(&self.file, self.uncached, to - self.uncached);
            self.uncached = to;
        }
    }

    fn wants_zeros(&self) -> bool {
        self.preallocating && self.allocated < self.end + PREALLOCATE_AHEAD_BYTES
    }

    /// Writes one piece of zeros past the end and starts writing it back, so the next
    /// fdatasync finds little of it still dirty.
    fn preallocate_piece(&mut self) {
        let at = self.allocated;
        if let Err(e) = self.file.write_all_at(&self.zeros, at) {
            // Most likely a full disk. The records written so far are untouched; appends go on
            // into what is allocated and then grow the file until a write fails.
            tracing::warn!(error = %e, offset = at, "cannot preallocate the segment log; appending without");
            self.preallocating = false;
            return;
        }
        self.allocated = at + self.zeros.len() as u64;
        start_writeback(&self.file, at, self.zeros.len() as u64);
    }
}

/// Tells the kernel that `[offset, offset + len)` of `file`, written back already, will not be
/// read soon, so its page-cache pages are freed now rather than evicted later.
fn drop_cached(file: &File, offset: u64, len: u64) {
    // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is open.
    let rc = unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::from_raw_os_error(rc), "posix_fadvise failed; the pages stay cached");
    }
}

/// Asks the kernel to start writing `[offset, offset + len)` of `file` to disk, without waiting.
fn start_writeback(file: &File, offset: u64, len: u64) {
    // SAFETY: sync_file_range only reads its integer arguments; the descriptor is open.
    let rc = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "sync_file_range failed; the next fsync writes the zeros");
    }
}

fn run(shared: &Shared, mut log: LogFile, tx: &watch::Sender<FlushProgress>) {
    let mut batch = Vec::new();
    loop {
        {
            let mut state = shared.lock();
            while state.queue.is_empty() && !state.stop && !log.wants_zeros() {
                state = shared.wake.wait(state).expect("flusher lock poisoned");
            }
            if state.queue.is_empty() && state.stop {
                return;
            }
            std::mem::swap(&mut batch, &mut state.queue);
            state.queue_at += batch.len() as u64;
        }
        if batch.is_empty() {
            // Idle: one piece of zeros at a time, so a new batch waits for at most one.
            log.between_appends();
            continue;
        }
        if let Err(e) = log.append_durable(&batch) {
            tracing::error!(error = %e, "log write or fsync failed; the segment stops acknowledging writes");
            shared.lock().failed = true;
            tx.send_modify(|p| p.failed = true);
            return;
        }
        batch.clear();
        // After a backlog, give back what a normal batch does not need.
        batch.shrink_to(BATCH_BYTES_MAX);
        tx.send_replace(FlushProgress {
            synced: log.end,
            failed: false,
        });
        log.between_appends();
    }
}
