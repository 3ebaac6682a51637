//! What a writer does before its first write: take a new epoch, find the volume's durable point
//! (VDL) from read quorums of every PG, declare everything above it truncated, and hand the
//! writer the records it must make durable again.
//!
//! # Why this is safe
//! - A record that was ever acknowledged is on at least [`WRITE_QUORUM`] segments, so any
//!   [`READ_QUORUM`] segments of its PG hold it (4 + 3 > 6). Recovery reads the union of what
//!   three segments hold above the PG's known-complete point, so it sees every durable record.
//! - LSNs are dense: every LSN names exactly one record in exactly one PG, or lies in a declared
//!   truncated range. So the volume-complete point is the end of the run of accounted-for LSNs
//!   above a point known durable (the largest VDL hint any segment remembers).
//! - Sealing at least [`READ_QUORUM`] segments of every PG with the new epoch fences the old
//!   writer: it can never again gather [`WRITE_QUORUM`] acks.
//! - The truncated range reaches `LAL` past anything seen, and the new writer allocates above
//!   it, so no LSN an old writer may have used is ever reused.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;

use crate::client::SegmentClient;
use crate::declaration::Declaration;
use crate::error::{ErrorKind, classify};
use crate::limits::{BATCH_BYTES_MAX, READ_QUORUM, SEGMENTS_PER_PG, WRITE_QUORUM};
use crate::record;
use crate::segment::SegmentState;
use crate::types::{Epoch, Lsn, PgId};
use crate::writer::WriterError;

/// How long recovery keeps retrying for quorums before giving up.
pub const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The outcome of recovery: where the new writer starts.
#[derive(Debug)]
pub struct Recovered {
    pub epoch: Epoch,
    pub declaration: Declaration,
    /// The highest consistency point recovered: every acknowledged commit is at or below it.
    pub recovered_vdl: Lsn,
    /// End of the truncated range; the writer allocates above it.
    pub truncated_through: Lsn,
    /// A durable lower bound of the VDL (the largest hint segments remembered).
    pub durable_hint: Lsn,
    /// Per PG: the last record at or below `recovered_vdl` (the next record's backlink).
    pub tails: Vec<Lsn>,
    /// Per PG: recovered records above `durable_hint` that must reach a write quorum again.
    pub replay: Vec<Vec<(Lsn, Bytes)>>,
    /// Per PG: each segment's SCL as reported by its truncation reply (ZERO if unreachable).
    pub scls: Vec<[Lsn; SEGMENTS_PER_PG]>,
}

/// Runs recovery over `segments[pg][i]`. `epoch`: the epoch granted by whoever arbitrates
/// writers; None takes one above every epoch the segments have seen.
pub async fn recover(
    segments: &[Vec<SegmentClient>],
    epoch: Option<Epoch>,
    lal: u64,
) -> Result<Recovered, WriterError> {
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    let epoch = match epoch {
        Some(e) => e,
        None => {
            let states = poll_until_quorum(segments, deadline, READ_QUORUM, |c, pg| async move {
                c.status(pg).await
            })
            .await?;
            let seen = states
                .iter()
                .flatten()
                .flatten()
                .map(|s| s.epoch.max(s.declaration.epoch))
                .max()
                .unwrap_or(Epoch::ZERO);
            Epoch(seen.get() + 1)
        }
    };
    let sealed = poll_until_quorum(segments, deadline, READ_QUORUM, |c, pg| async move {
        c.seal(pg, epoch).await
    })
    .await?;
    let prior = sealed
        .iter()
        .flatten()
        .flatten()
        .map(|s| &s.declaration)
        .max_by_key(|d| d.epoch)
        .cloned()
        .unwrap_or_default();

    // Bring segments that missed the newest declaration up to it, so their SCLs mean the same.
    let current = poll_until_quorum(segments, deadline, READ_QUORUM, |c, pg| {
        let prior = prior.clone();
        async move { c.truncate(pg, epoch, &prior).await }
    })
    .await?;
    let durable_hint = current
        .iter()
        .flatten()
        .flatten()
        .map(|s| s.vdl_hint)
        .max()
        .unwrap_or(Lsn::ZERO);
    let max_seen = current
        .iter()
        .flatten()
        .flatten()
        .map(|s| s.max_lsn)
        .max()
        .unwrap_or(Lsn::ZERO);

    // Per PG: the union of records above its known-complete point from a read quorum.
    let mut chains: Vec<Vec<(Lsn, bool, Bytes)>> = Vec::with_capacity(segments.len());
    let mut bases = Vec::with_capacity(segments.len());
    for (pg_index, states) in current.iter().enumerate() {
        let pg = PgId(pg_index as u32);
        let mut quorum: Vec<(usize, &SegmentState)> = states
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
            .collect();
        quorum.sort_by_key(|(_, s)| std::cmp::Reverse(s.scl));
        quorum.truncate(READ_QUORUM);
        let complete = quorum
            .iter()
            .map(|(_, s)| s.scl)
            .min()
            .expect("read quorum is non-empty");
        let after = complete.min(durable_hint);
        let mut union: BTreeMap<Lsn, (Lsn, bool, Bytes)> = BTreeMap::new();
        let mut base = Lsn::ZERO;
        for (i, _) in &quorum {
            let (records, segment_base) =
                read_all_above(&segments[pg_index][*i], pg, after).await?;
            base = base.max(segment_base);
            for (lsn, value) in records {
                if prior.covers(lsn) {
                    continue;
                }
                if let Some(existing) = union.get(&lsn) {
                    if existing.2 != value.2 {
                        return Err(WriterError::Corrupt(format!(
                            "two different records claim {lsn:?} in {pg:?}"
                        )));
                    }
                } else {
                    union.insert(lsn, value);
                }
            }
        }
        // Follow the backlinks from the base; the chain ends at the first gap.
        let mut chain = Vec::new();
        let mut cursor = base;
        for (lsn, (prev, cpl, bytes)) in union {
            if prev != cursor {
                break;
            }
            chain.push((lsn, cpl, bytes));
            cursor = lsn;
        }
        chains.push(chain);
        bases.push(base);
    }

    // The volume is complete up to the end of the run of accounted-for LSNs above the hint.
    let present: BTreeSet<Lsn> = chains
        .iter()
        .flatten()
        .map(|(lsn, _, _)| *lsn)
        .filter(|l| *l > durable_hint)
        .collect();
    let mut vcl = durable_hint;
    loop {
        let next = vcl.next();
        if present.contains(&next) {
            vcl = next;
        } else if let Some(range) = prior.range_of(next) {
            vcl = range.through;
        } else {
            break;
        }
    }
    let highest_cpl = chains
        .iter()
        .flatten()
        .filter(|(lsn, cpl, _)| *cpl && *lsn <= vcl)
        .map(|(lsn, _, _)| *lsn)
        .max();
    let highest_range_end = prior
        .ranges
        .iter()
        .map(|r| r.through)
        .filter(|t| *t <= vcl)
        .max();
    let recovered_vdl = durable_hint
        .max(highest_cpl.unwrap_or(Lsn::ZERO))
        .max(highest_range_end.unwrap_or(Lsn::ZERO));
    let prior_end = prior
        .ranges
        .iter()
        .map(|r| r.through)
        .max()
        .unwrap_or(Lsn::ZERO);
    let truncated_through = Lsn(recovered_vdl.max(max_seen).max(prior_end).get() + lal);
    let declaration = if prior.epoch == epoch {
        // Our own declaration from an interrupted attempt at this epoch: keep it.
        prior.clone()
    } else {
        Declaration::successor(&prior, epoch, recovered_vdl, truncated_through)
    };
    let truncated_through = declaration
        .ranges
        .last()
        .map(|r| r.through)
        .unwrap_or(truncated_through);

    let truncated = poll_until_quorum(segments, deadline, WRITE_QUORUM, |c, pg| {
        let declaration = declaration.clone();
        async move { c.truncate(pg, epoch, &declaration).await }
    })
    .await?;

    let mut tails = Vec::new();
    let mut replay = Vec::new();
    for (chain, base) in chains.into_iter().zip(bases) {
        let kept: Vec<(Lsn, bool, Bytes)> = chain
            .into_iter()
            .filter(|(lsn, _, _)| *lsn <= recovered_vdl)
            .collect();
        tails.push(kept.last().map(|(l, _, _)| *l).unwrap_or(base));
        replay.push(
            kept.into_iter()
                .filter(|(l, _, _)| *l > durable_hint)
                .map(|(l, _, b)| (l, b))
                .collect(),
        );
    }
    let scls = truncated
        .iter()
        .map(|states| {
            std::array::from_fn(|i| states[i].as_ref().map(|s| s.scl).unwrap_or(Lsn::ZERO))
        })
        .collect();
    tracing::info!(
        epoch = epoch.get(),
        recovered_vdl = recovered_vdl.get(),
        durable_hint = durable_hint.get(),
        truncated_through = truncated_through.get(),
        "writer recovery complete"
    );
    Ok(Recovered {
        epoch,
        declaration,
        recovered_vdl,
        truncated_through,
        durable_hint,
        tails,
        replay,
        scls,
    })
}

/// Reads every record a segment holds above `after`, decoded as (lsn → (prev, cpl, bytes)),
/// and the segment's chain base at `after`.
async fn read_all_above(
    client: &SegmentClient,
    pg: PgId,
    after: Lsn,
) -> Result<(Vec<(Lsn, (Lsn, bool, Bytes))>, Lsn), WriterError> {
    let mut out = Vec::new();
    let mut cursor = after;
    let mut base = None;
    loop {
        let got = client
            .read(pg, cursor, Lsn::MAX, BATCH_BYTES_MAX)
            .await
            .map_err(|s| {
                WriterError::Unavailable(format!(
                    "reading {pg:?} from {}: {}",
                    client.addr(),
                    s.message()
                ))
            })?;
        base.get_or_insert(got.base);
        let views = record::decode_all(&got.records)
            .map_err(|e| WriterError::Corrupt(format!("{pg:?} from {}: {e}", client.addr())))?;
        for v in &views {
            out.push((
                v.header.lsn,
                (
                    v.header.prev_lsn,
                    v.header.is_cpl(),
                    Bytes::copy_from_slice(v.bytes),
                ),
            ));
            cursor = v.header.lsn;
        }
        if !got.more || views.is_empty() {
            return Ok((out, base.unwrap_or(Lsn::ZERO)));
        }
    }
}

type PerPg<T> = Vec<[Option<T>; SEGMENTS_PER_PG]>;

/// Calls `op` on every segment of every PG until each PG has `quorum` successes (retrying the
/// ones that failed), or the deadline passes. A fenced reply ends recovery: a newer writer exists.
async fn poll_until_quorum<F, Fut>(
    segments: &[Vec<SegmentClient>],
    deadline: Instant,
    quorum: usize,
    op: F,
) -> Result<PerPg<SegmentState>, WriterError>
where
    F: Fn(SegmentClient, PgId) -> Fut,
    Fut: std::future::Future<Output = Result<SegmentState, tonic::Status>>,
{
    let mut results: PerPg<SegmentState> = segments
        .iter()
        .map(|_| std::array::from_fn(|_| None))
        .collect();
    loop {
        let mut calls = Vec::new();
        for (pg, clients) in segments.iter().enumerate() {
            for (i, client) in clients.iter().enumerate() {
                if results[pg][i].is_none() {
                    let fut = op(client.clone(), PgId(pg as u32));
                    calls.push(async move { (pg, i, fut.await) });
                }
            }
        }
        let mut last_error = String::new();
        for (pg, i, result) in join_all(calls).await {
            match result {
                Ok(state) => results[pg][i] = Some(state),
                Err(status) if classify(&status) == ErrorKind::Fenced => {
                    return Err(WriterError::Fenced(status.message().to_string()));
                }
                Err(status) => {
                    last_error = format!("{}: {}", segments[pg][i].addr(), status.message())
                }
            }
        }
        let short = results
            .iter()
            .position(|r| r.iter().flatten().count() < quorum);
        match short {
            None => return Ok(results),
            Some(pg) if Instant::now() >= deadline => {
                return Err(WriterError::Unavailable(format!(
                    "PG {pg} has fewer than {quorum} reachable segments (last error: {last_error})"
                )));
            }
            Some(_) => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }
}
