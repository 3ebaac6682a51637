//! The quorum writer: allocates LSNs, routes each record to its PG, sends every PG's records to
//! its six segments, counts acks, and resolves a commit once the VDL reaches it.
//!
//! # Flow
//! `submit` allocates a contiguous LSN range for a mini-transaction (its last record is the
//! CPL), encodes the records with their PG backlinks, and queues them in each PG's buffer.
//! Six sender tasks per PG (one per segment) each send everything queued past their cursor in
//! one `Append` as soon as the previous one returns: the boxcar, so batches grow with load and
//! an idle system sends at once. An ack carries the segment's SCL; the PG's complete point
//! (PGCL) is the 4th highest SCL of its six segments; the volume complete point (VCL) is just
//! below the lowest record of any PG that is not yet durable; the VDL is the highest CPL at or
//! below the VCL. Commits wait on the VDL.
//!
//! # Invariants
//! - No commit resolves before its CPL is on a write quorum and so is everything before it.
//! - VDL never moves backwards.
//! - LSNs are never allocated beyond VDL + LAL, which bounds the memory of queued redo.
//! - A writer that any segment calls fenced stops: every waiter gets [`WriterError::Fenced`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::Status;

use crate::client::{AppendStream, DurableHint, SegmentClient};
use crate::declaration::Declaration;
use crate::error::{ErrorKind, classify};
use crate::limits::{
    APPENDS_IN_FLIGHT_MAX, BATCH_BYTES_MAX, LAL_LSNS, MTR_RECORDS_MAX, RECONNECT_BACKOFF_MAX,
    RECORD_PAYLOAD_BYTES_MAX, RPC_TIMEOUT, SCL_POLL_INTERVAL, SEGMENTS_PER_PG, WRITE_QUORUM,
    WRITER_RETAIN_BYTES_MAX,
};
use crate::placement::Placement;
use crate::record::{self, FLAG_CPL};
use crate::recovery::{self, Recovered};
use crate::types::{Epoch, Lsn, PageId, PgId};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WriterError {
    #[error("this writer was fenced by a newer epoch: {0}")]
    Fenced(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("invalid mini-transaction: {0}")]
    InvalidMtr(String),
    #[error("storage returned inconsistent data: {0}")]
    Corrupt(String),
}

/// One redo record to write: the page it changes and its page-local delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSpec {
    pub page_id: PageId,
    pub kind: u8,
    pub payload: Bytes,
}

/// The LSNs a submitted mini-transaction received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    pub first: Lsn,
    /// The consistency point: the MTR's last record.
    pub cpl: Lsn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    pub lal: u64,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig { lal: LAL_LSNS }
    }
}

/// A snapshot of the writer's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterStatus {
    pub epoch: Epoch,
    pub next_lsn: Lsn,
    pub vcl: Lsn,
    pub vdl: Lsn,
    /// Per PG, each segment's last known SCL.
    pub scls: Vec<[Lsn; SEGMENTS_PER_PG]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    vdl: Lsn,
    fenced: bool,
}

struct PgState {
    /// The backlink for this PG's next record.
    tail: Lsn,
    /// Encoded records not yet acked by every segment (or given up to gossip).
    buffer: VecDeque<(Lsn, Bytes)>,
    buffer_bytes: usize,
    /// Records not yet durable, in LSN order.
    pending: VecDeque<Lsn>,
    scl: [Lsn; SEGMENTS_PER_PG],
    /// The batch built last, which the PG's other senders at the same cursor send as it is:
    /// six segments, one copy of the bytes.
    last_batch: Option<Batch>,
}

/// The records of one PG in `(after, last]`, encoded back to back.
#[derive(Clone)]
struct Batch {
    after: Lsn,
    last: Lsn,
    bytes: Bytes,
}

struct State {
    next_lsn: Lsn,
    vcl: Lsn,
    vdl: Lsn,
    /// CPLs not yet at or below the VCL, in LSN order.
    cpls: VecDeque<Lsn>,
    pgs: Vec<PgState>,
    fenced: Option<String>,
    /// Commits waiting for the VDL to reach their LSN; each is woken once, when it does. At
    /// most one entry per committer, and committers are bounded by the LAL.
    waiters: BTreeMap<Lsn, Vec<oneshot::Sender<()>>>,
}

impl State {
    /// Removes the waiters the VDL has reached, for the caller to wake once the lock is let go.
    fn take_reached(&mut self) -> Vec<oneshot::Sender<()>> {
        if self
            .waiters
            .first_key_value()
            .is_none_or(|(l, _)| *l > self.vdl)
        {
            return Vec::new();
        }
        let pending = self.waiters.split_off(&self.vdl.next());
        std::mem::replace(&mut self.waiters, pending)
            .into_values()
            .flatten()
            .collect()
    }
}

struct Shared {
    placement: Placement,
    epoch: Epoch,
    declaration: Declaration,
    lal: u64,
    state: Mutex<State>,
    progress: watch::Sender<Progress>,
    /// Per PG: the highest LSN queued, which wakes that PG's senders.
    queued: Vec<watch::Sender<Lsn>>,
}

pub struct QuorumWriter {
    shared: Arc<Shared>,
    recovered: RecoverySummary,
    tasks: Vec<JoinHandle<()>>,
}

/// What recovery found, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoverySummary {
    pub recovered_vdl: Lsn,
    pub truncated_through: Lsn,
}

impl Drop for QuorumWriter {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl QuorumWriter {
    /// Recovers the volume and starts writing at a new epoch. `epoch`: granted by the lease
    /// holder's arbiter; None takes one above any the segments have seen.
    pub async fn open(
        placement: Placement,
        epoch: Option<Epoch>,
        config: WriterConfig,
    ) -> Result<QuorumWriter, WriterError> {
        placement
            .validate()
            .map_err(|e| WriterError::InvalidMtr(e.to_string()))?;
        let clients = clients_for(&placement)?;
        let rec = recovery::recover(&clients, epoch, config.lal).await?;
        let writer = Self::start(placement, clients, rec, config);
        // Wait until the replayed records are durable again: only then is the VDL the writer
        // reports one that every segment quorum agrees on.
        let mut rx = writer.shared.progress.subscribe();
        let target = writer.recovered.truncated_through;
        let p = *rx
            .wait_for(|p| p.fenced || p.vdl >= target)
            .await
            .map_err(|_| WriterError::Unavailable("writer stopped".into()))?;
        if p.fenced {
            return Err(writer.fenced_error());
        }
        Ok(writer)
    }

    fn start(
        placement: Placement,
        clients: Vec<Vec<SegmentClient>>,
        rec: Recovered,
        config: WriterConfig,
    ) -> QuorumWriter {
        let mut pgs = Vec::with_capacity(clients.len());
        for ((tail, replay), scl) in rec.tails.iter().zip(rec.replay).zip(rec.scls.iter()) {
            let buffer_bytes = replay.iter().map(|(_, b)| b.len()).sum();
            pgs.push(PgState {
                tail: *tail,
                pending: replay.iter().map(|(l, _)| *l).collect(),
                buffer: replay.into(),
                buffer_bytes,
                scl: *scl,
                last_batch: None,
            });
        }
        let next_lsn = rec.truncated_through.next();
        let state = State {
            next_lsn,
            vcl: rec.durable_hint,
            vdl: rec.durable_hint,
            // Everything up to the truncated range's end is accounted for once the replay is
            // durable: that point is a consistency point like any CPL.
            cpls: VecDeque::from([rec.truncated_through]),
            pgs,
            fenced: None,
            waiters: BTreeMap::new(),
        };
        let (progress, _) = watch::channel(Progress {
            vdl: rec.durable_hint,
            fenced: false,
        });
        let queued = (0..clients.len())
            .map(|_| watch::channel(Lsn::ZERO).0)
            .collect();
        let shared = Arc::new(Shared {
            placement,
            epoch: rec.epoch,
            declaration: rec.declaration,
            lal: config.lal,
            state: Mutex::new(state),
            progress,
            queued,
        });
        {
            let mut st = shared.lock();
            for pg in 0..st.pgs.len() {
                shared.recompute(&mut st, pg);
            }
            shared.progress.send_replace(Progress {
                vdl: st.vdl,
                fenced: false,
            });
        }
        let mut tasks = Vec::new();
        for (pg, segs) in clients.into_iter().enumerate() {
            for (i, client) in segs.into_iter().enumerate() {
                tasks.push(tokio::spawn(send_loop(
                    shared.clone(),
                    PgId(pg as u32),
                    i,
                    client,
                )));
            }
        }
        let recovered = RecoverySummary {
            recovered_vdl: rec.recovered_vdl,
            truncated_through: rec.truncated_through,
        };
        QuorumWriter {
            shared,
            recovered,
            tasks,
        }
    }

    pub fn epoch(&self) -> Epoch {
        self.shared.epoch
    }

    pub fn recovery(&self) -> RecoverySummary {
        self.recovered
    }

    pub fn status(&self) -> WriterStatus {
        let st = self.shared.lock();
        WriterStatus {
            epoch: self.shared.epoch,
            next_lsn: st.next_lsn,
            vcl: st.vcl,
            vdl: st.vdl,
            scls: st.pgs.iter().map(|p| p.scl).collect(),
        }
    }

    pub fn vdl(&self) -> Lsn {
        self.shared.progress.borrow().vdl
    }

    /// Allocates LSNs for a mini-transaction and queues it; waits only for LAL room.
    pub async fn submit(&self, mtr: &[RecordSpec]) -> Result<Commit, WriterError> {
        if mtr.is_empty() || mtr.len() > MTR_RECORDS_MAX {
            return Err(WriterError::InvalidMtr(format!(
                "an MTR has 1..={MTR_RECORDS_MAX} records, got {}",
                mtr.len()
            )));
        }
        let mut routes = Vec::with_capacity(mtr.len());
        for spec in mtr {
            if spec.payload.len() > RECORD_PAYLOAD_BYTES_MAX {
                return Err(WriterError::InvalidMtr(format!(
                    "payload of {} bytes exceeds {RECORD_PAYLOAD_BYTES_MAX}",
                    spec.payload.len()
                )));
            }
            let pg = self.shared.placement.pg_of(spec.page_id).ok_or_else(|| {
                WriterError::InvalidMtr(format!("{:?} is beyond the volume", spec.page_id))
            })?;
            routes.push(pg.get() as usize);
        }
        let n = mtr.len() as u64;
        let mut rx = self.shared.progress.subscribe();
        loop {
            {
                let mut st = self.shared.lock();
                if let Some(why) = &st.fenced {
                    return Err(WriterError::Fenced(why.clone()));
                }
                let last = Lsn(st.next_lsn.get() + n - 1);
                if last.get() <= st.vdl.get() + self.shared.lal {
                    let commit = Commit {
                        first: st.next_lsn,
                        cpl: last,
                    };
                    for (i, (spec, pg)) in mtr.iter().zip(&routes).enumerate() {
                        let lsn = Lsn(commit.first.get() + i as u64);
                        let flags = if lsn == last { FLAG_CPL } else { 0 };
                        let p = &mut st.pgs[*pg];
                        let bytes = record::encode_to_bytes(
                            lsn,
                            p.tail,
                            spec.page_id,
                            flags,
                            spec.kind,
                            &spec.payload,
                        );
                        p.tail = lsn;
                        p.buffer_bytes += bytes.len();
                        p.buffer.push_back((lsn, bytes));
                        p.pending.push_back(lsn);
                    }
                    st.next_lsn = last.next();
                    st.cpls.push_back(last);
                    drop(st);
                    // Wake each PG's senders once, with that PG's last record of the MTR.
                    let mut woken = Vec::with_capacity(routes.len());
                    for (i, pg) in routes.iter().enumerate().rev() {
                        if !woken.contains(pg) {
                            woken.push(*pg);
                            self.shared.queued[*pg]
                                .send_replace(Lsn(commit.first.get() + i as u64));
                        }
                    }
                    return Ok(commit);
                }
            }
            if rx.changed().await.is_err() {
                return Err(WriterError::Unavailable("writer stopped".into()));
            }
        }
    }

    /// Waits until the VDL reaches `lsn`.
    pub async fn wait_durable(&self, lsn: Lsn) -> Result<(), WriterError> {
        let reached = {
            let mut st = self.shared.lock();
            if st.vdl >= lsn {
                return Ok(());
            }
            if let Some(why) = &st.fenced {
                return Err(WriterError::Fenced(why.clone()));
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.entry(lsn).or_default().push(tx);
            rx
        };
        // Dropped unsent only when the writer is fenced.
        match reached.await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.fenced_error()),
        }
    }

    /// Submits a mini-transaction and waits until it is durable.
    pub async fn commit(&self, mtr: &[RecordSpec]) -> Result<Commit, WriterError> {
        let commit = self.submit(mtr).await?;
        self.wait_durable(commit.cpl).await?;
        Ok(commit)
    }

    fn fenced_error(&self) -> WriterError {
        let st = self.shared.lock();
        WriterError::Fenced(st.fenced.clone().unwrap_or_else(|| "fenced".into()))
    }
}

fn clients_for(placement: &Placement) -> Result<Vec<Vec<SegmentClient>>, WriterError> {
    placement
        .pgs
        .iter()
        .map(|pg| {
            pg.segments
                .iter()
                .map(|node| {
                    let info = placement.node(*node).expect("placement validated");
                    SegmentClient::connect_lazy(*node, &info.addr)
                        .map_err(|s| WriterError::InvalidMtr(s.message().to_string()))
                })
                .collect()
        })
        .collect()
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("writer lock poisoned")
    }

    fn fence(&self, why: String) {
        let mut st = self.lock();
        if st.fenced.is_none() {
            tracing::error!(epoch = self.epoch.get(), %why, "writer fenced; it stops writing");
            st.fenced = Some(why);
        }
        let vdl = st.vdl;
        // Dropping the senders tells every waiter the writer is fenced.
        let waiters = std::mem::take(&mut st.waiters);
        drop(st);
        drop(waiters);
        self.progress.send_replace(Progress { vdl, fenced: true });
    }

    /// Records segment `i` of `pg` at `scl` and moves PGCL, VCL and VDL as far as they go.
    fn note_scl(&self, pg: usize, i: usize, scl: Lsn) {
        let mut st = self.lock();
        let slot = &mut st.pgs[pg].scl[i];
        if scl <= *slot {
            return;
        }
        *slot = scl;
        let before = st.vdl;
        self.recompute(&mut st, pg);
        let after = st.vdl;
        let fenced = st.fenced.is_some();
        let reached = st.take_reached();
        drop(st);
        for waiter in reached {
            let _ = waiter.send(());
        }
        if after > before {
            self.progress.send_replace(Progress { vdl: after, fenced });
        }
    }

    fn recompute(&self, st: &mut State, pg: usize) {
        let p = &mut st.pgs[pg];
        let mut sorted = p.scl;
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let pgcl = sorted[WRITE_QUORUM - 1];
        while p.pending.front().is_some_and(|l| *l <= pgcl) {
            p.pending.pop_front();
        }
        let all_acked = sorted[SEGMENTS_PER_PG - 1];
        while let Some((lsn, bytes)) = p.buffer.front() {
            let durable = *lsn <= pgcl;
            if *lsn <= all_acked || (durable && p.buffer_bytes > WRITER_RETAIN_BYTES_MAX) {
                p.buffer_bytes -= bytes.len();
                p.buffer.pop_front();
            } else {
                break;
            }
        }
        let lowest_pending = st
            .pgs
            .iter()
            .filter_map(|p| p.pending.front())
            .min()
            .copied();
        let vcl = match lowest_pending {
            Some(l) => Lsn(l.get() - 1),
            None => Lsn(st.next_lsn.get() - 1),
        };
        st.vcl = st.vcl.max(vcl);
        while st.cpls.front().is_some_and(|c| *c <= st.vcl) {
            let cpl = st.cpls.pop_front().expect("checked");
            assert!(cpl >= st.vdl, "VDL must never move backwards");
            st.vdl = cpl;
        }
    }

    /// The next batch for a segment whose cursor is at `cursor`: records queued above it.
    fn batch_after(&self, pg: usize, cursor: Lsn) -> Option<(Lsn, Bytes, DurableHint)> {
        let mut st = self.lock();
        let hint = Self::hint(&st, pg);
        let p = &mut st.pgs[pg];
        if let Some(b) = p.last_batch.as_ref().filter(|b| b.after == cursor) {
            return Some((b.last, b.bytes.clone(), hint));
        }
        let start = p.buffer.partition_point(|(l, _)| *l <= cursor);
        if start == p.buffer.len() {
            return None;
        }
        let mut size = 0;
        let mut end = start;
        for (_, bytes) in p.buffer.range(start..) {
            if end > start && size + bytes.len() > BATCH_BYTES_MAX {
                break;
            }
            size += bytes.len();
            end += 1;
        }
        let mut buf = Vec::with_capacity(size);
        let mut last = cursor;
        for (lsn, bytes) in p.buffer.range(start..end) {
            buf.extend_from_slice(bytes);
            last = *lsn;
        }
        let batch = Batch {
            after: cursor,
            last,
            bytes: Bytes::from(buf),
        };
        p.last_batch = Some(batch.clone());
        Some((batch.last, batch.bytes, hint))
    }

    fn hint(st: &State, pg: usize) -> DurableHint {
        DurableHint {
            vdl: st.vdl,
            pg_tail: st.pgs[pg].tail,
        }
    }

    /// For an idle sender: whether its segment is behind the PG's tail, and the current hint.
    fn idle_view(&self, pg: usize, i: usize) -> (bool, DurableHint) {
        let st = self.lock();
        (st.pgs[pg].scl[i] < st.pgs[pg].tail, Self::hint(&st, pg))
    }

    fn is_fenced(&self) -> bool {
        self.progress.borrow().fenced
    }
}

/// A batch sent on the append stream and not yet acknowledged.
struct InFlight {
    /// The cursor before it: a resend starts here.
    from: Lsn,
    hint: DurableHint,
    sent: tokio::time::Instant,
}

/// Sends the records after `from` on `stream` and remembers them as in flight.
fn send(
    stream: &AppendStream,
    in_flight: &mut VecDeque<InFlight>,
    pg: PgId,
    epoch: Epoch,
    from: Lsn,
    records: Bytes,
    hint: DurableHint,
) -> Result<(), Status> {
    stream.send(pg, epoch, records, hint)?;
    in_flight.push_back(InFlight {
        from,
        hint,
        sent: tokio::time::Instant::now(),
    });
    Ok(())
}

/// Feeds one segment: establishes the epoch on it, opens an append stream, then keeps up to
/// [`APPENDS_IN_FLIGHT_MAX`] batches in flight on it and records the acks, which come back in
/// order. The segment's SCL only counts the unbroken chain and it ignores records it already
/// holds, so after any failure everything from the oldest unacknowledged batch is simply sent
/// again on a new stream.
async fn send_loop(shared: Arc<Shared>, pg: PgId, i: usize, client: SegmentClient) {
    let pgi = pg.get() as usize;
    // Everything at or below `cursor` has been sent (not necessarily acked).
    let mut cursor = Lsn::ZERO;
    let mut established = false;
    let mut backoff = Duration::from_millis(10);
    let mut queued = shared.queued[pgi].subscribe();
    // The VDL this segment was last told; an idle segment is told again when it moves.
    let mut hinted = Lsn::ZERO;
    let mut stream: Option<AppendStream> = None;
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    loop {
        if shared.is_fenced() {
            return;
        }
        let mut failure = None;
        if !established {
            match client.truncate(pg, shared.epoch, &shared.declaration).await {
                Ok(state) => {
                    established = true;
                    shared.note_scl(pgi, i, state.scl);
                    continue;
                }
                Err(status) => failure = Some(status),
            }
        } else if let Some(s) = stream.as_mut() {
            while in_flight.len() < APPENDS_IN_FLIGHT_MAX {
                let Some((last, bytes, hint)) = shared.batch_after(pgi, cursor) else {
                    break;
                };
                if let Err(status) = send(s, &mut in_flight, pg, shared.epoch, cursor, bytes, hint)
                {
                    failure = Some(status);
                    break;
                }
                cursor = last;
            }
            if let Some(oldest) = in_flight.front().filter(|_| failure.is_none()) {
                let overdue = oldest.sent + RPC_TIMEOUT;
                tokio::select! {
                    ack = s.next_ack() => match ack {
                        Ok(scl) => {
                            let acked = in_flight.pop_front().expect("one is in flight");
                            backoff = Duration::from_millis(10);
                            hinted = hinted.max(acked.hint.vdl);
                            shared.note_scl(pgi, i, scl);
                        }
                        Err(status) => failure = Some(status),
                    },
                    _ = queued.changed(), if in_flight.len() < APPENDS_IN_FLIGHT_MAX => {}
                    _ = tokio::time::sleep_until(overdue) => {
                        failure = Some(Status::deadline_exceeded(format!(
                            "no ack within {RPC_TIMEOUT:?}"
                        )));
                    }
                }
            } else if failure.is_none() {
                // Nothing to send: wait for new records. Meanwhile keep the SCL of a segment
                // that is catching up by gossip fresh (or commits would wait on a stale view),
                // and tell an idle segment the VDL moved, so it knows it is complete up to it.
                tokio::select! {
                    _ = queued.changed() => continue,
                    _ = tokio::time::sleep(SCL_POLL_INTERVAL) => {}
                }
                let (behind, hint) = shared.idle_view(pgi, i);
                if behind {
                    match client.status(pg).await {
                        Ok(state) => shared.note_scl(pgi, i, state.scl),
                        Err(status) => failure = Some(status),
                    }
                } else if hint.vdl > hinted {
                    let heartbeat = Bytes::new();
                    if let Err(status) =
                        send(s, &mut in_flight, pg, shared.epoch, cursor, heartbeat, hint)
                    {
                        failure = Some(status);
                    }
                }
            }
        } else {
            match client.append_stream().await {
                Ok(s) => stream = Some(s),
                Err(status) => failure = Some(status),
            }
        }
        let Some(status) = failure else {
            continue;
        };
        // Everything from the oldest unacknowledged batch goes again, on a new stream.
        if let Some(oldest) = in_flight.front() {
            cursor = cursor.min(oldest.from);
        }
        in_flight.clear();
        stream = None;
        match classify(&status) {
            ErrorKind::Fenced => {
                shared.fence(format!(
                    "{} refused {:?}: {}",
                    client.addr(),
                    shared.epoch,
                    status.message()
                ));
                return;
            }
            ErrorKind::EpochNotEstablished => established = false,
            kind => {
                if kind == ErrorKind::Rejected {
                    tracing::error!(pg = pg.get(), node = %client.addr(), error = %status.message(), "segment rejected a request");
                } else {
                    tracing::debug!(pg = pg.get(), node = %client.addr(), error = %status.message(), "segment unavailable; retrying");
                }
                established = false;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
            }
        }
    }
}
