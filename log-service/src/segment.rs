//! One segment: a protection group's copy of the redo log on this node.
//!
//! # Files
//! - `pg-<id>.log`: the hot log, an append-only sequence of redo records in the exact bytes of
//!   [`crate::record`]. Records are appended in arrival order, which is not LSN order when gossip
//!   fills holes. A record may appear twice (a writer retry racing gossip); the first copy wins.
//!   After the records the file holds zeros the [`Flusher`] wrote ahead of them, or nothing.
//! - `pg-<id>.meta`: the segment's epoch, its truncation declaration and the last VDL hint, as
//!   `crc32 (4 bytes, LE) ‖ JSON`, replaced atomically (write temp, fsync, rename, fsync dir).
//!
//! # What is assumed of the disk
//! fsync makes written bytes durable; a crash can tear the last write (any prefix of it may be
//! on disk, in any state); bits can rot. So on open every record's CRC is verified: a bad record
//! followed by good ones is corruption and is skipped (the hole is refilled from peers by
//! gossip); a bad or partial record with nothing good after it is a torn tail and is cut off.
//! Zeros after the last record are the clean end of the log.
//!
//! # Invariants
//! - Only records that are on stable storage are in the index, so SCL, acks and reads never
//!   expose bytes a crash could take back.
//! - An append is acknowledged only if its epoch is still the segment's epoch after the fsync:
//!   once a new writer has sealed the segment, the old writer cannot count this segment's ack.
//! - A record covered by the declaration is never indexed, acknowledged or served.
//! - Every record served is CRC-checked again after being read back from the file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sixfold_proto::log as pb;
use tokio::sync::watch;

use crate::declaration::Declaration;
use crate::error::SegmentError;
use crate::flusher::{Flusher, QueueError};
use crate::limits::{
    MATERIALIZE_WAIT_MAX, SEGMENT_RECORDS_MAX, UNMATERIALIZED_RECORDS_MAX,
    VDL_HINT_PERSIST_INTERVAL,
};
use crate::lsn_index::{Entry, LsnIndex};
use crate::record;
use crate::types::{Epoch, Lsn, NodeId, PgId};

/// The durable control state of a segment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// The highest volume epoch this segment has seen; lower epochs are refused.
    pub epoch: Epoch,
    pub declaration: Declaration,
    /// A lower bound of the volume's durable point, from the writers' appends.
    pub vdl_hint: Lsn,
}

/// Who is appending: the writer (checked against the epoch) or a peer through gossip.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    Writer {
        epoch: Epoch,
        vdl_hint: Lsn,
        /// The PG's last record when `vdl_hint` was taken (see `complete_lsn`).
        pg_tail: Lsn,
    },
    Gossip,
}

/// What opening a segment found on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub records: usize,
    pub corrupt_skipped: usize,
    /// From the end of the records to the last byte that is not zero.
    pub torn_bytes_cut: u64,
    pub truncated_dropped: usize,
}

/// A segment's state as reported to writers, peers and operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentState {
    pub pg: PgId,
    pub epoch: Epoch,
    pub scl: Lsn,
    pub max_lsn: Lsn,
    pub vdl_hint: Lsn,
    pub declaration: Declaration,
    pub record_count: u64,
    /// Every record of the PG at or below this LSN is held: SCL, or more once the writer said
    /// the PG has nothing between SCL and its VDL. GetPage may serve any LSN up to it.
    pub complete_lsn: Lsn,
}

impl SegmentState {
    pub fn to_proto(&self) -> pb::SegmentState {
        pb::SegmentState {
            pg: self.pg.get(),
            epoch: self.epoch.get(),
            scl: self.scl.get(),
            max_lsn: self.max_lsn.get(),
            vdl_hint: self.vdl_hint.get(),
            declaration: Some(self.declaration.to_proto()),
            record_count: self.record_count,
            complete_lsn: self.complete_lsn.get(),
        }
    }
}

/// Records read for a peer or a writer.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    pub records: Vec<u8>,
    pub more: bool,
    pub scl: Lsn,
    pub base: Lsn,
}

struct Inner {
    index: LsnIndex,
    scl: Lsn,
    /// See [`SegmentState::complete_lsn`]; not persisted: the writer repeats it.
    complete: Lsn,
    meta: SegmentMeta,
    persisted_vdl_hint: Lsn,
    hint_persisted_at: Instant,
}

pub struct Segment {
    pg: PgId,
    pages: Range<u64>,
    log_path: PathBuf,
    meta_path: PathBuf,
    read_file: File,
    inner: Mutex<Inner>,
    flusher: Flusher,
    /// SCL after every change, for whoever consumes the log (the page materializer).
    scl_tx: watch::Sender<Lsn>,
    /// The LSN up to which a consumer has materialized this segment; None: no consumer, no gate.
    materialized_tx: watch::Sender<Option<Lsn>>,
    /// The peers that answered the latest gossip round, and when; None before the first round.
    peers_answering: Mutex<Option<(Instant, Vec<NodeId>)>>,
}

impl Segment {
    /// Opens (or creates) the segment of `pg`, owning `pages`, under `dir`: verifies every record,
    /// cuts a torn tail, and computes SCL.
    pub fn open(
        dir: &Path,
        pg: PgId,
        pages: Range<u64>,
    ) -> Result<(Segment, OpenReport), SegmentError> {
        std::fs::create_dir_all(dir)?;
        let log_path = dir.join(format!("pg-{}.log", pg.get()));
        let meta_path = dir.join(format!("pg-{}.meta", pg.get()));
        let meta = match std::fs::read(&meta_path) {
            Ok(bytes) => decode_meta(&bytes)
                .map_err(|m| SegmentError::Corrupt(format!("{}: {m}", meta_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let meta = SegmentMeta::default();
                write_meta(&meta_path, &meta)?;
                meta
            }
            Err(e) => return Err(e.into()),
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&log_path)?;
        sync_dir(dir)?;
        let bytes = std::fs::read(&log_path)?;
        let mut report = OpenReport::default();
        let mut index = LsnIndex::new();
        let mut at = 0usize;
        while at < bytes.len() {
            match record::decode(&bytes[at..]) {
                Ok(rec) => {
                    let len = rec.bytes.len();
                    if !pages.contains(&rec.header.page_id.get()) {
                        report.corrupt_skipped += 1;
                    } else if meta.declaration.covers(rec.header.lsn) {
                        report.truncated_dropped += 1;
                    } else {
                        index.insert(
                            rec.header.lsn,
                            Entry {
                                offset: at as u64,
                                len: len as u32,
                                prev: rec.header.prev_lsn,
                            },
                        );
                    }
                    at += len;
                }
                Err(err) => match record::resync(&bytes, at) {
                    Some(next) => {
                        tracing::warn!(pg = pg.get(), offset = at, %err, "skipping corrupt record; gossip will refetch it");
                        report.corrupt_skipped += 1;
                        at = next;
                    }
                    None => {
                        // Zeros to the end: the preallocated rest of the file, a clean end.
                        let garbage = bytes[at..].iter().rposition(|b| *b != 0);
                        if let Some(last) = garbage {
                            tracing::warn!(pg = pg.get(), offset = at, %err, "cutting torn tail of the segment log");
                            report.torn_bytes_cut = (last + 1) as u64;
                            file.set_len(at as u64)?;
                            file.sync_all()?;
                        }
                        break;
                    }
                },
            }
        }
        report.records = index.len();
        let read_file = File::open(&log_path)?;
        let flusher = Flusher::start(format!("flush-pg{}", pg.get()), file, at as u64)?;
        let mut inner = Inner {
            index,
            scl: Lsn::ZERO,
            complete: Lsn::ZERO,
            persisted_vdl_hint: meta.vdl_hint,
            meta,
            hint_persisted_at: Instant::now(),
        };
        inner.recompute_scl();
        let scl_tx = watch::Sender::new(inner.scl);
        Ok((
            Segment {
                scl_tx,
                materialized_tx: watch::Sender::new(None),
                peers_answering: Mutex::new(None),
                pg,
                pages,
                log_path,
                meta_path,
                read_file,
                inner: Mutex::new(inner),
                flusher,
            },
            report,
        ))
    }

    pub fn pg(&self) -> PgId {
        self.pg
    }

    /// The pages this segment's PG owns.
    pub fn pages(&self) -> Range<u64> {
        self.pages.clone()
    }

    /// Watches SCL: changes whenever records become durable and chained (or are dropped).
    pub fn subscribe_scl(&self) -> watch::Receiver<Lsn> {
        self.scl_tx.subscribe()
    }

    /// A consumer reports how far it has materialized the log. From the first report on, writer
    /// appends wait (bounded) while more than [`UNMATERIALIZED_RECORDS_MAX`] records lie above
    /// it, so a hot log that outgrows materialization slows the writer through its LAL.
    pub fn note_materialized(&self, lsn: Lsn) {
        self.materialized_tx.send_if_modified(|m| {
            let changed = m.is_none_or(|old| lsn > old);
            if changed {
                *m = Some(lsn);
            }
            changed
        });
    }

    fn unmaterialized(&self, materialized: Lsn) -> usize {
        let inner = self.lock();
        // LSNs are dense over the volume, so a PG holds at most one record per LSN above M: a
        // short distance settles it without walking the index on every append.
        let max = inner.index.last().unwrap_or(Lsn::ZERO);
        let distance = max.get().saturating_sub(materialized.get());
        if distance <= UNMATERIALIZED_RECORDS_MAX as u64 {
            return distance as usize;
        }
        inner
            .index
            .above(materialized)
            .take(UNMATERIALIZED_RECORDS_MAX + 1)
            .count()
    }

    async fn wait_for_materialization(&self) -> Result<(), SegmentError> {
        let mut rx = self.materialized_tx.subscribe();
        let deadline = tokio::time::Instant::now() + MATERIALIZE_WAIT_MAX;
        loop {
            let Some(materialized) = *rx.borrow_and_update() else {
                return Ok(());
            };
            if self.unmaterialized(materialized) <= UNMATERIALIZED_RECORDS_MAX {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return Err(SegmentError::Full(
                    "materialization is behind the hot log".into(),
                ));
            }
        }
    }

    /// Gossip records which peers of the PG answered its latest round.
    pub fn note_peers_answering(&self, peers: Vec<NodeId>) {
        *self.peers_answering.lock().expect("peers lock poisoned") = Some((Instant::now(), peers));
    }

    /// The peers that answered the latest gossip round and how long ago it was; None before the
    /// first round.
    pub fn peers_answering(&self) -> Option<(std::time::Duration, Vec<NodeId>)> {
        let view = self.peers_answering.lock().expect("peers lock poisoned");
        view.as_ref()
            .map(|(at, peers)| (at.elapsed(), peers.clone()))
    }

    fn publish_scl(&self, scl: Lsn) {
        self.scl_tx
            .send_if_modified(|s| std::mem::replace(s, scl) != scl);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock is a bug in this module; the state may be torn.
        self.inner.lock().expect("segment lock poisoned")
    }

    pub fn state(&self) -> SegmentState {
        let inner = self.lock();
        SegmentState {
            pg: self.pg,
            epoch: inner.meta.epoch,
            scl: inner.scl,
            max_lsn: inner.index.last().unwrap_or(Lsn::ZERO),
            vdl_hint: inner.meta.vdl_hint,
            declaration: inner.meta.declaration.clone(),
            record_count: inner.index.len() as u64,
            complete_lsn: inner.complete.max(inner.scl),
        }
    }

    /// The lowest LSN held above SCL: the end of the first hole, if there is one.
    pub fn first_held_above_scl(&self) -> Option<Lsn> {
        let inner = self.lock();
        inner.index.above(inner.scl).next().map(|(l, _)| l)
    }

    /// Persists `records` (concatenated encoded redo of this PG) and returns the SCL once they
    /// are durable. Records already held or covered by the declaration are skipped.
    pub async fn append(&self, records: &[u8], origin: Origin) -> Result<Lsn, SegmentError> {
        let views = record::decode_all(records)?;
        if let Origin::Writer {
            epoch,
            vdl_hint,
            pg_tail,
        } = origin
        {
            // Record what the writer knows before any wait: the materializer may be waiting
            // for exactly this hint to make progress.
            {
                let mut inner = self.lock();
                inner.check_writer_epoch(epoch)?;
                inner.meta.vdl_hint = inner.meta.vdl_hint.max(vdl_hint);
                inner.note_complete(pg_tail, vdl_hint);
            }
            if !views.is_empty() {
                self.wait_for_materialization().await?;
            }
        }
        for v in &views {
            if !self.pages.contains(&v.header.page_id.get()) {
                return Err(SegmentError::WrongPg {
                    lsn: v.header.lsn,
                    page: v.header.page_id,
                    pg: self.pg,
                });
            }
        }
        let (target, fresh) = {
            let mut inner = self.lock();
            if let Origin::Writer {
                epoch,
                vdl_hint,
                pg_tail,
            } = origin
            {
                inner.check_writer_epoch(epoch)?;
                inner.meta.vdl_hint = inner.meta.vdl_hint.max(vdl_hint);
                inner.note_complete(pg_tail, vdl_hint);
            }
            let mut parts = Vec::with_capacity(views.len());
            let mut fresh = Vec::with_capacity(views.len());
            let mut len = 0u64;
            // A writer's records usually lie above everything held: no lookup needed.
            let max_held = inner.index.last().unwrap_or(Lsn::ZERO);
            for v in &views {
                let lsn = v.header.lsn;
                let held = lsn <= max_held && inner.index.contains(lsn);
                if held || inner.meta.declaration.covers(lsn) {
                    continue;
                }
                fresh.push((
                    lsn,
                    Entry {
                        offset: len,
                        len: v.bytes.len() as u32,
                        prev: v.header.prev_lsn,
                    },
                ));
                len += v.bytes.len() as u64;
                parts.push(v.bytes);
            }
            if fresh.is_empty() {
                return Ok(inner.scl);
            }
            if inner.index.len() + fresh.len() > SEGMENT_RECORDS_MAX {
                return Err(SegmentError::Full(format!(
                    "{} records indexed",
                    inner.index.len()
                )));
            }
            // Queued under the segment lock, so the file holds batches in the order their
            // records were filtered against the index.
            let start = self.flusher.enqueue(&parts).map_err(|e| match e {
                QueueError::Full => SegmentError::Full("the log's write queue is full".into()),
                QueueError::Failed => {
                    SegmentError::Failed("an earlier write or fsync failed".into())
                }
            })?;
            for (_, entry) in &mut fresh {
                entry.offset += start;
            }
            (start + len, fresh)
        };
        if !self.flusher.wait_synced(target).await {
            return Err(SegmentError::Failed("log write or fsync failed".into()));
        }
        let mut inner = self.lock();
        for (lsn, entry) in fresh {
            // The declaration may have changed while we waited for the fsync.
            if !inner.meta.declaration.covers(lsn) {
                inner.index.insert(lsn, entry);
            }
        }
        inner.advance_scl();
        self.publish_scl(inner.scl);
        if let Origin::Writer {
            epoch,
            vdl_hint,
            pg_tail,
        } = origin
        {
            inner.note_complete(pg_tail, vdl_hint);
            // Sealed by a newer writer while this append was on its way to disk: the records are
            // kept (the new writer's truncation decides their fate) but the old writer must not
            // count this ack.
            inner.check_writer_epoch(epoch)?;
        }
        Ok(inner.scl)
    }

    /// A new writer adopts `epoch`. Lower epochs are refused from now on.
    pub fn seal(&self, epoch: Epoch) -> Result<SegmentState, SegmentError> {
        {
            let mut inner = self.lock();
            if epoch < inner.meta.epoch {
                return Err(SegmentError::Fenced {
                    request: epoch,
                    current: inner.meta.epoch,
                });
            }
            if epoch > inner.meta.epoch {
                let mut meta = inner.meta.clone();
                meta.epoch = epoch;
                inner.persist_meta(&self.meta_path, meta)?;
            }
        }
        Ok(self.state())
    }

    /// Applies a truncation declaration sent by the writer of `sender_epoch` (its own, or an
    /// older one it is bringing forward during recovery).
    pub fn truncate(
        &self,
        sender_epoch: Epoch,
        declaration: Declaration,
    ) -> Result<SegmentState, SegmentError> {
        if declaration.epoch > sender_epoch {
            return Err(SegmentError::InvalidRequest(
                "declaration is newer than its sender".into(),
            ));
        }
        {
            let mut inner = self.lock();
            if sender_epoch < inner.meta.epoch {
                return Err(SegmentError::Fenced {
                    request: sender_epoch,
                    current: inner.meta.epoch,
                });
            }
            let mut meta = inner.meta.clone();
            meta.epoch = sender_epoch;
            if declaration.epoch > meta.declaration.epoch {
                meta.declaration = declaration;
            }
            if meta != inner.meta {
                inner.persist_meta(&self.meta_path, meta)?;
                inner.drop_declared();
                self.publish_scl(inner.scl);
            }
        }
        Ok(self.state())
    }

    /// Adopts a newer declaration learned from a peer. Returns whether anything changed.
    pub fn adopt_declaration(&self, declaration: Declaration) -> Result<bool, SegmentError> {
        let mut inner = self.lock();
        if declaration.epoch <= inner.meta.declaration.epoch {
            return Ok(false);
        }
        let mut meta = inner.meta.clone();
        meta.epoch = meta.epoch.max(declaration.epoch);
        meta.declaration = declaration;
        inner.persist_meta(&self.meta_path, meta)?;
        inner.drop_declared();
        self.publish_scl(inner.scl);
        Ok(true)
    }

    /// Makes the remembered VDL hint durable if it moved and enough time passed.
    pub fn persist_vdl_hint_if_due(&self) -> Result<(), SegmentError> {
        let mut inner = self.lock();
        if inner.meta.vdl_hint > inner.persisted_vdl_hint
            && inner.hint_persisted_at.elapsed() >= VDL_HINT_PERSIST_INTERVAL
        {
            let meta = inner.meta.clone();
            inner.persist_meta(&self.meta_path, meta)?;
        }
        Ok(())
    }

    /// Records held in `(after, through]` in LSN order, at most `max_bytes` (but at least one
    /// record if any). Every record is CRC-checked after reading; a corrupt one is dropped from
    /// the index (gossip refetches it) and not served.
    pub fn read(
        &self,
        after: Lsn,
        through: Lsn,
        max_bytes: usize,
    ) -> Result<ReadResult, SegmentError> {
        let (entries, more, scl, base) = {
            let inner = self.lock();
            let mut entries = Vec::new();
            let mut bytes = 0usize;
            let mut more = false;
            if after < through {
                for (lsn, e) in inner.index.range(after, through) {
                    if !entries.is_empty() && bytes + e.len as usize > max_bytes {
                        more = true;
                        break;
                    }
                    bytes += e.len as usize;
                    entries.push((lsn, e));
                }
            }
            let base = if inner.scl >= after {
                inner.index.last_at_or_below(after).unwrap_or(Lsn::ZERO)
            } else {
                Lsn::ZERO
            };
            (entries, more, inner.scl, base)
        };
        let mut out = Vec::with_capacity(entries.iter().map(|(_, e)| e.len as usize).sum());
        let mut corrupt = Vec::new();
        // Records of one read usually sit back to back in the file (appended in LSN order), so
        // each contiguous run is read with one pread and then verified record by record.
        let mut rest = &entries[..];
        while let Some(((_, first), _)) = rest.split_first() {
            let run = 1 + rest
                .windows(2)
                .take_while(|w| w[0].1.offset + w[0].1.len as u64 == w[1].1.offset)
                .count();
            let (chunk, tail) = rest.split_at(run);
            rest = tail;
            let start = out.len();
            let bytes: usize = chunk.iter().map(|(_, e)| e.len as usize).sum();
            out.resize(start + bytes, 0);
            if self
                .read_file
                .read_exact_at(&mut out[start..], first.offset)
                .is_err()
            {
                out.truncate(start);
                corrupt.extend(chunk.iter().map(|(lsn, _)| *lsn));
                continue;
            }
            // Verify in place, closing up any corrupt record so only good ones remain.
            let mut read_at = start;
            let mut write_at = start;
            for (lsn, e) in chunk {
                let len = e.len as usize;
                let ok = record::decode(&out[read_at..read_at + len])
                    .is_ok_and(|r| r.header.lsn == *lsn && r.bytes.len() == len);
                if ok {
                    if write_at != read_at {
                        out.copy_within(read_at..read_at + len, write_at);
                    }
                    write_at += len;
                } else {
                    corrupt.push(*lsn);
                }
                read_at += len;
            }
            out.truncate(write_at);
        }
        if !corrupt.is_empty() {
            tracing::error!(pg = self.pg.get(), ?corrupt, file = %self.log_path.display(), "corrupt records found on read; dropped, gossip will refetch");
            let mut inner = self.lock();
            for lsn in &corrupt {
                inner.index.remove(*lsn);
            }
            inner.recompute_scl();
            inner.complete = inner.scl;
            self.publish_scl(inner.scl);
        }
        Ok(ReadResult {
            records: out,
            more,
            scl,
            base,
        })
    }
}

impl Inner {
    fn check_writer_epoch(&self, epoch: Epoch) -> Result<(), SegmentError> {
        let current = self.meta.epoch;
        if epoch < current {
            return Err(SegmentError::Fenced {
                request: epoch,
                current,
            });
        }
        if epoch > current || self.meta.declaration.epoch != epoch {
            return Err(SegmentError::EpochNotEstablished {
                request: epoch,
                current,
            });
        }
        Ok(())
    }

    /// The writer said the PG's records at or below `vdl_hint` end at `pg_tail`.
    fn note_complete(&mut self, pg_tail: Lsn, vdl_hint: Lsn) {
        if self.scl >= pg_tail {
            self.complete = self.complete.max(vdl_hint);
        }
    }

    /// Extends SCL along the backlink chain from where it is.
    fn advance_scl(&mut self) {
        let mut scl = self.scl;
        for (lsn, e) in self.index.above(scl) {
            if e.prev != scl {
                break;
            }
            scl = lsn;
        }
        self.scl = scl;
    }

    fn recompute_scl(&mut self) {
        self.scl = Lsn::ZERO;
        self.advance_scl();
    }

    fn drop_declared(&mut self) {
        let declaration = &self.meta.declaration;
        self.index.retain(|lsn| !declaration.covers(lsn));
        self.recompute_scl();
        self.complete = self.scl;
    }

    fn persist_meta(&mut self, path: &Path, meta: SegmentMeta) -> Result<(), SegmentError> {
        write_meta(path, &meta)?;
        self.persisted_vdl_hint = meta.vdl_hint;
        self.hint_persisted_at = Instant::now();
        self.meta = meta;
        Ok(())
    }
}

fn decode_meta(bytes: &[u8]) -> Result<SegmentMeta, String> {
    if bytes.len() < 4 {
        return Err("meta file truncated".into());
    }
    let (crc, body) = bytes.split_at(4);
    let stored = u32::from_le_bytes(crc.try_into().map_err(|_| "meta crc")?);
    if stored != crc32fast::hash(body) {
        return Err("meta file checksum mismatch".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("meta file unreadable: {e}"))
}

fn write_meta(path: &Path, meta: &SegmentMeta) -> std::io::Result<()> {
    let body = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("meta.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&crc32fast::hash(&body).to_le_bytes())?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
