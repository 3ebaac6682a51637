//! The materializer: the background loop that turns a segment's hot log into stored page
//! versions, plus the maintenance loop beside it (image layers, garbage collection, scrub).
//! Nothing here is on the append/ack path: the log is appended and acknowledged by
//! log-service alone, and this loop only reads it.
//!
//! # What may be materialized
//! Records above the volume's durable point may still be truncated by a new writer's
//! declaration. So the materialized point M only covers records at or below the segment's
//! *durable bound*: the VDL hint writers send with every append (or, after a rebuild, the
//! durable LSN recorded in object storage, whichever is higher). And it only covers records the
//! segment holds without a gap: either the segment is complete up to the bound (its
//! `complete_lsn`), or the records read form an unbroken backlink chain from the PG's last
//! record at or below M (which lets a rebuilt segment resume from restored layers before gossip
//! has refilled the older log).
//!
//! After each step the loop reports M to the segment (`note_materialized`), which makes writer
//! appends wait while too much of the hot log lies above M: the back-pressure that reaches the
//! writer's LAL when materialization falls behind.
//!
//! # Repair
//! A reader or the scrub that finds a corrupt layer file reports it; the loop deletes the file,
//! fetches the node's object-storage copy of it if there is one (checked), and otherwise
//! rebuilds the stack from the longest valid chain of files, rematerializing the rest from the
//! log (the hot log keeps every record).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sixfold_log_service::Lsn;
use sixfold_log_service::record;
use sixfold_log_service::segment::Segment;

use crate::error::{StorageError, blocking};
use crate::limits::{
    COMPACT_INTERVAL, MATERIALIZE_PACE, MATERIALIZE_POLL_INTERVAL, SCRUB_INTERVAL,
};
use crate::node::SegmentPages;
use crate::object_storage::fetch_layer;
use crate::page_store::PageStore;
use crate::read_points::{Horizon, ReadPoints};

/// Frozen layers waiting for their file before materialization pauses (memory bound).
const FROZEN_LAYERS_MAX: usize = 2;

/// What one materialization step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// M did not move: nothing durable and gap-free above it yet.
    Idle,
    /// M moved and caught up with what was there to read.
    CaughtUp,
    /// M moved by a whole batch and more is waiting: step again at once.
    Behind,
}

impl Step {
    pub fn progressed(self) -> bool {
        self != Step::Idle
    }
}

/// One step: reads the next batch of durable, gap-free records above M and applies them.
pub fn step(
    store: &PageStore,
    segment: &Segment,
    known_durable: Lsn,
) -> Result<Step, StorageError> {
    let state = segment.state();
    let durable = state.vdl_hint.max(known_durable);
    let m = store.materialized();
    if durable <= m {
        return Ok(Step::Idle);
    }
    let tail = store.pg_tail();
    let got = segment.read(m, durable, store.batch_bytes())?;
    let views = record::decode_all(&got.records)
        .map_err(|e| StorageError::Internal(format!("segment served a bad record: {e}")))?;
    let mut last = tail;
    let mut chained = 0;
    for v in &views {
        if v.header.prev_lsn != last {
            break;
        }
        last = v.header.lsn;
        chained += 1;
    }
    // A read that found a corrupt record drops it and lowers SCL; then the segment is not
    // complete up to `durable` whatever it said before the read.
    let after = segment.state();
    let whole = chained == views.len()
        && !got.more
        && state.complete_lsn >= durable
        && after.complete_lsn >= durable
        && after.scl >= state.scl;
    let new_m = if whole { durable } else { last.max(m) };
    if new_m == m {
        return Ok(Step::Idle);
    }
    store.ingest(&views[..chained], new_m, last)?;
    Ok(if got.more {
        Step::Behind
    } else {
        Step::CaughtUp
    })
}

/// The materialization loop of one segment. Runs until the process ends.
///
/// Steps are paced: unless the last step left a whole batch behind, the next one starts at
/// least [`MATERIALIZE_PACE`] after it, so a busy segment is materialized in batches of many
/// appends rather than woken by each one. Nothing waits on M closely (GetPage applies the hot
/// log above it), so the pace only trades a few milliseconds of lag for far fewer wakeups.
pub async fn run(ctx: Arc<SegmentPages>, store: Arc<PageStore>) {
    let pg = ctx.pg.get();
    let mut scl = ctx.segment.subscribe_scl();
    ctx.segment.note_materialized(store.materialized());
    let mut failures = 0u32;
    let mut last_step = tokio::time::Instant::now();
    loop {
        let corrupt = store.take_corrupt();
        if !corrupt.is_empty() {
            repair(&ctx, &store, &corrupt).await;
        }
        let (s, seg) = (store.clone(), ctx.segment.clone());
        let known = Lsn(ctx.known_durable.load(Ordering::Relaxed));
        let stepped = blocking(move || {
            let stepped = if s.frozen_layers() < FROZEN_LAYERS_MAX {
                step(&s, &seg, known)
            } else {
                Ok(Step::Idle)
            };
            if let Err(e) = s.freeze_if_due() {
                tracing::warn!(pg = s.pg().get(), error = %e, "could not write a delta layer; retrying");
            }
            stepped
        })
        .await;
        last_step = last_step.max(tokio::time::Instant::now());
        let stepped = match stepped {
            Ok(p) => {
                failures = 0;
                p
            }
            Err(e) => {
                failures += 1;
                if failures.is_power_of_two() {
                    tracing::warn!(pg, error = %e, failures, "materialization step failed; retrying");
                }
                Step::Idle
            }
        };
        ctx.segment.note_materialized(store.materialized());
        match stepped {
            Step::Behind => continue,
            Step::CaughtUp => {}
            Step::Idle => {
                let backoff = if failures > 0 {
                    Duration::from_millis(100).min(MATERIALIZE_POLL_INTERVAL * failures)
                } else {
                    MATERIALIZE_POLL_INTERVAL
                };
                tokio::select! {
                    r = scl.changed() => {
                        if r.is_err() {
                            tokio::time::sleep(backoff).await;
                        }
                    }
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
        }
        tokio::time::sleep_until(last_step + MATERIALIZE_PACE).await;
    }
}

async fn repair(ctx: &SegmentPages, store: &Arc<PageStore>, names: &[String]) {
    let pg = ctx.pg;
    for name in names {
        let path = store.dir().join(name);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(pg = pg.get(), file = %path.display(), error = %e, "could not delete a corrupt layer file");
        }
        if let Some(storage) = &ctx.object_storage {
            match fetch_layer(storage, ctx.node, pg, name, None, store.dir()).await {
                Ok(true) => {
                    tracing::info!(pg = pg.get(), file = %name, "corrupt layer file replaced by its object-storage copy")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(pg = pg.get(), file = %name, error = %e, "object-storage copy unusable; rebuilding from the log")
                }
            }
        }
    }
    let s = store.clone();
    match blocking(move || s.reload()).await {
        Ok(report) => tracing::info!(
            pg = pg.get(),
            materialized = report.materialized.get(),
            layers = report.layers,
            "layer stack rebuilt after corruption; rematerializing from the log"
        ),
        Err(e) => tracing::error!(pg = pg.get(), error = %e, "could not rebuild the layer stack"),
    }
}

/// The maintenance loop of one segment: PGMRPL, image layers, garbage collection and scrub.
pub async fn maintain(ctx: Arc<SegmentPages>, store: Arc<PageStore>, read_points: Arc<ReadPoints>) {
    let pg = ctx.pg.get();
    let ttl = read_points.ttl();
    let mut horizon = Horizon::default();
    let mut ticker = tokio::time::interval(COMPACT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first scrub runs soon after start, then every SCRUB_INTERVAL.
    let mut next_scrub = Instant::now() + COMPACT_INTERVAL * 4;
    loop {
        ticker.tick().await;
        let now = Instant::now();
        horizon.sample(now, store.materialized(), ttl);
        let pgmrpl = horizon.pgmrpl(now, ttl, read_points.lowest());
        ctx.pgmrpl.store(pgmrpl.get(), Ordering::Relaxed);
        let s = store.clone();
        match blocking(move || s.create_image_layer_if_due()).await {
            Ok(true) => tracing::debug!(pg, "image layer written"),
            Ok(false) => {}
            Err(e) => tracing::warn!(pg, error = %e, "could not write an image layer"),
        }
        let s = store.clone();
        match blocking(move || s.gc(pgmrpl)).await {
            Ok(removed) if !removed.is_empty() => {
                tracing::debug!(
                    pg,
                    pgmrpl = pgmrpl.get(),
                    removed = removed.len(),
                    "dropped versions below PGMRPL"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(pg, error = %e, "garbage collection failed"),
        }
        if now >= next_scrub {
            next_scrub = now + SCRUB_INTERVAL;
            let s = store.clone();
            match blocking(move || s.scrub()).await {
                Ok(0) => {}
                Ok(n) => tracing::error!(pg, corrupt = n, "scrub found damaged layer files"),
                Err(e) => tracing::warn!(pg, error = %e, "scrub failed"),
            }
        }
    }
}
