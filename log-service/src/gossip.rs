//! Hole filling: a segment that missed records (it was down, a message was lost, a record rotted
//! on disk) pulls the LSN ranges it lacks from the other segments of its PG until its SCL
//! catches up. Gossip also spreads the newest truncation declaration, so a segment that slept
//! through a writer takeover drops the records the new writer declared gone.

use std::sync::Arc;
use std::time::Duration;

use crate::client::SegmentClient;
use crate::limits::{GOSSIP_BATCH_BYTES, GOSSIP_INTERVAL};
use crate::segment::{Origin, Segment, SegmentState};
use crate::types::Lsn;

/// Pull requests in one round, so one round is bounded in time and memory.
const PULLS_PER_ROUND_MAX: usize = 64;
/// A peer that does not answer its status within this is skipped this round.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);

pub async fn run(segment: Arc<Segment>, peers: Vec<SegmentClient>) {
    let mut ticker = tokio::time::interval(GOSSIP_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = round(&segment, &peers).await {
            tracing::debug!(pg = segment.pg().get(), error = %e, "gossip round failed");
        }
        let s = segment.clone();
        match tokio::task::spawn_blocking(move || s.persist_vdl_hint_if_due()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(pg = segment.pg().get(), error = %e, "could not persist the VDL hint")
            }
            Err(e) => tracing::warn!(error = %e, "hint persistence task failed"),
        }
    }
}

async fn round(segment: &Arc<Segment>, peers: &[SegmentClient]) -> Result<(), String> {
    let pg = segment.pg();
    let states = futures::future::join_all(peers.iter().map(|p| async move {
        let state = tokio::time::timeout(STATUS_TIMEOUT, p.status(pg)).await;
        (p, state)
    }))
    .await;
    let live: Vec<(&SegmentClient, SegmentState)> = states
        .into_iter()
        .filter_map(|(p, r)| match r {
            Ok(Ok(state)) => Some((p, state)),
            _ => None,
        })
        .collect();
    segment.note_peers_answering(live.iter().map(|(p, _)| p.node()).collect());
    if let Some((_, newest)) = live.iter().max_by_key(|(_, s)| s.declaration.epoch) {
        let declaration = newest.declaration.clone();
        let s = segment.clone();
        let adopted = tokio::task::spawn_blocking(move || s.adopt_declaration(declaration))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if adopted {
            tracing::info!(
                pg = pg.get(),
                "adopted a newer truncation declaration from a peer"
            );
        }
    }
    let Some((source, best)) = live.iter().max_by_key(|(_, s)| s.scl) else {
        return Ok(());
    };
    let mut ask_everything = false;
    for _ in 0..PULLS_PER_ROUND_MAX {
        let mine = segment.state();
        if best.scl <= mine.scl {
            break;
        }
        // Ask only for the first hole when we know where it ends; if the peer has nothing there,
        // what we hold above the hole is stale and we ask for everything above SCL.
        let through = match segment.first_held_above_scl() {
            Some(held) if !ask_everything => Lsn(held.get() - 1),
            _ => Lsn::MAX,
        };
        let got = source
            .read(pg, mine.scl, through, GOSSIP_BATCH_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        if got.records.is_empty() {
            if through == Lsn::MAX {
                break;
            }
            ask_everything = true;
            continue;
        }
        let scl = segment
            .append(&got.records, Origin::Gossip)
            .await
            .map_err(|e| e.to_string())?;
        if scl == mine.scl && !got.more {
            ask_everything = true;
        }
        tracing::debug!(pg = pg.get(), from = %source.addr(), scl = scl.get(), "gossip filled records");
    }
    Ok(())
}
